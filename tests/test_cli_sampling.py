"""End-to-end CLI checks of sample / distill / bench on a tiny model written through the checkpoint API."""

import json

import numpy as np
import pytest
import torch

from lsdd.sampling.sampler import Sampler
from lsdd.cli import main
from lsdd.tasks import get_task
from lsdd.models import DiTConfig, ScoreDiT, load_model
from lsdd.models.checkpoint import save_model_dir


def _tiny(path, seed, std=0.2):
    torch.manual_seed(seed)  # the weights' init only; lsdd itself never uses the global generator
    cfg = DiTConfig(num_tokens=6, graph="absorbing", noise={"type": "loglinear", "eps": 1e-3}, length=8,
                    hidden_size=16, cond_dim=16, n_blocks=1, n_heads=2)
    model = ScoreDiT(cfg)
    with torch.no_grad():
        # randomise every weight: at init the output layer is zero (trivial scores) and so is each block's
        # adaLN modulation (every block is the identity, so a position's score ignores the other tokens, the
        # student's scores equal the teacher's and distillation leaves Phi = 1 and the uniform grid).
        # std 0.2 keeps masks at every student time of the tests' teachers (0.3 unmasks all in one step).
        for p in model.parameters():
            p.normal_(0, std)
    save_model_dir(path, model, cfg, {"note": "test model"})
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(_tiny(tmp_path_factory.mktemp("tiny"), 0))


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    return str(_tiny(tmp_path_factory.mktemp("other"), 1))


@pytest.fixture(scope="module")
def learned(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("learned") / "s.json"
    # --no-validate: these tests are about the artifact (tests/test_validate.py covers validation); --no-spread: a
    # plain LSD file (spread files: tests/test_spread.py)
    rc = main(["distill", "--method", "lsd", "--model", tiny, "--nfe", "4", "--teacher", "steps", "--teacher-nfe", "16", "--epochs", "2",
               "--num-traj", "32",
               "--batch-size", "16", "--no-validate", "--no-spread", "--out", str(out)])
    assert rc == 0
    return out


def test_sample_base_and_learned_round_trip(tiny, learned, tmp_path, capsys):
    s = Sampler.load(learned)
    # the distillation learned something (Phi = 1 everywhere would make the checks below vacuous)
    assert s.coeffs != (1.0,) * 4
    # the artifact describes itself
    assert s.nfe == 4 and s.provenance["model_fingerprint"] == load_model(tiny).fingerprint
    assert s.provenance["teacher_nfe"] == 16 and s.provenance["method"] == "lsd"
    # save -> load gives the same object, and the same samples for the same seed
    s.save(tmp_path / "copy.json")
    assert Sampler.load(tmp_path / "copy.json") == s
    outs = []
    for src in (learned, tmp_path / "copy.json", learned):
        out = tmp_path / f"x{len(outs)}.npy"
        assert main(["sample", "--model", tiny, "--learned", str(src), "--num", "20", "--seed", "3",
                     "--out", str(out)]) == 0
        outs.append(np.load(out))
    # int64 (num, length), real tokens only (ids 0..5; the mask id 6 never survives), one call per step
    assert outs[0].shape == (20, 8) and outs[0].dtype == np.int64 and (outs[0] >= 0).all() and (outs[0] < 6).all()
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    assert "4 network calls per sample" in capsys.readouterr().out
    # another seed draws other samples
    assert main(["sample", "--model", tiny, "--learned", str(learned), "--num", "20", "--seed", "4",
                 "--out", str(tmp_path / "seed4.npy")]) == 0
    assert not np.array_equal(np.load(tmp_path / "seed4.npy"), outs[0])
    assert main(["sample", "--model", tiny, "--sampler", "tweedie", "--steps", "5", "--num", "4",
                 "--out", str(tmp_path / "b.npy")]) == 0
    base = np.load(tmp_path / "b.npy")
    assert base.shape == (4, 8) and base.dtype == np.int64 and (base >= 0).all() and (base < 6).all()
    assert "5 network calls per sample" in capsys.readouterr().out


def test_unit_learned_sampler_equals_base(tiny, tmp_path):
    # a learned sampler with Phi = 1 on the uniform grid samples exactly like the base sampler
    model = load_model(tiny)
    times = tuple(float(t) for t in torch.linspace(1.0, 1e-5, 7, dtype=torch.float64))
    for name, coeffs in (("unit", (1.0,) * 6), ("hot", (3.0,) * 6)):
        s = Sampler(times, "tweedie", coeffs, phi_mode="log",
                    model={"graph": "absorbing", "num_tokens": 6, "noise": model.noise.to_dict(),
                           "fingerprint": model.fingerprint})
        s.save(tmp_path / f"{name}.json")
        assert main(["sample", "--model", tiny, "--learned", str(tmp_path / f"{name}.json"), "--num", "16",
                     "--seed", "0", "--out", str(tmp_path / f"{name}.npy")]) == 0
    assert main(["sample", "--model", tiny, "--sampler", "tweedie", "--steps", "6", "--num", "16", "--seed", "0",
                 "--out", str(tmp_path / "b.npy")]) == 0
    base = np.load(tmp_path / "b.npy")
    assert base.shape == (16, 8)
    assert np.array_equal(np.load(tmp_path / "unit.npy"), base)
    # ...and the coefficients are really used: Phi = 3 (log mode: scores cubed) changes the samples
    assert not np.array_equal(np.load(tmp_path / "hot.npy"), base)


def test_mismatched_and_malformed_artifacts_rejected(tiny, other, learned, tmp_path, capsys):
    out = tmp_path / "x.npy"
    # another model: refused with a clear message, exit 2, nothing written; --force overrides
    assert main(["sample", "--model", other, "--learned", str(learned), "--out", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err and not out.exists()
    assert main(["sample", "--model", other, "--learned", str(learned), "--force", "--num", "2",
                 "--out", str(out)]) == 0
    assert np.load(out).shape == (2, 8)
    capsys.readouterr()  # drop that run's output: each error below must be the whole of stderr
    good = json.loads(learned.read_text())
    bad_cases = {
        "version": ({**good, "format_version": 99}, "unsupported format_version 99"),
        "lengths": ({**good, "coeffs": good["coeffs"][:-1]}, "5 times need 4 coeffs, got 3"),
        "grid": ({**good, "times": [1.0, 0.5, 0.7, 0.2, 1e-5]}, "strictly decreasing"),
        "mode": ({**good, "phi_mode": "cubic"}, "unknown phi_mode 'cubic'"),
        "nan": ({**good, "coeffs": [1.0, "x", 1.0, 1.0]}, "times and coeffs must be lists of finite numbers"),
        "graph": ({**good, "model": {**good["model"], "graph": "uniform"}}, "made for a model with the uniform graph and 6 tokens"),
    }
    for name, (d, message) in bad_cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(d))
        target = tmp_path / f"{name}.npy"
        assert main(["sample", "--model", tiny, "--learned", str(path), "--out", str(target)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("lsdd sample: error:") and message in err, (name, err)
        assert err.count("\n") == 1 and "Traceback" not in err and not target.exists(), (name, err)
    (tmp_path / "junk.json").write_text("{not json")
    junk_out = tmp_path / "junk.npy"
    assert main(["sample", "--model", tiny, "--learned", str(tmp_path / "junk.json"), "--out", str(junk_out)]) == 2
    err = capsys.readouterr().err
    assert "not a sampler JSON file" in err and err.count("\n") == 1 and not junk_out.exists()


def test_bad_sample_input(tiny, tmp_path, capsys):
    out = tmp_path / "x.npy"
    assert main(["sample", "--model", "no-such-model", "--out", str(out)]) == 2
    assert "no-such-model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["sample", "--model", tiny, "--steps", "0", "--out", str(out)])
    assert e.value.code == 2 and "expected a positive integer, got 0" in capsys.readouterr().err
    assert main(["sample", "--model", tiny, "--eps", "1.5", "--out", str(out)]) == 2
    assert "--eps must lie in (0, 1), got 1.5" in capsys.readouterr().err
    assert main(["sample", "--model", tiny, "--out", str(tmp_path / "x.txt")]) == 2
    assert "must end in .npy" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "x.txt").exists()


DISTILL_ARGS = ["--method", "lsd", "--nfe", "4", "--teacher-nfe", "8", "--epochs", "2", "--num-traj", "16", "--batch-size", "8",
                "--no-validate"]


def test_distill_refuses_stale_checkpoint(tiny, tmp_path, capsys):
    out = tmp_path / "s.json"
    args = ["distill", "--model", tiny, *DISTILL_ARGS, "--out", str(out)]
    ckpt = tmp_path / "s.json.ckpt"
    assert main(args + ["--resume"]) == 2  # nothing to resume from
    assert "no checkpoint" in capsys.readouterr().err
    ckpt.write_bytes(b"stale")
    assert main(args) == 2 and not out.exists()  # an interrupted run's checkpoint is never silently replaced
    assert "exists from an interrupted run: pass --resume, or delete it" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 2 and not out.exists()  # and an unreadable one is reported, not trusted
    assert f"--resume: cannot read {ckpt}" in capsys.readouterr().err
    assert ckpt.read_bytes() == b"stale"
    ckpt.unlink()
    assert main(args) == 0 and out.exists() and not ckpt.exists()
    assert Sampler.load(out).nfe == 4
    bad = tmp_path / "b.json"
    assert main(["distill", "--model", tiny, "--nfe", "3", "--teacher-nfe", "4", "--out", str(bad)]) == 2
    assert "teacher nfe must be a multiple of the student nfe 3, got 4" in capsys.readouterr().err
    assert not bad.exists()


def test_distill_interrupted_then_resumed_matches_uninterrupted(tiny, tmp_path, monkeypatch, capsys):
    import lsdd.distillation.distill

    whole = tmp_path / "whole.json"
    assert main(["distill", "--model", tiny, *DISTILL_ARGS, "--method", "lsd+", "--out", str(whole)]) == 0
    real = lsdd.distillation.distill.distill
    epochs_run = []

    def stop_after_first_epoch(*args, on_epoch, **kw):
        def cb(rec, state):
            on_epoch(rec, state)  # the CLI checkpoints here
            raise KeyboardInterrupt
        return real(*args, on_epoch=cb, **kw)

    def counting(*args, on_epoch, **kw):
        def cb(rec, state):
            epochs_run.append(state["epoch"])
            on_epoch(rec, state)
        return real(*args, on_epoch=cb, **kw)

    out, ckpt = tmp_path / "s.json", tmp_path / "s.json.ckpt"
    args = ["distill", "--model", tiny, *DISTILL_ARGS, "--method", "lsd+", "--out", str(out)]
    monkeypatch.setattr(lsdd.distillation.distill, "distill", stop_after_first_epoch)
    assert main(args) == 130  # interrupted after epoch 1: checkpoint kept, no output
    teacher = tmp_path / "s.json.ckpt.teacher"  # the teacher run, written once beside the per-epoch checkpoint
    assert ckpt.is_file() and teacher.is_file() and not out.exists()
    assert "teacher_ckpt" in torch.load(ckpt, weights_only=False) and "cache" not in torch.load(ckpt, weights_only=False)
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(lsdd.distillation.distill, "distill", counting)
    assert main(args + ["--resume"]) == 0
    assert "(epoch 1 of 2)" in capsys.readouterr().out
    # only the remaining epoch ran, the checkpoint is gone, and the result is the uninterrupted one
    assert epochs_run == [2] and not ckpt.exists() and not teacher.exists()
    a, b = Sampler.load(whole), Sampler.load(out)
    assert a.coeffs == b.coeffs and a.times == b.times
    # and it learned something, so a resume that restarted or skipped epochs would show
    assert a.times != tuple(float(t) for t in torch.linspace(1.0, 1e-5, 5, dtype=torch.float64))
    assert a.coeffs != (1.0,) * 4


def test_lsdc_interrupted_then_resumed_replays_its_cma_generations(tiny, tmp_path, monkeypatch, capsys):
    """lsd-c checkpoints after every CMA-ES generation; a resumed run replays the recorded generations without
    sampling them and ends where the uninterrupted run ends."""
    import lsdd.distillation.objective as objective

    lsdc = ["--model", tiny, "--method", "lsd-c", "--nfe", "3", "--teacher-nfe", "6", "--num-traj", "40",
            "--batch-size", "16", "--obj-samples", "16", "--cma-iters", "3", "--cma-popsize", "4",
            "--objective", "mmd", "--no-early-exit", "--no-validate", "--cma-probe"]
    whole = tmp_path / "whole.json"
    assert main(["distill", *lsdc, "--out", str(whole)]) == 0
    real = objective.minimise_cma
    evaluated = []

    def stop_after_two(fn, *args, on_generation, **kw):
        def cb(rec):
            on_generation(rec)  # the checkpoint is written here
            if cb.n == 1:  # after the second generation
                raise KeyboardInterrupt
            cb.n += 1
        cb.n = 0
        return real(fn, *args, on_generation=cb, **kw)

    def counting(fn, *args, **kw):
        return real(lambda v: evaluated.append(1) or fn(v), *args, **kw)

    out, ckpt = tmp_path / "s.json", tmp_path / "s.json.ckpt"
    monkeypatch.setattr("lsdd.distillation.distill.minimise_cma", stop_after_two)
    assert main(["distill", *lsdc, "--out", str(out)]) == 130
    assert ckpt.is_file() and not out.exists()
    assert len(torch.load(ckpt, weights_only=False)["state"]["cma"]["generations"]) == 2
    capsys.readouterr()
    monkeypatch.setattr("lsdd.distillation.distill.minimise_cma", counting)
    assert main(["distill", *lsdc, "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "(CMA-ES generation 2 of 3)" in printed and "replaying 2 generation(s)" in printed
    # the start point, the probe (its Hessian over Phi's and beta's 2 + 2 coordinates: 2 * 4 + 6 calls, deterministic,
    # made again on a resume), then generation 3 only
    assert len(evaluated) == 1 + 2 * 4 + 6 + 4
    a, b = Sampler.load(whole), Sampler.load(out)
    assert a.conditioning == b.conditioning and a.coeffs == b.coeffs and not ckpt.exists()
    drop = lambda hist: [{k: v for k, v in h.items() if k != "seconds"} for h in hist]  # noqa: E731
    assert drop(a.provenance["history"]) == drop(b.provenance["history"]) and len(a.provenance["history"]) == 4
    best = b.provenance["history"][-1]["best_so_far"]  # what the fit found, not its last generation's best
    assert f"objective {best:.4g} (best of the fit)" in printed and best <= b.provenance["history"][0]["loss_phi"]
    # it moved from the start (beta = 1, Phi = 1), so a resume that restarted or skipped generations would show
    assert any(abs(v - 1.0) > 1e-9 for v in a.conditioning["beta"]) or any(abs(c - 1.0) > 1e-9 for c in a.coeffs)


def test_distill_when_teacher_unmasks_everything_early(tmp_path):
    # large random weights: the teacher's first Euler step unmasks every token, so the cache holds no score
    # rows for student steps 1..3; distillation must still finish (nothing to compare at those steps)
    model = str(_tiny(tmp_path / "m", 0, std=0.3))
    out = tmp_path / "s.json"
    assert main(["distill", "--method", "lsd", "--model", model, "--nfe", "4", "--teacher-nfe", "16", "--epochs", "1", "--num-traj",
                 "32", "--batch-size", "16", "--out", str(out)]) == 0
    assert Sampler.load(out).nfe == 4


def test_bench_table_json_plot(tiny, tmp_path, capsys):
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    rc = main(["bench", "--model", tiny, "--task", "countdown", "--nfe", "2", "4", "--teacher-nfe", "8",
               "--num-samples", "16", "--batch-size", "16", "--epochs", "1", "--timing-repeats", "1",
               "--json", str(js), "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    d = json.loads(js.read_text())
    labels = [(r["label"], r["nfe"]) for r in d["rows"]]
    # teacher + (2 baselines + 2 bases x 2 methods) per NFE, NFE counted per row
    assert labels[0] == ("teacher-euler", 8) and len(labels) == 1 + 2 * 6
    assert {("LSD+-tweedie", 4), ("LSD-euler", 2), ("uniform-tweedie", 2)} <= set(labels)
    # every row is scored on every metric of the task, and the metrics agree with each other
    names = [m.name for m in get_task("countdown").metrics]
    for r in d["rows"]:
        m = r["metrics"]
        assert list(m) == names, r["label"]
        assert m["valid_fraction"] == pytest.approx(1.0 - m["any_violation"])
        assert 0.0 <= m["violation_rate"] <= m["any_violation"] <= 1.0
    # learned rows carry the sampler they scored, made for this model at the row's NFE; baselines carry none
    fp = load_model(tiny).fingerprint
    for r in d["rows"][1:]:
        if r["method"] == "uniform":
            assert r["sampler"] is None and r["label"] == f"uniform-{r['base']}"
        else:
            s = Sampler.from_dict(r["sampler"])
            assert s.nfe == r["nfe"] and s.rule == r["base"] and s.provenance["method"] == r["method"]
            assert s.provenance["model_fingerprint"] == fp and s.provenance["teacher_nfe"] == 8
    # gap_closed = (euler - row) / (euler - teacher) on the headline metric, per NFE (with this random model
    # every row has any_violation = 1, so only the None branch runs here; the arithmetic is checked by hand below)
    head = d["headline"][0]
    assert head == "any_violation"
    teacher = d["rows"][0]["metrics"][head]
    for r in d["rows"][1:]:
        euler = next(e for e in d["rows"] if e["nfe"] == r["nfe"] and e["label"] == "uniform-euler")
        gap = euler["metrics"][head] - teacher
        if gap > 1e-12:  # lower is better: defined only where Euler is worse than the teacher
            assert r["gap_closed"] == pytest.approx((euler["metrics"][head] - r["metrics"][head]) / gap)
        else:
            assert r["gap_closed"] is None
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gap closed" in text and all(r["label"] in text for r in d["rows"])
    # same seed, same rows (wall times aside)
    js2 = tmp_path / "b2.json"
    assert main(["bench", "--model", tiny, "--task", "countdown", "--nfe", "2", "4", "--teacher-nfe", "8",
                 "--num-samples", "16", "--batch-size", "16", "--epochs", "1", "--timing-repeats", "0",
                 "--json", str(js2)]) == 0
    again = json.loads(js2.read_text())["rows"]
    key = lambda rows: [(r["label"], r["nfe"], r["metrics"], r["sampler"] and r["sampler"]["coeffs"])  # noqa: E731
                        for r in rows]
    assert key(again) == key(d["rows"])


def test_bench_passes_the_cma_probe_to_its_lsd_c_rows(monkeypatch):
    """`lsdd bench --cma-probe` reaches the lsd-c method it fits (as `lsdd distill --cma-probe` does)."""
    import lsdd.bench as bench

    seen = []
    monkeypatch.setattr(bench, "run_bench", lambda model, task, cfg: seen.append(cfg) or (_ for _ in ()).throw(SystemExit(0)))
    for flag, want in (("--cma-probe", True), ("--no-cma-probe", False)):
        with pytest.raises(SystemExit):
            main(["bench", "--model", "countdown", "--nfe", "4", "--methods", "lsd-c", flag])
        assert seen[-1].distill["cma_probe"] is want
        assert bench._method("lsd-c", {**seen[-1].distill, "objective": "auto"}).cma_probe is want


def test_bench_gap_closed_hand_example():
    from lsdd.bench import BenchRow, _fill_gap

    def row(label, base, method, nfe, any_violation):
        return BenchRow(label, base, method, nfe, {"any_violation": any_violation}, 0.0)

    teacher = row("teacher-euler", "euler", "teacher", 64, 0.1)
    rows = [teacher, row("uniform-euler", "euler", "uniform", 8, 0.5),
            row("uniform-tweedie", "tweedie", "uniform", 8, 0.4), row("LSD-euler", "euler", "lsd", 8, 0.2),
            row("uniform-tweedie", "tweedie", "uniform", 16, 0.3)]
    _fill_gap(rows, teacher, "any_violation", higher_is_better=False)
    # Euler -> teacher gap 0.4 at NFE 8: Euler closes 0, 0.4 -> 0.25, 0.2 -> 0.75; no Euler row at 16: none
    assert [r.gap_closed for r in rows] == [None, 0.0, pytest.approx(0.25), pytest.approx(0.75), None]


def test_bench_bad_input(tiny, tmp_path, capsys):
    js = tmp_path / "b.json"
    assert main(["bench", "--model", tiny, "--nfe", "3", "--teacher-nfe", "8", "--json", str(js)]) == 2
    assert "must be a multiple of every student nfe [3]" in capsys.readouterr().err and not js.exists()
    assert main(["bench", "--model", tiny, "--task", "nope", "--json", str(js)]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err and not js.exists()
    assert main(["bench", "--model", tiny, "--json", str(tmp_path / "b.txt")]) == 2
    assert "must end in .json" in capsys.readouterr().err


def test_bench_temperature_control_matches_lsd_diversity(tiny, tmp_path):
    """The control row: Euler at the temperature whose diversity is closest to LSD-euler's, at the same NFE."""
    from lsdd.bench import BenchConfig, run_bench

    model = load_model(tiny)
    task = get_task("tokens")
    cfg = BenchConfig(nfes=(4,), teacher_nfe=8, bases=("euler",), methods=("lsd",), num_samples=32, batch_size=32,
                      timing_repeats=0, temperature_control=True, temperature_iters=5, distill={"epochs": 1})
    result = run_bench(model, task, cfg, progress=False, log=lambda *_: None)
    by = {r.method: r for r in result.rows}
    ctrl, lsd, euler = by["temperature"], by["lsd"], by["uniform"]
    assert ctrl.nfe == 4 and ctrl.steps == 4 and ctrl.label.startswith("euler-T")
    temp = float(ctrl.label[len("euler-T"):])
    assert 0.25 <= temp <= 2.0
    div = task.pairs[0][1]
    # the search keeps the best of its probes (Euler, T = 1, among them)
    assert abs(ctrl.metrics[div] - lsd.metrics[div]) <= abs(euler.metrics[div] - lsd.metrics[div]) + 1e-12
    # what the search relies on: diversity rises with the temperature, here from T = 0.25 to T = 2
    from lsdd.sampling.samplers import sample_batched, tempered_score
    from lsdd.sampling.schedules import uniform_times

    ent = [task.compute(sample_batched(tempered_score(model.score_fn, temp), model.graph, model.noise,
                                       uniform_times(4), 32, model.config.length, seed=1).x)[div]
           for temp in (0.25, 2.0)]
    assert ent[0] < ent[1]


def test_bench_teacher_cache_is_reused_only_for_the_same_run(tiny, tmp_path, capsys):
    """--teacher-cache: the first bench saves its teacher run, a second identical one reads it back (no teacher
    network calls) and gets the same rows; another seed makes and saves its own; a file is refused."""
    from lsdd.bench import BenchConfig, run_bench

    model = load_model(tiny)
    task = get_task("tokens")
    cache = tmp_path / "teachers"
    cfg = BenchConfig(nfes=(2, 4), teacher_nfe=8, bases=("euler",), methods=("lsd",), num_samples=16, batch_size=8,
                      timing_repeats=0, distill={"epochs": 1}, teacher_cache=str(cache), validate=False)
    logs, calls = [], {"n": 0}
    hook = model.module.register_forward_hook(lambda mod, inp, out: calls.__setitem__("n", calls["n"] + inp[0].shape[0]))
    try:
        first = run_bench(model, task, cfg, progress=False, log=logs.append)
        made, calls["n"] = calls["n"], 0
        again = run_bench(model, task, cfg, progress=False, log=logs.append)
    finally:
        hook.remove()
    files = sorted(cache.iterdir())
    assert len(files) == 1 and model.fingerprint in files[0].name and "_s0_" in files[0].name
    assert not any(f.name.startswith(".") for f in cache.iterdir())  # no temporary left behind
    assert any("from " in line and files[0].name in line for line in logs)
    # the second bench made every network call of the first except the teacher's: 8 steps x 16 trajectories
    assert calls["n"] > 0 and made - calls["n"] == 8 * 16
    assert [r.metrics for r in again.rows] == [r.metrics for r in first.rows]
    # a bench on a coarser nested grid (NFE 2 divides the cached 4-step grid) reads the same run: no teacher calls
    calls["n"] = 0
    hook = model.module.register_forward_hook(lambda mod, inp, out: calls.__setitem__("n", calls["n"] + inp[0].shape[0]))
    try:
        coarse = run_bench(model, task, BenchConfig(**{**cfg.__dict__, "nfes": (2,)}), progress=False,
                           log=logs.append)
    finally:
        hook.remove()
    assert len(list(cache.iterdir())) == 1 and calls["n"] < 8 * 16
    assert [r.metrics for r in coarse.rows if r.nfe in (2, 8)] == [r.metrics for r in first.rows if r.nfe in (2, 8)]
    # a reader that would keep only the states reads the "scores" run as is (it holds the states too)
    states = run_bench(model, task, BenchConfig(**{**cfg.__dict__, "distill": {"epochs": 1, "teacher_store": "states"}}),
                       progress=False, log=logs.append)
    assert len(list(cache.iterdir())) == 1 and "from " in logs[-1]
    assert [r.metrics for r in states.rows] == [r.metrics for r in first.rows]
    run_bench(model, task, BenchConfig(**{**cfg.__dict__, "seed": 1}), progress=False, log=lambda *_: None)
    assert len(list(cache.iterdir())) == 2
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["bench", "--model", tiny, "--teacher-cache", str(target), "--nfe", "2"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_distill_reads_the_bench_teacher_cache(tiny, tmp_path, capsys):
    """`lsdd distill --teacher-cache` reads the run a bench saved on a finer nested grid (no teacher calls), saves
    its own when there is none, and refuses what the cache cannot hold."""
    from lsdd.bench import BenchConfig, run_bench

    model = load_model(tiny)
    cache = tmp_path / "teachers"
    run_bench(model, get_task("tokens"), BenchConfig(nfes=(2, 4), teacher_nfe=8, bases=("euler",), methods=(),
                                                      num_samples=16, batch_size=8, timing_repeats=0,
                                                      teacher_cache=str(cache)),
              progress=False, log=lambda *_: None)
    assert [f.name.split("_")[4] for f in cache.iterdir()] == ["m4"]
    common = ["distill", "--method", "lsd", "--model", tiny, "--teacher", "steps", "--teacher-nfe", "8", "--num-traj", "16",
              "--batch-size", "8", "--epochs", "1", "--no-validate", "--teacher-cache", str(cache)]
    assert main([*common, "--nfe", "2", "--out", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "from " in out and "_m4_" in out and (tmp_path / "a.json").is_file()
    assert not (tmp_path / "a.json.ckpt").exists()
    # no run on a grid that 8 steps nest in: this one runs the teacher and saves it
    assert main([*common, "--nfe", "8", "--out", str(tmp_path / "b.json")]) == 0
    assert "saved to" in capsys.readouterr().out
    assert sorted(f.name.split("_")[4] for f in cache.iterdir()) == ["m4", "m8"]
    assert main([*common, "--nfe", "2", "--coupled", "--out", str(tmp_path / "c.json")]) == 2
    assert "does not apply with --coupled" in capsys.readouterr().err and not (tmp_path / "c.json").exists()


def test_distill_checkpoint_reads_the_teacher_cache_instead_of_copying_it(tiny, tmp_path, monkeypatch, capsys):
    """With --teacher-cache the per-epoch checkpoint names the cache file (no copy of the teacher's scores, which
    at V = 1,024 is a gigabyte per epoch); --resume reads it there and gives the uninterrupted result; a cache
    file deleted in between is a one-line error."""
    import lsdd.distillation.distill

    common = ["distill", "--model", tiny, *DISTILL_ARGS, "--teacher-cache", str(tmp_path / "teachers")]
    whole = tmp_path / "whole.json"
    assert main([*common, "--out", str(whole)]) == 0  # runs the teacher and saves it in the cache
    real = lsdd.distillation.distill.distill

    def stop_after_first_epoch(*args, on_epoch, **kw):
        def cb(rec, state):
            on_epoch(rec, state)
            raise KeyboardInterrupt
        return real(*args, on_epoch=cb, **kw)

    out, ckpt = tmp_path / "s.json", tmp_path / "s.json.ckpt"
    monkeypatch.setattr(lsdd.distillation.distill, "distill", stop_after_first_epoch)
    assert main([*common, "--out", str(out)]) == 130
    saved = torch.load(ckpt, weights_only=False)
    (cached,) = (tmp_path / "teachers").iterdir()
    assert saved["teacher_file"] == str(cached.resolve()) and "cache" not in saved
    assert not (tmp_path / "s.json.ckpt.teacher").exists() and ckpt.stat().st_size < 20_000
    monkeypatch.setattr(lsdd.distillation.distill, "distill", real)
    capsys.readouterr()
    assert main([*common, "--out", str(out), "--resume"]) == 0 and not ckpt.exists()
    assert Sampler.load(out).coeffs == Sampler.load(whole).coeffs
    # the cache file removed while interrupted: a one-line error, the checkpoint kept for the user to delete
    monkeypatch.setattr(lsdd.distillation.distill, "distill", stop_after_first_epoch)
    out.unlink()
    assert main([*common, "--out", str(out)]) == 130
    cached.unlink()
    monkeypatch.setattr(lsdd.distillation.distill, "distill", real)
    capsys.readouterr()
    assert main([*common, "--out", str(out), "--resume"]) == 2 and not out.exists()
    assert "is gone; delete" in capsys.readouterr().err


def test_match_temperature_reaches_the_target_in_few_runs():
    """The control's search: secant steps on log T from T = 1 find a smooth rising diversity's target in 2-4
    runs, stop at the range's bounds when the target is out of reach, never exceed their budget, and return the
    best probe (T = 1 included) when sampling noise makes the curve non-monotone."""
    import math

    from lsdd.bench import match_temperature

    calls = []

    def curve(x):  # entropy-like: rising in log T, slightly curved
        calls.append(x)
        return 4.35 + 0.4 * x + 0.1 * x ** 3

    for target in (4.30, 4.20, 4.34, 4.40, 4.50):
        calls.clear()
        temp, value, n = match_temperature(curve, target, 4, value_at_one=4.35, tol=1e-3 * target)
        assert n == len(calls) <= 4 and abs(value - target) <= 1e-3 * target  # within the default budget
        assert value == pytest.approx(curve(math.log(temp)))
    # out of reach: the search ends at the bound, within its budget, with the closest value it saw
    calls.clear()
    temp, value, n = match_temperature(curve, 2.0, 5, value_at_one=4.35)
    assert temp == pytest.approx(0.25) and n == len(calls) <= 5
    assert value == pytest.approx(min(4.35 + 0.4 * x + 0.1 * x ** 3 for x in calls))
    calls.clear()
    temp, value, n = match_temperature(curve, 9.0, 3)  # T = 1 not known: the first run probes it
    assert calls[0] == 0.0 and n == 3 == len(calls) and temp == pytest.approx(2.0)

    def noisy(x):  # falls where it should rise: the best probe is returned all the same
        seen.append((x, 1.0 - x))
        return 1.0 - x

    seen = [(0.0, 1.0)]
    temp, value, n = match_temperature(noisy, 0.9, 4, value_at_one=1.0)
    assert n <= 4 and abs(value - 0.9) == min(abs(v - 0.9) for _, v in seen)


def test_bench_scores_learned_files_with_their_own_control(tiny, learned, tmp_path, capsys):
    """--learned: a sampler distilled earlier is scored at its NFE with the bench's seeds (the same samples as
    `lsdd sample --learned` at seed + 1), and gets its own entropy-matched temperature control."""
    from lsdd.bench import BenchConfig, run_bench
    from lsdd.sampling.samplers import sample_batched

    model = load_model(tiny)
    smp = Sampler.load(learned)
    cfg = BenchConfig(nfes=(4,), teacher_nfe=8, bases=("euler",), methods=(), num_samples=32, batch_size=32,
                      timing_repeats=0, temperature_control=True, temperature_iters=3, keep_samples=True,
                      learned=(("s.json", smp),))
    result = run_bench(model, get_task("tokens"), cfg, progress=False, log=lambda *_: None)
    by = {r.method: r for r in result.rows}
    row, ctrl = by["lsd"], by["temperature"]
    assert row.label == "LSD-euler [s.json]" and row.nfe == 4 and row.sampler is smp
    want = sample_batched(model.score_fn, model.graph, model.noise, smp.times_tensor(), 32, model.config.length,
                          batch_size=32, seed=1, **smp.loop_args(model.graph)).x
    assert torch.equal(torch.as_tensor(row.samples), want)
    assert ctrl.matches == "LSD-euler [s.json]" and ctrl.nfe == 4
    assert result.config["learned"] == ["s.json"]
    # a file whose NFE has no Euler row is refused by name; so is a sampler learned for another model
    with pytest.raises(ValueError, match="s.json makes 4 network calls"):
        run_bench(model, get_task("tokens"), BenchConfig(nfes=(2,), teacher_nfe=8, bases=("euler",), methods=(),
                                                         learned=(("s.json", smp),)), progress=False)
    other = _tiny(tmp_path / "o", 1)
    assert main(["bench", "--model", str(other), "--nfe", "4", "--teacher-nfe", "8", "--methods",
                 "--learned", str(learned)]) == 2
    assert "not for this model" in capsys.readouterr().err


def test_bench_gap_closed_in_log_scale():
    from lsdd.bench import BenchRow, _fill_gap

    rows = [BenchRow("teacher", "euler", "teacher", 64, {"gen_ppl": 10.0}, 0.0),
            BenchRow("uniform-euler", "euler", "uniform", 8, {"gen_ppl": 1000.0}, 0.0),
            BenchRow("LSD-euler", "euler", "lsd", 8, {"gen_ppl": 100.0}, 0.0)]
    _fill_gap(rows, rows[0], "gen_ppl", higher_is_better=False, log_scale=True)
    assert rows[2].gap_closed == pytest.approx(0.5)  # log 1000 -> log 100 is half of log 1000 -> log 10
    # Euler already below the teacher (as Euler@64 on text-uniform): no gap to close, left out for every row
    rows[1].metrics["gen_ppl"] = 9.0
    _fill_gap(rows, rows[0], "gen_ppl", higher_is_better=False, log_scale=True)
    assert rows[2].gap_closed is None and rows[1].gap_closed is None
    # higher is better: the sign flips with it
    hi = [BenchRow("teacher", "euler", "teacher", 64, {"acc": 0.9}, 0.0),
          BenchRow("uniform-euler", "euler", "uniform", 8, {"acc": 0.5}, 0.0),
          BenchRow("LSD-euler", "euler", "lsd", 8, {"acc": 0.8}, 0.0)]
    _fill_gap(hi, hi[0], "acc", higher_is_better=True)
    assert hi[2].gap_closed == pytest.approx(0.75)
    hi[1].metrics["acc"] = 0.95
    _fill_gap(hi, hi[0], "acc", higher_is_better=True)
    assert hi[2].gap_closed is None


def test_cma_replay_is_exact_and_refuses_another_run():
    from lsdd.distillation.objective import minimise_cma

    fn = lambda v: float(((v - torch.tensor([0.3, -0.2], dtype=torch.float64)) ** 2).sum())  # noqa: E731
    recs = []
    whole = minimise_cma(fn, torch.zeros(2, dtype=torch.float64), 0.5, 4, 6, seed=3, on_generation=recs.append)
    calls = []
    again = minimise_cma(lambda v: calls.append(1) or fn(v), torch.zeros(2, dtype=torch.float64), 0.5, 4, 6, seed=3,
                         replay=recs[:3])
    assert torch.equal(whole.x, again.x) and whole.history == again.history and len(calls) == 1 + 6
    assert whole.value < fn(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="generation 1 asks for other candidates"):
        minimise_cma(fn, torch.zeros(2, dtype=torch.float64), 0.5, 4, 6, seed=4, replay=recs[:3])
    with pytest.raises(ValueError, match="holds 4 CMA-ES generations; this run has 3"):
        minimise_cma(fn, torch.zeros(2, dtype=torch.float64), 0.5, 3, 6, seed=3, replay=recs)
