"""Training data from a text corpus: random windows of ``length`` tokens from the encoded training split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from .corpus import corpus_record, read_split
from .tokenizer import TextTokenizer


@dataclass(frozen=True, eq=False)
class TextSource:
    """Windows of ``length`` consecutive tokens at uniformly random offsets of a (T,) token stream.

    ``tokenizer`` is saved beside the model (``tokenizer.json``) and recorded in its config.json.
    """

    stream: Tensor  # (T,) int64
    length: int
    tokenizer: TextTokenizer
    corpus: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return self.tokenizer.vocab_size

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        starts = torch.randint(0, self.stream.numel() - self.length + 1, (n,), generator=generator)
        return self.stream[starts[:, None] + torch.arange(self.length)]

    def describe(self) -> dict[str, Any]:
        return {"type": "text", "corpus": self.corpus, "length": self.length, "tokens": int(self.stream.numel()),
                "tokenizer": self.tokenizer.kind, "vocab_size": self.num_tokens, **self.info}


def text_source(corpus: str | Path, length: int, tokenizer: TextTokenizer | str,
                vocab_size: int | None = None) -> TextSource:
    """Encode ``corpus``'s training split with ``tokenizer`` (a TextTokenizer, or a kind to train one).

    A char tokenizer takes the alphabet of all three splits (so held-out text encodes); BPE is trained on the
    training split only.
    """
    corpus = Path(corpus).resolve()
    train = read_split(corpus, "train")
    if isinstance(tokenizer, str):
        alphabet = train + read_split(corpus, "valid") + read_split(corpus, "test") if tokenizer == "char" else train
        tokenizer = TextTokenizer.train(tokenizer, alphabet, vocab_size)
    if length < 2:
        raise UserError(f"--length must be >= 2 for text, got {length}")
    stream = torch.from_numpy(tokenizer.encode(train, where=f"{corpus}/train.txt"))
    if stream.numel() < 4 * length:
        raise UserError(f"{corpus}/train.txt gives only {stream.numel()} tokens: too few for windows of {length}")
    info = {"corpus_train_sha256": corpus_record(corpus)["splits"]["train"]["sha256"]}
    return TextSource(stream, int(length), tokenizer, str(corpus), info)


__all__ = ["TextSource", "text_source"]
