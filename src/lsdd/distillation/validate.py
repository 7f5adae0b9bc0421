"""Validation of a learned sampler against its base on the *output* distribution (never silently worse).

Three figures, each for base and learned samples at the same NFE, read against held-out teacher outputs -
teacher trajectories that training never saw:

- ``nll``: the frozen model's own upper bound on -log p(x) per token (its denoising score-entropy bound,
  estimated at ``num_times`` stratified noise levels shared by all sample sets). Forbidden or implausible
  tokens cost a lot here, at any vocabulary size. Lower is better - but a sharpened (low-temperature) sampler
  also lowers it, hence the two guards below.
- ``mmd2``: a two-sample distance to the held-out teacher outputs: the unbiased squared MMD with a linear kernel
  on each sequence's normalised unigram and bigram counts (the squared L2 distance between the pooled n-gram
  distributions, estimated with U-statistics, so it does not reward concentrating on frequent n-grams).
- ``entropy``: the mean per-sample unigram entropy (diversity), beside the teacher's.

- ``nll@entropy`` (the primary figure when the NLL is computed): the NLL difference read *at matched entropy*.
  Quality is a frontier: a colder sampler has both a lower NLL and a lower entropy, so a learned sampler that
  only moved along the base's temperature frontier has a lower NLL and no better sampler. The base is therefore
  also drawn colder (``sampling.tempered_score``, the same random streams), at the value temperature where its
  entropy meets the learned sampler's (``distill.validate_learned``: located from a probe at ``PROBE_TEMPERATURE``,
  linearly in T), and s = dNLL/dH is the slope of the chord from the base to that point (clamped at 0: a frontier
  that would reward sharpening is read as flat). The figure is (NLL_learned - NLL_base) - s min(H_learned -
  H_base, 0): a learned sampler less diverse than its base is compared with the base moved along its frontier to
  the same entropy (an interpolation when the colder point reaches it), so a learned temperature scores about 0
  and is rejected. The chord, not the local slope: the frontier is curved (text-uniform at 8 NFE: dNLL/dH 7.2
  between T = 1.03 and 1, 1.8 between 1 and 0.97, 2.6 between 0.97 and 0.94), and the symmetric slope of stop 31
  (T = 0.97 and 1.03) credited the base with the steep warm side. A more diverse learned sampler gets no credit
  for its extra entropy (the plain NLL difference: an extrapolation over a large entropy gain could be far off -
  it would have credited the LSD quick-start sampler on countdown, +0.14 nats more diverse, with 2.2 nats per
  token against an NLL of 0.35).

Base and learned samples are drawn from the same random streams (sample i of each from the same generator, and
their NLL bounds from the same noise levels and masks): common random numbers, so each figure's difference
learned - base gets a paired bootstrap interval (``lsdd.distillation.bootstrap``: ``RESAMPLES`` = 1000 joint
resamples of the pairs and of the reference, seeded).

**Decision rule** at ``level`` (default 0.95; each interval two-sided with equal tails). The learned sampler is
accepted only if

1. its primary figure is lower beyond noise: the whole interval of the NLL difference at matched entropy
   (learned - base) lies below 0 (of the plain NLL difference when no frontier was drawn; of the MMD^2 difference
   when the NLL is not computed);
2. its MMD^2 to the held-out teacher outputs is not higher beyond noise: the interval of its difference does not
   lie wholly above 0;
3. it is not sharpened beyond noise: the interval of (learned entropy - min(base, teacher entropy)) does not lie
   wholly below -1% of the teacher's entropy (``ENTROPY_TOL``).

A gain within noise is therefore rejected (the base is written), however favourable its point estimate.

Shapes: samples (n, L) int64; per-sample values (n,) float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .bootstrap import (RESAMPLES, Interval, mmd2_difference_resamples, paired_mean_interval, percentile_interval,
                        resample_counts, resampled_means)
from .statistics import mean_unigram_entropy as unigram_entropy  # noqa: F401  (mean over samples)
from .statistics import mmd2, model_nll
from .statistics import unigram_entropy as per_sample_entropy

ENTROPY_TOL = 0.01  # relative to the teacher's unigram entropy
PROBE_TEMPERATURE = 0.94  # validation: the base's colder draw that locates the temperature matching the learned entropy
MIN_MATCH_TEMPERATURE = 0.5  # ... never colder than this
# the fit's frontier slope (nll@entropy): the chord from the base at T = 1 to the probe, the side validation reads
SLOPE_TEMPERATURES = (PROBE_TEMPERATURE, 1.0)
LEVEL = 0.95  # default level of the intervals the verdict reads


def check_level(level: float) -> None:
    """ValueError unless ``level`` lies strictly between 0 and 1."""
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ValueError(f"the validation level must lie strictly between 0 and 1, got {level!r}")


_NAN = math.nan


@dataclass
class Validation:
    """What ``lsdd distill`` prints and records. nll: the model's bound per token; mmd2: to the held-out
    teacher outputs; entropy: mean per-sample unigram entropy. ``learned_better`` is the verdict, ``reasons``
    why not. ``*_diff``, ``*_low``, ``*_high``: learned - base and its paired bootstrap interval at ``level``
    (entropy: learned - min(base, teacher)); ``primary``: the figure that must be lower beyond noise."""

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
    level: float = LEVEL
    resamples: int = RESAMPLES
    primary: str = "nll"
    nll_diff: float = _NAN
    nll_low: float = _NAN
    nll_high: float = _NAN
    mmd2_diff: float = _NAN
    mmd2_low: float = _NAN
    mmd2_high: float = _NAN
    entropy_diff: float = _NAN
    entropy_low: float = _NAN
    entropy_high: float = _NAN
    slope: float = _NAN  # dNLL/dH of the base's temperature frontier (NaN: no frontier drawn or needed)
    nll_matched_diff: float = _NAN  # learned - base NLL at matched entropy, and its interval
    nll_matched_low: float = _NAN
    nll_matched_high: float = _NAN

    def interval(self, figure: str) -> Interval:
        """The recorded interval of ``figure`` ("nll", "nll_matched", "mmd2" or "entropy")."""
        return Interval(*(getattr(self, f"{figure}_{k}") for k in ("diff", "low", "high")), self.level)

    def to_dict(self) -> dict:
        d = asdict(self)  # 7 significant digits: MMD^2 values are ~1e-5
        return {k: (float(f"{v:.7g}") if isinstance(v, float) and math.isfinite(v) else v) for k, v in d.items()}

    def summary(self) -> str:
        pct = f"{100 * self.level:g}%"
        if self.learned_better:
            primary = {"mmd2": "MMD^2", "nll": "NLL", "nll@entropy": "NLL at matched entropy"}[self.primary]
            verdict = f"better than its base beyond noise ({primary} lower at {pct}; no guard worse beyond noise)"
        else:
            verdict = f"NOT better than its base ({'; '.join(self.reasons)})"
        nll = "" if math.isnan(self.nll_diff) else f"  difference {self.interval('nll')}"
        slope = ("more diverse than the base in every resample: the plain difference" if math.isnan(self.slope)
                 else f"base frontier slope dNLL/dH {self.slope:.3f}")
        matched = "" if math.isnan(self.nll_matched_diff) else (
            f"  at matched entropy ({slope}): difference {self.interval('nll_matched')}\n")
        return (f"validation at {self.nfe} NFE, {self.num_samples} samples each, against {self.num_reference} "
                f"held-out teacher outputs (learned - base: paired bootstrap, {self.resamples} resamples, "
                f"{pct} intervals):\n"
                f"  model NLL bound per token  base {self.nll_base:.4f}  learned {self.nll_learned:.4f}  "
                f"teacher {self.nll_teacher:.4f}{nll}\n{matched}"
                f"  n-gram MMD^2 x1e3          base {1e3 * self.mmd2_base:.4f}  learned {1e3 * self.mmd2_learned:.4f}"
                f"  difference {self.interval('mmd2').scaled(1e3)}\n"
                f"  unigram entropy (nats)     base {self.entropy_base:.4f}  learned {self.entropy_learned:.4f}  "
                f"teacher {self.entropy_teacher:.4f}  learned - min(base, teacher) {self.interval('entropy')}\n"
                f"  the learned sampler is {verdict}")


def verdict(nll: Interval | None, mmd: Interval, entropy: Interval, entropy_teacher: float,
            matched: bool = False) -> list[str]:
    """The reasons (none: accepted) the decision rule (module docstring) gives for these intervals of
    learned - base (entropy: learned - min(base, teacher)); ``nll`` None: not computed, the MMD^2 is primary;
    ``matched``: ``nll`` is the NLL difference at matched entropy."""
    reasons = []
    if nll is not None and not nll.high < 0:
        what = "model NLL difference at matched entropy" if matched else "model NLL difference"
        reasons.append(f"{what} {nll} not below 0 beyond noise")
    if nll is None and not mmd.high < 0:
        reasons.append(f"MMD^2 x1e3 difference {mmd.scaled(1e3)} not below 0 beyond noise")
    if nll is not None and mmd.low > 0:
        reasons.append(f"MMD^2 x1e3 difference {mmd.scaled(1e3)} above 0 beyond noise")
    tol = ENTROPY_TOL * entropy_teacher
    if entropy.high < -tol:
        reasons.append(f"entropy below min(base, teacher) by {-entropy.estimate:.4f} [{-entropy.high:.4f}, "
                       f"{-entropy.low:.4f}], beyond the {tol:.4f} allowed (sharpened)")
    return reasons


def frontier_slope(d_nll: float, d_entropy: float) -> float:
    """The slope dNLL/dH of a temperature frontier from the differences warm - cold of two of its points: 0 when
    the warmer point is not more diverse or the ratio is not finite (nothing to trade), and clamped at 0 (a
    frontier whose NLL falls as entropy rises would reward sharpening)."""
    if not d_entropy > 0:
        return 0.0
    s = d_nll / d_entropy
    return max(s, 0.0) if math.isfinite(s) else 0.0


def matched_nll_interval(nll_base: Tensor, nll_learned: Tensor, h_base: Tensor, h_learned: Tensor,
                         frontier: Sequence[Tensor], counts: Tensor, level: float) -> tuple[float, Interval]:
    """(slope, interval of dNLL - s min(dH, 0), the NLL difference learned - base at matched entropy; module
    docstring) from per-sample (n,) NLLs and
    entropies of base and learned samples and ``frontier`` = (NLL cold, NLL warm, entropy cold, entropy warm),
    each (n,), of two points of the base's temperature frontier (``compare``; row i of all six from the same
    random stream). Every
    resample ``counts`` (B, n) recomputes the slope from its own pairs, so the interval carries its noise."""
    nc, nw, hc, hw = (v.to(torch.float64) for v in frontier)
    dn, dh = nll_learned.to(torch.float64) - nll_base.to(torch.float64), \
        h_learned.to(torch.float64) - h_base.to(torch.float64)
    slope = frontier_slope(float((nw - nc).mean()), float((hw - hc).mean()))
    rn, rh = resampled_means(nw - nc, counts), resampled_means(hw - hc, counts)
    ratio = torch.where(rh > 0, rn / rh.where(rh > 0, torch.ones_like(rh)), torch.zeros_like(rh))
    slopes = torch.nan_to_num(ratio, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)
    estimate = float(dn.mean()) - slope * min(float(dh.mean()), 0.0)
    return slope, percentile_interval(estimate, resampled_means(dn, counts)
                                      - slopes * resampled_means(dh, counts).clamp_max(0.0), level)


def match_temperature(h_base: float, h_probe: float, h_target: float) -> float:
    """The value temperature at which the base's mean entropy reaches ``h_target``, linear in T through (1,
    ``h_base``) and (``PROBE_TEMPERATURE``, ``h_probe``), clamped to [``MIN_MATCH_TEMPERATURE``,
    ``PROBE_TEMPERATURE``] (the probe itself when the entropy did not fall, or the target is within its reach)."""
    drop = h_base - h_probe
    if not drop > 0:
        return PROBE_TEMPERATURE
    t = 1.0 - (h_base - h_target) * (1.0 - PROBE_TEMPERATURE) / drop
    return min(PROBE_TEMPERATURE, max(MIN_MATCH_TEMPERATURE, t))


def compare(base: Tensor, learned: Tensor, reference: Tensor, num_states: int, nfe: int,
            nll: tuple[Tensor, Tensor, Tensor] | None = None, *, level: float = LEVEL, resamples: int = RESAMPLES,
            seed: int = 0, free: Tensor | None = None, ref_free: Tensor | None = None,
            frontier: tuple[Tensor, Tensor, Tensor, Tensor] | Callable[[], tuple] | None = None) -> Validation:
    """The verdict from paired samples (n, L) of base and learned sampler (row i of each from the same random
    stream), the held-out teacher outputs ``reference`` (m, L), and their per-sample model NLLs
    ``(base (n,), learned (n,), teacher (m,))`` (None: not computed, not used). ``frontier``: two points of the
    base's temperature frontier and their NLLs, ``(cold (n, L), warm (n, L), nll cold (n,), nll warm (n,))``
    (``validate_learned``: the base drawn colder, and the base itself), row i from the same stream as the pairs:
    the NLL is then read at matched entropy along the line through them (module docstring). It may be a function
    returning them, called only when needed: when the learned samples are more diverse than the base's in every resample, min(dH, 0) = 0 and the figure is the plain NLL
    difference (``slope`` NaN; the frontier's draws are saved). The bootstrap draws from a
    generator seeded with ``seed``: the same inputs and seed give the same verdict. Conditional samples:
    ``free`` (n, L) bool the generated positions of the pairs (row i of each continues the same prompt),
    ``ref_free`` (m, L) those of the reference; the MMD^2 and the entropy then read the continuations only (the
    NLLs are the caller's: ``statistics.model_nll(free=)``)."""
    check_level(level)
    if base.shape != learned.shape:
        raise ValueError(f"base and learned samples must pair up, got shapes {tuple(base.shape)} and "
                         f"{tuple(learned.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    counts, ref_counts = resample_counts(base.shape[0], resamples, gen), resample_counts(reference.shape[0],
                                                                                          resamples, gen)
    d_base = mmd2(base, reference, num_states, free, ref_free)
    d_learned = mmd2(learned, reference, num_states, free, ref_free)
    mmd = percentile_interval(d_learned - d_base, mmd2_difference_resamples(base, learned, reference, num_states,
                                                                            counts, ref_counts, free, ref_free), level)
    h_b, h_l, h_t = (per_sample_entropy(x.long(), num_states, f)
                     for x, f in ((base, free), (learned, free), (reference, ref_free)))
    h_base, h_learned, h_teacher = (float(h.mean()) for h in (h_b, h_l, h_t))
    floor = torch.minimum(resampled_means(h_b, counts), resampled_means(h_t, ref_counts))
    entropy = percentile_interval(h_learned - min(h_base, h_teacher), resampled_means(h_l, counts) - floor, level)
    nll_iv = None if nll is None else paired_mean_interval(nll[0], nll[1], counts, level)
    means = (_NAN,) * 3 if nll is None else tuple(float(v.to(torch.float64).mean()) for v in nll)
    matched_iv, slope = None, _NAN
    more_diverse = nll is not None and float((h_l - h_b).mean()) >= 0 and bool(
        (resampled_means(h_l - h_b, counts) >= 0).all())
    if nll is not None and frontier is not None and more_diverse:
        matched_iv = nll_iv
    elif nll is not None and frontier is not None:
        cold, warm, n_cold, n_warm = frontier() if callable(frontier) else frontier
        if cold.shape != base.shape or warm.shape != base.shape:
            raise ValueError(f"the frontier's samples must pair up with the base's {tuple(base.shape)}, got "
                             f"{tuple(cold.shape)} and {tuple(warm.shape)}")
        h_c, h_w = (per_sample_entropy(x.long(), num_states, free) for x in (cold, warm))
        slope, matched_iv = matched_nll_interval(nll[0], nll[1], h_b, h_l, (n_cold, n_warm, h_c, h_w), counts, level)
    primary = matched_iv if matched_iv is not None else nll_iv
    reasons = verdict(primary, mmd, entropy, h_teacher, matched=matched_iv is not None)
    figures = {"primary": "mmd2" if nll is None else "nll" if matched_iv is None else "nll@entropy", "slope": slope}
    for name, iv in (("nll", nll_iv), ("nll_matched", matched_iv), ("mmd2", mmd), ("entropy", entropy)):
        if iv is not None:
            figures.update({f"{name}_diff": iv.estimate, f"{name}_low": iv.low, f"{name}_high": iv.high})
    return Validation(reference.shape[0], base.shape[0], nfe, *means, d_base, d_learned, h_base, h_learned, h_teacher,
                      not reasons, reasons, level, resamples, **figures)


__all__ = ["mmd2", "unigram_entropy", "model_nll", "Validation", "compare", "verdict", "check_level", "ENTROPY_TOL",
           "LEVEL", "RESAMPLES", "SLOPE_TEMPERATURES", "PROBE_TEMPERATURE", "MIN_MATCH_TEMPERATURE", "frontier_slope",
           "matched_nll_interval", "match_temperature"]
