"""LSD and LSD+ (method.md §3-5): learn one coefficient per step (and, for LSD+, the time grid) of an
M-step student sampler by matching the score trajectory of an N-step teacher. The network stays frozen.

The student runs the one reverse loop (``lsdd.sampling.loop``) from perturbed teacher starts; at every step a hook
compares its score with the teacher's cached score (``lsdd.distillation.losses``) and backpropagates into Phi (and, for
LSD+, the grid logits theta), or refits Phi in closed form (linear + l2). States depend on earlier steps only
through discrete draws, so nothing is backpropagated through the network. One optimiser step per batch of
trajectories; each batch is cut into chunks with their own random streams, spread over torchrun processes,
so the learned sampler does not depend on the number of processes.

Conditional distillation (a teacher cache with ``given`` tokens: prompts): every student rollout holds its
trajectory's given tokens (the start is perturbed at free positions only), the losses never compare a held
position (the cache stores none), and validation and the distribution objectives draw continuations of the
prompts of the trajectories they compare with - held-out ones for validation - and measure the continuations
only (``lsdd.distillation.statistics``, ``free=``)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import dist
from ..sampling.sampler import Sampler
from ..sampling.draws import RowStreams, derive_seed, make_generator
from ..graphs import Graph
from ..sampling.loop import CountedScore, ScoreFn, StepInfo, reverse_loop
from ..noise import Noise
from .losses import N_STATS, LossSpec, step_losses, step_stats
from .objective import (AT_TEACHER_P, OBJECTIVES, PERMUTATIONS, SLOPE_TEMPERATURES, CombinedObjective, make_objective,
                        default_sigma, slope_terms,
                        at_teacher, distance, minimise_cma, resolve_objective, step_basis)
from ..sampling.samplers import PHI_MODES, sample_batched, tempered_score
from ..sampling.schedules import check_times, uniform_times
from ..sampling.steps import ONE_CALL
from .teacher import STORES, TEACHER_KINDS, TeacherCache, choose_store, run_exact_teacher, run_teacher
from .validate import PROBE_TEMPERATURE, Validation, compare, match_temperature, model_nll, per_sample_entropy

METHODS = ("lsd", "lsd+", "lsd-c")  # lsd-c: state-conditioned steps (lsdd.sampling.conditioned)
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
    validation: bool = True  # compare the learned sampler with its base on held-out teacher outputs
    val_frac: float = 0.25  # share of teacher trajectories held out of training for that
    # held-out trajectories (the cache's last ones), when set; None: round(num_traj * val_frac). Conditional
    # distillation sets it to the trajectories continuing the held-out prompts (lsdd.distillation.pipeline)
    val_traj: int | None = None
    val_samples: int = 512  # samples drawn from each of base and learned sampler for that
    val_level: float = 0.95  # level of the paired bootstrap intervals the verdict reads (lsdd.distillation.validate)
    init_times: tuple[float, ...] | None = None  # starting grid (e.g. JYS's), M + 1 times from 1 to eps; None: uniform
    # teacher cache: "scores" keeps the score rows, "states" only the states and recomputes the scores (one
    # extra network call per student call; lsdd.distillation.teacher); "auto": scores while they fit in 2 GiB
    teacher_store: str = "auto"
    # "steps": teacher_nfe steps of the base rule; "exact": first hitting (absorbing graph: the model's reverse
    # process exactly, one network call per token; lsdd.sampling.first_hitting), teacher_nfe then unused
    teacher_kind: str = "steps"
    # distribution-level objective (lsdd.distillation.objective): auto = trajectory for lsd/lsd+; for lsd-c
    # nll@entropy+mmd-guard on masked models, features+mmd otherwise (decided by resolve(graph))
    objective: str = "auto"  # auto | trajectory | one of objective.OBJECTIVES (hellinger, mmd, features, network, ...)
    basis: int = 2  # per-step parameters as a polynomial of this many terms in the step index
    obj_samples: int = 256  # samples per candidate (common random numbers)
    cma_iters: int = 12  # CMA-ES generations
    cma_popsize: int = 8
    cma_sigma: float | None = None  # CMA-ES first step; None: objective.default_sigma (0.5; 0.2 for nll@entropy)
    # CMA-ES: first shape its search by the objective's Hessian at the start (objective.probe_metric; 2d + d(d-1)/2
    # calls). Off by default: on text at 2 NFE every fit with it ended at a lower objective (three seeds: 4.26, 3.77,
    # 3.76 against 5.14 and 6.12 without) and closed 63%, 54% and 66% of spread's gap (without: 54%, 19%), but on
    # the second tasks it found what the objective cannot see: countdown 4 NFE less diverse starts (start TV 0.130
    # against 0.058), text-uniform 8 (nll@entropy+mmd-guard) a fit validation rejects (without: accepted, 44%)
    # (benchmarks/issue24_bench.md, stop 35)
    cma_probe: bool = False
    early_exit: bool = True  # skip CMA-ES when the base is already at the teacher's level (objective.at_teacher)
    coupled: bool = False  # teacher and student share per-position clocks and value uniforms (lsdd.sampling.coupling)
    match_times: bool = False  # LSD+ (absorbing): move the teacher's score to the student's time before comparing
    init_lsd: bool = False  # LSD+: first fit LSD (Phi on the fixed grid), start LSD+ from its Phi
    select: bool = False  # LSD+: keep LSD instead when its held-out n-gram distance to the teacher is lower
    counted: bool = False  # lsd-c: each sequence moves a rounded number of tokens, chosen by weight (draws.CountedLaw)
    # lsd-c: also choose the discrete parts of the sampler by the objective at the base parameters - the movers
    # among spread / Halton / DUS orders (masked models with spread movers); on the other graphs independent or
    # spread movers and the last step's rule (Euler or Tweedie: the posterior p(x0 | x_t)) - before fitting
    # (discrete_options)
    choose: bool = False
    slope: bool = False  # lsd-c: also fit the confidence slope (absorbing graph); off: Phi and beta per step
    # counted movers chosen spread along the sequence (systematic; any graph): lsd/lsd+ roll the student out
    # with them and write them into the artifact; for lsd-c it implies --counted. Validation's base has them too.
    # None (auto): on for absorbing-graph models with linear Phi, independent paths and no --counted
    # (benchmarks/defaults_sweep.md: countdown, markov; benchmarks/bench_spread_text_absorb.md: text).
    spread: bool | None = None

    def count(self) -> str:
        """lsd-c's movers as the draws name them (conditioned.ConditionedParams.from_count)."""
        return "spread" if self.spread else "rounded" if self.counted else "independent"

    def resolve(self, graph: Graph) -> "DistillConfig":
        """This config with ``spread`` decided (None -> on for the absorbing graph when nothing rules it out) and
        the objective ("auto" -> ``objective.resolve_objective`` for this graph)."""
        cfg = self
        if self.objective == "auto":
            cfg = replace(cfg, objective=resolve_objective(self.method, "auto", graph.absorbing))
        if cfg.spread is not None:
            return cfg
        auto = graph.absorbing and cfg.phi_mode == "linear" and not cfg.coupled and not cfg.counted
        return replace(cfg, spread=auto)

    def coupling_seed(self) -> int | None:
        return derive_seed(self.seed, 12) if self.coupled else None

    def resolved_objective(self) -> str:
        return resolve_objective(self.method, self.objective)

    def num_val(self) -> int:
        """Teacher trajectories held out for validation (0 without validation)."""
        if not self.validation:
            return 0
        return int(round(self.num_traj * self.val_frac)) if self.val_traj is None else int(self.val_traj)

    def _held_out(self) -> str:
        """How the held-out trajectories were counted (for messages)."""
        if self.val_traj is None:
            return f"x val_frac {self.val_frac}"
        return "those continuing the held-out prompts"

    def validate(self) -> None:
        checks = [
            (self.base in ONE_CALL, f"base must be one of {list(ONE_CALL)}, got {self.base!r}"),
            (self.method in METHODS, f"method must be one of {list(METHODS)}, got {self.method!r}"),
            (self.phi_mode in PHI_MODES, f"phi mode must be one of {list(PHI_MODES)}, got {self.phi_mode!r}"),
            (self.loss in LOSSES, f"loss must be one of {list(LOSSES)}, got {self.loss!r}"),
            (self.nfe >= 1, f"nfe must be >= 1, got {self.nfe}"),
            (self.teacher_kind == "exact" or (self.teacher_nfe >= self.nfe and self.teacher_nfe % self.nfe == 0),
             f"teacher nfe must be a multiple of the student nfe {self.nfe}, got {self.teacher_nfe}"),
            (0.0 <= self.zeta <= 1.0, f"zeta must lie in [0, 1], got {self.zeta}"),
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.num_traj >= 1 and self.batch_size >= 1 and self.chunk >= 1,
             f"num_traj, batch_size and chunk must be >= 1, got {self.num_traj}, {self.batch_size}, {self.chunk}"),
            (0.0 < self.eps < 1.0, f"eps must lie in (0, 1), got {self.eps}"),
            (0.0 <= self.val_frac < 1.0, f"val_frac must lie in [0, 1), got {self.val_frac}"),
            (not self.validation or (self.num_val() >= 2 and self.num_traj - self.num_val() >= 1
                                   and self.val_samples >= 2),
             f"validation needs >= 2 held-out and >= 1 training trajectories and >= 2 samples: num_traj "
             f"{self.num_traj}, {self._held_out()} = {self.num_val()} held out, {self.val_samples} samples "
             "(raise --num-traj or --val-frac, or pass --no-validate)"),
            (isinstance(self.val_level, (int, float)) and 0.0 < self.val_level < 1.0,
             f"val_level must lie strictly between 0 and 1, got {self.val_level!r}"),
            (not self.closed_form or (self.phi_mode == "linear" and self.loss == "l2" and self.method == "lsd"),
             "the closed-form fast path needs --method lsd --phi-mode linear --loss l2"),
            (self.teacher_kind in TEACHER_KINDS,
             f"teacher kind must be one of {list(TEACHER_KINDS)}, got {self.teacher_kind!r}"),
            (self.teacher_store in ("auto", *STORES),
             f"teacher store must be auto or one of {list(STORES)}, got {self.teacher_store!r}"),
            (self.objective in ("auto", *OBJECTIVES), f"objective must be one of {['auto', *OBJECTIVES]}, got "
                                                       f"{self.objective!r}"),
            (self.method != "lsd-c" or self.resolved_objective() != "trajectory",
             "lsd-c is fitted on the output distribution: use --objective features, hellinger or mmd"),
            (self.method != "lsd-c" or self.phi_mode == "linear", "lsd-c uses linear Phi (--phi-mode linear)"),
            (self.resolved_objective() == "trajectory" or self.method != "lsd+",
             "a distribution objective fits lsd or lsd-c on a fixed grid, not lsd+"),
            (not (self.init_lsd or self.select) or self.method == "lsd+", "--init-lsd and --select apply to lsd+"),
            (not self.counted or self.method == "lsd-c", "--counted applies to --method lsd-c"),
            (not self.spread or (self.phi_mode == "linear" and not self.coupled),
             "--spread uses linear Phi and independent teacher/student paths (drop --phi-mode log / --coupled)"),
            (not self.select or self.validation, "--select compares on held-out teacher outputs: drop --no-validate"),
            (self.basis >= 1 and self.obj_samples >= 2 and self.cma_iters >= 1 and self.cma_popsize >= 2
             and (self.cma_sigma is None or self.cma_sigma > 0),
             f"need basis >= 1, obj_samples >= 2, cma_iters >= 1, cma_popsize >= 2, cma_sigma > 0; got "
             f"{self.basis}, {self.obj_samples}, {self.cma_iters}, {self.cma_popsize}, {self.cma_sigma}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        if self.init_times is not None:
            grid = torch.tensor(self.init_times, dtype=torch.float64)
            check_times(grid)
            if grid.numel() != self.nfe + 1 or abs(float(grid[-1]) - self.eps) > 1e-12:
                raise ValueError(f"the starting grid has {grid.numel() - 1} steps ending at {float(grid[-1])!r}; "
                                 f"the student has {self.nfe} steps ending at eps {self.eps!r}")

    def loss_spec(self) -> LossSpec:
        """What the step losses read of this config."""
        return LossSpec(self.base, self.method, self.loss, self.phi_mode, self.closed_form)

    def student_times(self) -> Tensor:
        """The grid the student starts from (and the teacher refines): ``init_times`` or uniform, (M + 1,)."""
        if self.init_times is not None:
            return torch.tensor(self.init_times, dtype=torch.float64)
        return uniform_times(self.nfe, self.eps)


class SamplerParams(nn.Module):
    """Learnable part of the student: Phi = exp(log_phi) (M,) and, for LSD+, grid logits theta (M,).

    Phi is kept positive through its logarithm: a clamp would leave a coefficient that Adam pushed below
    zero with no gradient, stuck for good (seen in practice); Adam's steps are then relative changes.

    kappa = (1 - eps) softmax(theta), tau_k = 1 - sum_{l <= k} kappa_l: positive steps, tau_M = eps exactly,
    uniform at theta = 0.
    """

    def __init__(self, nfe: int, eps: float, learn_times: bool, init_times: Tensor | None = None):
        super().__init__()
        self.eps = eps
        self.init_times = uniform_times(nfe, eps) if init_times is None else init_times.to(torch.float64)
        self.log_phi = nn.Parameter(torch.zeros(nfe, dtype=torch.float64))
        # theta = log of the starting grid's steps: softmax(theta) (1 - eps) reproduces it (0 for the uniform grid)
        steps = (self.init_times[:-1] - self.init_times[1:]) / (1.0 - eps)
        theta = torch.zeros(nfe, dtype=torch.float64) if init_times is None else torch.log(steps)
        self.theta = nn.Parameter(theta, requires_grad=learn_times)

    def coeffs(self) -> Tensor:
        return self.log_phi.exp()

    def times(self) -> Tensor:
        """(M + 1,) strictly decreasing from 1 to eps, differentiable in theta (exactly the starting grid
        while the grid is not learned)."""
        if not self.theta.requires_grad:
            return self.init_times
        kappa = (1.0 - self.eps) * torch.softmax(self.theta, 0)
        tau = 1.0 - torch.cumsum(kappa, 0)
        tau = torch.cat([tau.new_ones(1), tau[:-1], tau.new_full((1,), self.eps)])
        return tau


def perturb_start(x_T: Tensor, graph: Graph, zeta: float, generator: torch.Generator | None,
                  held: Tensor | None = None) -> Tensor:
    """Replace ceil(zeta L) random positions of each start by random real tokens (method.md §5);
    on the uniform graph a replaced token always changes. (b, L) -> (b, L); a fresh draw each call.
    ``held`` (b, L) bool: positions held fixed (a prompt), never perturbed; a row with F free positions then
    perturbs ceil(zeta F) of them (the same draws as without ``held`` when nothing is held)."""
    b, length = x_T.shape
    free = length if held is None else (~held).sum(-1)  # int, or (b,) per row
    # float32 (torch's default dtype), as before ``held`` existed: the same counts, the same draws
    want = torch.ceil(torch.as_tensor(zeta * free)).long() if zeta > 0 else torch.zeros((), dtype=torch.long)
    n = int(want.max()) if zeta > 0 else 0
    if n == 0:
        return x_T.clone()
    keys = torch.rand(b, length, generator=generator, dtype=torch.float64)
    if held is not None:
        keys = keys.masked_fill(held, 2.0)  # held positions sort after every free one
    pos = keys.argsort(-1)[:, :n]
    if graph.absorbing:
        new = torch.randint(0, graph.num_tokens, (b, n), generator=generator)
    else:
        shift = torch.randint(1, graph.num_tokens, (b, n), generator=generator)
        new = (x_T.gather(-1, pos) + shift) % graph.num_tokens
    if held is not None:  # a row perturbs its own ceil(zeta F) positions: the rest keep their token
        new = torch.where(torch.arange(n)[None, :] < want.reshape(-1, 1), new, x_T.gather(-1, pos))
    return x_T.scatter(-1, pos, new)


@dataclass
class DistillResult:
    times: Tensor  # (M + 1,) learned grid
    coeffs: Tensor  # (M,)
    history: list[dict] = field(default_factory=list)  # per epoch: loss_phi, loss_time, seconds
    teacher_seconds: float = 0.0
    student_seconds: float = 0.0
    teacher_calls: int = 0
    student_calls: int = 0
    validation: Validation | None = None  # learned vs base on held-out teacher outputs (cfg.validation)
    conditioning: dict | None = None  # lsd-c: {"feature", "slope" (M,), "beta" (M,)} (lsdd.sampling.sampler)
    selection: dict | None = None  # LSD+ --select: held-out distances of LSD and LSD+, and which was kept
    movers: str = "independent"  # independent | counted | spread | a peer order (Sampler.movers)
    final: str | None = None  # the last step's rule (Sampler.final), None: the base rule's
    choice: dict | None = None  # lsd-c: the objective of each discrete candidate at the base parameters
    # distribution fits: the early exit's test of the start {"objective", "p", "permutations", "threshold",
    # "skipped", "base" (the start is the base sampler)}
    early_exit: dict | None = None
    # distribution fits: how the objective was calibrated on the start's outputs {"noise": {term: sd},
    # "slope": dNLL/dH of the base's temperature frontier (nll@entropy), "cma_sigma": CMA-ES's first step}
    calibration: dict | None = None

    def sampler(self, cfg: DistillConfig) -> Sampler:
        """The learned sampler as a ``Sampler`` value (not yet bound to a model; no provenance)."""
        return Sampler(self.times.tolist(), cfg.base, self.coeffs.tolist(), movers=self.movers,
                       phi_mode=cfg.phi_mode, conditioning=self.conditioning,
                       provenance={"method": cfg.method}, final=self.final)


def discrete_options(cfg: DistillConfig, graph: Graph) -> list[tuple[str, str | None]]:
    """The (movers, final step) pairs a distribution fit chooses among, the base's first: lsd-c with
    ``cfg.choose`` tries, on masked models with spread movers, the Halton and DUS (dilated) orders as well, and on
    the other graphs a Tweedie last step (the posterior p(x0 | x_t)) and spread movers as well (``choose=False``:
    only the base's)."""
    movers = movers_of(cfg)
    if cfg.method != "lsd-c" or not cfg.choose:
        return [(movers, None)]
    if graph.absorbing:
        return [(movers, None)] + ([("halton", None), ("dilated", None)] if movers == "spread" else [])
    moves = [movers] + (["spread"] if movers == "independent" else [])
    finals = [None, "tweedie"] if cfg.base == "euler" else [None]
    return [(m, f) for m in moves for f in finals]


def movers_of(cfg: DistillConfig) -> str:
    """The movers a config's samplers use: spread, counted (lsd-c --counted) or independent."""
    return {"spread": "spread", "rounded": "counted", "independent": "independent"}[cfg.count()]


def base_sampler(cfg: DistillConfig) -> Sampler:
    """The base sampler a learned one is validated against (and written instead of it when it is no better): the
    base rule on the starting grid with Phi = 1, with spread movers under ``cfg.spread``."""
    return Sampler(cfg.student_times().tolist(), cfg.base, movers="spread" if cfg.spread else "independent",
                   provenance={"method": "spread" if cfg.spread else cfg.base, "note": "nothing learned"})


class _Batch:
    """One optimiser step's trajectories as this process sees them: the chunks it owns, their start states
    (perturbed per chunk from the chunk's own stream) and one draw stream per chunk."""

    def __init__(self, cfg: DistillConfig, graph: Graph, cache: TeacherCache, idx_all: Tensor, epoch: int,
                 batch: int, device):
        chunks = [idx_all[c0 : c0 + cfg.chunk] for c0 in range(0, idx_all.numel(), cfg.chunk)]
        mine = dist.my_items(len(chunks))
        self.idx = torch.cat([chunks[c] for c in mine]) if mine else idx_all[:0]
        starts = [perturb_start(cache.x_T[chunks[c]], graph, cfg.zeta, make_generator(cfg.seed, "cpu", 4, epoch, batch, c),
                                cache.held(chunks[c])) for c in mine]
        self.x = torch.cat(starts).to(device) if mine else None
        self.held = None if cache.given is None or not mine else cache.held(self.idx).to(device)
        self.streams = RowStreams([make_generator(cfg.seed, device, 3, epoch, batch, c) for c in mine],
                                  [chunks[c].numel() for c in mine]) if mine else None


class _Learner:
    """The distillation side of one optimiser step: a hook for the reverse loop that, at every student step,
    sums the step's statistics over processes, then either refits Phi_k in closed form or backpropagates the
    step's losses into Phi (and the grid). Every process makes exactly one collective per step, also one that
    owns no chunk of a short batch (``idle``)."""

    def __init__(self, cfg: DistillConfig, graph: Graph, noise: Noise, cache: TeacherCache, params: SamplerParams,
                 scales: list[float], cf_sums: Tensor, train_phi: bool, train_time: bool, idx: Tensor, device):
        self.cfg, self.graph, self.noise, self.cache, self.params = cfg, graph, noise, cache, params
        self.spec = cfg.loss_spec()
        self.scales, self.cf_sums, self.idx, self.device = scales, cf_sums, idx, device
        self.train_phi, self.train_time = train_phi, train_time
        self.tau = params.times()  # (M + 1,), differentiable in theta for LSD+
        self.t_uni = cache.times.to(torch.float64)
        self.sums = torch.zeros(2, dtype=torch.float64)  # this process's share of the batch's phi and time losses

    def on_score(self, info: StepInfo) -> None:
        k, x, score = info.k, info.x, info.score
        x_star, stored, s_star = (t.to(self.device) for t in self.cache.score_at(k, self.idx, self.device))
        local = step_stats(self.spec, self.graph, self.noise, x, score, x_star, stored, s_star, self.t_uni, k,
                           info.last)
        stats = dist.all_reduce_sum(local.values)
        if self.cfg.closed_form:
            self._refit(k, stats)
            return
        losses = step_losses(self.spec, self.graph, self.noise, x, score, x_star, stored, s_star,
                             self.params.coeffs()[k], self.tau, k, info.last, self.scales[k], stats, local.teacher_law,
                             t_teacher=self.t_uni if self.cfg.match_times else None)
        loss = (losses.phi if self.train_phi else 0.0) + (losses.time if self.train_time else 0.0)
        if torch.is_tensor(loss) and loss.requires_grad:
            loss.backward(retain_graph=True)
        self.sums += torch.stack([losses.phi.detach().cpu(), losses.time.detach().cpu()]).to(torch.float64)

    def idle(self) -> None:
        """Join every step's collective without any rows (this process owns no chunk of the batch)."""
        for k in range(self.cfg.nfe):
            stats = dist.all_reduce_sum(torch.zeros(N_STATS, dtype=torch.float64))
            if self.cfg.closed_form:
                self._refit(k, stats)

    def _refit(self, k: int, stats: Tensor) -> None:
        """Closed form (linear, l2): Phi_k = <s, s*> / |s|^2 over every trajectory simulated so far this epoch."""
        self.cf_sums[k] += stats[2:]
        if self.cf_sums[k, 0] > 0 and self.cf_sums[k, 1] > 0:
            with torch.no_grad():
                self.params.log_phi[k] = torch.log(self.cf_sums[k, 0] / self.cf_sums[k, 1])


def _epoch(cfg: DistillConfig, call: CountedScore, graph: Graph, noise: Noise, cache: TeacherCache,
           params: SamplerParams, opt: torch.optim.Optimizer | None, epoch: int, train_phi: bool,
           train_time: bool, device, n_train: int) -> dict:
    """One pass over the first ``n_train`` teacher trajectories (the rest are held out for validation) in
    shuffled batches, one optimiser step each; returns the mean losses. Every process runs the same steps; each
    owns some chunks of every batch (see ``_Batch``)."""
    order = torch.randperm(n_train, generator=make_generator(cfg.seed, "cpu", 2, epoch))
    scales = [cache.mean_sq(k) for k in range(cfg.nfe)]
    cf_sums = torch.zeros(cfg.nfe, 2, dtype=torch.float64)  # closed form: running <s, s*> and |s|^2 per step
    totals, n_batches, calls0 = torch.zeros(2, dtype=torch.float64), 0, call.calls
    for bi, b0 in enumerate(range(0, n_train, cfg.batch_size)):
        batch = _Batch(cfg, graph, cache, order[b0 : b0 + cfg.batch_size], epoch, bi, device)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        learner = _Learner(cfg, graph, noise, cache, params, scales, cf_sums, train_phi, train_time, batch.idx, device)
        if batch.x is None:
            learner.idle()
        else:
            advance = None
            if cfg.coupled:
                from ..sampling.coupling import ClockAdvance, clock_noise

                advance = ClockAdvance(*clock_noise(cfg.coupling_seed(), batch.idx, batch.x.shape[1]))
            rule, coeff = _student_step(cfg, params)
            reverse_loop(call, graph, noise, learner.tau.detach(), batch.x, rule=rule, phi_mode=cfg.phi_mode,
                         coeffs=coeff, generator=batch.streams, on_score=learner.on_score, advance=advance,
                         fixed=batch.held)
        if opt is not None:
            dist.sum_grads([p for p in params.parameters() if p.requires_grad])
            opt.step()
        totals += dist.all_reduce_sum(learner.sums) / cfg.nfe
        n_batches += 1
    calls = int(dist.all_reduce_sum(torch.tensor([call.calls - calls0]))[0])
    return {"loss_phi": float(totals[0]) / n_batches, "loss_time": float(totals[1]) / n_batches, "calls": calls}


def _student_step(cfg: DistillConfig, params: SamplerParams):
    """The student's step rule and coefficient function in the rollouts: the base rule with Phi_k, or under
    ``cfg.spread`` the same with spread movers (Phi_k sets how many), as the written sampler will move."""
    if not cfg.spread:
        return cfg.base, lambda k, x, score: params.coeffs()[k].detach()
    from ..sampling.conditioned import ConditionedCoeff, ConditionedRule

    one = torch.ones((), dtype=torch.float64)

    def coeff(k, x, score):  # the same tensor twice: the rule then builds the step law once
        phi = params.coeffs()[k].detach()
        return ConditionedCoeff(phi, one, True, phi, "spread")

    return ConditionedRule(cfg.base), coeff


def make_teacher(score_fn: ScoreFn, graph: Graph, noise: Noise, length: int, cfg: DistillConfig, *,
                 device: torch.device | str = "cpu", progress: bool = True) -> TeacherCache:
    """The teacher trajectories for ``cfg``: base sampler, teacher_nfe steps, seeded with cfg.seed."""
    store = choose_store(cfg.teacher_store, cfg.num_traj, length, graph.num_tokens, cfg.nfe)
    if cfg.teacher_kind == "exact":
        return run_exact_teacher(score_fn, graph, noise, cfg.student_times(), cfg.num_traj, length,
                                 batch_size=cfg.batch_size, seed=cfg.seed, device=device, progress=progress,
                                 store=store, coupled_seed=cfg.coupling_seed())
    return run_teacher(score_fn, graph, noise, cfg.student_times(), cfg.teacher_nfe, cfg.num_traj,
                       length, method=cfg.base, batch_size=cfg.batch_size,
                       seed=cfg.seed, device=device, progress=progress, store=store,
                       coupled_seed=cfg.coupling_seed())


def distill(score_fn: ScoreFn, graph: Graph, noise: Noise, length: int, cfg: DistillConfig, *,
            device: torch.device | str = "cpu", progress: bool = True, cache: TeacherCache | None = None,
            state: dict | None = None, on_epoch: Callable[[dict, dict], None] | None = None,
            hidden_fn=None) -> DistillResult:
    """Distill a learned M-step sampler. ``cache`` reuses teacher trajectories; ``state`` resumes from a
    checkpoint dict given earlier to ``on_epoch(record, state)`` (called after every epoch). ``hidden_fn``: the
    network's hidden states (``lsdd.models.features.hidden_states``), read by the ``network`` objective."""
    cfg.validate()
    cfg = cfg.resolve(graph)
    if (cfg.coupled or cfg.match_times or cfg.teacher_kind == "exact") and not graph.absorbing:
        raise ValueError("coupled trajectories, matched times and the exact teacher are defined for the absorbing "
                         "graph only")
    if cache is None:
        cache = make_teacher(score_fn, graph, noise, length, cfg, device=device, progress=progress)
    if cache.num < 1 or len(cache.states) != cfg.nfe:
        raise ValueError(f"teacher cache has {len(cache.states)} steps, the student {cfg.nfe}")
    cache.attach(score_fn, graph, noise)  # a "states" cache recomputes the teacher's scores with it
    if cfg.resolved_objective() != "trajectory":
        return distill_distribution(score_fn, graph, noise, length, cfg, cache, device=device, progress=progress,
                                    hidden_fn=hidden_fn, state=state, on_epoch=on_epoch)
    n_train = cache.num - cfg.num_val()
    if n_train < 1:
        raise ValueError(f"the teacher cache holds {cache.num} trajectories; {cfg.num_val()} are held out for "
                         "validation, none is left to train on")
    lsd_result = None
    if cfg.method == "lsd+" and (cfg.init_lsd or cfg.select):  # LSD first, on the same training trajectories
        lsd_cfg = replace(cfg, method="lsd", init_lsd=False, select=False)
        share = _training_share(cache, cfg.num_val()).attach(score_fn, graph, noise)
        lsd_result = fit_trajectories(score_fn, graph, noise, lsd_cfg, share, device=device, progress=False)
    init = lsd_result.coeffs.log() if lsd_result is not None and cfg.init_lsd and state is None else None
    result = fit_trajectories(score_fn, graph, noise, cfg, cache, n_train=n_train, device=device, progress=progress,
                              state=state, on_epoch=on_epoch, init_log_phi=init)
    if cfg.select:
        result = _select(score_fn, graph, noise, cache.x_0[n_train:], cfg, result, lsd_result, device,
                         given=_given(cache, n_train))
    if cfg.validation:
        result.validation = validate_learned(score_fn, graph, noise, cache.x_0[n_train:], cfg, result.sampler(cfg),
                                             device, given=_given(cache, n_train))
    return result


def _given(cache: TeacherCache, start: int = 0, stop: int | None = None) -> Tensor | None:
    """The given tokens of trajectories start..stop (the held-out ones by default from ``start``), or None."""
    return None if cache.given is None else cache.given[start:stop]


def _free_of(given: Tensor | None, num: int, graph: Graph) -> Tensor | None:
    """(num, L) bool: the generated positions of ``num`` samples continuing ``given`` (P, L) cyclically (sample i
    holds row i mod P, as ``samplers.sample_batched`` draws them); None without ``given``."""
    if given is None:
        return None
    return given[torch.arange(num) % given.shape[0]] == graph.num_tokens


def fit_trajectories(score_fn: ScoreFn, graph: Graph, noise: Noise, cfg: DistillConfig, cache: TeacherCache, *,
                     n_train: int | None = None, device: torch.device | str = "cpu", progress: bool = True,
                     state: dict | None = None, on_epoch: Callable[[dict, dict], None] | None = None,
                     init_log_phi: Tensor | None = None) -> DistillResult:
    """LSD / LSD+ by trajectory matching on the first ``n_train`` teacher trajectories (all by default): Adam (or
    the closed form) on Phi and, for LSD+, the grid logits, ``cfg.epochs`` passes. No validation here."""
    n_train = cache.num if n_train is None else n_train
    params = SamplerParams(cfg.nfe, cfg.eps, learn_times=cfg.method == "lsd+",
                           init_times=None if cfg.init_times is None else cfg.student_times())
    if init_log_phi is not None:
        with torch.no_grad():
            params.log_phi.copy_(init_log_phi)
    groups = [{"params": [params.log_phi], "lr": cfg.lr}]
    if cfg.method == "lsd+":
        groups.append({"params": [params.theta], "lr": cfg.lr_time})
    opt = None if cfg.closed_form else torch.optim.Adam(groups)
    history: list[dict] = []
    start_epoch = 0
    if state is not None:
        params.load_state_dict(state["params"])
        if opt is not None and state.get("opt") is not None:
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
        rec = _epoch(cfg, call, graph, noise, cache, params, opt, epoch, train_phi, train_time, device, n_train)
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
                         cache.nfe, student_calls, movers=movers_of(cfg))


def _training_share(cache: TeacherCache, n_val: int) -> TeacherCache:
    """The cache without its last ``n_val`` (held-out) trajectories, in the same store. The score rows and the
    loss scales (``mean_sq``) stay those of the whole run, in either store."""
    if n_val == 0:
        return cache
    return cache.take(torch.arange(cache.num - n_val))


def _select(score_fn, graph, noise, reference: Tensor, cfg: DistillConfig, plus: DistillResult,
            lsd: DistillResult, device, given: Tensor | None = None) -> DistillResult:
    """Keep LSD+ or LSD, whichever has the lower n-gram Hellinger distance to the held-out teacher outputs
    (``cfg.val_samples`` samples each, the same random streams; continuing the reference's prompts ``given``
    cyclically, measured on the continuations, when it has them)."""
    length = reference.shape[1]
    common = dict(batch_size=cfg.batch_size, seed=derive_seed(cfg.seed, 13), device=device, given=given)
    free, ref_free = _free_of(given, cfg.val_samples, graph), _free_of(given, reference.shape[0], graph)
    dists = {}
    for name, res in (("lsd+", plus), ("lsd", lsd)):
        x = sample_batched(score_fn, graph, noise, res.times, cfg.val_samples, length,
                           **common, **res.sampler(cfg).loop_args(graph)).x
        dists[name] = distance("hellinger", x, reference, graph.num_states, free, ref_free)
    keep = "lsd+" if dists["lsd+"] <= dists["lsd"] else "lsd"
    out = plus if keep == "lsd+" else DistillResult(lsd.times, lsd.coeffs, plus.history, plus.teacher_seconds,
                                                     plus.student_seconds, plus.teacher_calls, plus.student_calls,
                                                     conditioning=lsd.conditioning, movers=lsd.movers)
    out.selection = {"hellinger_lsd+": dists["lsd+"], "hellinger_lsd": dists["lsd"], "kept": keep}
    return out


def family_sizes(cfg: DistillConfig, graph: Graph) -> tuple[int, int, int]:
    """How many CMA-ES numbers each per-step family of a distribution fit gets: (Phi, confidence slope, value
    beta), 0 where the family is not learned (lsd: Phi alone; lsd-c: Phi and beta, and the slope with
    ``cfg.slope`` on the absorbing graph). Each is ``cfg.basis`` capped at the number of steps where the family
    acts. On the absorbing graph the last step reveals every remaining token whatever its Phi and slope (the
    forced last step), so those two act on the first M - 1 steps only: at 2 NFE with the affine basis Phi gets one
    number, not two of which one moved nothing (benchmarks/issue24_bench.md, stop 34). At least one number each,
    so at 1 NFE Phi keeps one (inert) number. Beta, the values' temperature, acts on every step."""
    acting = max(1, cfg.nfe - 1) if graph.absorbing else cfg.nfe
    moved = min(cfg.basis, acting)
    if cfg.method != "lsd-c":
        return moved, 0, 0
    return moved, moved if graph.absorbing and cfg.slope else 0, min(cfg.basis, cfg.nfe)


def unpack_flat(v: Tensor, cfg: DistillConfig, sizes: Sequence[int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The CMA vector (sum(sizes),) -> per-step (log_phi, slope, log_beta), each (M,) (zeros where not learned):
    family j is the polynomial ``step_basis(M, sizes[j])`` with the next sizes[j] numbers as its coefficients
    (``family_sizes``). ``sizes`` None: ``cfg.basis`` numbers per family, as many families as v holds (1: Phi
    alone, 2: Phi and beta, 3: all three; fits before stop 34)."""
    if sizes is None:
        k = v.numel() // cfg.basis
        sizes = {1: (cfg.basis, 0, 0), 2: (cfg.basis, 0, cfg.basis)}.get(k, (cfg.basis,) * 3)
    if v.numel() != sum(sizes):
        raise ValueError(f"a CMA vector of {v.numel()} numbers for families of {list(sizes)}")
    parts, i = [], 0
    for n in sizes:
        parts.append(step_basis(cfg.nfe, n) @ v[i : i + n] if n else torch.zeros(cfg.nfe, dtype=torch.float64))
        i += n
    return parts[0], parts[1], parts[2]


def _result_from_flat(v: Tensor, cfg: DistillConfig,
                      sizes: Sequence[int] | None = None) -> tuple[Tensor, dict | None]:
    log_phi, slope, log_beta = unpack_flat(v, cfg, sizes)
    cond = None
    if cfg.method == "lsd-c":
        cond = {"feature": "confidence", "slope": [float(a) for a in slope],
                "beta": [float(b) for b in log_beta.exp()]}
    return log_phi.exp(), cond


def distill_distribution(score_fn: ScoreFn, graph: Graph, noise: Noise, length: int, cfg: DistillConfig,
                         cache: TeacherCache, *, device: torch.device | str = "cpu",
                         progress: bool = True, hidden_fn=None, state: dict | None = None,
                         on_epoch: Callable[[dict, dict], None] | None = None) -> DistillResult:
    """Fit lsd (Phi per step) or lsd-c (Phi, confidence slope, value temperature per step) on the output
    distribution: CMA-ES over ``cfg.basis`` numbers per parameter family (fewer where a family acts on fewer
    steps: ``family_sizes``), each candidate scored by
    ``objective.distance`` between its ``cfg.obj_samples`` samples (the same random streams for every
    candidate) and the training teacher outputs. Starts from the base sampler (all zero), which stays a
    candidate, so the fit is never worse than the base on this objective. With ``cfg.early_exit`` the start is
    first tested against the teacher (``objective.at_teacher``); when it is already at the teacher's level the fit
    and, unless the chosen movers differ from the base's, validation are skipped (``result.early_exit``).

    Checkpoints: after every CMA-ES generation ``on_epoch(record, state)`` gets ``state`` = {"epoch": generations
    done, "cma": their candidates and values}; given back as ``state``, the run replays those generations without
    sampling them (``minimise_cma``'s ``replay``) and goes on exactly as if never stopped. The calibration, the
    choice of movers and the early exit are recomputed (a few sample sets, the same values)."""
    n_train = cache.num - cfg.num_val()
    target = cache.x_0[:n_train]
    given = _given(cache, 0, n_train)  # candidates continue the training trajectories' prompts, cyclically
    free, target_free = _free_of(given, cfg.obj_samples, graph), _free_of(given, n_train, graph)
    times = cfg.student_times()
    # lsd-c: Phi and beta, and the slope where asked for (it reads a masked token's confidence: absorbing graph)
    sizes = family_sizes(cfg, graph)
    seed = derive_seed(cfg.seed, 11)
    call = CountedScore(score_fn, graph, noise)
    t0 = time.perf_counter()

    name = cfg.resolved_objective()
    # the NLL feature's and the hidden states' network calls are not sampling calls
    score = make_objective(name, score_fn=score_fn, graph=graph, noise=noise, target=target,
                           seed=derive_seed(cfg.seed, 14), batch_size=cfg.batch_size, device=device,
                           target_free=target_free, free=free, hidden_fn=hidden_fn)

    def draw(v: Tensor, movers: str, final: str | None, temperature: float = 1.0) -> Tensor:
        coeffs, cond = _result_from_flat(v, cfg, sizes)
        res = DistillResult(times, coeffs, conditioning=cond, movers=movers, final=final)
        fn = call if temperature == 1.0 else tempered_score(call, temperature)
        return sample_batched(fn, graph, noise, times, cfg.obj_samples, length, batch_size=cfg.batch_size,
                              seed=seed, device=device, given=given, **res.sampler(cfg).loop_args(graph)).x

    start = torch.zeros(sum(sizes), dtype=torch.float64)
    options = discrete_options(cfg, graph)
    choice = None
    # the first option's outputs at the base parameters: drawn once for the calibration, the choice and the test
    first = draw(start, *options[0]) if isinstance(score, CombinedObjective) or cfg.early_exit or len(options) > 1 \
        else None
    calibration = {}
    for term in slope_terms(score):  # nll@entropy: the base's frontier slope, from its outputs at two temperatures
        calibration["slope"] = term.calibrate_slope(*(first if t == 1.0 and first is not None
                                                      else draw(start, *options[0], temperature=t)
                                                      for t in SLOPE_TEMPERATURES))
        if progress and dist.is_main():
            print(f"nll@entropy: slope dNLL/dH of the base's temperature frontier {calibration['slope']:.4g} "
                  f"(temperatures {SLOPE_TEMPERATURES[0]:g}, {SLOPE_TEMPERATURES[1]:g})")
    if isinstance(score, CombinedObjective):  # each term's noise, from the base's outputs pooled with the target
        sd = score.calibrate(first, PERMUTATIONS, seed=derive_seed(cfg.seed, 17))
        calibration["noise"] = dict(zip(score.labels, sd))
        if progress and dist.is_main():
            print(f"{name}: noise of each term: " + ", ".join(f"{k} {v:.4g}" for k, v in zip(score.labels, sd)))
    if len(options) > 1:  # the discrete parts, chosen at the base parameters (the same random streams for each)
        values = [score(first if (m, f) == options[0] else draw(start, m, f)) for m, f in options]
        movers, final = options[values.index(min(values))]
        choice = {m + (f"+{f}-final" if f else ""): v for (m, f), v in zip(options, values)}
        if progress and dist.is_main():
            print(f"{cfg.resolved_objective()} objective at the base parameters: "
                  + ", ".join(f"{k} {v:.5f}" for k, v in choice.items()))
    else:
        (movers, final), = options

    early = None
    if cfg.early_exit:  # is the start already at the teacher's level on this objective?
        x0 = first if (movers, final) == options[0] else draw(start, movers, final)
        value, p = score.test(x0, PERMUTATIONS, seed=derive_seed(cfg.seed, 16))
        base = base_sampler(cfg)
        early = {"objective": value, "p": p, "permutations": PERMUTATIONS, "threshold": AT_TEACHER_P,
                 "skipped": at_teacher(p), "base": (movers, final) == (base.movers, base.final)}
        if progress and dist.is_main():
            print(f"{cfg.resolved_objective()} objective of the start {value:.5f}, permutation p-value against the "
                  f"teacher {p:.3f}" + (f" >= {AT_TEACHER_P:g}: the objective cannot tell them apart, CMA-ES "
                                        "skipped" if early["skipped"] else ""))
    if early is not None and early["skipped"]:
        seconds = time.perf_counter() - t0
        coeffs, cond = _result_from_flat(start, cfg, sizes)
        history = [{"epoch": 0, "loss_phi": early["objective"], "loss_time": 0.0,
                    "best_so_far": early["objective"], "seconds": seconds}]
        result = DistillResult(times, coeffs, history, cache.seconds, seconds, cache.nfe, call.calls,
                               conditioning=cond, movers=movers, final=final, choice=choice, early_exit=early,
                               calibration=calibration or None)
        if cfg.validation and not early["base"]:  # the start's movers differ from the base's: still validated
            result.validation = validate_learned(score_fn, graph, noise, cache.x_0[n_train:], cfg,
                                                 result.sampler(cfg), device, given=_given(cache, n_train))
        return result

    def objective(v: Tensor) -> float:
        if early is not None and torch.equal(v, start):  # the start, already drawn and scored for the test
            return early["objective"]
        return score(draw(v, movers, final))

    bar = tqdm(total=cfg.cma_iters, desc=f"{cfg.method} M={cfg.nfe} ({cfg.resolved_objective()}, CMA-ES)",
               disable=not progress or not dist.is_main())

    done = list((state or {}).get("cma", {}).get("generations", []))
    generations: list[dict] = []

    def generation(rec: dict) -> None:
        bar.update(1)
        bar.set_postfix(best=f"{rec['best_so_far']:.4g}", sigma=f"{rec['sigma']:.3g}")
        generations.append({"candidates": rec["candidates"], "values": rec["values"]})
        if on_epoch is not None and not rec["replayed"]:
            on_epoch({"epoch": len(generations), "loss_phi": rec["best"]},
                     {"epoch": len(generations), "cma": {"generations": list(generations)}})

    sigma = cfg.cma_sigma if cfg.cma_sigma is not None else default_sigma(name)
    calibration["cma_sigma"] = sigma
    if done and progress and dist.is_main():
        print(f"CMA-ES: replaying {len(done)} generation(s) from the checkpoint")
    fit = minimise_cma(objective, start, sigma, cfg.cma_iters, cfg.cma_popsize, seed,
                       on_generation=generation, replay=done, probe=cfg.cma_probe)
    bar.close()
    if fit.stds is not None:
        calibration["cma_stds"] = [round(v, 6) for v in fit.stds]
        calibration["cma_axes"] = [[round(float(a), 6) for a in col] for col in fit.axes.T]
        calibration["cma_probe_best"] = fit.probe_best
        if progress and dist.is_main():
            print("CMA-ES first step along the Hessian's directions at the start (x sigma): " + "; ".join(
                f"{v:.3g} along {[round(float(a), 2) for a in col]}" for v, col in zip(fit.stds, fit.axes.T)))
    coeffs, cond = _result_from_flat(fit.x, cfg, sizes)
    # epoch 0: the start; its best so far also counts the probe's points (objective.probe_metric)
    history = [{"epoch": 0, "loss_phi": fit.start_value, "loss_time": 0.0,
                "best_so_far": min(fit.start_value, fit.probe_best if fit.probe_best is not None else math.inf)}]
    for i, h in enumerate(fit.history):  # loss_phi: the generation's best candidate
        history.append({"epoch": i + 1, "loss_phi": h["best"], "loss_time": 0.0, "mean": h["mean"],
                        "sigma": h["sigma"], "best_so_far": min(history[-1]["best_so_far"], h["best"])})
    seconds = time.perf_counter() - t0
    if history:
        history[-1]["seconds"] = seconds
    result = DistillResult(times, coeffs, history, cache.seconds, seconds, cache.nfe, call.calls,
                           conditioning=cond, movers=movers, final=final, choice=choice, early_exit=early,
                           calibration=calibration)
    if progress and dist.is_main():
        print(f"{cfg.resolved_objective()} objective: base {fit.start_value:.5f} -> learned {fit.value:.5f} "
              f"({fit.evaluations} candidates, {seconds:.0f} s)")
    if cfg.validation:
        result.validation = validate_learned(score_fn, graph, noise, cache.x_0[n_train:], cfg, result.sampler(cfg),
                                             device, given=_given(cache, n_train))
    return result


def validate_learned(score_fn: ScoreFn, graph: Graph, noise: Noise, reference: Tensor, cfg: DistillConfig,
                     learned: Sampler, device: torch.device | str = "cpu", *,
                     given: Tensor | None = None) -> Validation:
    """Compare the ``learned`` sampler with its base (``base_sampler(cfg)``: the starting grid - uniform unless
    ``cfg.init_times`` -, Phi = 1, the same movers) at the same NFE on held-out teacher outputs ``reference``
    (m, L), with paired bootstrap intervals at ``cfg.val_level``, the NLL read at matched entropy (unless the
    learned sampler is more diverse in every resample, the base is also drawn colder: at ``PROBE_TEMPERATURE``,
    then, unless that already reaches the learned entropy, at the temperature that does (``match_temperature``);
    four sample sets and four NLL bounds in all). Common random numbers: all draw
    ``cfg.val_samples`` samples from the same streams (batch b from ``make_generator(seed, device, b)``, so row i
    of each uses the same generator), and their NLL bounds see the same noise levels and masks row by row.

    ``given`` (m, L) int64: the reference's given tokens (conditional teachers; row j the prompt of reference
    j): sample i of base and learned continues row i mod m, so they continue the reference's (held-out) prompts
    in the same mix, and every figure reads the continuations only (``statistics``' ``free``)."""
    cfg = cfg.resolve(graph)
    length = reference.shape[1]
    common = dict(batch_size=cfg.batch_size, seed=derive_seed(cfg.seed, 9), device=device, given=given)
    base = base_sampler(cfg)
    draw = lambda fn, smp: sample_batched(fn, graph, noise, smp.times_tensor(), cfg.val_samples, length,  # noqa: E731
                                          **common, **smp.loop_args(graph)).x
    outs = [draw(score_fn, base), draw(score_fn, learned)]
    free, ref_free = _free_of(given, cfg.val_samples, graph), _free_of(given, reference.shape[0], graph)
    nll_seed = derive_seed(cfg.seed, 10)
    bound = lambda x, f: model_nll(score_fn, graph, noise, x, seed=nll_seed, batch_size=cfg.batch_size,  # noqa: E731
                                   device=device, free=f)
    nll = (bound(outs[0], free), bound(outs[1], free), bound(reference, ref_free))

    def frontier():  # drawn only when the learned sampler is less diverse: the base colder, where its entropy
        # meets the learned sampler's (a probe at PROBE_TEMPERATURE locates it), and the base itself: the chord
        h = [float(per_sample_entropy(x, graph.num_states, free).mean()) for x in outs]
        probe = draw(tempered_score(score_fn, PROBE_TEMPERATURE), base)
        t = match_temperature(h[0], float(per_sample_entropy(probe, graph.num_states, free).mean()), h[1])
        cold = probe if t == PROBE_TEMPERATURE else draw(tempered_score(score_fn, t), base)
        return cold, outs[0], bound(cold, free), nll[0]

    return compare(outs[0], outs[1], reference, graph.num_states, cfg.nfe, nll, level=cfg.val_level,
                   seed=derive_seed(cfg.seed, 15), free=free, ref_free=ref_free, frontier=frontier)


def skipped(result: DistillResult) -> bool:
    """True when the early exit kept the base sampler as it is (nothing fitted, nothing to validate)."""
    e = result.early_exit
    return bool(e and e["skipped"] and e["base"] and result.validation is None)


def to_sampler(result: DistillResult, cfg: DistillConfig, model=None, model_info: dict[str, Any] | None = None,
               use_base: bool = False) -> Sampler:
    """Package a distillation result as a ``Sampler`` bound to ``model`` (its graph, noise and fingerprint), with
    the settings, the history and the validation figures in its provenance. ``use_base``: the base sampler
    (``base_sampler(cfg)``) instead - what the pipeline writes when validation finds the learned one no better -,
    keeping the learned numbers in the provenance."""
    from .. import __version__
    from ..sampling.sampler import model_ref

    provenance = {
        **(model_info or {}),
        "method": cfg.method, "base": cfg.base, "teacher_kind": cfg.teacher_kind,
        "teacher_nfe": cfg.teacher_nfe if cfg.teacher_kind == "steps" else None, "zeta": cfg.zeta, "loss": cfg.loss,
        "epochs": cfg.epochs, "seed": cfg.seed, "lsdd_version": __version__, "distill_config": asdict(cfg),
        "teacher_seconds": round(result.teacher_seconds, 3), "student_seconds": round(result.student_seconds, 3),
        "history": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()} for h in result.history],
        "validation": result.validation.to_dict() if result.validation is not None else None,
        "objective": cfg.resolved_objective(),
    }
    if result.selection is not None:
        provenance["selection"] = result.selection
    if result.choice is not None:
        provenance["discrete_choice"] = {k: round(v, 6) for k, v in result.choice.items()}
    if result.calibration is not None:
        def six(v):  # numbers to 6 significant digits, through dicts and (nested) lists
            return ({t: six(x) for t, x in v.items()} if isinstance(v, dict)
                    else [six(x) for x in v] if isinstance(v, list) else float(f"{v:.6g}"))

        provenance["objective_calibration"] = six(dict(result.calibration))
    learned = result.sampler(cfg)
    if result.early_exit is not None:
        provenance["early_exit"] = {k: (round(v, 6) if isinstance(v, float) else v)
                                    for k, v in result.early_exit.items()}
    if skipped(result):
        out = base_sampler(cfg)
        e = result.early_exit
        provenance["written"] = ("base sampler" + (" with spread movers" if cfg.spread else "") +
                                 f": the {cfg.resolved_objective()} objective cannot tell its outputs from the "
                                 f"teacher's (permutation p-value {e['p']:.3f} >= {e['threshold']:g}), so nothing "
                                 "was fitted")
    elif use_base:
        out = base_sampler(cfg)
        provenance["written"] = ("base sampler" + (" with spread movers" if cfg.spread else "") +
                                 ": validation found the learned one no better")
        provenance["rejected_learned"] = {"times": list(learned.times), "coeffs": list(learned.coeffs),
                                          "movers": learned.movers, "conditioning": learned.conditioning,
                                          "final": learned.final}
    else:
        out = learned
        provenance["written"] = "learned sampler"
    return out.replace(model=None if model is None else model_ref(model), provenance=provenance)
