"""Text metrics (``--task text``): generative perplexity under an evaluator LM, with the diversity beside it.

Quality
- ``gen_ppl``: per sequence, exp of the mean token NLL under the evaluator (tokens 2..T given their prefix),
  averaged over sequences (the SEDD/LSD convention).
- ``gen_ppl_corpus``: exp of the NLL summed over all sequences' tokens / their count (the MDLM convention).
- ``mauve``: MAUVE (``mauve-text``) between the samples and as many windows of held-out real text of the same
  length, on the evaluator's last-token features (NaN when ``mauve-text`` is not installed).

Diversity
- ``entropy``: each sample's unigram entropy over the diffusion model's own tokens, averaged (ReMDM convention).
- ``distinct_1/2/3``: unique word n-grams / all word n-grams over all decoded samples (corpus level; compare
  rows with equal sample counts).

Reference (real held-out text, windows of the same length, scored exactly like the samples)
- ``ref_gen_ppl``, ``ref_entropy``: what ideal samples would score. Perplexity can be lowered by sharpening
  alone (low temperature); read ``gen_ppl`` with ``entropy``, and both against these references.

The task keeps a few decoded samples (``examples``) for display.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from torch import Tensor

from ..errors import UserError
from . import MetricSpec, Task, check_samples


def unigram_entropy(x: np.ndarray) -> float:
    """Mean over rows of the entropy (nats) of each row's token histogram. x: (n, L) ints."""
    import torch

    from ..distillation.validate import unigram_entropy as per_sample_entropy

    return per_sample_entropy(torch.as_tensor(np.asarray(x)))


def distinct_n(texts: list[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over ``texts`` (NaN when there is none)."""
    grams, total = set(), 0
    for t in texts:
        words = t.split()
        for i in range(len(words) - n + 1):
            grams.add(tuple(words[i:i + n]))
            total += 1
    return len(grams) / total if total else float("nan")


def perplexities(nll: list[np.ndarray]) -> tuple[float, float]:
    """(mean over sequences of exp(mean NLL), exp(total NLL / total tokens)); sequences without tokens skipped."""
    per_seq = [math.exp(float(v.mean())) for v in nll if v.size]
    total = sum(float(v.sum()) for v in nll)
    count = sum(v.size for v in nll)
    if not per_seq:
        return float("nan"), float("nan")
    return float(np.mean(per_seq)), math.exp(total / count)


def reference_windows(tokens: np.ndarray, n: int, length: int) -> np.ndarray:
    """(n, length) windows at evenly spaced offsets of a (T,) token stream (deterministic)."""
    if tokens.size < length:
        raise UserError(f"the held-out reference text has {tokens.size} tokens, fewer than one sample ({length})")
    starts = np.linspace(0, tokens.size - length, num=n).round().astype(np.int64)
    return tokens[starts[:, None] + np.arange(length)]


def mauve_score(p: np.ndarray, q: np.ndarray, seed: int = 25) -> float:
    """MAUVE between feature sets p (samples) and q (reference), both (n, d); NaN without ``mauve-text``."""
    try:
        import mauve
    except ImportError:
        return float("nan")
    out = mauve.compute_mauve(p_features=p, q_features=q, verbose=False, seed=seed,
                              num_buckets=max(2, min(len(p), len(q)) // 10))
    return float(out.mauve)


class TextTask(Task):
    name = "text"
    metrics: ClassVar[list[MetricSpec]] = [
        MetricSpec("gen_ppl", "evaluator perplexity per sequence, averaged (SEDD convention)", False, "quality"),
        MetricSpec("gen_ppl_corpus", "evaluator perplexity over all tokens (MDLM convention)", False, "quality"),
        MetricSpec("mauve", "MAUVE against held-out text on evaluator features", True, "quality"),
        MetricSpec("entropy", "per-sample unigram entropy of the model's tokens, nats", True, "diversity"),
        MetricSpec("distinct_1", "unique words / words over all samples", True, "diversity"),
        MetricSpec("distinct_2", "unique word bigrams / bigrams", True, "diversity"),
        MetricSpec("distinct_3", "unique word trigrams / trigrams", True, "diversity"),
        MetricSpec("ref_gen_ppl", "gen_ppl of held-out real text windows of the same length", False, "reference"),
        MetricSpec("ref_entropy", "entropy of the same real windows", True, "reference"),
    ]
    pairs: ClassVar[list[tuple[str, str]]] = [("gen_ppl", "entropy"), ("mauve", "distinct_2")]
    gap_in_log = True  # the bench's "gap closed" compares log perplexities
    fast_metrics = {"entropy": lambda x: unigram_entropy(check_samples(x).cpu().numpy())}  # no evaluator call

    def __init__(self, tokenizer=None, evaluator=None, reference: str | None = None, num_examples: int = 4,
                 mauve: bool = True, **_: object):
        """``tokenizer``: the diffusion model's TextTokenizer (None: ids are the evaluator's own);
        ``evaluator``: a ``lsdd.text.evaluator.Evaluator`` (None: the bundled one); ``reference``: held-out
        text (None: the bundled Shakespeare test slice)."""
        from ..text.corpus import reference_text
        from ..text.evaluator import load_evaluator

        self.tokenizer = tokenizer
        self.evaluator = evaluator if evaluator is not None else load_evaluator()
        self.reference = reference if reference is not None else reference_text()
        self.num_examples, self.use_mauve = num_examples, mauve
        self.examples: list[str] = []
        self.retokenised = False
        self._ref_cache: dict[tuple[int, int], tuple[dict, np.ndarray]] = {}
        if tokenizer is not None:
            tokenizer.check_text(self.reference, "the held-out reference text")

    def _reference(self, n: int, length: int) -> tuple[dict, np.ndarray]:
        key = (n, length)
        if key not in self._ref_cache:
            if self.tokenizer is not None:
                stream = self.tokenizer.encode(self.reference, "the held-out reference text")
            else:
                stream = np.concatenate(self.evaluator.encode([self.reference]))
            windows = reference_windows(stream, n, length)
            seqs, _ = self.evaluator.to_ids(windows, self.tokenizer)
            ppl, _ = perplexities(self.evaluator.token_nll(seqs))
            feats = self.evaluator.features(seqs) if self.use_mauve else None
            self._ref_cache[key] = ({"ref_gen_ppl": ppl, "ref_entropy": unigram_entropy(windows)}, feats)
        return self._ref_cache[key]

    def compute(self, samples: Tensor) -> dict[str, float]:
        x = check_samples(samples).cpu().numpy()
        n, length = x.shape
        if self.tokenizer is not None and int(x.max()) >= self.tokenizer.vocab_size:
            row, col = map(int, np.argwhere(x >= self.tokenizer.vocab_size)[0])
            raise UserError(f"token id {int(x[row, col])} at row {row}, position {col} is outside the model's "
                            f"vocabulary of {self.tokenizer.vocab_size} (a leftover mask token?)")
        seqs, self.retokenised = self.evaluator.to_ids(x, self.tokenizer)
        texts = self.tokenizer.decode_batch(x) if self.tokenizer is not None else [
            self.evaluator.hf_tokenizer.decode(s.tolist()) if self.evaluator.hf_tokenizer else "" for s in seqs]
        self.examples = texts[: self.num_examples]
        ppl, ppl_corpus = perplexities(self.evaluator.token_nll(seqs))
        ref, ref_feats = self._reference(n, length)
        mauve = float("nan")
        if self.use_mauve and n >= 20:
            mauve = mauve_score(self.evaluator.features(seqs), ref_feats)
        out = {"gen_ppl": ppl, "gen_ppl_corpus": ppl_corpus, "mauve": mauve, "entropy": unigram_entropy(x),
               **{f"distinct_{k}": distinct_n(texts, k) for k in (1, 2, 3)}, **ref}
        return {m.name: out[m.name] for m in self.metrics}


__all__ = ["TextTask", "unigram_entropy", "distinct_n", "perplexities", "reference_windows", "mauve_score"]
