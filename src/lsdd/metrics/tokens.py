"""Task-free metrics for any token model (``--task tokens``): what can be said of samples without knowing
the data. Used for throughput checks on random networks and as a first look at a user's model.

Quality: ``repeat_rate`` - the fraction of adjacent equal tokens (x[i] == x[i-1]), averaged over samples; a
degenerate sampler that collapses onto one token drives it up. Diversity: ``unigram_entropy`` - the entropy
in nats of each sample's own token histogram, averaged over samples (the ReMDM convention), and
``distinct_1`` - each sample's share of distinct tokens. Lower repetition at equal entropy is better; on its
own, neither number says the samples are right.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from . import MetricSpec, Task, check_samples


class TokensTask(Task):
    name = "tokens"
    metrics: ClassVar[list[MetricSpec]] = [
        MetricSpec("repeat_rate", "fraction of adjacent equal tokens", False, "quality"),
        MetricSpec("unigram_entropy", "entropy of each sample's token histogram, nats", True, "diversity"),
        MetricSpec("distinct_1", "share of distinct tokens per sample", True, "diversity"),
    ]
    pairs: ClassVar[list[tuple[str, str]]] = [("repeat_rate", "unigram_entropy")]

    def __init__(self, **_: object):
        pass

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
