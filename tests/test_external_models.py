"""SEDD / RADD / MDLM checkpoints: recognised from their files, loaded strictly, and our scores equal an
independent float64 re-computation of each original forward pass (tests/external_refs.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from external_refs import (TOKENS, LENGTH, absorbing_score_from_clean, mdlm_doc, mdlm_log_probs, radd_doc,
                           radd_log_probs, random_state, sedd_doc, sedd_log_score, write_checkpoint)
from lsdd.cli import main
from lsdd.errors import UserError
from lsdd.models import load_model
from lsdd.models.external import detect_format, looks_like_hub_id

MASK = TOKENS


def _inputs(batch=3, seed=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, TOKENS, (batch, LENGTH), generator=g)
    x[torch.rand(batch, LENGTH, generator=g) < 0.5] = MASK
    x[0] = MASK  # one all-mask row (the sampler's start)
    sigma = torch.tensor([0.05, 0.7, 3.0])[:batch]
    return x, sigma


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_sedd_matches_reference(tmp_path, weights):
    state = random_state("sedd", TOKENS + 1)
    d = write_checkpoint(tmp_path / "sedd", sedd_doc(), state, weights)
    assert detect_format(d) == "sedd"
    model = load_model(str(d))
    x, sigma = _inputs()
    ours = model.log_score_fn(x, sigma)
    ref = sedd_log_score(state, x, sigma)
    assert ours.shape == (3, LENGTH, TOKENS + 1)
    torch.testing.assert_close(ours.double(), ref, atol=2e-4, rtol=1e-4)
    assert model.graph.name == "absorbing" and model.noise.to_dict() == {"type": "loglinear", "eps": 1e-3}
    assert model.config.length == LENGTH and model.meta["checkpoint_format"] == "sedd"


def test_sedd_uniform_geometric(tmp_path):
    state = random_state("sedd", TOKENS)
    d = write_checkpoint(tmp_path / "u", sedd_doc("uniform", False, "geometric"), state)
    model = load_model(str(d))
    assert model.graph.name == "uniform"
    assert model.noise.to_dict() == {"type": "geometric", "sigma_min": 1e-4, "sigma_max": 20.0}
    x = torch.randint(0, TOKENS, (2, LENGTH), generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.3, 2.0])
    torch.testing.assert_close(model.log_score_fn(x, sigma).double(), sedd_log_score(state, x, sigma, False),
                               atol=2e-4, rtol=1e-4)


def test_sedd_training_run_uses_ema(tmp_path):
    """A SEDD run directory (.hydra/config.yaml + checkpoints-meta/checkpoint.pth) samples with the EMA weights,
    listed in the order of the network's parameters (the state dict minus its buffer)."""
    yaml = pytest.importorskip("yaml")

    raw, ema = random_state("sedd", TOKENS + 1, seed=1), random_state("sedd", TOKENS + 1, seed=2)
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints-meta").mkdir()
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(sedd_doc()))
    shadows = [ema[k] for k in raw if k != "rotary_emb.inv_freq"]
    torch.save({"model": raw, "ema": {"decay": 0.9999, "num_updates": 10, "shadow_params": shadows},
                "optimizer": {}, "step": 10}, run / "checkpoints-meta" / "checkpoint.pth")
    model = load_model(str(run))
    x, sigma = _inputs()
    torch.testing.assert_close(model.log_score_fn(x, sigma).double(), sedd_log_score(ema, x, sigma),
                               atol=2e-4, rtol=1e-4)


def _check_clean(model, log_p_ref, x, sigma):
    ours = model.score_fn(x, sigma).double()  # (B, L, N + 1)
    masked = x == MASK
    ref = absorbing_score_from_clean(log_p_ref, sigma)
    torch.testing.assert_close(ours[..., :TOKENS][masked], ref[masked], atol=1e-6, rtol=2e-4)
    # the entry at the current token is 1 everywhere (the mask itself for masked rows)
    assert torch.equal(ours.gather(-1, x[..., None]), torch.ones_like(x[..., None], dtype=torch.float64))


def test_radd_matches_reference(tmp_path):
    state = random_state("radd", TOKENS + 1)
    d = write_checkpoint(tmp_path / "radd", radd_doc(), state)
    assert detect_format(d) == "radd"
    model = load_model(str(d))
    x, sigma = _inputs()
    _check_clean(model, radd_log_probs(state, x), x, sigma)
    assert model.graph.name == "absorbing" and model.graph.num_tokens == TOKENS


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_mdlm_matches_reference(tmp_path, time_conditioning):
    state = {f"backbone.{k}": v for k, v in random_state("mdlm", TOKENS + 1).items()}
    d = write_checkpoint(tmp_path / "mdlm", mdlm_doc(time_conditioning), state)
    assert detect_format(d) == "mdlm"
    model = load_model(str(d))
    x, sigma = _inputs()
    _check_clean(model, mdlm_log_probs(state, x, sigma, time_conditioning), x, sigma)
    if not time_conditioning:  # the clean-token law does not depend on sigma: only the factor 1/(e^s - 1) does
        s1, s2 = model.score_fn(x, sigma), model.score_fn(x, sigma * 2)
        ratio = (s1 / s2)[..., :TOKENS][x == MASK]
        expect = (torch.expm1(2 * sigma) / torch.expm1(sigma))[:, None, None].expand(*x.shape, TOKENS)[x == MASK]
        torch.testing.assert_close(ratio, expect, rtol=1e-4, atol=0)


def test_mdlm_without_inv_freq_buffer(tmp_path):
    state = {f"backbone.{k}": v for k, v in random_state("mdlm", TOKENS + 1).items()}
    del state["backbone.rotary_emb.inv_freq"]
    model = load_model(str(write_checkpoint(tmp_path / "m", mdlm_doc(), state)))
    x, sigma = _inputs()
    _check_clean(model, mdlm_log_probs(state, x, sigma), x, sigma)


def test_strict_keys_and_unknown_layout(tmp_path):
    state = random_state("sedd", TOKENS + 1)
    missing = dict(state)
    del missing["blocks.1.attn_out.weight"]
    with pytest.raises(UserError, match=r"missing key\(s\) \['blocks.1.attn_out.weight'\]"):
        load_model(str(write_checkpoint(tmp_path / "a", sedd_doc(), missing)))
    extra = dict(state, **{"blocks.0.extra.weight": torch.zeros(3)})
    with pytest.raises(UserError, match=r"unexpected key\(s\) \['blocks.0.extra.weight'\]"):
        load_model(str(write_checkpoint(tmp_path / "b", sedd_doc(), extra)))
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "weights.pt").write_bytes(b"x")
    (odd / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match=r"unrecognised checkpoint layout \(found \['notes.txt', 'weights.pt'\]\)"):
        load_model(str(odd))
    bad = write_checkpoint(tmp_path / "c", {**sedd_doc(), "noise": {"type": "cosine"}}, state)
    with pytest.raises(UserError, match="unknown noise.type 'cosine'"):
        load_model(str(bad))


def test_hub_id_offline_is_a_user_error(monkeypatch):
    c = pytest.importorskip("huggingface_hub.constants")

    assert looks_like_hub_id("louaaron/sedd-small") and not looks_like_hub_id("./a/b")
    assert not looks_like_hub_id("a/b/c")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="hub download failed"):
        load_model("lsdd-test-owner/no-such-model")


@pytest.mark.parametrize("kind", ["sedd", "radd", "mdlm"])
def test_cli_sample_from_checkpoint_dir(tmp_path, kind, capsys):
    if kind == "mdlm":
        state = {f"backbone.{k}": v for k, v in random_state("mdlm", TOKENS + 1).items()}
        d = write_checkpoint(tmp_path / kind, mdlm_doc(), state)
    else:
        d = write_checkpoint(tmp_path / kind, sedd_doc() if kind == "sedd" else radd_doc(),
                             random_state(kind, TOKENS + 1))
    out = tmp_path / "x.npy"
    args = ["sample", "--model", str(d), "--sampler", "euler", "--steps", "8", "--num", "4", "--seed", "0",
            "--out", str(out)]
    assert main(args) == 0
    x = np.load(out)
    assert x.shape == (4, LENGTH) and x.min() >= 0 and x.max() < TOKENS  # every mask resolved
    assert main(args[:-1] + [str(tmp_path / "y.npy")]) == 0
    assert np.array_equal(x, np.load(tmp_path / "y.npy"))  # same seed, same samples


def test_config_nested_under_config_key(tmp_path):
    """Newer PyTorchModelHubMixin versions may save the ``config`` init argument nested under that key."""
    state = random_state("sedd", TOKENS + 1)
    d = write_checkpoint(tmp_path / "n", {"config": sedd_doc()}, state)
    (d / "config.json").write_text(json.dumps({"config": sedd_doc()}))
    assert detect_format(d) == "sedd"
    assert load_model(str(d)).config.hidden_size == 32


@pytest.mark.parametrize("kind", ["sedd", "radd"])
def test_config_without_length_uses_1024(tmp_path, kind, capsys):
    """A SEDD or RADD config.json without model.length loads with 1024, every published model's length, and
    says so on stderr; the scores are those of the same weights (the network has no length-sized parameter)."""
    doc = sedd_doc() if kind == "sedd" else radd_doc()
    del doc["model"]["length"]
    state = random_state(kind, TOKENS + 1)
    model = load_model(str(write_checkpoint(tmp_path / kind, doc, state)))
    assert model.config.length == 1024
    err = capsys.readouterr().err
    assert "no model.length" in err and "1024" in err and len(err.strip().splitlines()) == 1
    x, sigma = _inputs()
    if kind == "sedd":
        torch.testing.assert_close(model.log_score_fn(x, sigma).double(), sedd_log_score(state, x, sigma),
                                   atol=2e-4, rtol=1e-4)
    else:
        _check_clean(model, radd_log_probs(state, x), x, sigma)
