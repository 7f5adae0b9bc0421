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

import torch
from torch import Tensor


def _features(x: Tensor, num_states: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sparse per-sequence n-gram frequencies: (sequence index, cell id, value) over unigram cells [0, S) and
    bigram cells S + a * S + b; each sequence's unigram and bigram parts sum to 1 each."""
    n, length = x.shape
    seq = torch.arange(n)[:, None]
    uni = x
    cells = [(seq.expand(n, length), uni, torch.full((n, length), 1.0 / length, dtype=torch.float64))]
    if length > 1:
        bi = num_states + x[:, :-1] * num_states + x[:, 1:]
        cells.append((seq.expand(n, length - 1), bi, torch.full((n, length - 1), 1.0 / (length - 1),
                                                                 dtype=torch.float64)))
    return tuple(torch.cat([c[i].reshape(-1) for c in cells]) for i in range(3))  # type: ignore[return-value]


def _mean_embedding(x: Tensor, num_states: int) -> tuple[Tensor, Tensor, float]:
    """(sorted cell ids, pooled n-gram frequencies summed over sequences, sum over sequences of |phi(x_i)|^2)."""
    seq, cell, val = _features(x, num_states)
    pairs, inverse = torch.unique(torch.stack([seq, cell]), dim=1, return_inverse=True)
    per = torch.zeros(pairs.shape[1], dtype=torch.float64).index_add_(0, inverse, val)  # phi_i(cell)
    cells, inv2 = torch.unique(pairs[1], return_inverse=True)  # sorted
    pooled = torch.zeros(cells.numel(), dtype=torch.float64).index_add_(0, inv2, per)
    return cells, pooled, float((per**2).sum())


def mmd2(a: Tensor, b: Tensor, num_states: int) -> float:
    """Unbiased MMD^2 between the sample sets ``a`` (n, L) and ``b`` (m, L) (n, m >= 2), linear kernel on
    normalised unigram + bigram frequencies. Its expectation is 0 when both come from the same law."""
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs at least 2 samples on each side, got {n} and {m}")
    (ca, pa, sa), (cb, pb, sb) = _mean_embedding(a, num_states), _mean_embedding(b, num_states)
    aa = (float((pa**2).sum()) - sa) / (n * (n - 1))
    bb = (float((pb**2).sum()) - sb) / (m * (m - 1))
    pos = torch.searchsorted(cb, ca).clamp_max(cb.numel() - 1)
    shared = cb[pos] == ca
    ab = float((pa[shared] * pb[pos[shared]]).sum()) / (n * m)
    return aa + bb - 2.0 * ab


def unigram_entropy(x: Tensor) -> float:
    """Mean over samples of the entropy (nats) of each sample's own token histogram."""
    from .objective import unigram_entropy as per_sample

    return float(per_sample(x.long()).mean())


def model_nll(score_fn, graph, noise, x: Tensor, *, num_times: int = 8, seed: int = 0, batch_size: int = 64,
              device: torch.device | str = "cpu", t_min: float = 1e-3) -> Tensor:
    """The frozen model's denoising score-entropy bound on -log p(x) per token, per sample: (n,) float64.

    For each batch of ``x`` (n, L) and each of ``num_times`` strata, t is drawn in the stratum of [t_min, 1]
    and x is noised with the graph's forward process; the bound is the mean over strata of
    (1 - t_min) sigma(t) sum_i DSE_i / L. The draws depend only on (seed, batch index, stratum), so sample sets
    of the same size see the same noise levels and masks (common random numbers)."""
    from ..sampling.draws import make_generator

    out = []
    for b, b0 in enumerate(range(0, x.shape[0], batch_size)):
        x0 = x[b0 : b0 + batch_size].to(device)
        n, length = x0.shape
        total = torch.zeros(n, dtype=torch.float64, device=device)
        for j in range(num_times):
            gen = make_generator(seed, "cpu", b, j)
            t = t_min + (1.0 - t_min) * (j + torch.rand(n, generator=gen, dtype=torch.float64)) / num_times
            sigma = noise.total(t)
            x_t = graph.sample_transition(x0.cpu(), sigma, gen).to(device)
            with torch.no_grad():  # float32 like training: a float64 (B, L, V) copy would not fit at V = 50k
                score = score_fn(x_t, sigma.to(device=device, dtype=torch.float32))
                log_score = torch.log(score.clamp_min(torch.finfo(score.dtype).tiny))
                dse = graph.score_entropy(log_score, sigma.to(device=device, dtype=score.dtype), x_t, x0).sum(-1)
            total += (1.0 - t_min) * noise.rate(t).to(device) * dse.to(torch.float64)
        out.append((total / num_times / length).cpu())
    return torch.cat(out)


def nll_z(base: Tensor, learned: Tensor) -> float:
    """z-score of the difference of mean per-sample NLLs (learned - base; negative = learned better), from the
    per-sample values (n,) of each: how many standard errors the difference is. Reported, not used in the verdict."""
    se = math.sqrt(float(base.var()) / base.numel() + float(learned.var()) / learned.numel())
    return (float(learned.mean()) - float(base.mean())) / se if se > 0 else math.nan


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
