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

Conditional samples (``compute(samples, fixed)``, ``fixed`` the given positions: a prompt, an infill template):
``gen_ppl``, ``gen_ppl_corpus``, ``entropy`` and ``distinct_*`` read the generated tokens only, given their
prompt (``lsdd.tasks.continuation``), and the reference windows are scored at the same positions (their own
text before them as context); MAUVE still compares whole sequences.

The task keeps a few decoded samples (``examples``) for display. Its data are a corpus prepared by ``lsdd data``,
encoded with the model's tokenizer; its samples decode with that tokenizer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from ..errors import UserError
from .base import Demo, MetricSpec, Task, check_samples


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


def decode_tokens(tokenizer, x: np.ndarray) -> list[str]:
    """``tokenizer.decode_batch(x)`` for (n, L) ids; ``UserError`` for an id outside its vocabulary."""
    vocab = tokenizer.vocab_size
    if int(x.max()) >= vocab or int(x.min()) < 0:
        bad = int(x.max()) if int(x.max()) >= vocab else int(x.min())
        raise UserError(f"token id {bad} is outside the tokenizer's vocabulary of {vocab} "
                        "(a leftover mask token, or samples of another model?)")
    return tokenizer.decode_batch(x)


def default_evaluator(model) -> str | None:
    """The evaluator a model's text is scored with when none is named: GPT-2 large for checkpoints with GPT-2's
    vocabulary (SEDD, RADD, MDLM on OpenWebText: the papers' gen-PPL evaluator), else None (the bundled one)."""
    from ..models.tokens import GPT2_VOCAB

    if model is not None and model.meta.get("checkpoint_format") and model.graph.num_tokens == GPT2_VOCAB:
        return "gpt2-large"
    return None


def read_reference(path: str) -> str:
    """Held-out text from a text file or from the test split of a corpus prepared by ``lsdd data``."""
    from ..text.corpus import SPLIT_FILE, read_split, read_text_file

    return read_split(path, "test") if (Path(path) / SPLIT_FILE).is_file() else read_text_file(path)


def mauve_score(p: np.ndarray, q: np.ndarray, seed: int = 25) -> float:
    """MAUVE between feature sets p (samples) and q (reference), both (n, d); NaN without ``mauve-text``."""
    try:
        import mauve
    except ImportError:
        return float("nan")
    out = mauve.compute_mauve(p_features=p, q_features=q, verbose=False, seed=seed,
                              num_buckets=max(2, min(len(p), len(q)) // 10))
    return float(out.mauve)


def held_out_prompts(model, k: int, reference: str | None = None, num: int | None = None) -> np.ndarray:
    """Prompts from held-out text (``lsdd distill/bench --prompts held-out:K[:P]``): the held-out text - the test
    split of ``reference`` (a corpus folder prepared by ``lsdd data``, or a text file), else the Shakespeare test
    slice bundled with lsdd, the text task's default reference - encoded with the model's tokenizer and cut into
    consecutive windows of the model's length L (no overlap, the tail dropped); prompt j is the first ``k`` tokens
    of window j (every window; with ``num``, ``num`` windows evenly spaced over them). Returns (P, k) int64 token
    ids (what ``lsdd.sample``'s ``prompt`` takes); UserError (one line) for a model without a tokenizer, k outside
    [1, L - 1], or too little text."""
    from ..text.corpus import reference_text

    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise UserError(f"held-out prompts are text, but model {getattr(model, 'source', '?')} has no tokenizer")
    length = model.length
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < length:
        raise UserError(f"held-out prompts of {k!r} tokens: K must be an integer in [1, {length - 1}] (the model's "
                        f"sequences are {length} tokens, and a prompt must leave a position to generate)")
    text = read_reference(reference) if reference is not None else reference_text()
    ids = np.asarray(tok.encode(text, "the held-out text"), dtype=np.int64)
    windows = ids[: ids.size // length * length].reshape(-1, length)
    if windows.shape[0] == 0:
        raise UserError(f"the held-out text has {ids.size} tokens, fewer than one window of {length}")
    if num is not None:
        if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= windows.shape[0]:
            raise UserError(f"held-out prompts: P must be an integer in [1, {windows.shape[0]}] (the windows of "
                            f"{length} tokens in the held-out text), got {num!r}")
        windows = windows[np.linspace(0, windows.shape[0] - 1, num=num).round().astype(np.int64)]
    return windows[:, :k].copy()


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
    gap_in_log: ClassVar[bool] = True  # the bench's "gap closed" compares log perplexities
    fast_metrics = {"entropy": lambda x: unigram_entropy(check_samples(x).cpu().numpy())}  # no evaluator call
    default_model: ClassVar[str] = "text-absorb"
    demo: ClassVar[Demo] = Demo(nfe=(8,), teacher_nfe=256, num_samples=128, methods=("spread", "lsd"), shows="text")
    temperature_control: ClassVar[bool] = True  # perplexity falls with sharpening alone
    conditional: ClassVar[bool] = True  # compute(samples, fixed=): the continuation given its prompt
    build_options: ClassVar[tuple[str, ...]] = ("evaluator", "reference")
    data_options: ClassVar[tuple[str, ...]] = ("corpus", "length", "tokenizer", "vocab_size")
    resume_from_record: ClassVar[bool] = True  # a resumed run keeps its tokenizer: the model's vocabulary

    def __init__(self, tokenizer=None, evaluator=None, reference: str | None = None, num_examples: int = 4,
                 mauve: bool = True, device="cpu", **_: object):
        """``tokenizer``: the diffusion model's TextTokenizer (None: ids are the evaluator's own);
        ``evaluator``: a ``lsdd.text.evaluator.Evaluator`` (None: the bundled one, loaded on ``device`` when
        first needed); ``reference``: held-out text (None: the bundled Shakespeare test slice)."""
        from ..text.corpus import reference_text

        self.tokenizer = tokenizer
        self._evaluator, self.device = evaluator, device
        self.reference = reference if reference is not None else reference_text()
        self.num_examples, self.use_mauve = num_examples, mauve
        self.examples: list[str] = []
        self.retokenised = False
        self._ref_cache: dict[tuple[int, int], tuple[dict, Any, np.ndarray]] = {}  # (figures, features, windows)

    def check_reference(self) -> None:
        """``UserError`` unless the model's tokenizer can encode the held-out reference text."""
        if self.tokenizer is not None:
            self.tokenizer.check_text(self.reference, "the held-out reference text")

    @property
    def evaluator(self):
        """The evaluator LM (``lsdd.text.evaluator.Evaluator``)."""
        if self._evaluator is None:
            from ..text.evaluator import load_evaluator

            self._evaluator = load_evaluator(None, self.device)
        return self._evaluator

    @classmethod
    def matches(cls, model) -> bool:
        """Models with a tokenizer of their own, or GPT-2's vocabulary (SEDD, RADD, MDLM checkpoints)."""
        return bool(model.meta.get("tokenizer")) or default_evaluator(model) is not None

    @classmethod
    def from_model(cls, model, **options: Any) -> "TextTask":
        """The task with the model's tokenizer; the bundled evaluator is loaded (on the model's device) when
        first needed."""
        return cls(**{"tokenizer": model.tokenizer, "device": model.device, **options})

    @classmethod
    def build(cls, model=None, evaluator: str | None = None, reference: str | None = None,
              **options: Any) -> "TextTask":
        """The task with the model's tokenizer (if a model is given), the evaluator named ``evaluator`` (a
        bundled name, directory or hub id; default ``default_evaluator(model)``, else the bundled one), loaded
        now on the model's device, and the held-out text of ``reference`` (a text file or a corpus folder)."""
        from ..text.evaluator import load_evaluator

        tokenizer = model.tokenizer if model is not None else None
        ref = read_reference(reference) if reference is not None else None
        device = model.device if model is not None else "cpu"
        ev = load_evaluator(evaluator or default_evaluator(model), device)
        if tokenizer is None and ev.hf_tokenizer is None:
            raise UserError("--task text needs the diffusion model's tokenizer (pass --model) or an evaluator "
                            "with one")
        if tokenizer is None and model is not None and ev.hf_tokenizer is not None \
                and model.graph.num_tokens != len(ev.hf_tokenizer):
            # without a tokenizer the ids are read as the evaluator's own, which they cannot be here
            raise UserError(f"--task text needs a text model (one with a tokenizer); {model.source} has none, and "
                            f"its {model.graph.num_tokens} tokens are not the {len(ev.hf_tokenizer)} of evaluator "
                            f"{ev.name}")
        task = cls(tokenizer=tokenizer, evaluator=ev, reference=ref, device=device, **options)
        task.check_reference()  # now, not after a long sampling run
        return task

    @classmethod
    def data(cls, corpus: str | None = None, length: int = 128, tokenizer: str = "char",
             vocab_size: int | None = None):
        """Windows of ``length`` tokens of ``corpus``'s training split, with a new tokenizer of kind
        ``tokenizer`` (char, or byte-level BPE of ``vocab_size`` entries)."""
        from ..text.source import text_source
        from ..text.tokenizer import KINDS

        if corpus is None:
            raise UserError("--data text needs --corpus DIR (prepare one with `lsdd data shakespeare --out DIR`)")
        if tokenizer not in KINDS:
            raise UserError(f"unknown tokenizer {tokenizer!r}; expected one of {list(KINDS)}")
        return text_source(corpus, length, tokenizer, vocab_size)

    @classmethod
    def data_from_record(cls, record: dict[str, Any], directory: Path):
        """The run's corpus with the run's own tokenizer (``directory``'s tokenizer.json)."""
        from ..text.source import text_source
        from ..text.tokenizer import TextTokenizer

        return text_source(record["corpus"], record["length"], TextTokenizer.load(directory))

    def decode(self, samples: Tensor) -> list[str]:
        """The texts of samples: decoded with the model's tokenizer, or with the evaluator's when the ids are
        its own (no model tokenizer); ``UserError`` for an id outside the vocabulary.

        Args:
            samples: (n, L) integer token ids.
        """
        x = check_samples(samples).cpu().numpy()
        if self.tokenizer is None:
            hf = self._evaluator.hf_tokenizer if self._evaluator is not None else None
            if hf is None:
                raise UserError("no tokenizer to decode the samples with: the model has none (it is not a text "
                                "model?) and no evaluator with one was given")
            return [hf.decode(row.tolist()) for row in x]
        return decode_tokens(self.tokenizer, x)

    def record(self) -> dict[str, Any]:
        return {"evaluator": self.evaluator.name, "retokenised": self.retokenised, "examples": list(self.examples)}

    def _reference(self, n: int, length: int) -> tuple[dict, np.ndarray]:
        key = (n, length)
        if key not in self._ref_cache:
            if self.tokenizer is not None:
                self.check_reference()
                stream = self.tokenizer.encode(self.reference, "the held-out reference text")
            else:
                stream = np.concatenate(self.evaluator.encode([self.reference]))
            windows = reference_windows(stream, n, length)
            seqs, _ = self.evaluator.to_ids(windows, self.tokenizer)
            ppl, _ = perplexities(self.evaluator.token_nll(seqs))
            feats = self.evaluator.features(seqs) if self.use_mauve else None
            self._ref_cache[key] = ({"ref_gen_ppl": ppl, "ref_entropy": unigram_entropy(windows)}, feats, windows)
        return self._ref_cache[key][:2]

    def compute(self, samples: Tensor, fixed: Tensor | None = None) -> dict[str, float]:
        """The metrics of ``samples`` (n, L); ``fixed`` (n, L) bool: the given positions of conditional samples
        (their prompt), whose generated tokens alone are then scored, given the prompt (module docstring)."""
        x = check_samples(samples).cpu().numpy()
        n, length = x.shape
        if self.tokenizer is not None and int(x.max()) >= self.tokenizer.vocab_size:
            row, col = map(int, np.argwhere(x >= self.tokenizer.vocab_size)[0])
            raise UserError(f"token id {int(x[row, col])} at row {row}, position {col} is outside the model's "
                            f"vocabulary of {self.tokenizer.vocab_size} (a leftover mask token?)")
        if fixed is not None:
            return self._compute_given(x, np.asarray(fixed.cpu() if isinstance(fixed, Tensor) else fixed, dtype=bool))
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

    def _compute_given(self, x: np.ndarray, held: np.ndarray) -> dict[str, float]:
        """``compute`` for conditional samples x (n, L) with given positions ``held`` (n, L) bool."""
        from .continuation import continuation_entropy, continuation_ids, continuation_nll, continuation_texts

        if held.shape != x.shape:
            raise UserError(f"the given positions have shape {held.shape}, the samples {x.shape}")
        if self.tokenizer is None:
            raise UserError("scoring a continuation given its prompt needs the model's tokenizer (pass --model)")
        n, length = x.shape
        seqs, generated = continuation_ids(self.evaluator, self.tokenizer, x, held)
        self.retokenised = not self.evaluator.shares_vocabulary(self.tokenizer)
        self.examples = self.tokenizer.decode_batch(x)[: self.num_examples]
        ppl, ppl_corpus = perplexities(continuation_nll(self.evaluator, seqs, generated))
        _, ref_feats = self._reference(n, length)
        windows = self._ref_cache[(n, length)][2]
        ref_seqs, ref_gen = continuation_ids(self.evaluator, self.tokenizer, windows, held)
        ref_ppl, _ = perplexities(continuation_nll(self.evaluator, ref_seqs, ref_gen))
        mauve = float("nan")
        if self.use_mauve and n >= 20:
            mauve = mauve_score(self.evaluator.features(seqs), ref_feats)
        texts = continuation_texts(self.tokenizer, x, held)
        out = {"gen_ppl": ppl, "gen_ppl_corpus": ppl_corpus, "mauve": mauve, "entropy": continuation_entropy(x, held),
               **{f"distinct_{k}": distinct_n(texts, k) for k in (1, 2, 3)}, "ref_gen_ppl": ref_ppl,
               "ref_entropy": continuation_entropy(windows, held)}
        return {m.name: out[m.name] for m in self.metrics}


__all__ = ["TextTask", "held_out_prompts", "default_evaluator", "read_reference", "decode_tokens", "unigram_entropy", "distinct_n",
           "perplexities", "reference_windows", "mauve_score"]
