"""Loaders for SEDD, RADD and MDLM checkpoints: their config -> a ``DiTConfig`` and a network with the original
state-dict key names, weights loaded strictly, wrapped as a ``LoadedModel`` with our score contract.

Conventions taken from the original projects (see ``lsdd.models.external`` for the layouts):
- SEDD (louaaron/Score-Entropy-Discrete-Diffusion): ``tokens``; ``graph.type`` "absorb" | "uniform";
  ``noise.type`` "loglinear" (SEDD's ``get_noise`` builds LogLinearNoise with its default eps = 1e-3, whatever
  the config's sigma_min/max say) | "geometric" (sigma_min, sigma_max); ``model.{hidden_size, cond_dim,
  n_blocks, n_heads, length, scale_by_sigma, dropout}``; a config without ``model.length`` gets 1024 (every
  published model's length), with a note on stderr. The network takes sigma_bar.
- RADD (ML-GSAI/RADD): ``tokens`` + 1 states (absorbing), loglinear noise, a network without time input.
- MDLM (kuleshov-group/mdlm-owt): ``vocab_size`` states, the last one the mask; ``model_length``,
  ``hidden_dim``, ``cond_dim``, ``n_blocks``, ``n_heads``, ``time_conditioning``; trained with the
  log-linear schedule (eps 1e-3), which the Hugging Face config does not record.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from .checkpoint import check_state_dict, fingerprint
from .clean import MDLMNet, RADDNet
from .dit import DiTConfig, ScoreDiT
from .external import SEDD_RUN_CKPT, detect_format, read_config, read_sedd_run, read_weights

LOGLINEAR = {"type": "loglinear", "eps": 1e-3}
EXTERNAL_FORMATS = ("sedd", "radd", "mdlm")


def _get(doc: dict, dotted: str, where: Path) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"{where}: config is missing {dotted!r}")
        node = node[part]
    return node


def _noise(doc: dict, where: Path) -> dict[str, Any]:
    kind = _get(doc, "noise.type", where)
    if kind == "loglinear":
        return dict(LOGLINEAR)
    if kind == "geometric":
        return {"type": "geometric", "sigma_min": float(_get(doc, "noise.sigma_min", where)),
                "sigma_max": float(_get(doc, "noise.sigma_max", where))}
    raise UserError(f"{where}: unknown noise.type {kind!r}; expected 'loglinear' or 'geometric'")


def _config(where: Path, **kw) -> DiTConfig:
    try:
        return DiTConfig(**kw)
    except (UserError, TypeError, ValueError) as e:
        raise UserError(f"{where}: {e}") from None


PUBLISHED_LENGTH = 1024  # the sequence length of every published SEDD and RADD model


def _length(doc: dict, where: Path) -> int:
    """``model.length``; a SEDD/RADD config without it gets 1024, every published model's length, with a note."""
    model = doc.get("model")
    if isinstance(model, dict) and "length" not in model:
        print(f"lsdd: note: {where}: config has no model.length; using {PUBLISHED_LENGTH}, the length of every "
              "published SEDD/RADD model", file=sys.stderr)
        return PUBLISHED_LENGTH
    return int(_get(doc, "model.length", where))


def sedd_config(doc: dict, where: Path) -> DiTConfig:
    graph = _get(doc, "graph.type", where)
    if graph not in ("absorb", "uniform"):
        raise UserError(f"{where}: unknown graph.type {graph!r}; expected 'absorb' or 'uniform'")
    m = lambda k: _get(doc, f"model.{k}", where)  # noqa: E731
    return _config(where, num_tokens=int(_get(doc, "tokens", where)),
                   graph="absorbing" if graph == "absorb" else "uniform", noise=_noise(doc, where),
                   length=_length(doc, where), hidden_size=int(m("hidden_size")), cond_dim=int(m("cond_dim")),
                   n_blocks=int(m("n_blocks")), n_heads=int(m("n_heads")), dropout=0.0,
                   scale_by_sigma=bool(m("scale_by_sigma")))


def radd_config(doc: dict, where: Path) -> DiTConfig:
    m = lambda k: _get(doc, f"model.{k}", where)  # noqa: E731
    return _config(where, num_tokens=int(_get(doc, "tokens", where)), graph="absorbing", noise=_noise(doc, where),
                   length=_length(doc, where), hidden_size=int(m("hidden_size")),
                   cond_dim=int(doc["model"].get("cond_dim", 128)), n_blocks=int(m("n_blocks")),
                   n_heads=int(m("n_heads")), dropout=0.0, scale_by_sigma=False)


def mdlm_config(doc: dict, where: Path) -> DiTConfig:
    g = lambda k: _get(doc, k, where)  # noqa: E731
    return _config(where, num_tokens=int(g("vocab_size")) - 1, graph="absorbing", noise=dict(LOGLINEAR),
                   length=int(g("model_length")), hidden_size=int(g("hidden_dim")), cond_dim=int(g("cond_dim")),
                   n_blocks=int(g("n_blocks")), n_heads=int(g("n_heads")), dropout=0.0, scale_by_sigma=False)


def build(fmt: str, doc: dict, where: Path) -> tuple[nn.Module, DiTConfig]:
    """The network for checkpoint format ``fmt`` (random weights) and the DiTConfig describing it."""
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; leave the caller's RNG alone
        if fmt == "sedd":
            cfg = sedd_config(doc, where)
            return ScoreDiT(cfg), cfg
        if fmt == "radd":
            cfg = radd_config(doc, where)
            return RADDNet(cfg), cfg
        cfg = mdlm_config(doc, where)
        return MDLMNet(cfg, bool(doc.get("time_conditioning", False))), cfg


def load_strict(module: nn.Module, state: dict[str, Tensor], where: Path) -> dict[str, Tensor]:
    """Load ``state`` (original key names) into ``module``: missing/unexpected keys and wrong shapes are a
    UserError naming them. The rotary ``inv_freq`` buffer is a function of the head size; a checkpoint that
    does not carry it gets ours. Returns the float32 state that was loaded."""
    expected = module.state_dict()
    state = dict(state)
    for name in expected:
        if name.endswith("rotary_emb.inv_freq") and name not in state:
            state[name] = expected[name]
    check_state_dict(where, state, expected)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}
    with torch.no_grad():
        module.load_state_dict(state)
    return state


def load_external(path: Path, fmt: str, device: str | torch.device = "cpu", source: str | None = None,
                  use_ema: bool = True):
    """Load a SEDD / RADD / MDLM directory (``fmt`` from ``detect_format``) as a ``LoadedModel``."""
    from . import LoadedModel

    if fmt == "sedd" and not (path / "config.json").is_file():
        doc, where = read_config(path), path / SEDD_RUN_CKPT
        state = read_sedd_run(path, use_ema)
    else:
        doc, where = read_config(path), path
        state = read_weights(path)
    module, cfg = build(fmt, doc, path)
    state = load_strict(module, state, where)
    module.to(device).eval()
    meta = {"checkpoint_format": fmt, "original_config": doc}
    return LoadedModel(module=module, config=cfg, fingerprint=fingerprint(cfg, state), source=source or str(path),
                       meta=meta, directory=path)


__all__ = ["load_external", "detect_format", "EXTERNAL_FORMATS", "sedd_config", "radd_config", "mdlm_config"]
