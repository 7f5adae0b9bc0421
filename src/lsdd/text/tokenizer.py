"""Text tokenizers, saved as a Hugging Face ``tokenizers`` JSON file (``tokenizer.json``) beside the model.

Two kinds, chosen by flag:
- ``char``: one token per character of the corpus's alphabet (a BPE model with no merges and a Fuse decoder).
  Text with a character outside the alphabet is refused, naming the character and where it is.
- ``bpe``: byte-level BPE trained on the training split (``tokenizers``' BpeTrainer); every text encodes.

The file loads with ``tokenizers.Tokenizer.from_file`` and with ``transformers.PreTrainedTokenizerFast
(tokenizer_file=...)``, so any other tool reads it too. ``TextTokenizer`` adds what lsdd needs: the kind, the
vocabulary size, encoding of long texts to an id stream, and batched decoding of (n, L) id arrays.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import UserError

KINDS = ("char", "bpe")
TOKENIZER_FILE = "tokenizer.json"


def _require_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UserError("text models need the `tokenizers` package: pip install tokenizers") from None
    return tokenizers


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` plus its kind ("char" or "bpe")."""

    def __init__(self, tokenizer, kind: str):
        if kind not in KINDS:
            raise UserError(f"unknown tokenizer kind {kind!r}; expected one of {list(KINDS)}")
        self.tok, self.kind = tokenizer, kind
        vocab = tokenizer.get_vocab()
        self.vocab_size = len(vocab)
        if sorted(vocab.values()) != list(range(self.vocab_size)):
            raise UserError("the tokenizer's ids are not 0..V-1")
        self._chars = {c: i for c, i in vocab.items()} if kind == "char" else None

    # -- building ---------------------------------------------------------------------------------------------
    @classmethod
    def train(cls, kind: str, text: str, vocab_size: int | None = None) -> "TextTokenizer":
        """A new tokenizer for ``text``: its alphabet (char), or byte-level BPE with ``vocab_size`` entries."""
        tk = _require_tokenizers()
        if kind == "char":
            if vocab_size is not None:
                raise UserError("--vocab-size applies to --tokenizer bpe; a char tokenizer takes the text's alphabet")
            chars = sorted(set(text))
            tok = tk.Tokenizer(tk.models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
            tok.decoder = tk.decoders.Fuse()
            return cls(tok, "char")
        if kind == "bpe":
            vocab_size = 1024 if vocab_size is None else int(vocab_size)
            if not 257 <= vocab_size <= 65536:
                raise UserError(f"--vocab-size for byte-level BPE must lie in [257, 65536], got {vocab_size}")
            tok = tk.Tokenizer(tk.models.BPE())
            tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = tk.decoders.ByteLevel()
            trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                             initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
            tok.train_from_iterator(_lines(text), trainer=trainer, length=None)
            return cls(tok, "bpe")
        raise UserError(f"unknown tokenizer {kind!r}; expected one of {list(KINDS)}")

    # -- files ------------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        """The plain ``tokenizers`` JSON (the kind is implied: a char tokenizer has a Fuse decoder)."""
        return self.tok.to_str(pretty=True)

    def sha256(self) -> str:
        return hashlib.sha256(self.tok.to_str().encode()).hexdigest()

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TOKENIZER_FILE
        atomic.write_text(path, self.to_json())
        return path

    @classmethod
    def from_json(cls, text: str, where: str = "tokenizer") -> "TextTokenizer":
        tk = _require_tokenizers()
        try:
            doc = json.loads(text)
            tok = tk.Tokenizer.from_str(text)
        except Exception as e:  # json or tokenizers parse errors
            raise UserError(f"{where}: not a readable tokenizers JSON file ({type(e).__name__}: {e})") from None
        decoder = (doc.get("decoder") or {}).get("type") if isinstance(doc, dict) else None
        return cls(tok, "char" if decoder == "Fuse" else "bpe")

    @classmethod
    def load(cls, path: str | Path) -> "TextTokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise UserError(f"{path}: no such tokenizer file")
        return cls.from_json(path.read_text(), str(path))

    # -- use --------------------------------------------------------------------------------------------------
    def check_text(self, text: str, where: str = "text") -> None:
        """UserError naming the first character outside a char tokenizer's alphabet."""
        if self._chars is None:
            return
        bad = set(text) - set(self._chars)
        if bad:
            first = min(text.find(c) for c in bad)
            line = text.count("\n", 0, first) + 1
            raise UserError(f"{where}: character {text[first]!r} (line {line}) is outside the model's "
                            f"{self.vocab_size}-character vocabulary ({len(bad)} such character(s) in all)")

    def encode(self, text: str, where: str = "text") -> np.ndarray:
        """(T,) int64 ids of ``text``; long texts are encoded line block by line block."""
        self.check_text(text, where)
        if self._chars is not None:
            table = self._chars
            return np.fromiter((table[c] for c in text), dtype=np.int64, count=len(text))
        ids: list[int] = []
        for enc in self.tok.encode_batch(list(_blocks(text))):
            ids.extend(enc.ids)
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids) -> str:
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise UserError(f"token id {bad[0]} is outside the tokenizer's vocabulary of {self.vocab_size}")
        return self.tok.decode(ids, skip_special_tokens=False)

    def decode_batch(self, ids) -> list[str]:
        """(n, L) ids -> n strings."""
        arr = np.asarray(ids)
        if arr.ndim != 2:
            raise UserError(f"expected (n, L) token ids, got shape {arr.shape}")
        return [self.decode(row) for row in arr]

    def same_as(self, other: "TextTokenizer") -> bool:
        return self.tok.get_vocab() == other.tok.get_vocab() and self.kind == other.kind

    def describe(self) -> dict:
        return {"file": TOKENIZER_FILE, "kind": self.kind, "vocab_size": self.vocab_size, "sha256": self.sha256()}


def _lines(text: str, size: int = 1 << 16):
    yield from _blocks(text, size)


def _blocks(text: str, size: int = 1 << 16):
    """Pieces of about ``size`` characters cut after a newline, so byte-level BPE sees whole lines."""
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            nl = text.find("\n", end)
            end = len(text) if nl < 0 else nl + 1
        yield text[start:end]
        start = end


__all__ = ["TextTokenizer", "KINDS", "TOKENIZER_FILE"]
