"""First-hitting sampling of a masked (absorbing-graph) model: its continuous-time reverse process, simulated
exactly with one network call per revealed token.

On the absorbing graph a token, once unmasked, never changes, and in the forward process each position is masked
independently at a time of law P(masked at t) = m(t) = 1 - e^{-sigma_bar(t)}. Conditioned on being masked at
t_start, a position's *reveal time* tau (the time, run backwards, at which it unmasks) therefore has

    P(tau < s | masked at t_start) = m(s) / m(t_start),     s <= t_start,

independently of the other positions and of the data (log-linear noise: tau is uniform on (0, t_start)). The
reverse process has the same reveal times; what the model decides is the *value*: a token revealed at tau from
the state x just before tau takes v with probability p(x0_i = v | x_tau = x), which on the absorbing graph is the
masked row's real-token score normalised (``adaptive.clean_law``), read from the network at (x, tau).

So the sampler draws every reveal time up front, walks them in decreasing order and, at each, calls the network
at the current state and that token's own time and draws the token's value: L calls for L masks, no time grid
and no discretisation error. This is the "first-hitting sampler" of Zheng, Yuan, Yu, Wang, Zhu, Wu, "Masked
Diffusion Models are Secretly Time-Agnostic Masked Models and Exploit Inaccurate Categorical Sampling"
(arXiv 2409.02908, Sec. 4); the reveal-time law above is the forward masking law of Austin et al. / SEDD (Lou,
Meng, Ermon, arXiv 2310.16834) read backwards.

Which process it samples. The model's own reverse CTMC moves a masked position i to v at rate
sigma(t) s_theta(x, t)_{i,v}. Where the network's real-token scores of a masked row sum to the true total
1 / (e^{sigma_bar} - 1) - true of any clean-token network (MDLM, RADD, masked LMs: ``lsdd.models.clean``, whose
score is p_theta(v | x_t) / (e^{sigma_bar} - 1) by construction) and of the exact score - each position's jump
hazard is sigma / (e^{sigma_bar} - 1) = -d/dt log m(t), whatever the state, so the jump times are exactly the
reveal times above, the jumping position is uniform among the masked ones, and the value law is the normalised
score at (x, tau): first hitting samples the model's reverse process exactly, time-conditioned networks
included, and Euler steps converge to its law as their number grows. A score network whose masked rows carry
another total (SEDD's DiT with ``scale_by_sigma``: the total is learned, near but not at the true one) has
state-dependent hazards; first hitting keeps the network's value laws and replaces its reveal clock by the true
one (the calibrated process), so it differs from the Euler limit by that total's error (measured for
text-absorb in ``docs/methods.md``, "The teacher").

The end of the grid. Tokens whose reveal time falls below ``t_end`` (the samplers' eps; probability about
m(eps) / m(1) each) are revealed one at a time at ``t_end``, in the same decreasing order, each from the network
at the current state: with an exact score that is still an exact draw from p(x0 | x_{t_end}) (chain rule).
Nothing is ever revealed by two tokens at one call, so there are no ties to resolve.

Randomness. Each position i of trajectory j has its own clock E_ij ~ Exp(1) and value uniform U_ij
(``coupling.clock_noise``): tau solves m(tau) = m(t_start) e^{-E_ij} (e^{-E} is uniform), and the value is the
inverse CDF of the law at U_ij. These are the clocks of ``lsdd.sampling.coupling``: a coupled sampler given the
same E and U unmasks a token at the step where its cumulative hazard passes E_ij, i.e. (up to its discretisation)
in the student step that contains tau, with the value the same uniform picks from its own law.

Shapes: B rows, L length, S states, N real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..errors import ScoreContractError, UserError
from ..graphs import Graph
from ..noise import Noise
from .adaptive import clean_law, time_of_masked_fraction
from .draws import inverse_cdf
from .loop import CountedScore, ScoreFn


def masked_fraction(noise: Noise, t: Tensor) -> Tensor:
    """m(t) = 1 - e^{-sigma_bar(t)}, float64, the forward process's probability that a token is masked at t."""
    return -torch.expm1(-noise.total(torch.as_tensor(t, dtype=torch.float64)).to(torch.float64))


def reveal_times(noise: Noise, clocks: Tensor, t_start: float = 1.0) -> Tensor:
    """Reveal times (same shape, float64) of tokens masked at ``t_start`` from their Exp(1) ``clocks``:
    tau with m(tau) = m(t_start) e^{-clock}, i.e. P(tau < s) = m(s) / m(t_start) (module docstring).
    Closed form for log-linear noise, bisection otherwise (``adaptive.time_of_masked_fraction``)."""
    frac = masked_fraction(noise, torch.tensor(t_start, dtype=torch.float64)) * torch.exp(-clocks.to(torch.float64))
    return time_of_masked_fraction(noise, frac).clamp(max=t_start)


@dataclass
class FirstHittingOutput:
    """x: (B, L) the final state (no free masks); reveal: (B, L) float64 reveal time of each position that was
    revealed (the time drawn, before ``t_end`` clamps the network's time; -inf where nothing was revealed: given
    tokens); calls: batch network calls made (= the largest number of masks of a row); nfe: (B,) calls each row
    needed (its number of masks)."""

    x: Tensor
    reveal: Tensor
    calls: int
    nfe: Tensor


@torch.no_grad()
def first_hitting_loop(score_fn: ScoreFn | CountedScore, graph: Graph, noise: Noise, x: Tensor, clocks: Tensor,
                       values: Tensor, *, t_start: float = 1.0, t_end: float = 1e-5, fixed: Tensor | None = None,
                       on_call: Callable[[int, Tensor, Tensor, Tensor], None] | None = None) -> FirstHittingOutput:
    """Reveal every masked token of x (B, L), masked at ``t_start``, by first hitting (module docstring).

    clocks: (B, L) Exp(1) clocks, values: (B, L) uniforms in [0, 1) (``coupling.clock_noise``), both float64.
    Call j passes the rows that still have masks (rows with the same number of masks step together; from an
    all-mask start, every row at every call: L calls) to the network, each at its own next reveal time (at least
    ``t_end``), and draws that one token per row. ``fixed`` (B, L) or (L,) bool: positions held (never revealed;
    a held token is read by the network as given, which on the absorbing graph is exact conditioning).
    ``on_call(j, active (B,) bool, positions (n_active,), times (n_active,))`` watches, after the draw.
    """
    if not graph.absorbing:
        raise UserError(f"first-hitting sampling needs a masked (absorbing) model, not the {graph.name} graph")
    if clocks.shape != x.shape or values.shape != x.shape:
        raise ValueError(f"clocks {tuple(clocks.shape)} and values {tuple(values.shape)} must have x's shape "
                         f"{tuple(x.shape)}")
    if not 0.0 < t_end < t_start:
        raise ValueError(f"need 0 < t_end < t_start, got t_end {t_end!r}, t_start {t_start!r}")
    call = score_fn if isinstance(score_fn, CountedScore) else CountedScore(score_fn, graph, noise)
    dev = x.device
    masked = x == graph.mask_id
    if fixed is not None:
        masked = masked & ~fixed.to(dev).expand_as(masked)
    tau = torch.where(masked, reveal_times(noise, clocks, t_start).to(dev),
                      torch.full(x.shape, -torch.inf, dtype=torch.float64, device=dev))
    order = torch.argsort(tau, dim=-1, descending=True, stable=True)  # each row's reveals, latest time first
    counts = masked.sum(-1)
    u = values.to(device=dev, dtype=torch.float64)
    x = x.clone()
    total = int(counts.max()) if counts.numel() else 0
    for j in range(total):
        call.step = j
        active = counts > j
        rows = active.nonzero(as_tuple=True)[0]
        pos = order[rows, j]
        t = tau[rows, pos].clamp_min(t_end)
        score = call(x[rows], t)  # (n, L, S), each row at its own time
        row = score[torch.arange(rows.numel(), device=dev), pos]  # (n, S): the revealed token's score row
        if not bool(torch.isfinite(row[:, : graph.num_tokens]).all()):
            raise ScoreContractError(f"network call {j}: the score is NaN or infinite at a revealed token; the "
                                     "model's output is not usable there")
        x[rows, pos] = inverse_cdf(clean_law(graph, row), u[rows, pos])
        if on_call is not None:
            on_call(j, active, pos, t)
    return FirstHittingOutput(x, tau, total, counts)


def states_at(x0: Tensor, reveal: Tensor, times: Tensor, mask_id: int) -> list[Tensor]:
    """The first-hitting path's state at each of ``times`` (K,) from its output x0 (B, L) and reveal times (B, L):
    a revealed token (finite reveal time) is unmasked at t iff its reveal time is later than t (strictly), and then
    holds its final value; a given token (reveal time -inf) is always there. Returns K (B, L) int64 tensors (the
    state just before anything due at t is revealed)."""
    masks = torch.full_like(x0, mask_id)
    free = reveal > -torch.inf
    return [torch.where(free & (reveal <= float(t)), masks, x0) for t in times.tolist()]


__all__ = ["masked_fraction", "reveal_times", "FirstHittingOutput", "first_hitting_loop", "states_at"]
