"""Tasks: each benchmark task owns its metrics, its data, how its samples read, and its defaults.

One module per task (``countdown``, ``markov``, ``text``, ``digits``, and the task-free ``tokens``), each a
``Task`` subclass (``base.py`` describes the interface). ``TASKS`` maps a task name to its class;
``task_class`` and ``get_task`` look one up or raise ``UserError`` listing the valid names; ``default_task``
names the task of a model's samples; ``evaluate`` scores samples on a task.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import UserError
from .base import Demo, MetricSpec, Task, check_samples, entropy, expected_tv_to_uniform, tv_to_uniform
from .countdown import CountdownTask
from .digits import DigitsTask
from .markov import MarkovTask
from .text import TextTask
from .tokens import TokensTask

# task name -> class; ``default_task`` asks them in this order
TASKS: dict[str, type[Task]] = {"countdown": CountdownTask, "markov": MarkovTask, "tokens": TokensTask,
                                "text": TextTask, "digits": DigitsTask}


def task_class(name: str) -> type[Task]:
    """The class of the task called ``name``; ``UserError`` naming the valid tasks if unknown."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def get_task(name: str, **options: Any) -> Task:
    """Construct the task called ``name`` with ``options``; ``UserError`` naming the valid tasks if unknown."""
    return task_class(name)(**options)


def default_task(model) -> str:
    """The task that scores ``model``'s samples when none is named: the first in ``TASKS`` that matches it
    (a bundled model's own, text for models with a tokenizer or GPT-2's vocabulary, digits for models trained
    on the digits), else the task-free ``tokens``."""
    return next((name for name, cls in TASKS.items() if cls.matches(model)), "tokens")


def evaluate(samples, model=None, task: str | Task | None = None, *, fixed=None, **options: Any) -> dict[str, float]:
    """Score samples on a task: the numbers ``lsdd eval`` prints for them.

    Args:
        samples: (n, L) integer token ids, a torch tensor or a numpy array.
        model: the model that drew them (a ``lsdd.models.load_model`` value); it picks the default task and
            gives the task what it needs (the text task: its tokenizer).
        task: a task name, a ``Task`` (then ``model`` and ``options`` are not used), or None: the model's
            own task (``default_task``); without a model, None is an error.
        fixed: (n, L) bool, the given positions of conditional samples (``lsdd.sample(..., prompt=...)``:
            ``Samples.fixed``); the text task then scores the generated tokens given their prompt. Text only.
        **options: the task's options (e.g. ``num_values``; text: ``evaluator``, ``reference``).

    Returns:
        ``{metric name: value}`` in the order of the task's ``metrics``.
    """
    x = torch.from_numpy(np.asarray(samples)) if isinstance(samples, np.ndarray) else samples
    x = check_samples(x)
    if not isinstance(task, Task):
        if task is None:
            if model is None:
                raise UserError(f"evaluate needs a task or a model; tasks: {', '.join(sorted(TASKS))}")
            task = default_task(model)
        task = task_class(task).build(model, **options)
    if fixed is None:
        return task.compute(x)
    if not task.conditional:
        raise UserError(f"given positions (fixed=) are scored by the text task, not by {task.name}")
    return task.compute(x, fixed=torch.as_tensor(np.asarray(fixed), dtype=torch.bool).expand(x.shape))


__all__ = [
    "Demo",
    "MetricSpec",
    "Task",
    "TASKS",
    "task_class",
    "get_task",
    "default_task",
    "evaluate",
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
