"""Where samples come from: a JSON sidecar beside each ``.npy`` of samples.

``x.npy`` stays a plain int64 array (``numpy.load`` reads it); ``x.npy.json`` says which model drew it, with which
sampler and seed::

    {"format": "lsdd-samples", "format_version": 1,
     "model_fingerprint": "0dbf3371e1bdc5f4", "model_source": "bundled:countdown", "graph": "absorbing",
     "num_tokens": 32, "length": 64, "tokenizer_sha256": null,
     "sampler": {"name": "euler", "steps": 64, ...}, "nfe": 64, "num_samples": 256, "seed": 0,
     "lsdd_version": "0.1.0"}

``lsdd eval`` and ``lsdd decode`` read it (``read_info``) and refuse another model's samples
(``check_provenance``). Conditional samples add ``"condition": {"kind", "texts", "free_token", "given"}``
(``lsdd.sampling.prompts.Condition.to_info``: the (P, L) given tokens, sample i holding row i mod P), from which
``held_positions`` gives each sample's given positions. Samples without a sidecar (older lsdd, other tools) are read as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError

FORMAT = "lsdd-samples"
FORMAT_VERSION = 1


def sidecar_path(npy_path: str | Path) -> Path:
    """The provenance file of a samples file: ``x.npy`` -> ``x.npy.json``."""
    p = Path(npy_path)
    return p.with_name(p.name + ".json")


def write_samples(path: str | Path, x: Any, info: dict) -> None:
    """Write samples ``x`` (num, length) as an int64 .npy at ``path`` and ``info`` in its sidecar, each atomically.

    The sidecar is written first, then the .npy: a crash in between leaves no samples file behind, and a reader
    never sees new samples beside an old sidecar. ``info`` holds the keys of ``model_info`` and the sampler's
    (``sampler``, ``nfe``, ``num_samples``, ``seed``, ``lsdd_version``); it must be JSON-serialisable.
    """
    import numpy as np

    from .. import atomic

    arr = np.asarray(x.cpu() if hasattr(x, "cpu") else x)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"samples must be a (num, length) integer array, got shape {arr.shape} dtype {arr.dtype}")
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, **info}
    text = json.dumps(record, indent=2) + "\n"  # fails here, before anything is written, if info is not JSON
    atomic.write_text(sidecar_path(path), text)
    atomic.save_npy(path, arr.astype(np.int64, copy=False))


def model_info(model) -> dict:
    """The model keys of a sidecar for a loaded model (``lsdd.models.LoadedModel``)."""
    tok = getattr(model, "tokenizer", None)
    sha = tok.sha256() if tok is not None and hasattr(tok, "sha256") else None
    return {"model_fingerprint": getattr(model, "fingerprint", None), "model_source": getattr(model, "source", None),
            "graph": model.graph.name, "num_tokens": int(model.graph.num_tokens), "length": int(model.length),
            "tokenizer_sha256": sha}


def read_info(path: str | Path) -> dict | None:
    """The sidecar of samples file ``path``; None when there is none (samples from older lsdd or elsewhere).
    UserError when it is there but unreadable or not an lsdd-samples record."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        info = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the provenance file {side}: {e}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise UserError(f"{side} is not an lsdd samples record (no \"format\": \"{FORMAT}\"); move it away")
    if not isinstance(info.get("format_version"), int) or info["format_version"] > FORMAT_VERSION:
        raise UserError(f"{side} has format_version {info.get('format_version')!r}; this lsdd reads up to "
                        f"{FORMAT_VERSION} (upgrade lsdd)")
    return info


def held_positions(info: dict | None, samples: Any, what: str = "samples"):
    """(n, L) bool tensor: the positions samples (n, L) were given (sample i holds row i mod P of the condition
    the sidecar ``info`` records; ``lsdd.sampling.prompts``), or None for unconditional samples. UserError when the
    record does not fit the samples (another length, or given tokens the samples do not hold)."""
    if info is None or info.get("condition") is None:
        return None
    from .prompts import Condition

    cond = Condition.from_info(info["condition"], f"{what}.json")
    n, length = samples.shape
    if cond.given.shape[1] != length:
        raise UserError(f"{what}: its sidecar's condition has rows of {cond.given.shape[1]} tokens, the samples "
                        f"{length}")
    rows = cond.rows(n)
    held = rows != cond.free
    bad = held & (samples.cpu() != rows)
    if bool(bad.any()):
        i = int(bad.any(-1).nonzero()[0, 0])
        raise UserError(f"{what}: sample {i} does not hold the tokens its sidecar says it was given (edited or "
                        "reordered samples?)")
    return held


def _short(value: Any) -> str:
    text = "none" if value is None else str(value)
    return text if len(text) <= 16 else text[:12] + "..."


def check_provenance(info: dict | None, *, fingerprint: str | None = None, tokenizer_sha256: str | None = None,
                     num_tokens: int | None = None, length: int | None = None, force: bool = False,
                     what: str = "samples", against: str = "this model", text: bool = False) -> None:
    """Refuse samples whose sidecar ``info`` does not match what the command expects: UserError naming the first
    mismatch and ``--force``. Each expectation given (not None) is checked; ``text`` asks for samples of a model
    with a tokenizer (any). ``what`` names the samples (e.g. their file), ``against`` what they are checked
    against (e.g. "this model bundled:text-absorb", "task countdown").
    No check without a sidecar (``info`` None) or with ``force``."""
    if info is None or force:
        return
    src = f"{info.get('model_source', '?')} (fingerprint {_short(info.get('model_fingerprint'))})"
    hint = "; pass --force to use them anyway"
    if fingerprint is not None and info.get("model_fingerprint") != fingerprint:
        raise UserError(f"{what}: sampled from {src}, not from {against} ({_short(fingerprint)}){hint}")
    side_tok = info.get("tokenizer_sha256")
    if text and side_tok is None:
        raise UserError(f"{what}: sampled from {src}, which has no tokenizer, so they are not text{hint}")
    if tokenizer_sha256 is not None and side_tok != tokenizer_sha256:
        raise UserError(f"{what}: sampled from {src} with tokenizer {_short(side_tok)}, not with the tokenizer of "
                        f"{against} ({_short(tokenizer_sha256)}){hint}")
    if num_tokens is not None and info.get("num_tokens") is not None and info["num_tokens"] != num_tokens:
        raise UserError(f"{what}: sampled from {src} with {info['num_tokens']} token values, not the {num_tokens} "
                        f"of {against}{hint}")
    if length is not None and info.get("length") is not None and info["length"] != length:
        raise UserError(f"{what}: sampled from {src} with length {info['length']}, not the length {length} of "
                        f"{against}{hint}")


__all__ = ["FORMAT", "FORMAT_VERSION", "sidecar_path", "write_samples", "model_info", "read_info",
           "check_provenance", "held_positions"]
