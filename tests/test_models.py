"""ScoreDiT, model directories and load_model."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from lsdd.data.countdown import generate_countdown
from lsdd.errors import UserError
from lsdd.graphs import Absorbing, Uniform, log_expm1
from lsdd.models import LoadedModel, bundled_models, load_model
from lsdd.models.checkpoint import fingerprint, load_model_dir, save_model_dir
from lsdd.models.dit import DiTConfig, ScoreDiT

LOGLINEAR = {"type": "loglinear", "eps": 1e-3}
GEOMETRIC = {"type": "geometric", "sigma_min": 1e-4, "sigma_max": 20.0}


def tiny_config(graph: str = "absorbing", **kw) -> DiTConfig:
    noise = LOGLINEAR if graph == "absorbing" else GEOMETRIC
    args = dict(num_tokens=6, graph=graph, noise=noise, length=8, hidden_size=32, cond_dim=16, n_blocks=2, n_heads=2)
    args.update(kw)
    return DiTConfig(**args)


def randomised(cfg: DiTConfig, seed: int = 0) -> ScoreDiT:
    """A model with every parameter random (the zero-initialised layers would hide bugs)."""
    torch.manual_seed(seed)
    model = ScoreDiT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model.eval()


def inputs(cfg: DiTConfig, batch: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, cfg.num_states, (batch, cfg.length), generator=g)
    sigma = torch.tensor([0.01, 0.7, 5.0])[:batch]
    return x, sigma


@pytest.mark.parametrize("graph", ["absorbing", "uniform", "ordinal"])
def test_output_shape_dtype_and_zero_at_current_token(graph):
    cfg = tiny_config(graph)
    model = randomised(cfg)
    x, sigma = inputs(cfg)
    out = model(x, sigma)
    # (B, L, S) float32 with S = N + 1 for absorbing, N for uniform
    assert out.shape == (3, cfg.length, cfg.num_states) and out.dtype == torch.float32
    assert cfg.num_states == (7 if graph == "absorbing" else 6)
    # log-score at the current token is exactly 0 (score 1)
    assert torch.equal(out.gather(-1, x[..., None]), torch.zeros(3, cfg.length, 1))
    assert torch.isfinite(out).all()


def test_bf16_autocast_output_is_float32_and_close():
    cfg = tiny_config()
    model = randomised(cfg)
    x, sigma = inputs(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, sigma)
    full = model(x, sigma)
    assert low.dtype == torch.float32
    # bf16 keeps ~3 significant digits: the log-scores (up to ~11 here) move by ~0.05, not more
    assert (low - full).abs().max() < 0.2 and full.abs().max() > 1.0
    assert torch.equal(low.gather(-1, x[..., None]), torch.zeros(3, cfg.length, 1))


def test_absorbing_init_is_uniform_score():
    cfg = tiny_config()
    model = ScoreDiT(cfg)
    x, sigma = inputs(cfg)
    out = model(x, sigma)
    # zero-initialised output layers: log s = -log(e^sigma - 1) - log N off the current token
    expected = (-log_expm1(sigma) - math.log(cfg.num_tokens))[:, None, None].expand_as(out)
    off = torch.ones_like(out, dtype=torch.bool).scatter(-1, x[..., None], False)
    torch.testing.assert_close(out[off], expected[off], rtol=0, atol=1e-5)


def test_attention_is_bidirectional():
    cfg = tiny_config()
    model = randomised(cfg)
    x, sigma = inputs(cfg, batch=1)
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % cfg.num_states
    # changing the last token changes the output at the first position
    assert not torch.allclose(model(x, sigma)[0, 0], model(y, sigma)[0, 0])


def test_sedd_parameter_names():
    cfg = tiny_config()
    state = ScoreDiT(cfg).state_dict()
    names = ["vocab_embed.embedding", "sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias", "sigma_map.mlp.2.weight",
             "sigma_map.mlp.2.bias", "rotary_emb.inv_freq", "output_layer.norm_final.weight",
             "output_layer.linear.weight", "output_layer.linear.bias", "output_layer.adaLN_modulation.weight",
             "output_layer.adaLN_modulation.bias"]
    for i in range(cfg.n_blocks):
        names += [f"blocks.{i}.{n}" for n in ("norm1.weight", "attn_qkv.weight", "attn_out.weight", "norm2.weight",
                                              "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias",
                                              "adaLN_modulation.weight", "adaLN_modulation.bias")]
    assert sorted(state) == sorted(names)
    h = cfg.hidden_size
    assert state["vocab_embed.embedding"].shape == (cfg.num_states, h)
    assert state["blocks.0.attn_qkv.weight"].shape == (3 * h, h)
    assert state["blocks.0.adaLN_modulation.weight"].shape == (6 * h, cfg.cond_dim)
    assert state["rotary_emb.inv_freq"].shape == (h // cfg.n_heads // 2,)
    # small embedding init (docs/practical.md gotcha)
    assert state["vocab_embed.embedding"].std() < 0.05


def test_config_validation_and_round_trip():
    cfg = tiny_config()
    assert cfg.scale_by_sigma is True and tiny_config("uniform").scale_by_sigma is False
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UserError, match="scale_by_sigma"):
        tiny_config("uniform", scale_by_sigma=True)
    with pytest.raises(UserError, match="unknown key"):
        DiTConfig.from_dict({**cfg.to_dict(), "colour": 1})
    with pytest.raises(UserError, match="missing key"):
        DiTConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "length"})
    with pytest.raises(UserError, match="graph"):
        tiny_config(graph="star")
    with pytest.raises(UserError, match="heads"):
        tiny_config(hidden_size=30, n_heads=4)
    with pytest.raises(UserError, match="noise"):
        tiny_config(noise={"type": "cosine"})


def test_save_load_round_trip(tmp_path):
    cfg = tiny_config()
    model = randomised(cfg)
    fp = save_model_dir(tmp_path / "m", model, cfg, {"training": {"steps": 3}})
    assert fp == fingerprint(cfg, model.state_dict()) and len(fp) == 16
    rng = torch.get_rng_state()
    loaded = load_model(tmp_path / "m")
    # loading leaves the global RNG alone (the library only draws from explicit generators)
    assert torch.equal(rng, torch.get_rng_state())
    assert isinstance(loaded, LoadedModel)
    assert loaded.config == cfg and loaded.fingerprint == fp and loaded.meta["training"]["steps"] == 3
    assert isinstance(loaded.graph, Absorbing) and loaded.noise.to_dict() == cfg.noise
    x, sigma = inputs(cfg)
    # identical outputs; score_fn = exp(log_score_fn)
    assert torch.equal(loaded.log_score_fn(x, sigma), model(x, sigma).detach())
    score = loaded.score_fn(x, sigma)
    assert score.dtype == torch.float32 and not score.requires_grad
    torch.testing.assert_close(score, model(x, sigma).detach().exp())
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


def test_uniform_round_trip(tmp_path):
    cfg = tiny_config("uniform")
    model = randomised(cfg)
    save_model_dir(tmp_path, model, cfg, {})
    loaded = load_model_dir(tmp_path)
    assert isinstance(loaded.graph, Uniform)
    x, sigma = inputs(cfg)
    assert torch.equal(loaded.log_score_fn(x, sigma), model(x, sigma).detach())


def test_fingerprint_changes_with_weights_and_config():
    cfg = tiny_config()
    a, b = randomised(cfg, 0).state_dict(), randomised(cfg, 1).state_dict()
    assert fingerprint(cfg, a) == fingerprint(cfg, dict(a))
    assert fingerprint(cfg, a) != fingerprint(cfg, b)
    assert fingerprint(cfg, a) != fingerprint(tiny_config(dropout=0.1), a)


def _saved(tmp_path) -> tuple:
    cfg = tiny_config()
    save_model_dir(tmp_path, randomised(cfg), cfg, {})
    return cfg, tmp_path / "config.json", tmp_path / "model.safetensors"


def test_corrupted_safetensors_is_user_error(tmp_path):
    _, _, weights = _saved(tmp_path)
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match="model.safetensors"):
        load_model(tmp_path)


def test_wrong_shape_is_user_error(tmp_path):
    cfg, config, _ = _saved(tmp_path)
    doc = json.loads(config.read_text())
    doc["model"]["hidden_size"] = 64  # the weights were written for 32
    del doc["fingerprint"]
    config.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="shape"):
        load_model(tmp_path)


def test_missing_and_unexpected_keys_are_user_errors(tmp_path):
    from safetensors.torch import load_file, save_file

    cfg, config, weights = _saved(tmp_path)
    state = load_file(weights)
    del state["blocks.1.attn_out.weight"]
    save_file(state, weights)
    with pytest.raises(UserError, match="missing key.*blocks.1.attn_out.weight"):
        load_model(tmp_path)
    state["blocks.1.attn_out.weight"] = torch.zeros(32, 32)
    state["extra.weight"] = torch.zeros(2)
    save_file(state, weights)
    with pytest.raises(UserError, match="unexpected key.*extra.weight"):
        load_model(tmp_path)


def test_fingerprint_mismatch_is_user_error(tmp_path):
    from safetensors.torch import load_file, save_file

    _, _, weights = _saved(tmp_path)
    state = load_file(weights)
    state["vocab_embed.embedding"] += 1.0
    save_file(state, weights)
    with pytest.raises(UserError, match="fingerprint"):
        load_model(tmp_path)


def test_bad_config_files_are_user_errors(tmp_path):
    _, config, weights = _saved(tmp_path)
    good = config.read_text()
    config.write_text("{not json")
    with pytest.raises(UserError, match="config.json: not valid JSON"):
        load_model(tmp_path)
    config.write_text(json.dumps({**json.loads(good), "format": "sedd"}))
    with pytest.raises(UserError, match="unknown format 'sedd'"):
        load_model(tmp_path)
    config.write_text(json.dumps({**json.loads(good), "format_version": 9}))
    with pytest.raises(UserError, match="format_version 9"):
        load_model(tmp_path)
    config.unlink()
    with pytest.raises(UserError, match="config.json: not found"):
        load_model(tmp_path)
    config.write_text(good)
    weights.unlink()
    with pytest.raises(UserError, match="model.safetensors: not found"):
        load_model(tmp_path)


def test_unknown_name_lists_bundled_models(tmp_path):
    # the bundled models are exactly the folders of lsdd/bundled holding a config.json
    from lsdd.models import BUNDLED_DIR

    names = sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "config.json").is_file())
    assert bundled_models() == names
    with pytest.raises(UserError, match=rf"no model directory or bundled model named .*nowhere.*; "
                                        rf"bundled models: {re.escape(str(names or 'none'))}"):
        load_model(str(tmp_path / "nowhere"))


def test_directory_wins_over_bundled_name(tmp_path, monkeypatch, capsys):
    # a folder called like a bundled model, in the working directory, is loaded as that folder, with a note that
    # says so (it once loaded an old training run in place of the bundled text-uniform); bundled:NAME is always
    # the bundled one
    cfg = tiny_config()
    save_model_dir(tmp_path / "countdown", randomised(cfg), cfg, {})
    monkeypatch.chdir(tmp_path)
    loaded = load_model("countdown")
    assert loaded.config == cfg and loaded.source != "bundled:countdown"
    if "countdown" in bundled_models():
        assert "bundled:countdown for the bundled one" in capsys.readouterr().err
        assert load_model("bundled:countdown").source == "bundled:countdown"
    with pytest.raises(UserError, match="no bundled model named 'nope'"):
        load_model("bundled:nope")


@pytest.mark.skipif("countdown" not in bundled_models(), reason="bundled countdown model not trained yet")
def test_bundled_countdown_loads():
    model = load_model("countdown")
    assert model.source == "bundled:countdown" and model.config.graph == "absorbing"
    assert (model.config.num_tokens, model.config.length) == (32, 64) and model.fingerprint == "0dbf3371e1bdc5f4"
    # the trained model knows the rule: mask 15% of clean countdown data at small noise and read the
    # posterior (e^sigma - 1) s_y of each masked token; after a known non-zero k it must put its mass on k - 1
    sigma = 0.1
    x0 = generate_countdown(4, 64, generator=torch.Generator().manual_seed(0))
    masked = torch.rand(x0.shape, generator=torch.Generator().manual_seed(1)) < 0.15
    x = x0.masked_fill(masked, model.graph.mask_id)
    score = model.score_fn(x, torch.full((4,), sigma))
    assert score.shape == (4, 64, 33) and torch.isfinite(score).all()
    post = score[..., :32].double() * math.expm1(sigma)
    # the posterior over the 32 values of a masked token sums to about 1 (the score is calibrated)
    assert (post[masked].sum(-1) - 1).abs().max() < 0.1
    prev = torch.cat([torch.full((4, 1), -1), x[:, :-1]], 1)
    forced = masked & (prev > 0) & (prev < 32)
    assert forced.sum() >= 10
    assert (post[forced].gather(-1, (prev[forced] - 1)[:, None]) > 0.9).all()
