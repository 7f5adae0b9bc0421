"""A DiT score network in SEDD's layout (Lou et al. 2024, "Discrete Diffusion Modeling by Estimating the Ratios").

Bidirectional transformer with rotary attention and adaLN conditioning on the total noise sigma_bar. The
parameter names follow SEDD's ``model/transformer.py`` (see docs/peers.md) so that SEDD state dicts can be
loaded into ``ScoreDiT`` later. Written from the architecture description, not from SEDD's code.

Shapes: B batch, L length, H hidden size, C cond_dim, S = number of graph states (``num_tokens + 1`` for the
absorbing graph, whose last id is the mask; ``num_tokens`` for the uniform graph).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..graphs import log_expm1
from ..noise import noise_from_dict

GRAPH_NAMES = ("absorbing", "uniform", "ordinal")
FREQ_EMBED_SIZE = 256  # sinusoidal features of sigma_bar fed to sigma_map (SEDD's frequency_embedding_size)


@dataclass(frozen=True)
class DiTConfig:
    """Everything needed to rebuild a ``ScoreDiT``; saved as the "model" entry of ``config.json``.

    Attributes:
        num_tokens: real tokens N (the absorbing graph adds a mask id N).
        graph: "absorbing", "uniform" or "ordinal".
        noise: noise schedule spec, e.g. ``{"type": "loglinear", "eps": 1e-3}`` (see ``lsdd.noise``).
        length: sequence length L the model was trained on.
        hidden_size, cond_dim, n_blocks, n_heads, dropout: transformer size.
        scale_by_sigma: absorbing only: output log-scores as logits - log(e^sigma_bar - 1) - log N, so that a
            zero output means "uniform over the N tokens" at every noise level. ``None`` picks the default
            (True for absorbing); it must be False for the uniform graph.
    """

    num_tokens: int
    graph: str
    noise: dict[str, Any]
    length: int
    hidden_size: int = 128
    cond_dim: int = 128
    n_blocks: int = 4
    n_heads: int = 4
    dropout: float = 0.0
    scale_by_sigma: bool | None = field(default=None)

    def __post_init__(self) -> None:
        if self.graph not in GRAPH_NAMES:
            raise UserError(f"unknown graph {self.graph!r}; expected one of {list(GRAPH_NAMES)}")
        for name in ("num_tokens", "length", "hidden_size", "cond_dim", "n_blocks", "n_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"model config: {name} must be a positive integer, got {value!r}")
        if self.graph != "absorbing" and self.num_tokens < 2:
            raise UserError(f"model config: the {self.graph} graph needs num_tokens >= 2, got {self.num_tokens}")
        if self.hidden_size % self.n_heads or (self.hidden_size // self.n_heads) % 2:
            raise UserError(f"model config: hidden_size {self.hidden_size} must split into {self.n_heads} heads "
                            "of even size (rotary embeddings rotate pairs)")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model config: dropout must lie in [0, 1), got {self.dropout!r}")
        if not isinstance(self.noise, dict):
            raise UserError(f"model config: noise must be a dict like {{'type': 'loglinear'}}, got {self.noise!r}")
        try:
            noise_from_dict(self.noise)
        except ValueError as e:
            raise UserError(f"model config: {e}") from None
        if self.scale_by_sigma is None:
            object.__setattr__(self, "scale_by_sigma", self.graph == "absorbing")
        if not isinstance(self.scale_by_sigma, bool):
            raise UserError(f"model config: scale_by_sigma must be true or false, got {self.scale_by_sigma!r}")
        if self.scale_by_sigma and self.graph != "absorbing":
            raise UserError("model config: scale_by_sigma applies to the absorbing graph only; set it to false "
                            f"for the {self.graph} graph")

    @property
    def num_states(self) -> int:
        """S: output width, the real tokens plus the mask for the absorbing graph."""
        return self.num_tokens + 1 if self.graph == "absorbing" else self.num_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiTConfig":
        """Inverse of ``to_dict``; UserError names unknown or missing keys."""
        if not isinstance(d, dict):
            raise UserError(f"model config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"model config: unknown key(s) {unknown}; expected keys {sorted(known)}")
        required = {"num_tokens", "graph", "noise", "length"}
        missing = sorted(required - set(d))
        if missing:
            raise UserError(f"model config: missing key(s) {missing}")
        return cls(**d)


def timestep_features(sigma: Tensor, dim: int = FREQ_EMBED_SIZE, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features [cos(sigma f_k), sin(sigma f_k)], f_k = max_period^(-k / (dim/2)). (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
    args = sigma.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class SigmaMap(nn.Module):
    """sigma_bar (B,) -> conditioning (B, C): sinusoidal features, Linear, SiLU, Linear (SEDD ``sigma_map``)."""

    def __init__(self, cond_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_EMBED_SIZE, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma: Tensor) -> Tensor:
        return self.mlp(timestep_features(sigma))


class TokenEmbedding(nn.Module):
    """Token embedding as a raw (S, H) parameter, SEDD's ``vocab_embed.embedding``.

    Initialised with std 0.02: unit-variance embeddings make the model sit at the marginal entropy
    (docs/practical.md, "Gotcha").
    """

    def __init__(self, num_states: int, hidden_size: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(num_states, hidden_size) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.embedding[x]


class Rotary(nn.Module):
    """Rotary position embedding, rotate-half (NeoX) convention, base 10000, over the head dimension."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq)  # persistent: SEDD state dicts carry it

    def cos_sin(self, length: int) -> tuple[Tensor, Tensor]:
        """cos and sin tables, each (L, D) with D the head dim: angle pos * inv_freq, repeated for both halves."""
        pos = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)
        angles = torch.outer(pos, self.inv_freq.float())
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    """(..., D) -> (..., D): [x1, x2] -> [-x2, x1]."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, L, heads, D), cos/sin (L, D) -> rotated x, same shape and dtype."""
    cos, sin = cos[None, :, None].to(x.dtype), sin[None, :, None].to(x.dtype)
    return x * cos + rotate_half(x) * sin


class LayerNorm(nn.Module):
    """LayerNorm with a weight and no bias, computed in float32 (SEDD's norm layers)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.layer_norm(x.float(), [self.dim]) * self.weight.float()


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x (B, L, H) * (1 + scale) + shift, with shift/scale (B, 1, H)."""
    return x * (1.0 + scale) + shift


def _zero_linear(in_dim: int, out_dim: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.zeros_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-zero: gated attention and a 4H tanh-GELU MLP."""

    def __init__(self, hidden_size: int, cond_dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = LayerNorm(hidden_size)
        self.attn_qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)  # output laid out (3, heads, D)
        self.attn_out = nn.Linear(hidden_size, hidden_size, bias=False)
        self.norm2 = LayerNorm(hidden_size)
        mlp_dim = 4 * hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_dim), nn.GELU(approximate="tanh"), nn.Linear(mlp_dim, hidden_size)
        )
        self.adaLN_modulation = _zero_linear(cond_dim, 6 * hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, c: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x (B, L, H), c (B, C), cos/sin (L, D) -> (B, L, H)."""
        batch, length, hidden = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c)[:, None].chunk(6, -1)
        qkv = self.attn_qkv(modulate(self.norm1(x), shift_msa, scale_msa))
        q, k, v = qkv.view(batch, length, 3, self.n_heads, hidden // self.n_heads).unbind(2)  # (B, L, heads, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, h, L, D)
        attn = attn.transpose(1, 2).reshape(batch, length, hidden)
        x = x + gate_msa * self.dropout(self.attn_out(attn))
        h = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x + gate_mlp * self.dropout(h)


class OutputLayer(nn.Module):
    """Final adaLN (shift, scale), then a zero-initialised linear map to the S states."""

    def __init__(self, hidden_size: int, cond_dim: int, num_states: int):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size)
        self.linear = _zero_linear(hidden_size, num_states)
        self.adaLN_modulation = _zero_linear(cond_dim, 2 * hidden_size)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x (B, L, H), c (B, C) -> logits (B, L, S)."""
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, -1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class ScoreDiT(nn.Module):
    """Score network s_theta(x, sigma_bar): log concrete scores log p_t(x with x_i <- y) / p_t(x).

    Call under ``torch.autocast`` for bf16 compute; the output is float32 either way.
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        h, c = config.hidden_size, config.cond_dim
        self.vocab_embed = TokenEmbedding(config.num_states, h)
        self.sigma_map = SigmaMap(c)
        self.rotary_emb = Rotary(h // config.n_heads)
        self.blocks = nn.ModuleList(DiTBlock(h, c, config.n_heads, config.dropout) for _ in range(config.n_blocks))
        self.output_layer = OutputLayer(h, c, config.num_states)

    def logits(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The output layer's raw values (B, L, S) float32, before any scaling (MDLM reads them as logits)."""
        if x.ndim != 2 or sigma.shape != (x.shape[0],):
            raise ValueError(f"expected x (B, L) and sigma (B,), got {tuple(x.shape)} and {tuple(sigma.shape)}")
        h = self.vocab_embed(x)  # (B, L, H)
        c = F.silu(self.sigma_map(sigma))  # (B, C)
        cos, sin = self.rotary_emb.cos_sin(x.shape[1])
        for block in self.blocks:
            h = block(h, c, cos, sin)
        return self.output_layer(h, c).float()

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Log-scores for every position and state.

        Args:
            x: (B, L) int64 token ids in [0, S).
            sigma: (B,) float total noise sigma_bar(t).

        Returns:
            (B, L, S) float32 log-scores; the entry at each position's current token is exactly 0 (score 1).
            Absorbing with ``scale_by_sigma``: logits - log(e^sigma_bar - 1) - log N.
        """
        out = self.logits(x, sigma)  # (B, L, S)
        if self.config.scale_by_sigma:
            shift = log_expm1(sigma.float()) + math.log(self.config.num_tokens)
            out = out - shift[:, None, None]
        # in place when no graph is recorded: saves a copy of the (B, L, S) output at inference
        return out.scatter(-1, x[..., None], 0.0) if torch.is_grad_enabled() else out.scatter_(-1, x[..., None], 0.0)


__all__ = ["DiTConfig", "ScoreDiT", "GRAPH_NAMES"]
