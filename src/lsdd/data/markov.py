"""A sparse Markov chain task: stochastic transitions with few allowed successors (a second task whose
structure differs from countdown's deterministic runs).

The chain is defined by (num_values, degree, seed): every token a has ``degree`` allowed successors, drawn
without replacement, with Dirichlet(1) probabilities; the first token is uniform. Everything is rebuilt from
those three numbers, so a task needs no file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


def markov_chain(num_values: int = 24, degree: int = 3, seed: int = 0) -> Tensor:
    """The transition matrix P (num_values, num_values) float64: P[a, b] = P(next = b | current = a)."""
    if num_values < 2 or not 1 <= degree <= num_values:
        raise ValueError(f"need num_values >= 2 and 1 <= degree <= num_values, got {num_values}, {degree}")
    g = torch.Generator().manual_seed(seed)
    p = torch.zeros(num_values, num_values, dtype=torch.float64)
    for a in range(num_values):
        succ = torch.randperm(num_values, generator=g)[:degree]
        w = -torch.log(torch.rand(degree, generator=g, dtype=torch.float64))  # Dirichlet(1) via exponentials
        p[a, succ] = w / w.sum()
    return p


def generate_markov(num: int, length: int, chain: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``num`` sequences of ``length`` from ``chain`` (uniform first token): (num, length) int64."""
    n_values = chain.shape[0]
    x = torch.empty(num, length, dtype=torch.long)
    x[:, 0] = torch.randint(0, n_values, (num,), generator=generator)
    for i in range(1, length):
        x[:, i] = torch.multinomial(chain[x[:, i - 1]], 1, generator=generator)[:, 0]
    return x


def markov_log_prob(x: Tensor, chain: Tensor) -> Tensor:
    """Exact log-probability of each sequence, (B, L) -> (B,) float64; -inf if any transition is impossible
    or a token is out of range."""
    n_values = chain.shape[0]
    ok = ((x >= 0) & (x < n_values)).all(-1)
    xc = x.clamp(0, n_values - 1)
    lp = torch.log(chain[xc[:, :-1], xc[:, 1:]]).sum(-1) - torch.log(torch.tensor(float(n_values), dtype=torch.float64))
    return torch.where(ok, lp, torch.full_like(lp, float("-inf")))


@dataclass(frozen=True)
class MarkovSource:
    """Fresh sequences of the chain (num_values, degree, seed) every training step (a ``train.DataSource``)."""

    length: int
    num_values: int = 24
    degree: int = 3
    seed: int = 0
    chain: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain", markov_chain(self.num_values, self.degree, self.seed))

    @property
    def num_tokens(self) -> int:
        return self.num_values

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        return generate_markov(n, self.length, self.chain, generator=generator)

    def describe(self) -> dict[str, Any]:
        return {"type": "markov", "length": self.length, "num_values": self.num_values, "degree": self.degree,
                "seed": self.seed}
