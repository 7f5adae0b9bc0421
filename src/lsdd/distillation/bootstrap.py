"""Paired bootstrap intervals for validation (``lsdd.distillation.validate``): learned - base on common random numbers.

Base and learned samples are drawn from the same random streams, so sample i of one and sample i of the other
form a pair, and the pairs are independent across i. A resample draws n pair indices with replacement (the same
indices for both samplers) and m reference indices with replacement; every figure is recomputed on it. The
interval at ``level`` is the percentile interval of the ``B`` recomputed differences (equal tails,
``(1 - level) / 2`` each). Resamples are drawn from an explicit ``torch.Generator``: the same seed gives the same
interval.

- per-sample figures (the model NLL bound per token, the unigram entropy): the resampled mean is ``w @ v / n``
  with ``w`` (B, n) the resample counts, O(B n) in all;
- the n-gram MMD^2, a set-level statistic: its linear kernel makes every resampled estimate a quadratic form in
  ``w`` over the Gram matrices of the sample sets, O(B n^2) (0.1 s at n = 512, B = 1000; the Gram matrices of
  text samples take seconds at L = 1024 and 50k tokens). Within a set, the resampled U-statistic counts pairs of
  *distinct* original samples, so drawing every sample once gives ``statistics.mmd2`` exactly. The reference's
  own term cancels in learned - base. Near equal laws the difference is a near-degenerate U-statistic, whose
  naive bootstrap is conservative (intervals wider than its sampling spread).

Shapes: samples (n, L) int64; per-sample values (n,) float64; resample counts (B, n) float64.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .statistics import _features

RESAMPLES = 1000  # B: enough for the 2.5% tails of a 95% percentile interval (25 resamples beyond each end)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval ``[low, high]`` at ``level`` (e.g. of learned - base)."""

    estimate: float
    low: float
    high: float
    level: float

    def __str__(self) -> str:
        return f"{self.estimate:+.4f} [{100 * self.level:g}% CI {self.low:+.4f}, {self.high:+.4f}]"

    def scaled(self, factor: float) -> "Interval":
        return Interval(factor * self.estimate, factor * self.low, factor * self.high, self.level)


def resample_counts(n: int, resamples: int, generator: torch.Generator) -> Tensor:
    """How often each of n items is drawn in each of ``resamples`` draws of n with replacement: (B, n) float64."""
    idx = torch.randint(n, (resamples, n), generator=generator)
    return torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(resamples, n,
                                                                                           dtype=torch.float64))


def percentile_interval(estimate: float, resampled: Tensor, level: float) -> Interval:
    """The equal-tailed percentile interval at ``level`` of the resampled statistic (B,) (NaN resamples - an MMD^2
    resample of fewer than 2 distinct samples - left out)."""
    tail = (1.0 - level) / 2.0
    q = torch.nanquantile(resampled.to(torch.float64), torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return Interval(float(estimate), float(q[0]), float(q[1]), level)


def resampled_means(values: Tensor, counts: Tensor) -> Tensor:
    """The mean of per-sample ``values`` (n,) under each resample ``counts`` (B, n): (B,) float64."""
    return counts @ values.to(torch.float64) / values.numel()


def paired_mean_interval(base: Tensor, learned: Tensor, counts: Tensor, level: float) -> Interval:
    """Interval of mean(learned) - mean(base) from paired per-sample values (n,) each."""
    d = learned.to(torch.float64) - base.to(torch.float64)
    return percentile_interval(float(d.mean()), resampled_means(d, counts), level)


def gram(a: Tensor, b: Tensor, num_states: int, free_a: Tensor | None = None, free_b: Tensor | None = None) -> Tensor:
    """Linear-kernel Gram matrix (n, m) float64 of the normalised unigram + bigram frequencies of ``a`` (n, L) and
    ``b`` (m, L) (the kernel of ``statistics.mmd2``; of their generated tokens ``free_a``, ``free_b`` (bool, their
    shapes) when given), through sparse features (any vocabulary size)."""
    (sa, ca, va), (sb, cb, vb) = _features(a, num_states, free_a), _features(b, num_states, free_b)
    _, cell = torch.unique(torch.cat([ca, cb]), return_inverse=True)  # compact cell ids shared by a and b
    size = int(cell.max()) + 1 if cell.numel() else 1
    with warnings.catch_warnings():  # torch's sparse tensors warn that they are in beta; the product is exact
        warnings.simplefilter("ignore", UserWarning)
        fa = torch.sparse_coo_tensor(torch.stack([sa, cell[: ca.numel()]]), va, (a.shape[0], size),
                                     check_invariants=False).coalesce()
        fb = torch.sparse_coo_tensor(torch.stack([sb, cell[ca.numel():]]), vb, (b.shape[0], size),
                                     check_invariants=False).coalesce()
        return torch.sparse.mm(fa, fb.t().coalesce()).to_dense()


def _within(g: Tensor, counts: Tensor, chunk: int = 128) -> Tensor:
    """Resampled U-statistic mean of k over pairs of distinct originals: (w G w - sum w_i^2 G_ii) / (n^2 - sum w_i^2)
    for each resample w (B, n) -> (B,)."""
    diag = g.diagonal()
    out = []
    for w in counts.split(chunk):  # (chunk, n) @ (n, n): bounded memory at large n
        pairs = ((w @ g) * w).sum(1) - (w**2 * diag).sum(1)
        out.append(pairs / (w.shape[1] ** 2 - (w**2).sum(1)))
    return torch.cat(out)


def mmd2_difference_resamples(base: Tensor, learned: Tensor, reference: Tensor, num_states: int, counts: Tensor,
                              ref_counts: Tensor, free: Tensor | None = None,
                              ref_free: Tensor | None = None) -> Tensor:
    """mmd2(learned, reference) - mmd2(base, reference) under each paired resample: ``counts`` (B, n) of the pairs
    (base_i, learned_i), ``ref_counts`` (B, m) of the reference. ``free`` (n, L) bool: the generated positions of
    the pairs (the same for both: sample i of each continues the same prompt), ``ref_free`` (m, L) those of the
    reference (None: every position). Returns (B,) float64."""
    n, m = base.shape[0], reference.shape[0]
    cross = gram(learned, reference, num_states, free, ref_free) - gram(base, reference, num_states, free, ref_free)
    within = _within(gram(learned, learned, num_states, free, free), counts) - \
        _within(gram(base, base, num_states, free, free), counts)
    return within - 2.0 * ((counts @ cross) * ref_counts).sum(1) / (n * m)


__all__ = ["RESAMPLES", "Interval", "resample_counts", "percentile_interval", "resampled_means",
           "paired_mean_interval", "gram", "mmd2_difference_resamples"]
