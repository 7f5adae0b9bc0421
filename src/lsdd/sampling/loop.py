"""The one reverse-time loop that every sampler, the teacher, the distillation epoch and the exact
references drive.

Per step k of a grid t_0 = 1 > ... > t_M:
  1. score = call(x, t_k)                 network call, counted here and nowhere else; contract enforced
  2. on_score(info)                       hooks that read the score (teacher cache, distillation losses)
  3. Phi_k = coeffs(k, x, score)          a per-step number, or a function of the state (state-conditioned)
  4. law = rule(..., call)                the step's factorised law; a rule may call the network again
  5. on_step(info)                        hooks that read the law
  6. x = advance(info)                    a draw (default), or an exact propagation of a distribution

Fixed positions and semi-autoregressive blocks (``fixed``, ``block``): a held token is the current state at
every step - after step 5's law is computed its row becomes the one-hot of the current token (``StepLaw.pin``), so
it never moves and is never a mover, and counted movers count the free tokens only. On the absorbing graph this is
exact conditioning: the concrete score of a masked token is its clean law given the unmasked tokens times a factor
of t alone, the same whether the unmasked tokens are data or given, so the projected process is the reverse process
of the data law conditioned on the held tokens. On the uniform (and ordinal) graph the network reads the held
tokens as noisy states x_t, not as clean data, so holding them is an approximation (measured on an exact toy in
``tests/test_fixed.py``). With ``block`` B the free positions of each row, in position order, are cut into blocks
of B, decoded left to right: the whole grid runs once per block, with every position outside the block held
(earlier blocks at their decoded tokens, later blocks masked, or at their noise on graphs without a mask), so a
sample makes (number of blocks) x (the grid's calls) network calls; rows with fewer free positions idle through
the last blocks (their calls are made and counted, as the batch's).

The score contract: ``score_fn(x (B, L) int64, sigma_bar (B,)) -> (B, L, S)`` ratios >= 0 whose entry at
the current token is 1. The loop sets that entry to 1 itself (an adapter that forgets it must not silently
change the law - Tweedie and the uniform graph read it), checks the shape, and stops with an error naming
the step when a score the step needs is NaN or infinite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch import Tensor

from .draws import Generators, RowStreams, StepLaw, check_generator
from ..errors import ScoreContractError
from ..graphs import Graph
from ..noise import Noise
from .schedules import check_times
from .steps import StepRule, get_rule

ScoreFn = Callable[[Tensor, Tensor], Tensor]
CoeffFn = Callable[[int, Tensor, Tensor], Union[Tensor, float]]  # (k, x (B, L), score (B, L, S)) -> Phi_k
Coeffs = Union[Tensor, CoeffFn, None]


class CountedScore:
    """Wraps a score function: counts every call (NFE), feeds it sigma_bar(t), enforces the contract."""

    def __init__(self, score_fn: ScoreFn, graph: Graph, noise: Noise, *, parent: "CountedScore | None" = None):
        self.score_fn, self.graph, self.noise = score_fn, graph, noise
        self.calls = 0
        self.step = -1  # the loop's current step, for error messages
        self.parent = parent  # also counted there (``wrap``)

    def wrap(self, transform: Callable[[ScoreFn], ScoreFn]) -> "CountedScore":
        """A counted score over ``transform(self.score_fn)`` whose calls also count here. A wrapper must go
        inside the count: a plain function around a ``CountedScore`` is fed noise levels where it expects times
        (``reverse_loop`` counts it again, converting t -> sigma_bar(t) twice)."""
        return CountedScore(transform(self.score_fn), self.graph, self.noise, parent=self)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """x (B, L) int64, t 0-d time -> score (B, L, S) with score[b, i, x[b, i]] == 1."""
        t = torch.as_tensor(t, dtype=torch.float64).detach()
        # checked where it costs no device sync (grids live on the CPU; a time on an accelerator is not checked)
        if t.device.type == "cpu" and not bool(((t >= 0) & (t <= 1)).all()):
            raise ScoreContractError(f"step {self.step}: time {t.tolist()} outside [0, 1]: a plain function around a "
                                     "CountedScore is fed noise levels, not times (use CountedScore.wrap)")
        sigma = self.noise.total(t)
        sigma = sigma.to(device=x.device, dtype=torch.float32).expand(x.shape[0])
        score = self.score_fn(x, sigma)
        self.calls += 1
        if self.parent is not None:
            self.parent.calls += 1
        want = (*x.shape, self.graph.num_states)
        if tuple(score.shape) != want:
            raise ScoreContractError(f"step {self.step}: the score function returned shape {tuple(score.shape)}, "
                                     f"expected (B, L, S) = {want}")
        if score.device != x.device:
            score = score.to(x.device)
        if not score.is_floating_point():
            score = score.float()
        # the entry at the current token is 1 by definition of the concrete score (set in place on the
        # function's fresh output; out of place only when the score carries a gradient)
        return score.scatter(-1, x[..., None], 1.0) if score.requires_grad else score.scatter_(-1, x[..., None], 1.0)


@dataclass
class StepInfo:
    """What hooks see at step k: the interval [t, s] (0-d float64), the state x (B, L), the score (B, L, S)
    at (x, t), the coefficient used, and (from ``on_step`` on) the step's law."""

    k: int
    t: Tensor
    s: Tensor
    last: bool
    x: Tensor
    score: Tensor
    coeff: Tensor | float = 1.0
    law: StepLaw | None = None
    block: int = 0  # the semi-autoregressive block the step belongs to (0 without blocks)


@dataclass
class LoopOutput:
    """x: the final state (B, L) int64 (or whatever ``advance`` returned last); nfe: network calls, counted."""

    x: Tensor
    nfe: int


def resolve_coeff(coeffs: Coeffs, k: int, x: Tensor, score: Tensor) -> Tensor | float:
    if coeffs is None:
        return 1.0
    if callable(coeffs) and not isinstance(coeffs, Tensor):
        return coeffs(k, x, score)
    return coeffs[k]


def check_coeffs(coeffs: Coeffs, n_steps: int, phi_mode: str) -> None:
    if coeffs is None or (callable(coeffs) and not isinstance(coeffs, Tensor)):
        return
    if coeffs.shape != (n_steps,):
        raise ValueError(f"coeffs must have shape ({n_steps},) for a {n_steps}-step grid, got {tuple(coeffs.shape)}")
    if not torch.isfinite(coeffs).all():
        raise ValueError(f"coeffs must be finite, got {coeffs.tolist()}")
    low = float(coeffs.min())
    if low < 0 or (phi_mode == "log" and low <= 0):
        raise ValueError(f"coeffs must be {'> 0' if phi_mode == 'log' else '>= 0'} in {phi_mode} mode, got min {low}")


def free_token(graph: Graph) -> int:
    """The id that marks a free position in a token array of given tokens: the graph's number of real tokens
    (the mask id on the absorbing graph; an id no token has on the others)."""
    return int(graph.num_tokens)


def block_ids(fixed: Tensor | None, length: int, block: int) -> Tensor:
    """The semi-autoregressive block of each position, (L,) or fixed's shape, int64: the j-th free position of
    a row (in position order, from 0) is in block j // ``block``; held positions get -1."""
    free = torch.ones(length, dtype=torch.bool) if fixed is None else ~fixed
    return torch.where(free, (free.long().cumsum(-1) - 1) // block, torch.full_like(free, -1, dtype=torch.long))


def count_blocks(fixed: Tensor | None, length: int, block: int | None) -> int:
    """How many blocks the grid runs over: ceil(free positions / ``block``) for the row with the most free
    positions (at least 1); 1 without ``block``."""
    if block is None:
        return 1
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block is a number of tokens, an integer >= 1; got {block!r}")
    free = length if fixed is None else int((~fixed).reshape(-1, length).sum(-1).max())
    return max(1, -(-free // block))


def held_positions(fixed: Tensor | None, length: int, block: int | None,
                   blocks: int | None = None) -> list[Tensor | None]:
    """What each pass of the grid holds: [fixed] without ``block``; with it, for each of ``blocks`` blocks
    (default ``count_blocks``; more leave the last passes with nothing to do), every position outside the block
    (held positions included)."""
    if block is None:
        if blocks not in (None, 1):
            raise ValueError(f"{blocks} blocks need a block size")
        return [fixed]
    need = count_blocks(fixed, length, block)
    blocks = need if blocks is None else blocks
    if blocks < need:
        raise ValueError(f"{blocks} blocks of {block} cannot cover a row with {need} blocks of free positions")
    ids = block_ids(fixed, length, block)
    return [ids != j for j in range(blocks)]


def reverse_loop(score_fn: ScoreFn | CountedScore, graph: Graph, noise: Noise, times: Tensor, x: Tensor, *,
                 rule: str | StepRule = "euler", coeffs: Coeffs = None, phi_mode: str = "linear",
                 generator: Generators = None, advance: Callable[[StepInfo], Tensor] | None = None,
                 on_score: Callable[[StepInfo], None] | None = None,
                 on_step: Callable[[StepInfo], None] | None = None, fixed: Tensor | None = None,
                 block: int | None = None, blocks: int | None = None) -> LoopOutput:
    """Run the reverse process from ``x`` (B, L) over ``times`` (M + 1,), strictly decreasing from 1.

    rule: a step rule or its name (``steps.RULES``). coeffs: None (all ones), (M,) per-step Phi, or a
    function (k, x, score) -> Phi_k (a scalar or (B, L)). generator: a torch.Generator on x's device, or
    ``RowStreams`` (one stream per chunk of rows). advance: replaces the draw (exact propagation).
    The last step lands on times[-1] and, on the absorbing graph, unmasks every remaining token.
    fixed: (B, L) or (L,) bool, positions held at their token in ``x`` (module docstring; (L,) for exact
    propagation, whose rows are states). block: run the grid once per semi-autoregressive block of that many
    free positions, left to right (NFE = blocks x the grid's calls); ``blocks``: how many (default
    ``count_blocks``; a batch of a larger run passes the run's count, so every batch makes the same calls).
    """
    check_times(times.detach())
    step_rule = get_rule(rule) if isinstance(rule, str) else rule
    n_steps = times.numel() - 1
    check_coeffs(coeffs, n_steps, phi_mode)
    if fixed is not None and (fixed.dtype != torch.bool or fixed.shape[-1] != x.shape[-1] or fixed.ndim > 2):
        raise ValueError(f"fixed must be a (B, L) or (L,) bool mask with L = {x.shape[-1]}, got "
                         f"{fixed.dtype} {tuple(fixed.shape)}")
    if advance is None:
        for gen in generator.generators if isinstance(generator, RowStreams) else [generator]:
            check_generator(gen, x.device)  # before any network call
    call = score_fn if isinstance(score_fn, CountedScore) else CountedScore(score_fn, graph, noise)
    start = call.calls
    for j, held in enumerate(held_positions(fixed, x.shape[-1], block, blocks)):
        held = None if held is None else held.to(x.device)
        for k in range(n_steps):
            x = _step(call, graph, noise, times, x, k, j, held, step_rule, coeffs, phi_mode, generator, advance,
                      on_score, on_step)
    return LoopOutput(x, call.calls - start)


def _step(call: CountedScore, graph: Graph, noise: Noise, times: Tensor, x: Tensor, k: int, j: int,
          held: Tensor | None, step_rule: StepRule, coeffs: Coeffs, phi_mode: str, generator: Generators,
          advance, on_score, on_step) -> Tensor:
    """Step k of the grid (in block j): score, hooks, coefficient, law (held positions pinned), hooks, draw."""
    call.step = k
    t, s = times[k], times[k + 1]
    info = StepInfo(k, t, s, k == times.numel() - 2, x, call(x, t), block=j)
    if on_score is not None:
        on_score(info)
    info.coeff = resolve_coeff(coeffs, k, x, info.score)
    info.law = step_rule(graph, noise, x, info.score, t, s, info.coeff, phi_mode, info.last, call)
    if held is not None:
        info.law = info.law.pin(held)
    if info.law.invalid is not None and bool(info.law.invalid.any()):
        n_bad = int(info.law.invalid.sum())
        raise ScoreContractError(f"step {k} (t={float(t):.6g} -> {float(s):.6g}): the score is NaN or infinite "
                                 f"in {n_bad} of {x.numel()} token rows; the model's output is not usable there")
    if on_step is not None:
        on_step(info)
    return advance(info) if advance is not None else info.law.draw(generator)


__all__ = ["ScoreFn", "CoeffFn", "Coeffs", "ScoreContractError", "CountedScore", "StepInfo", "LoopOutput",
           "reverse_loop", "resolve_coeff", "check_coeffs", "free_token", "block_ids", "count_blocks",
           "held_positions"]
