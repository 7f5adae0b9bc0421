"""Task-free metrics for any token model (``--task tokens``): what can be said of samples without knowing
the data. Used for throughput checks on random networks and as a first look at a user's model.

Quality: ``repeat_rate`` - the fraction of adjacent equal tokens (x[i] == x[i-1]), averaged over samples; a
degenerate sampler that collapses onto one token drives it up. Diversity: ``unigram_entropy`` - the entropy
in nats of each sample's own token histogram, averaged over samples (the ReMDM convention), and
``distinct_1`` - each sample's share of distinct tokens. Lower repetition at equal entropy is better; on its
own, neither number says the samples are right.

Data: a user's .npy file of token ids (``lsdd train --data FILE.npy``). Samples decode with the model's
tokenizer when it has one (e.g. a checkpoint with a tokenizer.json beside it), else to their token ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import UserError
from .base import MetricSpec, Task, check_samples


class TokensTask(Task):
    name = "tokens"
    metrics: ClassVar[list[MetricSpec]] = [
        MetricSpec("repeat_rate", "fraction of adjacent equal tokens", False, "quality"),
        MetricSpec("unigram_entropy", "entropy of each sample's token histogram, nats", True, "diversity"),
        MetricSpec("distinct_1", "share of distinct tokens per sample", True, "diversity"),
    ]
    pairs: ClassVar[list[tuple[str, str]]] = [("repeat_rate", "unigram_entropy")]

    data_options: ClassVar[tuple[str, ...]] = ("path", "vocab")

    def __init__(self, tokenizer=None, **_: object):
        """``tokenizer``: a ``TextTokenizer`` to decode samples with (None: they decode to their ids)."""
        self.tokenizer = tokenizer

    @classmethod
    def from_model(cls, model, **options: Any) -> "TokensTask":
        return cls(**{"tokenizer": model.tokenizer, **options})

    @classmethod
    def data(cls, path: str | None = None, vocab: int | None = None):
        """Sequences drawn from the (sequences, length) token ids in the .npy file ``path``; ``vocab``: the
        vocabulary size (default: the largest id + 1)."""
        from ..data.tokens import load_token_file
        from ..train import TokenSource

        if path is None:
            raise UserError("the tokens task's data are a .npy file of token ids: --data FILE.npy")
        tokens, num_tokens = load_token_file(path, vocab)
        return TokenSource(tokens, num_tokens, path=str(Path(path).resolve()))

    @classmethod
    def data_from_record(cls, record: dict[str, Any], directory: Path):
        from ..data.tokens import load_token_file
        from ..train import TokenSource

        tokens, num_tokens = load_token_file(record["path"], record["num_tokens"])
        return TokenSource(tokens, num_tokens, path=record["path"])

    def decode(self, samples: Tensor) -> list[str]:
        if self.tokenizer is None:
            return super().decode(samples)
        from .text import decode_tokens

        return decode_tokens(self.tokenizer, check_samples(samples).cpu().numpy())

    def compute(self, samples: Tensor) -> dict[str, float]:
        x = check_samples(samples)
        n, length = x.shape
        repeat = (x[:, 1:] == x[:, :-1]).double().mean(1) if length > 1 else torch.zeros(n, dtype=torch.float64)
        ent, distinct = [], []
        for row in x:
            counts = torch.unique(row, return_counts=True)[1].double()
            p = counts / counts.sum()
            ent.append(float(-(p * p.log()).sum()))
            distinct.append(counts.numel() / length)
        return {"repeat_rate": float(repeat.mean()), "unigram_entropy": sum(ent) / n, "distinct_1": sum(distinct) / n}
