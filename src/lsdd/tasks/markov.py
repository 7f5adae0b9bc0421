"""Metrics of the sparse Markov chain task (``lsdd.data.markov``): a second task whose transitions are
stochastic (countdown's are deterministic runs).

Quality: ``invalid_rate`` - the fraction of a sample's transitions that the chain forbids (or that touch a
token out of range), averaged over samples; ``any_invalid``; ``successor_tv`` - for each current token a, the TV
distance between the generated successor distribution and the chain's row P[a], weighted by how often a occurs
(catches both forbidden moves and a wrong balance between allowed ones); ``nll`` - the exact mean NLL per
transition of the valid transitions. Diversity: ``successor_entropy`` - the entropy of the generated
successor distributions (same weighting), to read against ``chain_entropy``, the chain's own: a sharpened
sampler falls below it, a noisy one rises above it.

Data: fresh sequences of the chain every training step (``lsdd train --task markov``); samples decode to their
token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..data.markov import markov_chain
from ..errors import UserError
from .base import MetricSpec, Task, bundled_name, check_samples


@dataclass
class MarkovTask(Task):
    num_values: int = 24
    degree: int = 3
    seed: int = 0
    chain: Tensor = field(init=False, repr=False)

    name: ClassVar[str] = "markov"
    metrics: ClassVar[list[MetricSpec]] = [
        MetricSpec("invalid_rate", "fraction of transitions the chain forbids", False, "quality"),
        MetricSpec("any_invalid", "fraction of samples with a forbidden transition", False, "quality"),
        MetricSpec("successor_tv", "TV of generated successor laws to the chain's, frequency-weighted", False,
                   "quality"),
        MetricSpec("nll", "exact NLL per valid transition (nats)", False, "quality"),
        MetricSpec("successor_entropy", "entropy of generated successor laws (nats)", True, "diversity"),
        MetricSpec("chain_entropy", "the chain's own successor entropy, same weighting", False, "reference"),
    ]
    pairs: ClassVar[list[tuple[str, str]]] = [("invalid_rate", "successor_entropy"),
                                               ("successor_tv", "successor_entropy")]
    default_model: ClassVar[str] = "markov"
    data_options: ClassVar[tuple[str, ...]] = ("length", "num_values")  # degree and seed: the chain's defaults
    generates_data: ClassVar[bool] = True

    def __post_init__(self) -> None:
        try:
            self.chain = markov_chain(self.num_values, self.degree, self.seed)
        except ValueError as e:
            raise UserError(str(e)) from None

    @classmethod
    def matches(cls, model) -> bool:
        return bundled_name(model) == cls.default_model

    @classmethod
    def data(cls, length: int = 48, num_values: int = 24, degree: int = 3, seed: int = 0):
        """Fresh sequences of ``length`` from the chain (num_values, degree, seed) every training step."""
        from ..data.markov import MarkovSource

        if length < 2:
            raise UserError(f"--length must be >= 2 for the markov task, got {length}")
        try:
            return MarkovSource(length, num_values, degree, seed)
        except ValueError as e:
            raise UserError(str(e)) from None

    @classmethod
    def data_from_record(cls, record: dict[str, Any], directory):
        return cls.data(record["length"], record["num_values"], record["degree"], record["seed"])

    def compute(self, samples: Tensor) -> dict[str, float]:
        x = check_samples(samples)
        n_values = self.num_values
        prev, cur = x[:, :-1], x[:, 1:]
        ok = (prev >= 0) & (prev < n_values) & (cur >= 0) & (cur < n_values)
        p = self.chain[prev.clamp(0, n_values - 1), cur.clamp(0, n_values - 1)]
        bad = ~ok | (p == 0)
        invalid = bad.double().mean(1)
        counts = torch.zeros(n_values, n_values, dtype=torch.float64)
        counts.index_put_((prev[ok], cur[ok]), torch.ones(int(ok.sum()), dtype=torch.float64), accumulate=True)
        row = counts.sum(1)
        w = row / row.sum().clamp_min(1.0)
        emp = counts / row.clamp_min(1.0)[:, None]
        tv = 0.5 * (emp - self.chain).abs().sum(1)
        h_emp = -(emp * torch.log(emp.clamp_min(1e-300))).sum(1)
        h_chain = -(self.chain * torch.log(self.chain.clamp_min(1e-300))).sum(1)
        good = ~bad
        nll = float(-torch.log(p[good]).mean()) if bool(good.any()) else float("nan")
        return {"invalid_rate": float(invalid.mean()), "any_invalid": float(bad.any(1).double().mean()),
                "successor_tv": float((w * tv).sum()), "nll": nll,
                "successor_entropy": float((w * h_emp).sum()), "chain_entropy": float((w * h_chain).sum())}
