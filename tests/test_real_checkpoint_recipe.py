"""The README's "Real checkpoints" recipe at test size, on a tiny random checkpoint in SEDD's published layout:
sample -> distill (compact teacher cache) -> sample --learned -> eval, then decode with the checkpoint's own
tokenizer; plus the GPT-2 defaults that only apply at V = 50,257."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from external_refs import TOKENS, LENGTH, random_state, sedd_doc, write_checkpoint
from lsdd.cli import main
from lsdd.text.tokenizer import TextTokenizer

ALPHABET = "abcdefghij klmnop.,\n"  # 20 characters: one per token of the tiny checkpoint


def test_recipe_end_to_end(tmp_path, capsys):
    d = write_checkpoint(tmp_path / "sedd-tiny", sedd_doc(), random_state("sedd", TOKENS + 1))
    tok = TextTokenizer.train("char", ALPHABET)
    assert tok.vocab_size == TOKENS
    tok.save(d)  # a tokenizer.json next to the weights is used for decoding
    m = ["--model", str(d)]
    assert main(["sample", *m, "--sampler", "euler", "--steps", "4", "--num", "8", "--seed", "0",
                 "--out", str(tmp_path / "base.npy")]) == 0
    assert main(["distill", "--method", "lsd", *m, "--nfe", "4", "--teacher-nfe", "16", "--num-traj", "16", "--batch-size", "8",
                 "--chunk", "4", "--epochs", "2", "--no-validate", "--teacher-store", "states",
                 "--out", str(tmp_path / "lsd4.json")]) == 0
    out = capsys.readouterr().out
    assert "(states)" in out
    art = json.loads((tmp_path / "lsd4.json").read_text())
    assert len(art["coeffs"]) == 4 and art["provenance"]["distill_config"]["teacher_store"] == "states"
    assert main(["sample", *m, "--learned", str(tmp_path / "lsd4.json"), "--num", "8", "--seed", "0",
                 "--out", str(tmp_path / "lsd.npy")]) == 0
    x = np.load(tmp_path / "lsd.npy")
    assert x.shape == (8, LENGTH) and x.max() < TOKENS
    assert main(["eval", "--task", "tokens", str(tmp_path / "lsd.npy"), "--num-values", str(TOKENS),
                 "--json", str(tmp_path / "m.json")]) == 0
    assert "unigram_entropy" in json.loads((tmp_path / "m.json").read_text())["metrics"]
    capsys.readouterr()
    assert main(["decode", "--model", str(d), str(tmp_path / "lsd.npy"), "--num", "2", "--plain"]) == 0
    text = capsys.readouterr().out
    assert set(text) <= set(ALPHABET) and len(text.replace("\n", "")) > 0


def test_gpt2_sized_checkpoint_defaults(tmp_path, monkeypatch):
    """At GPT-2's vocabulary the text task and GPT-2 large are the defaults; without a cached GPT-2 tokenizer
    (offline) the model simply has none, and sampling does not need one."""
    import lsdd.models.tokens as tokens
    from lsdd.cli.common import default_evaluator, default_task
    from lsdd.models import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(tokens, "GPT2_REPO", "lsdd-test/not-cached")
    doc = sedd_doc()
    doc["tokens"] = 50257
    g = torch.Generator().manual_seed(0)
    state = random_state("sedd", 6)
    state["vocab_embed.embedding"] = torch.randn(50258, 32, generator=g) * 0.02
    state["output_layer.linear.weight"] = torch.randn(50258, 32, generator=g) * 0.02
    state["output_layer.linear.bias"] = torch.zeros(50258)
    model = load_model(str(write_checkpoint(tmp_path / "gpt2-sized", doc, state)))
    assert model.config.num_tokens == 50257 and model.graph.num_states == 50258
    assert default_evaluator(model) == "gpt2-large" and default_task(model) == "text"
    assert model.tokenizer is None
    small = load_model(str(write_checkpoint(tmp_path / "small", sedd_doc(), random_state("sedd", TOKENS + 1))))
    assert default_evaluator(small) is None and default_task(small) == "tokens"


def test_gpt2_tokenizer_from_the_local_cache(tmp_path, monkeypatch):
    """GPT-2's tokenizer.json is read from the Hugging Face cache when present (here: a stand-in file)."""
    import lsdd.models.tokens as tokens

    tk = pytest.importorskip("tokenizers")
    vocab = {f"t{i}": i for i in range(tokens.GPT2_VOCAB)}
    fake = tk.Tokenizer(tk.models.WordLevel(vocab, unk_token="t0"))
    path = tmp_path / "tokenizer.json"
    fake.save(str(path))
    monkeypatch.setattr(tokens, "_gpt2_file", lambda: str(path))
    tok = tokens.external_tokenizer(None, tokens.GPT2_VOCAB)
    assert tok is not None and tok.vocab_size == tokens.GPT2_VOCAB
    assert tokens.external_tokenizer(None, 123) is None
