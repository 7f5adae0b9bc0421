"""transformers masked-LM directories (``save_pretrained`` output) as lsdd models, through ``from_clean_logits``.

Recognised (``is_masked_lm``) from ``config.json``: an ``architectures`` entry ending in ``ForMaskedLM`` (BERT,
RoBERTa, ModernBERT, ...), or an ``auto_map`` (a model whose code ships with the checkpoint, such as LLaDA or
Dream) together with a declared mask token (``mask_token_id`` in config.json, or a ``mask_token`` in
tokenizer_config.json / special_tokens_map.json).

Loading (``load_masked_lm``):
- the network: ``AutoModelForMaskedLM.from_pretrained(DIR, local_files_only=True)``; a model whose type this
  transformers does not know and whose config has an ``auto_map`` runs the checkpoint's own Python code, which
  needs ``trust_remote_code=True`` (``--trust-remote-code``), else a one-line error says so. Its class is the
  auto_map's ``AutoModelForMaskedLM``, else ``AutoModel`` (LLaDA, Dream), else ``AutoModelForCausalLM``;
- the tokenizer: ``AutoTokenizer.from_pretrained(DIR, local_files_only=True)`` when the directory has tokenizer
  files (optional: without one, sampling works and decoding does not);
- the mask id: config.json's ``mask_token_id``, else the tokenizer's mask token;
- the vocabulary: the tokenizer's length when there is a tokenizer (output rows past it are padding), else the
  config's ``vocab_size``;
- the length: ``length`` if given (at most the model's position limit), else the limit
  (``max_position_embeddings``, ``max_sequence_length``, ``n_positions`` or ``max_seq_len``) capped at 512;
- Dream-style models (``model_type`` "dream") are initialised from an autoregressive LM and predict token i at
  position i - 1: their logits are shifted one place right (position 0 keeps its own), as Dream's sampler does;
- weights load in float32 on the CPU and in the checkpoint's dtype on a GPU; the network takes no time input.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .masked import CleanLogitModel, from_clean_logits

MAX_DEFAULT_LENGTH = 512
LENGTH_FIELDS = ("max_position_embeddings", "max_sequence_length", "n_positions", "max_seq_len")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")
AUTO_CLASSES = ("AutoModelForMaskedLM", "AutoModel", "AutoModelForCausalLM")


def _json_file(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def declared_mask_token(path: Path) -> bool:
    """True when the tokenizer files of ``path`` name a mask token (read from JSON, nothing loaded)."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if _json_file(path / name).get("mask_token"):
            return True
    return False


def is_masked_lm(path: Path, doc: dict[str, Any]) -> bool:
    """``config.json`` (``doc``) of a transformers masked LM: a ``...ForMaskedLM`` architecture, or an
    ``auto_map`` with a mask token declared in the config or the tokenizer files."""
    archs = doc.get("architectures") or []
    if isinstance(archs, list) and any(str(a).endswith("ForMaskedLM") for a in archs):
        return True
    return isinstance(doc.get("auto_map"), dict) and (isinstance(doc.get("mask_token_id"), int)
                                                      or declared_mask_token(path))


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UserError("loading a transformers masked LM needs `transformers` (pip install transformers)") from None
    return transformers


def needs_remote_code(doc: dict[str, Any]) -> bool:
    """True when the model's class is not part of transformers, only in the checkpoint's code (``auto_map``)."""
    if not isinstance(doc.get("auto_map"), dict):
        return False
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return doc.get("model_type") not in CONFIG_MAPPING


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _model_length(doc: dict[str, Any], length: int | None, where: Path) -> int:
    limit = next((int(doc[k]) for k in LENGTH_FIELDS if isinstance(doc.get(k), int) and doc[k] > 0), None)
    if length is not None:
        if not isinstance(length, int) or length < 1:
            raise UserError(f"--length must be a positive integer, got {length!r}")
        if limit is not None and length > limit:
            raise UserError(f"--length {length}: {where} takes at most {limit} positions")
        return length
    if limit is None:
        print(f"lsdd: note: {where}: config.json gives no position limit ({', '.join(LENGTH_FIELDS)}); using "
              f"length {MAX_DEFAULT_LENGTH} (set it with --length)", file=sys.stderr)
        return MAX_DEFAULT_LENGTH
    return min(limit, MAX_DEFAULT_LENGTH)


def _tokenizer(path: Path, trust_remote_code: bool):
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        return None
    tf = _transformers()
    try:
        return tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - any tokenizer-loading failure is the directory's problem
        raise UserError(f"{path}: the tokenizer files do not load ({type(e).__name__}: {_first_line(e)})") from None


def _dtype_key(tf) -> str:
    """from_pretrained's dtype argument: ``dtype`` from transformers 4.56 on, ``torch_dtype`` before."""
    try:
        major, minor = (int(v) for v in tf.__version__.split(".")[:2])
    except ValueError:
        return "dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _network(path: Path, doc: dict[str, Any], remote: bool, device: torch.device):
    tf = _transformers()
    dtype: Any = "auto" if device.type == "cuda" else torch.float32
    if remote:
        auto = doc["auto_map"]
        name = next((c for c in AUTO_CLASSES if c in auto), None)
        if name is None:
            raise UserError(f"{path}: config.json's auto_map names none of {', '.join(AUTO_CLASSES)} (it has "
                            f"{sorted(auto)})")
        cls = getattr(tf, name)
    else:
        cls = tf.AutoModelForMaskedLM
    try:
        with torch.random.fork_rng(devices=[]):  # any random init is overwritten; leave the caller's RNG alone
            module = cls.from_pretrained(str(path), local_files_only=True, trust_remote_code=remote,
                                         **{_dtype_key(tf): dtype})
    except Exception as e:  # noqa: BLE001 - missing weights, unknown architecture, bad code, ...
        raise UserError(f"{path}: transformers could not load the masked LM ({type(e).__name__}: "
                        f"{_first_line(e)})") from None
    return module.to(device).eval()


def weights_fingerprint(path: Path, doc: dict[str, Any], extra: dict[str, Any]) -> str:
    """sha256 over config.json (canonical), ``extra`` and the bytes of every weight file; first 16 hex chars."""
    from .external import _weight_files

    h = hashlib.sha256(json.dumps({"config": doc, **extra}, sort_keys=True, default=str).encode())
    for f in _weight_files(path):
        h.update(f"{f.name}|{f.stat().st_size}|".encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()[:16]


def load_masked_lm(path: Path, device: str | torch.device = "cpu", source: str | None = None, *,
                   trust_remote_code: bool = False, length: int | None = None,
                   shift_logits: bool | None = None) -> CleanLogitModel:
    """Load the transformers masked-LM directory ``path`` as a ``CleanLogitModel`` (module docstring).

    Args:
        path: a ``save_pretrained`` directory (``is_masked_lm``).
        device: where the network runs.
        source: its name in records (default: the path).
        trust_remote_code: allow running the checkpoint's own code (needed when ``needs_remote_code``).
        length: tokens per sequence (default: the position limit, at most 512).
        shift_logits: read position i's prediction from position i - 1 (default: True for Dream-style models).
    """
    from .external import _json

    path = Path(path)
    doc = _json(path / "config.json")
    device = torch.device(device)
    _transformers()
    remote = needs_remote_code(doc)
    if remote and not trust_remote_code:
        code = sorted({str(v).split(".")[0] + ".py" for v in doc["auto_map"].values() if isinstance(v, str)})
        raise UserError(f"{path}: this model's class is defined by the checkpoint's own Python code ("
                        f"{', '.join(code) or 'auto_map'}); pass --trust-remote-code (Python: trust_remote_code=True) "
                        "if you trust it")
    n_len = _model_length(doc, length, path)
    tokenizer = _tokenizer(path, remote)
    mask = doc.get("mask_token_id")
    if not isinstance(mask, int):
        mask = getattr(tokenizer, "mask_token_id", None) if tokenizer is not None else None
    if not isinstance(mask, int):
        why = "the tokenizer declares no mask token" if tokenizer is not None else "there is no tokenizer"
        raise UserError(f"{path}: no mask token: config.json has no mask_token_id and {why}; for another "
                        "convention wrap the network with lsdd.models.from_clean_logits")
    config_vocab = doc.get("vocab_size") if isinstance(doc.get("vocab_size"), int) else None
    vocab = len(tokenizer) if tokenizer is not None else config_vocab
    if config_vocab is not None and vocab is not None:
        vocab = min(vocab, config_vocab)
    if vocab is None:
        raise UserError(f"{path}: config.json has no vocab_size and there is no tokenizer")
    shift = str(doc.get("model_type", "")).lower() == "dream" if shift_logits is None else bool(shift_logits)
    module = _network(path, doc, remote, device)

    def logits(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # a masked LM takes no time: sigma unused
        out = module(input_ids=x)
        out = out.logits if hasattr(out, "logits") else out[0]
        return torch.cat([out[:, :1], out[:, :-1]], dim=1) if shift else out

    archs = doc.get("architectures") or []
    meta = {"checkpoint_format": "masked-lm", "architecture": archs[0] if archs else doc.get("model_type"),
            "mask_token_id": mask, "vocab_size": vocab, "shift_logits": shift, "remote_code": remote,
            "original_config": doc}
    fp = weights_fingerprint(path, doc, {"mask_token_id": mask, "vocab_size": vocab, "shift_logits": shift})
    return from_clean_logits(logits, mask, vocab, n_len, tokenizer=tokenizer, device=device, fingerprint=fp,
                             source=source or str(path), module=module, meta=meta)


__all__ = ["is_masked_lm", "needs_remote_code", "load_masked_lm", "MAX_DEFAULT_LENGTH", "weights_fingerprint"]
