"""Checkpoints as other projects publish them: recognise the layout of a directory, fetch hub ids, read weights.

Layouts (recognised from the files, never from the directory's name):
- ``lsdd``: our own ``config.json`` (``"format": "lsdd-dit"``) + ``model.safetensors``;
- ``sedd``: SEDD's hub layout (louaaron/sedd-small): ``config.json`` holding its hydra config (``tokens``,
  ``graph``, ``noise``, ``model``) + ``model.safetensors`` or ``pytorch_model.bin`` with ``sigma_map.*`` keys;
  also a SEDD training run (``.hydra/config.yaml`` + ``checkpoints-meta/checkpoint.pth``, EMA weights used);
- ``radd``: RADD's hub layout (JingyangOu/radd-t-dce, radd-lambda-dce): the same kind of ``config.json`` and
  weights without ``sigma_map`` (a time-independent network, ``blocks.N.norm1.bias`` present);
- ``mdlm``: MDLM's Hugging Face layout (kuleshov-group/mdlm-owt): ``config.json`` with ``"model_type": "mdlm"``
  + weights under ``backbone.*``;
- ``masked-lm``: a transformers masked LM (``save_pretrained`` output: a ``...ForMaskedLM`` architecture, or an
  ``auto_map`` with a declared mask token, as LLaDA and Dream have; ``lsdd.models.hf_masked``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
SEDD_RUN_CKPT = Path("checkpoints-meta") / "checkpoint.pth"
SEDD_RUN_CONFIG = Path(".hydra") / "config.yaml"
HUB_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model*.bin", "pytorch_model.bin.index.json", "tokenizer.json",
                # masked LMs: their tokenizer files and the code an auto_map names (run only if trusted)
                "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt",
                "tokenizer.model", "*.py"]


def looks_like_hub_id(name: str) -> bool:
    """True for ``owner/name`` (one slash, no leading dot or slash): what the hub would accept."""
    return bool(HUB_ID.match(name)) and not name.startswith(".")


def download(repo_id: str) -> Path:
    """``huggingface_hub.snapshot_download`` of the files a loader reads; UserError offline or without the package."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"--model {repo_id}: loading from the Hugging Face hub needs `huggingface_hub` "
                        "(pip install huggingface_hub), or pass a local directory") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as e:  # noqa: BLE001 - network, auth and missing-repo errors all mean "could not fetch"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"--model {repo_id}: not a local directory, and the Hugging Face hub download failed "
                        f"({type(e).__name__}: {first}); offline, download it elsewhere and pass the "
                        "directory") from None


def _json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc


def read_config(path: Path) -> dict[str, Any]:
    """The directory's config as a dict: ``config.json``, or a SEDD run's ``.hydra/config.yaml``."""
    if (path / "config.json").is_file():
        doc = _json(path / "config.json")
        # newer PyTorchModelHubMixin versions may nest an init argument named ``config`` under that key
        if "config" in doc and isinstance(doc["config"], dict) and "model" in doc["config"] and "model" not in doc:
            doc = doc["config"]
        return doc
    try:
        import yaml
    except ImportError:
        raise UserError(f"{path / SEDD_RUN_CONFIG}: reading a SEDD run needs PyYAML (pip install pyyaml)") from None
    try:
        doc = yaml.safe_load((path / SEDD_RUN_CONFIG).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path / SEDD_RUN_CONFIG}: not readable YAML ({e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path / SEDD_RUN_CONFIG}: expected a mapping")
    return doc


def _files(path: Path) -> list[str]:
    return sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())[:12]


def detect_format(path: Path) -> str:
    """"lsdd", "sedd", "radd", "mdlm" or "masked-lm" from the files in ``path``; UserError naming what was found
    otherwise."""
    cfg_file = path / "config.json"
    has_weights = any((path / w).is_file() for w in WEIGHT_FILES)
    if cfg_file.is_file():
        doc = _json(cfg_file)
        if "format" in doc:  # ours (lsdd's loader names a wrong format or version)
            return "lsdd"
        if doc.get("model_type") == "mdlm" and has_weights:
            return "mdlm"
        doc = read_config(path)
        if isinstance(doc.get("model"), dict) and "tokens" in doc and has_weights:
            keys = weight_names(path)
            if any(k.startswith("sigma_map.") for k in keys):
                return "sedd"
            if any(k.endswith("norm1.bias") for k in keys):
                return "radd"
            raise UserError(f"{path}: a SEDD/RADD-style config.json, but the weights have neither SEDD's sigma_map.* "
                            f"nor RADD's blocks.N.norm1.bias keys (first keys: {sorted(keys)[:4]})")
        from .hf_masked import is_masked_lm

        if is_masked_lm(path, doc):
            return "masked-lm"
        archs = doc.get("architectures")
        if isinstance(archs, list) and archs:
            raise UserError(f"{path}: a transformers checkpoint of {archs[0]}, which is not a masked LM (lsdd loads "
                            "...ForMaskedLM architectures, or an auto_map model with a mask_token_id)")
    elif (path / SEDD_RUN_CONFIG).is_file() and (path / SEDD_RUN_CKPT).is_file():
        return "sedd"
    elif (path / "model.safetensors").is_file():
        return "lsdd"  # our weights without their config.json: lsdd's loader says which file is missing
    raise UserError(f"{path}: unrecognised checkpoint layout (found {_files(path) or 'nothing'}); expected lsdd's, "
                    "SEDD's or RADD's config.json + model.safetensors/pytorch_model.bin, MDLM's (model_type mdlm), "
                    "a SEDD run (.hydra/config.yaml + checkpoints-meta/checkpoint.pth), or a transformers masked LM")


def _weight_files(path: Path) -> list[Path]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).is_file():
            shards = sorted(set(_json(path / index).get("weight_map", {}).values()))
            if not shards:
                raise UserError(f"{path / index}: no weight_map")
            return [path / s for s in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return [path / name]
    raise UserError(f"{path}: no weights (expected one of {list(WEIGHT_FILES)})")


def weight_names(path: Path) -> list[str]:
    """Tensor names in the directory's weight files (safetensors headers only; .bin files are loaded)."""
    names: list[str] = []
    for f in _weight_files(path):
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(f), framework="pt") as h:
                    names += list(h.keys())
            except Exception as e:  # noqa: BLE001
                raise UserError(f"{f}: not a readable safetensors file ({e})") from None
        else:
            names += list(_torch_load(f))
    return names


def _torch_load(f: Path) -> dict[str, Any]:
    try:
        obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt file, pickle refused, ...
        raise UserError(f"{f}: not a readable PyTorch weights file ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{f}: expected a dict of tensors, got {type(obj).__name__}")
    return obj


def read_weights(path: Path) -> dict[str, Tensor]:
    """Every tensor of the directory's weight files (one file or shards), on the CPU as stored."""
    from safetensors.torch import load_file

    state: dict[str, Tensor] = {}
    for f in _weight_files(path):
        if f.suffix == ".safetensors":
            try:
                state.update(load_file(str(f)))
            except Exception as e:  # noqa: BLE001
                raise UserError(f"{f}: not a readable safetensors file ({e})") from None
        else:
            state.update(_torch_load(f))
    return state


def read_sedd_run(path: Path, use_ema: bool = True) -> dict[str, Tensor]:
    """A SEDD training run's weights: ``checkpoint.pth``'s ``model`` state dict with the EMA shadow parameters
    copied in (what SEDD's own ``load_model_local`` samples with). The shadows are listed in the order of the
    network's trainable parameters, i.e. the state dict's keys minus its buffers (``rotary_emb.inv_freq``)."""
    f = path / SEDD_RUN_CKPT
    ckpt = _torch_load(f)
    if "model" not in ckpt:
        raise UserError(f"{f}: no 'model' entry (keys {sorted(ckpt)[:6]})")
    state = dict(ckpt["model"])
    ema = ckpt.get("ema")
    if use_ema and isinstance(ema, dict) and ema.get("shadow_params") is not None:
        names = [k for k in state if not k.endswith("rotary_emb.inv_freq")]
        shadows = list(ema["shadow_params"])
        if len(shadows) != len(names):
            raise UserError(f"{f}: {len(shadows)} EMA shadow parameters for {len(names)} parameters")
        for name, value in zip(names, shadows):
            if tuple(value.shape) != tuple(state[name].shape):
                raise UserError(f"{f}: EMA shadow for {name!r} has shape {tuple(value.shape)}, the weight "
                                f"{tuple(state[name].shape)}")
            state[name] = value
    return state


__all__ = ["looks_like_hub_id", "download", "detect_format", "read_config", "read_weights", "read_sedd_run",
           "weight_names"]
