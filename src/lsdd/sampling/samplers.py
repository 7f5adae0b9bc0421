"""Sampling with Euler and Tweedie tau-leaping (method.md §2), and the dense reference step laws.

``sample`` runs M steps of the one reverse-time loop (``lsdd.sampling.loop``) on any strictly decreasing grid and
makes exactly M score calls (NFE = M, counted by the loop): the last step lands on the grid's end and, on the
absorbing graph, forces every remaining mask to a real token. Draws are float64 and two-stage (``lsdd.sampling.draws``).

``euler_probs`` / ``tweedie_probs`` are the step laws written out densely, formula by formula, in float64:
the reference that the factorised laws of ``lsdd.sampling.steps`` are tested against on small cases. They build a
float64 (B, L, S) tensor; use them only on small problems.

Shapes: B batch, L length, S graph states. ``score_fn(x (B, L) int64, sigma_bar (B,)) -> score (B, L, S)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .draws import Generators, RowStreams, check_generator, make_generator, sample_categorical
from ..errors import UserError
from ..graphs import Graph
from .loop import Coeffs, CountedScore, ScoreFn, StepInfo, count_blocks, free_token, reverse_loop
from ..noise import Noise
from .steps import PHI_MODES, RULES, get_rule

SAMPLERS = RULES  # name -> step rule


def scale_score(score: Tensor, x: Tensor, coeff: Tensor | float, mode: str = "linear") -> Tensor:
    """Reference: apply Phi to the off-diagonal scores (``linear``: Phi s_y; ``log``: s_y^Phi); the entry at the
    current token keeps its value. score (B, L, S), x (B, L), coeff a float or a 0-d tensor."""
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
    """Reference Euler (tau-leaping) step: p(y) = (t - s) sigma(t) Q(y -> x_i) Phi s_y for y != x_i, rest stays.

    x (B, L) int64, score (B, L, S) >= 0, t and s 0-d tensors (t > s) -> (B, L, S) float64 rows summing to 1.
    """
    score = scale_score(score.to(torch.float64), x, coeff, mode)
    dt_rate = (t - s).to(torch.float64) * noise.rate(t.to(torch.float64))
    p = F.one_hot(x, graph.num_states).to(torch.float64) + dt_rate * graph.reverse_rate(x, score)
    return _finish(graph, x, p, score, last)


def tweedie_probs(graph: Graph, noise: Noise, x: Tensor, score: Tensor, t: Tensor, s: Tensor,
                  coeff: Tensor | float = 1.0, mode: str = "linear", last: bool = False) -> Tensor:
    """Reference Tweedie tau-leaping (analytic) step: p(y) = staggered(Phi s)_y P_{dsigma}(x_i | y),
    dsigma = sigma_bar(t) - sigma_bar(s). Same shapes as ``euler_probs``."""
    score = scale_score(score.to(torch.float64), x, coeff, mode)
    t64, s64 = t.to(torch.float64), s.to(torch.float64)
    dsigma = (noise.total(t64) - noise.total(s64)).reshape(1).expand(x.shape[0])
    p = graph.staggered_score(score, dsigma) * graph.transp_transition(x, dsigma)
    return _finish(graph, x, p, score, last)


class StepProbs(Protocol):
    def __call__(self, graph: Graph, noise: Noise, x: Tensor, score: Tensor, t: Tensor, s: Tensor,
                 coeff: Tensor | float = 1.0, mode: str = "linear", last: bool = False) -> Tensor: ...


REFERENCE_PROBS: dict[str, StepProbs] = {"euler": euler_probs, "tweedie": tweedie_probs}


def step_law_dense(method: str, graph: Graph, noise: Noise, x: Tensor, score: Tensor, t: Tensor, s: Tensor,
                   coeff: Tensor | float = 1.0, mode: str = "linear", last: bool = False) -> Tensor:
    """The factorised law of one step (what the samplers draw from), as a dense (B, L, S) float64 tensor,
    differentiable in ``coeff`` and the times. Small problems only (losses, exact propagation)."""
    score = score.scatter(-1, x[..., None], 1.0)
    return get_rule(method)(graph, noise, x, score, t, s, coeff, mode, last, None).dense()


@dataclass
class SampleOutput:
    """x: (B, L) int64 final tokens; nfe: score-network calls made (counted, not assumed)."""

    x: Tensor
    nfe: int


@torch.no_grad()
def sample(score_fn: ScoreFn, graph: Graph, noise: Noise, times: Tensor, shape: tuple[int, int], *,
           method: str = "euler", coeffs: Coeffs = None, phi_mode: str = "linear",
           generator: Generators = None, x_init: Tensor | None = None, device: torch.device | str = "cpu",
           callback: Callable[[StepInfo], None] | None = None, given: Tensor | None = None,
           block: int | None = None, blocks: int | None = None) -> SampleOutput:
    """Run the reverse process on ``times`` (M + 1,), strictly decreasing from 1: M steps, M score calls (2M for
    the two-call theta rules; ``method`` is a name of ``SAMPLERS`` or a step-rule object, e.g. ``ThetaRK2(0.3)``).

    coeffs: (M,) per-step Phi (None = all ones, the base sampler) or a function (k, x, score) -> Phi_k.
    generator: a torch.Generator on ``device`` (or ``draws.RowStreams``). x_init: (B, L) start state
    (default: a draw from the graph's limit). callback gets the loop's ``StepInfo`` (with the law) per step.
    given: (B, L) int64 tokens held fixed (conditional generation), ``loop.free_token(graph)`` at the free
    positions: the start is the given token where there is one and the limit draw elsewhere. block: the grid
    runs once per semi-autoregressive block of that many free positions (``loop.reverse_loop``): NFE = blocks x M;
    ``blocks`` the number of blocks (default: as many as the rows' free positions need).
    """
    batch, length = shape
    device = torch.device(device)
    for gen in generator.generators if isinstance(generator, RowStreams) else [generator]:
        check_generator(gen, device)  # a CPU generator cannot drive CUDA draws: say so before any work
    if x_init is None and isinstance(generator, RowStreams):  # each chunk's start from its own stream
        x = torch.cat([graph.sample_limit(n, length, generator=g, device=device)
                       for g, n in zip(generator.generators, generator.sizes)])
    elif x_init is None:
        x = graph.sample_limit(batch, length, generator=generator, device=device)
    else:
        x = x_init.to(device)
    fixed = None
    if given is not None:
        given = given.to(device)
        if given.shape != x.shape:
            raise ValueError(f"given tokens must have the samples' shape {tuple(x.shape)}, got {tuple(given.shape)}")
        fixed = given != free_token(graph)
        x = torch.where(fixed, given, x)
    out = reverse_loop(score_fn, graph, noise, times.to(torch.float64), x, rule=method, coeffs=coeffs,
                       phi_mode=phi_mode, generator=generator, on_step=callback, fixed=fixed, block=block,
                       blocks=blocks)
    return SampleOutput(x=out.x, nfe=out.nfe)


def tempered_score(score_fn: ScoreFn, temperature: float) -> ScoreFn:
    """A score function whose jump *targets* are sharpened (T < 1) or flattened (T > 1) like a plain softmax
    temperature, while each token's total jump rate stays the model's.

    For every position, the scores s(x)_y of the targets y != x_current are replaced by
    S * s_y^(1/T) / sum_y' s_y'^(1/T), with S = sum_y s_y (computed in log space); the current-token entry is
    left alone. On the absorbing graph this keeps each mask's unmasking probability per step and changes only
    the value it becomes; T = 1 is the identity. It is the control that tells a learned sampler from mere
    sharpening: tune T to the learned sampler's entropy and compare quality. No extra network call.
    """
    if not temperature > 0:
        raise UserError(f"temperature must be > 0, got {temperature!r}")
    if temperature == 1.0:
        return score_fn
    if isinstance(score_fn, CountedScore):  # temper inside the count, which feeds the function noise levels
        return score_fn.wrap(lambda f: tempered_score(f, temperature))
    inv = 1.0 / float(temperature)

    def score(x: Tensor, sigma: Tensor) -> Tensor:
        s = score_fn(x, sigma).float()
        cur = x.to(s.device)[..., None]
        log_s = s.clamp_min(0).log().scatter(-1, cur, float("-inf"))  # targets only
        total = torch.logsumexp(log_s, dim=-1, keepdim=True)  # log S
        sharp = log_s * inv
        sharp = sharp - torch.logsumexp(sharp, dim=-1, keepdim=True) + total
        out = torch.where(torch.isfinite(total), sharp.exp(), torch.zeros_like(s))
        return out.scatter(-1, cur, s.gather(-1, cur))

    return score


def sample_batched(score_fn: ScoreFn, graph: Graph, noise: Noise, times: Tensor, num: int, length: int, *,
                   seed: int, batch_size: int = 64, device: torch.device | str = "cpu",
                   progress: bool = False, **kwargs) -> SampleOutput:
    """``sample`` for ``num`` sequences in batches of ``batch_size``; batch b draws from its own generator
    ``make_generator(seed, device, b)``, so the output does not depend on how batches are spread over
    processes. Under torch.distributed each rank runs its share of the batches and every rank gets all
    ``num`` samples back. Returns x (num, L) on the CPU and the calls per sample.

    ``given`` (P, L) int64 (``sample``'s given tokens, one row per prompt): sample i holds row i mod P."""
    from .. import dist
    from tqdm.auto import tqdm

    n_batches = -(-num // batch_size)
    mine = dist.my_items(n_batches)
    parts, nfe = {}, 0
    # the bar counts loop steps (batches x steps), so a long run moves from its first step on; it only watches
    # the loop (no draw depends on it)
    given = kwargs.pop("given", None)
    used = None if given is None else given[torch.arange(min(num, given.shape[0]))]  # the rows some sample holds
    blocks = count_blocks(None if used is None else used != free_token(graph), length, kwargs.get("block"))
    if kwargs.get("block") is not None:
        kwargs.setdefault("blocks", blocks)
    steps = (times.numel() - 1) * (kwargs.get("blocks") or 1)
    bar = tqdm(total=len(mine) * steps, desc="sampling", unit="step", leave=False,
               disable=not progress or not dist.is_main())
    user_callback = kwargs.pop("callback", None)

    def on_step(info: StepInfo) -> None:
        if user_callback is not None:
            user_callback(info)
        bar.update(1)

    callback = on_step if not bar.disable else user_callback
    for i, b in enumerate(mine):
        if not bar.disable:
            bar.set_postfix_str(f"batch {i + 1}/{len(mine)}", refresh=False)
        n = min(batch_size, num - b * batch_size)
        rows = None if given is None else given[(b * batch_size + torch.arange(n)) % given.shape[0]]
        out = sample(score_fn, graph, noise, times, (n, length), generator=make_generator(seed, device, b),
                     device=device, callback=callback, given=rows, **kwargs)
        parts[b] = out.x.cpu()
        nfe = out.nfe  # every batch makes the same number of calls
    bar.close()
    parts = dist.gather_items(parts, n_batches)
    nfe = dist.max_int(nfe)
    return SampleOutput(x=torch.cat([parts[b] for b in range(n_batches)]), nfe=nfe)


__all__ = ["ScoreFn", "PHI_MODES", "SAMPLERS", "scale_score", "tempered_score", "euler_probs", "tweedie_probs", "REFERENCE_PROBS",
           "step_law_dense", "sample_categorical", "SampleOutput", "sample", "sample_batched"]
