"""The countdown task (method.md §8; Zhao et al., as run by JYS/LSD).

A sequence is a concatenation of runs s, s-1, ..., 0 with s uniform in {0..num_values-1}, cut to ``length``.
Rule: after a non-zero token k the next token must be k - 1; after 0 anything may follow.
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_VALUES = 32


def generate_countdown(num: int, length: int, num_values: int = DEFAULT_VALUES,
                       generator: torch.Generator | None = None) -> Tensor:
    """Draw ``num`` countdown sequences, (num, length) int64 with values in [0, num_values).

    Vectorised: at most ``length`` runs are needed per sequence (each run has >= 1 token).
    """
    if num < 0 or length < 1 or num_values < 1:
        raise ValueError(f"need num >= 0, length >= 1, num_values >= 1; got {num}, {length}, {num_values}")
    starts = torch.randint(0, num_values, (num, length), generator=generator)  # run start values
    run_len = starts + 1
    run_end = run_len.cumsum(-1)  # exclusive end position of each run
    pos = torch.arange(length).expand(num, length)
    run_idx = torch.searchsorted(run_end, pos.contiguous(), right=True)  # which run covers each position
    run_begin = run_end.gather(-1, run_idx) - run_len.gather(-1, run_idx)
    return starts.gather(-1, run_idx) - (pos - run_begin)


def countdown_log_prob(x: Tensor, num_values: int = DEFAULT_VALUES) -> Tensor:
    """Exact log-probability of each sequence under the generator, (B, L) -> (B,) float64; -inf if invalid.

    Each run start costs log(1/num_values); a run that is cut off at the end costs the same (its start was
    drawn); every forced continuation costs nothing.
    """
    x = x.long()
    prev, cur = x[:, :-1], x[:, 1:]
    forced = prev != 0
    valid = (~forced | (cur == prev - 1)).all(-1) & (x >= 0).all(-1) & (x < num_values).all(-1)
    n_starts = 1 + (~forced).sum(-1)  # the first token and every token after a 0 start a run
    lp = -n_starts.to(torch.float64) * torch.log(torch.tensor(float(num_values), dtype=torch.float64))
    return torch.where(valid, lp, torch.full_like(lp, float("-inf")))
