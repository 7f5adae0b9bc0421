"""Countdown metrics (method.md §8; the JYS metric as documented in peers.md §3).

Data tokens are 0..num_values-1; the rule is: after a non-zero token k the next token must be k - 1, after 0
anything may follow. Any token outside [0, num_values) (a leftover mask id) is invalid.

Quality:
- ``violation_rate`` (strict, the default): per sample, the fraction of its L - 1 transitions
  (x[i-1] -> x[i]) that break the rule, averaged over samples. A transition that touches an out-of-range token
  is a violation, so a leftover mask in the middle costs two transitions.
- ``any_violation``: the fraction of samples with at least one violation (or out-of-range token).
- ``jys_error``: the error JYS/LSD report, kept for comparability. It resets its state after each checked pair
  and so misses every other violation: [5, 4, 2, 1, 0, 0] scores 0, uniform-random sequences about 0.475
  against about 0.94 strict. Deviation for out-of-range tokens only: they count as errors at their position.
- ``valid_fraction`` and ``nll_valid``: the share of rule-abiding samples and their mean exact NLL per token
  under the generator (``countdown_log_prob``); NaN when none is valid.

Diversity: the run start values (the first token and every token right after a 0) should be uniform over
0..num_values-1. ``start_tv`` is the total-variation distance of their pooled empirical distribution to
uniform, ``start_entropy`` its entropy in nats (at most log num_values); out-of-range starts are left out.
``start_tv`` is biased upward for finite samples, so ``start_tv_ref`` gives its expectation for the same number
of truly uniform starts: read ``start_tv`` against it, not against 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..data.countdown import DEFAULT_VALUES, countdown_log_prob
from ..errors import UserError
from .base import Demo, MetricSpec, Task, bundled_name, check_samples, entropy, expected_tv_to_uniform, tv_to_uniform


def out_of_range(x: Tensor, num_values: int = DEFAULT_VALUES) -> Tensor:
    """(n, L) bool: tokens that are not data values (a leftover mask id, or negative)."""
    return (x < 0) | (x >= num_values)


def strict_violations(x: Tensor, num_values: int = DEFAULT_VALUES) -> Tensor:
    """Which transitions break the countdown rule.

    Args:
        x: (n, L) int64 samples.
        num_values: data values are 0..num_values-1.

    Returns:
        (n, L - 1) bool; entry i is True if x[:, i] -> x[:, i + 1] has a non-zero x[:, i] not followed by
        x[:, i] - 1, or if either token is out of range.
    """
    bad = out_of_range(x, num_values)
    prev, cur = x[:, :-1], x[:, 1:]
    rule_broken = (prev != 0) & (cur != prev - 1)
    return rule_broken | bad[:, :-1] | bad[:, 1:]


def jys_error(x: Tensor, num_values: int = DEFAULT_VALUES) -> Tensor:
    """Per-sample error rate as JYS computes it (sony/jys ``check_err``; peers.md §3).

    Walk the sequence keeping ``prev`` = x[0]; the first token is correct. If prev == 0 the current token is
    correct and becomes prev; otherwise it is correct iff it equals prev - 1, and prev is then reset to 0.
    Error = 1 - correct / L. Only addition: an out-of-range token is never correct, and a pair starting from
    an out-of-range prev never matches (for in-range data this is exactly JYS).

    Args:
        x: (n, L) int64 samples.
        num_values: data values are 0..num_values-1.

    Returns:
        (n,) float64 error rates in [0, 1].
    """
    bad = out_of_range(x, num_values)
    correct = (~bad[:, 0]).long()
    prev, prev_bad = x[:, 0], bad[:, 0]
    zero = torch.zeros_like(prev)
    for i in range(1, x.shape[1]):  # sequential by definition; vectorised over samples
        cur, cur_bad = x[:, i], bad[:, i]
        free = prev == 0
        ok = ~cur_bad & (free | (~prev_bad & (cur == prev - 1)))
        correct += ok.long()
        prev = torch.where(free, cur, zero)
        prev_bad = free & cur_bad
    return 1.0 - correct.double() / x.shape[1]


def run_starts(x: Tensor) -> Tensor:
    """(n, L) bool: run start positions, i.e. position 0 and every position right after a 0."""
    after_zero = torch.zeros_like(x, dtype=torch.bool)
    after_zero[:, 1:] = x[:, :-1] == 0
    after_zero[:, 0] = True
    return after_zero


def start_counts(x: Tensor, num_values: int = DEFAULT_VALUES) -> Tensor:
    """(num_values,) int64 histogram of the in-range run start values pooled over all samples."""
    starts = x[run_starts(x) & ~out_of_range(x, num_values)]
    return torch.bincount(starts, minlength=num_values)


@dataclass
class CountdownTask(Task):
    """The countdown task (method.md §8): strict and JYS error rates, exact NLL, run-start diversity.

    Pairs for the bench table (quality, diversity), headline first:
    - (any_violation, start_tv): the share of samples with any error against start-value uniformity;
    - (violation_rate, start_tv): the strict per-transition error;
    - (jys_error, start_entropy): the published JYS/LSD metric, for comparison with their tables;
    - (nll_valid, start_entropy): how likely the valid samples are under the generator. A sampler that emits
      few, long runs gets a low NLL and a peaked start distribution, so this pair shows that trade directly.

    Data: fresh sequences every training step (``lsdd.data.countdown``); a model's samples are scored with
    its own vocabulary as ``num_values``. Samples decode to their token ids.
    """

    num_values: int = DEFAULT_VALUES

    name: ClassVar[str] = "countdown"
    metrics: ClassVar[list[MetricSpec]] = [
        MetricSpec("violation_rate", "fraction of transitions breaking the rule (strict)", False, "quality"),
        MetricSpec("any_violation", "fraction of samples with any violation", False, "quality"),
        MetricSpec("jys_error", "JYS/LSD error rate (skips every other check; for comparison)", False, "quality"),
        MetricSpec("valid_fraction", "fraction of samples with no violation (1 - any_violation)", True, "quality"),
        MetricSpec("nll_valid", "exact data NLL per token of valid samples (nats)", False, "quality"),
        MetricSpec("start_tv", "TV distance of run start values to uniform", False, "diversity"),
        MetricSpec("start_tv_ref", "expected start_tv of as many truly uniform starts", False, "reference"),
        MetricSpec("start_entropy", "entropy of run start values (nats; max log num_values)", True, "diversity"),
    ]
    pairs: ClassVar[list[tuple[str, str]]] = [
        ("any_violation", "start_tv"),
        ("violation_rate", "start_tv"),
        ("jys_error", "start_entropy"),
        ("nll_valid", "start_entropy"),
    ]
    default_model: ClassVar[str] = "countdown"
    # the quick demo (README command 1: at most 5 minutes with the install on 2 CPU cores) and the long one
    demo: ClassVar[Demo] = Demo(nfe=(8,), teacher_nfe=256, num_samples=256, bases=("euler",),
                                methods=("spread", "lsd"),
                                full={"nfe": (8, 16), "teacher_nfe": 512, "bases": ("euler", "tweedie"),
                                      "methods": ("spread", "lsd", "lsd+")})
    data_options: ClassVar[tuple[str, ...]] = ("length", "num_values")
    generates_data: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not isinstance(self.num_values, int) or self.num_values < 1:
            raise UserError(f"num_values must be a positive integer, got {self.num_values!r}")

    @classmethod
    def matches(cls, model) -> bool:
        return bundled_name(model) == cls.default_model

    @classmethod
    def from_model(cls, model, **options: Any) -> "CountdownTask":
        """The task with the model's vocabulary as ``num_values`` unless ``options`` set it."""
        return cls(**{"num_values": model.graph.num_tokens, **options})

    @classmethod
    def data(cls, length: int = 64, num_values: int = DEFAULT_VALUES):
        """Fresh countdown sequences of ``length`` with values 0..num_values-1 every training step."""
        from ..train import CountdownSource

        if length < 1 or num_values < 1:
            raise UserError(f"--length and --num-values must be >= 1, got {length} and {num_values}")
        return CountdownSource(length, num_values)

    def compute(self, samples: Tensor) -> dict[str, float]:
        """Evaluate countdown samples.

        Args:
            samples: (n, L) integer token ids; values outside [0, num_values) count as violations.

        Returns:
            ``{name: value}`` for every entry of ``metrics``, in that order.
        """
        x = check_samples(samples)
        v = self.num_values
        bad = out_of_range(x, v)
        if x.shape[1] > 1:
            trans = strict_violations(x, v)
            rate = trans.double().mean(-1)
            any_viol = trans.any(-1)
        else:  # no transitions: only an out-of-range token can be wrong
            rate = bad[:, 0].double()
            any_viol = bad[:, 0]
        log_p = countdown_log_prob(x, v)  # (n,), -inf for invalid samples
        valid = torch.isfinite(log_p)
        nll = (-log_p[valid] / x.shape[1]).mean() if valid.any() else torch.tensor(float("nan"))
        counts = start_counts(x, v)
        return {
            "violation_rate": float(rate.mean()),
            "any_violation": float(any_viol.double().mean()),
            "jys_error": float(jys_error(x, v).mean()),
            "valid_fraction": float(valid.double().mean()),
            "nll_valid": float(nll),
            "start_tv": tv_to_uniform(counts),
            "start_tv_ref": expected_tv_to_uniform(int(counts.sum()), v),
            "start_entropy": entropy(counts),
        }
