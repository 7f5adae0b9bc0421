"""Validation of a learned sampler against its base on the *output* distribution (never silently worse).

Three figures, each for base and learned samples at the same NFE (drawn from the same random streams, which
lowers the noise of their differences), read against held-out teacher outputs - teacher trajectories that
training never saw:

- ``nll``: the frozen model's own upper bound on -log p(x) per token (its denoising score-entropy bound,
  estimated at ``num_times`` stratified noise levels shared by all sample sets). Forbidden or implausible
  tokens cost a lot here, at any vocabulary size. Lower is better - but a sharpened (low-temperature) sampler
  also lowers it, hence the two checks below.
- ``mmd2``: a two-sample distance to the held-out teacher outputs: the unbiased squared MMD with a linear kernel
  on each sequence's normalised unigram and bigram counts (the squared L2 distance between the pooled n-gram
  distributions, estimated with U-statistics, so it does not reward concentrating on frequent n-grams).
- ``entropy``: the mean per-sample unigram entropy (diversity), beside the teacher's.

The learned sampler counts as better only if its ``nll`` and its ``mmd2`` are both lower than the base's and its
entropy does not fall below min(base, teacher) by more than 1% of the teacher's.

Shapes: samples (n, L) int64.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import Tensor

from .statistics import mean_unigram_entropy as unigram_entropy  # noqa: F401  (mean over samples)
from .statistics import mmd2, model_nll, nll_z  # noqa: F401


ENTROPY_TOL = 0.01  # relative to the teacher's unigram entropy


@dataclass
class Validation:
    """What ``lsdd distill`` prints and records. nll: the model's bound per token; mmd2: to the held-out
    teacher outputs; entropy: mean per-sample unigram entropy. ``learned_better`` is the verdict."""

    num_reference: int
    num_samples: int
    nfe: int
    nll_base: float
    nll_learned: float
    nll_teacher: float
    mmd2_base: float
    mmd2_learned: float
    entropy_base: float
    entropy_learned: float
    entropy_teacher: float
    learned_better: bool
    reasons: list[str]
    nll_z: float = math.nan  # (learned - base) NLL difference in standard errors

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in d.items()}

    def summary(self) -> str:
        verdict = "better" if self.learned_better else f"NOT better ({'; '.join(self.reasons)})"
        return (f"validation at {self.nfe} NFE, {self.num_samples} samples each, against {self.num_reference} "
                f"held-out teacher outputs:\n"
                f"  model NLL bound per token  base {self.nll_base:.4f}  learned {self.nll_learned:.4f}  "
                f"teacher {self.nll_teacher:.4f}  (difference {self.nll_z:+.1f} standard errors)\n"
                f"  n-gram MMD^2 x1e3          base {1e3 * self.mmd2_base:.4f}  learned {1e3 * self.mmd2_learned:.4f}\n"
                f"  unigram entropy (nats)     base {self.entropy_base:.4f}  learned {self.entropy_learned:.4f}  "
                f"teacher {self.entropy_teacher:.4f}\n"
                f"  the learned sampler is {verdict} than its base")


def compare(base: Tensor, learned: Tensor, reference: Tensor, num_states: int, nfe: int,
            nll: tuple[float, float, float] = (math.nan, math.nan, math.nan), nll_z: float = math.nan) -> Validation:
    """The verdict from samples (n, L) of base and learned sampler, the held-out teacher outputs ``reference``
    (m, L), and their model NLLs ``(base, learned, teacher)`` (NaN: not computed, not used)."""
    d_base, d_learned = mmd2(base, reference, num_states), mmd2(learned, reference, num_states)
    h_base, h_learned, h_teacher = unigram_entropy(base), unigram_entropy(learned), unigram_entropy(reference)
    reasons = []
    if not math.isnan(nll[0]) and not nll[1] < nll[0]:
        reasons.append(f"model NLL {nll[1]:.4f} >= base {nll[0]:.4f}")
    if not d_learned < d_base:
        reasons.append(f"MMD^2 {1e3 * d_learned:.4f} >= base {1e3 * d_base:.4f} (x1e3)")
    floor = min(h_base, h_teacher) - ENTROPY_TOL * h_teacher
    if h_learned < floor:
        reasons.append(f"entropy {h_learned:.4f} < {floor:.4f} (sharpened)")
    return Validation(reference.shape[0], base.shape[0], nfe, *nll, d_base, d_learned, h_base, h_learned, h_teacher,
                      not reasons, reasons, nll_z)


__all__ = ["mmd2", "unigram_entropy", "model_nll", "nll_z", "Validation", "compare", "ENTROPY_TOL"]
