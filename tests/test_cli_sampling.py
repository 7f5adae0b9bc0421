"""End-to-end CLI checks of sample / distill / bench on a tiny model written through the checkpoint API."""

import json

import numpy as np
import pytest
import torch

from lsdd.artifact import LearnedSampler
from lsdd.cli import main
from lsdd.models import DiTConfig, ScoreDiT, load_model
from lsdd.models.checkpoint import save_model_dir


def _tiny(path, seed):
    torch.manual_seed(seed)  # the weights' init only; lsdd itself never uses the global generator
    cfg = DiTConfig(num_tokens=6, graph="absorbing", noise={"type": "loglinear", "eps": 1e-3}, length=8,
                    hidden_size=16, cond_dim=16, n_blocks=1, n_heads=2)
    model = ScoreDiT(cfg)
    with torch.no_grad():  # leave the zero-initialised output layer so the scores are not trivial
        for p in model.output_layer.parameters():
            p.normal_(0, 0.3)
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
    rc = main(["distill", "--model", tiny, "--nfe", "4", "--teacher-nfe", "16", "--epochs", "2", "--num-traj", "32",
               "--batch-size", "16", "--out", str(out)])
    assert rc == 0
    return out


def test_sample_base_and_learned_round_trip(tiny, learned, tmp_path):
    s = LearnedSampler.load(learned)
    # the artifact describes itself
    assert s.nfe == 4 and s.provenance["model_fingerprint"] == load_model(tiny).fingerprint
    assert s.provenance["teacher_nfe"] == 16 and s.provenance["method"] == "lsd"
    # save -> load gives the same object, and the same samples for the same seed
    s.save(tmp_path / "copy.json")
    assert LearnedSampler.load(tmp_path / "copy.json") == s
    outs = []
    for src in (learned, tmp_path / "copy.json", learned):
        out = tmp_path / f"x{len(outs)}.npy"
        assert main(["sample", "--model", tiny, "--learned", str(src), "--num", "20", "--seed", "3",
                     "--out", str(out)]) == 0
        outs.append(np.load(out))
    assert outs[0].shape == (20, 8) and (outs[0] < 6).all()
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    assert main(["sample", "--model", tiny, "--sampler", "tweedie", "--steps", "5", "--num", "4",
                 "--out", str(tmp_path / "b.npy")]) == 0


def test_unit_learned_sampler_equals_base(tiny, tmp_path):
    # a learned sampler with Phi = 1 on the uniform grid samples exactly like the base sampler
    model = load_model(tiny)
    times = tuple(float(t) for t in torch.linspace(1.0, 1e-5, 7, dtype=torch.float64))
    s = LearnedSampler("tweedie", "absorbing", 6, model.noise.to_dict(), times, (1.0,) * 6, "log",
                       {"model_fingerprint": model.fingerprint})
    s.save(tmp_path / "unit.json")
    main(["sample", "--model", tiny, "--learned", str(tmp_path / "unit.json"), "--num", "16", "--out",
          str(tmp_path / "a.npy")])
    main(["sample", "--model", tiny, "--sampler", "tweedie", "--steps", "6", "--num", "16", "--out",
          str(tmp_path / "b.npy")])
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_mismatched_and_malformed_artifacts_rejected(tiny, other, learned, tmp_path, capsys):
    out = tmp_path / "x.npy"
    # another model: refused with a clear message, exit 2, nothing written; --force overrides
    assert main(["sample", "--model", other, "--learned", str(learned), "--out", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err and not out.exists()
    assert main(["sample", "--model", other, "--learned", str(learned), "--force", "--num", "2",
                 "--out", str(out)]) == 0
    good = json.loads(learned.read_text())
    bad_cases = {
        "version": {**good, "format_version": 99},
        "lengths": {**good, "coeffs": good["coeffs"][:-1]},
        "grid": {**good, "times": [1.0, 0.5, 0.7, 0.2, 1e-5]},
        "mode": {**good, "phi_mode": "cubic"},
        "nan": {**good, "coeffs": [1.0, "x", 1.0, 1.0]},
    }
    for name, d in bad_cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(d))
        target = tmp_path / f"{name}.npy"
        assert main(["sample", "--model", tiny, "--learned", str(path), "--out", str(target)]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and not target.exists(), (name, err)
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["sample", "--model", tiny, "--learned", str(tmp_path / "junk.json"), "--out", str(out)]) == 2


def test_bad_sample_input(tiny, tmp_path, capsys):
    out = tmp_path / "x.npy"
    assert main(["sample", "--model", "no-such-model", "--out", str(out)]) == 2
    assert "no-such-model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["sample", "--model", tiny, "--steps", "0", "--out", str(out)])
    assert e.value.code == 2
    assert not out.exists()


def test_distill_resume_and_refuse_stale_checkpoint(tiny, tmp_path):
    out = tmp_path / "s.json"
    args = ["distill", "--model", tiny, "--nfe", "2", "--teacher-nfe", "4", "--epochs", "2", "--num-traj", "8",
            "--batch-size", "8", "--out", str(out)]
    ckpt = tmp_path / "s.json.ckpt"
    ckpt.write_bytes(b"stale")
    assert main(args) == 2 and not out.exists()  # an interrupted run's checkpoint is never silently replaced
    assert main(args + ["--resume"]) == 2  # and an unreadable one is reported, not trusted
    ckpt.unlink()
    assert main(args) == 0 and out.exists() and not ckpt.exists()
    assert main(["distill", "--model", tiny, "--nfe", "3", "--teacher-nfe", "4", "--out", str(tmp_path / "b.json")]) == 2


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
    assert all(r["metrics"]["violation_rate"] >= 0 for r in d["rows"])
    assert png.stat().st_size > 1000 and "gap closed" in text
