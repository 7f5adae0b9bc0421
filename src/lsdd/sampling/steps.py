"""Step rules: the law of one reverse step t -> s as a factorised ``StepLaw`` (method.md §2).

Euler (tau-leaping) and Tweedie (analytic) steps with a per-step coefficient Phi, for the absorbing, the
uniform and the ordinal graph (whose rates Q(y -> x) depend on y: Euler weights the scores by them, Tweedie
goes through the graph's own staggered score and kernel, ``kernel_tweedie_law``). For the absorbing graph both are "rate x scores": a masked token unmasks with probability
min(1, c sum_y Phi s_y) - c = dt sigma(t) (Euler) or e^{d sigma_bar} - 1 (Tweedie) - and then takes a value
proportional to Phi s_y; the last step unmasks every remaining token. The uniform graph's Euler step has
the same form (c = dt sigma(t) / N); its Tweedie step moves by the clipped staggered score.

Phi modes: ``linear`` multiplies the off-diagonal scores (never the stay entry), which only rescales the
move probability; ``log`` multiplies log-scores (s -> s^Phi) and is computed in log space (logsumexp), so
large scores or Phi never overflow and tiny ones never underflow to an all-zero row. Phi may be a float,
a 0-d tensor or a (B, L) tensor (state-dependent coefficients). The entry of the score at the current
token must be 1 (``loop.CountedScore`` enforces it); the laws here read it on the uniform graph.

The two-call, second-order theta-RK-2 and theta-trapezoidal rules live in ``lsdd.sampling.theta`` and are registered in
``RULES`` here; ``ONE_CALL`` names the rules a learned sampler can be built on.

These laws equal the dense reference laws ``samplers.euler_probs`` / ``tweedie_probs`` (tests prove it on
small cases) but never build a float64 (B, L, S) tensor; they are differentiable in Phi and the times.
Shapes: B batch, L length, S states, N real tokens.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import Tensor

from .draws import StepLaw
from ..graphs import Graph
from ..noise import Noise
from .theta import ThetaRK2, ThetaTrapezoidal

PHI_MODES = ("linear", "log")
ScoreCall = Callable[[Tensor, Tensor], Tensor]  # (x (B, L), t 0-d) -> score (B, L, S); counted by the loop


def _coeff_rows(coeff: Tensor | float, x: Tensor) -> Tensor:
    """Phi as a float64 tensor broadcastable to (B, L): a scalar stays 0-d, a (B, L) tensor is kept."""
    c = torch.as_tensor(coeff, dtype=torch.float64, device=x.device)
    if c.ndim not in (0, 2) or (c.ndim == 2 and c.shape != x.shape):
        raise ValueError(f"a step coefficient must be a scalar or have the state's shape {tuple(x.shape)}, "
                         f"got {tuple(c.shape)}")
    return c


def _fallback(graph: Graph, device) -> Tensor:
    allowed = torch.ones(graph.num_states, dtype=torch.bool, device=device)
    if graph.absorbing:
        allowed[graph.mask_id] = False
    return allowed


def _targets(graph: Graph, score: Tensor) -> Tensor:
    """The score columns a token can move to: real tokens (absorbing: not the mask). (B, L, S) view."""
    return score[..., : graph.num_tokens]


def _against(phi: Tensor, score: Tensor) -> Tensor:
    """Phi (0-d or (B, L)) in the score's dtype, broadcastable against (B, L, S)."""
    phi = phi.to(score.dtype)
    return phi[..., None] if phi.ndim else phi


def _scaled_log(score: Tensor, phi: Tensor) -> Tensor:
    """Phi log s (B, L, S), -inf where s = 0, with finite gradients in Phi (no 0 * -inf)."""
    pos = score > 0
    log_s = torch.log(torch.where(pos, score, torch.ones_like(score)))
    return torch.where(pos, log_s * _against(phi, score), torch.full_like(log_s, float("-inf")))


def _log_weights(graph: Graph, x: Tensor, score: Tensor, phi: Tensor,
                 rates: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """log-mode scaled scores in log space: (weights (B, L, S) = exp(Phi log s + log rates - rowmax),
    log sum_y rates_y s_y^Phi over the movable columns other than the current token (B, L) float64).
    rates: Q(y -> x_i) (B, L, S) for graphs whose rates depend on y (None: a constant, left to the caller)."""
    if torch.is_grad_enabled() and (score.requires_grad or phi.requires_grad):
        lt = _scaled_log(score, phi).scatter(-1, x[..., None], float("-inf"))
        if rates is not None:
            lt = lt + torch.log(rates)
    else:  # sampling: one buffer, updated in place (log 0 = -inf and Phi > 0, so no masking is needed)
        lt = torch.log(score)
        lt.mul_(_against(phi, score))
        lt.scatter_(-1, x[..., None], float("-inf"))
        if rates is not None:
            lt.add_(torch.log(rates))
    if graph.absorbing:
        lt[..., graph.mask_id] = float("-inf")
    top = lt.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    if lt.requires_grad:
        weights = torch.exp(lt - top)
    else:
        weights = lt.sub_(top).exp_()
    lse = torch.log(weights.sum(-1)).to(torch.float64) + top[..., 0].to(torch.float64)
    return weights, lse


def rate_law(graph: Graph, x: Tensor, score: Tensor, c: Tensor, coeff: Tensor | float, mode: str,
             last: bool, rates: Tensor | None = None) -> StepLaw:
    """Law of a step whose off-diagonal masses are c * Q(y -> x) * scaled score (Euler; Tweedie on the
    absorbing graph). c: 0-d float64 tensor (rate x step; Q(y -> x) included when it is a constant).
    rates: Q(y -> x_i) (B, L, S), 0 at x_i, for graphs whose rates depend on y (the ordinal graph).
    (B, L) -> StepLaw."""
    phi = _coeff_rows(coeff, x)
    movable = graph.movable(x)
    if rates is not None:
        rates = rates.to(score.dtype)
    if mode == "linear":
        if rates is not None:
            weights = score * rates  # 0 at the current token
            sums = weights.sum(-1).to(torch.float64)
        elif graph.absorbing:
            weights = score
            sums = _targets(graph, score).sum(-1).to(torch.float64)
        else:
            weights = score
            sums = score.sum(-1).to(torch.float64) - 1.0  # the stay entry is 1 by contract
        log_mass = None
        mass = c * phi * sums.clamp_min(0.0)
    elif mode == "log":
        if (phi <= 0).any():
            raise ValueError(f"log-mode coefficients must be > 0, got min {float(phi.min())}")
        weights, lse = _log_weights(graph, x, score, phi, rates)
        sums = lse
        log_mass = torch.log(c) + lse
        mass = None
    else:
        raise ValueError(f"unknown phi mode {mode!r}; expected one of {PHI_MODES}")
    invalid = movable & (torch.isnan(sums) | (sums == float("inf")))  # -inf (all-zero scores, log mode) is valid
    if last and graph.absorbing:
        move = movable.to(torch.float64)
    elif mass is not None:
        move = mass.clamp(0.0, 1.0)
    else:
        move = torch.exp(log_mass.clamp_max(0.0))
    move = torch.where(movable & ~invalid, move, torch.zeros_like(move))
    return StepLaw(x, move, weights, _fallback(graph, x.device), score, invalid)


def uniform_tweedie_law(graph: Graph, x: Tensor, score: Tensor, dsigma: Tensor, coeff: Tensor | float,
                        mode: str) -> StepLaw:
    """Tweedie step on the uniform graph: p(y) ~ relu(staggered(Phi s))_y P_{dsigma}(x | y), clipped and
    renormalised (method.md §2). In log mode the scaled scores are shifted by their row maximum (all masses
    scale alike, so the normalised law is unchanged)."""
    n = graph.num_tokens
    phi = _coeff_rows(coeff, x)
    if mode == "linear":
        off = score * _against(phi, score)
        off = off.scatter(-1, x[..., None], 0.0)
        stay = torch.ones(x.shape, dtype=score.dtype, device=x.device)
    elif mode == "log":
        if (phi <= 0).any():
            raise ValueError(f"log-mode coefficients must be > 0, got min {float(phi.min())}")
        lt = _scaled_log(score, phi).scatter(-1, x[..., None], 0.0)  # the stay entry log 1 = 0 joins the shift
        shift = lt.amax(-1, keepdim=True).clamp_min(0.0)
        off = torch.exp(lt - shift).scatter(-1, x[..., None], 0.0)
        stay = torch.exp(-shift[..., 0])
    else:
        raise ValueError(f"unknown phi mode {mode!r}; expected one of {PHI_MODES}")
    e = torch.exp(dsigma).to(score.dtype)
    total = off.sum(-1) + stay  # sum_z s~_z, (B, L)
    stag = e * off + ((1.0 - e) / n) * total[..., None]
    stag = stag.scatter(-1, x[..., None], 0.0).clamp_min(0.0)  # off-diagonal staggered scores, clipped
    stag_x = (e * stay + (1.0 - e) / n * total).clamp_min(0.0)
    em = torch.exp(-dsigma).to(torch.float64)
    off_mass = stag.sum(-1).to(torch.float64) * (1.0 - em) / n
    stay_mass = stag_x.to(torch.float64) * (em + (1.0 - em) / n)
    tot = off_mass + stay_mass
    invalid = ~torch.isfinite(tot)
    move = torch.where((tot > 0) & ~invalid, off_mass / tot.clamp_min(torch.finfo(torch.float64).tiny),
                       torch.zeros_like(tot))
    return StepLaw(x, move, stag, _fallback(graph, x.device), score, invalid)


def kernel_tweedie_law(graph: Graph, x: Tensor, score: Tensor, dsigma: Tensor, coeff: Tensor | float,
                       mode: str) -> StepLaw:
    """Tweedie step on a graph with a general symmetric kernel (the ordinal graph), through the graph's own
    ``staggered_score`` and ``transp_transition``: p(y) ~ relu(staggered(Phi s))_y P_{dsigma}(x | y),
    renormalised (method.md §2). Builds float64 (B, L, S) kernels: meant for small state counts (grey levels).
    In log mode the scaled scores are shifted by their row maximum (the staggered score is linear in s, so
    the normalised law is unchanged)."""
    phi = _coeff_rows(coeff, x)
    if mode == "linear":
        scaled = (score * _against(phi, score)).scatter(-1, x[..., None], 1.0)
    elif mode == "log":
        if (phi <= 0).any():
            raise ValueError(f"log-mode coefficients must be > 0, got min {float(phi.min())}")
        lt = _scaled_log(score, phi).scatter(-1, x[..., None], 0.0)
        scaled = torch.exp(lt - lt.amax(-1, keepdim=True).clamp_min(0.0))
    else:
        raise ValueError(f"unknown phi mode {mode!r}; expected one of {PHI_MODES}")
    d = torch.as_tensor(dsigma, dtype=torch.float64, device=x.device).reshape(1).expand(x.shape[0])
    stag = graph.staggered_score(scaled, d).clamp_min(0.0)
    p = stag.to(torch.float64) * graph.transp_transition(x, d)  # (B, L, S) unnormalised law
    tot = p.sum(-1)
    off_mass = tot - p.gather(-1, x[..., None])[..., 0]
    invalid = ~torch.isfinite(tot)
    move = torch.where((tot > 0) & ~invalid, off_mass / tot.clamp_min(torch.finfo(torch.float64).tiny),
                       torch.zeros_like(tot)).clamp(0.0, 1.0)
    weights = p.to(score.dtype).scatter(-1, x[..., None], 0.0)
    return StepLaw(x, move, weights, _fallback(graph, x.device), score, invalid)


def dense_rates(graph: Graph) -> bool:
    """True for graphs whose rate Q(y -> x) depends on y (the ordinal graph): steps read ``graph.rate_into``."""
    return bool(getattr(graph, "dense_rates", False))


class StepRule(Protocol):
    """One reverse step t -> s. ``calls`` is the number of network calls the step makes (the first, at
    (x, t), is made by the loop and passed as ``score``; more go through ``call``, which the loop counts)."""

    name: str
    calls: int

    def __call__(self, graph: Graph, noise: Noise, x: Tensor, score: Tensor, t: Tensor, s: Tensor,
                 coeff: Tensor | float, mode: str, last: bool, call: ScoreCall) -> StepLaw: ...


class Euler:
    """Euler (tau-leaping): p(y) = (t - s) sigma(t) Q(y -> x_i) Phi s_y for y != x_i, the rest stays."""

    name, calls = "euler", 1

    def __call__(self, graph, noise, x, score, t, s, coeff=1.0, mode="linear", last=False, call=None):
        t64, s64 = torch.as_tensor(t, dtype=torch.float64), torch.as_tensor(s, dtype=torch.float64)
        c = (t64 - s64) * noise.rate(t64)
        rates = graph.rate_into(x) if dense_rates(graph) else None
        if not graph.absorbing and rates is None:
            c = c / graph.num_tokens
        return rate_law(graph, x, score, c.to(x.device), coeff, mode, last, rates)


class Tweedie:
    """Tweedie tau-leaping (analytic): p(y) = staggered(Phi s)_y P_{d sigma_bar}(x_i | y)."""

    name, calls = "tweedie", 1

    def __call__(self, graph, noise, x, score, t, s, coeff=1.0, mode="linear", last=False, call=None):
        t64, s64 = torch.as_tensor(t, dtype=torch.float64), torch.as_tensor(s, dtype=torch.float64)
        dsigma = (noise.total(t64) - noise.total(s64)).to(x.device)
        if graph.absorbing:
            return rate_law(graph, x, score, torch.expm1(dsigma), coeff, mode, last)
        if dense_rates(graph):
            return kernel_tweedie_law(graph, x, score, dsigma, coeff, mode)
        return uniform_tweedie_law(graph, x, score, dsigma, coeff, mode)


class WithFinal:
    """A one-call rule whose last step (the one landing on the grid's end) uses another one-call rule: ``final``
    "tweedie" on the uniform graph denoises - Tweedie's step from t to the end eps ~ 0 is, per token, the
    posterior p(x0_i | x_t) of the score (for the exact score exactly the true one; ``tests/test_steps.py``), so
    no noise token is left in by a step that moves only dt sigma(t) of them. The same one network call per step.
    On the absorbing graph every rule's last step already unmasks every remaining token from the same values, so
    Euler with a Tweedie last step draws what Euler draws."""

    calls = 1

    def __init__(self, body: str, final: str):
        for name in (body, final):
            if name not in ONE_CALL:
                raise ValueError(f"a final step builds on the one-call rules {list(ONE_CALL)}, not {name!r}")
        self.body, self.final = RULES[body], RULES[final]
        self.name = f"{body}+{final}-final"

    def __call__(self, graph, noise, x, score, t, s, coeff=1.0, mode="linear", last=False, call=None):
        return (self.final if last else self.body)(graph, noise, x, score, t, s, coeff, mode, last, call)


RULES: dict[str, StepRule] = {"euler": Euler(), "tweedie": Tweedie(), "theta-rk2": ThetaRK2(),
                               "theta-trapezoidal": ThetaTrapezoidal()}
ONE_CALL = ("euler", "tweedie")  # the rules a learned sampler can build on (one network call per step)
THETA_RULES = {"theta-rk2": ThetaRK2, "theta-trapezoidal": ThetaTrapezoidal}


def get_rule(name: str, theta: float | None = None) -> StepRule:
    """The step rule ``name``; ``theta`` sets a theta sampler's theta (None: the paper's default)."""
    if name not in RULES:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(RULES)}")
    if theta is not None:
        if name not in THETA_RULES:
            raise ValueError(f"theta applies to {sorted(THETA_RULES)}, not to {name!r}")
        return THETA_RULES[name](theta)
    return RULES[name]


__all__ = ["PHI_MODES", "ScoreCall", "StepRule", "Euler", "Tweedie", "WithFinal", "RULES", "ONE_CALL", "THETA_RULES", "get_rule", "rate_law",
           "uniform_tweedie_law", "kernel_tweedie_law", "dense_rates"]
