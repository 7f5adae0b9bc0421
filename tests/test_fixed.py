"""Fixed positions and semi-autoregressive blocks in the one reverse loop, on exact toys (true score, every state
enumerated): the conditional output law against the data's conditional law, pinned step laws against their
references, counted movers over the free positions only, NFE across blocks, DUS inside each block, and the
uniform graph's projection error, measured."""

import math
from types import SimpleNamespace

import pytest
import torch

from conftest import toy_law
from lsdd.graphs import Absorbing, Uniform
from lsdd.noise import LogLinear
from lsdd.sampling.draws import CountedLaw, make_generator
from lsdd.sampling.exact import (ExactScore, counted_set_probs, exact_conditional_law, exact_reverse_law,
                                 exact_sampler_law, seq_index)
from lsdd.sampling.generate import sample
from lsdd.sampling.loop import block_ids, count_blocks, reverse_loop
from lsdd.sampling.orders import dilated_block
from lsdd.sampling.sampler import Sampler
from lsdd.sampling.samplers import euler_probs, tweedie_probs
from lsdd.sampling.schedules import uniform_times

V, L = 3, 4
NOISE = LogLinear(1e-3)
ABS, UNI = Absorbing(V), Uniform(V)
MASK = ABS.mask_id


def tv(p, q):
    return 0.5 * float((p - q).abs().sum())


@pytest.fixture(scope="module")
def exact():
    return ExactScore(toy_law(V, L, seed=1), ABS, L)


@pytest.fixture(scope="module")
def exact_uniform():
    return ExactScore(toy_law(V, L, seed=3), UNI, L)


def _model(exact, graph=ABS, length=L):
    return SimpleNamespace(score_fn=exact, graph=graph, noise=NOISE, length=length, device=torch.device("cpu"))


def _given(graph, pairs):
    """(L,) int64 given tokens: {position: token}, the free marker (num_tokens) elsewhere."""
    g = torch.full((L,), graph.num_tokens, dtype=torch.long)
    for i, v in pairs.items():
        g[i] = v
    return g


GIVEN = _given(ABS, {1: 2})
SAMPLERS = {
    "euler": Sampler.euler(6), "tweedie": Sampler.tweedie(6), "theta-rk2": Sampler.base("theta-rk2", 6),
    "theta-trapezoidal": Sampler.base("theta-trapezoidal", 6), "counted": Sampler.counted(6),
    "spread": Sampler.spread(6), **{o: Sampler.base("euler", 6, movers=o) for o in
                                    ("dilated", "halton", "confidence", "margin", "entropy")},
    "lsd-c": Sampler(uniform_times(3).tolist(), conditioning={"feature": "confidence", "slope": [0.5, 1.0, 0.0],
                                                               "beta": [1.5, 1.0, 2.0]}, movers="counted"),
    "eb": Sampler.eb(0.5), "threshold": Sampler.threshold(0.6),
}


# ---- every sampler keeps the given tokens -------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("block", [None, 2])
def test_given_tokens_appear_unchanged_in_every_output(exact, name, block):
    """The given token is in every sample, nothing stays masked, and the count of calls is the grid's times the
    blocks (3 free positions in blocks of 2: 2 blocks); an all-free condition is the unconditional run, bit for
    bit."""
    smp = SAMPLERS[name].replace(block=block)
    out = sample(_model(exact), smp, 64, seed=2, batch_size=32, fixed=GIVEN)
    # the held token never changes, and every sample is complete
    assert (out.x[:, 1] == 2).all() and not (out.x == MASK).any() and out.fixed[:, 1].all()
    if smp.adaptive is None:
        assert out.nfe == smp.nfe * (1 if block is None else 2) == smp.total_nfe(3)
    free = sample(_model(exact), smp, 64, seed=2, batch_size=32, fixed=_given(ABS, {}))
    assert torch.equal(free.x, sample(_model(exact), smp, 64, seed=2, batch_size=32).x)


@pytest.mark.parametrize("name", ["euler", "tweedie", "theta-rk2", "counted", "spread"])
def test_given_tokens_stay_on_the_uniform_graph(exact_uniform, name):
    given = _given(UNI, {0: 1, 3: 2})
    out = sample(_model(exact_uniform, UNI), SAMPLERS[name], 64, seed=1, batch_size=32, fixed=given)
    assert (out.x[:, 0] == 1).all() and (out.x[:, 3] == 2).all()


# ---- the law -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["euler", "tweedie"])
def test_conditional_law_tends_to_the_data_conditional_law(exact, rule):
    """Absorbing graph: holding the given tokens is exact conditioning, so with many steps the sampler's exact
    output law tends to p0(x | x_1 = 2); the error falls with the steps (about 1 / M: first order)."""
    want = exact_conditional_law(exact, GIVEN)
    errs = []
    for m in (4, 16, 64, 256):
        law = exact_sampler_law(exact, ABS, NOISE, uniform_times(m), L, method=rule, given=GIVEN)
        assert abs(float(law.sum()) - 1.0) < 1e-12
        held = torch.tensor([0, 1, 0, 0], dtype=torch.bool)
        states = torch.cartesian_prod(*[torch.arange(ABS.num_states)] * L)
        assert float(law[(states[:, held] != 2).any(-1)].sum()) == 0.0  # never another token at position 1
        errs.append(tv(law, want))
    print(f"{rule}: TV to the conditional law at M = 4, 16, 64, 256: {[round(e, 4) for e in errs]}")
    assert errs == sorted(errs, reverse=True) and errs[-1] < 0.01 and errs[-1] < errs[0] / 20


def test_blocks_tend_to_the_data_law_too(exact):
    """Semi-autoregressive blocks on the exact score: block 0 is drawn from its marginal (block 1 masked reads as
    unknown), then block 1 given block 0, so with many steps per block the output law tends to p0 itself."""
    ref = exact_reverse_law(exact, NOISE, 1e-5)
    errs = [tv(exact_sampler_law(exact, ABS, NOISE, uniform_times(m), L, block=2), ref) for m in (4, 64)]
    print(f"blocks of 2: TV to p0 at M = 4, 64 per block: {[round(e, 4) for e in errs]}")
    assert errs[1] < 0.01 and errs[1] < errs[0] / 5


@pytest.mark.parametrize("name", ["euler", "theta-trapezoidal", "counted", "spread", "dilated", "confidence"])
@pytest.mark.parametrize("block", [None, 2])
def test_conditional_sampler_draws_follow_its_exact_law(exact, name, block):
    """The propagated exact law of a conditional (and blocked) run against 20,000 of its draws (chi-square): the
    pinned laws are drawn as they are propagated."""
    smp = SAMPLERS[name].replace(block=block)
    args = smp.loop_args(ABS)
    law = exact_sampler_law(exact, ABS, NOISE, smp.times_tensor(), L, method=args["method"], coeffs=args["coeffs"],
                            given=GIVEN, block=block)
    n = 20000
    start = torch.where(GIVEN != V, GIVEN, torch.full_like(GIVEN, MASK)).repeat(n, 1)
    out = reverse_loop(exact, ABS, NOISE, smp.times_tensor(), start, rule=args["method"], coeffs=args["coeffs"],
                       generator=make_generator(4), fixed=(GIVEN != V).repeat(n, 1), block=block).x
    emp = torch.bincount(seq_index(out, ABS.num_states), minlength=law.numel()).double() / n
    live = law > 1e-9
    assert float(emp[~live].sum()) == 0.0
    chi2 = float((((emp - law) ** 2 / law)[live]).sum() * n)
    cells = int(live.sum())
    assert chi2 < cells + 6 * (2 * cells) ** 0.5 + 10, (chi2, cells)


# ---- one step ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,probs", [("euler", euler_probs), ("tweedie", tweedie_probs)])
@pytest.mark.parametrize("graph", ["absorbing", "uniform"])
def test_pinned_step_law_is_the_reference_with_one_hot_held_rows(exact, exact_uniform, method, probs, graph):
    """A step's law with positions held: the dense reference law at the free positions, the one-hot of the current
    token at the held ones (absorbing: a held *masked* position, as a later block is, stays masked)."""
    g, ex = (ABS, exact) if graph == "absorbing" else (UNI, exact_uniform)
    x = torch.tensor([[g.num_states - 1, 1, g.num_states - 1, 0], [0, g.num_states - 1, 2, g.num_states - 1]])
    held = torch.tensor([[False, True, True, False], [True, False, False, True]])
    t, s = torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    score = ex(x, NOISE.total(t).expand(2))
    seen = {}  # the law of step 1 (0.7 -> 0.4) at x: the loop stays at x (advance returns it)
    reverse_loop(ex, g, NOISE, torch.tensor([1.0, 0.7, 0.4, 0.1], dtype=torch.float64), x, rule=method, fixed=held,
                 advance=lambda info: seen.setdefault(info.k, info.law).x)
    got = seen[1].dense()
    ref = probs(g, NOISE, x, score, t, s)
    one_hot = torch.nn.functional.one_hot(x, g.num_states).to(torch.float64)
    want = torch.where(held[..., None], one_hot, ref)
    assert torch.allclose(got, want, atol=1e-12)


def test_counted_movers_count_the_free_positions_only(exact):
    """A counted step with held masked positions (a later block): K's expected value is the sum of the move
    probabilities of the free masked tokens only, and the exact mover-set law puts no mass on a held one."""
    x = torch.full((1, L), MASK)
    held = torch.tensor([False, False, True, True])
    smp = Sampler.counted(4)
    args = smp.loop_args(ABS)
    seen = {}
    reverse_loop(exact, ABS, NOISE, smp.times_tensor()[:2], x, rule=args["method"], coeffs=args["coeffs"],
                 fixed=held, advance=lambda info: seen.setdefault("law", info.law).x)
    law = seen["law"]
    assert isinstance(law, CountedLaw)
    free_move = law.move[0, ~held]
    assert (law.move[0, held] == 0).all() and torch.allclose(law.expected, free_move.sum()[None])
    sets = counted_set_probs(law.move, law.expected)[0]
    codes = torch.arange(2**L)
    touches_held = ((codes >> 2) & 1).bool() | ((codes >> 3) & 1).bool()
    assert float(sets[touches_held].sum()) == 0.0 and abs(float(sets.sum()) - 1.0) < 1e-12
    # draws: only free tokens move, their number the stochastic rounding of E
    movers = CountedLaw(law.x.repeat(5000, 1), law.move.repeat(5000, 1), law.weights.repeat(5000, 1, 1),
                        law.fallback, expected=law.expected.repeat(5000)).movers(make_generator(0))
    assert not movers[:, held].any()
    e = float(law.expected)
    assert set(movers.sum(-1).unique().tolist()) <= {math.floor(e), math.ceil(e)}


# ---- blocks --------------------------------------------------------------------------------------------------------
def test_block_partition_and_count():
    """Blocks are runs of B free positions in position order (held ones get -1); their number is that of the row
    with the most free positions."""
    fixed = torch.tensor([[True, True, False, False, False, False, False], [True] * 4 + [False] * 3])
    assert block_ids(fixed, 7, 2).tolist() == [[-1, -1, 0, 0, 1, 1, 2], [-1] * 4 + [0, 0, 1]]
    assert count_blocks(fixed, 7, 2) == 3 and count_blocks(None, 7, 2) == 4 and count_blocks(fixed, 7, None) == 1


def _flat_score(x, sigma):
    """Every clean token equally likely: s_y = 1 / (N (e^sigma - 1)) on the absorbing graph (of N = 3 tokens)."""
    s = torch.ones(*x.shape, V + 1) / (V * torch.expm1(sigma.double())[:, None, None])
    return s.float()


@pytest.mark.parametrize("name", ["euler", "spread", "dilated", "theta-rk2"])
def test_nfe_counted_across_blocks_with_prompts_of_different_lengths(name):
    """Two prompts (1 and 5 given tokens) on 12 positions in blocks of 4: 11 and 7 free positions, so 3 blocks;
    every sample makes 3 x the grid's calls, counted by the loop; the row with 2 blocks idles through the third."""
    model = SimpleNamespace(score_fn=_flat_score, graph=ABS, noise=NOISE, length=12, device=torch.device("cpu"))
    smp = SAMPLERS[name].replace(block=4)
    calls = []
    counting = lambda x, sigma: (calls.append(x.shape[0]), _flat_score(x, sigma))[1]  # noqa: E731
    model.score_fn = counting
    out = sample(model, smp, 6, seed=0, batch_size=6, prompt=[[0], [1, 2, 0, 1, 2]])
    assert out.nfe == 3 * smp.nfe == len(calls) and not (out.x == MASK).any()
    assert (out.x[0::2, 0] == 0).all() and (out.x[1::2, :5] == torch.tensor([1, 2, 0, 1, 2])).all()


def test_dilated_runs_the_dus_order_inside_each_block():
    """DUS in blocks (the paper's scheme): block j is decoded in its own grid, after blocks < j and before > j,
    and at every step the revealed positions of the current block are a prefix of the block's dilated order."""
    length, block, m = 12, 4, 3
    x = torch.full((16, length), MASK)
    smp = Sampler.base("euler", m, movers="dilated", block=block)
    args = smp.loop_args(ABS)
    order = dilated_block(block)
    history = []
    reverse_loop(_flat_score, ABS, NOISE, smp.times_tensor(), x, rule=args["method"], coeffs=args["coeffs"],
                 block=block, generator=make_generator(0), on_step=lambda info: history.append((info.block, info.x)))
    history.append((None, None))
    for (j, before), (_, after) in zip(history[:-1], history[1:] + [(None, None)]):
        if after is None:
            break
        lo, hi = j * block, (j + 1) * block
        assert (after[:, :lo] != MASK).all() and (after[:, hi:] == MASK).all() or j == length // block - 1
        revealed = (after[:, lo:hi] != MASK)
        for row in revealed:
            k = int(row.sum())
            assert sorted(order[:k]) == row.nonzero()[:, 0].tolist()
    assert [j for j, _ in history[:-1]] == [j for j in range(3) for _ in range(m)]


# ---- the uniform graph: projection is an approximation ----------------------------------------------------------
def test_uniform_graph_projection_error_is_measured(exact_uniform):
    """On the uniform graph the network reads the held tokens as noisy states x_t, not clean data, so holding them
    fixed does not give the conditional law even with many steps. Measured on the toy (V = 3, L = 4, a random data
    law, positions 0 and 3 held): the TV between the projected Euler sampler's exact output law at M = 256 and
    p0(x | x_0, x_3) is printed and bounded; for scale, the unconditional sampler at M = 256 is within the printed
    TV of its own target, and the conditional law is far from the unconditional one."""
    given = _given(UNI, {0: 1, 3: 2})
    want = exact_conditional_law(exact_uniform, given)
    law = exact_sampler_law(exact_uniform, UNI, NOISE, uniform_times(256), L, given=given)
    err = tv(law, want)
    free_law = exact_sampler_law(exact_uniform, UNI, NOISE, uniform_times(256), L)
    base_err = tv(free_law, exact_reverse_law(exact_uniform, NOISE, 1e-5))
    held = torch.cartesian_prod(*[torch.arange(V)] * L)
    keep = (held[:, 0] == 1) & (held[:, 3] == 2)
    marg = torch.where(keep, free_law, torch.zeros_like(free_law))
    gap = tv(marg / marg.sum(), want)  # the unconditional law, restricted to the given tokens
    print(f"uniform graph, positions 0 and 3 held: TV(projected sampler, conditional law) = {err:.4f} at M = 256; "
          f"unconditional sampler vs its target {base_err:.4f}; restricted unconditional vs conditional {gap:.4f}")
    assert abs(float(law.sum()) - 1.0) < 1e-12 and float(law[~keep].sum()) == 0.0
    assert err < 0.15  # the approximation: bounded, not exact
    assert err > 10 * base_err  # and a real error, far above the sampler's own discretisation error
