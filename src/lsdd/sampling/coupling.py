"""Coupled teacher/student trajectories on the absorbing graph (``lsdd distill --coupled``).

Every position i of trajectory j gets its own randomness, drawn once from the trajectory's seed:
an unmasking clock E_ij ~ Exp(1) and a value uniform U_ij ~ U[0, 1). A sampler driven by them keeps a
cumulative hazard H_ij (0 at the start) and, at a step whose law moves a masked token with probability p,
adds h = -log(1 - p) and unmasks the token iff E_ij < H_ij + h, taking the value whose cumulative weight
first exceeds U_ij (inverse CDF of the step's value law).

Each path keeps its exact law: given everything drawn so far, a still-masked token has E_ij >= H_ij, so by the
memorylessness of the exponential E_ij - H_ij is again Exp(1), independent of the other positions, and it
unmasks with probability 1 - e^{-h} = p; U_ij is used once, at the token's only move, and is independent of the
past. So the coupled sampler's output law is the uncoupled one (``tests/test_coupling.py`` checks it against
the exact law of ``lsdd.sampling.exact``). When teacher and student share E and U, a token unmasks early in both
paths or late in both, and takes the same value wherever their value laws agree: the student's rows are
compared with the teacher's at nearly the same contexts.

Shapes: B trajectories, L length.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .draws import derive_seed, inverse_cdf
from .loop import StepInfo


def clock_noise(seed: int, idx: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Clocks E (B, L) ~ Exp(1) and value uniforms U (B, L), float64, for trajectories ``idx`` (B,): each
    trajectory's from its own stream, so a trajectory's noise does not depend on its batch."""
    es, us = [], []
    for j in idx.tolist():
        g = torch.Generator().manual_seed(derive_seed(seed, 7, int(j)))
        es.append(torch.empty(length, dtype=torch.float64).exponential_(1.0, generator=g))
        us.append(torch.rand(length, dtype=torch.float64, generator=g))
    if not es:
        return torch.zeros(0, length, dtype=torch.float64), torch.zeros(0, length, dtype=torch.float64)
    return torch.stack(es), torch.stack(us)


class ClockAdvance:
    """The loop's ``advance``: draws the next state from the step's factorised law with the clocks and uniforms
    (absorbing graph; one value per token, at its only move)."""

    def __init__(self, clocks: Tensor, uniforms: Tensor):
        if clocks.shape != uniforms.shape:
            raise ValueError(f"clocks {tuple(clocks.shape)} and uniforms {tuple(uniforms.shape)} differ in shape")
        self.clocks, self.uniforms = clocks, uniforms
        self.hazard = torch.zeros_like(clocks)

    def __call__(self, info: StepInfo) -> Tensor:
        law = info.law
        x = law.x
        if not hasattr(law, "move"):
            raise ValueError("coupled draws need a one-call step law (euler, tweedie, lsd-c)")
        dev = x.device
        p = law.move.detach().to(torch.float64).cpu()
        h = -torch.log1p(-p.clamp(0.0, 1.0))  # inf where p = 1 (forced last step)
        new = self.hazard + h
        moving = (self.clocks < new) & (p > 0)
        self.hazard = new
        x_next = x.clone()
        if not bool(moving.any()):
            return x_next
        m_dev = moving.to(dev)
        w = law.weights.detach()[m_dev].clone()
        w.scatter_(-1, x[m_dev][:, None], 0.0)
        empty = w.sum(-1) <= 0
        if bool(empty.any()):
            w[empty] = law.fallback.to(w.dtype).expand(int(empty.sum()), -1).scatter(
                -1, x[m_dev][empty][:, None], 0.0)
        x_next[m_dev] = inverse_cdf(w, self.uniforms[moving].to(dev))
        return x_next


__all__ = ["clock_noise", "ClockAdvance"]
