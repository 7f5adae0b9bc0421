"""The digits task (lsdd.tasks.digits): Fréchet distance, k-NN precision/recall and class balance in the bundled
classifier's features; `lsdd eval --task digits`, and `lsdd demo --task digits` on a tiny model."""

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from lsdd.cli import main
from lsdd.data.digits import load_digits_tokens
from lsdd.errors import UserError
from lsdd.tasks import get_task
from lsdd.tasks.digits import knn_coverage, knn_radii


@pytest.fixture(scope="module")
def task():
    return get_task("digits")


def test_bundled_classifier_is_accurate_on_held_out_digits(task):
    x, y = load_digits_tokens("test")
    from lsdd.tasks.digit_classifier import accuracy

    acc = accuracy(task.model, x, y)
    # the recorded test accuracy is the one it has
    assert acc == pytest.approx(task.info["test_accuracy"], abs=1e-12) and acc > 0.97


def test_knn_precision_recall_by_hand():
    centres = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    # 1-NN radii: 1, 1, 2
    assert knn_radii(centres, 1).tolist() == [1.0, 1.0, 2.0]
    points = torch.tensor([[0.5], [2.0], [5.5], [-1.0]], dtype=torch.float64)
    # 0.5 and 2.0 (within 1 of 1.0, within 2 of 3.0) and -1 (within 1 of 0.0) are covered; 5.5 is not
    assert knn_coverage(points, centres, 1) == 0.75


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # dead ReLU features: singular covariances
def test_fid_is_the_frechet_distance_of_the_features(task):
    x, _ = load_digits_tokens("train")
    fake = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(3))[:300]]
    got = task.compute(fake)["fid"]
    # torchmetrics' number equals |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) on the classifier's features
    a, b = task._features(fake).numpy(), task.real_feats.numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    want = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * root)
    assert got == pytest.approx(want, rel=1e-3)


def test_metrics_separate_real_digits_from_noise_and_collapse(task):
    x, _ = load_digits_tokens("train")
    real = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))[:256]]
    noise = torch.randint(0, 17, (256, 64), generator=torch.Generator().manual_seed(0))
    one = real[:1].expand(256, -1)
    m_real, m_noise, m_one = task.compute(real), task.compute(noise), task.compute(one)
    assert list(m_real) == [m.name for m in task.metrics]
    assert all(task.spec(q).kind == "quality" and task.spec(d).kind == "diversity" for q, d in task.pairs)
    # real digits sit near their reference line; noise is far on every quality metric
    assert m_real["fid"] < 3 * m_real["ref_fid"] and m_real["precision"] > 0.8 and m_real["recall"] > 0.8
    assert m_noise["fid"] > 10 * m_real["fid"] and m_noise["precision"] < 0.3 and m_noise["recall"] < 0.3
    # one image repeated: one class (entropy 0, TV 0.9 to the balanced test labels), no recall
    assert m_one["class_entropy"] == 0.0 and m_one["class_tv"] == pytest.approx(0.9, abs=0.01)
    assert m_one["recall"] < 0.05 and m_real["class_entropy"] > 2.2
    with pytest.raises(UserError, match="must have 64 tokens"):
        task.compute(real[:, :32])
    with pytest.raises(UserError, match="grey levels 0..16, got range \\[0, 17\\]"):
        task.compute(torch.full((4, 64), 17).index_fill(1, torch.tensor([0]), 0))


def test_cli_eval_digits(tmp_path, capsys):
    x, _ = load_digits_tokens("test")
    np.save(tmp_path / "x.npy", x[:64].numpy())
    assert main(["eval", "--task", "digits", str(tmp_path / "x.npy"), "--json", str(tmp_path / "m.json"),
                 "--grid", str(tmp_path / "g.png")]) == 0
    rec = json.loads((tmp_path / "m.json").read_text())
    assert rec["task"] == "digits" and rec["num_samples"] == 64 and rec["metrics"]["fid"] > 0
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert main(["eval", "--task", "countdown", str(tmp_path / "x.npy"), "--grid", str(tmp_path / "h.png")]) == 2
    assert "--grid applies to --task digits" in capsys.readouterr().err


def test_demo_digits_on_a_tiny_model(tmp_path):
    from lsdd.data.digits import DigitsSource
    from lsdd.models.dit import DiTConfig
    from lsdd.train import TrainConfig, train

    cfg = DiTConfig(num_tokens=17, graph="ordinal", noise={"type": "geometric", "sigma_min": 1e-4, "sigma_max": 20.0},
                    length=64, hidden_size=32, cond_dim=32, n_blocks=1, n_heads=2)
    train(cfg, TrainConfig(steps=2, batch_size=4, threads=1), DigitsSource(), tmp_path / "m", progress=False)
    out = tmp_path / "demo"
    assert main(["demo", "--task", "digits", "--model", str(tmp_path / "m"), "--nfe", "2", "--teacher-nfe", "4",
                 "--num-samples", "16", "--epochs", "1", "--out-dir", str(out)]) == 0
    assert (out / "digits.png").stat().st_size > 1000
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["teacher", "uniform", "lsd+"] and rows[2]["nfe"] == 2


@pytest.mark.parametrize("name", ["digits-uniform", "digits-ordinal"])
def test_bundled_digit_models_sample_in_raster_grey_levels(tmp_path, name):
    from lsdd.models import bundled_models

    if name not in bundled_models():
        pytest.skip(f"{name} is not bundled in this checkout")
    out = tmp_path / "x.npy"
    # the command shape other tools call (fewer samples here): (n, 64) grey levels 0..16
    assert main(["sample", "--model", name, "--sampler", "euler", "--steps", "8", "--num", "8", "--seed", "0",
                 "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (8, 64) and x.min() >= 0 and x.max() <= 16
    from lsdd.cli.common import default_task
    from lsdd.models import load_model

    assert default_task(load_model(name)) == "digits"
