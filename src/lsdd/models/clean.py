"""Networks that predict clean tokens (RADD, MDLM), turned into concrete scores of the absorbing graph.

Both output log p_theta(x_0^i = y | x_t) over the N real tokens at every masked position. For the absorbing
graph with total noise sigma_bar, a masked position's concrete score is (Ou et al. 2024, "Your Absorbing Discrete
Diffusion Secretly Models the Conditional Distributions of Clean Data", Thm. 1; Sahoo et al. 2024 for MDLM):

    p_t(x with x^i <- y) / p_t(x) = e^{-sigma_bar} / (1 - e^{-sigma_bar}) p_theta(y | x_t)
                                  = p_theta(y) / (e^{sigma_bar} - 1)

so log-score = log p_theta(y) - log(e^{sigma_bar} - 1), and the entry at the current token (the mask) is 1.
Unmasked positions cannot move in the absorbing reverse process (the graph's rates into them are 0); they get
the same formula, which nothing reads, and 1 at their own token.

Key names follow the original code: RADD's ``model/transformer.py`` (``vocab_embed.embedding``,
``rotary_emb.inv_freq``, ``blocks.N.{norm1,norm2}.{weight,bias}``, ``blocks.N.attn_qkv``, ``blocks.N.attn_out``,
``blocks.N.mlp.{0,2}``, ``output_layer.{norm_final,linear}``) and MDLM's Hugging Face ``modeling_mdlm.py``
(SEDD's DiT under ``backbone.``). Written from those descriptions, attention through SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graphs import log_expm1
from .dit import DiTConfig, Rotary, ScoreDiT, TokenEmbedding, apply_rotary


def clean_to_log_score(log_p: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
    """Clean-token log-probabilities -> absorbing-graph log-scores.

    Args:
        log_p: (B, L, N) log p_theta(x_0 = y | x_t) over the real tokens.
        x: (B, L) current tokens (mask id N).
        sigma: (B,) total noise sigma_bar.

    Returns:
        (B, L, N + 1) float32: log p - log(e^sigma_bar - 1) on real columns, 0 on the mask column and at x.
    """
    real = log_p.float() - log_expm1(sigma.float())[:, None, None]
    out = torch.cat([real, real.new_zeros(*real.shape[:-1], 1)], dim=-1)
    return out.scatter(-1, x[..., None], 0.0) if torch.is_grad_enabled() else out.scatter_(-1, x[..., None], 0.0)


class BiasLayerNorm(nn.Module):
    """LayerNorm with weight and bias, computed in float32 (RADD's ``LayerNormWot``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.layer_norm(x.float(), [self.dim]) * self.weight.float() + self.bias.float()


class RADDBlock(nn.Module):
    """Pre-norm transformer block without time conditioning: x + attn(norm1 x), then + mlp(norm2 x)."""

    def __init__(self, hidden_size: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = BiasLayerNorm(hidden_size)
        self.attn_qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.attn_out = nn.Linear(hidden_size, hidden_size, bias=False)
        self.norm2 = BiasLayerNorm(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * hidden_size, hidden_size))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x (B, L, H), cos/sin (L, D) -> (B, L, H)."""
        batch, length, hidden = x.shape
        qkv = self.attn_qkv(self.norm1(x))
        q, k, v = qkv.view(batch, length, 3, self.n_heads, hidden // self.n_heads).unbind(2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.attn_out(attn.transpose(1, 2).reshape(batch, length, hidden))
        return x + self.mlp(self.norm2(x))


class RADDOutput(nn.Module):
    def __init__(self, hidden_size: int, num_states: int):
        super().__init__()
        self.norm_final = BiasLayerNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, num_states)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm_final(x))


class RADDNet(nn.Module):
    """RADD's time-independent network: (B, L) tokens -> log p_theta(x_0 | x_t) on the N real tokens; ``forward``
    adds the noise factor of ``clean_to_log_score`` (the network itself never sees sigma_bar)."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.vocab_embed = TokenEmbedding(config.num_states, h)
        self.rotary_emb = Rotary(h // config.n_heads)
        self.blocks = nn.ModuleList(RADDBlock(h, config.n_heads) for _ in range(config.n_blocks))
        self.output_layer = RADDOutput(h, config.num_states)

    def clean_log_probs(self, x: Tensor, sigma: Tensor) -> Tensor:
        """(B, L) -> (B, L, N) float32: log-softmax of the output over the real-token columns (sigma unused)."""
        h = self.vocab_embed(x)
        cos, sin = self.rotary_emb.cos_sin(x.shape[1])
        for block in self.blocks:
            h = block(h, cos, sin)
        return torch.log_softmax(self.output_layer(h).float()[..., : self.config.num_tokens], dim=-1)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x (B, L), sigma (B,) -> log-scores (B, L, N + 1)."""
        return clean_to_log_score(self.clean_log_probs(x, sigma), x, sigma)


class MDLMNet(nn.Module):
    """MDLM (SUBS parameterisation): SEDD's DiT as ``backbone``; the mask logit is dropped (-inf) and the rest
    normalised. The backbone sees sigma_bar when ``time_conditioning``, else 0 (mdlm-owt: no conditioning)."""

    def __init__(self, config: DiTConfig, time_conditioning: bool):
        super().__init__()
        self.config = config
        self.time_conditioning = bool(time_conditioning)
        self.backbone = ScoreDiT(config)

    def clean_log_probs(self, x: Tensor, sigma: Tensor) -> Tensor:
        """(B, L), (B,) -> (B, L, N) float32 log-probabilities over the real tokens."""
        cond = sigma if self.time_conditioning else torch.zeros_like(sigma)
        logits = self.backbone.logits(x, cond)
        return torch.log_softmax(logits[..., : self.config.num_tokens], dim=-1)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return clean_to_log_score(self.clean_log_probs(x, sigma), x, sigma)


__all__ = ["clean_to_log_score", "RADDNet", "MDLMNet"]
