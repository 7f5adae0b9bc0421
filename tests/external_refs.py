"""Test helpers: tiny random checkpoints written exactly as SEDD, RADD and MDLM publish them, and an independent
float64 re-computation of each original forward pass from its state dict (written from the papers and the
original repositories' descriptions, not calling lsdd.models).

Layouts and key names (from the original code):
- SEDD ``model/transformer.py``: vocab_embed.embedding (S, H); sigma_map.mlp.{0,2}.{weight,bias} (256 -> C -> C);
  rotary_emb.inv_freq; blocks.N.{norm1.weight, attn_qkv.weight, attn_out.weight, norm2.weight, mlp.0.*, mlp.2.*,
  adaLN_modulation.*}; output_layer.{norm_final.weight, linear.*, adaLN_modulation.*}. config.json = the hydra
  config (PyTorchModelHubMixin).
- RADD ``model/transformer.py``: no sigma_map / adaLN; LayerNorms with weight and bias; output_layer.norm_final.
- MDLM Hugging Face ``modeling_mdlm.py``: SEDD's DiT under ``backbone.``; config.json with model_type "mdlm",
  vocab_size (mask = last id), model_length, hidden_dim, cond_dim, n_blocks, n_heads, time_conditioning.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

TOKENS, HIDDEN, COND, BLOCKS, HEADS, LENGTH = 20, 32, 16, 2, 4, 12


def sedd_doc(graph: str = "absorb", scale_by_sigma: bool = True, noise: str = "loglinear") -> dict:
    return {"ngpus": 8, "tokens": TOKENS, "training": {"batch_size": 512, "ema": 0.9999},
            "data": {"train": "openwebtext", "valid": "wikitext103"},
            "graph": {"type": graph, "file": "data", "report_all": False},
            "noise": {"type": noise, "sigma_min": 1e-4, "sigma_max": 20},
            "sampling": {"predictor": "euler", "steps": 128, "noise_removal": True},
            "model": {"name": "small", "type": "ddit", "hidden_size": HIDDEN, "cond_dim": COND, "length": LENGTH,
                      "n_blocks": BLOCKS, "n_heads": HEADS, "scale_by_sigma": scale_by_sigma, "dropout": 0.1}}


def radd_doc() -> dict:
    return {"ngpus": 4, "tokens": TOKENS, "training": {"ema": 0.9999, "loss_type": "t_DCE"},
            "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
            "model": {"name": "small_radd", "type": "ddit_wot", "hidden_size": HIDDEN, "cond_dim": 128,
                      "length": LENGTH, "n_blocks": BLOCKS, "n_heads": HEADS, "dropout": 0.02,
                      "use_checkpoint": False, "dtype": "float16"}}


def mdlm_doc(time_conditioning: bool = False) -> dict:
    return {"architectures": ["MDLM"], "auto_map": {"AutoConfig": "configuration_mdlm.MDLMConfig",
                                                     "AutoModelForMaskedLM": "modeling_mdlm.MDLM"},
            "model_type": "mdlm", "vocab_size": TOKENS + 1, "model_length": LENGTH, "hidden_dim": HIDDEN,
            "cond_dim": COND, "n_blocks": BLOCKS, "n_heads": HEADS, "dropout": 0.1,
            "time_conditioning": time_conditioning, "return_dict": False, "torch_dtype": "float32"}


def _inv_freq(d: int) -> torch.Tensor:
    return 1.0 / 10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d)


def shapes(kind: str, states: int) -> dict[str, tuple]:
    """Parameter names and shapes of the original networks (``kind``: "sedd"/"mdlm" (DiT) or "radd")."""
    h, c = HIDDEN, COND
    out = {"vocab_embed.embedding": (states, h)}
    if kind != "radd":
        out.update({"sigma_map.mlp.0.weight": (c, 256), "sigma_map.mlp.0.bias": (c,),
                    "sigma_map.mlp.2.weight": (c, c), "sigma_map.mlp.2.bias": (c,)})
    for i in range(BLOCKS):
        p = f"blocks.{i}."
        out.update({p + "norm1.weight": (h,), p + "attn_qkv.weight": (3 * h, h), p + "attn_out.weight": (h, h),
                    p + "norm2.weight": (h,), p + "mlp.0.weight": (4 * h, h), p + "mlp.0.bias": (4 * h,),
                    p + "mlp.2.weight": (h, 4 * h), p + "mlp.2.bias": (h,)})
        if kind == "radd":
            out.update({p + "norm1.bias": (h,), p + "norm2.bias": (h,)})
        else:
            out.update({p + "adaLN_modulation.weight": (6 * h, c), p + "adaLN_modulation.bias": (6 * h,)})
    out.update({"output_layer.norm_final.weight": (h,), "output_layer.linear.weight": (states, h),
                "output_layer.linear.bias": (states,)})
    if kind == "radd":
        out["output_layer.norm_final.bias"] = (h,)
    else:
        out.update({"output_layer.adaLN_modulation.weight": (2 * h, c),
                    "output_layer.adaLN_modulation.bias": (2 * h,)})
    return out


def random_state(kind: str, states: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    st = {k: torch.randn(s, generator=g) * (1.0 if k == "vocab_embed.embedding" else 0.3)
          for k, s in shapes(kind, states).items()}
    st["rotary_emb.inv_freq"] = _inv_freq(HIDDEN // HEADS)
    return st


def write_checkpoint(d: Path, doc: dict, state: dict, weights: str = "model.safetensors") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(doc, indent=2))
    if weights.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(d / weights), metadata={"format": "pt"})
    else:
        torch.save(state, d / weights)
    return d


# -- the reference forward passes (float64) -------------------------------------------------------------------
def _ln(x, w, b=None):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + 1e-5) * w
    return y if b is None else y + b


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _rotate(t, length):
    """NeoX rotate-half rotary on (B, L, heads, D): pairs (i, i + D/2) rotated by angle pos * 10000^(-2i/D)."""
    d = t.shape[-1]
    ang = torch.arange(length, dtype=torch.float64)[:, None] * _inv_freq(d).double()[None]  # (L, D/2)
    cos, sin = ang.cos()[None, :, None], ang.sin()[None, :, None]
    a, b = t[..., : d // 2], t[..., d // 2:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def _attention(x, wqkv, wout):
    bsz, length, h = x.shape
    d = h // HEADS
    qkv = (x @ wqkv.T).view(bsz, length, 3, HEADS, d)
    q, k, v = _rotate(qkv[:, :, 0], length), _rotate(qkv[:, :, 1], length), qkv[:, :, 2]
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d)
    out = torch.einsum("bhij,bjhd->bihd", torch.softmax(scores, -1), v)
    return out.reshape(bsz, length, h) @ wout.T


def _lin(x, W, p):
    return x @ W[p + ".weight"].T + W[p + ".bias"]


def dit_logits(W: dict, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """SEDD's DiT (also MDLM's backbone) without the final scaling: (B, L) -> (B, L, S)."""
    W = {k: v.double() for k, v in W.items()}
    half = 128
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    args = sigma.double()[:, None] * freqs[None]
    t = torch.cat([args.cos(), args.sin()], -1)
    c = _lin(torch.nn.functional.silu(_lin(t, W, "sigma_map.mlp.0")), W, "sigma_map.mlp.2")
    c = torch.nn.functional.silu(c)
    h = W["vocab_embed.embedding"][x]
    for i in range(BLOCKS):
        p = f"blocks.{i}."
        mods = _lin(c, W, p + "adaLN_modulation")[:, None].chunk(6, -1)
        a = _ln(h, W[p + "norm1.weight"]) * (1 + mods[1]) + mods[0]
        h = h + mods[2] * _attention(a, W[p + "attn_qkv.weight"], W[p + "attn_out.weight"])
        m = _ln(h, W[p + "norm2.weight"]) * (1 + mods[4]) + mods[3]
        h = h + mods[5] * _lin(_gelu_tanh(_lin(m, W, p + "mlp.0")), W, p + "mlp.2")
    shift, scale = _lin(c, W, "output_layer.adaLN_modulation")[:, None].chunk(2, -1)
    return _lin(_ln(h, W["output_layer.norm_final.weight"]) * (1 + scale) + shift, W, "output_layer.linear")


def sedd_log_score(W, x, sigma, scale_by_sigma=True):
    """SEDD's forward: logits - log(e^sigma - 1) - log(S - 1) (absorbing), 0 at the current token."""
    out = dit_logits(W, x, sigma)
    if scale_by_sigma:
        out = out - torch.log(torch.expm1(sigma.double()))[:, None, None] - math.log(out.shape[-1] - 1)
    return out.scatter(-1, x[..., None], 0.0)


def radd_log_probs(W, x):
    """RADD's forward: log-softmax of the output over the real-token columns (B, L, N)."""
    W = {k: v.double() for k, v in W.items()}
    h = W["vocab_embed.embedding"][x]
    for i in range(BLOCKS):
        p = f"blocks.{i}."
        h = h + _attention(_ln(h, W[p + "norm1.weight"], W[p + "norm1.bias"]), W[p + "attn_qkv.weight"],
                           W[p + "attn_out.weight"])
        h = h + _lin(_gelu_tanh(_lin(_ln(h, W[p + "norm2.weight"], W[p + "norm2.bias"]), W, p + "mlp.0")), W,
                     p + "mlp.2")
    out = _lin(_ln(h, W["output_layer.norm_final.weight"], W["output_layer.norm_final.bias"]), W,
               "output_layer.linear")
    return torch.log_softmax(out[..., :-1], -1)


def mdlm_log_probs(W, x, sigma, time_conditioning=False):
    """MDLM SUBS: mask logit -> -inf, normalise; (B, L, N) over the real tokens."""
    W = {k[len("backbone."):]: v for k, v in W.items()}
    logits = dit_logits(W, x, sigma if time_conditioning else torch.zeros_like(sigma))
    logits[..., -1] = -math.inf
    return torch.log_softmax(logits, -1)[..., :-1]


def absorbing_score_from_clean(log_p, sigma):
    """RADD's / MDLM's concrete score at a masked position: e^{-sigma} / (1 - e^{-sigma}) p(y)."""
    s = sigma.double()[:, None, None]
    return log_p.exp() * torch.exp(-s) / (1.0 - torch.exp(-s))
