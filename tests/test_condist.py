"""Conditional distillation and the conditional bench (``lsdd distill/bench --prompts``, ``lsdd.distill(prompts=)``):
the teacher holds the prompts, its cache is named by them, the fit never sees the held-out prompts that validation
uses, every statistic reads the continuations only, and the bench's rows continue the same prompts and are scored
as ``lsdd.evaluate`` scores continuations. One-line errors (exit code 2) before any work."""

import hashlib
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import lsdd
from lsdd.bench import BenchConfig, run_bench
from lsdd.cli import main
from lsdd.distillation import distill as engine
from lsdd.distillation import pipeline
from lsdd.distillation.bootstrap import mmd2_difference_resamples, resample_counts
from lsdd.distillation.distill import perturb_start
from lsdd.distillation.pipeline import Teacher, split_prompts
from lsdd.distillation.statistics import mmd2, model_nll, ngram_hellinger, pooled_ngrams, unigram_entropy
from lsdd.distillation.teacher import cache_file, get_teacher, run_teacher
from lsdd.errors import UserError
from lsdd.graphs import Absorbing, Uniform
from lsdd.models import load_model
from lsdd.noise import LogLinear
from lsdd.sampling.adaptive import match_budget
from lsdd.sampling.exact import ExactScore, all_sequences
from lsdd.sampling.prompts import from_prompt
from lsdd.sampling.sampler import Sampler
from lsdd.sampling.schedules import uniform_times
from lsdd.tasks import get_task
from lsdd.tasks.text import TextTask, held_out_prompts

from conftest import toy_law
from test_conditioned import _tiny_model
from test_text import corpus, evaluator_dir, text_model  # noqa: F401  (fixtures: tiny char-level text model, evaluator)

PROMPTS = [[1, 2], [3], [4, 5, 0], [2]]  # token ids of the tiny 6-token models (length 8)


@pytest.fixture(scope="module")
def absorb(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("absorb"), "absorbing")


@pytest.fixture(scope="module")
def uniform(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("uniform"), "uniform")


def _run(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def _same(a: dict, b: dict) -> bool:
    """Equal metric dicts, NaN equal to NaN."""
    return a.keys() == b.keys() and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a.values(),
                                                                                                   b.values()))


# ---- the teacher --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["absorb", "uniform"])
@pytest.mark.parametrize("store", ["scores", "states"])
def test_teacher_holds_prompts_and_keeps_no_held_row(which, store, request):
    model = load_model(request.getfixturevalue(which))
    cond = from_prompt(model, PROMPTS)
    cache = run_teacher(model.score_fn, model.graph, model.noise, uniform_times(4), 8, 10, model.length, batch_size=4,
                        given=cond.given, progress=False, store=store)
    rows = cond.rows(10)  # trajectory i continues prompt i mod P
    held = rows != model.graph.num_tokens
    assert torch.equal(cache.given, rows) and torch.equal(cache.held(), held)
    # the prompt is in the start, every cached state and the output
    for x in (cache.x_T, *cache.states, cache.x_0):
        assert torch.equal(x[held], rows[held])
    # no score row is kept or compared at a held position (on the uniform graph every position is movable)
    cache.attach(model.score_fn, model.graph, model.noise)
    for k in range(4):
        _, stored, _ = cache.score_at(k, torch.arange(10))
        assert not stored[held].any()
        if store == "scores":
            assert (cache.rows[k][held] == -1).all()
    if which == "uniform":
        assert stored[~held].all()  # the free ones are


def test_teacher_without_held_positions_draws_as_the_unconditional_one(absorb):
    model = load_model(absorb)
    free = torch.full((1, model.length), model.graph.num_tokens)
    a = run_teacher(model.score_fn, model.graph, model.noise, uniform_times(2), 4, 6, model.length, batch_size=4,
                    progress=False)
    b = run_teacher(model.score_fn, model.graph, model.noise, uniform_times(2), 4, 6, model.length, batch_size=4,
                    progress=False, given=free)
    assert torch.equal(a.x_0, b.x_0) and all(torch.equal(s, t) for s, t in zip(a.scores, b.scores))


def test_cache_names_differ_with_prompts_and_never_cross(absorb, tmp_path):
    a = cache_file(tmp_path, "fp", "euler", 8, 4, 10, 4, 0, 1e-5, "scores")
    b = cache_file(tmp_path, "fp", "euler", 8, 4, 10, 4, 0, 1e-5, "scores", prompts="0123abcd")
    assert a != b and "_p0123abcd_" in b.name and "_p" not in a.name
    model = load_model(absorb)
    cond = from_prompt(model, PROMPTS)
    logs = []
    kw = dict(batch_size=4, folder=tmp_path / "tc", progress=False, log=logs.append)
    plain, f1 = get_teacher(model, uniform_times(4), 8, 10, **kw)
    cond_run, f2 = get_teacher(model, uniform_times(4), 8, 10, given=cond.given, **kw)
    # the conditional run is not read from the unconditional file: it runs, and is kept under its own name
    assert f1 != f2 and sum("from" in line for line in logs) == 0 and len(list((tmp_path / "tc").iterdir())) == 2
    again, f3 = get_teacher(model, uniform_times(2), 8, 10, given=cond.given, **kw)  # a coarser grid nests
    assert f3 == f2 and torch.equal(again.x_0, cond_run.x_0) and torch.equal(again.given, cond_run.given)
    back, f4 = get_teacher(model, uniform_times(2), 8, 10, **kw)
    assert f4 == f1 and back.given is None and torch.equal(back.x_0, plain.x_0)
    other, f5 = get_teacher(model, uniform_times(4), 8, 10, given=from_prompt(model, PROMPTS[:3]).given, **kw)
    assert f5 not in (f1, f2)  # other prompts, another run


# ---- the fit and its validation -----------------------------------------------------------------------------
def test_split_holds_out_whole_prompts(absorb):
    model = load_model(absorb)
    cond = from_prompt(model, PROMPTS)
    split = split_prompts(cond, 10, 0.25, True)
    prompt_of = (torch.arange(10) % 4)[split.order]
    train, val = prompt_of[: 10 - split.num_val], prompt_of[10 - split.num_val:]
    # the last round(0.25 x 4) = 1 prompt is held out, with every trajectory that continues it
    assert set(val.tolist()) == {3} and 3 not in train.tolist() and split.num_val == 2
    assert sorted(split.order.tolist()) == list(range(10))
    # held-out prompts are spread evenly (prompts from consecutive windows are held out all along the text)
    eight = from_prompt(model, [[i % 6] for i in range(8)])
    spread = split_prompts(eight, 16, 0.25, True)
    assert set((spread.order[16 - spread.num_val:] % 8).tolist()) == {3, 7}
    # fewer trajectories than prompts: only the continued prompts are split
    few = split_prompts(cond, 3, 0.5, True)
    assert few.used == 3 and few.val_prompts == 2 and few.num_val == 2
    one = from_prompt(model, [[1]])
    with pytest.raises(UserError, match="at least 2 prompts") as e:
        split_prompts(one, 10, 0.25, True)
    assert "\n" not in str(e.value)
    assert split_prompts(one, 10, 0.25, False).num_val == 0  # without validation one prompt is fine


def test_distill_fits_on_training_prompts_and_validates_on_held_out_ones(absorb, monkeypatch):
    model = load_model(absorb)
    seen = {}
    fit, validate, loop = engine.distill, engine.validate_learned, engine.reverse_loop

    def spy_fit(*a, **kw):
        seen["cache"], seen["cfg"] = kw["cache"], a[4]
        return fit(*a, **kw)

    def spy_validate(*a, **kw):
        seen["reference"], seen["given"] = a[3], kw["given"]
        return validate(*a, **kw)

    def spy_loop(score_fn, graph, noise, times, x, **kw):  # the student's rollouts
        out = loop(score_fn, graph, noise, times, x, **kw)
        seen.setdefault("rollouts", []).append((x, kw.get("fixed"), out.x))
        return out

    monkeypatch.setattr(engine, "distill", spy_fit)
    monkeypatch.setattr(engine, "validate_learned", spy_validate)
    monkeypatch.setattr(engine, "reverse_loop", spy_loop)
    teacher = Teacher(nfe=8, num_traj=16, batch_size=8, chunk=4)
    sampler, val = lsdd.distill(model, lsdd.LSD(epochs=2), 4, teacher=teacher, val_samples=8, prompts=PROMPTS,
                                force=True, progress=False, log=lambda *a: None)
    cache, cfg = seen["cache"], seen["cfg"]
    n_val = cfg.num_val()
    prompts = {tuple(r.tolist()) for r in from_prompt(model, PROMPTS).given}
    train = {tuple(r.tolist()) for r in cache.given[: cache.num - n_val]}
    held_out = {tuple(r.tolist()) for r in cache.given[cache.num - n_val:]}
    # the fit's trajectories and the held-out ones continue disjoint sets of prompts, together all of them
    assert train.isdisjoint(held_out) and train | held_out == prompts and len(held_out) == 1
    # validation compares with the held-out teacher continuations, its samples continuing the held-out prompts
    assert torch.equal(seen["reference"], cache.x_0[cache.num - n_val:])
    assert {tuple(r.tolist()) for r in seen["given"]} == held_out
    # every student rollout held its trajectories' prompts
    for x, fixed, out in seen["rollouts"]:
        assert fixed is not None and fixed.any() and torch.equal(out[fixed], x[fixed])
    # the learned sampler says it was distilled conditionally
    rec = sampler.provenance["conditional"]
    given = from_prompt(model, PROMPTS).given.numpy()
    assert rec["num_prompts"] == 4 and rec["held_out_prompts"] == 1 and rec["held_out_trajectories"] == n_val == 4
    assert rec["sha256"] == hashlib.sha256(f"{given.shape}".encode() + given.tobytes()).hexdigest()
    assert val is not None and val.num_reference == n_val


def test_perturbed_starts_keep_the_prompt():
    graph = Uniform(6)
    x = torch.randint(0, 6, (5, 8), generator=torch.Generator().manual_seed(0))
    held = torch.zeros(5, 8, dtype=torch.bool)
    held[:, :3] = True
    held[0, :7] = True
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    # nothing held: the very draws of the unconditional start
    assert torch.equal(perturb_start(x, graph, 0.5, gen(), torch.zeros_like(held)), perturb_start(x, graph, 0.5, gen()))
    out = perturb_start(x, graph, 0.5, gen(), held)
    # held tokens stay; each row changes ceil(zeta F) of its F free tokens (a uniform-graph perturbation changes)
    assert torch.equal(out[held], x[held])
    assert (out != x).sum(-1).tolist() == [1, 3, 3, 3, 3]


# ---- statistics of continuations ----------------------------------------------------------------------------
def test_statistics_read_the_continuation_only():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randint(0, 5, (n, 10), generator=g) for n in (6, 6, 7))
    k = 3
    free_a, free_c = torch.ones(6, 10, dtype=torch.bool), torch.ones(7, 10, dtype=torch.bool)
    free_a[:, :k] = False
    free_c[:, :k] = False
    # equal-length prefixes: every figure equals that of the sliced continuations
    assert mmd2(a, c, 5, free_a, free_c) == pytest.approx(mmd2(a[:, k:], c[:, k:], 5), abs=1e-15)
    assert ngram_hellinger(a, c, 5, free_a, free_c) == pytest.approx(ngram_hellinger(a[:, k:], c[:, k:], 5), abs=1e-15)
    for got, want in zip(pooled_ngrams(a, 5, free_a), pooled_ngrams(a[:, k:], 5)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    torch.testing.assert_close(unigram_entropy(a, 5, free_a), unigram_entropy(a[:, k:], 5), rtol=0, atol=1e-15)
    gen = torch.Generator().manual_seed(1)
    counts, ref_counts = resample_counts(6, 20, gen), resample_counts(7, 20, gen)
    torch.testing.assert_close(mmd2_difference_resamples(a, b, c, 5, counts, ref_counts, free_a, free_c),
                               mmd2_difference_resamples(a[:, k:], b[:, k:], c[:, k:], 5, counts, ref_counts))
    # the held tokens themselves do not count: changing them changes nothing
    a2 = a.clone()
    a2[:, :k] = 4
    assert mmd2(a2, c, 5, free_a, free_c) == mmd2(a, c, 5, free_a, free_c)
    # every position free is the unconditional figure, bit for bit
    every = torch.ones(6, 10, dtype=torch.bool)
    assert mmd2(a, b, 5, every, every) == mmd2(a, b, 5)
    assert torch.equal(unigram_entropy(a, 5, every), unigram_entropy(a, 5))


def test_nll_bound_is_that_of_the_continuation_given_the_prompt():
    """Masked diffusion with the exact score: the denoising bound is tight in expectation, so with the prompt held
    clean it estimates -log p(continuation | prompt) per generated token (and -log p(x) / L without)."""
    L, V = 3, 3
    graph, noise = Absorbing(V), LogLinear(1e-3)
    law = toy_law(V, L, seed=1)
    exact = ExactScore(law, graph, L)
    seqs = all_sequences(V, L)
    x = seqs[law > 0][:4]
    reps = 400
    xx = x.repeat_interleave(reps, 0)
    free = torch.ones_like(xx, dtype=torch.bool)
    free[:, 0] = False  # the first token is the prompt
    got = model_nll(exact, graph, noise, xx, num_times=64, batch_size=400, free=free).view(4, reps).mean(1)
    joint = law.view(V, V, V)
    want = torch.tensor([-math.log(float(joint[a, b, c] / joint[a].sum())) / 2 for a, b, c in x.tolist()])
    torch.testing.assert_close(got, want.double(), atol=0.08, rtol=0)
    # every position free: the unconditional bound, bit for bit
    every = torch.ones_like(xx[:8], dtype=torch.bool)
    assert torch.equal(model_nll(exact, graph, noise, xx[:8], free=every), model_nll(exact, graph, noise, xx[:8]))


def test_nll_bound_ignores_held_rows_on_the_uniform_graph(uniform):
    """On the uniform graph a held row has a score-entropy term of its own (it is a state, not clean data); the
    conditional bound leaves it out: a graph whose held rows' terms are huge gives the same bound."""
    model = load_model(uniform)
    x = torch.randint(0, 6, (4, model.length), generator=torch.Generator().manual_seed(0))
    free = torch.ones_like(x, dtype=torch.bool)
    free[:, :4] = False

    class Loud:  # the model's graph, with 1e6 added to the score entropy of positions 0..3
        def __getattr__(self, name):
            return getattr(model.graph, name)

        def score_entropy(self, *args):
            return model.graph.score_entropy(*args) + 1e6 * (~free[0]).to(torch.float32)

    quiet = model_nll(model.score_fn, model.graph, model.noise, x, free=free)
    assert torch.equal(model_nll(model.score_fn, Loud(), model.noise, x, free=free), quiet)
    assert (model_nll(model.score_fn, Loud(), model.noise, x) > 1e5).all()  # counted without ``free``


# ---- adaptive rows ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["eb", "threshold"])
def test_match_budget_matches_the_conditional_runs(absorb, rule):
    model = load_model(absorb)
    given = from_prompt(model, PROMPTS).given
    param, mean = match_budget(model, rule, 3, num=8, seed=2, batch_size=4, given=given)
    direct = lsdd.sample(model, Sampler.adaptive_rule(rule, param), 8, seed=2, batch_size=4, fixed=given)
    assert direct.nfe_mean == mean <= 3
    held = direct.fixed
    assert torch.equal(direct.x[held], from_prompt(model, PROMPTS).rows(8)[held])


# ---- the command line: one-line errors before any work -------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("work started")

    monkeypatch.setattr(pipeline, "get_teacher", refuse)
    import lsdd.bench

    monkeypatch.setattr(lsdd.bench, "get_teacher", refuse)


@pytest.mark.parametrize("command", ["distill", "bench"])
@pytest.mark.parametrize("case", ["missing", "empty", "syntax", "long", "no-tokenizer", "held-out-no-tokenizer",
                                  "held-out-k", "one-prompt"])
def test_prompt_errors_are_one_line_before_any_work(command, case, absorb, text_model, tmp_path, capsys,  # noqa: F811
                                                    no_work, monkeypatch):
    f = tmp_path / "p.txt"
    model, spec, says = str(text_model), str(f), None
    if case == "missing":
        spec, says = str(tmp_path / "nope.txt"), "cannot read it"
    elif case == "empty":
        f.write_text("\n  \n")
        says = "holds no prompt"
    elif case == "syntax":
        spec, says = "held-out:x", "expected held-out:K"
    elif case == "long":
        f.write_text("To be\n" + "To be, or not to be, that is the question\n")
        says = "prompt 2 is 41 tokens long, but the model's sequences are 24"
    elif case == "no-tokenizer":
        f.write_text("To be\nOr not\n")
        model, says = absorb, "has no tokenizer"
    elif case == "held-out-no-tokenizer":
        model, spec, says = absorb, "held-out:2", "has no tokenizer"
    elif case == "held-out-k":
        spec, says = "held-out:24", "K must be an integer in [1, 23]"
    elif case == "one-prompt":
        if command == "bench":
            pytest.skip("the bench does not hold prompts out: one prompt is fine")
        f.write_text("To be\n")
        says = "at least 2 prompts"
    if case in ("missing", "empty", "syntax"):  # read before the model is even loaded
        import lsdd.cli.bench
        import lsdd.cli.distill

        monkeypatch.setattr(lsdd.cli.distill, "load_args", lambda *a: pytest.fail("the model was loaded"))
        monkeypatch.setattr(lsdd.cli.bench, "load_args", lambda *a: pytest.fail("the model was loaded"))
    argv = [command, "--model", model, "--nfe", "2", "--teacher-nfe", "4", "--prompts", spec]
    argv += ["--out", str(tmp_path / "s.json")] if command == "distill" else ["--task", "text", "--methods"]
    rc, out, err = _run(argv, capsys)
    assert rc == 2 and says in err and len(err.strip().splitlines()) == 1, err


def test_bench_refuses_prompts_for_a_task_without_continuations(absorb, no_work):
    model = load_model(absorb)
    cfg = BenchConfig(nfes=(2,), teacher_nfe=4, bases=("euler",), methods=(), num_samples=4, prompts=PROMPTS)
    with pytest.raises(ValueError, match="does not score continuations"):
        run_bench(model, get_task("tokens"), cfg, progress=False, log=lambda *a: None)
    with pytest.raises(ValueError, match="drop jys"):
        run_bench(model, get_task("tokens"), replace(cfg, methods=("jys",)), progress=False, log=lambda *a: None)


# ---- the command line end to end ------------------------------------------------------------------------------
def test_held_out_prompts_are_window_heads(text_model, corpus):  # noqa: F811
    from lsdd.text.corpus import read_split

    model = load_model(text_model)
    ids = model.tokenizer.encode(read_split(corpus, "test"))
    every = held_out_prompts(model, 5, str(corpus))
    n = ids.size // model.length
    assert every.shape == (n, 5) and np.array_equal(every[2], ids[2 * model.length: 2 * model.length + 5])
    some = held_out_prompts(model, 5, str(corpus), num=3)
    assert np.array_equal(some, every[[0, round((n - 1) / 2), n - 1]])


def test_cli_distill_with_prompts(text_model, corpus, tmp_path, capsys):  # noqa: F811
    f = tmp_path / "p.txt"
    f.write_text("To be\nThe slings\n\nWhether\nOr to take\n")
    out, cache = tmp_path / "s.json", tmp_path / "tc"
    common = ["distill", "--method", "lsd", "--model", str(text_model), "--nfe", "2", "--teacher-nfe", "4", "--num-traj", "12",
              "--batch-size", "4", "--chunk", "4", "--epochs", "1", "--val-samples", "8"]
    rc, text, err = _run([*common, "--prompts", str(f), "--teacher-cache", str(cache), "--out", str(out)], capsys)
    assert rc == 0, err
    rec = json.loads(out.read_text())["provenance"]["conditional"]
    assert rec["source"] == str(f) and rec["num_prompts"] == 4 and rec["held_out_prompts"] == 1
    assert "4 prompts" in text and "1 held out" in text
    [kept] = list(cache.iterdir())
    assert f"_p{rec['fingerprint']}_" in kept.name
    rc, text, err = _run([*common, "--prompts", "held-out:6:5", "--reference", str(corpus), "--out", str(out)], capsys)
    rec = json.loads(out.read_text())["provenance"]["conditional"]
    assert rc == 0 and rec["num_prompts"] == 5 and rec["source"] == "held-out:6:5", err
    rc, _, err = _run([*common, "--reference", str(corpus), "--out", str(out)], capsys)
    assert rc == 2 and "--reference is the held-out text of --prompts held-out:K" in err


# ---- the bench ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_bench(text_model, evaluator_dir, corpus):  # noqa: F811
    model = load_model(text_model)
    task = TextTask.build(model, evaluator=str(evaluator_dir), reference=str(corpus))
    prompts = ["To be", "The slings and", "Or"]
    cfg = BenchConfig(nfes=(2,), teacher_nfe=4, bases=("euler",), methods=("spread", "lsd", "confidence", "eb"),
                      num_samples=8, batch_size=4, timing_repeats=0, keep_samples=True, frontier=(0.9, 1.0),
                      distill={"epochs": 1}, prompts=prompts, prompts_source="inline", seed=1)
    return model, task, cfg, run_bench(model, task, cfg, progress=False, log=lambda *a: None)


def test_bench_rows_continue_the_prompts_and_score_the_continuation(text_bench):
    model, task, cfg, result = text_bench
    cond = from_prompt(model, cfg.prompts)
    rows, held = cond.rows(cfg.num_samples), cond.held(cfg.num_samples)
    assert [r.label for r in result.rows] == ["teacher-euler", "uniform-euler", "SPREAD-euler", "LSD-euler",
                                              "CONFIDENCE-euler", "eb"]
    for r in result.rows:
        # sample i of every row (the teacher's included) continues prompt i mod P ...
        assert torch.equal(r.samples[held], rows[held]), r.label
        # ... and is scored as lsdd.evaluate scores continuations given their prompt
        assert _same(r.metrics, lsdd.evaluate(r.samples, model, task, fixed=held)), r.label
    # a row is lsdd.sample with its sampler and the same prompts, same seed
    spread = result.rows[2]
    direct = lsdd.sample(model, spread.sampler, cfg.num_samples, seed=cfg.seed + 1, batch_size=cfg.batch_size,
                         prompt=cfg.prompts)
    assert torch.equal(direct.x, spread.samples)
    rec = result.config["prompts"]
    assert rec["num_prompts"] == 3 and rec["source"] == "inline" and json.dumps(result.to_dict())


def test_bench_adaptive_row_and_frontier_are_conditional(text_bench):
    model, task, cfg, result = text_bench
    cond = from_prompt(model, cfg.prompts)
    eb = next(r for r in result.rows if r.method == "eb")
    assert (eb.param, eb.nfe_mean) == match_budget(model, "eb", 2, num=cfg.num_samples, seed=cfg.seed + 1,
                                                   batch_size=cfg.batch_size, given=cond.given)
    lsd = next(r for r in result.rows if r.method == "lsd")
    assert lsd.sampler.provenance["conditional"]["num_prompts"] == 3
    spread = result.rows[2]
    [(t, cold), (one, same)] = spread.frontier
    assert one == 1.0 and _same(same, spread.metrics)
    redraw = lsdd.sample(model, spread.sampler.with_temperature(t), cfg.num_samples, seed=cfg.seed + 1,
                         batch_size=cfg.batch_size, fixed=cond.given)
    assert _same(cold, lsdd.evaluate(redraw.x, model, task, fixed=redraw.fixed))


def test_distribution_objective_and_select_draw_continuations(absorb, monkeypatch):
    """lsd-c's CMA-ES candidates continue the training prompts, LSD+ --select's draws the held-out ones."""
    model = load_model(absorb)
    draws = []
    sample_batched = engine.sample_batched

    def spy(*a, **kw):
        draws.append(kw.get("given"))
        return sample_batched(*a, **kw)

    monkeypatch.setattr(engine, "sample_batched", spy)
    teacher = Teacher(nfe=8, num_traj=16, batch_size=8, chunk=4)
    common = dict(teacher=teacher, val_samples=8, prompts=PROMPTS, progress=False, log=lambda *a: None)
    rows = {tuple(r.tolist()) for r in from_prompt(model, PROMPTS).given}
    held_out = {tuple(from_prompt(model, PROMPTS).given[3].tolist())}
    lsdd.distill(model, lsdd.LSDC(cma_iters=1, cma_popsize=2, obj_samples=8), 4, **common)
    assert draws and all(g is not None for g in draws)
    assert {tuple(r.tolist()) for r in draws[0]} == rows - held_out  # the objective: training prompts only
    draws.clear()
    lsdd.distill(model, lsdd.LSDPlus(epochs=1, select=True), 4, **common)
    assert draws and all({tuple(r.tolist()) for r in g} == held_out for g in draws)  # select, then validation
