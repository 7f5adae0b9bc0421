"""LSD and LSD+ (method.md §3-5): learn one coefficient per step (and, for LSD+, the time grid) of an
M-step student sampler by matching the score trajectory of an N-step teacher. The network stays frozen.

Per student step k the Phi-loss compares the teacher's cached score s*_k with the student's scaled score
at its own state (rows movable in both paths, real-token columns other than either current token):
  l2: |scale(s_k, Phi_k) - s*_k|^2 / |s*_k|^2 (relative, so no step dominates by scale);
  kl: KL(teacher step law || student step law), both over the student's interval, built by the base
      sampler's own ``*_probs`` from s*_k and from Phi_k s_k (mass-covering: favours flatter steps);
  rkl: KL(student || teacher), the same laws the other way round (mode-seeking: favours sharper steps).
LSD+ adds a time-loss on the *effective transition* of each step (our reading of eq. 8, with the
interval, not one teacher step): the student's step over [tau_k, tau_{k+1}] against the teacher's step
over the matching uniform interval [t_k, t_{k+1}] - in l2 the off-diagonal step masses, in kl the step laws.
Gradients of the Phi-loss reach only Phi, those of the time-loss only the grid (theta); states depend on
earlier steps only through discrete draws, so nothing is backpropagated through the network.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import dist
from .artifact import LearnedSampler
from .draws import RowStreams, make_generator
from .graphs import Graph
from .loop import CountedScore, ScoreFn, StepInfo, reverse_loop
from .noise import Noise
from .samplers import PHI_MODES, SAMPLERS, scale_score, step_law_dense
from .schedules import uniform_times
from .teacher import TeacherCache, run_teacher

METHODS = ("lsd", "lsd+")
LOSSES = ("l2", "kl", "rkl")


@dataclass
class DistillConfig:
    base: str = "euler"  # base sampler: euler | tweedie
    nfe: int = 8  # student steps M (= network calls per sample)
    teacher_nfe: int = 1024  # teacher steps N, a multiple of M
    # defaults chosen by benchmarks/ablations_countdown_nfe8.md (see the README, "Defaults and why")
    method: str = "lsd"  # lsd: coefficients only; lsd+: coefficients and time grid
    phi_mode: str = "linear"  # how Phi enters: linear (x score) | log (x log-score)
    loss: str = "l2"  # l2 | kl (teacher || student) | rkl (student || teacher)
    zeta: float = 0.05  # relaxation: fraction of start tokens perturbed (student only)
    epochs: int = 20
    num_traj: int = 256  # teacher trajectories
    batch_size: int = 64  # trajectories per optimiser step
    chunk: int = 16  # trajectories per random stream: the unit spread over torchrun processes
    lr: float = 0.05  # Adam, coefficients
    lr_time: float = 0.05  # Adam, grid logits (LSD+)
    alternate: bool = False  # LSD+: alternate epochs of Phi and grid instead of joint updates
    closed_form: bool = False  # linear + l2 only: refit Phi exactly while simulating (no Adam)
    eps: float = 1e-5  # grid end
    seed: int = 0

    def validate(self) -> None:
        checks = [
            (self.base in SAMPLERS, f"base must be one of {sorted(SAMPLERS)}, got {self.base!r}"),
            (self.method in METHODS, f"method must be one of {list(METHODS)}, got {self.method!r}"),
            (self.phi_mode in PHI_MODES, f"phi mode must be one of {list(PHI_MODES)}, got {self.phi_mode!r}"),
            (self.loss in LOSSES, f"loss must be one of {list(LOSSES)}, got {self.loss!r}"),
            (self.nfe >= 1, f"nfe must be >= 1, got {self.nfe}"),
            (self.teacher_nfe >= self.nfe and self.teacher_nfe % self.nfe == 0,
             f"teacher nfe must be a multiple of the student nfe {self.nfe}, got {self.teacher_nfe}"),
            (0.0 <= self.zeta <= 1.0, f"zeta must lie in [0, 1], got {self.zeta}"),
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.num_traj >= 1 and self.batch_size >= 1 and self.chunk >= 1,
             f"num_traj, batch_size and chunk must be >= 1, got {self.num_traj}, {self.batch_size}, {self.chunk}"),
            (0.0 < self.eps < 1.0, f"eps must lie in (0, 1), got {self.eps}"),
            (not self.closed_form or (self.phi_mode == "linear" and self.loss == "l2" and self.method == "lsd"),
             "the closed-form fast path needs --method lsd --phi-mode linear --loss l2"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)


class SamplerParams(nn.Module):
    """Learnable part of the student: Phi = exp(log_phi) (M,) and, for LSD+, grid logits theta (M,).

    Phi is kept positive through its logarithm: a clamp would leave a coefficient that Adam pushed below
    zero with no gradient, stuck for good (seen in practice); Adam's steps are then relative changes.

    kappa = (1 - eps) softmax(theta), tau_k = 1 - sum_{l <= k} kappa_l: positive steps, tau_M = eps exactly,
    uniform at theta = 0.
    """

    def __init__(self, nfe: int, eps: float, learn_times: bool):
        super().__init__()
        self.eps = eps
        self.log_phi = nn.Parameter(torch.zeros(nfe, dtype=torch.float64))
        self.theta = nn.Parameter(torch.zeros(nfe, dtype=torch.float64), requires_grad=learn_times)

    def coeffs(self) -> Tensor:
        return self.log_phi.exp()

    def times(self) -> Tensor:
        """(M + 1,) strictly decreasing from 1 to eps, differentiable in theta (exactly the uniform grid
        while the grid is not learned)."""
        if not self.theta.requires_grad:
            return uniform_times(self.theta.numel(), self.eps)
        kappa = (1.0 - self.eps) * torch.softmax(self.theta, 0)
        tau = 1.0 - torch.cumsum(kappa, 0)
        tau = torch.cat([tau.new_ones(1), tau[:-1], tau.new_full((1,), self.eps)])
        return tau


def perturb_start(x_T: Tensor, graph: Graph, zeta: float, generator: torch.Generator | None) -> Tensor:
    """Replace ceil(zeta L) random positions of each start by random real tokens (method.md §5);
    on the uniform graph a replaced token always changes. (b, L) -> (b, L); a fresh draw each call."""
    b, length = x_T.shape
    n = int(torch.ceil(torch.tensor(zeta * length)).item()) if zeta > 0 else 0
    if n == 0:
        return x_T.clone()
    pos = torch.rand(b, length, generator=generator, dtype=torch.float64).argsort(-1)[:, :n]
    if graph.absorbing:
        new = torch.randint(0, graph.num_tokens, (b, n), generator=generator)
    else:
        shift = torch.randint(1, graph.num_tokens, (b, n), generator=generator)
        new = (x_T.gather(-1, pos) + shift) % graph.num_tokens
    return x_T.scatter(-1, pos, new)


def _compare_mask(graph: Graph, x: Tensor, x_star: Tensor, stored: Tensor) -> Tensor:
    """Rows compared: movable in both paths (absorbing: masked in both); uniform: the same current token."""
    both = graph.movable(x) & stored
    return both if graph.absorbing else both & (x == x_star)


def _off_diag(graph: Graph, x: Tensor, p: Tensor) -> Tensor:
    """Real-token columns other than the current token: (b, L, S) -> (b, L, N)."""
    return p.scatter(-1, x[..., None], 0.0)[..., : graph.num_tokens]


def _sq_sum(a: Tensor, b: Tensor, rows: Tensor) -> Tensor:
    """sum over compared rows of |a - b|^2; a, b (b, L, N), rows (b, L) bool."""
    return ((a - b) ** 2 * rows[..., None].to(a.dtype)).sum()


KL_FLOOR = 1e-12  # a student mass of 0 where the teacher has mass costs log(p / 1e-12), not infinity


def _kl_sum(p: Tensor, q: Tensor, rows: Tensor) -> Tensor:
    """sum over rows of KL(p || q); p, q (b, L, S) step laws."""
    kl = (p * (torch.log(p.clamp_min(1e-300)) - torch.log(q.clamp_min(KL_FLOOR)))).sum(-1)
    return (kl * rows).sum()


def _full_score(graph: Graph, x: Tensor, s_real: Tensor) -> Tensor:
    """Real-token scores (b, L, N) -> a full score (b, L, S) with 1 at the current token (mask column 1)."""
    full = torch.ones(*x.shape, graph.num_states, dtype=torch.float64, device=x.device)
    full[..., : graph.num_tokens] = s_real.to(torch.float64)
    return full.scatter(-1, x[..., None], 1.0)


@dataclass
class StepLosses:
    """Sums over this process's compared rows; divide by the global row count (``StepStats``) for means."""

    phi: Tensor
    time: Tensor
    rows: int


# per-step statistics summed over every process before the losses are normalised:
# [compared rows, sum of the teacher's squared transition masses (LSD+ l2 scale), <s, s*>, |s|^2 (closed form)]
N_STATS = 4


def _time_laws(cfg: DistillConfig, graph: Graph, noise: Noise, x: Tensor, score: Tensor, teacher_full: Tensor,
               phi: Tensor, tau: Tensor, t_uni: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The student's effective transition over [tau_k, tau_k+1] and the teacher's over [t_k, t_k+1]."""
    p_teacher = step_law_dense(cfg.base, graph, noise, x, teacher_full, t_uni[k], t_uni[k + 1])
    p_student = step_law_dense(cfg.base, graph, noise, x, score, tau[k], tau[k + 1], phi.detach(), cfg.phi_mode)
    return p_student, p_teacher


def step_stats(cfg: DistillConfig, graph: Graph, noise: Noise, x: Tensor, score: Tensor, x_star: Tensor,
               stored: Tensor, s_star: Tensor, phi: Tensor, tau: Tensor, t_uni: Tensor, k: int,
               last: bool) -> Tensor:
    """This process's share of the step-k statistics (N_STATS,) float64 (no gradient)."""
    with torch.no_grad():
        rows = _compare_mask(graph, x, x_star, stored)
        out = torch.zeros(N_STATS, dtype=torch.float64)
        out[0] = float(rows.sum())
        if not rows.any():
            return out
        teacher_full = _full_score(graph, x, s_star)
        if cfg.method == "lsd+" and cfg.loss == "l2" and not last:
            _, p_teacher = _time_laws(cfg, graph, noise, x, score, teacher_full, phi, tau, t_uni, k)
            target = _off_diag(graph, x, p_teacher)
            out[1] = float(((target**2).sum(-1) * rows).sum())
        if cfg.closed_form:
            s = _off_diag(graph, x, score.to(torch.float64)) * rows[..., None]
            s_star_r = _off_diag(graph, x, teacher_full) * rows[..., None]
            out[2], out[3] = float((s * s_star_r).sum()), float((s * s).sum())
        return out


def step_losses(cfg: DistillConfig, graph: Graph, noise: Noise, x: Tensor, score: Tensor, x_star: Tensor,
                stored: Tensor, s_star: Tensor, phi: Tensor, tau: Tensor, t_uni: Tensor, k: int,
                last: bool, scale: float, stats: Tensor) -> StepLosses:
    """Losses of one student step k, as this process's share of the global mean.

    x, x_star (b, L); score (b, L, S) student; s_star (b, L, N) teacher; phi the coefficient (0-d, grad);
    tau (M+1,) student grid (grad for LSD+); t_uni (M+1,) teacher grid; scale: typical squared norm of the
    teacher's score rows at this step (l2); stats: the step's statistics summed over all processes."""
    rows = _compare_mask(graph, x, x_star, stored)
    score = score.to(torch.float64)
    zero = score.new_zeros(())
    n_rows = float(stats[0])
    if not rows.any() or n_rows == 0:
        return StepLosses(zero, zero, 0)
    teacher_full = _full_score(graph, x, s_star)  # teacher's score, read at the student's current tokens
    t_k, s_k = tau[k].detach(), tau[k + 1].detach()
    if cfg.loss == "l2":
        loss_phi = _sq_sum(_off_diag(graph, x, scale_score(score, x, phi, cfg.phi_mode)),
                           _off_diag(graph, x, teacher_full), rows) / (n_rows * scale)
    else:
        p_teacher = step_law_dense(cfg.base, graph, noise, x, teacher_full, t_k, s_k, last=last)
        p_student = step_law_dense(cfg.base, graph, noise, x, score, t_k, s_k, phi, cfg.phi_mode, last=last)
        pair = (p_teacher, p_student) if cfg.loss == "kl" else (p_student, p_teacher)
        loss_phi = _kl_sum(*pair, rows) / n_rows
    loss_time = zero
    if cfg.method == "lsd+" and not last:
        p_student, p_teacher = _time_laws(cfg, graph, noise, x, score, teacher_full, phi, tau, t_uni, k)
        if cfg.loss == "l2":
            scale_t = max(float(stats[1]) / n_rows, 1e-300)
            loss_time = _sq_sum(_off_diag(graph, x, p_student), _off_diag(graph, x, p_teacher), rows) / (
                n_rows * scale_t)
        else:
            pair = (p_teacher, p_student) if cfg.loss == "kl" else (p_student, p_teacher)
            loss_time = _kl_sum(*pair, rows) / n_rows
    return StepLosses(loss_phi, loss_time, int(rows.sum()))


@dataclass
class DistillResult:
    times: Tensor  # (M + 1,) learned grid
    coeffs: Tensor  # (M,)
    history: list[dict] = field(default_factory=list)  # per epoch: loss_phi, loss_time, seconds
    teacher_seconds: float = 0.0
    student_seconds: float = 0.0
    teacher_calls: int = 0
    student_calls: int = 0


class _Batch:
    """One optimiser step's trajectories as this process sees them: the chunks it owns, their start states
    (perturbed per chunk from the chunk's own stream) and one draw stream per chunk."""

    def __init__(self, cfg: DistillConfig, graph: Graph, cache: TeacherCache, idx_all: Tensor, epoch: int,
                 batch: int, device):
        chunks = [idx_all[c0 : c0 + cfg.chunk] for c0 in range(0, idx_all.numel(), cfg.chunk)]
        mine = dist.my_items(len(chunks))
        self.idx = torch.cat([chunks[c] for c in mine]) if mine else idx_all[:0]
        starts = [perturb_start(cache.x_T[chunks[c]], graph, cfg.zeta, make_generator(cfg.seed, "cpu", 4, epoch, batch, c))
                  for c in mine]
        self.x = torch.cat(starts).to(device) if mine else None
        self.streams = RowStreams([make_generator(cfg.seed, device, 3, epoch, batch, c) for c in mine],
                                  [chunks[c].numel() for c in mine]) if mine else None


def _epoch(cfg: DistillConfig, call: CountedScore, graph: Graph, noise: Noise, cache: TeacherCache,
           params: SamplerParams, opt: torch.optim.Optimizer | None, epoch: int, train_phi: bool,
           train_time: bool, device) -> dict:
    """One pass over the teacher trajectories in shuffled batches (one optimiser step each); returns the mean
    losses. Every process runs the same steps; each owns some chunks of every batch (see ``_Batch``)."""
    m = cfg.nfe
    t_uni = cache.times.to(torch.float64)
    order = torch.randperm(cache.num, generator=make_generator(cfg.seed, "cpu", 2, epoch))
    scales = [cache.mean_sq(k) for k in range(m)]
    cf_sums = torch.zeros(m, 2, dtype=torch.float64)  # closed form: running <s, s*> and |s|^2 per step
    tot_phi = tot_time = 0.0
    n_batches = 0
    calls0 = call.calls
    for bi, b0 in enumerate(range(0, cache.num, cfg.batch_size)):
        batch = _Batch(cfg, graph, cache, order[b0 : b0 + cfg.batch_size], epoch, bi, device)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        tau = params.times()
        sums = torch.zeros(2, dtype=torch.float64)  # this process's share of the batch's phi and time losses

        def learn(info: StepInfo) -> None:
            k, x, score = info.k, info.x, info.score
            x_star, stored, s_star = cache.score_at(k, batch.idx)
            x_star, stored, s_star = x_star.to(device), stored.to(device), s_star.to(device)
            phi = params.coeffs()[k]
            local = step_stats(cfg, graph, noise, x, score, x_star, stored, s_star, phi, tau, t_uni, k, info.last)
            _learn_from(local, k, info.last, x, score, x_star, stored, s_star, phi)

        def _learn_from(local, k, last, x=None, score=None, x_star=None, stored=None, s_star=None, phi=None):
            stats = dist.all_reduce_sum(local)  # exactly one collective per step on every process
            if cfg.closed_form:
                cf_sums[k] += stats[2:]
                if cf_sums[k, 0] > 0 and cf_sums[k, 1] > 0:
                    with torch.no_grad():
                        params.log_phi[k] = torch.log(cf_sums[k, 0] / cf_sums[k, 1])
                return
            if x is None:
                return
            losses = step_losses(cfg, graph, noise, x, score, x_star, stored, s_star, phi, tau, t_uni, k, last,
                                 scales[k], stats)
            loss = (losses.phi if train_phi else 0.0) + (losses.time if train_time else 0.0)
            if torch.is_tensor(loss) and loss.requires_grad:
                loss.backward(retain_graph=True)
            sums[0] += float(losses.phi.detach())
            sums[1] += float(losses.time.detach())

        if batch.x is not None:
            reverse_loop(call, graph, noise, tau.detach(), batch.x, rule=cfg.base, phi_mode=cfg.phi_mode,
                         coeffs=lambda k, x, score: params.coeffs()[k].detach(), generator=batch.streams,
                         on_score=learn)
        else:  # this process owns no chunk of a short batch: it still joins every step's collective
            for k in range(m):
                _learn_from(torch.zeros(N_STATS, dtype=torch.float64), k, k == m - 1)
        if opt is not None:
            dist.sum_grads([p for p in params.parameters() if p.requires_grad])
            opt.step()
        sums = dist.all_reduce_sum(sums)
        tot_phi += float(sums[0]) / m
        tot_time += float(sums[1]) / m
        n_batches += 1
    calls = int(dist.all_reduce_sum(torch.tensor([call.calls - calls0]))[0])
    return {"loss_phi": tot_phi / n_batches, "loss_time": tot_time / n_batches, "calls": calls}


def make_teacher(score_fn: ScoreFn, graph: Graph, noise: Noise, length: int, cfg: DistillConfig, *,
                 device: torch.device | str = "cpu", progress: bool = True) -> TeacherCache:
    """The teacher trajectories for ``cfg``: base sampler, teacher_nfe steps, seeded with cfg.seed."""
    return run_teacher(score_fn, graph, noise, uniform_times(cfg.nfe, cfg.eps), cfg.teacher_nfe, cfg.num_traj,
                       length, method=cfg.base, batch_size=cfg.batch_size,
                       seed=cfg.seed, device=device, progress=progress)


def distill(score_fn: ScoreFn, graph: Graph, noise: Noise, length: int, cfg: DistillConfig, *,
            device: torch.device | str = "cpu", progress: bool = True, cache: TeacherCache | None = None,
            state: dict | None = None, on_epoch: Callable[[dict, dict], None] | None = None) -> DistillResult:
    """Distill a learned M-step sampler. ``cache`` reuses teacher trajectories; ``state`` resumes from a
    checkpoint dict given earlier to ``on_epoch(record, state)`` (called after every epoch)."""
    cfg.validate()
    if cache is None:
        cache = make_teacher(score_fn, graph, noise, length, cfg, device=device, progress=progress)
    if cache.num < 1 or len(cache.states) != cfg.nfe:
        raise ValueError(f"teacher cache has {len(cache.states)} steps, the student {cfg.nfe}")
    params = SamplerParams(cfg.nfe, cfg.eps, learn_times=cfg.method == "lsd+")
    groups = [{"params": [params.log_phi], "lr": cfg.lr}]
    if cfg.method == "lsd+":
        groups.append({"params": [params.theta], "lr": cfg.lr_time})
    opt = None if cfg.closed_form else torch.optim.Adam(groups)
    history: list[dict] = []
    start_epoch = 0
    if state is not None:
        params.load_state_dict(state["params"])
        if opt is not None:
            opt.load_state_dict(state["opt"])
        history = list(state["history"])
        start_epoch = state["epoch"]
    call = CountedScore(score_fn, graph, noise)
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"{cfg.method} M={cfg.nfe}", disable=not progress or not dist.is_main(),
               initial=start_epoch, total=cfg.epochs)
    student_calls = 0
    for epoch in bar:
        t0 = time.perf_counter()
        joint = not cfg.alternate or cfg.method != "lsd+"
        train_phi = joint or epoch % 2 == 0
        train_time = cfg.method == "lsd+" and (joint or epoch % 2 == 1)
        rec = _epoch(cfg, call, graph, noise, cache, params, opt, epoch, train_phi, train_time, device)
        student_calls += rec.pop("calls")
        rec.update(epoch=epoch + 1, seconds=time.perf_counter() - t0)
        history.append(rec)
        bar.set_postfix(loss_phi=f"{rec['loss_phi']:.4g}", loss_time=f"{rec['loss_time']:.3g}")
        if on_epoch is not None:
            on_epoch(rec, {"params": params.state_dict(), "opt": opt.state_dict() if opt else None,
                           "history": history, "epoch": epoch + 1})
    with torch.no_grad():
        times, coeffs = params.times().detach().clone(), params.coeffs().detach().clone()
    return DistillResult(times, coeffs, history, cache.seconds, sum(h["seconds"] for h in history),
                         cache.nfe, student_calls)


def to_artifact(result: DistillResult, cfg: DistillConfig, graph: Graph, noise: Noise,
                model_info: dict[str, Any] | None = None) -> LearnedSampler:
    """Package a distillation result as a self-describing ``LearnedSampler``."""
    from . import __version__

    provenance = {
        **(model_info or {}),
        "method": cfg.method, "teacher_nfe": cfg.teacher_nfe, "zeta": cfg.zeta, "loss": cfg.loss,
        "epochs": cfg.epochs, "seed": cfg.seed, "lsdd_version": __version__, "distill_config": asdict(cfg),
        "teacher_seconds": round(result.teacher_seconds, 3), "student_seconds": round(result.student_seconds, 3),
        "history": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()} for h in result.history],
    }
    return LearnedSampler(base=cfg.base, graph=graph.name, num_tokens=graph.num_tokens, noise=noise.to_dict(),
                          times=tuple(float(v) for v in result.times), coeffs=tuple(float(v) for v in result.coeffs),
                          phi_mode=cfg.phi_mode, provenance=provenance)
