"""The frozen network's own view of a sample: the per-position hidden states that feed its output layer.

``hidden_states(model)`` returns a function (x (B, L) int64, sigma (B,)) -> (B, L, D) float32: the input of the
network's output projection (the last linear map that produces the (B, L, >= S - 1) logits) during one ordinary
forward pass. It needs no knowledge of the architecture: the projection is found in the call itself, by its
output's shape, so it works for lsdd's DiT, SEDD / RADD / MDLM checkpoints and transformers masked LMs alike. A
model given as a bare score function (``ScoreModel``) has no network to look into: the function is then None.

Used by the ``network`` distribution objective (``lsdd.distillation.objective.NetworkObjective``): the energy
distance between pooled hidden states of two sample sets, a Fréchet-style distance in the model's own feature space
that needs no evaluator network (on digits it tells 8-step samplers from the 1024-step teacher, permutation p 0.01,
where the model's NLL bound cannot, p 0.45; benchmarks/issue24_bench.md).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

HiddenFn = Callable[[Tensor, Tensor], Tensor]


def hidden_states(model) -> HiddenFn | None:
    """(x (B, L), sigma (B,)) -> (B, L, D) float32 hidden states feeding ``model``'s output projection (module
    docstring), or None when ``model`` carries no ``torch.nn.Module`` (a bare score function)."""
    module = getattr(model, "module", None)
    if not isinstance(module, nn.Module):
        return None
    call = getattr(model, "log_score_fn", None) or model.score_fn  # one forward pass, whatever it returns
    min_out = model.graph.num_states - 1  # a masked LM's vocabulary lacks lsdd's mask id, and may be larger

    def hidden(x: Tensor, sigma: Tensor) -> Tensor:
        seen: list[Tensor] = []
        batch, length = x.shape

        def hook(_mod, inputs, output):
            if (isinstance(output, Tensor) and output.ndim == 3 and output.shape[:2] == (batch, length)
                    and output.shape[-1] >= min_out and inputs and isinstance(inputs[0], Tensor)
                    and inputs[0].shape[:2] == (batch, length)):
                seen[:] = [inputs[0].detach()]  # keep the last only: earlier layers' inputs would pile up

        handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Linear)]
        try:
            call(x, sigma)
        finally:
            for h in handles:
                h.remove()
        if not seen:
            raise ValueError(f"model {getattr(model, 'source', '?')}: no linear output projection to (B, L, >= "
                             f"{min_out}) logits was called; its hidden states cannot be read")
        return seen[-1].float()

    return hidden


def pooled(h: Tensor, free: Tensor | None = None) -> Tensor:
    """(B, L, D) hidden states -> (B, 2D) float64: their mean and standard deviation over the positions (over the
    generated positions ``free`` (B, L) bool when given; a row without any gets zeros)."""
    h = h.to(torch.float64)
    w = torch.ones(h.shape[:2], dtype=torch.float64, device=h.device) if free is None else \
        free.to(h.device, torch.float64)
    count = w.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1)
    mean = (h * w[..., None]).sum(1) / count
    var = (((h - mean[:, None]) ** 2) * w[..., None]).sum(1) / count
    return torch.cat([mean, var.clamp_min(0).sqrt()], 1)


__all__ = ["hidden_states", "pooled", "HiddenFn"]
