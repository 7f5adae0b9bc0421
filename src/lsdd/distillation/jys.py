"""Jump Your Steps (Park et al., ICLR 2025, arXiv 2410.07761): a time grid chosen by minimising a KL upper
bound (KLUB) on the error of tau-leaping, and the import of JYS's own saved schedule files.

KLUB. A tau-leaping step t_a -> t_b uses the rates frozen at (x_{t_a}, t_a) over the whole step. Inserting a
point t_mid replaces them on [t_mid, t_b] by the rates at (x_{t_mid}, t_mid); by Girsanov's theorem for
CTMCs the KL bound this removes is, with the left-point rule on [t_mid, t_b],

    gain(t_mid) = (t_mid - t_b) E sum_i sum_y [ R2 log(R2 / R1) - R2 + R1 ],
    R1 = R(x_{t_a}, t_a)_iy,  R2 = R(x_{t_mid}, t_mid)_iy  (reverse rates of token i to value y),

over the tokens that can still move at t_mid and have not moved since t_a. x_{t_a} and x_{t_mid} are data x0
noised to both times with the *same* uniforms (so x_{t_mid} is a sub-noising of x_{t_a}), fixed for the whole
search: the gain is then a deterministic function of t_mid and golden-section search is well defined. [The
released JYS code keeps only the R2 log(R2/R1) term; we use the full Girsanov integrand, >= 0 term by term.]

Search (JYS's hierarchical breakdown): start from the grid {1, eps}; at every level each interval gets the
point that maximises its gain, found by golden-section search (``max_iter`` evaluations, the best one kept),
doubling the steps. For an M that is not a power of two, the last level inserts only the M - 2^k points of
largest gain (the same criterion). Every interval's best split is remembered, so grids for several M share
the work. Data: training sequences, or samples of the model itself drawn with a many-step sampler.

Import. JYS saves ``sampling_schedule_list-*.pt``: a list of index lists (one per NFE, each 2^k + 1 long, from
0 up to 1024) into its 1,025-point grid linspace(1, 1e-5, 1025). ``load_jys_schedules`` reads that (or a JSON
file of the same lists) and refuses anything else with a one-line error.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..sampling.sampler import Sampler
from ..sampling.draws import make_generator
from ..errors import UserError
from ..graphs import Graph
from ..sampling.loop import CountedScore, ScoreFn
from ..noise import Noise
from ..sampling.schedules import DEFAULT_EPS, check_times
from ..sampling.theta import jump_rates

JYS_STEPS = 1024  # JYS's fine grid: linspace(1, JYS_EPS, JYS_STEPS + 1)
JYS_EPS = 1e-5
RATE_FLOOR = 1e-12  # R1 below this counts as 1e-12 inside the log (a zero rate would make the bound infinite)


def jys_fine_grid() -> Tensor:
    """JYS's 1,025-point time grid, (1025,) float64."""
    return torch.linspace(1.0, JYS_EPS, JYS_STEPS + 1, dtype=torch.float64)


@dataclass
class JYSConfig:
    max_iter: int = 16  # golden-section evaluations per new grid point
    batch_size: int = 64  # sequences per network call
    seed: int = 0  # the noising uniforms (common random numbers of the whole search)
    eps: float = DEFAULT_EPS  # last time of the grid
    cache_mib: float = 256.0  # keep an interval's start rates in memory up to this size (else recompute)

    def validate(self) -> None:
        if self.max_iter < 2:
            raise ValueError(f"max_iter must be >= 2, got {self.max_iter}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must lie in (0, 1), got {self.eps}")


class KLUBEstimator:
    """Monte-Carlo KLUB gains on data ``x0`` (n, L) int64 (real tokens), noised with fixed uniforms."""

    def __init__(self, score_fn: ScoreFn, graph: Graph, noise: Noise, x0: Tensor, cfg: JYSConfig,
                 device: torch.device | str = "cpu"):
        if graph.name not in ("absorbing", "uniform"):
            raise ValueError(f"JYS's KLUB noising is written for the absorbing and uniform graphs, not {graph.name!r}")
        if x0.ndim != 2 or x0.shape[0] < 1:
            raise ValueError(f"KLUB data must be (n, L) with n >= 1, got shape {tuple(x0.shape)}")
        if int(x0.min()) < 0 or int(x0.max()) >= graph.num_tokens:
            raise ValueError(f"KLUB data must hold real tokens in [0, {graph.num_tokens}), got range "
                             f"[{int(x0.min())}, {int(x0.max())}]")
        self.graph, self.noise, self.cfg, self.device = graph, noise, cfg, torch.device(device)
        self.x0 = x0.cpu()
        gen = make_generator(cfg.seed, "cpu")
        self.u = torch.rand(self.x0.shape, generator=gen, dtype=torch.float64)
        self.v = torch.randint(0, graph.num_tokens, self.x0.shape, generator=gen)  # uniform graph: resampled values
        self.call = CountedScore(score_fn, graph, noise)
        self.evaluations = 0
        self._start: dict[float, list[Tensor]] = {}

    def noised(self, t: float) -> Tensor:
        """x0 noised to time t with the fixed uniforms: (n, L) int64 on the CPU."""
        p = -torch.expm1(-self.noise.total(torch.tensor(t, dtype=torch.float64)))
        hit = self.u < p
        new = torch.full_like(self.x0, self.graph.mask_id) if self.graph.absorbing else self.v
        return torch.where(hit, new, self.x0)

    def _rates(self, x: Tensor, t: float) -> Tensor:
        tt = torch.tensor(t, dtype=torch.float64)
        xd = x.to(self.device)
        return jump_rates(self.graph, xd, self.call(xd, tt), self.noise.rate(tt).to(self.device))

    def _batches(self):
        n, bs = self.x0.shape[0], self.cfg.batch_size
        return [(lo, min(lo + bs, n)) for lo in range(0, n, bs)]

    def _start_rates(self, t_a: float, x_a: Tensor, lo: int, hi: int, k: int) -> Tensor:
        """R(x_{t_a}, t_a) for batch k, kept on the CPU while the whole set fits in ``cache_mib``."""
        if t_a in self._start and len(self._start[t_a]) > k:
            return self._start[t_a][k].to(self.device)
        r = self._rates(x_a[lo:hi], t_a)
        size = self.x0.numel() * self.graph.num_states * r.element_size() / 2**20
        if size <= self.cfg.cache_mib:
            self._start.setdefault(t_a, []).append(r.cpu())
        return r

    @torch.no_grad()
    def gain(self, t_a: float, t_mid: float, t_b: float) -> float:
        """KLUB removed by inserting t_mid into the step t_a -> t_b, per sequence (see the module docstring)."""
        x_a, x_m = self.noised(t_a), self.noised(t_mid)
        total = torch.zeros((), dtype=torch.float64)
        for k, (lo, hi) in enumerate(self._batches()):
            r1 = self._start_rates(t_a, x_a, lo, hi, k).double()
            r2 = self._rates(x_m[lo:hi], t_mid).double()
            keep = (self.graph.movable(x_m[lo:hi]) & (x_m[lo:hi] == x_a[lo:hi])).to(self.device)
            term = torch.xlogy(r2, r2) - r2 * torch.log(r1.clamp_min(RATE_FLOOR)) - r2 + r1
            total += (term.sum(-1) * keep).sum().cpu()
        self.evaluations += 1
        return float((t_mid - t_b) * total / self.x0.shape[0])


def golden_max(f: Callable[[float], float], lo: float, hi: float, max_iter: int) -> tuple[float, float]:
    """Golden-section search for the maximum of f on [lo, hi] with ``max_iter`` evaluations; returns the best
    evaluated (x, f(x)) (f need not be exactly unimodal)."""
    inv = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - inv * (b - a), a + inv * (b - a)
    seen = {c: f(c), d: f(d)}
    fc, fd = seen[c], seen[d]
    for _ in range(max_iter - 2):
        if fc >= fd:  # the maximum lies in [a, d]
            b, d, fd = d, c, fc
            c = b - inv * (b - a)
            fc = seen[c] = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + inv * (b - a)
            fd = seen[d] = f(d)
    best = max(seen, key=seen.get)
    return best, seen[best]


class JYSSearch:
    """The hierarchical KLUB search; ``grid(M)`` for any M, sharing every interval's best split."""

    def __init__(self, estimator: KLUBEstimator, log: Callable[[str], None] | None = None):
        self.est, self.cfg, self.log = estimator, estimator.cfg, log
        self.splits: dict[tuple[float, float], tuple[float, float]] = {}
        self.seconds = 0.0

    def split(self, t_a: float, t_b: float) -> tuple[float, float]:
        """The point of (t_b, t_a) whose insertion removes the most KLUB, and that gain."""
        key = (t_a, t_b)
        if key not in self.splits:
            t0 = time.perf_counter()
            margin = 1e-3 * (t_a - t_b)
            self.splits[key] = golden_max(lambda t: self.est.gain(t_a, t, t_b), t_b + margin, t_a - margin,
                                          self.cfg.max_iter)
            self.est._start.pop(t_a, None)
            self.seconds += time.perf_counter() - t0
            if self.log is not None:
                self.log(f"  [{t_a:.5f}, {t_b:.5f}] -> {self.splits[key][0]:.5f} (KLUB gain {self.splits[key][1]:.4g})")
        return self.splits[key]

    def grid(self, nfe: int) -> Tensor:
        """The JYS grid with ``nfe`` steps, (nfe + 1,) float64 from 1 to eps."""
        if int(nfe) != nfe or nfe < 1:
            raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
        grid = [1.0, float(self.cfg.eps)]
        while 2 * (len(grid) - 1) <= nfe:
            grid = _insert(grid, [self.split(a, b)[0] for a, b in zip(grid[:-1], grid[1:])])
        extra = nfe - (len(grid) - 1)
        if extra:
            gains = [self.split(a, b) for a, b in zip(grid[:-1], grid[1:])]
            chosen = set(sorted(range(len(gains)), key=lambda i: -gains[i][1])[:extra])
            grid = _insert(grid, [gains[i][0] if i in chosen else None for i in range(len(gains))])
        times = torch.tensor(grid, dtype=torch.float64)
        check_times(times)
        return times


def _insert(grid: list[float], points: list[float | None]) -> list[float]:
    out = []
    for a, p in zip(grid[:-1], points):
        out.append(a)
        if p is not None:
            out.append(p)
    return out + [grid[-1]]


def schedule_artifact(times: Tensor, model, base: str, provenance: dict[str, Any]) -> Sampler:
    """A sampler that is just a time grid: rule ``base``, Phi = 1 at every step, bound to ``model``'s graph and
    noise (not to its weights: a grid fits any model of that graph and noise)."""
    from ..sampling.sampler import model_ref

    ref = {**model_ref(model), "fingerprint": None}
    return Sampler(tuple(float(v) for v in times), base, model=ref, provenance=provenance)


def _bad(path: Path, why: str) -> UserError:
    return UserError(f"{path}: not a JYS schedule file ({why}); expected a list of index lists into JYS's 1,025-point "
                     f"time grid linspace(1, 1e-5, 1025), each strictly increasing from 0 to {JYS_STEPS}")


def load_jys_schedules(path: str | Path) -> list[list[int]]:
    """Read JYS's saved schedules (torch ``.pt`` list of index lists, or the same lists as JSON); UserError for
    anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"JYS schedule file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a torch file: try JSON
        try:
            obj = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _bad(path, "neither a torch file nor JSON") from None
    if isinstance(obj, Tensor):
        obj = obj.tolist()
    if isinstance(obj, list) and obj and all(isinstance(v, int) and not isinstance(v, bool) for v in obj):
        obj = [obj]
    if not isinstance(obj, list) or not obj:
        raise _bad(path, f"holds a {type(obj).__name__}")
    out = []
    for s in obj:
        if isinstance(s, Tensor):
            s = s.tolist()
        if not isinstance(s, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in s):
            raise _bad(path, f"an entry is not a list of integers: {str(s)[:60]}")
        if len(s) < 2 or s[0] != 0 or s[-1] != JYS_STEPS or any(b <= a for a, b in zip(s[:-1], s[1:])):
            raise _bad(path, f"index list {list(s)[:8]}{'...' if len(s) > 8 else ''} does not run strictly "
                             f"upward from 0 to {JYS_STEPS}")
        out.append(list(s))
    return out


def import_jys_grid(path: str | Path, nfe: int) -> Tensor:
    """The time grid (nfe + 1,) float64 of the ``nfe``-step schedule in a JYS file."""
    schedules = load_jys_schedules(path)
    for s in schedules:
        if len(s) == nfe + 1:
            return jys_fine_grid()[torch.tensor(s)]
    have = sorted(len(s) - 1 for s in schedules)
    raise UserError(f"{path}: no {nfe}-step schedule in this JYS file; it has NFE {have}")


__all__ = ["JYS_STEPS", "JYS_EPS", "jys_fine_grid", "JYSConfig", "KLUBEstimator", "golden_max", "JYSSearch",
           "schedule_artifact", "load_jys_schedules", "import_jys_grid"]
