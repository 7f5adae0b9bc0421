"""Model directories: ``config.json`` (format tag, DiTConfig, fingerprint, provenance) + ``model.safetensors``.

Both files are written atomically (lsdd.atomic), weights first: a crash never leaves a half-written file, and a
``config.json`` always describes weights that were completely written. Loading checks everything a user can get
wrong and raises UserError naming the file and the bad key or value.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .. import atomic
from ..errors import UserError
from .dit import DiTConfig, ScoreDiT

FORMAT = "lsdd-dit"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
RESERVED = ("format", "format_version", "model", "fingerprint")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def fingerprint(config: DiTConfig, state_dict: dict[str, Tensor]) -> str:
    """sha256 over the canonical config JSON and every tensor (sorted by name: name, dtype, shape, bytes).

    Returns the first 16 hex characters; identical weights and config give the same id on any machine.
    """
    h = hashlib.sha256(canonical_json(config.to_dict()).encode())
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def save_model_dir(path: str | Path, model: ScoreDiT, config: DiTConfig, extra: dict[str, Any] | None = None) -> str:
    """Write ``path/model.safetensors`` then ``path/config.json``; returns the fingerprint.

    ``extra`` (e.g. training provenance) is stored as top-level keys of config.json; it may not use the
    reserved keys ``format``, ``format_version``, ``model`` or ``fingerprint``.
    """
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(RESERVED))
    if clash:
        raise ValueError(f"extra info may not use the reserved config.json keys {clash}")
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    fp = fingerprint(config, state)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "fingerprint": fp}
    atomic.write_bytes(path / WEIGHTS_FILE, st_save(state, metadata=meta))
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": config.to_dict(), "fingerprint": fp, **extra}
    atomic.write_json(path / CONFIG_FILE, doc)
    return fp


def read_config(path: str | Path) -> tuple[DiTConfig, dict[str, Any]]:
    """Read and validate ``path/config.json``: (model config, the whole JSON document)."""
    cfg_path = Path(path) / CONFIG_FILE
    if not cfg_path.is_file():
        raise UserError(f"{cfg_path}: not found (a model directory holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        doc = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{cfg_path}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise UserError(f"{cfg_path}: unknown format {doc.get('format')!r}; expected {FORMAT!r}")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(f"{cfg_path}: unsupported format_version {version!r}; this lsdd reads {FORMAT_VERSION}")
    if "model" not in doc:
        raise UserError(f"{cfg_path}: missing key 'model' (the network's configuration)")
    try:
        config = DiTConfig.from_dict(doc["model"])
    except (UserError, TypeError) as e:
        raise UserError(f"{cfg_path}: {e}") from None
    return config, doc


def _read_weights(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: not found")
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None


def check_state_dict(where: Path, state: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """UserError unless ``state`` has exactly the keys of ``expected``, with the same shapes, floating and finite."""
    missing = sorted(set(expected) - set(state))
    if missing:
        raise UserError(f"{where}: missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise UserError(f"{where}: unexpected key(s) {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for name, ref in expected.items():
        t = state[name]
        if t.shape != ref.shape:
            raise UserError(f"{where}: key {name!r} has shape {tuple(t.shape)}, but config.json implies "
                            f"{tuple(ref.shape)}")
        if not t.is_floating_point():
            raise UserError(f"{where}: key {name!r} has non-float dtype {t.dtype}")
        if not torch.isfinite(t).all():
            raise UserError(f"{where}: key {name!r} contains NaN or infinite values")


def load_model_dir(path: str | Path, device: str | torch.device = "cpu", source: str | None = None):
    """Load a model directory into a ``LoadedModel`` (module in eval mode on ``device``).

    Raises UserError for a missing directory or file, bad JSON, an unknown format, an unreadable safetensors
    file, missing/unexpected keys, shape mismatches and a fingerprint that does not match the weights.
    """
    from . import LoadedModel  # models/__init__ defines LoadedModel and imports this module

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: not a model directory (expected a folder with {CONFIG_FILE} and {WEIGHTS_FILE})")
    config, doc = read_config(path)
    weights_path = path / WEIGHTS_FILE
    state = _read_weights(weights_path)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG untouched
        module = ScoreDiT(config)
    check_state_dict(weights_path, state, module.state_dict())
    fp = fingerprint(config, state)
    recorded = doc.get("fingerprint")
    if recorded is not None and recorded != fp:
        raise UserError(f"{weights_path}: weights have fingerprint {fp}, but {path / CONFIG_FILE} records "
                        f"{recorded!r} (the two files do not belong together)")
    with torch.no_grad():
        module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    module.to(device).eval()
    meta = {k: v for k, v in doc.items() if k not in RESERVED}
    return LoadedModel(module=module, config=config, fingerprint=fp, source=source or str(path), meta=meta,
                       directory=path)


__all__ = ["save_model_dir", "load_model_dir", "read_config", "fingerprint", "FORMAT", "FORMAT_VERSION",
           "CONFIG_FILE", "WEIGHTS_FILE"]
