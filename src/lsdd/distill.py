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

from .artifact import LearnedSampler
from .graphs import Graph
from .noise import Noise
from .samplers import PHI_MODES, SAMPLERS, ScoreFn, get_step_probs, sample_categorical, scale_score
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
    batch_size: int = 64
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
            (self.num_traj >= 1 and self.batch_size >= 1,
             f"num_traj and batch_size must be >= 1, got {self.num_traj}, {self.batch_size}"),
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


def _rel_l2(a: Tensor, b: Tensor, rows: Tensor, scale: float | Tensor) -> Tensor:
    """mean over rows of |a - b|^2 / scale. a, b (b, L, N), rows (b, L) bool; ``scale`` a fixed typical |b|^2,
    so the minimiser is that of the plain squared error and no step dominates by its magnitude."""
    w = rows[..., None].to(a.dtype)
    return ((a - b) ** 2 * w).sum() / (rows.sum().clamp_min(1) * scale)


KL_FLOOR = 1e-12  # a student mass of 0 where the teacher has mass costs log(p / 1e-12), not infinity


def _kl(p: Tensor, q: Tensor, rows: Tensor) -> Tensor:
    """mean over rows of KL(p || q); p, q (b, L, S) step laws."""
    kl = (p * (torch.log(p.clamp_min(1e-300)) - torch.log(q.clamp_min(KL_FLOOR)))).sum(-1)
    return (kl * rows).sum() / rows.sum().clamp_min(1)


def _full_score(graph: Graph, x: Tensor, s_real: Tensor) -> Tensor:
    """Real-token scores (b, L, N) -> a full score (b, L, S) with 1 at the current token (mask column 1)."""
    full = torch.ones(*x.shape, graph.num_states, dtype=torch.float64)
    full[..., : graph.num_tokens] = s_real.to(torch.float64)
    return full.scatter(-1, x[..., None], 1.0)


@dataclass
class StepLosses:
    phi: Tensor
    time: Tensor
    rows: int


def step_losses(cfg: DistillConfig, graph: Graph, noise: Noise, x: Tensor, score: Tensor, x_star: Tensor,
                stored: Tensor, s_star: Tensor, phi: Tensor, tau: Tensor, t_uni: Tensor, k: int,
                last: bool, scale: float = 1.0) -> StepLosses:
    """Losses of one student step k. x, x_star (b, L); score (b, L, S) student; s_star (b, L, N) teacher;
    phi the coefficient (0-d, grad); tau (M+1,) student grid (grad for LSD+); t_uni (M+1,) teacher grid;
    scale: typical squared norm of the teacher's score rows at this step (l2 only)."""
    rows = _compare_mask(graph, x, x_star, stored)
    score = score.to(torch.float64)
    teacher_full = _full_score(graph, x, s_star)  # teacher's score, read at the student's current tokens
    zero = score.new_zeros(())
    if not rows.any():
        return StepLosses(zero, zero, 0)
    step_probs = get_step_probs(cfg.base)
    t_k, s_k = tau[k].detach(), tau[k + 1].detach()
    if cfg.loss == "l2":
        loss_phi = _rel_l2(_off_diag(graph, x, scale_score(score, x, phi, cfg.phi_mode)),
                           _off_diag(graph, x, teacher_full), rows, scale)
    else:
        p_teacher = step_probs(graph, noise, x, teacher_full, t_k, s_k, last=last)
        p_student = step_probs(graph, noise, x, score, t_k, s_k, phi, cfg.phi_mode, last=last)
        loss_phi = _kl(p_teacher, p_student, rows) if cfg.loss == "kl" else _kl(p_student, p_teacher, rows)
    loss_time = zero
    if cfg.method == "lsd+" and not last:
        # effective transition of the student over [tau_k, tau_k+1] vs the teacher's over [t_k, t_k+1]
        p_teacher = step_probs(graph, noise, x, teacher_full, t_uni[k], t_uni[k + 1])
        p_student = step_probs(graph, noise, x, score, tau[k], tau[k + 1], phi.detach(), cfg.phi_mode)
        if cfg.loss == "l2":
            target = _off_diag(graph, x, p_teacher)
            scale_t = ((target**2).sum(-1) * rows).sum() / rows.sum()
            loss_time = _rel_l2(_off_diag(graph, x, p_student), target, rows, scale_t.clamp_min(1e-300))
        elif cfg.loss == "kl":
            loss_time = _kl(p_teacher, p_student, rows)
        else:
            loss_time = _kl(p_student, p_teacher, rows)
    return StepLosses(loss_phi, loss_time, int(rows.sum()))


def closed_form_terms(x: Tensor, score: Tensor, teacher_full: Tensor, rows: Tensor, graph: Graph) -> Tensor:
    """(<s, s*>, |s|^2) over compared rows: argmin_Phi sum |Phi s - s*|^2 = <s, s*> / |s|^2 (linear, l2)."""
    s = _off_diag(graph, x, score.to(torch.float64)) * rows[..., None]
    s_star = _off_diag(graph, x, teacher_full) * rows[..., None]
    return torch.stack([(s * s_star).sum(), (s * s).sum()])


@dataclass
class DistillResult:
    times: Tensor  # (M + 1,) learned grid
    coeffs: Tensor  # (M,)
    history: list[dict] = field(default_factory=list)  # per epoch: loss_phi, loss_time, seconds
    teacher_seconds: float = 0.0
    student_seconds: float = 0.0
    teacher_calls: int = 0
    student_calls: int = 0


def _epoch(cfg: DistillConfig, score_fn: ScoreFn, graph: Graph, noise: Noise, cache: TeacherCache,
           params: SamplerParams, opt: torch.optim.Optimizer | None, gen: torch.Generator, train_phi: bool,
           train_time: bool, device) -> dict:
    """One pass over the teacher trajectories in shuffled batches; returns the mean losses."""
    m = cfg.nfe
    step_probs = get_step_probs(cfg.base)
    t_uni = cache.times.to(torch.float64)
    order = torch.randperm(cache.num, generator=gen)
    scales = [cache.mean_sq(k) for k in range(m)]
    cf_sums = torch.zeros(m, 2, dtype=torch.float64)  # closed form: running <s, s*> and |s|^2 per step
    tot_phi = tot_time = 0.0
    n_batches = calls = 0
    for b0 in range(0, cache.num, cfg.batch_size):
        idx = order[b0 : b0 + cfg.batch_size]
        x = perturb_start(cache.x_T[idx], graph, cfg.zeta, gen).to(device)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        tau = params.times()
        coeffs = params.coeffs()
        batch_phi = batch_time = 0.0
        for k in range(m):
            last = k == m - 1
            with torch.no_grad():
                score = score_fn(x, noise.total(tau[k].detach()).float().expand(x.shape[0])).cpu()
            calls += 1
            x_star, stored, s_star = cache.score_at(k, idx)
            xc = x.cpu()
            if cfg.closed_form:
                # exact refit of Phi_k on every trajectory simulated so far this epoch, then simulate with it
                rows = _compare_mask(graph, xc, x_star, stored)
                cf_sums[k] += closed_form_terms(xc, score, _full_score(graph, xc, s_star), rows, graph)
                with torch.no_grad():
                    if cf_sums[k, 0] > 0 and cf_sums[k, 1] > 0:
                        params.log_phi[k] = torch.log(cf_sums[k, 0] / cf_sums[k, 1])
                coeffs = params.coeffs()
            else:
                losses = step_losses(cfg, graph, noise, xc, score, x_star, stored, s_star, coeffs[k], tau, t_uni,
                                     k, last, scales[k])
                loss = (losses.phi if train_phi else 0.0) + (losses.time if train_time else 0.0)
                if torch.is_tensor(loss) and loss.requires_grad:
                    loss.backward(retain_graph=True)
                batch_phi += float(losses.phi.detach())
                batch_time += float(losses.time.detach())
            with torch.no_grad():
                probs = step_probs(graph, noise, xc, score, tau[k].detach(), tau[k + 1].detach(),
                                   coeffs[k].detach(), cfg.phi_mode, last=last)
                x = sample_categorical(probs, gen).to(device)
        if opt is not None:
            opt.step()
        tot_phi += batch_phi / m
        tot_time += batch_time / m
        n_batches += 1
    return {"loss_phi": tot_phi / n_batches, "loss_time": tot_time / n_batches, "calls": calls}


def make_teacher(score_fn: ScoreFn, graph: Graph, noise: Noise, length: int, cfg: DistillConfig, *,
                 device: torch.device | str = "cpu", progress: bool = True) -> TeacherCache:
    """The teacher trajectories for ``cfg``: base sampler, teacher_nfe steps, seeded with cfg.seed."""
    return run_teacher(score_fn, graph, noise, uniform_times(cfg.nfe, cfg.eps), cfg.teacher_nfe, cfg.num_traj,
                       length, method=cfg.base, batch_size=cfg.batch_size,
                       generator=torch.Generator().manual_seed(cfg.seed), device=device, progress=progress)


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
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # the student's draws; the teacher has its own
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
        gen.set_state(state["gen"])
        history = list(state["history"])
        start_epoch = state["epoch"]
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"{cfg.method} M={cfg.nfe}", disable=not progress,
               initial=start_epoch, total=cfg.epochs)
    student_calls = 0
    for epoch in bar:
        t0 = time.perf_counter()
        joint = not cfg.alternate or cfg.method != "lsd+"
        train_phi = joint or epoch % 2 == 0
        train_time = cfg.method == "lsd+" and (joint or epoch % 2 == 1)
        rec = _epoch(cfg, score_fn, graph, noise, cache, params, opt, gen, train_phi, train_time, device)
        student_calls += rec.pop("calls")
        rec.update(epoch=epoch + 1, seconds=time.perf_counter() - t0)
        history.append(rec)
        bar.set_postfix(loss_phi=f"{rec['loss_phi']:.4g}", loss_time=f"{rec['loss_time']:.3g}")
        if on_epoch is not None:
            on_epoch(rec, {"params": params.state_dict(), "opt": opt.state_dict() if opt else None,
                           "gen": gen.get_state(), "history": history, "epoch": epoch + 1})
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
