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
- ``network``: the energy distance between the frozen network's own hidden states, pooled per sample
  (``NetworkObjective``): a FID in the model's feature space, with no evaluator.
- ``nll@entropy``: the model's NLL bound moved along the base's temperature frontier to the teacher's entropy
  (``MatchedNLLObjective``): quality at matched diversity, what the bench reads.
- names joined by "+" (``network+mmd``, ``nll@entropy+mmd``, ``features+network+mmd``): ``CombinedObjective``,
  each term in units of its noise.
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
from typing import Callable, Sequence

import torch
from torch import Tensor

from .statistics import (energy_distance, mmd2, ngram_hellinger, permutation_p, pooled_ngrams,  # noqa: F401
                         random_splits, unigram_entropy)
from .validate import ENTROPY_TOL, SLOPE_TEMPERATURES, frontier_slope

OBJECTIVES = ("trajectory", "hellinger", "mmd", "features", "features+mmd", "network", "network+mmd",
              "features+network+mmd", "nll@entropy", "nll@entropy+mmd", "nll@entropy+mmd-guard")
FEATURE_TIMES = 2  # noise levels of the NLL feature
NETWORK_T = 0.05  # the time whose noise level the network objective conditions on (its input stays clean)
DEFAULT_OUTPUT_OBJECTIVE = "features+mmd"  # what "auto" means for lsd-c on graphs other than the absorbing one
MASKED_OUTPUT_OBJECTIVE = "nll@entropy+mmd-guard"  # what "auto" means for lsd-c on masked (absorbing-graph) models
PERMUTATIONS = 200  # random relabellings of the early exit's permutation test
AT_TEACHER_P = 0.25  # the early exit's p-value threshold (``at_teacher``)


def resolve_objective(method: str, objective: str, absorbing: bool | None = None) -> str:
    """``objective`` with "auto" decided for ``method`` (the one place that decides it, for the CLI, the bench and
    the engine): "trajectory" for lsd / lsd+; for lsd-c it depends on the graph - ``MASKED_OUTPUT_OBJECTIVE`` on
    a masked model (``absorbing``), ``DEFAULT_OUTPUT_OBJECTIVE`` otherwise -, so with ``absorbing`` None (the
    model not known yet) lsd-c's "auto" stays "auto" (``DistillConfig.resolve`` decides it)."""
    if objective != "auto":
        return objective
    if method != "lsd-c":
        return "trajectory"
    if absorbing is None:
        return "auto"
    return MASKED_OUTPUT_OBJECTIVE if absorbing else DEFAULT_OUTPUT_OBJECTIVE


def distance(name: str, a: Tensor, b: Tensor, num_states: int, free_a: Tensor | None = None,
             free_b: Tensor | None = None) -> float:
    """The distribution distance ``name`` between sample sets a (n, L) and b (m, L), of their generated tokens
    ``free_a``, ``free_b`` ((n, L), (m, L) bool) when given (conditional samples)."""
    if name == "hellinger":
        return ngram_hellinger(a, b, num_states, free_a, free_b)
    if name == "mmd":
        return mmd2(a, b, num_states, free_a, free_b)
    raise ValueError(f"unknown distribution objective {name!r}; expected hellinger or mmd")


class _PermutationTested:
    """An objective with ``pooled_stat(x) -> (stat(idx_a, idx_b), total, n)`` (x's rows first, then the target's)
    gets the early exit's test from it."""

    def test(self, x: Tensor, permutations: int = PERMUTATIONS, seed: int = 0) -> tuple[float, float]:
        """(objective of x, permutation p-value of x against the target; see ``at_teacher``)."""
        stat, total, n = self.pooled_stat(x)
        observed = stat(torch.arange(n), torch.arange(n, total))
        return observed, permutation_p(stat, total, n, observed, permutations=permutations, seed=seed)


class EnergyObjective(_PermutationTested):
    """x (n, L) -> the energy distance between per-sample feature vectors of x and of the target (m, L), each
    feature divided by its spread over the target. Subclasses say what the features are (``features``). The
    target's features and their spread are computed once. Conditional samples: ``target_free`` (m, L) bool the
    target's generated positions, ``free`` (n, L) those of the candidates' samples (the features then read the
    generation only)."""

    label = "energy"

    def __init__(self, target: Tensor, *, target_free: Tensor | None = None, free: Tensor | None = None):
        self.free = free
        feats = self.features(target, target_free)
        spread = feats.std(0)
        # a feature constant over the target must not blow up: floor the spread at 1e-3 of the median one
        self.scale = spread.clamp_min(max(1e-8, 1e-3 * float(spread.median())))
        self.target = feats / self.scale

    def features(self, x: Tensor, free: Tensor | None = None) -> Tensor:  # (n, L) -> (n, d)
        raise NotImplementedError

    def pooled_stat(self, x: Tensor):
        """(stat(idx_a, idx_b) -> float, total, n): the distance between any two parts of x pooled with the
        target (rows 0..n-1 are x's)."""
        f = self.features(x, self.free) / self.scale
        pooled = torch.cat([f, self.target.to(f.dtype)])
        return (lambda i, j: energy_distance(pooled[i], pooled[j])), pooled.shape[0], f.shape[0]

    def __call__(self, x: Tensor) -> float:
        return energy_distance(self.features(x, self.free) / self.scale, self.target)


class FeatureObjective(EnergyObjective):
    """``features``: per-sample (frozen model's NLL bound per token, unigram entropy) (see the module doc)."""

    label = "features"

    def __init__(self, score_fn, graph, noise, target: Tensor, *, seed: int, batch_size: int, device="cpu",
                 target_free: Tensor | None = None, free: Tensor | None = None):
        self.score_fn, self.graph, self.noise = score_fn, graph, noise
        self.seed, self.batch_size, self.device = seed, batch_size, device
        super().__init__(target, target_free=target_free, free=free)

    def features(self, x: Tensor, free: Tensor | None = None) -> Tensor:
        from .statistics import model_nll

        nll = model_nll(self.score_fn, self.graph, self.noise, x, num_times=FEATURE_TIMES, seed=self.seed,
                        batch_size=self.batch_size, device=self.device, free=free)
        return torch.stack([nll, unigram_entropy(x.to(self.device), self.graph.num_states, free)], 1)


class NetworkObjective(EnergyObjective):
    """``network``: the frozen network's hidden states feeding its output layer (``lsdd.models.features``), read
    on the clean sample at the noise level of time ``NETWORK_T``, pooled per sample (mean and standard deviation
    over the generated positions): (n, 2D). A distance in the model's own feature space, like FID in an evaluator's,
    with no evaluator: it sees what the per-sample NLL bound averages away (on digits, 8-step Euler against the
    teacher: permutation p 0.01, where ``features`` gives 0.448)."""

    label = "network"

    def __init__(self, hidden_fn, noise, target: Tensor, *, batch_size: int, device="cpu",
                 target_free: Tensor | None = None, free: Tensor | None = None):
        self.hidden_fn, self.noise, self.batch_size, self.device = hidden_fn, noise, batch_size, device
        super().__init__(target, target_free=target_free, free=free)

    def features(self, x: Tensor, free: Tensor | None = None) -> Tensor:
        from ..models.features import pooled

        out = []
        for b in range(0, x.shape[0], self.batch_size):
            xb = x[b : b + self.batch_size].to(self.device)
            sigma = self.noise.total(torch.full((xb.shape[0],), NETWORK_T, dtype=torch.float64))
            h = self.hidden_fn(xb, sigma.to(device=self.device, dtype=torch.float32))
            out.append(pooled(h, None if free is None else free[b : b + self.batch_size]).cpu())
        return torch.cat(out)


class MatchedNLLObjective(_PermutationTested):
    """``nll@entropy``: the frozen model's NLL bound of the samples *at the teacher's entropy*, against the
    teacher's. Quality is a frontier (a colder sampler has a lower NLL and a lower entropy), so the NLL alone rewards
    sharpening, and the gains that matter are moves of the whole frontier. For sets a, b with mean per-sample NLL
    bound N and unigram entropy H (``FeatureObjective``'s features, unscaled), dN = N_a - N_b, dH = H_a - H_b:

        J(a, b) = dN - s dH + s dH^2 / tol

    - ``s``: the slope dN/dH of the base sampler's temperature frontier (``calibrate_slope``: the base's outputs at
      temperatures ``SLOPE_TEMPERATURES``, common random numbers: the chord from T = 1 to validation's colder probe,
      the side of the curved frontier that validation reads; stops 30-32 used T = 0.97 and 1.03, whose secant
      averages in the steep warm side). ``dN - s dH`` is a's NLL moved along that frontier to b's entropy (first
      order);
    - ``s dH^2 / tol`` (tol = ``ENTROPY_TOL`` of the teacher's entropy, what validation allows) keeps the fit where the
      first order holds: along the frontier J grows like s dH^2 / tol, so the fit is pulled to the teacher's entropy.

    On text-absorb at 4 NFE it ranks fitted samplers as gen PPL at matched entropy does (benchmarks/issue24_bench.md).
    Conditional samples: the features read the generation only (``free``, ``target_free``)."""

    label = "nll@entropy"

    def __init__(self, features: FeatureObjective):
        self.feat = features
        self.target = features.target * features.scale  # (m, 2): NLL bound, entropy
        self.entropy_teacher = float(self.target[:, 1].mean())
        self.tol = ENTROPY_TOL * self.entropy_teacher
        self.slope: float | None = None

    def calibrate_slope(self, cold: Tensor, warm: Tensor) -> float:
        """Set (and return) ``slope`` from the base's outputs at the colder and the warmer of
        ``SLOPE_TEMPERATURES`` (same random streams); 0 when the warmer set is not more diverse (nothing to trade)."""
        fc, fw = self.feat.features(cold, self.feat.free), self.feat.features(warm, self.feat.free)
        self.slope = frontier_slope(float(fw[:, 0].mean() - fc[:, 0].mean()), float(fw[:, 1].mean() - fc[:, 1].mean()))
        return self.slope

    def _stat(self, fa: Tensor, fb: Tensor) -> float:
        if self.slope is None:
            raise RuntimeError("calibrate the nll@entropy objective's slope first")
        dn = float(fa[:, 0].mean() - fb[:, 0].mean())
        dh = float(fa[:, 1].mean() - fb[:, 1].mean())
        return dn - self.slope * dh + self.slope * dh * dh / self.tol

    def pooled_stat(self, x: Tensor):
        """(stat(idx_a, idx_b) -> J, total, n) over x pooled with the target (rows 0..n-1 are x's)."""
        f = self.feat.features(x, self.feat.free)
        pooled = torch.cat([f, self.target.to(f.dtype)])
        return (lambda i, j: self._stat(pooled[i], pooled[j])), pooled.shape[0], f.shape[0]

    def __call__(self, x: Tensor) -> float:
        stat, total, n = self.pooled_stat(x)
        return stat(torch.arange(n), torch.arange(n, total))


class NgramObjective(_PermutationTested):
    """``hellinger`` / ``mmd``: x (n, L) -> the pooled n-gram distance ``name`` to the target (m, L), of the
    generated positions ``free`` / ``target_free`` when given."""

    def __init__(self, name: str, num_states: int, target: Tensor, *, target_free: Tensor | None = None,
                 free: Tensor | None = None):
        if name not in ("hellinger", "mmd"):
            raise ValueError(f"unknown distribution objective {name!r}; expected hellinger or mmd")
        self.name, self.num_states, self.target, self.target_free, self.free = name, num_states, target, target_free, free
        self.label = name

    def __call__(self, x: Tensor) -> float:
        return distance(self.name, x, self.target, self.num_states, self.free, self.target_free)

    def pooled_free(self, x: Tensor) -> Tensor | None:
        """(n + m, L) bool: the generated positions of x's rows then the target's (None when both are whole)."""
        if self.free is None and self.target_free is None:
            return None
        return torch.cat([(torch.ones_like(x, dtype=torch.bool) if self.free is None else self.free).cpu(),
                          (torch.ones_like(self.target, dtype=torch.bool) if self.target_free is None
                           else self.target_free).cpu()])

    def pooled_stat(self, x: Tensor):
        """(stat(idx_a, idx_b) -> float, total, n): the distance between any two parts of x pooled with the
        target."""
        pooled, n = torch.cat([x.cpu(), self.target.cpu()]), x.shape[0]
        fr = self.pooled_free(x)

        def stat(i: Tensor, j: Tensor) -> float:
            return distance(self.name, pooled[i], pooled[j], self.num_states, None if fr is None else fr[i],
                            None if fr is None else fr[j])

        return stat, pooled.shape[0], n


class CombinedObjective:
    """A sum of terms (``features``, ``network``, the n-gram ``mmd``: objective names joined by "+"), each divided by
    its own noise: the standard deviation of that term over random relabellings of a reference sample set pooled
    with the target (``calibrate``; the start's outputs, at the candidates' sample size). Each term so counts in
    units of its sampling noise, and the fit cannot buy one (say the NLL) with another (n-gram drift, which
    validation's guard rejects). A ``Guard`` term counts only where it is worse than at the calibration set (the
    start's outputs): max(0, v - v_start) / noise."""

    def __init__(self, *terms):
        if len(terms) < 2:
            raise ValueError("a combined objective needs at least two terms")
        if all(isinstance(t, Guard) for t in terms):
            raise ValueError("a combined objective needs a term that is not a guard")
        self.terms = terms
        self.noise: tuple[float, ...] | None = None
        self.baseline: tuple[float, ...] | None = None  # each term's value at the calibration set (the start's)
        self._last: tuple[Tensor, tuple] | None = None  # the last set pooled (its features cost network calls)

    @property
    def labels(self) -> list[str]:
        return [t.label for t in self.terms]

    def _pooled(self, x: Tensor):
        """(parts(idx_a, idx_b) -> (term values), total, n) for x pooled with the target; the last set's pooling
        is kept, so calibrating on x and then testing x computes its features once."""
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        stats = [t.pooled_stat(x) for t in self.terms]
        total, n = stats[0][1], stats[0][2]

        def parts(i: Tensor, j: Tensor) -> tuple[float, ...]:
            return tuple(s[0](i, j) for s in stats)

        self._last = (x, (parts, total, n))
        return self._last[1]

    def calibrate(self, x: Tensor, permutations: int = PERMUTATIONS, seed: int = 0) -> tuple[float, ...]:
        """Set (and return) the terms' noise from ``permutations`` relabellings of x pooled with the target."""
        parts, total, n = self._pooled(x)
        draws = [parts(i, j) for i, j in random_splits(total, n, permutations, seed)]
        sd = torch.tensor(draws, dtype=torch.float64).std(0).clamp_min(1e-12)
        self.noise = tuple(float(v) for v in sd)
        self.baseline = parts(torch.arange(n), torch.arange(n, total))
        return self.noise

    def _combine(self, *values: float) -> float:
        if self.noise is None:
            raise RuntimeError("calibrate the combined objective first")
        return sum((max(v - b, 0.0) if isinstance(t, Guard) else v) / s
                   for t, v, b, s in zip(self.terms, values, self.baseline, self.noise))

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


class Guard:
    """``<term>-guard``: a term that a ``CombinedObjective`` counts only where it is worse than at the start - the
    hinge max(0, v - v_start) in units of its noise -, as validation reads its guards (the MMD^2 must not be worse;
    the primary figure decides). A plain sum lets a term far above its noise at the start dominate the fit: at 2
    NFE on text the n-gram term (40 times its noise) did, and the fit traded the model's NLL for n-grams (rejected).
    Delegates its statistic to the wrapped term."""

    def __init__(self, term):
        self.term = term
        self.label = f"{term.label}-guard"

    def pooled_stat(self, x: Tensor):
        return self.term.pooled_stat(x)


def default_sigma(name: str) -> float:
    """CMA-ES's first step for the objective ``name`` when none is given: 0.5, or 0.2 when ``nll@entropy`` is among
    its terms - its quadratic entropy term makes a step of 0.5 in log beta cost more than any gain, so at 0.5 no
    candidate of the first five generations beat the start on text at 4 NFE (benchmarks/issue24_bench.md)."""
    return 0.2 if "nll@entropy" in name.split("+") else 0.5


def slope_terms(objective) -> list:
    """The ``MatchedNLLObjective`` terms of an objective (itself, or among a combination's terms)."""
    terms = objective.terms if isinstance(objective, CombinedObjective) else (objective,)
    return [t for t in terms if isinstance(t, MatchedNLLObjective)]


def needs_network(name: str) -> bool:
    """True when the objective ``name`` reads the network's hidden states (``network`` among its terms)."""
    return "network" in name.split("+")


def make_objective(name: str, *, score_fn, graph, noise, target: Tensor, seed: int, batch_size: int,
                   device="cpu", target_free: Tensor | None = None, free: Tensor | None = None, hidden_fn=None):
    """The distribution objective ``name`` (one of ``OBJECTIVES`` but "trajectory") against the target outputs
    (m, L); a name with "+" is a ``CombinedObjective`` (calibrate it before use). ``hidden_fn``: the network's
    hidden states (``lsdd.models.features.hidden_states``), needed by ``network``."""
    if name not in OBJECTIVES or name == "trajectory":
        raise ValueError(f"unknown distribution objective {name!r}; expected one of "
                         f"{[o for o in OBJECTIVES if o != 'trajectory']}")
    terms = []
    for term in name.split("+"):
        if term == "nll@entropy":
            terms.append(MatchedNLLObjective(FeatureObjective(score_fn, graph, noise, target, seed=seed,
                                                              batch_size=batch_size, device=device,
                                                              target_free=target_free, free=free)))
        elif term == "features":
            terms.append(FeatureObjective(score_fn, graph, noise, target, seed=seed, batch_size=batch_size,
                                          device=device, target_free=target_free, free=free))
        elif term == "network":
            if hidden_fn is None:
                raise ValueError("the network objective reads the network's hidden states, and this model is a "
                                 "bare score function; use --objective features+mmd")
            terms.append(NetworkObjective(hidden_fn, noise, target, batch_size=batch_size, device=device,
                                          target_free=target_free, free=free))
        elif term == "mmd-guard":
            terms.append(Guard(NgramObjective("mmd", graph.num_states, target, target_free=target_free, free=free)))
        else:
            terms.append(NgramObjective(term, graph.num_states, target, target_free=target_free, free=free))
    return terms[0] if len(terms) == 1 else CombinedObjective(*terms)


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
    stds: list[float] | None = None  # the probe's step multipliers of sigma0 along ``axes`` (None: no probe)
    probe_best: float | None = None  # the best of the probe's points (None: no probe)
    axes: Tensor | None = None  # (d, d) the probe's directions, one per column (eigenvectors of its Hessian)


PROBE_FLOOR = 1 / 32  # the probe never shrinks a direction's step below this share of sigma0


def finite_hessian(fn: Callable[[Tensor], float], x0: Tensor, f0: float,
                   step: float) -> tuple[Tensor, list[tuple[Tensor, float]]]:
    """(d, d) Hessian of fn at x0 (f0 = fn(x0)) by finite differences: fn at x0 +- step e_i, then at
    x0 + step (e_i + e_j) for i < j, in that order (2d + d(d-1)/2 calls); returns it and the (x, value) pairs."""
    d = x0.numel()
    eye = torch.eye(d, dtype=torch.float64) * step
    probes: list[tuple[Tensor, float]] = []

    def at(x: Tensor) -> float:
        v = fn(x)
        probes.append((x, v))
        return v

    plus = [at(x0 + eye[i]) for i in range(d)]
    minus = [at(x0 - eye[i]) for i in range(d)]
    hess = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d):
        hess[i, i] = (plus[i] + minus[i] - 2.0 * f0) / step**2
        for j in range(i + 1, d):
            hess[i, j] = hess[j, i] = (at(x0 + eye[i] + eye[j]) - plus[i] - plus[j] + f0) / step**2
    return hess, probes


def probe_metric(fn: Callable[[Tensor], float], x0: Tensor, f0: float, sigma0: float,
                 floor: float = PROBE_FLOOR) -> tuple[Tensor, list[float], Tensor, list[tuple[Tensor, float]]]:
    """CMA-ES's first search metric from the objective's Hessian at the start, by finite differences at step
    sigma0: fn at x0 +- sigma0 e_i and at x0 + sigma0 (e_i + e_j), i < j (2d + d(d-1)/2 calls),

        H_ii = (f(x0 + s e_i) + f(x0 - s e_i) - 2 f0) / s^2,
        H_ij = (f(x0 + s e_i + s e_j) - f(x0 + s e_i) - f(x0 + s e_j) + f0) / s^2,

    H = Q diag(lambda) Q^T, and along each eigenvector q_k the step s_k = sqrt(2 D / lambda_k) at which that
    quadratic rises by D = |f0| / d (the whole first cloud then worsens the start by about |f0| on average, not by
    orders of magnitude), as a multiple of sigma0 clipped to [floor, 1]: a flat or falling direction
    (lambda_k <= 0) keeps sigma0, a steep one gets less. CMA-ES then searches z with x = x0 + Q diag(s) z
    (``minimise_cma``), so its first cloud has covariance sigma0^2 Q diag(s)^2 Q^T, and adapts from there.

    Why a rotated metric, not a step per coordinate: on text at 2 NFE the objective's steep direction is the first
    step's value temperature, the one that sets the samples' entropy (``nll@entropy`` penalises a miss
    quadratically with a tolerance of 1% of the teacher's entropy), and in the fit's coordinates (the level and
    tilt of log beta over the steps) that is a diagonal: the Hessian at the start of the seed-1 fit has
    level-level 10775, tilt-tilt 4071 and level-tilt -7549, eigenvalues 15761, 1366 and -1756
    (benchmarks/issue24/s35/landscape.py; benchmarks/issue24_bench.md, stop 35). A step per coordinate shrinks
    level and tilt alike, and with them the direction the fit must travel (the second step's temperature).

    Returns (Q diag(s) (d, d), the multipliers s, Q (d, d), the probed (x, value) pairs)."""
    d = x0.numel()
    scale = abs(f0) / d if math.isfinite(f0) and f0 != 0 else 1.0
    hess, probes = finite_hessian(fn, x0, f0, sigma0)
    if not bool(torch.isfinite(hess).all()):  # a probe left the region where the objective is finite
        q = torch.eye(d, dtype=torch.float64)
        stds = [floor if not math.isfinite(float(hess[i, i])) else 1.0 for i in range(d)]
    else:
        lam, q = torch.linalg.eigh(hess)
        stds = [min(1.0, max(floor, math.sqrt(2.0 * scale / float(c)) / sigma0)) if c > 0 else 1.0 for c in lam]
    return q * torch.tensor(stds, dtype=torch.float64), stds, q, probes


def minimise_cma(fn: Callable[[Tensor], float], x0: Tensor, sigma0: float, iterations: int, popsize: int | None,
                 seed: int, on_generation: Callable[[dict], None] | None = None,
                 replay: Sequence[dict] | None = None, probe: bool = False) -> CMAResult:
    """Minimise fn over R^d from x0 with CMA-ES (``cma``), ``iterations`` generations; the start point counts as
    a candidate, so the result is never worse than x0 on fn. ``on_generation`` gets each generation's record
    (best, mean, sigma, best_so_far, and its ``candidates`` (points x) and their ``values``, which is what a
    checkpoint keeps).

    ``replay``: such records of the first generations of an interrupted run with the same arguments. The strategy
    asks for the same candidates again (it is seeded) and is told the recorded values without evaluating fn, so
    the run continues exactly as if never stopped; ValueError when a replayed generation asks for other
    candidates than those recorded (another start, step, seed or population).

    ``probe``: first shape the search by the objective's Hessian at the start (``probe_metric``: 2d + d(d-1)/2 more
    calls, made again on a resume: they are deterministic under common random numbers); CMA-ES then searches z with
    x = x0 + T z; the probe's points are candidates too."""
    import cma

    x0 = x0.to(torch.float64)
    d = x0.numel()
    start = fn(x0)
    best_x, best = x0.clone(), start
    opts = {"seed": int(seed) % (2**31 - 1) + 1, "verbose": -9, "maxiter": iterations}
    if popsize is not None:
        opts["popsize"] = popsize
    stds, axes, n_eval, probe_best = None, None, 1, None
    if probe:
        metric, stds, axes, probes = probe_metric(fn, x0, start, sigma0)
        n_eval += len(probes)
        probe_best = min(v for _, v in probes)
        for x, v in probes:
            if v < best:
                best, best_x = v, x.clone()
        to_x = lambda z: x0 + metric @ torch.as_tensor(z[:d], dtype=torch.float64)  # noqa: E731
        mean0 = [0.0] * max(d, 2)  # cma needs d >= 2: a dummy second coordinate when d = 1
    else:
        to_x = lambda z: torch.as_tensor(z[:d], dtype=torch.float64)  # noqa: E731
        mean0 = x0.tolist() + [0.0] * (2 - d if d < 2 else 0)
    es = cma.CMAEvolutionStrategy(mean0, sigma0, opts)
    history, replay = [], list(replay or [])
    if len(replay) > iterations:
        raise ValueError(f"the checkpoint holds {len(replay)} CMA-ES generations; this run has {iterations}")
    while not es.stop():
        cands = es.ask()
        points = [to_x(c) for c in cands]
        g = len(history)
        if g < len(replay):  # a generation of the interrupted run: its recorded values, fn not called
            kept = [list(map(float, c)) for c in replay[g]["candidates"]]
            if len(kept) != len(points) or any(len(k) != d or not all(
                    math.isclose(a, float(b), rel_tol=1e-12, abs_tol=1e-12) for a, b in zip(k, x))
                    for k, x in zip(kept, points)):
                raise ValueError(f"CMA-ES generation {g + 1} asks for other candidates than the checkpoint "
                                 "recorded: it was written by a run with other settings")
            vals = [float(v) for v in replay[g]["values"]]
        else:
            vals = [fn(x) for x in points]
        n_eval += len(cands)  # the run's candidates, replayed or not
        es.tell(cands, vals)
        i = min(range(len(vals)), key=vals.__getitem__)
        if vals[i] < best:
            best, best_x = vals[i], points[i].clone()
        history.append({"best": min(vals), "mean": sum(vals) / len(vals), "sigma": float(es.sigma)})
        if on_generation is not None:
            on_generation({**history[-1], "best_so_far": best, "candidates": [x.tolist() for x in points],
                           "values": vals, "replayed": g < len(replay)})
    if not math.isfinite(best):
        raise ValueError("the distribution objective was never finite")
    return CMAResult(best_x, best, start, n_eval, history, stds, probe_best, axes)


__all__ = ["OBJECTIVES", "DEFAULT_OUTPUT_OBJECTIVE", "MASKED_OUTPUT_OBJECTIVE", "resolve_objective", "pooled_ngrams", "ngram_hellinger",
           "distance", "unigram_entropy", "energy_distance", "FeatureObjective", "NgramObjective",
           "CombinedObjective", "Guard", "EnergyObjective", "NetworkObjective", "make_objective", "needs_network", "NETWORK_T",
           "MatchedNLLObjective", "SLOPE_TEMPERATURES", "slope_terms", "default_sigma",
           "at_teacher", "AT_TEACHER_P", "PERMUTATIONS", "step_basis", "CMAResult",
           "minimise_cma", "probe_metric", "finite_hessian", "PROBE_FLOOR"]
