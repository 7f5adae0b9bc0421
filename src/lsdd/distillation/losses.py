"""The LSD / LSD+ step losses (method.md §3-4), as each process's share of a global mean.

Per student step k the Phi-loss compares the teacher's cached score s*_k with the student's scaled score at its
own state, over the rows movable in both paths and the real-token columns other than the current token:
  l2: |scale(s_k, Phi_k) - s*_k|^2 / scale_k (scale_k: the teacher's mean squared score row at step k, so the
      minimiser is that of the plain squared error and no step dominates by its magnitude);
  kl: KL(teacher step law || student step law), both over the student's interval (mass-covering);
  rkl: KL(student || teacher) (mode-seeking).
LSD+ adds a time-loss on the effective transition of each step: the student's step over [tau_k, tau_{k+1}]
against the teacher's over the matching uniform interval [t_k, t_{k+1}].

Means are over the rows of *every* process: ``step_stats`` returns a process's share of the step's counts and
normalisers, the caller sums them over processes, and ``step_losses`` divides its local sums by the global
figures - so the gradients summed over processes equal those of one process that saw every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..graphs import Graph
from ..noise import Noise
from ..sampling.samplers import scale_score, step_law_dense



@dataclass(frozen=True)
class LossSpec:
    """What the step losses need to know of a distillation: the base rule, the method ("lsd" / "lsd+"), the
    distance ("l2" / "kl" / "rkl"), how Phi enters ("linear" / "log") and whether Phi is refitted in closed form."""

    base: str = "euler"
    method: str = "lsd"
    loss: str = "l2"
    phi_mode: str = "linear"
    closed_form: bool = False


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


def _off_rows(graph: Graph, x_rows: Tensor, p: Tensor) -> Tensor:
    """``_off_diag`` on gathered rows: p (n, S) or real-token scores (n, N), x_rows (n,) -> (n, N) float64 with the
    current token's column zeroed."""
    p = p.to(torch.float64)
    if p.shape[-1] < graph.num_states:
        p = torch.cat([p, p.new_zeros(p.shape[0], graph.num_states - p.shape[-1])], -1)
    return p.scatter(-1, x_rows[:, None], 0.0)[:, : graph.num_tokens]


def _l2_linear(graph: Graph, x: Tensor, score: Tensor, s_star: Tensor, rows: Tensor, phi: Tensor) -> Tensor:
    """sum over compared rows of |Phi s - s*|^2 (off-diagonal, real-token columns) for a 0-d Phi: the l2 loss with
    linear Phi, the default. It is quadratic in Phi, so its value is computed without a gradient on the compared
    rows only and the gradient 2 sum <Phi s - s*, s> is attached in closed form: the same value and gradient as
    autograd through ``_sq_sum(scale_score(...))``, without a (b, L, S) float64 graph (about 3x the network's
    time on text at V = 1,024 before). score (b, L, S), s_star (b, L, N), rows (b, L) bool."""
    x_rows = x[rows]
    with torch.no_grad():
        s = _off_rows(graph, x_rows, score[rows])
        diff = _off_rows(graph, x_rows, s_star[rows])
        p = phi.detach().to(torch.float64)
        diff = torch.addcmul(-diff, s, p)  # Phi s - s*
        value = (diff * diff).sum()
        grad = 2.0 * (diff * s).sum()
    if not torch.is_tensor(phi) or not phi.requires_grad:
        return value
    return value + grad * (phi.to(torch.float64) - p)


def _kl_sum(p: Tensor, q: Tensor, rows: Tensor) -> Tensor:
    """sum over rows of KL(p || q); p, q (b, L, S) step laws."""
    kl = (p * (torch.log(p.clamp_min(1e-300)) - torch.log(q.clamp_min(KL_FLOOR)))).sum(-1)
    return (kl * rows).sum()


def _full_score(graph: Graph, x: Tensor, s_real: Tensor) -> Tensor:
    """Real-token scores (b, L, N) -> a full score (b, L, S) with 1 at the current token (mask column 1)."""
    full = torch.ones(*x.shape, graph.num_states, dtype=torch.float64, device=x.device)
    full[..., : graph.num_tokens] = s_real.to(torch.float64)
    return full.scatter(-1, x[..., None], 1.0)


def time_ratio(noise: Noise, t_from: Tensor, t_to: Tensor) -> Tensor:
    """Absorbing graph: a masked row's score at time t is p(x0_i = y | unmasked tokens) / (e^sigma_bar(t) - 1), and
    the conditional does not depend on t; so the score read at t_from, times this ratio, is the score at t_to
    (``--match-times``: LSD+ compares Phi s(x, tau_k) with the teacher's score moved to tau_k)."""
    a = torch.expm1(noise.total(torch.as_tensor(t_from, dtype=torch.float64)))
    b = torch.expm1(noise.total(torch.as_tensor(t_to, dtype=torch.float64)))
    return a / b


@dataclass
class StepLosses:
    """This process's share of the step's mean losses (its sums divided by the global row count)."""

    phi: Tensor
    time: Tensor
    rows: int


# per-step statistics summed over every process before the losses are normalised:
# [compared rows, sum of the teacher's squared transition masses (LSD+ l2 scale), <s, s*>, |s|^2 (closed form)]
N_STATS = 4


def teacher_time_law(cfg: LossSpec, graph: Graph, noise: Noise, x: Tensor, s_star: Tensor, t_uni: Tensor,
                     k: int) -> Tensor:
    """LSD+: the teacher's transition over its uniform interval [t_k, t_k+1], read at the student's state
    (b, L, S) float64; it does not depend on the learned parameters."""
    return step_law_dense(cfg.base, graph, noise, x, _full_score(graph, x, s_star), t_uni[k], t_uni[k + 1])


@dataclass
class StepStats:
    """This process's share of the step's statistics (``values``, (N_STATS,) float64, summed over processes by
    the caller) and, for LSD+, the teacher's transition law that the time-loss reuses."""

    values: Tensor
    teacher_law: Tensor | None = None


def step_stats(cfg: LossSpec, graph: Graph, noise: Noise, x: Tensor, score: Tensor, x_star: Tensor,
               stored: Tensor, s_star: Tensor, t_uni: Tensor, k: int, last: bool) -> StepStats:
    """This process's share of the step-k statistics (no gradient)."""
    with torch.no_grad():
        rows = _compare_mask(graph, x, x_star, stored)
        out = StepStats(torch.zeros(N_STATS, dtype=torch.float64))
        out.values[0] = float(rows.sum())
        if not rows.any():
            return out
        if cfg.method == "lsd+" and not last:  # on the compared rows only: (1, n, S), see step_losses
            x_r = x[rows][None]
            out.teacher_law = teacher_time_law(cfg, graph, noise, x_r, s_star[rows][None], t_uni, k)
            out.values[1] = float((_off_diag(graph, x_r, out.teacher_law) ** 2).sum())
        if cfg.closed_form:
            s = _off_diag(graph, x, score.to(torch.float64)) * rows[..., None]
            s_star_r = _off_diag(graph, x, _full_score(graph, x, s_star)) * rows[..., None]
            out.values[2], out.values[3] = float((s * s_star_r).sum()), float((s * s).sum())
        return out


def step_losses(cfg: LossSpec, graph: Graph, noise: Noise, x: Tensor, score: Tensor, x_star: Tensor,
                stored: Tensor, s_star: Tensor, phi: Tensor, tau: Tensor, k: int, last: bool, scale: float,
                stats: Tensor, teacher_law: Tensor | None = None, t_teacher: Tensor | None = None) -> StepLosses:
    """Losses of one student step k, as this process's share of the global mean.

    x, x_star (b, L); score (b, L, S) student; s_star (b, L, N) teacher; phi the coefficient (0-d, grad);
    tau (M+1,) student grid (grad for LSD+); scale: typical squared norm of the teacher's score rows at this
    step (l2); stats: the step's statistics summed over all processes; teacher_law: LSD+'s teacher transition
    (``StepStats.teacher_law``)."""
    rows = _compare_mask(graph, x, x_star, stored)
    zero = torch.zeros((), dtype=torch.float64, device=score.device)
    n_rows = float(stats[0])
    if not rows.any() or n_rows == 0:
        return StepLosses(zero, zero, 0)
    if t_teacher is not None and graph.absorbing:
        s_star = s_star * time_ratio(noise, t_teacher[k], tau[k].detach())
    t_k, s_k = tau[k].detach(), tau[k + 1].detach()
    fast = cfg.loss == "l2" and cfg.phi_mode == "linear"  # the default
    if not fast:
        score = score.to(torch.float64)
    if fast:  # on the compared rows only, with the gradient in closed form
        loss_phi = _l2_linear(graph, x, score, s_star, rows, phi) / (n_rows * scale)
    elif cfg.loss == "l2":
        teacher_full = _full_score(graph, x, s_star)  # teacher's score, read at the student's current tokens
        loss_phi = _sq_sum(_off_diag(graph, x, scale_score(score, x, phi, cfg.phi_mode)),
                           _off_diag(graph, x, teacher_full), rows) / (n_rows * scale)
    else:
        teacher_full = _full_score(graph, x, s_star)
        p_teacher = step_law_dense(cfg.base, graph, noise, x, teacher_full, t_k, s_k, last=last)
        p_student = step_law_dense(cfg.base, graph, noise, x, score, t_k, s_k, phi, cfg.phi_mode, last=last)
        pair = (p_teacher, p_student) if cfg.loss == "kl" else (p_student, p_teacher)
        loss_phi = _kl_sum(*pair, rows) / n_rows
    loss_time = zero
    if cfg.method == "lsd+" and not last:
        # the step laws factorise over positions, so both are computed on the compared rows only, as one
        # sequence of n rows (1, n, S): teacher_law is ``step_stats``'s, built the same way
        p_teacher, x_r = teacher_law, x[rows][None]
        every = torch.ones_like(x_r, dtype=torch.bool)
        # the student's effective transition over [tau_k, tau_k+1]: gradients reach the grid only
        p_student = step_law_dense(cfg.base, graph, noise, x_r, score[rows][None].to(torch.float64), tau[k],
                                   tau[k + 1], phi.detach(), cfg.phi_mode)
        if cfg.loss == "l2":
            scale_t = max(float(stats[1]) / n_rows, 1e-300)
            loss_time = _sq_sum(_off_diag(graph, x_r, p_student), _off_diag(graph, x_r, p_teacher), every) / (
                n_rows * scale_t)
        else:
            pair = (p_teacher, p_student) if cfg.loss == "kl" else (p_student, p_teacher)
            loss_time = _kl_sum(*pair, every) / n_rows
    return StepLosses(loss_phi, loss_time, int(rows.sum()))
