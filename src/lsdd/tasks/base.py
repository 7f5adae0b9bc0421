"""The ``Task`` interface: what a benchmark task owns, and small helpers several tasks share.

A task owns everything that depends on what the tokens mean, so that the commands ask it instead of
branching on its name:

- its metrics: ``metrics`` (``MetricSpec``: direction and kind), ``pairs`` (each quality metric with its
  diversity partner; the bench table shows these side by side, because a sampler can buy quality with
  diversity and only the pair shows it) and ``compute(samples)``;
- its data: ``data(**options)`` builds the training source of ``lsdd train`` (``data_options`` names the
  options it takes) and ``data_from_record`` rebuilds it on ``--resume``;
- ``decode(samples)``: one string per sample (text, ASCII art, or the token ids);
- how it is built for a model: ``matches(model)`` (is this the model's own task?), ``from_model`` (from what
  the model carries, loading nothing heavy) and ``build`` (plus the command line's options);
- the commands' defaults for it: ``default_model`` and ``demo`` (``lsdd demo --task NAME``), and
  ``temperature_control`` (``lsdd bench``'s default).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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


@dataclass(frozen=True)
class Demo:
    """What ``lsdd demo --task NAME`` runs when no flag says otherwise: the bench of the task's bundled model.

    Attributes:
        nfe: student NFEs.
        teacher_nfe: teacher steps.
        num_samples: samples per row (= teacher trajectories).
        bases: the uniform-grid base samplers.
        methods: the samplers beside them (learned ones on the Euler base, and counted/spread movers).
        shows: what the demo shows of the samples beside the table: ``"table"`` (nothing), ``"text"`` (three
            decoded samples per sampler, side by side) or ``"images"`` (a panel of samples per sampler).
        full: what ``lsdd demo --full`` changes (the long demo: more NFEs, a longer teacher, more samplers).
    """

    nfe: tuple[int, ...]
    teacher_nfe: int
    num_samples: int
    bases: tuple[str, ...] = ("euler",)
    methods: tuple[str, ...] = ("lsd+",)
    shows: Literal["table", "text", "images"] = "table"
    full: dict | None = None

    def long(self) -> "Demo":
        """The ``--full`` demo."""
        from dataclasses import replace

        return replace(self, **(self.full or {}), full=None)


class Task(ABC):
    """A benchmark task: its metrics and their pairs, its data, how its samples read, and its defaults."""

    name: ClassVar[str]
    metrics: ClassVar[list[MetricSpec]]
    pairs: ClassVar[list[tuple[str, str]]]  # (quality metric, diversity metric); the first is the headline
    default_model: ClassVar[str | None] = None  # the bundled model of this task
    demo: ClassVar[Demo | None] = None  # None: no ``lsdd demo --task NAME``
    temperature_control: ClassVar[bool] = False  # lsdd bench: add the temperature-matched Euler rows by default
    gap_in_log: ClassVar[bool] = False  # the bench's "gap closed" compares log values of the headline metric
    fast_metrics: ClassVar[dict[str, Callable[[Tensor], float]]] = {}  # metric -> cheaper exact computation
    conditional: ClassVar[bool] = False  # ``compute(samples, fixed=)`` scores continuations given their prompt
    build_options: ClassVar[tuple[str, ...]] = ()  # options of ``build`` beyond the constructor's
    draws_images: ClassVar[bool] = False  # ``plot_grid`` draws the samples
    data_options: ClassVar[tuple[str, ...]] = ()  # keyword options of ``data``
    generates_data: ClassVar[bool] = False  # ``data`` draws fresh sequences (lsdd train --task NAME)
    resume_from_record: ClassVar[bool] = False  # lsdd train --resume rebuilds the run's data even if flags name some
    examples: Sequence[str] = ()  # a few decoded samples of the last ``compute``, for display

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

    # -- building one for a model -------------------------------------------------------------------------
    @classmethod
    def matches(cls, model) -> bool:
        """True when ``model``'s samples are this task's (``default_task`` picks the first task that matches)."""
        return False

    @classmethod
    def from_model(cls, model, **options: Any) -> "Task":
        """The task for ``model``'s samples, from what the model carries (e.g. its vocabulary or tokenizer) and
        the constructor's ``options``; loads nothing heavy."""
        return cls(**options)

    @classmethod
    def build(cls, model=None, **options: Any) -> "Task":
        """The task as the commands build it: ``from_model`` (or the constructor without a model) with
        ``options``, which may also hold the command-line options named in ``build_options``."""
        return cls(**options) if model is None else cls.from_model(model, **options)

    # -- reading samples ----------------------------------------------------------------------------------
    def decode(self, samples: Tensor) -> list[str]:
        """One string per sample; here its token ids separated by spaces.

        Args:
            samples: (n, L) integer token ids.
        """
        x = check_samples(samples)
        return [" ".join(str(int(v)) for v in row) for row in x]

    def record(self) -> dict[str, Any]:
        """What ``lsdd eval --json`` records beside the metrics (e.g. which evaluator scored them)."""
        return {}

    def plot_grid(self, samples: Tensor, path: str | Path, title: str | None = None) -> None:
        """Draw samples as a PNG grid (tasks with ``draws_images``)."""
        raise UserError(f"the {self.name} task draws no images")

    def plot_panels(self, panels: dict[str, Tensor], path: str | Path) -> None:
        """Draw several sets of samples side by side, one panel per heading, as a PNG (``draws_images``)."""
        raise UserError(f"the {self.name} task draws no images")

    # -- data ---------------------------------------------------------------------------------------------
    @classmethod
    def data(cls, **options: Any):
        """The training data of ``lsdd train`` (a ``lsdd.train.DataSource``) built from ``options``."""
        raise UserError(f"the {cls.name} task has no training data of its own")

    @classmethod
    def data_from_record(cls, record: dict[str, Any], directory: Path):
        """Rebuild the training data a run recorded (its source's ``describe()``), for ``lsdd train --resume``;
        ``directory`` is the run's output folder."""
        return cls.data(**{k: record[k] for k in cls.data_options if k in record})


def bundled_name(model) -> str | None:
    """The bundled name ``model`` was loaded by (``load_model("countdown")``), else None."""
    source = getattr(model, "source", "")
    return source.split(":", 1)[1] if source.startswith("bundled:") else None


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


