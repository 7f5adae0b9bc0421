"""Spread movers (``CountedLaw(choice="spread")``, ``lsdd sample --spread``, ``lsdd bench --methods spread``): the
exact law of the mover set against the draw's frequencies, the properties that make it useful (each token keeps
its move probability, tokens drawn together are not neighbours), the whole sampler's exact output law against its
samples, and the artifact and command-line paths."""

import pytest
import torch

from conftest import countdown_law, sampler_law_vs_samples
from lsdd.sampling.sampler import Sampler
from lsdd.sampling.conditioned import ConditionedParams, ConditionedRule
from lsdd.sampling.draws import CountedLaw, inclusion, make_generator
from lsdd.sampling.exact import ExactScore, counted_set_probs, exact_sampler_law
from lsdd.graphs import Absorbing
from lsdd.noise import LogLinear
from lsdd.sampling.schedules import uniform_times

MOVE = torch.tensor([[0.3, 0.0, 0.7, 0.2, 0.4], [1.0, 1.0, 1.0, 1.0, 1.0], [0.1, 0.5, 0.05, 0.9, 0.3],
                     [0.0, 0.0, 0.0, 0.0, 0.0], [0.4, 0.4, 0.4, 0.4, 0.4], [0.9, 0.9, 0.1, 0.1, 0.1]],
                    dtype=torch.float64)


def _draw(move, n, seed=0):
    b, length = move.shape
    x = torch.full((b * n, length), 3)
    law = CountedLaw(x, move.repeat(n, 1), torch.ones(b * n, length, 4), torch.tensor([True, True, True, False]),
                     choice="spread")
    return law.movers(make_generator(seed)).view(n, b, length)


def test_spread_set_law_matches_the_draw():
    """P(movers = S) by enumeration over the systematic offset against 40,000 draws (chi-square, row by row); a
    token with move 0 never moves; the count is the floor or ceil of the expected count; and each token moves with
    exactly its inclusion probability (its move probability itself when no share passes 1)."""
    probs = counted_set_probs(MOVE, choice="spread")
    assert torch.allclose(probs.sum(-1), torch.ones(len(MOVE), dtype=torch.float64), atol=1e-12)
    n = 40000
    moving = _draw(MOVE, n)
    bits = (moving.long() * 2 ** torch.arange(5)).sum(-1)
    for b in range(len(MOVE)):
        emp = torch.bincount(bits[:, b], minlength=32).double() / n
        live = probs[b] > 0
        assert float(emp[~live].sum()) == 0.0, b
        chi2 = float((((emp - probs[b]) ** 2 / probs[b].clamp_min(1e-300))[live]).sum() * n)
        assert chi2 < 45.0, (b, chi2, int(live.sum()))  # <= 12 live cells; P(chi2 > 45) < 1e-5 under the null
    assert not moving[:, 0, 1].any() and not moving[:, 3].any() and moving[:, 1].all()
    count = moving[:, 4].sum(-1)  # E = 2.0 exactly: always 2
    assert set(count.tolist()) == {2}
    # marginals: the exact law's, and move itself where no token's share passes 1 (rows 2, 4)
    marg = torch.stack([(probs[:, None, :] * ((torch.arange(32)[:, None] >> i) & 1).double().T[None]).sum(-1)[:, 0]
                        for i in range(5)], -1)
    assert torch.allclose(moving.double().mean(0), marg, atol=0.012)
    assert torch.allclose(marg[[2, 4]], MOVE[[2, 4]], atol=1e-12)
    # row 5 (E = 2.1): shares pass 1, so the two likely tokens are taken for sure when K = 3
    assert torch.allclose(inclusion(MOVE[5:], torch.tensor([3]))[0], torch.tensor([1.0, 1.0, 1 / 3, 1 / 3, 1 / 3],
                                                                             dtype=torch.float64))


def test_spread_never_moves_neighbours_together_when_there_is_room():
    """Sixteen masked tokens, four movers per step: spread movers are exactly four apart (systematic), while
    movers chosen by weight are neighbours in most draws; both move each token with probability 1/4."""
    move = torch.full((1, 16), 0.25, dtype=torch.float64)
    spread = _draw(move, 4000)[:, 0]
    gaps = torch.diff(spread.nonzero()[:, 1].view(-1, 4), dim=-1)
    assert (gaps == 4).all()
    law = CountedLaw(torch.full((4000, 16), 3), move.repeat(4000, 1), torch.ones(4000, 16, 4),
                     torch.tensor([True, True, True, False]))
    weight = law.movers(make_generator(0))
    assert float((weight[:, 1:] & weight[:, :-1]).any(-1).double().mean()) > 0.5
    for m in (spread, weight):
        assert torch.allclose(m.double().mean(0), torch.full((16,), 0.25, dtype=torch.float64), atol=0.035)


V, L, M = 2, 3, 4
GRAPH, NOISE = Absorbing(V), LogLinear(1e-3)


@pytest.fixture(scope="module")
def exact():
    return ExactScore(countdown_law(V, L), GRAPH, L)


def test_spread_sampler_samples_follow_its_exact_law():
    """The whole spread lsd-c sampler (random per-step parameters; countdown on 3 values, L = 4): lsdd.sampling.exact's
    output law against the frequencies of 20,000 samples; it differs from the same sampler with movers chosen by
    weight (by 0.006 in L1 here: few sets are possible at L = 4)."""
    graph, length = Absorbing(3), 4
    exact = ExactScore(countdown_law(3, length), graph, length)
    g = torch.Generator().manual_seed(3)
    p = ConditionedParams(2, 0.6 * torch.randn(2, generator=g, dtype=torch.float64),
                          torch.randn(2, generator=g, dtype=torch.float64),
                          0.3 * torch.randn(2, generator=g, dtype=torch.float64), counted=True,
                          choice="spread").requires_grad_(False)
    times = uniform_times(2)
    kw = dict(method=ConditionedRule(), coeffs=p.coeff_fn(graph))
    ref, chi2, cells = sampler_law_vs_samples(exact, graph, NOISE, times, length, kw)
    assert chi2 < cells + 6 * (2 * cells) ** 0.5, (chi2, cells)  # P(exceed) < 1e-5 under the null
    p.choice = "weight"
    weight = exact_sampler_law(exact, graph, NOISE, times, length, method=ConditionedRule(), coeffs=p.coeff_fn(graph))
    assert float((weight - ref).abs().sum()) > 0.003


def test_spread_euler_is_exact_when_there_are_no_more_tokens_than_steps(exact):
    """As counted movers: with L <= M and the true score one token moves per step, so the output law is the data
    law (TV < 1e-3) where Euler's is not."""
    data = countdown_law(V, L)
    real = (torch.arange(GRAPH.num_states ** L)[:, None] // GRAPH.num_states ** torch.arange(L - 1, -1, -1) %
            GRAPH.num_states < V).all(-1)
    smp = Sampler.spread(M)
    law = exact_sampler_law(exact, GRAPH, NOISE, smp.times_tensor(), L, **smp.loop_args(GRAPH))
    assert 0.5 * float((law.detach()[real] - data).abs().sum()) < 1e-3


def test_spread_artifact_round_trip_and_bad_values(tmp_path):
    smp = Sampler.spread(M).replace(provenance={"method": "spread", "note2": "x"})
    smp.save(tmp_path / "s.json")
    back = Sampler.load(tmp_path / "s.json")
    assert back == smp and back.movers == "spread" and back.provenance["method"] == "spread"
    coeff = back.loop_args(GRAPH)["coeffs"](0, torch.full((1, L), GRAPH.mask_id), torch.ones(1, L, 3))
    assert coeff.counted and coeff.choice == "spread"
    from lsdd.errors import UserError

    with pytest.raises(UserError, match="unknown movers 'fixed'"):
        Sampler.base("euler", M, movers="fixed")
    with pytest.raises(UserError, match="need a one-call rule"):
        Sampler.base("theta-rk2", 2 * M, movers="spread")
    with pytest.raises(ValueError, match="needs counted movers"):
        ConditionedParams(M, choice="spread")
    with pytest.raises(ValueError, match="chooses its movers by"):
        CountedLaw(torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.float64), torch.ones(1, 2, 3),
                   torch.ones(3, dtype=torch.bool), choice="nearest").movers()


def test_cli_bench_spread_rows(tmp_path, capsys):
    """`lsdd bench --methods counted spread` scores both rules at the NFE it is asked for, also on a uniform-graph
    model (where the movers are the tokens that change)."""
    import json

    from lsdd.cli import main
    from test_conditioned import _tiny_model

    model_dir = _tiny_model(tmp_path / "m", "absorbing")  # `lsdd sample --spread`: tests/test_counted.py
    bench = tmp_path / "b.json"
    assert main(["bench", "--model", model_dir, "--task", "tokens", "--nfe", "4", "--teacher-nfe", "8",
                 "--num-samples", "16", "--bases", "euler", "--methods", "counted", "spread", "--timing-repeats", "0",
                 "--json", str(bench)]) == 0
    labels = [r["label"] for r in json.loads(bench.read_text())["rows"]]
    assert "COUNTED-euler" in labels and "SPREAD-euler" in labels
    uni = _tiny_model(tmp_path / "u", "uniform")
    assert main(["bench", "--model", uni, "--task", "tokens", "--nfe", "4", "--teacher-nfe", "8", "--num-samples", "8",
                 "--bases", "euler", "--methods", "spread", "--timing-repeats", "0", "--json", str(bench)]) == 0
    rows = json.loads(bench.read_text())["rows"]
    assert [r["label"] for r in rows] == ["teacher-euler", "uniform-euler", "SPREAD-euler"]
    assert rows[2]["sampler"]["movers"] == "spread" and rows[2]["sampler"]["conditioning"] is None


def test_distill_spread_writes_spread_movers(tmp_path, capsys):
    """`lsdd distill --spread` (lsd, and lsd+ with --select): the student is rolled out with spread movers and the
    file says so whether validation keeps the learned sampler or writes the base (which then has spread movers
    too); the file samples through `lsdd sample --learned`; on a uniform-graph model --spread is asked for (not the
    default there) and works the same way."""
    import json

    from lsdd.cli import main
    from lsdd.distillation.distill import DistillConfig, distill
    from lsdd.models import load_model
    from test_conditioned import _tiny_model

    model_dir = _tiny_model(tmp_path / "m", "absorbing")
    common = ["--model", model_dir, "--nfe", "4", "--teacher-nfe", "8", "--num-traj", "32", "--epochs", "2",
              "--val-samples", "16", "--spread"]
    for i, extra in enumerate((["--method", "lsd"], ["--method", "lsd+", "--select"], ["--method", "lsd", "--force"])):
        out = tmp_path / f"s{i}.json"
        assert main(["distill", *common, *extra, "--out", str(out)]) == 0
        art = json.loads(out.read_text())
        assert art["movers"] == "spread" and art["conditioning"] is None
        assert "spread" in capsys.readouterr().out
        assert main(["sample", "--model", model_dir, "--learned", str(out), "--num", "8", "--out",
                     str(tmp_path / "x.npy")]) == 0
    # the rollout really uses spread movers: a different Phi than with independent movers (same seeds)
    model = load_model(model_dir)
    cfg = dict(nfe=4, teacher_nfe=8, num_traj=32, epochs=2, validation=False)
    spread = distill(model.score_fn, model.graph, model.noise, 8, DistillConfig(**cfg, spread=True), progress=False)
    indep = distill(model.score_fn, model.graph, model.noise, 8, DistillConfig(**cfg, spread=False), progress=False)
    assert not torch.allclose(spread.coeffs, indep.coeffs) and indep.conditioning is None
    uni = _tiny_model(tmp_path / "u", "uniform")
    out = tmp_path / "u.json"
    assert main(["distill", *common[2:], "--method", "lsd", "--model", uni, "--out", str(out)]) == 0
    art = json.loads(out.read_text())
    assert art["model"]["graph"] == "uniform" and art["movers"] == "spread"
    assert main(["sample", "--model", uni, "--learned", str(out), "--num", "8", "--out", str(tmp_path / "x.npy")]) == 0
    umodel = load_model(uni)
    assert DistillConfig(nfe=4).resolve(umodel.graph).spread is False  # the default stays off there


def test_spread_on_the_uniform_graph_keeps_each_tokens_law_and_its_sampler_matches_its_exact_law():
    """On the uniform graph the movers are the tokens that change. (1) One Euler step from every state of 3 values x
    4 tokens: the exact per-token marginals of the spread law equal the independent law's wherever no token's share
    is capped at 1 (the values are the same conditionals; only the joint of who changes differs). (2) The whole
    two-step spread sampler's exact output law (lsdd.sampling.exact) against 20,000 samples, and it is not Euler's.
    (3) Confidence slopes and value temperatures are refused off the absorbing graph."""
    from lsdd.sampling.exact import all_sequences, counted_transition
    from lsdd.graphs import Uniform
    from lsdd.noise import Geometric
    from lsdd.sampling.steps import get_rule

    graph, noise, length = Uniform(3), Geometric(), 4
    exact = ExactScore(countdown_law(3, length), graph, length)
    states = all_sequences(3, length)
    t, s = torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.35, dtype=torch.float64)
    law = get_rule("euler")(graph, noise, states, exact(states, noise.total(t).repeat(len(states))), t, s)
    counted = CountedLaw(law.x, law.move, law.weights, law.fallback, choice="spread")
    trans = counted_transition(counted, states)  # (81, 81)
    assert torch.allclose(trans.sum(-1), torch.ones(len(states), dtype=torch.float64), atol=1e-12)
    marg = torch.stack([torch.stack([(trans * (states[:, i] == v).double()[None]).sum(-1) for v in range(3)], -1)
                        for i in range(length)], 1)  # (81, L, 3)
    e = law.move.sum(-1)
    uncapped = (inclusion(law.move, e.ceil()) < 1 - 1e-12).all(-1) | (e == e.floor())
    assert int(uncapped.sum()) >= 10 and float(law.move.max()) > 0.2, (int(uncapped.sum()), float(law.move.max()))
    assert torch.allclose(marg[uncapped], law.dense()[uncapped], atol=1e-12)
    assert float((trans - law.dense()[:, torch.arange(length)[None, :], states].prod(-1)).abs().max()) > 0.01

    p = ConditionedParams(2, counted=True, choice="spread").requires_grad_(False)
    kw = dict(method=ConditionedRule(), coeffs=p.coeff_fn(graph))
    times = uniform_times(2)
    ref, chi2, cells = sampler_law_vs_samples(exact, graph, noise, times, length, kw)
    assert chi2 < cells + 6 * (2 * cells) ** 0.5, (chi2, cells)
    euler = exact_sampler_law(exact, graph, noise, times, length)
    assert float((euler - ref).abs().sum()) > 0.003
    bad = ConditionedParams(2, slope=torch.ones(2, dtype=torch.float64), counted=True,
                            choice="spread").requires_grad_(False)
    with pytest.raises(ValueError, match="absorbing graph only"):
        exact_sampler_law(exact, graph, noise, times, length, method=ConditionedRule(), coeffs=bad.coeff_fn(graph))
    ref = {"graph": "uniform", "num_tokens": 3, "noise": noise.to_dict()}
    d = Sampler.spread(2).replace(model=ref).to_dict()
    assert Sampler.from_dict(d).movers == "spread"
    from lsdd.errors import UserError

    with pytest.raises(UserError, match="confidence slopes must be 0"):
        Sampler.from_dict({**d, "conditioning": {"feature": "confidence", "slope": [0.5, 0.0], "beta": [1.0, 1.0]}})
    # a per-step value temperature of the jump targets is allowed off the absorbing graph, and changes the law (at the
    # first step from t = 1 the scores are nearly flat: tempered at the last)
    tempered = Sampler.from_dict({**d, "conditioning": {"feature": "confidence", "slope": [0.0, 0.0], "beta": [1.0, 2.0]}})
    law_t = exact_sampler_law(exact, graph, noise, times, length, **tempered.loop_args(graph))
    law_s = exact_sampler_law(exact, graph, noise, times, length, **Sampler.spread(2).loop_args(graph))
    assert float((law_t - law_s).abs().sum()) > 0.003 and abs(float(law_t.sum()) - 1.0) < 1e-12
