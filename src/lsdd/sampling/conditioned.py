"""State-conditioned steps (``--method lsd-c``): per step, a few parameters that let each masked token's unmask
probability depend on its own confidence, and a per-step value temperature. The confidence slope needs the
absorbing graph; the counted movers and the value temperature (of the jump targets: s_y ** beta_k over y != x_i)
apply to any graph's one-call step.

At step k a masked token i with real-token scores s_i (its clean-token probabilities up to a common factor) has

    confidence  c_i  = max_y s_iy / sum_y s_iy                          (its largest clean-token probability)
    coefficient Phi_i = phi_k * c_i ** a_k                              (linear Phi, per token)
    move_i       = min(1, dt sigma(t) Phi_i sum_y s_iy)                  (the base rule's rate law; forced last step)
    value law    ~ s_iy ** beta_k                                        (beta_k > 1 sharpens, < 1 flattens)

With a_k = 0 and beta_k = 1 this is exactly LSD's linear-Phi step (same move probabilities, same values).
With ``counted`` the tokens no longer move independently (``draws.CountedLaw``): each sequence moves a number
of tokens set by stochastic rounding of its expected number of movers *at a_k = 0* (sum_i min(1, dt sigma(t)
phi_k sum_y s_iy): phi_k alone sets how many), chosen without replacement with weights move_i (the slope only
sets which: a_k > 0 favours confident tokens) - fewer simultaneous unmaskings of dependent tokens than
independent coins give by chance. (With independent movers the slope changes both: on a 1,024-token vocabulary
confidences are small, c^a shrinks every rate and leaves most tokens to the forced last step.) It reads
only the score the step already has: no extra network call. ``ConditionedParams`` holds (phi, a, beta) per step
(phi and beta through their logarithms); ``ConditionedRule`` is the step rule and ``coeff_fn`` the loop's
state-dependent coefficient function that feeds it.

Shapes: B batch, L length, S states, N real tokens, M steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .draws import CHOICES, CountedLaw, StepLaw
from .orders import ORDERS, OrderedLaw, RunMemory
from ..graphs import Graph
from ..noise import Noise
from .steps import ONE_CALL, get_rule


@dataclass
class ConditionedCoeff:
    """What ``ConditionedParams.coeff_fn`` hands the rule at one step: per-token Phi (B, L) and the value
    inverse temperature beta (0-d)."""

    phi: Tensor
    beta: Tensor
    counted: bool = False
    phi_step: Tensor | None = None  # 0-d phi_k (counted: it alone sets the expected number of movers)
    choice: str = "weight"  # counted: which tokens move, by weight or spread along the sequence (draws.CHOICES)
    # or by a peer order (orders.ORDERS)
    memory: RunMemory | None = None  # what the run keeps between steps (the Halton rotation)


def confidence(graph: Graph, score: Tensor) -> Tensor:
    """Largest clean-token probability of each position, (B, L, S) -> (B, L) in the score's dtype (0 where the
    real-token scores are all zero)."""
    real = score[..., : graph.num_tokens]
    total = real.sum(-1)
    return torch.where(total > 0, real.amax(-1) / total.clamp_min(torch.finfo(real.dtype).tiny),
                       torch.zeros_like(total))


class ConditionedParams(nn.Module):
    """log_phi (M,), slope a (M,), log_beta (M,), float64; all zero = the base sampler (Phi = 1)."""

    def __init__(self, nfe: int, log_phi: Tensor | None = None, slope: Tensor | None = None,
                 log_beta: Tensor | None = None, counted: bool = False, choice: str = "weight"):
        super().__init__()
        if choice not in (*CHOICES, *ORDERS):
            raise ValueError(f"counted movers are chosen by one of {[*CHOICES, *ORDERS]}, not {choice!r}")
        if choice != "weight" and not counted:
            raise ValueError(f"choice {choice!r} needs counted movers")
        self.counted = bool(counted)
        self.choice = choice
        z = torch.zeros(nfe, dtype=torch.float64)
        self.log_phi = nn.Parameter(z.clone() if log_phi is None else log_phi.detach().to(torch.float64).clone())
        self.slope = nn.Parameter(z.clone() if slope is None else slope.detach().to(torch.float64).clone())
        self.log_beta = nn.Parameter(z.clone() if log_beta is None else log_beta.detach().to(torch.float64).clone())
        for p in (self.log_phi, self.slope, self.log_beta):
            if p.shape != (nfe,):
                raise ValueError(f"conditioned parameters need shape ({nfe},), got {tuple(p.shape)}")

    @property
    def nfe(self) -> int:
        return self.log_phi.numel()

    def flat(self) -> Tensor:
        """(3M,) = [log_phi, slope, log_beta] (for gradient-free optimisers)."""
        return torch.cat([self.log_phi, self.slope, self.log_beta]).detach().clone()

    @classmethod
    def from_flat(cls, v, nfe: int, counted: bool = False, choice: str = "weight") -> "ConditionedParams":
        v = torch.as_tensor(v, dtype=torch.float64)
        return cls(nfe, v[:nfe], v[nfe : 2 * nfe], v[2 * nfe :], counted=counted, choice=choice)

    @classmethod
    def from_count(cls, nfe: int, count: str, log_phi: Tensor | None = None, slope: Tensor | None = None,
                   log_beta: Tensor | None = None) -> "ConditionedParams":
        """From an artifact's ``count`` ("independent" | "rounded" | "spread" | a peer order of ``orders.ORDERS``;
        ``lsdd.sampling.sampler``: movers "independent" | "counted" | "spread" | the peer order)."""
        return cls(nfe, log_phi, slope, log_beta, counted=count != "independent",
                   choice=count if count in ("spread", *ORDERS) else "weight")

    def coeff_fn(self, graph: Graph):
        """The loop's coefficient function (k, x, score) -> ConditionedCoeff (differentiable in the parameters).
        A peer order gets a fresh ``RunMemory`` at every run's first step (k = 0), kept for its later steps."""
        run = {"memory": None}

        def fn(k: int, x: Tensor, score: Tensor) -> ConditionedCoeff:
            if self.choice in ORDERS:
                if k == 0 or run["memory"] is None:
                    run["memory"] = RunMemory()
                run["memory"].step = k
            step = torch.exp(self.log_phi[k])
            if bool(self.slope[k] == 0) and not self.slope.requires_grad:
                phi = step  # no confidence to read: skip the (B, L, S) pass over the score
            else:
                conf = confidence(graph, score.detach()).to(torch.float64)
                log_c = torch.log(torch.where(conf > 0, conf, torch.ones_like(conf)))  # 0 at full confidence
                phi = torch.exp(self.log_phi[k] + self.slope[k] * log_c)
            return ConditionedCoeff(phi, torch.exp(self.log_beta[k]), self.counted, step, self.choice, run["memory"])

        return fn


def _tempered(graph: Graph, score: Tensor, beta: Tensor) -> Tensor:
    """Value weights w_y ** beta over the real tokens (computed in log space, row maximum 1), 0 at the mask
    column and where w_y = 0, for a step law's weights w ((B, L, S): the score on the absorbing graph and in
    Euler's uniform step, the staggered score in Tweedie's). (B, L, S)."""
    real = score[..., : graph.num_tokens]
    pos = real > 0
    log_s = torch.log(torch.where(pos, real, torch.ones_like(real))).to(torch.float64) * beta
    log_s = torch.where(pos, log_s, torch.full_like(log_s, float("-inf")))
    top = log_s.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    w = torch.exp(log_s - top)
    pad = torch.zeros(*w.shape[:-1], graph.num_states - graph.num_tokens, dtype=w.dtype, device=w.device)
    return torch.cat([w, pad], -1)


class ConditionedRule:
    """One-call step rule on the absorbing graph: the base rule's rate law with per-token Phi, then values drawn
    from tempered scores. Accepts a ``ConditionedCoeff`` or a plain coefficient (then it is the base rule).
    On the other graphs the slope is 0 (one Phi per step): the base rule's per-token law with its jump targets
    tempered by beta, and with counted movers the number of tokens that change and which ones decided jointly
    (``draws.CountedLaw``). ``final``: the one-call rule of the last step (``steps.WithFinal``; None: the base
    rule)."""

    calls = 1

    def __init__(self, base: str = "euler", final: str | None = None):
        if base not in ONE_CALL or (final is not None and final not in ONE_CALL):
            raise ValueError(f"a conditioned step builds on one of {list(ONE_CALL)}, not {base!r} (final {final!r})")
        self.base, self.final = base, final
        self.name = f"{base}-c" + (f"+{final}-final" if final else "")

    def __call__(self, graph: Graph, noise: Noise, x: Tensor, score: Tensor, t: Tensor, s: Tensor,
                 coeff=1.0, mode: str = "linear", last: bool = False, call=None) -> StepLaw:
        if not graph.absorbing and isinstance(coeff, ConditionedCoeff) and coeff.phi.dim() > 0:
            raise ValueError("confidence-conditioned Phi (lsd-c's slope) is defined for the absorbing graph only; on "
                             f"the {graph.name} graph a conditioned step counts its movers and tempers its jump "
                             "targets (slope 0)")
        if mode != "linear":
            raise ValueError(f"state-conditioned steps use linear Phi, got phi mode {mode!r}")
        rule = get_rule(self.final if last and self.final else self.base)
        if not isinstance(coeff, ConditionedCoeff):
            return rule(graph, noise, x, score, t, s, coeff, mode, last, call)
        law = rule(graph, noise, x, score, t, s, coeff.phi, mode, last, call)
        if coeff.beta.requires_grad or float(coeff.beta) != 1.0:
            # beta = 1 keeps the base rule's value weights: on the absorbing graph they are proportional to the
            # scores over the real tokens too, and no float64 (B, L, S) copy is made (real vocabularies: 50k)
            law.weights = _tempered(graph, law.weights, coeff.beta)  # the rule's own value weights (absorbing: score)
        if coeff.counted:
            step = coeff.phi_step if coeff.phi_step is not None else coeff.phi
            how_many = law.move if step is coeff.phi else \
                rule(graph, noise, x, score, t, s, step, mode, last, call).move  # the count at a_k = 0
            share = torch.where(law.move > 0, how_many, torch.zeros_like(how_many))  # each token's part of the count
            parts = dict(x=law.x, move=law.move, weights=law.weights, fallback=law.fallback, score=law.score,
                         invalid=law.invalid, expected=share.sum(-1), choice=coeff.choice, share=share)
            if coeff.choice in ORDERS:
                if not graph.absorbing:
                    raise ValueError(f"the {coeff.choice} mover order reveals masked tokens: absorbing graph only, "
                                     f"not {graph.name}")
                return OrderedLaw(**parts, memory=coeff.memory)
            return CountedLaw(**parts)
        return law


__all__ = ["ConditionedCoeff", "ConditionedParams", "ConditionedRule", "confidence"]
