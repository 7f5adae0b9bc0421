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
from . import dist
from .draws import make_generator
from .loop import ScoreFn, StepInfo, reverse_loop
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
        if self.scores[k].shape[0] == 0:  # no trajectory had a movable row at this step
            return self.states[k][idx], stored, self.scores[k].new_zeros(*rows.shape, self.scores[k].shape[-1])
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
    keep = keep.cpu()
    rows = torch.full(x.shape, -1, dtype=torch.long)
    rows[keep] = torch.arange(int(keep.sum()))
    return rows, score[..., : graph.num_tokens][keep.to(score.device)].float().cpu()


@torch.no_grad()
def run_teacher(score_fn: ScoreFn, graph: Graph, noise: Noise, student_times: Tensor, teacher_steps: int,
                num: int, length: int, *, method: str = "euler", batch_size: int = 64, seed: int = 0,
                device: torch.device | str = "cpu", progress: bool = True,
                coupled_seed: int | None = None) -> TeacherCache:
    """Run ``num`` teacher trajectories of ``teacher_steps`` steps on the student grid refined uniformly
    (teacher_steps must be a multiple of M), caching the teacher's own scores at the student times.

    With ``coupled_seed`` the draws come from per-trajectory clocks and value uniforms instead
    (``lsdd.coupling``; absorbing graph), which a coupled student shares.

    Batch b of trajectories draws from ``make_generator(seed, device, b)``; under torch.distributed the
    batches are spread over the ranks and every rank gets the whole cache back (independent of the count).
    """
    check_times(student_times)
    m = student_times.numel() - 1
    if teacher_steps % m:
        raise ValueError(f"teacher steps ({teacher_steps}) must be a multiple of the student's ({m})")
    r = teacher_steps // m
    times = refine_times(student_times.to(torch.float64), r)
    n_batches = -(-num // batch_size)
    mine = dist.my_items(n_batches)
    per_batch: dict[int, tuple] = {}
    nfe, start = 0, time.perf_counter()
    bar = tqdm(total=len(mine) * teacher_steps, desc="teacher", unit="step", disable=not progress or not dist.is_main(),
               leave=False)
    for b in mine:
        n = min(batch_size, num - b * batch_size)
        x_T = graph.sample_limit(n, length, generator=make_generator(seed, device, b), device=device)
        cached = []

        def keep(info: StepInfo) -> None:
            if info.k % r == 0:
                cached.append((info.x.cpu(), *_pack(graph, info.x, info.score)))
            bar.update(1)

        advance = None
        if coupled_seed is not None:
            from .coupling import ClockAdvance, clock_noise

            advance = ClockAdvance(*clock_noise(coupled_seed, torch.arange(b * batch_size, b * batch_size + n), length))
        out = reverse_loop(score_fn, graph, noise, times, x_T, rule=method, on_score=keep,
                           generator=make_generator(seed, device, b, 1), advance=advance)
        nfe += out.nfe
        per_batch[b] = (x_T.cpu(), out.x.cpu(), cached)
    bar.close()
    per_batch = dist.gather_items(per_batch, n_batches)
    nfe = int(dist.all_reduce_sum(torch.tensor([nfe]))[0])
    ordered = [per_batch[b] for b in range(n_batches)]
    states, rows, scores = [], [], []
    for k in range(m):
        offset, r_k = 0, []
        for _, _, cached in ordered:
            rk = cached[k][1].clone()
            rk[rk >= 0] += offset
            offset += cached[k][2].shape[0]
            r_k.append(rk)
        states.append(torch.cat([c[k][0] for _, _, c in ordered]))
        rows.append(torch.cat(r_k))
        scores.append(torch.cat([c[k][2] for _, _, c in ordered]))
    x_T = torch.cat([p[0] for p in ordered])
    x_0 = torch.cat([p[1] for p in ordered])
    return TeacherCache(x_T, states, rows, scores, x_0, student_times.cpu().to(torch.float64), teacher_steps, nfe,
                        time.perf_counter() - start)
