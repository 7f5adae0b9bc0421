"""The tokenizer of a SEDD / RADD / MDLM checkpoint, for decoding its samples.

Those projects publish no tokenizer with the weights: they all use GPT-2's (50,257 tokens; MDLM's mask is the
extra id 50,257). Looked up, in order: a ``tokenizer.json`` in the checkpoint directory; for 50,257-token models
GPT-2's ``tokenizer.json`` in the local Hugging Face cache; then (unless ``HF_HUB_OFFLINE`` is set) a download
of it. None when none is found: sampling works without a tokenizer, only decoding needs one.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError

GPT2_VOCAB = 50257
GPT2_REPO = "gpt2"


def _gpt2_file() -> str | None:
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:
        return None
    cached = try_to_load_from_cache(GPT2_REPO, "tokenizer.json")
    if isinstance(cached, str):
        return cached
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return None
    try:
        return hf_hub_download(GPT2_REPO, "tokenizer.json")
    except Exception:  # noqa: BLE001 - offline or blocked: decoding is simply unavailable
        return None


def external_tokenizer(directory: Path | None, num_tokens: int):
    """A ``TextTokenizer`` for a checkpoint of ``num_tokens`` real tokens, or None when none is available."""
    from ..text.tokenizer import TOKENIZER_FILE, TextTokenizer

    if directory is not None and (Path(directory) / TOKENIZER_FILE).is_file():
        tok = TextTokenizer.load(Path(directory) / TOKENIZER_FILE)
        if tok.vocab_size != num_tokens:
            raise UserError(f"{Path(directory) / TOKENIZER_FILE}: {tok.vocab_size} tokens, the model has {num_tokens}")
        return tok
    if num_tokens != GPT2_VOCAB:
        return None
    path = _gpt2_file()
    return TextTokenizer.load(path) if path else None


__all__ = ["external_tokenizer", "GPT2_VOCAB"]
