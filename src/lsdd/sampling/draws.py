"""Random draws, in float64, below both ``graphs`` and ``samplers``.

A reverse step's per-token law is kept *factorised* (``StepLaw``): first "move or stay", then, for the
tokens that move, which value. On the absorbing graph only masked tokens can move and the value law is
proportional to the (scaled) scores, so a step never needs a float64 (B, L, V) tensor: the move
probabilities are (B, L), and float64 values are drawn only for the rows that move, by a blocked
inverse CDF whose float64 work is (rows, V / block) + (rows, block).

Randomness always comes from an explicit ``torch.Generator`` that lives on the device of the draw; a
``RowStreams`` gives consecutive chunks of a batch their own generators, so a chunk's draws do not depend
on which other chunks share its batch (what makes sharded runs independent of the number of processes).

Shapes: B batch, L length, S states, n rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK = 1024  # inverse-CDF block size for wide rows (float64 work per drawn row: S / BLOCK + BLOCK)


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream ``keys`` under ``seed`` (e.g. (epoch, batch)); stable across runs and
    processes, and unrelated for different keys (unlike seed + key, which collides across streams)."""
    text = ":".join(str(int(v)) for v in (seed, *keys)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & (2**63 - 1)


def make_generator(seed: int, device: torch.device | str = "cpu", *keys: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (or with ``derive_seed(seed, *keys)`` when keys are given)."""
    gen = torch.Generator(device=torch.device(device))
    return gen.manual_seed(derive_seed(seed, *keys) if keys else int(seed))


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    ia = a.index if a.index is not None else torch.cuda.current_device()
    ib = b.index if b.index is not None else torch.cuda.current_device()
    return ia == ib


def check_generator(generator: torch.Generator | None, device: torch.device | str) -> None:
    """ValueError unless ``generator`` (if any) lives on ``device``: a CPU generator cannot drive CUDA draws."""
    if generator is None:
        return
    device = torch.device(device)
    if not _same_device(generator.device, device):
        raise ValueError(f"the random generator lives on {generator.device} but the draws happen on {device}; "
                         f"create it with torch.Generator(device={str(device)!r}) (lsdd.sampling.draws.make_generator)")


@dataclass
class RowStreams:
    """Independent generators for consecutive chunks of a batch: ``generators[i]`` draws for ``sizes[i]`` rows."""

    generators: list[torch.Generator]
    sizes: list[int]

    def __post_init__(self) -> None:
        if len(self.generators) != len(self.sizes) or any(n < 1 for n in self.sizes):
            raise ValueError(f"RowStreams needs one generator per positive chunk size, got "
                             f"{len(self.generators)} generators for sizes {self.sizes}")

    @property
    def device(self) -> torch.device:
        return self.generators[0].device


Generators = Union[torch.Generator, RowStreams, None]


def _chunks(generator: Generators, batch: int) -> list[tuple[slice, torch.Generator | None]]:
    if not isinstance(generator, RowStreams):
        return [(slice(0, batch), generator)]
    if sum(generator.sizes) != batch:
        raise ValueError(f"RowStreams cover {sum(generator.sizes)} rows, the batch has {batch}")
    out, start = [], 0
    for gen, n in zip(generator.generators, generator.sizes):
        out.append((slice(start, start + n), gen))
        start += n
    return out


def uniforms(shape: Sequence[int], generator: Generators, device: torch.device | str) -> Tensor:
    """float64 uniforms in [0, 1) of ``shape`` (batch first), each chunk from its own stream."""
    parts = []
    for rows, gen in _chunks(generator, shape[0]):
        check_generator(gen, device)
        n = rows.stop - rows.start
        parts.append(torch.rand((n, *shape[1:]), generator=gen, dtype=torch.float64, device=device))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def inverse_cdf(weights: Tensor, u: Tensor, block: int = BLOCK) -> Tensor:
    """Index drawn from each row of ``weights`` (n, S) >= 0 (any float dtype, rows need not sum to 1) for
    uniforms ``u`` (n,) float64: the first index whose float64 cumulative weight exceeds u * total.

    Rows wider than ``block`` are searched in two levels (block totals, then one block) so the float64 work is
    O(n (S / block + block)) instead of a float64 copy of the whole row. A zero-weight index is never returned
    for a row with positive total (all-zero rows return the last index: callers handle them). Returns (n,) int64.
    """
    n, width = weights.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=weights.device)
    if width <= block:
        return _search(weights.to(torch.float64), u)
    nb = -(-width // block)
    padded = F.pad(weights, (0, nb * block - width)).view(n, nb, block)
    totals = padded.sum(-1).to(torch.float64)  # (n, nb): per-block sums, float32 accumulation is exact enough
    which = _search(totals, u)  # block of each draw
    before = (totals.cumsum(-1) - totals).gather(-1, which[:, None])[:, 0]
    inner = padded[torch.arange(n, device=weights.device), which].to(torch.float64)  # (n, block)
    # the residual uniform inside the chosen block: (u * total - mass before the block) / block mass
    mass = totals.gather(-1, which[:, None])[:, 0]
    target = u * totals.sum(-1) - before
    u_in = torch.where(mass > 0, target / mass.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(u))
    return which * block + _search(inner, u_in.clamp(0.0, 1.0))


def _search(w: Tensor, u: Tensor) -> Tensor:
    """Inverse CDF on float64 rows w (n, K): first k with cdf_k > u * total, never a zero-weight k."""
    cdf = w.cumsum(-1)
    total = cdf[:, -1:]
    target = torch.minimum(u[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
    idx = torch.searchsorted(cdf.contiguous(), target.contiguous(), right=True)[:, 0]
    return idx.clamp_max(w.shape[-1] - 1)


def sample_categorical(probs: Tensor, generator: Generators = None) -> Tensor:
    """Draw one index per row of ``probs`` (..., S) by inverse CDF in float64 (never float32 Gumbel).

    Rows need not be normalised; zero-probability entries are never drawn. Returns (...) int64.
    """
    flat = probs.reshape(-1, probs.shape[-1])
    lead = probs.shape[:-1]
    u = uniforms(lead, generator, probs.device).reshape(-1) if len(lead) else \
        uniforms((1,), generator, probs.device)
    return inverse_cdf(flat, u).reshape(lead)


@dataclass
class StepLaw:
    """The law of one reverse step, per token, factorised as move-or-stay then a value:

        P(next_i = y) = (1 - move_i) [y = x_i] + move_i * w_iy / sum_z w_iz,

    with ``w`` zero at the current token. ``x`` (B, L) int64, ``move`` (B, L) float64 in [0, 1],
    ``weights`` (B, L, S) >= 0 in the score's dtype (never copied to float64 whole). Rows whose weights are
    all zero but must move (the forced last step of an absorbing model with an all-zero score row) draw
    uniformly from ``fallback`` (S,) bool, the states allowed there. ``score`` is the score the law was built
    from (hooks read it); ``invalid`` (B, L) bool marks movable rows whose score was NaN or infinite.
    """

    x: Tensor
    move: Tensor
    weights: Tensor
    fallback: Tensor
    score: Tensor | None = None
    invalid: Tensor | None = None

    def dense(self) -> Tensor:
        """The full per-token law (B, L, S) float64 (small problems, tests and exact propagation only)."""
        w = self.weights.to(torch.float64).scatter(-1, self.x[..., None], 0.0)
        total = w.sum(-1, keepdim=True)
        uniform = self.fallback.to(torch.float64).expand_as(w).scatter(-1, self.x[..., None], 0.0)
        w = torch.where(total > 0, w / total.clamp_min(torch.finfo(torch.float64).tiny),
                        uniform / uniform.sum(-1, keepdim=True).clamp_min(1.0))
        stay = F.one_hot(self.x, w.shape[-1]).to(torch.float64)
        m = self.move[..., None]
        return (1.0 - m) * stay + m * w

    def draw(self, generator: Generators = None) -> Tensor:
        """Draw the next state (B, L) int64: stage 1 decides who moves, stage 2 draws values for those rows only."""
        return self._values(self.movers(generator), generator)

    def pin(self, fixed: Tensor) -> "StepLaw":
        """This law with the tokens at ``fixed`` ((B, L) or (L,) bool) held at their current value: their row is
        the one-hot of the current token (move 0), so they are never movers and never invalid; every other
        token's law is unchanged (the random streams are drawn as before)."""
        return replace(self, **self._pinned(fixed.to(self.x.device)))

    def _pinned(self, fixed: Tensor) -> dict:
        keep = ~fixed
        out = {"move": torch.where(keep, self.move, torch.zeros_like(self.move))}
        if self.invalid is not None:
            out["invalid"] = self.invalid & keep
        return out

    def movers(self, generator: Generators = None) -> Tensor:
        """Stage 1: which tokens move, (B, L) bool; independently, token i with probability move_i."""
        return uniforms(self.x.shape, generator, self.x.device) < self.move

    def _values(self, moving: Tensor, generator: Generators) -> Tensor:
        """Stage 2: the next state with new values drawn for the ``moving`` tokens (value law w / sum w)."""
        x_next = self.x.clone()
        if not bool(moving.any()):
            return x_next
        # value uniforms per chunk, in the order of the moving rows (row-major), so chunks stay independent
        per_row = moving.sum(1).tolist()  # one host sync for all chunks
        u2 = torch.cat([torch.rand(sum(per_row[rows]), generator=g, dtype=torch.float64, device=self.x.device)
                        for rows, g in _chunks(generator, self.x.shape[0])])
        w = self.weights[moving]  # (n, S) copy of the moving rows only, in the weights' own dtype
        w.scatter_(-1, self.x[moving][:, None], 0.0)
        if bool((w < 0).any()):
            raise ValueError("a step law has negative weights; scores must be >= 0")
        empty = w.sum(-1) <= 0
        if bool(empty.any()):
            allowed = self.fallback.to(w.dtype).expand(int(empty.sum()), -1).scatter(-1, self.x[moving][empty][:, None], 0.0)
            w[empty] = allowed
        x_next[moving] = inverse_cdf(w, u2)
        return x_next


@dataclass
class CountedLaw(StepLaw):
    """A step law whose tokens do not move independently: each row moves a *number* of tokens fixed by
    stochastic rounding of its expected number of movers, E_b = sum_i move_bi (K_b = floor(E_b), plus one with
    probability E_b - floor(E_b), so E[K_b] = E_b with the least spread), chosen among the tokens with
    move_i > 0 by sampling without replacement with weights move_i (Gumbel-top-K_b, i.e. a Plackett-Luce
    draw). The values of the movers follow the same value law as ``StepLaw``. A step where every movable
    token has move_i = 1 (the forced last step) moves them all, as the independent law does.

    ``expected`` (B,) float64, when given, replaces sum_i move_i as the expected number of movers (capped at the
    number of movable tokens): then ``move`` only weighs *which* tokens move (``lsdd.sampling.conditioned``: the count
    comes from the step's schedule, the choice from the tokens' confidences).

    ``choice="spread"`` chooses the K movers by systematic sampling along the sequence instead (``spread_choice``):
    inclusion probabilities proportional to move_i (capped at 1, ``inclusion``), one uniform offset per row, so
    the movers of one step lie about L / K positions apart and are rarely neighbours, and each token still moves
    with probability move_i whenever no share is capped (E[K] pi_i = move_i). Tokens drawn in the same step are
    drawn independently from their own conditionals, so moving far-apart tokens together is what lowers the
    joint error of a few-step sampler on data with local dependence (text).

    Per-token move probabilities are therefore not the marginals of this law (``dense`` refuses);
    ``lsdd.sampling.exact.counted_transition`` gives its exact transition matrix on small problems.
    """

    expected: Tensor | None = None
    choice: str = "weight"  # "weight": Plackett-Luce by move_i; "spread": systematic, in position order
    share: Tensor | None = None  # (B, L) float64: each token's share of ``expected`` (expected = share.sum(-1))

    def _pinned(self, fixed: Tensor) -> dict:
        """Held tokens are no candidates, and the expected count is summed over the free tokens only: the sum of
        move_i, or (``expected`` given) of the tokens' ``share``."""
        out = super()._pinned(fixed)
        if self.expected is not None:
            if self.share is None:
                raise ValueError("a counted law with its own expected count needs each token's share of it "
                                 "(CountedLaw.share) to hold tokens fixed")
            share = torch.where(fixed, torch.zeros_like(self.share), self.share)
            out.update(share=share, expected=share.sum(-1))
        return out

    def expected_count(self) -> Tensor:
        """(B,) float64: the expected number of movers, capped at the number of movable tokens."""
        cand = self.move > 0
        total = torch.where(cand, self.move, torch.zeros_like(self.move)).sum(-1) if self.expected is None \
            else self.expected.to(torch.float64)
        return torch.minimum(total, cand.sum(-1).to(torch.float64))

    def count(self, u: Tensor) -> Tensor:
        """K_b (B,) int64 for the rounding uniforms ``u`` (B,): floor(E_b), plus one when u_b < E_b - floor(E_b)."""
        expected = self.expected_count()
        k = expected.floor() + (u < expected - expected.floor()).to(expected.dtype)
        return torch.minimum(k, (self.move > 0).sum(-1).to(k.dtype)).long()

    def dense(self) -> Tensor:
        raise TypeError("a counted step moves a random number of tokens jointly, not each token on its own; "
                        "its exact law comes from lsdd.sampling.exact (counted_transition)")

    def movers(self, generator: Generators = None) -> Tensor:
        b, l = self.x.shape
        u = uniforms((b, l + 1), generator, self.x.device)  # per token: a Gumbel key; last column: the rounding
        cand = self.move > 0
        k = self.count(u[:, -1])
        gumbel = -torch.log(-torch.log(u[:, :l].clamp_min(torch.finfo(torch.float64).tiny)))
        keys = torch.where(cand, self.move.clamp_min(torch.finfo(torch.float64).tiny).log() + gumbel,
                           torch.full_like(gumbel, float("-inf")))
        if self.choice == "spread":
            return spread_choice(inclusion(self.move, k), u[:, 0]) & cand
        if self.choice != "weight":
            raise ValueError(f"a counted step chooses its movers by {CHOICES}, not {self.choice!r}")
        rank = keys.argsort(-1, descending=True).argsort(-1)  # 0 = largest key
        return (rank < k[:, None]) & cand


CHOICES = ("weight", "spread")


def inclusion(move: Tensor, k: Tensor) -> Tensor:
    """Inclusion probabilities (B, L) float64 for choosing k (B,) of the tokens with move_i > 0: proportional to
    move_i and at most 1 (a token whose share would pass 1 is taken for sure and the rest re-shared), summing to
    min(k, number of candidates). Differentiable in ``move``."""
    w = torch.where(move > 0, move, torch.zeros_like(move)).to(torch.float64)
    k = torch.minimum(k.to(torch.float64), (w > 0).sum(-1).to(torch.float64))
    sure = torch.zeros_like(w, dtype=torch.bool)
    for _ in range(w.shape[-1]):
        rest = torch.where(sure, torch.zeros_like(w), w)
        left = (k - sure.sum(-1)).clamp_min(0)
        pi = torch.where(sure, torch.ones_like(w), rest * (left / rest.sum(-1).clamp_min(1e-300))[:, None])
        over = (pi > 1) & ~sure
        if not bool(over.any()):
            return pi
        sure = sure | over
    return pi.clamp_max(1.0)


def spread_choice(pi: Tensor, u: Tensor) -> Tensor:
    """Systematic sampling: token i is chosen when one of the points u + j (j = 0, 1, ...) falls in its interval
    of the running sum of ``pi`` (B, L), taken in position order; u (B,) uniform in [0, 1). Each token is chosen
    with probability exactly pi_i (pi_i <= 1), exactly round(sum pi) tokens are chosen, and they are spread
    along the sequence (between two chosen tokens lie about 1 / pi tokens), so tokens drawn together in one
    step are rarely neighbours. (B, L) bool."""
    c = pi.cumsum(-1)
    before = torch.cat([torch.zeros_like(c[:, :1]), c[:, :-1]], -1)
    hits = torch.floor(c - u[:, None] + 1e-9) - torch.floor(before - u[:, None] + 1e-9)
    return (hits > 0) & (pi > 0)


@dataclass
class TwoStageLaw:
    """The law of a step that calls the network again at a *random* intermediate state (theta-RK-2,
    theta-trapezoidal): a factorised first sub-step ``first`` from x to x_mid, then ``finish(x_mid, rows)``,
    the factorised law of the final state given x_mid (it makes the second network call).

    ``rows`` (n,) int64 says which row of the step's state x each row of x_mid (n, L) belongs to; None means
    row b belongs to row b (sampling). Given x the final state is a mixture over x_mid, not a product over
    tokens, so there is no ``dense``: ``lsdd.sampling.exact`` enumerates x_mid instead.
    """

    first: StepLaw
    finish: Callable[[Tensor, Union[Tensor, None]], StepLaw]

    @property
    def x(self) -> Tensor:
        return self.first.x

    @property
    def score(self) -> Tensor | None:
        return self.first.score

    @property
    def invalid(self) -> Tensor | None:
        return self.first.invalid

    def dense(self) -> Tensor:
        raise TypeError("a two-stage step's law is a mixture over its intermediate state, not a per-token law; "
                        "propagate it with lsdd.sampling.exact (which enumerates the intermediate states)")

    def draw(self, generator: Generators = None) -> Tensor:
        """Draw x_mid, make the second call there, then draw the final state (B, L) int64 from the same streams."""
        mid = self.first.draw(generator)
        return self.finish(mid, None).draw(generator)

    def pin(self, fixed: Tensor) -> "TwoStageLaw":
        """Both sub-steps with the tokens at ``fixed`` ((B, L) or (L,) bool) held (``StepLaw.pin``)."""
        finish = self.finish

        def pinned(mid: Tensor, rows: Tensor | None) -> StepLaw:
            return finish(mid, rows).pin(fixed if rows is None or fixed.ndim == 1 else fixed[rows])

        return TwoStageLaw(self.first.pin(fixed), pinned)


__all__ = ["BLOCK", "derive_seed", "make_generator", "check_generator", "RowStreams", "Generators", "uniforms",
           "inverse_cdf", "sample_categorical", "StepLaw", "CountedLaw", "TwoStageLaw", "CHOICES", "inclusion", "spread_choice"]
