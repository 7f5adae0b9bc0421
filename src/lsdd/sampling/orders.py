"""Peer mover orders: *which* K tokens a counted step reveals, by the orders of the field's training-free samplers.

A counted step (``draws.CountedLaw``) moves K_b tokens in row b, K_b the stochastic rounding of the expected
number of movers E_b under the base rule (the schedule); the values of the movers follow the base rule's
value law. The orders here only change the choice of the K_b movers among the movable tokens (move_i > 0:
on the absorbing graph the masked ones), always "the first K_b of the movable tokens in the order":

* ``dilated`` - the Dilated Unmasking Scheduler (DUS; Luxembourg, Permuter & Nachmani, arXiv 2506.19037).
  Over B positions, with base a = 2 and R = ceil(log_a B) rounds, round t (t = 1..R) has stride
  s_t = floor(B / a^t) and reveals every not-yet-revealed position k (1-based) with (k - 1) mod s_t = 0:
  for B = 8 the rounds are {1, 5}, {3, 7}, {2, 4, 6, 8} (0-based: 0 4 | 2 6 | 1 3 5 7). The paper reveals a
  round at once and gives no order inside a round; we take left to right (so a K that splits a round takes
  its leftmost positions). The order is deterministic, as in the paper (no random offset). It runs over the
  *free* positions of a row (those not held fixed: ``OrderedLaw.fixed``), in position order: the whole sequence
  without a prompt; in semi-autoregressive blocks (``Sampler.block``, ``loop.reverse_loop``) the free positions
  are the current block's, so each block gets its own DUS order and its own few-step schedule - the paper's
  scheme (every block the same number of steps).
* ``halton`` - MaskGIT's Halton scheduler (Besnier et al., ICLR 2025, arXiv 2503.17076) in one dimension:
  the points of the van der Corput sequence in base 2, phi_2(i) for i = 0, 1, 2, ... (bit-reversed i; the
  1-D Halton sequence), rotated by one uniform u per sequence (Cranley-Patterson: frac(phi_2(i) + u)), are
  mapped to the positions floor(L frac(phi_2(i) + u)), skipping positions already visited (the paper's
  "skip cells already visited"). The first 2^ceil(log2 L) points visit every position. For L = 8 and u = 0:
  0 4 2 6 1 5 3 7; for L = 2^m a rotation is a cyclic shift of that order by floor(L u). As for ``dilated``,
  L and the positions are those of the free positions of a row (in position order). u is drawn once per
  sequence, at the run's first step, from the step's generator, and kept for the later steps
  (``RunMemory``).
* ``confidence``, ``margin``, ``entropy`` - the top-K_b of the movable tokens by the model's own value law at
  this step, p_i = the law a mover's value is drawn from: largest max_y p_iy (LLaDA's ``low_confidence``
  remasking, Nie et al. arXiv 2502.09992; MaskGIT's confidence), largest top-1 minus top-2 probability
  (Dream's ``topk_margin``), lowest entropy -sum_y p_iy log p_iy (Dream's ``entropy``). Ties are broken by a
  uniform random key per token from the generator (a uniformly random order among tied tokens).

All orders are for the absorbing graph (revealing a masked token); ``Sampler.loop_args`` refuses the others.
The exact law of the set of movers is ``lsdd.sampling.exact.order_set_probs`` (a small sum: given the
rounding of K, the fixed orders are deterministic up to the Halton rotation, whose law is a sum over the
intervals of u on which the order is constant; the scored orders up to the tie-breaks).

Shapes: B batch, L length, S states.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .draws import CountedLaw, Generators, uniforms

FIXED = ("dilated", "halton")  # orders of positions, not of scores
SCORED = ("confidence", "margin", "entropy")  # orders by the step's value law
ORDERS = (*FIXED, *SCORED)


# ---- the fixed orders --------------------------------------------------------------------------------------
def van_der_corput(n: int) -> Tensor:
    """The first ``n`` points of the base-2 van der Corput sequence, phi_2(0), ..., phi_2(n - 1): the binary
    digits of i mirrored about the point (0, 1/2, 1/4, 3/4, 1/8, 5/8, ...). (n,) float64, exact."""
    out = torch.zeros(n, dtype=torch.float64)
    i = torch.arange(n)
    scale = 0.5
    while bool((i > 0).any()):
        out += (i & 1).to(torch.float64) * scale
        i = i >> 1
        scale /= 2
    return out


def halton_points(length: int) -> int:
    """How many van der Corput points visit every one of ``length`` positions: 2^ceil(log2 length) (those
    points are evenly spaced 2^-m apart, rotated or not, so each cell of width 1 / length holds one)."""
    return 1 << max(0, math.ceil(math.log2(length))) if length > 1 else 1


def halton_ranks(length: int, shift: Tensor) -> Tensor:
    """Rank of each position in the rotated 1-D Halton order (0 = revealed first): (B,) rotations u in [0, 1)
    -> (B, L) int64. Position floor(L frac(phi_2(i) + u)) is visited at the first i that lands on it."""
    n = halton_points(length)
    pts = van_der_corput(n).to(shift.device)
    cells = torch.floor(length * torch.frac(pts[None, :] + shift.to(torch.float64)[:, None])).long()
    cells = cells.clamp(0, length - 1)  # (B, n)
    first = torch.full((shift.shape[0], length), n, dtype=torch.long, device=shift.device)
    first = first.scatter_reduce(1, cells, torch.arange(n, device=shift.device).expand_as(cells), "amin")
    return first.argsort(-1).argsort(-1)


def halton_breaks(length: int) -> Tensor:
    """The rotations u in [0, 1) where the Halton order of ``length`` positions can change (a point crosses a
    cell edge: u = j / L - phi_2(i) mod 1), sorted, with 0 and 1 added: on each interval between two
    consecutive entries the order is constant. (n,) float64."""
    pts = van_der_corput(halton_points(length))
    edges = torch.arange(length, dtype=torch.float64) / length
    u = torch.frac(edges[None, :] - pts[:, None] + 1.0).reshape(-1)
    return torch.cat([torch.tensor([0.0, 1.0], dtype=torch.float64), u]).unique().sort().values


def dilated_block(size: int) -> list[int]:
    """The DUS order of one block of ``size`` positions (0-based): rounds t = 1..ceil(log2 size) of stride
    max(1, floor(size / 2^t)), each revealing the not-yet-revealed multiples of its stride, left to right.
    dilated_block(8) = [0, 4, 2, 6, 1, 3, 5, 7]."""
    order, seen = [], set()
    rounds = math.ceil(math.log2(size)) if size > 1 else 0
    for t in range(1, rounds + 1):
        stride = max(1, size // 2**t)
        for p in range(0, size, stride):
            if p not in seen:
                seen.add(p)
                order.append(p)
    order += [p for p in range(size) if p not in seen]  # size 1 (no rounds)
    return order


@functools.lru_cache(maxsize=64)
def _dilated_order(length: int) -> tuple[int, ...]:
    """The dilated order of ``length`` positions (a Python loop: built once per length)."""
    return tuple(dilated_block(length))


def dilated_ranks(length: int) -> Tensor:
    """Rank of each of ``length`` positions in the dilated order (0 = revealed first), (L,) int64."""
    ranks = torch.empty(length, dtype=torch.long)
    ranks[torch.tensor(_dilated_order(length), dtype=torch.long)] = torch.arange(length)
    return ranks


def free_ranks(free: Tensor, ranks_of: Callable[[int, Tensor], Tensor]) -> Tensor:
    """Ranks (B, L) int64 of an order of positions applied to the free positions of each row only: row b's
    n_b free positions, in position order, take the ranks ``ranks_of(n_b, rows)`` ((R, n) or (n,) int64 for
    the rows ``rows`` (R,) of that count) of an order of n_b positions; the held positions rank after them, by
    position (they are never candidates). ``free`` (B, L) bool; all free gives ``ranks_of(L, ...)`` itself."""
    b, length = free.shape
    idx = (free.long().cumsum(-1) - 1).clamp_min(0)  # index of each position among its row's free positions
    counts = free.sum(-1)
    out = torch.empty(b, length, dtype=torch.long, device=free.device)
    for n in counts.unique().tolist():
        rows = (counts == n).nonzero()[:, 0]
        sub_free, sub_idx = free[rows], idx[rows]
        held = n + torch.arange(length, device=free.device).expand_as(sub_idx)
        if n == 0:
            out[rows] = held
            continue
        r = ranks_of(n, rows).to(free.device)
        r = r.expand(rows.numel(), n) if r.ndim == 1 else r
        out[rows] = torch.where(sub_free, r.gather(-1, sub_idx.clamp_max(n - 1)), held)
    return out


# ---- the scored orders -------------------------------------------------------------------------------------
def value_probs(law: CountedLaw) -> Tensor:
    """The value law of a mover at every position, (B, L, S) float64: what ``StepLaw.dense`` gives with move = 1
    ((1 - 1) stay + 1 w = w exactly), without building its one-hot stay term and mixture at every step."""
    w = law.weights.to(torch.float64).scatter(-1, law.x[..., None], 0.0)
    total = w.sum(-1, keepdim=True)
    uniform = law.fallback.to(torch.float64).expand_as(w).scatter(-1, law.x[..., None], 0.0)
    return torch.where(total > 0, w / total.clamp_min(torch.finfo(torch.float64).tiny),
                       uniform / uniform.sum(-1, keepdim=True).clamp_min(1.0))


def order_key(name: str, probs: Tensor) -> Tensor:
    """(B, L) float64, larger = revealed earlier: max_y p (confidence), top-1 minus top-2 (margin) or minus the
    entropy (entropy) of each position's value law ``probs`` (B, L, S)."""
    if name == "confidence":
        return probs.amax(-1)
    if name == "margin":
        top = probs.topk(min(2, probs.shape[-1]), dim=-1).values
        return top[..., 0] - (top[..., 1] if top.shape[-1] > 1 else 0.0)
    if name == "entropy":
        plogp = torch.where(probs > 0, probs * torch.log(torch.where(probs > 0, probs, torch.ones_like(probs))),
                            torch.zeros_like(probs))
        return plogp.sum(-1)  # = -H
    raise ValueError(f"no scored order {name!r}; expected one of {list(SCORED)}")


def scored_ranks(key: Tensor, tie: Tensor) -> Tensor:
    """Rank (0 = first) of each position by ``key`` (B, L) descending, ties broken by ``tie`` (B, L) uniforms
    ascending. (B, L) int64."""
    by_tie = tie.argsort(-1)
    by_key = torch.sort(key.gather(-1, by_tie), dim=-1, descending=True, stable=True).indices
    order = by_tie.gather(-1, by_key)  # positions, first revealed first
    return order.argsort(-1)


def first_k(ranks: Tensor, cand: Tensor, k: Tensor) -> Tensor:
    """The ``k`` (B,) candidates ``cand`` (B, L) bool of smallest rank ``ranks`` (B, L): (B, L) bool."""
    big = torch.iinfo(torch.long).max
    masked = torch.where(cand, ranks.expand_as(cand), torch.full_like(cand, big, dtype=torch.long))
    place = masked.argsort(-1).argsort(-1)  # 0 = the first candidate in the order
    return (place < k[:, None]) & cand


# ---- the law -----------------------------------------------------------------------------------------------
@dataclass
class RunMemory:
    """What a run keeps from step to step for its movers: the per-sequence Halton rotation u (B,), drawn at
    the run's first step (``None`` until then). ``step`` is the loop's step index (0 = first)."""

    step: int = 0
    shift: Tensor | None = None
    halton: tuple | None = None  # (the shift and held positions they were made for, the ranks (B, L)): one per run


@dataclass
class OrderedLaw(CountedLaw):
    """A ``CountedLaw`` whose K_b movers are the first K_b movable tokens in a peer order (module docstring):
    ``choice`` in ``ORDERS``, ``memory`` the run's ``RunMemory`` (needed by ``halton``), ``fixed`` the held
    positions ((B, L) or (L,) bool, set by ``pin``; None: none), over whose complement the fixed orders run.
    K_b and the values are those of ``CountedLaw``."""

    memory: RunMemory | None = None
    fixed: Tensor | None = None

    def __post_init__(self) -> None:
        if self.choice not in ORDERS:
            raise ValueError(f"a peer order is one of {list(ORDERS)}, not {self.choice!r}")
        if self.choice == "halton" and self.memory is None:
            raise ValueError("the halton order keeps one rotation per sequence for the whole run; give the law the "
                             "run's RunMemory")

    def _pinned(self, fixed: Tensor) -> dict:
        return {**super()._pinned(fixed), "fixed": fixed}

    def _free(self) -> Tensor:
        return ~self.fixed.expand_as(self.x)

    def ranks(self, tie: Tensor | None = None) -> Tensor:
        """(B, L) or (L,) int64 ranks of the positions (0 = first): fixed orders need the Halton rotation in
        ``memory``; scored orders need ``tie`` (B, L) uniforms."""
        b, length = self.x.shape
        if self.choice == "dilated":
            if self.fixed is None:
                return dilated_ranks(length).to(self.x.device)
            return free_ranks(self._free(), lambda n, rows: dilated_ranks(n))
        if self.choice == "halton":  # the rotation and held positions are fixed for the run: ranks made once
            made, shift = self.memory.halton, self.memory.shift
            if made is None or made[0] is not shift or made[1] is not self.fixed:
                ranks = halton_ranks(length, shift) if self.fixed is None else \
                    free_ranks(self._free(), lambda n, rows: halton_ranks(n, shift[rows]))
                made = self.memory.halton = (shift, self.fixed, ranks)
            return made[2]
        return scored_ranks(order_key(self.choice, value_probs(self)), tie)

    def movers(self, generator: Generators = None) -> Tensor:
        b, length = self.x.shape
        u = uniforms((b, length + 1), generator, self.x.device)  # per token: a tie key; last column: the rounding
        if self.choice == "halton" and self.memory.shift is None:
            self.memory.shift = uniforms((b,), generator, self.x.device)  # once per sequence, at the first step
        k = self.count(u[:, -1])
        return first_k(self.ranks(u[:, :length]), self.move > 0, k)


__all__ = ["FIXED", "SCORED", "ORDERS", "van_der_corput", "halton_points", "halton_ranks", "halton_breaks",
           "dilated_block", "dilated_ranks", "free_ranks", "value_probs", "order_key", "scored_ranks", "first_k", "RunMemory",
           "OrderedLaw"]
