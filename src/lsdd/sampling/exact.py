"""Exact references on tiny state spaces, by enumeration.

For a known data law p0 over all N^L sequences, the true concrete score and marginals follow in closed
form, and the law of any sampler's output can be computed exactly by propagating a distribution over all
S^L states. Used by the tests (samplers checked in probabilities, not samples) and by toy benchmarks.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from .draws import CHOICES, CountedLaw, StepLaw, TwoStageLaw, inclusion, spread_choice
from ..graphs import Graph
from ..noise import Noise
from .loop import Coeffs, StepInfo, free_token, reverse_loop
from .orders import OrderedLaw, first_k, halton_breaks, order_key, value_probs


def all_sequences(num_values: int, length: int) -> Tensor:
    """Every sequence over {0..num_values-1} of the given length, (num_values^length, length) int64,
    in lexicographic order (row index = base-num_values number)."""
    return torch.tensor(list(itertools.product(range(num_values), repeat=length)), dtype=torch.long)


def seq_index(x: Tensor, num_values: int) -> Tensor:
    """Inverse of ``all_sequences``: (B, L) -> (B,) row indices."""
    powers = num_values ** torch.arange(x.shape[-1] - 1, -1, -1, device=x.device)
    return (x * powers).sum(-1)


class ExactScore:
    """The true concrete score of a data law ``p0`` (N^L,) under ``graph``: a ScoreFn.

    score[b, i, y] = p_t(x with x_i <- y) / p_t(x), with p_t(x) = sum_x0 p0(x0) prod_i P_sigma(x_i | x0_i).
    For states of zero probability (possible on the absorbing graph) the off-diagonal score is 0.
    """

    def __init__(self, p0: Tensor, graph: Graph, length: int):
        self.graph, self.length = graph, length
        self.p0 = p0.to(torch.float64)
        self.data = all_sequences(graph.num_tokens, length)  # (K0, L)
        if self.p0.shape != (self.data.shape[0],):
            raise ValueError(f"p0 must have shape ({self.data.shape[0]},), got {tuple(self.p0.shape)}")
        self.calls = 0

    def marginal(self, x: Tensor, sigma: Tensor) -> Tensor:
        """p_t(x) for x (B, L) and sigma (B,) -> (B,) float64."""
        sig = sigma.to(torch.float64)
        # P(x_i | x0_i) for every data sequence: (B, K0, L)
        trans = self.graph.transition(self.data[None].expand(x.shape[0], -1, -1).reshape(-1, self.length),
                                      sig.repeat_interleave(self.data.shape[0]))
        trans = trans.reshape(x.shape[0], self.data.shape[0], self.length, -1)
        lik = trans.gather(-1, x[:, None, :, None].expand(-1, self.data.shape[0], -1, 1))[..., 0].prod(-1)
        return (lik * self.p0).sum(-1)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.calls += 1
        if x.shape[0] > 1 and (sigma.numel() == 1 or bool((sigma == sigma.reshape(-1)[0]).all())):
            rows, inverse = x.unique(dim=0, return_inverse=True)  # many samples, few states: score each state once
            if rows.shape[0] < x.shape[0]:
                return self._score(rows, sigma.reshape(-1)[:1].expand(rows.shape[0]))[inverse]
        return self._score(x, sigma)

    def _score(self, x: Tensor, sigma: Tensor) -> Tensor:
        batch, length = x.shape
        n_states = self.graph.num_states
        # all single-token substitutions: (B, L, S, L)
        alt = x[:, None, None, :].expand(batch, length, n_states, length).clone()
        for i in range(length):
            alt[:, i, :, i] = torch.arange(n_states)
        num = self.marginal(alt.reshape(-1, length), sigma.repeat_interleave(length * n_states))
        num = num.reshape(batch, length, n_states)
        den = self.marginal(x, sigma)[:, None, None]
        score = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))
        return score.scatter(-1, x[..., None], 1.0)  # s(x)_{x_i} = 1 by definition, even where p_t(x) = 0


def exact_reverse_law(exact: ExactScore, noise: Noise, eps: float) -> Tensor:
    """The law that the samplers approximate, over all S^L states (S^L,) float64: the state at time ``eps`` of the
    exact reverse process started where the samplers start at t = 1.

    Absorbing: from all-mask, the exact process ends in p0 (x_1 = all-mask carries no information about x0,
    and the last step unmasks every remaining token). Uniform and ordinal: from the uniform law U,
    sum_x1 U(x1) p_eps(x) P(x1 | x) / p_1(x1), with P the forward kernel from eps to 1.
    """
    graph, length = exact.graph, exact.length
    states = all_sequences(graph.num_states, length)
    if graph.absorbing:
        ref = torch.zeros(states.shape[0], dtype=torch.float64)
        ref[seq_index(exact.data, graph.num_states)] = exact.p0
        return ref
    s1, se = (noise.total(torch.tensor(v, dtype=torch.float64)) for v in (1.0, eps))
    p_e = exact.marginal(states, se.expand(states.shape[0]))
    p_1 = exact.marginal(states, s1.expand(states.shape[0]))
    # P(x1 | x) = prod_i P_{s1 - se}(x1_i | x_i), from the graph's own transition: (x1, x)
    per_token = graph.transition(states, (s1 - se).expand(states.shape[0]))  # (K, L, S): rows x
    kernel = per_token[:, torch.arange(length)[None, :], states].prod(-1).T
    return ((1.0 / states.shape[0] / p_1)[:, None] * kernel * p_e[None, :]).sum(0)


def exact_conditional_law(exact: ExactScore, given: Tensor) -> Tensor:
    """The data law conditioned on the given tokens, over all S^L states (S^L,) float64: p0(x) restricted to the
    sequences that agree with ``given`` (L,) int64 at its held positions (``loop.free_token`` elsewhere),
    renormalised - the law a conditional sampler approximates."""
    graph = exact.graph
    held = given != free_token(graph)
    agree = (exact.data[:, held] == given[held]).all(-1)
    p = torch.where(agree, exact.p0, torch.zeros_like(exact.p0))
    if not float(p.sum()) > 0:
        raise ValueError(f"the given tokens {given.tolist()} have probability 0 under the data law")
    ref = torch.zeros(graph.num_states ** exact.length, dtype=torch.float64)
    ref[seq_index(exact.data, graph.num_states)] = p / p.sum()
    return ref


def exact_sampler_law(score_fn, graph: Graph, noise: Noise, times: Tensor, length: int, *,
                      method: str = "euler", coeffs: Coeffs = None, phi_mode: str = "linear",
                      given: Tensor | None = None, block: int | None = None, blocks: int | None = None) -> Tensor:
    """Exact law of the sampler's output over all S^L states, (S^L,) float64, starting from the limit (with the
    ``given`` tokens held, in ``block``s: as ``exact_state_laws``)."""
    return exact_state_laws(score_fn, graph, noise, times, length, method=method, coeffs=coeffs,
                            phi_mode=phi_mode, given=given, block=block, blocks=blocks)[-1]


def start_law(graph: Graph, length: int, given: Tensor | None = None) -> Tensor:
    """The samplers' start law over all S^L states (S^L,) float64: the graph's limit (all-mask, or uniform), with
    the ``given`` tokens ((L,) int64, ``loop.free_token`` at free positions) at their held positions."""
    states = all_sequences(graph.num_states, length)
    if graph.absorbing:
        start = graph.sample_limit(1, length)[0]
        if given is not None:
            start = torch.where(given != free_token(graph), given, start)
        law = torch.zeros(states.shape[0], dtype=torch.float64)
        law[seq_index(start[None], graph.num_states)] = 1.0
        return law
    ok = torch.ones(states.shape[0], dtype=torch.bool)
    if given is not None:
        held = given != free_token(graph)
        ok = (states[:, held] == given[held]).all(-1)
    return ok.to(torch.float64) / ok.sum()


def exact_state_laws(score_fn, graph: Graph, noise: Noise, times: Tensor, length: int, *,
                     method: str = "euler", coeffs: Coeffs = None, phi_mode: str = "linear",
                     given: Tensor | None = None, block: int | None = None,
                     blocks: int | None = None) -> list[Tensor]:
    """Exact laws of the sampler's state at every grid time (of every block), M + 1 tensors (blocks x M + 1 with
    ``block``) (S^L,) float64 (rows of ``all_sequences(S, L)``), starting from the graph's limit.

    Drives the same reverse-time loop as the samplers, with the draw replaced by propagation: the loop's
    state is the set of states of positive probability, and each step's law (the product over tokens of the
    per-token step law) moves the distribution over all S^L states. Feasible for S^L up to a few thousand.
    ``given`` (L,) int64: tokens held fixed (``loop.free_token`` at the free positions); ``block``: the grid runs
    once per semi-autoregressive block (``loop.reverse_loop``).
    """
    n_states = graph.num_states
    states = all_sequences(n_states, length)  # (K, L)
    law = start_law(graph, length, given)
    laws = [law]

    def transition(law) -> Tensor:
        if isinstance(law, CountedLaw):
            return counted_transition(law, states)
        probs = law.dense()  # (K', L, S): per-token law of each live state
        # transition matrix rows: P(next = z | x) = prod_i probs[x, i, z_i]  -> (K', K)
        return probs[:, torch.arange(length)[None, :], states].prod(-1)

    def propagate(info: StepInfo) -> Tensor:
        if isinstance(info.law, TwoStageLaw):
            # a mixture over the intermediate state: enumerate every (state, x_mid) pair of positive probability
            # and make the second call on all of them at once (one counted call, as in sampling)
            first = transition(info.law.first)  # (K', K)
            rows, mids = torch.nonzero(first > 0, as_tuple=True)
            second = transition(info.law.finish(states[mids], rows))  # (P, K)
            trans = torch.zeros_like(first).index_add_(0, rows, first[rows, mids, None] * second)
        else:
            trans = transition(info.law)
        live = laws[-1] > 0
        new = laws[-1][live] @ trans
        laws.append(new)
        return states[new > 0]

    x0 = states[law > 0]
    fixed = None if given is None else given != free_token(graph)
    reverse_loop(score_fn, graph, noise, times.to(torch.float64), x0, rule=method, coeffs=coeffs,
                 phi_mode=phi_mode, advance=propagate, fixed=fixed, block=block, blocks=blocks)
    return laws


def spread_set_probs(move: Tensor, expected: Tensor | None = None) -> Tensor:
    """Exact law of the set of tokens a ``CountedLaw`` with ``choice="spread"`` moves: (B, L) -> (B, 2^L)
    float64, column m = the set {i : bit i of m is set}. K is drawn as for ``counted_set_probs``; given K the set
    is a step function of the systematic offset u ~ U[0, 1), which changes only where u crosses the fractional
    part of a running sum of the inclusion probabilities, so the law is a sum over those L + 1 intervals of
    u. Differentiable in ``move`` (through the interval lengths)."""
    b, length = move.shape
    if length > 16:
        raise ValueError(f"spread_set_probs returns 2^L columns; length {length} is too long (at most 16)")
    cand = move > 0
    w = torch.where(cand, move, torch.zeros_like(move)).to(torch.float64)
    n = cand.sum(-1).to(torch.float64)
    expected = torch.minimum(w.sum(-1) if expected is None else expected.to(torch.float64), n)
    lo = expected.detach().floor()
    frac = expected - lo
    bits = 2 ** torch.arange(length)
    out = torch.zeros(b, 2**length, dtype=torch.float64)
    for k, p_k in ((lo, 1.0 - frac), (torch.minimum(lo + 1, n), frac)):
        pi = inclusion(w, k)
        c = pi.cumsum(-1)
        edges = torch.cat([torch.zeros(b, 1, dtype=torch.float64), c - c.detach().floor(),
                           torch.ones(b, 1, dtype=torch.float64)], -1).sort(-1).values
        lengths = edges[:, 1:] - edges[:, :-1]  # (B, L + 1)
        mids = (edges[:, 1:] + edges[:, :-1]).detach() / 2
        for j in range(length + 1):
            chosen = spread_choice(pi.detach(), mids[:, j]) & cand
            code = (chosen.long() * bits).sum(-1)
            out = out.scatter_add(1, code[:, None], (p_k * lengths[:, j])[:, None])
    return out


def counted_set_probs(move: Tensor, expected: Tensor | None = None, choice: str = "weight") -> Tensor:
    """Exact law of the set of tokens a ``CountedLaw`` moves: (B, L) move probabilities -> (B, 2^L) float64,
    column m = the set {i : bit i of m is set}. K = floor(E) or ceil(E) (stochastic rounding of E = ``expected``
    (B,), or the sum of the positive move_i, capped at their number), then (``choice="weight"``) a Plackett-Luce
    draw of K of them with weights move_i: P(S) = P(K = |S|) sum over orderings of S of prod_j w_j / (W - weights drawn before j). Differentiable in
    ``move``; the orderings are enumerated, so L must be small (tests and toy benchmarks). ``choice="spread"``:
    ``spread_set_probs``."""
    if choice == "spread":
        return spread_set_probs(move, expected)
    if choice != "weight":
        raise ValueError(f"a counted step chooses its movers by {CHOICES}, not {choice!r}")
    b, length = move.shape
    if length > 8:
        raise ValueError(f"counted_set_probs enumerates orderings; length {length} is too long (at most 8)")
    cand = move > 0
    w = torch.where(cand, move, torch.zeros_like(move)).to(torch.float64)
    total = w.sum(-1)
    n = cand.sum(-1)
    expected = torch.minimum(total if expected is None else expected.to(torch.float64), n.to(total.dtype))
    lo = expected.detach().floor()
    frac = expected - lo
    out = torch.zeros(b, 2**length, dtype=torch.float64)
    for mask in range(2**length):
        members = [i for i in range(length) if mask >> i & 1]
        size = len(members)
        p_k = torch.where(lo == size, 1.0 - frac, torch.zeros_like(frac)) + torch.where(lo + 1 == size, frac,
                                                                                        torch.zeros_like(frac))
        p_k = torch.where(n == size, (lo >= size).to(p_k.dtype) + p_k * (lo < size), p_k)  # all movable: forced
        if size == 0:
            pl = torch.ones(b, dtype=torch.float64)
        else:
            pl = torch.zeros(b, dtype=torch.float64)
            for order in itertools.permutations(members):
                left, prob = total.clone(), torch.ones(b, dtype=torch.float64)
                for i in order:
                    prob = prob * torch.where(left > 0, w[:, i] / left.clamp_min(1e-300), torch.zeros_like(left))
                    left = left - w[:, i]
                pl = pl + prob
        ok = cand[:, members].all(-1) if members else torch.ones(b, dtype=torch.bool)
        out[:, mask] = torch.where(ok, p_k * pl, torch.zeros_like(pl))
    return out


def counted_transition(law: CountedLaw, states: Tensor) -> Tensor:
    """Exact transition matrix of a ``CountedLaw`` on the rows of ``states`` (K, L): (B, K) float64, row b =
    P(next = states[k] | law.x[b]). The movers of a step are exactly the tokens that change (a mover never
    keeps its value: the value law is zero at the current token), so P(z | x) = P(movers = {i: z_i != x_i})
    times the movers' value probabilities."""
    values = StepLaw(law.x, torch.ones_like(law.move), law.weights, law.fallback).dense()  # (B, L, S): a mover's value law
    length = law.x.shape[1]
    sets = order_set_probs(law) if isinstance(law, OrderedLaw) else \
        counted_set_probs(law.move, law.expected, law.choice)  # (B, 2^L)
    changed = law.x[:, None, :] != states[None, :, :]  # (B, K, L)
    bits = (changed.long() * (2 ** torch.arange(length))).sum(-1)  # (B, K): the set of changed tokens
    val = values[:, torch.arange(length)[None, :], states]  # (B, K, L): P(value z_i) for a mover
    val = torch.where(changed, val, torch.ones_like(val)).prod(-1)
    return sets.gather(1, bits) * val


def order_set_probs(law: OrderedLaw) -> Tensor:
    """Exact law of the set of tokens an ``OrderedLaw`` (a peer order, ``lsdd.sampling.orders``) moves:
    (B, 2^L) float64, column m = the set {i : bit i of m is set}. K_b = floor(E_b) or floor(E_b) + 1 with the
    stochastic rounding's probabilities; given K_b the set is the first K_b movable tokens in the order:
    deterministic for ``dilated``; for ``halton`` a sum over the intervals of the rotation u on which the order
    is constant (when the run's rotation is not drawn yet: the first step), else deterministic given it; for the
    scored orders, every token of larger key is in, and the r places left are a uniformly random r-subset of the
    g tokens tied at the boundary key (each with probability 1 / C(g, r)). Small L only (2^L columns)."""
    import math

    b, length = law.move.shape
    if length > 16:
        raise ValueError(f"order_set_probs returns 2^L columns; length {length} is too long (at most 16)")
    cand = law.move > 0
    expected = law.expected_count()
    lo = expected.floor()
    frac = expected - lo
    n = cand.sum(-1)
    bits = 2 ** torch.arange(length)
    out = torch.zeros(b, 2**length, dtype=torch.float64)
    counts = [(torch.minimum(lo, n.to(lo.dtype)).long(), 1.0 - frac), (torch.minimum(lo + 1, n.to(lo.dtype)).long(), frac)]

    def add(chosen: Tensor, weight: Tensor) -> None:
        out.scatter_add_(1, ((chosen.long() * bits).sum(-1))[:, None], weight[:, None])

    everything = bool((lo >= n).all())  # every movable token moves (the forced last step): any order will do
    if law.choice == "dilated" or (law.choice == "halton" and (law.memory.shift is not None or everything)):
        ranks = torch.zeros_like(law.x) if law.choice == "halton" and law.memory.shift is None else law.ranks()
        for k, p_k in counts:
            add(first_k(ranks, cand, k), p_k)
        return out
    if law.choice == "halton":
        if law.memory.step != 0:
            raise ValueError("the halton rotation is drawn at a run's first step and kept: after the first step the "
                             "exact law needs the rotation (law.memory.shift)")
        # the order runs over each row's free positions: it is constant between the breaks of every free count
        free = torch.full((b,), length) if law.fixed is None else (~law.fixed.expand_as(law.x)).sum(-1)
        edges = torch.cat([halton_breaks(max(1, int(n))) for n in free.unique().tolist()]).unique().sort().values
        for lo_u, hi_u in zip(edges[:-1].tolist(), edges[1:].tolist()):
            rotated = OrderedLaw(law.x, law.move, law.weights, law.fallback, expected=law.expected, choice="halton",
                                 memory=type(law.memory)(0, torch.full((b,), (lo_u + hi_u) / 2, dtype=torch.float64)),
                                 fixed=law.fixed)
            ranks = rotated.ranks()
            for k, p_k in counts:
                add(first_k(ranks, cand, k), p_k * (hi_u - lo_u))
        return out
    key = order_key(law.choice, value_probs(law))
    for row in range(b):
        ids = [i for i in range(length) if bool(cand[row, i])]
        for k, p_k in counts:
            k = int(k[row])
            if k == 0:
                out[row, 0] += p_k[row]
                continue
            vals = sorted((float(key[row, i]) for i in ids), reverse=True)
            edge = vals[k - 1]
            sure = [i for i in ids if float(key[row, i]) > edge]
            tied = [i for i in ids if float(key[row, i]) == edge]
            r = k - len(sure)
            for pick in itertools.combinations(tied, r):
                code = sum(2**i for i in (*sure, *pick))
                out[row, code] += p_k[row] / math.comb(len(tied), r)
    return out
