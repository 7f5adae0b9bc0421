"""Scoring conditional text samples: the continuation given its prompt (``lsdd eval --task text`` on samples of
``lsdd sample --prompt / --prompt-file / --infill / --fixed``).

A sample's *given* tokens (the prompt, or the pieces of an infill template) are context, its *generated* tokens
are scored: the conditional generative perplexity is exp of the mean NLL, under the causal evaluator LM, of the
generated tokens only, each given every token before it (the prompt and the tokens generated before it; a causal
evaluator cannot read the text after a gap), averaged over samples; the first token of a sample is never scored
(no context), as in the unconditional convention. The entropy is each sample's unigram entropy over its generated
tokens (the diffusion model's ids), averaged.

When the evaluator shares the model's vocabulary the ids are scored as they are; otherwise each run of given or
generated tokens is decoded and re-encoded with the evaluator's tokenizer on its own, so every evaluator token
belongs to one side.

Shapes: n samples, L length; ``held`` (n, L) bool marks the given tokens.
"""

from __future__ import annotations

import numpy as np
import torch

from ..distillation.statistics import unigram_entropy as per_sample_entropy


def runs(held: np.ndarray) -> list[tuple[int, int]]:
    """The maximal runs [start, end) of equal values of a (L,) bool row, in order."""
    cuts = np.flatnonzero(held[1:] != held[:-1]) + 1
    edges = [0, *cuts.tolist(), held.size]
    return list(zip(edges[:-1], edges[1:]))


def continuation_ids(evaluator, tokenizer, x: np.ndarray, held: np.ndarray) -> tuple[list[np.ndarray],
                                                                                     list[np.ndarray]]:
    """Each sample as evaluator ids and which of them are generated: (ids (T_i,) int64, generated (T_i,) bool)
    per sample. x (n, L) model ids, held (n, L) bool."""
    if tokenizer is None or evaluator.shares_vocabulary(tokenizer):
        seqs, _ = evaluator.to_ids(x, tokenizer)
        return seqs, [~h for h in held]
    seqs, flags = [], []
    for row, h in zip(x, held):
        ids, gen = [], []
        for start, end in runs(h):
            enc = evaluator.encode([tokenizer.decode(row[start:end])])[0]
            ids.append(enc)
            gen.append(np.full(enc.size, not h[start]))
        seqs.append(np.concatenate(ids).astype(np.int64))
        flags.append(np.concatenate(gen).astype(bool))
    return seqs, flags


def continuation_nll(evaluator, seqs: list[np.ndarray], generated: list[np.ndarray]) -> list[np.ndarray]:
    """Per sample, the evaluator's NLL (nats) of its generated tokens given everything before them (the first
    token excluded: it has no context). One (G_i,) float64 array per sample."""
    nll = evaluator.token_nll(seqs)
    return [v[g[1:1 + v.size]] for v, g in zip(nll, generated)]


def continuation_entropy(x: np.ndarray, held: np.ndarray) -> float:
    """Mean over samples of the unigram entropy (nats) of each sample's generated tokens (NaN without any)."""
    vals = [float(per_sample_entropy(torch.as_tensor(row[~h])[None])[0]) for row, h in zip(x, held) if (~h).any()]
    return float(np.mean(vals)) if vals else float("nan")


def continuation_texts(tokenizer, x: np.ndarray, held: np.ndarray) -> list[str]:
    """Each sample's generated tokens, decoded in order (the model's tokenizer)."""
    return [tokenizer.decode(row[~h]) if (~h).any() else "" for row, h in zip(x, held)]


__all__ = ["runs", "continuation_ids", "continuation_nll", "continuation_entropy", "continuation_texts"]
