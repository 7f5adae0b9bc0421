"""Two-call, second-order step rules: theta-RK-2 and theta-trapezoidal (Ren et al. 2025, "Fast Solvers for
Discrete Diffusion Models: Theory and Applications of High-Order Algorithms", arXiv 2502.00234), for the
absorbing and the uniform graph, as factorised laws for the one reverse loop.

A step t -> s (h = t - s) evaluates the reverse rates twice: at (x, t), which the loop passes in, and after a
first tau-leaping sub-step of length theta h to a random x_mid, at (x_mid, rho), rho = t - theta h, through the
loop's counted ``call``. So a step makes two network calls and 8 NFE are 4 steps. Per token i and target value
y the rate is R_t(x)_iy = sigma(t) Q(y -> x_i) Phi s_iy, the rate Euler uses.

- theta-RK-2 (the paper's Algorithm 1): from x, one sub-step of length h with the rates
  [(1 - 1/(2 theta)) R_t(x) + 1/(2 theta) R_rho(x_mid)]_+ .
- theta-trapezoidal (its Algorithm 2): from x_mid, one sub-step of length (1 - theta) h with the rates
  [alpha_1 R_rho(x_mid) - alpha_2 R_t(x)]_+ , alpha_1 = 1 / (2 theta (1 - theta)),
  alpha_2 = ((1 - theta)^2 + theta^2) / (2 theta (1 - theta)); alpha_1 - alpha_2 = 1.

How the paper's Poisson-jump rules become our per-token laws [choices, checked on exact toys in the tests]:
- A jump is "token i moves to value y". Its rate at another state is the rate of token i moving to y from
  there: 0 when it cannot (an unmasked token on the absorbing graph, or y its current value there). A rate is
  never evaluated for staying (no diagonal entries).
- Negative combined rates - always possible in the trapezoidal's extrapolation -alpha_2 R_t(x), and in RK-2's
  for theta < 1/2 - are clipped at 0, as the paper does. The clip costs accuracy only where the rate drops by
  more than alpha_2/alpha_1 within a step (2x at theta = 1/2), e.g. a value that the other tokens' moves made
  impossible.
- A sub-step with frozen rates r moves a token with probability 1 - exp(-dt sum_y r_y) (trapezoidal: the
  Poisson clock of the frozen rate; with it the two sub-steps compose to second order) or min(1, dt sum_y r_y)
  (RK-2's final sub-step from x: its midpoint rate already holds, averaged over x_mid, the chance of having
  moved, so a second exponential would count it twice). The value is drawn proportional to r_y.
- Last step on the absorbing graph: the final sub-step forces every remaining mask to a real token, with values
  proportional to the combined rates (where all of a token's are clipped to 0: to that sub-step's fresh rates).

Measured order (exact toys, ``benchmarks/exact_toy_order.md``): theta-trapezoidal is second order while its clip
does not bind (first order with strong token dependence); theta-RK-2 is first order here: its final jump is drawn
from x for every token at once, so two tokens moving in one step are drawn independently (an O(h^2) error per step
in their joint law), and a single uniform-graph token's "moved to y, then left y" would need a negative rate.

Shapes: B batch, L length, S states, N real tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .draws import StepLaw, TwoStageLaw
from ..errors import ScoreContractError
from ..graphs import Graph
from ..noise import Noise

DEFAULT_THETA = 0.5


def _coeff(coeff: Tensor | float, x: Tensor, mode: str) -> Tensor:
    if mode != "linear":
        raise ValueError(f"theta samplers take linear Phi only, got phi mode {mode!r}")
    c = torch.as_tensor(coeff, dtype=torch.float64, device=x.device)
    if c.ndim not in (0, 2) or (c.ndim == 2 and c.shape != x.shape):
        raise ValueError(f"a step coefficient must be a scalar or have the state's shape {tuple(x.shape)}, "
                         f"got {tuple(c.shape)}")
    return c


def jump_rates(graph: Graph, x: Tensor, score: Tensor, scale: Tensor) -> Tensor:
    """R (B, L, S): scale * Q(y -> x_i) * s_iy for every value y token i can move to, 0 elsewhere.
    scale: sigma(t) Phi, 0-d or (B, L) float64."""
    per_y = getattr(graph, "dense_rates", False)  # the ordinal graph: Q(y -> x_i) depends on y
    q = scale if graph.absorbing or per_y else scale / graph.num_tokens
    q = q.to(score.dtype)
    r = score * (q[..., None] if q.ndim else q)
    if per_y:
        r = r * graph.rate_into(x).to(score.dtype)
    r = r.scatter(-1, x[..., None], 0.0)
    if graph.absorbing:
        r[..., graph.mask_id] = 0.0
        r = r * graph.movable(x)[..., None].to(r.dtype)
    return r


def _law(graph: Graph, x: Tensor, rates: Tensor, dt: Tensor, clock: str, forced: bool,
         score: Tensor | None, fallback: Tensor | None = None) -> StepLaw:
    """A sub-step of length dt with frozen rates (B, L, S) >= 0 from x (B, L). clock: "exp" or "linear" move
    probability; forced: every movable token moves (absorbing last step), with values from ``fallback``
    (B, L, S) where its row of ``rates`` is all zero."""
    total = rates.sum(-1).to(torch.float64)
    movable = graph.movable(x)
    invalid = movable & ~torch.isfinite(total)
    if forced:
        move = movable.to(torch.float64)
        if fallback is not None:
            rates = torch.where((total > 0)[..., None], rates, fallback)
    elif clock == "exp":
        move = -torch.expm1(-dt * total.clamp_min(0.0))
    else:
        move = (dt * total).clamp(0.0, 1.0)
    move = torch.where(movable & ~invalid, move, torch.zeros_like(move))
    allowed = torch.ones(graph.num_states, dtype=torch.bool, device=x.device)
    if graph.absorbing:
        allowed[graph.mask_id] = False
    return StepLaw(x, move, rates, allowed, score, invalid)


def _checked(law: StepLaw, call, rho: Tensor) -> StepLaw:
    if law.invalid is not None and bool(law.invalid.any()):
        raise ScoreContractError(f"step {getattr(call, 'step', '?')} (second call, t={float(rho):.6g}): the score is "
                                 f"NaN or infinite in {int(law.invalid.sum())} of {law.x.numel()} token rows; the "
                                 "model's output is not usable there")
    return law


def _times(noise: Noise, t, s, theta: float, device) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(h, rho, sigma(t), sigma(rho)) as float64 on ``device``, and rho for the second call."""
    t64, s64 = torch.as_tensor(t, dtype=torch.float64), torch.as_tensor(s, dtype=torch.float64)
    h = t64 - s64
    rho = t64 - theta * h
    return h.to(device), rho, noise.rate(t64).to(device), noise.rate(rho).to(device), t64


class ThetaTrapezoidal:
    """theta-trapezoidal: a tau-leaping sub-step to x_mid at t - theta h, then from x_mid the extrapolated
    rates [alpha_1 R(x_mid, rho) - alpha_2 R(x, t)]_+ for the rest of the step. 2 network calls per step."""

    calls = 2

    def __init__(self, theta: float = DEFAULT_THETA):
        if not 0.0 < float(theta) < 1.0:
            raise ValueError(f"theta-trapezoidal needs 0 < theta < 1, got {theta!r}")
        self.theta = float(theta)
        self.name = "theta-trapezoidal"

    def __call__(self, graph, noise, x, score, t, s, coeff=1.0, mode="linear", last=False, call=None):
        if call is None:
            raise ValueError("a two-call step needs the loop's score call")
        th = self.theta
        phi = _coeff(coeff, x, mode)
        h, rho, sig_t, sig_rho, _ = _times(noise, t, s, th, x.device)
        r1 = jump_rates(graph, x, score, sig_t * phi)
        first = _law(graph, x, r1, th * h, "exp", False, score)
        a1 = 1.0 / (2.0 * th * (1.0 - th))
        a2 = ((1.0 - th) ** 2 + th**2) / (2.0 * th * (1.0 - th))

        def finish(mid: Tensor, rows: Tensor | None) -> StepLaw:
            s2 = call(mid, rho)
            ph = phi if rows is None or phi.ndim == 0 else phi[rows]
            r2 = jump_rates(graph, mid, s2, sig_rho * ph)
            x_r, r1_r = (x, r1) if rows is None else (x[rows], r1[rows])
            # the jump (i, x_i -> y) exists at x_mid only where token i has not moved
            r1_r = r1_r * (mid == x_r)[..., None].to(r1_r.dtype)
            comb = (a1 * r2 - a2 * r1_r).clamp_min(0.0)
            comb = comb.scatter(-1, mid[..., None], 0.0)
            law = _law(graph, mid, comb, (1.0 - th) * h, "exp", last and graph.absorbing, s2, fallback=r2)
            return _checked(law, call, rho)

        return TwoStageLaw(first, finish)


class ThetaRK2:
    """theta-RK-2: a tau-leaping sub-step to x_mid at t - theta h, then from x one step with the rates
    [(1 - 1/(2 theta)) R(x, t) + 1/(2 theta) R(x_mid, rho)]_+ (theta = 1/2: the midpoint rule). 2 calls."""

    calls = 2

    def __init__(self, theta: float = DEFAULT_THETA):
        if not 0.0 < float(theta) <= 1.0:
            raise ValueError(f"theta-RK-2 needs 0 < theta <= 1, got {theta!r}")
        self.theta = float(theta)
        self.name = "theta-rk2"

    def __call__(self, graph, noise, x, score, t, s, coeff=1.0, mode="linear", last=False, call=None):
        if call is None:
            raise ValueError("a two-call step needs the loop's score call")
        th = self.theta
        phi = _coeff(coeff, x, mode)
        h, rho, sig_t, sig_rho, _ = _times(noise, t, s, th, x.device)
        r1 = jump_rates(graph, x, score, sig_t * phi)
        first = _law(graph, x, r1, th * h, "linear", False, score)
        w1, w2 = 1.0 - 1.0 / (2.0 * th), 1.0 / (2.0 * th)

        def finish(mid: Tensor, rows: Tensor | None) -> StepLaw:
            s2 = call(mid, rho)
            ph = phi if rows is None or phi.ndim == 0 else phi[rows]
            x_r, r1_r = (x, r1) if rows is None else (x[rows], r1[rows])
            # the jump (i, x_i -> y) exists at x_mid only where token i has not moved
            r2 = jump_rates(graph, mid, s2, sig_rho * ph) * (mid == x_r)[..., None].to(s2.dtype)
            comb = (w1 * r1_r + w2 * r2).clamp_min(0.0) if w1 else r2
            comb = comb.scatter(-1, x_r[..., None], 0.0)
            law = _law(graph, x_r, comb, h, "linear", last and graph.absorbing, s2, fallback=r1_r)
            return _checked(law, call, rho)

        return TwoStageLaw(first, finish)


__all__ = ["DEFAULT_THETA", "ThetaRK2", "ThetaTrapezoidal", "jump_rates"]
