"""Teacher trajectories for distillation (method.md §3): run the N-step teacher and cache its scores at
the student's M times, compactly (absorbing graph: masked rows only, since nothing else is ever compared).

Shapes: n trajectories, L length, N real tokens, M student steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .graphs import Graph
from .noise import Noise
from .samplers import ScoreFn, get_step_probs, sample_categorical
from .schedules import check_times, refine_times


@dataclass
class TeacherCache:
    """x_T: (n, L) start states. states[k]: (n, L) teacher state at student time k. rows[k]: (n, L) int64,
    the row of ``scores[k]`` holding the score at that position (-1 where not stored). scores[k]:
    (n_k, N) float32 real-token scores. x_0: (n, L) teacher outputs. times: the student grid (M + 1,)."""

    x_T: Tensor
    states: list[Tensor]
    rows: list[Tensor]
    scores: list[Tensor]
    x_0: Tensor
    times: Tensor
    teacher_steps: int
    nfe: int
    seconds: float

    @property
    def num(self) -> int:
        return self.x_T.shape[0]

    def score_at(self, k: int, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For trajectories ``idx`` (b,): (state (b, L), stored mask (b, L) bool, scores (b, L, N))."""
        rows = self.rows[k][idx]
        stored = rows >= 0
        s = self.scores[k][rows.clamp_min(0)]
        return self.states[k][idx], stored, s * stored[..., None]

    def mean_sq(self, k: int) -> float:
        """Mean squared norm of the cached score rows at step k (a fixed scale for the l2 loss)."""
        sc = self.scores[k].double()
        return float((sc * sc).sum(-1).mean()) if sc.numel() else 1.0

    def subsample(self, nfe: int) -> "TeacherCache":
        """The cache seen by a coarser student of ``nfe`` steps whose uniform grid nests in this one."""
        m = len(self.states)
        if nfe < 1 or m % nfe:
            raise ValueError(f"a {m}-step cache serves students whose steps divide {m}, not {nfe}")
        r = m // nfe
        return TeacherCache(self.x_T, self.states[::r], self.rows[::r], self.scores[::r], self.x_0,
                            self.times[::r], self.teacher_steps, self.nfe, self.seconds)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.states, *self.rows, *self.scores])

    def to_state(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _pack(graph: Graph, x: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
    """Keep the real-token score columns of movable rows: (rows (n, L) int64, scores (n_k, N) float32)."""
    keep = graph.movable(x)
    rows = torch.full(x.shape, -1, dtype=torch.long)
    rows[keep.cpu()] = torch.arange(int(keep.sum()))
    return rows, score[..., : graph.num_tokens][keep].float().cpu()


@torch.no_grad()
def run_teacher(score_fn: ScoreFn, graph: Graph, noise: Noise, student_times: Tensor, teacher_steps: int,
                num: int, length: int, *, method: str = "euler", batch_size: int = 64,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                progress: bool = True) -> TeacherCache:
    """Run ``num`` teacher trajectories of ``teacher_steps`` steps on the student grid refined uniformly
    (teacher_steps must be a multiple of M), caching the teacher's own scores at the student times."""
    check_times(student_times)
    m = student_times.numel() - 1
    if teacher_steps % m:
        raise ValueError(f"teacher steps ({teacher_steps}) must be a multiple of the student's ({m})")
    r = teacher_steps // m
    times = refine_times(student_times.to(torch.float64), r).to(device)
    step_probs = get_step_probs(method)
    x_T, x_0, per_batch = [], [], []
    nfe, start = 0, time.perf_counter()
    bar = tqdm(total=num * teacher_steps, desc="teacher", unit="call", unit_scale=1, disable=not progress,
               leave=False)
    for b0 in range(0, num, batch_size):
        b = min(batch_size, num - b0)
        x = graph.sample_limit(b, length, generator=generator, device=device)
        x_T.append(x.cpu())
        cached = []
        for j in range(teacher_steps):
            t, s = times[j], times[j + 1]
            score = score_fn(x, noise.total(t).float().expand(b))
            nfe += 1
            if j % r == 0:
                cached.append((x.cpu(), *_pack(graph, x, score)))
            probs = step_probs(graph, noise, x, score, t, s, last=(j == teacher_steps - 1))
            x = sample_categorical(probs, generator)
            bar.update(b)
        x_0.append(x.cpu())
        per_batch.append(cached)
    bar.close()
    states, rows, scores = [], [], []
    for k in range(m):
        offset, r_k = 0, []
        for cached in per_batch:
            rk = cached[k][1].clone()
            rk[rk >= 0] += offset
            offset += cached[k][2].shape[0]
            r_k.append(rk)
        states.append(torch.cat([c[k][0] for c in per_batch]))
        rows.append(torch.cat(r_k))
        scores.append(torch.cat([c[k][2] for c in per_batch]))
    return TeacherCache(torch.cat(x_T), states, rows, scores, torch.cat(x_0), student_times.cpu().to(torch.float64),
                        teacher_steps, nfe, time.perf_counter() - start)
