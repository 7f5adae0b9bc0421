"""Peer mover orders (``lsdd.sampling.orders``: DUS dilated, 1-D Halton, confidence / margin / entropy top-K):
the orders themselves, the exact law of one step's mover set against the draw's frequencies on an exact toy (true
score, absorbing graph), the count K_b, NFE, the forced last step, seeds, the whole sampler's exact output law
against its samples, the artifact, and the command line."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import countdown_law, sampler_law_vs_samples
from lsdd.errors import UserError
from lsdd.graphs import Absorbing, Uniform
from lsdd.noise import LogLinear
from lsdd.sampling.conditioned import ConditionedRule
from lsdd.sampling.draws import make_generator
from lsdd.sampling.exact import ExactScore, exact_sampler_law, order_set_probs, seq_index
from lsdd.sampling.generate import sample
from lsdd.sampling.loop import reverse_loop
from lsdd.sampling.orders import (ORDERS, OrderedLaw, RunMemory, dilated_block, dilated_ranks, free_ranks,
                                  halton_breaks, halton_ranks, van_der_corput)
from lsdd.sampling.sampler import Sampler

V, L, M = 3, 5, 3
GRAPH, NOISE = Absorbing(V), LogLinear(1e-3)
MASK = GRAPH.mask_id


@pytest.fixture(scope="module")
def exact():
    return ExactScore(countdown_law(V, L), GRAPH, L)


# ---- the orders -------------------------------------------------------------------------------------------------
def test_van_der_corput_and_halton_order_of_8():
    """phi_2(i), i = 0..7, are the mirrored binary digits; the 1-D Halton order of 8 positions is bit reversal, a
    rotation u is a cyclic shift by floor(8 u), and for 6 positions the points that fall on a visited cell are
    skipped (u = 0.3: cells 1 4 3 0 2 5 [4 1])."""
    assert van_der_corput(8).tolist() == [0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]
    order = halton_ranks(8, torch.tensor([0.0, 3 / 8 + 0.01])).argsort(-1)
    assert order[0].tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    assert order[1].tolist() == [(p + 3) % 8 for p in [0, 4, 2, 6, 1, 5, 3, 7]]
    assert halton_ranks(6, torch.tensor([0.3])).argsort(-1)[0].tolist() == [1, 4, 3, 0, 2, 5]
    assert halton_breaks(8).tolist() == [j / 8 for j in range(9)]  # for 2^m positions the order changes at j / L
    for n in range(1, 12):  # every rotation visits every position once
        ranks = halton_ranks(n, torch.rand(20, dtype=torch.float64))
        assert (ranks.sort(-1).values == torch.arange(n)).all()


def test_dilated_order_of_a_block_of_8_and_over_the_free_positions():
    """DUS with base 2: rounds of stride 4, 2, 1 (0-based {0, 4}, {2, 6}, {1, 3, 5, 7}), left to right inside a
    round. With held positions (a prompt, or the positions outside a semi-autoregressive block) the order runs
    over the free positions only, in position order; all free is the whole-sequence order."""
    assert dilated_block(8) == [0, 4, 2, 6, 1, 3, 5, 7]
    assert dilated_block(16) == [0, 8, 4, 12, 2, 6, 10, 14, 1, 3, 5, 7, 9, 11, 13, 15]
    assert dilated_block(6) == [0, 3, 1, 2, 4, 5] and dilated_block(1) == [0]
    assert dilated_ranks(8).argsort().tolist() == dilated_block(8)
    free = torch.tensor([[False, False, True, True, True, True, False, False, False, False],  # block {2..5}
                         [True] * 10])
    ranks = free_ranks(free, lambda n, rows: dilated_ranks(n))
    # the free positions 2 3 4 5 take the DUS order of 4: 0 2 1 3 -> positions 2 4 3 5; held ones rank after
    assert ranks[0].argsort().tolist()[:4] == [2, 4, 3, 5] and (ranks[0, ~free[0]] >= 4).all()
    assert torch.equal(ranks[1], dilated_ranks(10))


def _hand_law(choice, n=1, expected=2.0):
    """Five tokens, the last unmasked (and most confident); value laws over 3 real tokens chosen so that the
    three scored orders pick different pairs: max probability .55 .6 .5 .52 -> {1, 0}; top-1 minus top-2 .1 .4 .25
    .04 -> {1, 2}; entropy .688 .950 1.040 .692 -> lowest {0, 3}."""
    p = torch.tensor([[0.55, 0.45, 0.0], [0.6, 0.2, 0.2], [0.5, 0.25, 0.25], [0.52, 0.48, 0.0], [1.0, 0.0, 0.0]],
                     dtype=torch.float64)
    weights = torch.cat([p, torch.zeros(5, 1, dtype=torch.float64)], -1)[None].repeat(n, 1, 1)
    x = torch.tensor([[MASK, MASK, MASK, MASK, 0]]).repeat(n, 1)
    move = torch.tensor([[0.4, 0.4, 0.4, 0.4, 0.0]], dtype=torch.float64).repeat(n, 1)
    return OrderedLaw(x, move, weights, torch.tensor([True, True, True, False]),
                      expected=torch.full((n,), expected, dtype=torch.float64), choice=choice, memory=RunMemory())


@pytest.mark.parametrize("choice,picked", [("confidence", {0, 1}), ("margin", {1, 2}), ("entropy", {0, 3})])
def test_scored_orders_pick_the_right_tokens_on_a_hand_made_law(choice, picked):
    law = _hand_law(choice, n=50)
    moving = law.movers(make_generator(0))
    assert all(set(row.nonzero()[:, 0].tolist()) == picked for row in moving)
    code = sum(2**i for i in picked)
    assert order_set_probs(_hand_law(choice))[0, code] == 1.0


def test_ties_are_broken_uniformly_at_random():
    """Tokens 0 and 3 share their value law and lead by confidence; K = 1 takes either with probability 1/2."""
    law = _hand_law("confidence", n=4000, expected=1.0)
    law.weights[:, 3] = law.weights[:, 1]  # tokens 1 and 3 tied at the top (0.6)
    probs = order_set_probs(OrderedLaw(law.x[:1], law.move[:1], law.weights[:1], law.fallback,
                                       expected=law.expected[:1], choice="confidence"))
    assert probs[0, 2] == probs[0, 8] == 0.5
    moving = law.movers(make_generator(1))
    assert (moving.sum(-1) == 1).all() and abs(float(moving[:, 1].double().mean()) - 0.5) < 0.03


# ---- one step on the exact toy ---------------------------------------------------------------------------------
STATES = torch.tensor([[MASK] * L, [MASK, 1, MASK, MASK, MASK], [2, MASK, MASK, 0, MASK]])


HELD = torch.tensor([False, False, False, True, True])  # e.g. a block of the first 3 positions


def _step_law(exact, order, x, k=0, held=None, last=False):
    smp = Sampler.base("euler", M, movers=order)
    fn = smp.loop_args(GRAPH)["coeffs"]
    times = smp.times_tensor()
    for j in range(k + 1):  # run the coefficient function up to step k (a fresh run memory at step 0)
        coeff = fn(j, x, exact(x, NOISE.total(times[j]).expand(x.shape[0])))
    score = exact(x, NOISE.total(times[k]).expand(x.shape[0])).scatter(-1, x[..., None], 1.0)
    law = ConditionedRule()(GRAPH, NOISE, x, score, times[k], times[k + 1], coeff, last=last)
    assert isinstance(law, OrderedLaw)
    return law if held is None else law.pin(held)


@pytest.mark.parametrize("order,held", [("dilated", None), ("dilated", HELD), ("halton", None), ("halton", HELD),
                                        ("confidence", None), ("confidence", HELD), ("margin", None),
                                        ("entropy", None)])
def test_one_step_mover_set_law_matches_the_draw(exact, order, held):
    """(a) P(movers = S) of one step, exactly (order_set_probs: the rounding of K, the Halton rotation's
    intervals, the tie-breaks) against 20,000 draws per state, chi-square; (b) exactly K_b tokens move, K_b the
    stochastic rounding of E_b (P(ceil) = frac(E_b)), only masked tokens move, and never a held one."""
    n = 20000
    for x in STATES:
        x = x[None]
        probs = order_set_probs(_step_law(exact, order, x, held=held))[0]
        assert abs(float(probs.sum()) - 1.0) < 1e-12
        law = _step_law(exact, order, x.repeat(n, 1), held=held)
        moving = law.movers(make_generator(7))
        assert not moving[x.repeat(n, 1) != MASK].any()
        assert held is None or not moving[:, held].any()
        e = law.expected_count()[0]
        count = moving.sum(-1)
        assert set(count.unique().tolist()) <= {math.floor(e), math.ceil(e)}
        assert abs(float((count > math.floor(e)).double().mean()) - float(e - e.floor())) < 0.015
        emp = torch.bincount((moving.long() * 2 ** torch.arange(L)).sum(-1), minlength=2**L).double() / n
        live = probs > 0
        assert float(emp[~live].sum()) == 0.0
        chi2 = float((((emp - probs) ** 2 / probs.clamp_min(1e-300))[live]).sum() * n)
        cells = int(live.sum())
        assert chi2 < cells + 6 * (2 * cells) ** 0.5 + 10, (order, x.tolist(), chi2, cells)


def test_fixed_orders_move_the_first_positions_in_their_order(exact):
    """From all-mask with K = 2: dilated takes {0, 4} (L = 5: stride floor(5/2) = 2 gives {0, 2, 4}, left to
    right); with positions 0 and 1 held (e.g. a prompt) it takes the DUS order of the 3 free ones, {2, 3}; the
    Halton set for a fixed rotation is its first two positions."""
    x = STATES[:1]
    law = _step_law(exact, "dilated", x)
    law.expected = torch.tensor([2.0], dtype=torch.float64)
    assert order_set_probs(law)[0, 1 + 4] == 1.0
    law = law.pin(torch.tensor([True, True, False, False, False]))
    law.expected = torch.tensor([2.0], dtype=torch.float64)
    assert order_set_probs(law)[0, 4 + 8] == 1.0
    law = _step_law(exact, "halton", x)
    law.expected = torch.tensor([2.0], dtype=torch.float64)
    law.memory.shift = torch.tensor([0.0])  # positions floor(5 phi): 0, 2, 1, 3, 0, [3, 1, 4]
    assert order_set_probs(law)[0, 1 + 4] == 1.0


@pytest.mark.parametrize("order", ORDERS)
def test_last_step_unmasks_everything(exact, order):
    """(d) the forced last step moves every masked token, exactly and in draws."""
    x = STATES[2:]
    probs = order_set_probs(_step_law(exact, order, x, k=M - 1, last=True))
    masked = sum(2**i for i in range(L) if int(x[0, i]) == MASK)
    assert probs[0, masked] == 1.0
    assert _step_law(exact, order, x.repeat(50, 1), k=M - 1, last=True).movers(make_generator(0)).sum(-1).eq(3).all()


# ---- whole samplers --------------------------------------------------------------------------------------------
def _model(exact):
    return SimpleNamespace(score_fn=exact, graph=GRAPH, noise=NOISE, length=L, device=torch.device("cpu"))


@pytest.mark.parametrize("order", ORDERS)
def test_nfe_seeds_and_no_mask_left(exact, order):
    """(c) NFE = the number of steps (counted by the loop; x 3 blocks of 2 of the 5 positions for dilated in
    blocks); (e) the same seed gives the same samples, another seed others; every sample is free of masks."""
    smp = Sampler.base("euler", M, movers=order, block=2 if order == "dilated" else None)
    a, b = sample(_model(exact), smp, 64, seed=5, batch_size=32), sample(_model(exact), smp, 64, seed=5, batch_size=32)
    assert a.nfe == b.nfe == smp.total_nfe(L) == M * (3 if order == "dilated" else 1)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, sample(_model(exact), smp, 64, seed=6, batch_size=32).x)
    assert not (a.x == MASK).any()


@pytest.mark.parametrize("order", ["dilated", "confidence", "margin", "entropy"])
def test_sampler_output_follows_its_exact_law(exact, order):
    """The whole M-step sampler: exact output law (propagated through every step's exact set law) against the
    frequencies of 20,000 samples."""
    smp = Sampler.base("euler", M, movers=order)
    ref, chi2, cells = sampler_law_vs_samples(exact, GRAPH, NOISE, smp.times_tensor(), L, smp.loop_args(GRAPH))
    assert chi2 < cells + 6 * (2 * cells) ** 0.5, (chi2, cells)


def test_halton_sampler_keeps_one_rotation_per_sequence_and_follows_its_exact_law(exact):
    """Halton's rotation is drawn once per sequence and kept: the exact output law is the mixture, over the
    intervals of u on which the order is constant, of the (Markov) laws with u fixed; 20,000 samples match it. The
    run's rotation is drawn at step 0 and is the same tensor at every later step; a new run draws a new one."""
    smp = Sampler.base("euler", M, movers="halton")
    args = smp.loop_args(GRAPH)
    times = smp.times_tensor()

    def fixed(u):
        inner = smp.loop_args(GRAPH)["coeffs"]

        def fn(k, x, score):
            c = inner(k, x, score)
            c.memory.shift = torch.tensor([u], dtype=torch.float64)
            return c

        return fn

    edges = halton_breaks(L).tolist()
    ref = sum((hi - lo) * exact_sampler_law(exact, GRAPH, NOISE, times, L, method=args["method"],
                                            coeffs=fixed((lo + hi) / 2))
              for lo, hi in zip(edges[:-1], edges[1:]))
    assert abs(float(ref.sum()) - 1.0) < 1e-12
    n = 20000
    out = reverse_loop(exact, GRAPH, NOISE, times, torch.full((n, L), MASK), rule=args["method"],
                       coeffs=args["coeffs"], generator=make_generator(1)).x
    emp = torch.bincount(seq_index(out, GRAPH.num_states), minlength=ref.numel()).double() / n
    live = ref > 1e-9
    assert float(emp[~live].sum()) == 0.0
    chi2 = float((((emp - ref) ** 2 / ref)[live]).sum() * n)
    cells = int(live.sum())
    assert chi2 < cells + 6 * (2 * cells) ** 0.5, (chi2, cells)
    seen = []
    for _ in range(2):
        reverse_loop(exact, GRAPH, NOISE, times, torch.full((8, L), MASK), rule=args["method"], coeffs=args["coeffs"],
                     generator=make_generator(2), on_step=lambda info: seen.append(info.law.memory))
    assert all(m is seen[0] for m in seen[:M]) and seen[M] is not seen[0] and seen[0].shift.shape == (8,)
    assert torch.equal(seen[0].shift, seen[M].shift)  # the same seed draws the same rotations, into a fresh memory
    with pytest.raises(ValueError, match="rotation is drawn at a run's first step"):
        exact_sampler_law(exact, GRAPH, NOISE, times, L, **args)  # no rotation to propagate after step 0


# ---- the artifact and the command line -------------------------------------------------------------------------
def test_artifact_round_trip_describe_and_bad_values(tmp_path):
    smp = Sampler.base("euler", 4, movers="dilated", block=16)
    smp.save(tmp_path / "d.json")
    back = Sampler.load(tmp_path / "d.json")
    assert back == smp and back.block == 16 and "dilated order" in back.describe()
    assert "in blocks of 16" in back.describe()
    assert "block" not in Sampler.base("euler", 4, movers="halton").to_dict()  # only written when set
    assert Sampler.base("euler", 4, movers="halton", block=4).block == 4  # blocks apply to every sampler
    for order in ORDERS:
        s = Sampler.base("tweedie", 4, movers=order)
        assert Sampler.from_dict(s.to_dict()) == s and f"{order} order" in s.describe()
        with pytest.raises(UserError, match=f"the {order} mover order .* absorbing graph"):
            s.loop_args(Uniform(3))
    with pytest.raises(UserError, match="got block 0"):
        Sampler.base("euler", 4, movers="dilated", block=0)
    with pytest.raises(UserError, match="need a one-call rule"):
        Sampler.base("theta-rk2", 4, movers="margin")
    with pytest.raises(ValueError, match="RunMemory"):
        OrderedLaw(STATES[:1], torch.ones(1, L, dtype=torch.float64), torch.ones(1, L, 4),
                   torch.ones(4, dtype=torch.bool), choice="halton")


def test_cli_orders_list_matches_the_library():
    from lsdd.cli import sample as cli_sample

    assert cli_sample.ORDERS == ORDERS


@pytest.mark.parametrize("order", ORDERS)
def test_cli_sample_peer_order_on_countdown(tmp_path, capsys, order):
    """`lsdd sample --model countdown --sampler NAME`: Euler with those movers, the same samples as lsdd.sample
    with Sampler.base("euler", ..., movers=NAME), NFE = steps, no mask left."""
    import lsdd
    from lsdd.cli import main

    out = tmp_path / "x.npy"
    extra = ["--block", "16"] if order == "dilated" else []  # 64 tokens: 4 blocks of 16, 4 steps each
    assert main(["sample", "--model", "countdown", "--sampler", order, "--nfe", "16" if extra else "4",
                 "--num-samples", "4", "--seed", "2", "--out", str(out), *extra]) == 0
    said = capsys.readouterr().out
    assert f"{order} order" in said and f"{16 if extra else 4} network calls per sample" in said
    model = lsdd.load_model("countdown")
    want = lsdd.sample(model, Sampler.base("euler", 4, movers=order, block=16 if extra else None), 4, seed=2)
    x = np.load(out)
    assert np.array_equal(x, want.x.numpy()) and not (x == model.graph.mask_id).any()


@pytest.mark.parametrize("argv,says", [(["--sampler", "halton", "--block", "16", "--nfe", "6"],
                                        "--nfe 6 is not a multiple of the 4 blocks"),
                                       (["--sampler", "margin", "--spread"], "--spread applies to"),
                                       (["--sampler", "entropy", "--theta", "0.3"], "--theta applies to")])
def test_cli_sample_peer_order_refusals(tmp_path, capsys, argv, says):
    from lsdd.cli import main

    assert main(["sample", "--model", "countdown", "--num", "2", "--out", str(tmp_path / "x.npy"), *argv]) == 2
    assert says in capsys.readouterr().err


def test_cli_bench_peer_order_rows(tmp_path, capsys):
    """`lsdd bench --methods dilated halton confidence margin entropy`: one row each at the NFE asked for; refused
    with one line on a uniform-graph model."""
    import json

    from lsdd.cli import main
    from test_conditioned import _tiny_model

    model_dir = _tiny_model(tmp_path / "m", "absorbing")
    bench = tmp_path / "b.json"
    assert main(["bench", "--model", model_dir, "--task", "tokens", "--nfe", "4", "--teacher-nfe", "8",
                 "--num-samples", "8", "--bases", "euler", "--methods", *ORDERS, "--timing-repeats", "0",
                 "--json", str(bench)]) == 0
    rows = json.loads(bench.read_text())["rows"]
    assert [r["label"] for r in rows[2:]] == [f"{o.upper()}-euler" for o in ORDERS]
    assert [r["sampler"]["movers"] for r in rows[2:]] == list(ORDERS) and all(r["nfe"] == 4 for r in rows[2:])
    uni = _tiny_model(tmp_path / "u", "uniform")
    assert main(["bench", "--model", uni, "--task", "tokens", "--nfe", "4", "--teacher-nfe", "8", "--num-samples", "8",
                 "--bases", "euler", "--methods", "halton", "--timing-repeats", "0", "--json", str(bench)]) == 2
    assert "absorbing graph only" in capsys.readouterr().err
