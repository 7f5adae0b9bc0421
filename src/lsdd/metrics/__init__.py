"""Task metrics: one ``Task`` per benchmark task, each a list of named metrics and a ``compute``.

Every task follows the same small structure so that ``lsdd eval`` and the bench table can treat them alike:

- ``Task.metrics`` describes each number ``compute`` returns (``MetricSpec``: direction and kind);
- ``Task.pairs`` pairs each quality metric with its diversity partner; the bench table shows these side by
  side, because a sampler can buy quality with diversity (low temperature) and only the pair shows it;
- ``Task.compute(samples)`` maps a (n, L) int64 tensor of samples to ``{metric name: float}``, in the order
  of ``Task.metrics``.

``TASKS`` maps a task name to its constructor; ``get_task(name, **options)`` builds one or raises
``UserError`` listing the valid names. Small helpers for distributions over categories (entropy, total
variation to uniform and its finite-sample reference) live here because several tasks use them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal

import torch
from torch import Tensor

from ..errors import UserError

MetricKind = Literal["quality", "diversity", "reference"]


@dataclass(frozen=True)
class MetricSpec:
    """What one metric means.

    Attributes:
        name: key in the dict ``Task.compute`` returns.
        description: one line for tables and ``--help``.
        higher_is_better: direction; meaningless (False) for ``kind == "reference"``.
        kind: ``"quality"`` (are the samples right?), ``"diversity"`` (do they cover the data?) or
            ``"reference"`` (a number to read another one against, e.g. its value for ideal samples).
    """

    name: str
    description: str
    higher_is_better: bool
    kind: MetricKind

    @property
    def direction(self) -> str:
        """``"higher is better"``, ``"lower is better"`` or ``"reference"``."""
        if self.kind == "reference":
            return "reference"
        return "higher is better" if self.higher_is_better else "lower is better"


class Task(ABC):
    """A benchmark task: its metrics, the quality/diversity pairs, and how to compute them from samples."""

    name: ClassVar[str]
    metrics: ClassVar[list[MetricSpec]]
    pairs: ClassVar[list[tuple[str, str]]]  # (quality metric, diversity metric); the first is the headline

    @abstractmethod
    def compute(self, samples: Tensor) -> dict[str, float]:
        """Evaluate samples.

        Args:
            samples: (n, L) int64 token ids, n >= 1, L >= 1.

        Returns:
            One float per entry of ``metrics``, keyed by name, in that order (NaN where undefined).
        """

    def spec(self, name: str) -> MetricSpec:
        """The ``MetricSpec`` called ``name``; ``KeyError`` if this task has none."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"task {self.name!r} has no metric {name!r}; it has {[m.name for m in self.metrics]}")


def check_samples(samples: Tensor) -> Tensor:
    """Return ``samples`` as int64 after checking it is a non-empty (n, L) integer tensor; else ``UserError``."""
    if not isinstance(samples, Tensor):
        raise UserError(f"samples must be a torch.Tensor, got {type(samples).__name__}")
    if samples.ndim != 2:
        raise UserError(f"samples must have shape (num_samples, length), got shape {tuple(samples.shape)}")
    if samples.dtype.is_floating_point or samples.dtype.is_complex or samples.dtype == torch.bool:
        raise UserError(f"samples must hold integer token ids, got dtype {samples.dtype}")
    if samples.shape[0] < 1 or samples.shape[1] < 1:
        raise UserError(f"samples must be non-empty, got shape {tuple(samples.shape)}")
    return samples.long()


def entropy(counts: Tensor) -> float:
    """Entropy in nats of the empirical distribution ``counts / counts.sum()``; NaN if the sum is 0.

    Args:
        counts: (K,) non-negative counts.
    """
    total = counts.sum()
    if total <= 0:
        return float("nan")
    p = counts.double() / total
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def tv_to_uniform(counts: Tensor) -> float:
    """Total-variation distance between ``counts / counts.sum()`` and uniform over the K bins; NaN if empty.

    Args:
        counts: (K,) non-negative counts.
    """
    total = counts.sum()
    if total <= 0:
        return float("nan")
    p = counts.double() / total
    return float(0.5 * (p - 1.0 / counts.numel()).abs().sum())


def expected_tv_to_uniform(num_draws: int, num_categories: int) -> float:
    """E[TV(empirical, uniform)] for ``num_draws`` i.i.d. uniform draws over ``num_categories`` bins.

    The empirical TV is biased upward for finite samples (it is > 0 even for perfect samples), so report this
    next to it. Each bin count is Binomial(N, p = 1/K), whose mean absolute deviation has de Moivre's closed
    form E|X - Np| = 2 m' C(N, m') p^m' (1 - p)^(N - m' + 1) with m' = floor(Np) + 1; then
    E[TV] = (K / 2) * E|X - Np| / N. NaN if ``num_draws`` is 0.
    """
    n, k = int(num_draws), int(num_categories)
    if n <= 0:
        return float("nan")
    if k <= 1:
        return 0.0
    p = 1.0 / k
    m1 = n // k + 1  # floor(N p) + 1, exact in integers; 1 <= m1 <= N for N >= 1, K >= 2
    log_mad = (
        math.log(2 * m1)
        + math.lgamma(n + 1) - math.lgamma(m1 + 1) - math.lgamma(n - m1 + 1)
        + m1 * math.log(p) + (n - m1 + 1) * math.log1p(-p)
    )
    return 0.5 * k * math.exp(log_mad) / n


from .countdown import CountdownTask  # noqa: E402  (countdown.py imports the base classes above)
from .digits import DigitsTask  # noqa: E402
from .markov import MarkovTask  # noqa: E402
from .text import TextTask  # noqa: E402
from .tokens import TokensTask  # noqa: E402

# task name -> constructor; keyword options (e.g. num_values) are passed through by get_task
TASKS: dict[str, Callable[..., Task]] = {"countdown": CountdownTask, "markov": MarkovTask, "tokens": TokensTask,
                                         "text": TextTask, "digits": DigitsTask}


def get_task(name: str, **options: Any) -> Task:
    """Build the task called ``name`` with ``options``; ``UserError`` naming the valid tasks if unknown."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](**options)


__all__ = [
    "MetricSpec",
    "Task",
    "TASKS",
    "get_task",
    "check_samples",
    "entropy",
    "tv_to_uniform",
    "expected_tv_to_uniform",
    "CountdownTask",
    "MarkovTask",
    "TokensTask",
    "TextTask",
    "DigitsTask",
]
