"""Noise schedules: total noise sigma_bar(t) and its rate sigma(t) = d sigma_bar / dt (method.md §1).

Time runs over [0, 1]: data at t = 0, the limit distribution at t = 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import Tensor


class Noise(Protocol):
    """A noise schedule. Every method maps a tensor of times to a tensor of the same shape."""

    def total(self, t: Tensor) -> Tensor: ...

    def rate(self, t: Tensor) -> Tensor: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LogLinear:
    """SEDD's log-linear schedule: sigma_bar(t) = -log(1 - (1 - eps) t).

    P(masked at t) = 1 - e^{-sigma_bar} = (1 - eps) t, i.e. linear in t.
    """

    eps: float = 1e-3

    def __post_init__(self) -> None:
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"LogLinear eps must lie in (0, 1), got {self.eps!r}")

    def total(self, t: Tensor) -> Tensor:
        """sigma_bar(t); t of any shape, returns the same shape."""
        return -torch.log1p(-(1.0 - self.eps) * t)

    def rate(self, t: Tensor) -> Tensor:
        """sigma(t) = (1 - eps) / (1 - (1 - eps) t)."""
        return (1.0 - self.eps) / (1.0 - (1.0 - self.eps) * t)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "loglinear", **asdict(self)}


@dataclass(frozen=True)
class Geometric:
    """Geometric schedule: sigma_bar(t) = sigma_min^{1-t} sigma_max^t (used with the uniform graph)."""

    sigma_min: float = 1e-4
    sigma_max: float = 20.0

    def __post_init__(self) -> None:
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"Geometric needs 0 < sigma_min < sigma_max, got {self.sigma_min!r}, {self.sigma_max!r}"
            )

    def total(self, t: Tensor) -> Tensor:
        return self.sigma_min ** (1.0 - t) * self.sigma_max**t

    def rate(self, t: Tensor) -> Tensor:
        return self.total(t) * math.log(self.sigma_max / self.sigma_min)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "geometric", **asdict(self)}


NOISES = {"loglinear": LogLinear, "geometric": Geometric}


def noise_from_dict(spec: dict[str, Any]) -> Noise:
    """Build a schedule from ``{"type": name, **params}``; ValueError names a bad type or field."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in NOISES:
        raise ValueError(f"unknown noise type {kind!r}; expected one of {sorted(NOISES)}")
    try:
        return NOISES[kind](**spec)
    except TypeError as e:
        raise ValueError(f"bad parameters for noise {kind!r}: {spec} ({e})") from None
