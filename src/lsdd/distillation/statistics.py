"""Statistics of sample sets, shared by validation (``validate``) and the distribution objectives (``objective``):
pooled n-gram laws and their Hellinger distance, the unbiased n-gram MMD^2, per-sample unigram entropy, the
energy distance of feature vectors, a permutation test of any of them, and the frozen model's own NLL bound per
sample.

Conditional samples (a prompt held fixed): every statistic takes ``free`` (n, L) bool, the generated positions,
and then measures the generation only - n-grams of generated tokens (a bigram when both of its tokens are
generated), the entropy of the generated tokens, and the NLL bound of the generated tokens given the held ones
(they stay clean while the generated ones are noised). ``free=None``: every position, exactly as without it.

Shapes: x (n, L) int64 samples; S token states; free (n, L) bool.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _pairs(free: Tensor | None) -> Tensor | None:
    """(n, L - 1) bool: the bigrams whose two tokens are both generated (None: every one)."""
    return None if free is None else free[:, :-1] & free[:, 1:]


def pooled_ngrams(x: Tensor, num_states: int, free: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Pooled unigram (S,) and bigram (S * S,) distributions of the sample set x (n, L), float64 (of the
    generated tokens ``free`` only, when given)."""
    uni_ids = x.reshape(-1) if free is None else x[free]
    uni = torch.bincount(uni_ids, minlength=num_states).to(torch.float64)
    if x.shape[1] > 1:
        bi_ids = x[:, :-1] * num_states + x[:, 1:]
        bi_ids = bi_ids.reshape(-1) if free is None else bi_ids[_pairs(free)]
        bi = torch.bincount(bi_ids, minlength=num_states**2)
    else:
        bi = torch.zeros(num_states**2)
    bi = bi.to(torch.float64)
    return uni / uni.sum().clamp_min(1.0), bi / bi.sum().clamp_min(1.0)


def ngram_hellinger(a: Tensor, b: Tensor, num_states: int, free_a: Tensor | None = None,
                    free_b: Tensor | None = None) -> float:
    """Squared Hellinger distance of pooled unigrams plus that of pooled bigrams, in [0, 4]."""
    (ua, ba), (ub, bb) = pooled_ngrams(a, num_states, free_a), pooled_ngrams(b, num_states, free_b)
    return float(((ua.sqrt() - ub.sqrt()) ** 2).sum() + ((ba.sqrt() - bb.sqrt()) ** 2).sum())


def _features(x: Tensor, num_states: int, free: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Sparse per-sequence n-gram frequencies: (sequence index, cell id, value) over unigram cells [0, S) and
    bigram cells S + a * S + b; each sequence's unigram and bigram parts sum to 1 each (over its generated
    tokens and generated bigrams with ``free``; a sequence with none has no part)."""
    n, length = x.shape
    seq = torch.arange(n)[:, None]
    uni = x
    cells = [_cells(seq.expand(n, length), uni, free, length)]
    if length > 1:
        bi = num_states + x[:, :-1] * num_states + x[:, 1:]
        cells.append(_cells(seq.expand(n, length - 1), bi, _pairs(free), length - 1))
    return tuple(torch.cat([c[i].reshape(-1) for c in cells]) for i in range(3))  # type: ignore[return-value]


def _cells(seq: Tensor, cell: Tensor, keep: Tensor | None, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """(sequence index, cell id, value 1 / count) of the kept entries of one n-gram order (all: 1 / width)."""
    if keep is None:
        return seq, cell, torch.full(cell.shape, 1.0 / width, dtype=torch.float64)
    count = keep.sum(-1, keepdim=True).clamp_min(1).to(torch.float64).expand(keep.shape)
    return seq[keep], cell[keep], 1.0 / count[keep]


def _mean_embedding(x: Tensor, num_states: int, free: Tensor | None = None) -> tuple[Tensor, Tensor, float]:
    """(sorted cell ids, pooled n-gram frequencies summed over sequences, sum over sequences of |phi(x_i)|^2)."""
    seq, cell, val = _features(x, num_states, free)
    pairs, inverse = torch.unique(torch.stack([seq, cell]), dim=1, return_inverse=True)
    per = torch.zeros(pairs.shape[1], dtype=torch.float64).index_add_(0, inverse, val)  # phi_i(cell)
    cells, inv2 = torch.unique(pairs[1], return_inverse=True)  # sorted
    pooled = torch.zeros(cells.numel(), dtype=torch.float64).index_add_(0, inv2, per)
    return cells, pooled, float((per**2).sum())


def mmd2(a: Tensor, b: Tensor, num_states: int, free_a: Tensor | None = None, free_b: Tensor | None = None) -> float:
    """Unbiased MMD^2 between the sample sets ``a`` (n, L) and ``b`` (m, L) (n, m >= 2), linear kernel on
    normalised unigram + bigram frequencies (of the generated tokens ``free_a``, ``free_b`` when given). Its
    expectation is 0 when both come from the same law."""
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs at least 2 samples on each side, got {n} and {m}")
    (ca, pa, sa), (cb, pb, sb) = _mean_embedding(a, num_states, free_a), _mean_embedding(b, num_states, free_b)
    aa = (float((pa**2).sum()) - sa) / (n * (n - 1))
    bb = (float((pb**2).sum()) - sb) / (m * (m - 1))
    pos = torch.searchsorted(cb, ca).clamp_max(cb.numel() - 1)
    shared = cb[pos] == ca
    ab = float((pa[shared] * pb[pos[shared]]).sum()) / (n * m)
    return aa + bb - 2.0 * ab


def unigram_entropy(x: Tensor, num_states: int | None = None, free: Tensor | None = None) -> Tensor:
    """Per-sample unigram entropy in nats, (n, L) -> (n,) float64 (num_states: default max id + 1), of the
    generated tokens ``free`` (n, L) bool when given (0 for a sample without any)."""
    num_states = int(x.max()) + 1 if num_states is None else num_states
    counts = torch.zeros(x.shape[0], num_states, dtype=torch.float64, device=x.device)
    weight = torch.ones_like(x, dtype=torch.float64) if free is None else free.to(x.device, torch.float64)
    counts.scatter_add_(1, x, weight)
    p = counts / counts.sum(-1, keepdim=True).clamp_min(1e-300)
    return -(torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))).sum(-1).cpu()


def mean_unigram_entropy(x: Tensor) -> float:
    """Mean over samples of the entropy (nats) of each sample's own token histogram."""
    return float(unigram_entropy(x.long()).mean())


def energy_distance(a: Tensor, b: Tensor) -> float:
    """Energy distance 2 E|A - B| - E|A - A'| - E|B - B'| between feature sets a (n, d) and b (m, d) (Euclidean;
    the within-set means leave out the zero diagonal, so equal laws give 0 in expectation)."""
    def mean_dist(u, v, same):
        d = torch.cdist(u, v)
        if same:
            k = u.shape[0]
            return float(d.sum() / max(k * (k - 1), 1))
        return float(d.mean())

    a, b = a.to(torch.float64), b.to(torch.float64)
    return 2.0 * mean_dist(a, b, False) - mean_dist(a, a, True) - mean_dist(b, b, True)


def random_splits(total: int, n: int, permutations: int, seed: int):
    """``permutations`` random splits (idx_a (n,), idx_b (total - n,)) of ``total`` pooled items. They depend only
    on ``seed`` (a CPU generator), so every process draws the same ones."""
    if not 0 < n < total:
        raise ValueError(f"a permutation test needs items on both sides, got {n} of {total}")
    g = torch.Generator().manual_seed(int(seed))
    for _ in range(permutations):
        perm = torch.randperm(total, generator=g)
        yield perm[:n], perm[n:]


def permutation_p(stat, total: int, n: int, observed: float, *, permutations: int = 200, seed: int = 0) -> float:
    """Permutation p-value of a two-sample statistic: the share, with the +1 correction, of ``random_splits`` of
    the pooled ``total`` items into n and total - n whose ``stat(idx_a, idx_b)`` is at least ``observed`` (the
    statistic of the real split). Large p: the two sets look like one law."""
    hits = sum(stat(i, j) >= observed for i, j in random_splits(total, n, permutations, seed))
    return (1.0 + hits) / (1.0 + permutations)


def model_nll(score_fn, graph, noise, x: Tensor, *, num_times: int = 8, seed: int = 0, batch_size: int = 64,
              device: torch.device | str = "cpu", t_min: float = 1e-3, free: Tensor | None = None) -> Tensor:
    """The frozen model's denoising score-entropy bound on -log p(x) per token, per sample: (n,) float64.

    For each batch of ``x`` (n, L) and each of ``num_times`` strata, t is drawn in the stratum of [t_min, 1]
    and x is noised with the graph's forward process; the bound is the mean over strata of
    (1 - t_min) sigma(t) sum_i DSE_i / L. The draws depend only on (seed, batch index, stratum), so sample sets
    of the same size see the same noise levels and masks (common random numbers).

    ``free`` (n, L) bool, the generated positions of conditional samples: the held positions stay clean (only
    the generated ones are noised, from the same draws) and the bound is sum over generated i of DSE_i / (their
    number), a bound on -log p(generated | held) per generated token (exact conditioning on the absorbing
    graph, as in sampling: ``lsdd.sampling.loop``)."""
    from ..sampling.draws import make_generator

    out = []
    for b, b0 in enumerate(range(0, x.shape[0], batch_size)):
        x0 = x[b0 : b0 + batch_size].to(device)
        n, length = x0.shape
        gen_pos = None if free is None else free[b0 : b0 + batch_size].to(device)
        count = torch.full((n,), float(length), dtype=torch.float64, device=device) if gen_pos is None else \
            gen_pos.sum(-1).clamp_min(1).to(torch.float64)
        total = torch.zeros(n, dtype=torch.float64, device=device)
        for j in range(num_times):
            gen = make_generator(seed, "cpu", b, j)
            t = t_min + (1.0 - t_min) * (j + torch.rand(n, generator=gen, dtype=torch.float64)) / num_times
            sigma = noise.total(t)
            x_t = graph.sample_transition(x0.cpu(), sigma, gen).to(device)
            if gen_pos is not None:  # the held tokens stay clean: the bound is that of the generated ones given them
                x_t = torch.where(gen_pos, x_t, x0)
            with torch.no_grad():  # float32 like training: a float64 (B, L, V) copy would not fit at V = 50k
                score = score_fn(x_t, sigma.to(device=device, dtype=torch.float32))
                log_score = torch.log(score.clamp_min(torch.finfo(score.dtype).tiny))
                dse = graph.score_entropy(log_score, sigma.to(device=device, dtype=score.dtype), x_t, x0)
                dse = dse.sum(-1) if gen_pos is None else (dse * gen_pos).sum(-1)
            total += (1.0 - t_min) * noise.rate(t).to(device) * dse.to(torch.float64)
        out.append((total / num_times / count).cpu())
    return torch.cat(out)


__all__ = ["pooled_ngrams", "ngram_hellinger", "mmd2", "unigram_entropy", "mean_unigram_entropy", "energy_distance",
           "model_nll"]
