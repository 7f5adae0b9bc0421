"""Samplers for the reverse CTMC (method.md §2).

A step t -> s is split in two: ``*_probs`` computes the per-token categorical law of the next state
(differentiable in the score, the coefficient and the times), ``sample_categorical`` draws from it in float64.
``sample`` runs M steps on any strictly decreasing grid and makes exactly M score calls (NFE = M): the last
step lands on the grid's end and, on the absorbing graph, forces every remaining mask to a real token.

Shapes: B batch, L length, S graph states. ``score_fn(x (B, L) int64, sigma_bar (B,)) -> score (B, L, S)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .graphs import Graph
from .noise import Noise
from .schedules import check_times

ScoreFn = Callable[[Tensor, Tensor], Tensor]
PhiMode = Literal["linear", "log"]
PHI_MODES = ("linear", "log")


def scale_score(score: Tensor, x: Tensor, coeff: Tensor | float, mode: str = "linear") -> Tensor:
    """Apply a step coefficient Phi to the off-diagonal scores.

    ``linear``: s_y -> Phi s_y (paper eq. 5); ``log``: log s_y -> Phi log s_y, i.e. s_y -> s_y^Phi.
    The entry at the current token (the "stay" entry) is left at its value, otherwise Phi would cancel
    in Tweedie. score (B, L, S), x (B, L), coeff a float or a 0-d tensor.
    """
    if mode == "linear":
        scaled = score * coeff
    elif mode == "log":
        scaled = torch.pow(score, coeff)
    else:
        raise ValueError(f"unknown phi mode {mode!r}; expected one of {PHI_MODES}")
    own = score.gather(-1, x[..., None])
    return scaled.scatter(-1, x[..., None], own)


def _normalise(x: Tensor, p: Tensor) -> Tensor:
    """Clip negatives to 0 and renormalise each row of p (B, L, S); an all-zero row stays at x (B, L)."""
    p = p.clamp_min(0.0)
    total = p.sum(-1, keepdim=True)
    stay = F.one_hot(x, p.shape[-1]).to(p.dtype)
    return torch.where(total > 0, p / total.clamp_min(torch.finfo(p.dtype).tiny), stay)


def _finish(graph: Graph, x: Tensor, p: Tensor, score: Tensor, last: bool) -> Tensor:
    """Renormalise; on the last step of an absorbing graph, masked rows take the law of their (scaled)
    real-token scores: the mask column is dropped, so no mask survives (uniform if all scores are 0)."""
    if last and graph.absorbing:
        real = score.clamp_min(0.0)
        real = torch.cat([real[..., : graph.mask_id], torch.zeros_like(real[..., :1])], dim=-1)
        total = real.sum(-1, keepdim=True)
        uniform = torch.ones_like(real).index_fill(-1, torch.tensor([graph.mask_id], device=real.device), 0.0)
        real = torch.where(total > 0, real, uniform)
        p = torch.where((x == graph.mask_id)[..., None], real, p)
    return _normalise(x, p)


def euler_probs(graph: Graph, noise: Noise, x: Tensor, score: Tensor, t: Tensor, s: Tensor,
                coeff: Tensor | float = 1.0, mode: str = "linear", last: bool = False) -> Tensor:
    """Euler (tau-leaping) step: p(y) = (t - s) sigma(t) Q(y -> x_i) Phi s_y for y != x_i, rest stays.

    x (B, L) int64, score (B, L, S) >= 0, t and s 0-d tensors (t > s) -> (B, L, S) float64 rows summing to 1.
    """
    score = scale_score(score.to(torch.float64), x, coeff, mode)
    dt_rate = (t - s).to(torch.float64) * noise.rate(t.to(torch.float64))
    p = F.one_hot(x, graph.num_states).to(torch.float64) + dt_rate * graph.reverse_rate(x, score)
    return _finish(graph, x, p, score, last)


def tweedie_probs(graph: Graph, noise: Noise, x: Tensor, score: Tensor, t: Tensor, s: Tensor,
                  coeff: Tensor | float = 1.0, mode: str = "linear", last: bool = False) -> Tensor:
    """Tweedie tau-leaping (analytic) step: p(y) = staggered(Phi s)_y P_{dsigma}(x_i | y),
    dsigma = sigma_bar(t) - sigma_bar(s). Same shapes as ``euler_probs``."""
    score = scale_score(score.to(torch.float64), x, coeff, mode)
    t64, s64 = t.to(torch.float64), s.to(torch.float64)
    dsigma = (noise.total(t64) - noise.total(s64)).reshape(1).expand(x.shape[0])
    p = graph.staggered_score(score, dsigma) * graph.transp_transition(x, dsigma)
    return _finish(graph, x, p, score, last)


class StepProbs(Protocol):
    def __call__(self, graph: Graph, noise: Noise, x: Tensor, score: Tensor, t: Tensor, s: Tensor,
                 coeff: Tensor | float = 1.0, mode: str = "linear", last: bool = False) -> Tensor: ...


SAMPLERS: dict[str, StepProbs] = {"euler": euler_probs, "tweedie": tweedie_probs}


def get_step_probs(name: str) -> StepProbs:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def sample_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one index per row of ``probs`` (..., S) by inverse CDF in float64 (no Gumbel truncation).

    Rows need not be normalised; zero-probability entries are never drawn. Returns (...) int64.
    """
    cdf = probs.to(torch.float64).cumsum(-1)
    u = torch.rand(probs.shape[:-1], generator=generator, dtype=torch.float64, device=probs.device)
    v = (u * cdf[..., -1])[..., None].contiguous()
    idx = torch.searchsorted(cdf.contiguous(), v, right=True)[..., 0]
    return idx.clamp_max(probs.shape[-1] - 1)


@dataclass
class SampleOutput:
    """x: (B, L) int64 final tokens; nfe: score-network calls made (counted, not assumed)."""

    x: Tensor
    nfe: int


@torch.no_grad()
def sample(score_fn: ScoreFn, graph: Graph, noise: Noise, times: Tensor, shape: tuple[int, int], *,
           method: str = "euler", coeffs: Tensor | None = None, phi_mode: str = "linear",
           generator: torch.Generator | None = None, x_init: Tensor | None = None,
           device: torch.device | str = "cpu",
           callback: Callable[[dict], None] | None = None) -> SampleOutput:
    """Run the reverse process on ``times`` (M + 1,), strictly decreasing from 1: M steps, M score calls.

    coeffs: (M,) per-step Phi (None = all ones, the base sampler). x_init: (B, L) start state
    (default: a draw from the graph's limit). callback gets {"k", "t", "s", "x", "score", "probs"} per step.
    """
    check_times(times)
    step_probs = get_step_probs(method)
    n_steps = times.numel() - 1
    if coeffs is not None and coeffs.shape != (n_steps,):
        raise ValueError(f"coeffs must have shape ({n_steps},) for a {n_steps}-step grid, got {tuple(coeffs.shape)}")
    batch, length = shape
    x = graph.sample_limit(batch, length, generator=generator, device=device) if x_init is None else x_init
    times = times.to(torch.float64).to(device)
    nfe = 0
    for k in range(n_steps):
        t, s = times[k], times[k + 1]
        sigma = noise.total(t).to(torch.float32).expand(batch)
        score = score_fn(x, sigma)
        nfe += 1
        coeff = 1.0 if coeffs is None else coeffs[k]
        probs = step_probs(graph, noise, x, score, t, s, coeff, phi_mode, last=(k == n_steps - 1))
        if callback is not None:
            callback({"k": k, "t": t, "s": s, "x": x, "score": score, "probs": probs})
        x = sample_categorical(probs, generator)
    return SampleOutput(x=x, nfe=nfe)


def sample_batched(score_fn: ScoreFn, graph: Graph, noise: Noise, times: Tensor, num: int, length: int, *,
                   batch_size: int = 64, **kwargs) -> SampleOutput:
    """``sample`` for ``num`` sequences in batches of ``batch_size`` drawn from one generator (pass it in
    ``kwargs`` with the other ``sample`` options). Returns x (num, L) on the CPU and the calls per sample."""
    xs, nfe = [], 0
    for b0 in range(0, num, batch_size):
        out = sample(score_fn, graph, noise, times, (min(batch_size, num - b0), length), **kwargs)
        xs.append(out.x.cpu())
        nfe = out.nfe  # every batch makes the same number of calls
    return SampleOutput(x=torch.cat(xs), nfe=nfe)
