"""Adaptive samplers (EB-Sampler, Fast-dLLM threshold) on exact toys: the rules against a naive enumeration
of the papers' statements on the true clean-token law, per-sample NFE, degenerate parameters, seeds,
match_budget, the Sampler value and the CLI."""

import itertools
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import lsdd
from lsdd.errors import UserError
from lsdd.graphs import Absorbing, Uniform
from lsdd.noise import Geometric, LogLinear
from lsdd.sampling.adaptive import (AdaptiveLaw, adaptive_loop, clean_law, match_budget, time_of_masked_fraction)
from lsdd.sampling.draws import make_generator
from lsdd.sampling.exact import ExactScore, all_sequences
from lsdd.sampling.sampler import Sampler

N, L = 2, 4  # real tokens, length
NOISE = LogLinear(1e-3)


def _p0(seed: int = 0, num_tokens: int = N, length: int = L) -> torch.Tensor:
    """A full-support data law over all num_tokens^length sequences whose positions differ in how certain
    they are (so the entropy order is not a tie)."""
    g = torch.Generator().manual_seed(seed)
    seqs = all_sequences(num_tokens, length)
    # position i prefers token 0 with a strength that grows with i, plus a random coupling
    logits = (seqs == 0).to(torch.float64) @ torch.linspace(0.2, 2.5, length, dtype=torch.float64)
    logits = logits + 0.7 * torch.randn(seqs.shape[0], generator=g, dtype=torch.float64)
    return torch.softmax(logits, 0)


class UniqueScore:
    """The exact score, computed once per distinct state (the adaptive loop feeds each row its own time, which
    is a function of its state), counting calls and the rows each call sees."""

    def __init__(self, p0, graph, length):
        self.exact = ExactScore(p0, graph, length)
        self.calls, self.rows, self.sigmas = 0, [], []

    def __call__(self, x, sigma):
        self.calls += 1
        self.rows.append(x.clone())
        self.sigmas.append(sigma.clone())
        rows, inverse = x.unique(dim=0, return_inverse=True)
        sig = torch.zeros(rows.shape[0], dtype=sigma.dtype).scatter(0, inverse, sigma)
        return self.exact._score(rows, sig)[inverse]


def _model(p0, num_tokens=N, length=L, noise=NOISE):
    graph = Absorbing(num_tokens)
    return SimpleNamespace(score_fn=UniqueScore(p0, graph, length), graph=graph, noise=noise, length=length,
                           device=torch.device("cpu"), source="toy", fingerprint=None)


# ---- a naive reading of the papers, on the true clean-token law --------------------------------------------
def _true_law(p0, x, graph, length):
    """p(x0_i = v | x_t = x) for every position (length, N) by enumeration of p0 (no score involved)."""
    seqs = all_sequences(graph.num_tokens, length)
    seen = [i for i in range(length) if x[i] != graph.mask_id]
    ok = torch.ones(seqs.shape[0], dtype=torch.bool)
    for i in seen:
        ok &= seqs[:, i] == x[i]
    w = torch.where(ok, p0, torch.zeros_like(p0))
    law = torch.stack([torch.stack([w[seqs[:, i] == v].sum() for v in range(graph.num_tokens)])
                       for i in range(length)])
    return law / law.sum(-1, keepdim=True)


def _naive_set(rule, param, law, masked):
    """The positions one call unmasks, straight from the papers' statements."""
    idx = [i for i in range(len(masked)) if masked[i]]
    if rule == "eb":  # sorted by entropy ascending, the largest prefix with sum - max <= gamma
        h = {i: -sum(float(p) * math.log(float(p)) for p in law[i] if p > 0) for i in idx}
        order = sorted(idx, key=lambda i: (h[i], i))
        best = order[:1]
        for k in range(1, len(order) + 1):
            pre = order[:k]
            if sum(h[i] for i in pre) - max(h[i] for i in pre) <= param:
                best = pre
        return set(best)
    conf = {i: float(law[i].max()) for i in idx}  # threshold: every confidence > tau, else the most confident
    chosen = {i for i in idx if conf[i] > param}
    return chosen or {max(idx, key=lambda i: (conf[i], -i))}


def _exact_run(rule, param, p0, graph=Absorbing(N), length=L):
    """The exact law of the sampler's output (N^L,) and of its NFE ({nfe: prob}), by propagating every state."""
    out = torch.zeros(graph.num_tokens ** length, dtype=torch.float64)
    nfe_law = {}
    frontier = {(graph.mask_id,) * length: (1.0, 0)}
    while frontier:
        nxt = {}
        for state, (prob, calls) in frontier.items():
            if graph.mask_id not in state:
                out[int(np.ravel_multi_index(state, (graph.num_tokens,) * length))] += prob
                nfe_law[calls] = nfe_law.get(calls, 0.0) + prob
                continue
            x = torch.tensor(state)
            law = _true_law(p0, x, graph, length)
            chosen = sorted(_naive_set(rule, param, law, [v == graph.mask_id for v in state]))
            for vals in itertools.product(range(graph.num_tokens), repeat=len(chosen)):
                new = list(state)
                q = prob
                for i, v in zip(chosen, vals):
                    new[i] = v
                    q *= float(law[i, v])
                key = tuple(new)
                p_old, _ = nxt.get(key, (0.0, calls + 1))
                nxt[key] = (p_old + q, calls + 1)
        frontier = nxt
    return out, nfe_law


def _freq(x, num_tokens=N, length=L):
    idx = torch.tensor(np.ravel_multi_index(x.T.numpy(), (num_tokens,) * length))
    return torch.bincount(idx, minlength=num_tokens ** length).to(torch.float64) / x.shape[0]


# ---- (a) the first call: set and values ----------------------------------------------------------------------
@pytest.mark.parametrize("rule,pick", [("eb", 2), ("threshold", 2), ("threshold", 0)])
def test_first_call_set_and_values_match_the_exact_rule(rule, pick):
    p0 = _p0(1)
    graph = Absorbing(N)
    start = torch.full((L,), graph.mask_id)
    law = _true_law(p0, start, graph, L)
    h = -(law * law.log()).sum(-1)
    conf = law.max(-1).values
    if rule == "eb":  # a gamma that admits exactly `pick` tokens: between the sums of the sorted entropies
        hs = h.sort().values
        param = float(hs[: pick - 1].sum() + 0.5 * hs[pick - 1])
    else:  # pick = 0: no confidence passes, the single most confident token
        cs = conf.sort(descending=True).values
        param = float(0.5 * (cs[pick - 1] + cs[pick])) if pick else float(cs[0] + 1e-3)
    want = _naive_set(rule, param, law, [True] * L)
    assert len(want) == max(pick, 1)
    # exact law of the state after the first call: the set is fixed, each value from its own law
    exact = {}
    for vals in itertools.product(range(N), repeat=len(want)):
        s = [graph.mask_id] * L
        q = 1.0
        for i, v in zip(sorted(want), vals):
            s[i] = v
            q *= float(law[i, v])
        exact[tuple(s)] = q
    model = _model(p0)
    n = 20000
    first = {}

    def on_call(k, active, step_law: AdaptiveLaw, x):
        if k == 0:
            first["x"] = x.clone()
            first["unmask"] = step_law.unmask.clone()

    adaptive_loop(model.score_fn, graph, NOISE, graph.sample_limit(n, L), rule, param,
                  generator=make_generator(0), on_call=on_call)
    assert (first["unmask"] == torch.tensor([i in want for i in range(L)])).all()  # the same set in every row
    states, counts = first["x"].unique(dim=0, return_counts=True)
    got = {tuple(s.tolist()): c / n for s, c in zip(states, counts.tolist())}
    assert set(got) <= set(exact)
    for s, q in exact.items():
        assert abs(got.get(s, 0.0) - q) < 4 * math.sqrt(q * (1 - q) / n) + 1e-3, (s, got.get(s), q)


def test_clean_law_of_the_exact_score_is_the_true_conditional():
    p0 = _p0(2)
    graph = Absorbing(N)
    x = torch.tensor([[graph.mask_id, 1, graph.mask_id, 0]])
    score = ExactScore(p0, graph, L)(x, NOISE.total(torch.tensor([0.5], dtype=torch.float64)).float())
    law = clean_law(graph, score)[0]
    want = _true_law(p0, x[0], graph, L)
    assert torch.allclose(law[[0, 2]], want[[0, 2]], atol=1e-5)


# ---- the whole run, exactly ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rule,param,seed", [("eb", 0.6, 3), ("threshold", 0.75, 5)])
def test_output_law_and_mean_nfe_match_exact_propagation(rule, param, seed):
    p0 = _p0(seed)
    exact, nfe_law = _exact_run(rule, param, p0)
    assert len(nfe_law) > 1  # the toy really is adaptive: the number of calls depends on the sample
    n = 12000
    res = lsdd.sample(_model(p0), Sampler.adaptive_rule(rule, param), n, seed=1, batch_size=4000)
    got = _freq(res.x)
    tol = 4 * torch.sqrt(exact * (1 - exact) / n) + 2e-3
    assert ((got - exact).abs() <= tol).all(), (got, exact)
    mean = sum(k * q for k, q in nfe_law.items())
    var = sum(k * k * q for k, q in nfe_law.items()) - mean ** 2
    assert abs(res.nfe_mean - mean) < 4 * math.sqrt(var / n) + 1e-3
    assert res.nfe == max(k for k, q in nfe_law.items() if q > 1e-4) == int(res.nfe_per_sample.max())


# ---- (b) per-sample NFE ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule,param,seed", [("eb", 0.8, 4), ("threshold", 0.55, 5)])
def test_per_sample_nfe_counts_the_calls_each_row_needed(rule, param, seed):
    p0 = _p0(seed, num_tokens=3, length=5)
    model = _model(p0, num_tokens=3, length=5)
    graph = model.graph
    trace = []

    def on_call(k, active, law, x):
        trace.append((active.clone(), x.clone()))

    x0 = graph.sample_limit(64, 5)
    out = adaptive_loop(model.score_fn, graph, NOISE, x0, rule, param, generator=make_generator(3), on_call=on_call)
    score = model.score_fn
    assert score.calls == out.calls == len(trace) == int(out.nfe.max())
    # the rows each network call saw are exactly the rows that still had masks, and nothing else
    assert sum(r.shape[0] for r in score.rows) == int(out.nfe.sum())
    # a row's count = the calls at which it changed (every call made for a row unmasks >= 1 of its tokens)
    prev, changed = x0, torch.zeros(64, dtype=torch.long)
    for k, (active, x) in enumerate(trace):
        moved = (x != prev).any(-1)
        assert (moved == active).all()
        assert (score.rows[k] == prev[active]).all()
        changed += moved.long()
        prev = x
    assert (out.nfe == changed).all() and out.nfe.min() >= 1
    assert len(set(out.nfe.tolist())) > 1  # rows did need different numbers of calls
    # through lsdd.sample: per-sample counts, their mean and max
    res = lsdd.sample(_model(p0, 3, 5), Sampler.adaptive_rule(rule, param), 50, seed=0, batch_size=16)
    assert res.nfe_per_sample.shape == (50,) and res.nfe_per_sample.dtype == torch.long
    assert res.nfe == int(res.nfe_per_sample.max()) and isinstance(res.nfe, int)
    assert res.nfe_mean == pytest.approx(float(res.nfe_per_sample.double().mean()))
    assert res.info["nfe_mean"] == res.nfe_mean and res.info["nfe_max"] == res.nfe


def test_the_network_sees_the_time_of_its_masked_fraction():
    p0 = _p0(5, num_tokens=3, length=5)
    model = _model(p0, 3, 5)
    lsdd.sample(model, Sampler.eb(0.4), 32, seed=0)
    for x, sigma in zip(model.score_fn.rows, model.score_fn.sigmas):
        frac = (x == model.graph.mask_id).double().mean(-1)
        full = frac == 1
        t = torch.where(full, torch.ones_like(frac), frac / (1 - NOISE.eps))
        assert torch.allclose(sigma.double(), NOISE.total(t).float().double(), rtol=1e-6)
        assert torch.allclose(-torch.expm1(-sigma.double()[~full]), frac[~full], rtol=1e-5)


@pytest.mark.parametrize("noise", [LogLinear(1e-3), Geometric(1e-4, 20.0)])
def test_time_of_masked_fraction_inverts_the_schedule(noise):
    frac = torch.tensor([0.05, 0.25, 0.5, 0.8, 0.99], dtype=torch.float64)
    t = time_of_masked_fraction(noise, frac)
    assert ((t >= 0) & (t <= 1)).all()
    assert torch.allclose(-torch.expm1(-noise.total(t)), frac, atol=1e-9)
    assert float(time_of_masked_fraction(noise, torch.tensor([1.0], dtype=torch.float64))) == 1.0


# ---- (c) degenerate parameters, (d) no mask left --------------------------------------------------------------
@pytest.mark.parametrize("rule,param,calls", [("eb", 0.0, L), ("threshold", 1.0, L),
                                              ("eb", 1e6, 1), ("threshold", 0.0, 1)])
def test_degenerate_parameters(rule, param, calls):
    res = lsdd.sample(_model(_p0(6)), Sampler.adaptive_rule(rule, param), 200, seed=0, batch_size=100)
    assert (res.nfe_per_sample == calls).all() and res.nfe == calls and res.nfe_mean == calls
    assert int(res.x.max()) < N and int(res.x.min()) >= 0  # (d) no mask anywhere
    if calls == L:  # one token per call is the exact law: the output frequencies match p0
        res = lsdd.sample(_model(_p0(6)), Sampler.adaptive_rule(rule, param), 8000, seed=1, batch_size=4000)
        p0 = _p0(6)
        assert ((_freq(res.x) - p0).abs() <= 4 * torch.sqrt(p0 * (1 - p0) / 8000) + 2e-3).all()


def test_gamma_bound_for_one_call():
    """Any gamma >= (L - 1) log N unmasks every token at once (the bound match_budget's search uses)."""
    res = lsdd.sample(_model(_p0(7)), Sampler.eb((L - 1) * math.log(N)), 100, seed=0)
    assert (res.nfe_per_sample == 1).all()


# ---- (e) seeds --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule,param", [("eb", 0.5), ("threshold", 0.7)])
def test_same_seed_same_samples(rule, param):
    s = Sampler.adaptive_rule(rule, param)
    a = lsdd.sample(_model(_p0(8)), s, 96, seed=5, batch_size=32)
    b = lsdd.sample(_model(_p0(8)), s, 96, seed=5, batch_size=32)
    c = lsdd.sample(_model(_p0(8)), s, 96, seed=6, batch_size=32)
    assert torch.equal(a.x, b.x) and torch.equal(a.nfe_per_sample, b.nfe_per_sample)
    assert not torch.equal(a.x, c.x)


# ---- (f) match_budget --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["eb", "threshold"])
@pytest.mark.parametrize("budget", [1.0, 2.5, 5.0])
def test_match_budget_keeps_the_mean_nfe_within_the_budget(rule, budget):
    p0 = _p0(9, num_tokens=3, length=5)
    param, mean = match_budget(_model(p0, 3, 5), rule, budget, num=64, seed=0, iters=5)
    assert mean <= budget
    again = lsdd.sample(_model(p0, 3, 5), Sampler.adaptive_rule(rule, param), 64, seed=0)
    assert again.nfe_mean == mean
    if budget >= 5:  # the most careful end already fits
        assert param == (0.0 if rule == "eb" else 1.0)
    if 1 < budget < 5:  # the search did not settle for one call when more fit
        assert mean > 1


@pytest.mark.parametrize("rule", ["eb", "threshold"])
def test_match_budget_probes_stop_once_the_budget_is_spent(rule):
    """A probe whose calls, summed over the samples, pass budget * num stops there: the careful end (about one
    token per call, L = 5 calls per sample) costs at most budget + 1 batch calls, and the result is the same as
    the full runs' bisection gives (checked against lsdd.sample's own count)."""
    p0 = _p0(9, num_tokens=3, length=5)
    model = _model(p0, 3, 5)
    param, mean = match_budget(model, rule, 2.0, num=16, seed=0, iters=4, batch_size=16)
    assert lsdd.sample(_model(p0, 3, 5), Sampler.adaptive_rule(rule, param), 16, seed=0,
                       batch_size=16).nfe_mean == mean <= 2.0
    # the careful probe is the first run; the next probe starts again from 16 all-masked rows
    starts = [k for k, r in enumerate(model.score_fn.rows) if r.shape[0] == 16 and (r == 3).all()]
    assert starts[0] == 0
    assert starts[1] == 3  # 2.0 * 16 = 32 row-calls are spent after 2 batch calls: the third one passes them
    assert model.score_fn.calls <= 6 * 3  # careful, bold and 4 bisection probes, none more than 3 batch calls


@pytest.mark.parametrize("rule,param", [("threshold", 0.0), ("eb", 1e9), ("threshold", 1.0), ("eb", 0.0)])
def test_blocks_are_decoded_left_to_right(rule, param):
    """With block B, every call unmasks only masked tokens of the row's first unfinished block of B positions;
    the boldest parameter finishes one block per call (ceil(L / B) calls), the most careful one makes L."""
    length, block = 5, 2
    p0 = _p0(4, num_tokens=3, length=length)
    model = _model(p0, 3, length)
    seen = []

    def watch(k, active, law, x):
        seen.append((law.x.clone(), law.unmask.clone()))

    x0 = model.graph.sample_limit(8, length)
    out = adaptive_loop(model.score_fn, model.graph, model.noise, x0, rule, param,
                        generator=make_generator(0), block=block, on_call=watch)
    assert not (out.x == model.graph.mask_id).any()
    for x, unmask in seen:
        masked = x == model.graph.mask_id
        first = torch.where(masked, torch.arange(length), torch.tensor(length)).min(-1).values
        assert unmask.any(-1).all() and (unmask <= masked).all()
        pos = torch.arange(length).expand_as(unmask)
        assert (pos[unmask] // block == first.repeat_interleave(unmask.sum(-1)) // block).all()
    bold = (rule, param) in (("threshold", 0.0), ("eb", 1e9))
    # bold: a whole block per call; careful: one token per call (no token of this law has entropy exactly 0)
    assert out.nfe.tolist() == [-(-length // block) if bold else length] * 8
    s = Sampler.adaptive_rule(rule, param, block=block)
    assert Sampler.from_dict(s.to_dict()) == s and "in blocks of 2" in s.describe()
    res = lsdd.sample(_model(p0, 3, length), s, 8, seed=0, batch_size=8)
    assert torch.equal(res.x, adaptive_loop(_model(p0, 3, length).score_fn, model.graph, model.noise, x0, rule,
                                            param, generator=make_generator(0, "cpu", 0), block=block).x)


def test_match_budget_in_blocks_refuses_a_budget_below_one_call_per_block():
    with pytest.raises(UserError, match="at least 3 calls per sample"):
        match_budget(_model(_p0(4, 3, 5), 3, 5), "threshold", 2.0, block=2)


def test_match_budget_refuses_bad_input():
    model = _model(_p0(0))
    with pytest.raises(UserError, match="nfe_budget"):
        match_budget(model, "eb", 0.5)
    with pytest.raises(UserError, match="unknown adaptive rule"):
        match_budget(model, "dilated", 2)


# ---- the Sampler value ---------------------------------------------------------------------------------------------
def test_sampler_round_trip_and_refusals(tmp_path):
    for s in (Sampler.eb(0.25), Sampler.threshold(0.9), Sampler.adaptive_rule("eb", 1, eps=1e-3, temperature=0.8)):
        path = tmp_path / "s.json"
        s.save(path)
        back = Sampler.load(path)
        assert back == s and back.nfe is None and back.adaptive == s.adaptive
        assert "adaptive network calls" in back.describe()
    assert "adaptive" not in Sampler.euler(4).to_dict()  # fixed samplers' files are unchanged
    for make, match in [(lambda: Sampler.eb(-0.1), "gamma must be >= 0"),
                        (lambda: Sampler.eb(float("nan")), "finite"),
                        (lambda: Sampler.threshold(1.5), r"tau must lie in \[0, 1\], got 1.5"),
                        (lambda: Sampler.adaptive_rule("halton", 1.0), "unknown adaptive rule 'halton'")]:
        with pytest.raises(UserError, match=match):
            make()
    d = Sampler.eb(0.5).to_dict()
    for bad, match in [({"rule": "eb", "tau": 0.5}, "takes exactly"), ({"rule": "x"}, "adaptive"),
                       ({"rule": "threshold", "tau": -1}, "tau"), ("eb", "adaptive")]:
        with pytest.raises(UserError, match=match):
            Sampler.from_dict({**d, "adaptive": bad})
    with pytest.raises(UserError, match="no rule, coeffs"):
        Sampler.from_dict({**d, "coeffs": [2.0]})
    with pytest.raises(UserError, match="no fixed grid"):
        Sampler.eb(0.5).loop_args(Absorbing(N))


def test_adaptive_needs_a_masked_model():
    graph = Uniform(N)
    model = SimpleNamespace(score_fn=ExactScore(_p0(0), graph, L), graph=graph, noise=Geometric(), length=L,
                            device=torch.device("cpu"))
    with pytest.raises(UserError, match="absorbing"):
        lsdd.sample(model, Sampler.eb(0.5), 4)


# ---- the CLI on the bundled countdown model --------------------------------------------------------------------------
def test_cli_adaptive_on_countdown(tmp_path, capsys):
    from lsdd.cli import main

    out = tmp_path / "eb.npy"
    assert main(["sample", "--model", "countdown", "--sampler", "eb", "--gamma", "1.0", "--num", "6",
                 "--seed", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "network calls per sample on average" in printed and "at most" in printed
    x = np.load(out)
    info = json.loads((tmp_path / "eb.npy.json").read_text())
    assert x.shape == (6, 64) and x.max() < 32  # no mask (id 32) left
    assert info["sampler"]["adaptive"] == {"rule": "eb", "gamma": 1.0}
    assert 1 <= info["nfe_mean"] <= info["nfe_max"] == info["nfe"] <= 64
    res = lsdd.sample(lsdd.load_model("countdown"), Sampler.eb(1.0), 6, seed=0)
    assert np.array_equal(res.x.numpy(), x) and res.nfe_mean == info["nfe_mean"]  # the CLI is lsdd.sample
    thr = tmp_path / "thr.npy"
    assert main(["sample", "--model", "countdown", "--sampler", "threshold", "--threshold", "0.9", "--num", "4",
                 "--quiet", "--out", str(thr)]) == 0
    assert np.load(thr).max() < 32
    for argv in (["--sampler", "eb"], ["--sampler", "eb", "--gamma", "-1"], ["--sampler", "threshold", "--threshold",
                 "2"], ["--sampler", "threshold", "--gamma", "1"], ["--sampler", "euler", "--gamma", "1"],
                 ["--sampler", "eb", "--gamma", "1", "--steps", "8"]):
        assert main(["sample", "--model", "countdown", *argv, "--num", "2", "--out", str(tmp_path / "bad.npy")]) == 2
