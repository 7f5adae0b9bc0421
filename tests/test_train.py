"""Score-entropy training, checkpoints, resume, and the ``lsdd train`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lsdd.cli import main
from lsdd.errors import UserError
from lsdd.models import load_model
from lsdd.models.dit import DiTConfig
from lsdd.train import CountdownSource, TrainConfig, lr_at, read_checkpoint, train

L, V = 8, 8
TINY = ["--hidden-size", "32", "--cond-dim", "32", "--n-blocks", "1", "--n-heads", "2", "--threads", "1", "--quiet"]


def tiny_model(graph: str = "absorbing") -> DiTConfig:
    noise = {"type": "loglinear", "eps": 1e-3} if graph == "absorbing" else {"type": "geometric"}
    return DiTConfig(num_tokens=V, graph=graph, noise=noise, length=L, hidden_size=32, cond_dim=32, n_blocks=1,
                     n_heads=2)


def tiny_train(**kw) -> TrainConfig:
    args = dict(steps=20, batch_size=16, lr=3e-3, warmup=5, log_every=5, ckpt_every=10, bf16=False, threads=1)
    args.update(kw)
    return TrainConfig(**args)


def read_log(path) -> list[dict]:
    return [json.loads(line) for line in (path / "train_log.jsonl").read_text().splitlines()]


def test_loss_falls_on_countdown(tmp_path):
    cfg = tiny_train(steps=150, batch_size=64, log_every=25, ckpt_every=1000)
    result = train(tiny_model(), cfg, CountdownSource(L, V), tmp_path, progress=False)
    losses = [r["loss"] for r in read_log(tmp_path)]
    # at initialisation the bound is L log V = 16.6 nats; the per-position marginal entropy is 15.4, the
    # true entropy 4.7: a model that learned only marginals (the embedding-init gotcha) would stay above 15
    assert losses[0] > 13.0
    assert sum(losses[-2:]) / 2 < 12.0
    assert result.step == 150 and result.final_loss == pytest.approx(losses[-1], abs=1e-4)


def test_uniform_graph_trains(tmp_path):
    cfg = tiny_train(steps=100, batch_size=64, log_every=25, ckpt_every=1000)
    train(tiny_model("uniform"), cfg, CountdownSource(L, V), tmp_path, progress=False)
    losses = [r["loss"] for r in read_log(tmp_path)]
    # measured 17.4 -> 14.9, 15.1 over the last two windows: a model that does not learn stays near 17
    assert losses[0] > 16.5 and sum(losses[-2:]) / 2 < losses[0] - 1.5
    assert load_model(tmp_path).config.graph == "uniform"


class CountingSource(CountdownSource):
    """CountdownSource that records the size of every batch drawn from it (same describe(), so resumable)."""

    draws: list[int] = []

    def batch(self, n, generator):
        CountingSource.draws.append(n)
        return super().batch(n, generator)


def test_resume_matches_uninterrupted_run(tmp_path):
    model_cfg = tiny_model()
    whole = train(model_cfg, tiny_train(steps=20), CountdownSource(L, V), tmp_path / "a", progress=False)
    train(model_cfg, tiny_train(steps=10), CountdownSource(L, V), tmp_path / "b", progress=False)
    CountingSource.draws = []
    resumed = train(model_cfg, tiny_train(steps=20), CountingSource(L, V), tmp_path / "b", resume=True,
                    progress=False)
    # the resumed run trains only steps 11..20 (a restart from scratch would give the same weights, too)
    assert CountingSource.draws == [16] * 10 and resumed.step == 20
    # same EMA weights (fingerprint), same raw weights, same logged losses
    assert resumed.fingerprint == whole.fingerprint
    a, b = read_checkpoint(tmp_path / "a"), read_checkpoint(tmp_path / "b")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    strip = lambda rows: [(r["step"], r["loss"], r["lr"]) for r in rows]  # noqa: E731
    assert strip(read_log(tmp_path / "a")) == strip(read_log(tmp_path / "b"))


def test_output_files_and_provenance(tmp_path):
    train(tiny_model(), tiny_train(steps=5), torch.randint(0, V, (10, L)), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "config.json", "model.safetensors",
                                                         "train_log.jsonl"]
    loaded = load_model(tmp_path)
    info = loaded.meta["training"]
    assert info["steps"] == 5 and info["weights"] == "EMA"
    assert info["data"] == {"type": "tokens", "path": None, "num_sequences": 10, "length": L, "num_tokens": V}
    assert info["train_config"]["steps"] == 5 and info["train_config"]["batch_size"] == 16
    # log_every 5: one log line, at step 5; the config is the one given
    assert [r["step"] for r in read_log(tmp_path)] == [5] and loaded.config == tiny_model()


def test_train_refuses_mismatches(tmp_path):
    with pytest.raises(UserError, match="length"):
        train(tiny_model(), tiny_train(), CountdownSource(L + 1, V), tmp_path, progress=False)
    with pytest.raises(UserError, match="ids in"):
        train(tiny_model(), tiny_train(), torch.full((4, L), V), tmp_path, progress=False)
    train(tiny_model(), tiny_train(steps=2), CountdownSource(L, V), tmp_path, progress=False)
    with pytest.raises(UserError, match="already holds"):
        train(tiny_model(), tiny_train(steps=2), CountdownSource(L, V), tmp_path, progress=False)
    with pytest.raises(UserError, match="lr"):
        train(tiny_model(), tiny_train(steps=4, lr=1e-2), CountdownSource(L, V), tmp_path, resume=True,
              progress=False)


def test_lr_warmup_constant_decay():
    cfg = tiny_train(lr=1.0, warmup=4, steps=10, decay_steps=4)
    # warm-up over 4 steps, constant, then linear to 0 over the last 4 of 10 steps
    assert [lr_at(cfg, s) for s in range(10)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    # the constant part does not depend on the total, so a run can be extended with a decay
    assert [lr_at(tiny_train(lr=1.0, warmup=4, steps=6), s) for s in range(6)] == [lr_at(cfg, s) for s in range(6)]
    with pytest.raises(UserError, match="decay_steps"):
        tiny_train(steps=10, decay_steps=11)


def test_extension_with_decay_matches_uninterrupted_run(tmp_path):
    model_cfg = tiny_model()
    whole = train(model_cfg, tiny_train(steps=16, decay_steps=6), CountdownSource(L, V), tmp_path / "a",
                  progress=False)
    train(model_cfg, tiny_train(steps=10), CountdownSource(L, V), tmp_path / "b", progress=False)
    extended = train(model_cfg, tiny_train(steps=16, decay_steps=6), CountdownSource(L, V), tmp_path / "b",
                     resume=True, progress=False)
    assert extended.fingerprint == whole.fingerprint


def test_cli_train_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--task", "countdown", "--length", str(L), "--num-values", str(V), *TINY, "--out", str(out)]
    assert main([*base, "--steps", "4", "--batch-size", "8", "--log-every", "2", "--no-bf16"]) == 0
    assert load_model(out).config.length == L
    # a second run into the same directory is refused...
    assert main([*base, "--steps", "4"]) == 2
    assert "not empty" in capsys.readouterr().err
    # ...but --resume extends it, taking the other settings from the checkpoint
    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--quiet"]) == 0
    log = read_log(out)
    assert [r["step"] for r in log] == [2, 4, 6]
    assert read_checkpoint(out)["train_config"]["batch_size"] == 8
    # a changed model on --resume is refused, and the run is left as it was
    assert main(["train", "--out", str(out), "--resume", "--hidden-size", "64"]) == 2
    assert "--hidden-size 64 differs from the run being resumed" in capsys.readouterr().err
    assert [r["step"] for r in read_log(out)] == [2, 4, 6] and load_model(out).config.hidden_size == 32


def test_cli_train_on_npy_uniform(tmp_path):
    data = tmp_path / "tokens.npy"
    np.save(data, np.random.default_rng(0).integers(0, 5, size=(20, 6)))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--graph", "uniform", *TINY, "--steps", "3", "--batch-size", "4",
                 "--out", str(out)]) == 0
    cfg = load_model(out).config
    assert (cfg.graph, cfg.num_tokens, cfg.length, cfg.noise["type"]) == ("uniform", 5, 6, "geometric")


@pytest.mark.parametrize("arr, vocab, message", [
    (np.zeros((3,), dtype=np.int64), None, "2-D array"),
    (np.full((3, 4), 40, dtype=np.int64), "32", "token id 40 at row 0, position 0 is out of range"),
    (None, None, "no such file"),
])
def test_cli_bad_data_is_one_line_error_and_no_output(tmp_path, capsys, arr, vocab, message):
    data = tmp_path / "data.npy"
    if arr is not None:
        np.save(data, arr)
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), *TINY, "--steps", "2", "--out", str(out)]
    if vocab:
        argv += ["--vocab", vocab]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("lsdd train: error:")
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cli_cuda_without_cuda(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "countdown", "--device", "cuda", "--out", str(out), *TINY]) == 2
    assert "CUDA is not available" in capsys.readouterr().err and not out.exists()


def test_cli_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "checkpoint.pt" in out and "examples:" in out
