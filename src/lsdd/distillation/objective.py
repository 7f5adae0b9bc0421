"""Distribution-level objective (``lsdd distill --objective hellinger|mmd``): fit a sampler's handful of parameters
so that its *outputs* match the teacher's outputs, with a gradient-free optimiser (CMA-ES, package ``cma``).

The network stays frozen and only the teacher's output samples are the target. Every candidate draws its samples
from the same random streams (common random numbers), so the differences between candidates are not drowned in
sampling noise, and the objective is a deterministic function of the parameters.

Distances between sample sets a (n, L) and b (m, L):
- ``hellinger``: squared Hellinger distance between the pooled unigram distributions plus that between the pooled
  bigram distributions, sum_c (sqrt p_c - sqrt q_c)^2 each. Unlike an L2 distance it grows linearly with mass put
  on cells the teacher never uses (a rule-breaking bigram scattered over many cells still counts in full).
- ``mmd``: the unbiased unigram+bigram MMD^2 of ``lsdd.distillation.validate`` (an L2 distance of the same pooled histograms).
  Unbiased: its expectation is the squared L2 distance of the two laws' n-gram frequencies, so unlike the plug-in
  Hellinger (whose sparse-cell noise shrinks when a sampler sharpens: on text it falls monotonically from T = 1.15
  to T = 0.7) it is not pulled towards sharper samplers.
- ``features+mmd``: ``features`` plus the unbiased n-gram MMD^2, each in units of its own sampling noise
  (``CombinedObjective``), so that a fit cannot trade n-gram drift (what validation's guard rejects) for NLL.
- ``features``: the energy distance between per-sample features of the two sets - the frozen model's own
  denoising NLL bound per token (``validate.model_nll``, 2 noise levels, common random numbers) and the sample's
  unigram entropy, each divided by its spread over the teacher's outputs. Matches quality *and* diversity
  jointly: a sharper sampler lowers the NLL but moves the entropy away from the teacher's. Costs one network
  call per sample per noise level on top of the sampling.

**Early exit.** Before the fit, the base sampler's outputs are tested against the teacher's with the objective
itself as a two-sample statistic (``PERMUTATIONS`` random relabellings of the pooled sets). When its p-value is
at least ``AT_TEACHER_P`` the base is already at the teacher's level on everything the objective sees, no fit can
be shown better, and the fit is skipped (text-absorb at 8 NFE: spread movers, benchmarks/issue24_bench.md).

The parameter vector is mapped to per-step parameters through a small basis in the step index (``basis`` = 1:
one value for all steps; 2: affine in k), so a few numbers describe any M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .statistics import (energy_distance, mmd2, ngram_hellinger, permutation_p, pooled_ngrams,  # noqa: F401
                         random_splits, unigram_entropy)

OBJECTIVES = ("trajectory", "hellinger", "mmd", "features", "features+mmd")
FEATURE_TIMES = 2  # noise levels of the NLL feature
DEFAULT_OUTPUT_OBJECTIVE = "features+mmd"  # what "auto" means for lsd-c (lsd / lsd+: "trajectory")
PERMUTATIONS = 200  # random relabellings of the early exit's permutation test
AT_TEACHER_P = 0.25  # the early exit's p-value threshold (``at_teacher``)


def resolve_objective(method: str, objective: str) -> str:
    """``objective`` with "auto" decided for ``method``: ``DEFAULT_OUTPUT_OBJECTIVE`` for lsd-c, "trajectory" for
    lsd / lsd+ (the one place that decides it, for the CLI, the bench and the engine)."""
    if objective != "auto":
        return objective
    return DEFAULT_OUTPUT_OBJECTIVE if method == "lsd-c" else "trajectory"


def distance(name: str, a: Tensor, b: Tensor, num_states: int, free_a: Tensor | None = None,
             free_b: Tensor | None = None) -> float:
    """The distribution distance ``name`` between sample sets a (n, L) and b (m, L), of their generated tokens
    ``free_a``, ``free_b`` ((n, L), (m, L) bool) when given (conditional samples)."""
    if name == "hellinger":
        return ngram_hellinger(a, b, num_states, free_a, free_b)
    if name == "mmd":
        return mmd2(a, b, num_states, free_a, free_b)
    raise ValueError(f"unknown distribution objective {name!r}; expected hellinger or mmd")


class FeatureObjective:
    """``features``: x (n, L) -> energy distance between its features and the target's (see the module doc).
    The target's features and their spread are computed once. Conditional samples: ``target_free`` (m, L) bool
    the target's generated positions, ``free`` (n, L) those of the candidates' samples (both features then read
    the generation only)."""

    def __init__(self, score_fn, graph, noise, target: Tensor, *, seed: int, batch_size: int, device="cpu",
                 target_free: Tensor | None = None, free: Tensor | None = None):
        self.score_fn, self.graph, self.noise = score_fn, graph, noise
        self.seed, self.batch_size, self.device = seed, batch_size, device
        self.free = free
        feats = self.features(target, target_free)
        self.scale = feats.std(0).clamp_min(1e-8)
        self.target = feats / self.scale

    def features(self, x: Tensor, free: Tensor | None = None) -> Tensor:
        from .statistics import model_nll

        nll = model_nll(self.score_fn, self.graph, self.noise, x, num_times=FEATURE_TIMES, seed=self.seed,
                        batch_size=self.batch_size, device=self.device, free=free)
        return torch.stack([nll, unigram_entropy(x.to(self.device), self.graph.num_states, free)], 1)

    def __call__(self, x: Tensor) -> float:
        return energy_distance(self.features(x, self.free) / self.scale, self.target)

    def test(self, x: Tensor, permutations: int = PERMUTATIONS, seed: int = 0) -> tuple[float, float]:
        """(objective of x, permutation p-value of x's features against the target's; see ``at_teacher``)."""
        f = self.features(x, self.free) / self.scale
        pooled, n = torch.cat([f, self.target.to(f.dtype)]), f.shape[0]
        observed = energy_distance(f, self.target)
        p = permutation_p(lambda i, j: energy_distance(pooled[i], pooled[j]), pooled.shape[0], n, observed,
                          permutations=permutations, seed=seed)
        return observed, p


class NgramObjective:
    """``hellinger`` / ``mmd``: x (n, L) -> the pooled n-gram distance ``name`` to the target (m, L), of the
    generated positions ``free`` / ``target_free`` when given."""

    def __init__(self, name: str, num_states: int, target: Tensor, *, target_free: Tensor | None = None,
                 free: Tensor | None = None):
        if name not in ("hellinger", "mmd"):
            raise ValueError(f"unknown distribution objective {name!r}; expected hellinger or mmd")
        self.name, self.num_states, self.target, self.target_free, self.free = name, num_states, target, target_free, free

    def __call__(self, x: Tensor) -> float:
        return distance(self.name, x, self.target, self.num_states, self.free, self.target_free)

    def pooled_free(self, x: Tensor) -> Tensor | None:
        """(n + m, L) bool: the generated positions of x's rows then the target's (None when both are whole)."""
        if self.free is None and self.target_free is None:
            return None
        return torch.cat([(torch.ones_like(x, dtype=torch.bool) if self.free is None else self.free).cpu(),
                          (torch.ones_like(self.target, dtype=torch.bool) if self.target_free is None
                           else self.target_free).cpu()])

    def test(self, x: Tensor, permutations: int = PERMUTATIONS, seed: int = 0) -> tuple[float, float]:
        """(objective of x, permutation p-value of x against the target; see ``at_teacher``)."""
        pooled, n = torch.cat([x.cpu(), self.target.cpu()]), x.shape[0]
        fr = self.pooled_free(x)

        def stat(i: Tensor, j: Tensor) -> float:
            return distance(self.name, pooled[i], pooled[j], self.num_states, None if fr is None else fr[i],
                            None if fr is None else fr[j])

        observed = self(x)
        return observed, permutation_p(stat, pooled.shape[0], n, observed, permutations=permutations, seed=seed)


class CombinedObjective:
    """``features+mmd``: the features objective plus the pooled n-gram MMD^2 (what validation's n-gram guard reads),
    each divided by its own noise: the standard deviation of that term over random relabellings of a reference
    sample set pooled with the target (``calibrate``; the start's outputs, at the candidates' sample size). Each
    term so counts in units of its sampling noise, and the fit cannot buy NLL with n-gram drift."""

    def __init__(self, features: FeatureObjective, ngrams: NgramObjective):
        self.feat, self.ngram = features, ngrams
        self.noise: tuple[float, float] | None = None
        self._last: tuple[Tensor, tuple] | None = None  # the last set pooled (its features cost network calls)

    def _pooled(self, x: Tensor):
        """(parts(idx_a, idx_b) -> (energy distance, MMD^2), total, n) for x pooled with the target; the last set's
        pooling is kept, so calibrating on x and then testing x computes its features once."""
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        f = self.feat.features(x, self.feat.free) / self.feat.scale
        tok = torch.cat([x.cpu(), self.ngram.target.cpu()])
        fr = self.ngram.pooled_free(x)
        pooled = torch.cat([f, self.feat.target.to(f.dtype)])

        def parts(i: Tensor, j: Tensor) -> tuple[float, float]:
            return (energy_distance(pooled[i], pooled[j]),
                    distance(self.ngram.name, tok[i], tok[j], self.ngram.num_states,
                             None if fr is None else fr[i], None if fr is None else fr[j]))

        self._last = (x, (parts, pooled.shape[0], x.shape[0]))
        return self._last[1]

    def calibrate(self, x: Tensor, permutations: int = PERMUTATIONS, seed: int = 0) -> tuple[float, float]:
        """Set (and return) the two terms' noise from ``permutations`` relabellings of x pooled with the target."""
        parts, total, n = self._pooled(x)
        draws = [parts(i, j) for i, j in random_splits(total, n, permutations, seed)]
        sd = torch.tensor(draws, dtype=torch.float64).std(0).clamp_min(1e-12)
        self.noise = (float(sd[0]), float(sd[1]))
        return self.noise

    def _combine(self, ed: float, m: float) -> float:
        if self.noise is None:
            raise RuntimeError("calibrate the combined objective first")
        return ed / self.noise[0] + m / self.noise[1]

    def __call__(self, x: Tensor) -> float:
        parts, total, n = self._pooled(x)
        return self._combine(*parts(torch.arange(n), torch.arange(n, total)))

    def test(self, x: Tensor, permutations: int = PERMUTATIONS, seed: int = 0) -> tuple[float, float]:
        """(objective of x, permutation p-value of the combined statistic against the target)."""
        if self.noise is None:
            self.calibrate(x, permutations, seed)
        parts, total, n = self._pooled(x)
        observed = self(x)
        p = permutation_p(lambda i, j: self._combine(*parts(i, j)), total, n, observed, permutations=permutations,
                          seed=seed + 1)
        return observed, p


def at_teacher(p: float) -> bool:
    """The early exit of a distribution fit: True when the base sampler's outputs cannot be told from the
    teacher's by the fit's own objective - its permutation p-value is at least ``AT_TEACHER_P`` (the base's
    distance to the teacher is smaller than in a quarter of random relabellings of the two sets). Nothing a fit
    finds can then be shown better beyond noise, so the fit is skipped and the base kept."""
    return p >= AT_TEACHER_P


def step_basis(nfe: int, size: int) -> Tensor:
    """(M, size) basis in the step index: columns 1, (k - c) / M, ... (Legendre-like polynomials on [-1, 1])."""
    if size < 1:
        raise ValueError(f"basis size must be >= 1, got {size}")
    u = torch.linspace(-1.0, 1.0, nfe, dtype=torch.float64) if nfe > 1 else torch.zeros(1, dtype=torch.float64)
    cols = [torch.ones_like(u)]
    for j in range(1, size):
        cols.append(u**j)
    return torch.stack(cols, 1)


@dataclass
class CMAResult:
    x: Tensor  # best parameter vector found
    value: float  # its objective
    start_value: float  # objective at the start point
    evaluations: int
    history: list[dict] = field(default_factory=list)  # per generation: best, mean, sigma


def minimise_cma(fn: Callable[[Tensor], float], x0: Tensor, sigma0: float, iterations: int, popsize: int | None,
                 seed: int, on_generation: Callable[[dict], None] | None = None) -> CMAResult:
    """Minimise fn over R^d from x0 with CMA-ES (``cma``), ``iterations`` generations; the start point counts as
    a candidate, so the result is never worse than x0 on fn. ``on_generation`` gets each generation's record
    (best, mean, sigma, best_so_far)."""
    import cma

    x0 = x0.to(torch.float64)
    start = fn(x0)
    best_x, best = x0.clone(), start
    opts = {"seed": int(seed) % (2**31 - 1) + 1, "verbose": -9, "maxiter": iterations}
    if popsize is not None:
        opts["popsize"] = popsize
    if x0.numel() == 1:  # cma needs d >= 2: optimise a dummy second coordinate
        wrap = lambda v: fn(torch.as_tensor(v[:1], dtype=torch.float64))  # noqa: E731
        es = cma.CMAEvolutionStrategy([float(x0[0]), 0.0], sigma0, opts)
    else:
        wrap = lambda v: fn(torch.as_tensor(v, dtype=torch.float64))  # noqa: E731
        es = cma.CMAEvolutionStrategy(x0.tolist(), sigma0, opts)
    history, n_eval = [], 1
    while not es.stop():
        cands = es.ask()
        vals = [wrap(c) for c in cands]
        n_eval += len(cands)
        es.tell(cands, vals)
        i = min(range(len(vals)), key=vals.__getitem__)
        if vals[i] < best:
            best, best_x = vals[i], torch.as_tensor(cands[i][: x0.numel()], dtype=torch.float64)
        history.append({"best": min(vals), "mean": sum(vals) / len(vals), "sigma": float(es.sigma)})
        if on_generation is not None:
            on_generation({**history[-1], "best_so_far": best})
    if not math.isfinite(best):
        raise ValueError("the distribution objective was never finite")
    return CMAResult(best_x, best, start, n_eval, history)


__all__ = ["OBJECTIVES", "DEFAULT_OUTPUT_OBJECTIVE", "resolve_objective", "pooled_ngrams", "ngram_hellinger",
           "distance", "unigram_entropy", "energy_distance", "FeatureObjective", "NgramObjective",
           "CombinedObjective", "at_teacher", "AT_TEACHER_P", "PERMUTATIONS", "step_basis", "CMAResult",
           "minimise_cma"]
