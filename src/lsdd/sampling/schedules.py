"""Time grids for samplers: strictly decreasing tensors from 1 to eps (k-diffusion style functions)."""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_EPS = 1e-5


def uniform_times(n_steps: int, eps: float = DEFAULT_EPS, dtype: torch.dtype = torch.float64) -> Tensor:
    """The uniform grid ``linspace(1, eps, n_steps + 1)``, shape (n_steps + 1,)."""
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"number of steps must be a positive integer, got {n_steps!r}")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
    return torch.linspace(1.0, eps, int(n_steps) + 1, dtype=dtype)


def check_times(times: Tensor) -> None:
    """Raise ValueError unless ``times`` is 1-D, has >= 2 points, starts at 1, is strictly decreasing in (0, 1]."""
    if times.ndim != 1 or times.numel() < 2:
        raise ValueError(f"a time grid must be 1-D with at least 2 points, got shape {tuple(times.shape)}")
    if not torch.isfinite(times).all():
        raise ValueError(f"time grid has non-finite values: {times.tolist()}")
    if abs(float(times[0]) - 1.0) > 1e-9:
        raise ValueError(f"a time grid must start at 1.0, got {float(times[0])!r}")
    diffs = times[1:] - times[:-1]
    if (diffs >= 0).any():
        k = int(torch.nonzero(diffs >= 0)[0])
        raise ValueError(
            f"time grid must be strictly decreasing, but t[{k}]={float(times[k])!r} <= t[{k + 1}]={float(times[k + 1])!r}"
        )
    if float(times[-1]) <= 0.0:
        raise ValueError(f"a time grid must end above 0, got {float(times[-1])!r}")


def refine_times(times: Tensor, factor: int) -> Tensor:
    """Split every interval of ``times`` into ``factor`` equal parts: shape (factor * n + 1,).

    The result contains the original grid at every ``factor``-th point (a teacher grid for a student grid).
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"refinement factor must be a positive integer, got {factor!r}")
    frac = torch.arange(factor, dtype=times.dtype) / factor  # (factor,)
    inner = times[:-1, None] + (times[1:] - times[:-1])[:, None] * frac  # (n, factor)
    return torch.cat([inner.reshape(-1), times[-1:]])
