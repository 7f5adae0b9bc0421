"""Teacher trajectories for distillation (method.md §3): run the N-step teacher and cache what the losses need
at the student's M times, in one of two forms (``store``):

- "scores": the teacher's score rows (N real-token columns, float32) of the movable rows (absorbing graph:
  masked rows only, since nothing else is ever compared). About n L M / 2 rows of 4 N bytes: 823 MB per
  trajectory at N = 50,257, L = 1,024, M = 8 - hundreds of GB for a few hundred trajectories.
- "states": the teacher's states only (M (n, L) token arrays: 64 KiB per trajectory at L = 1,024, M = 8 in
  int64). The teacher's score at step k is a deterministic function of its state, s*_k = s_theta(x*_k,
  sigma_bar(t_k)), so ``score_at`` recomputes it with one network call per student step: the same numbers
  (up to the float rounding of a different batch), for one extra network call per student call.

Conditional teachers (``given``: prompts held fixed, ``lsdd distill --prompts``): trajectory i holds row i mod P
of the given tokens at every step; the cache keeps each trajectory's given row (``TeacherCache.given``) and stores
or compares no score row at a held position (they are not generated).

Shapes: n trajectories, L length, N real tokens, M student steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..graphs import Graph
from ..noise import Noise
from .. import dist
from ..sampling.draws import make_generator
from ..sampling.loop import CountedScore, ScoreFn, StepInfo, reverse_loop
from ..sampling.schedules import check_times, refine_times


@dataclass
class TeacherCache:
    """x_T: (n, L) start states. states[k]: (n, L) teacher state at student time k. rows[k]: (n, L) int64,
    the row of ``scores[k]`` holding the score at that position (-1 where not stored). scores[k]:
    (n_k, N) float32 real-token scores. x_0: (n, L) teacher outputs. times: the student grid (M + 1,).
    given: (n, L) int64, each trajectory's given tokens (``loop.free_token`` at its free positions), or None
    for an unconditional teacher."""

    x_T: Tensor
    states: list[Tensor]
    rows: list[Tensor]
    scores: list[Tensor]
    x_0: Tensor
    times: Tensor
    teacher_steps: int
    nfe: int
    seconds: float
    store: str = "scores"  # "scores" (rows kept) or "states" (scores recomputed from the states)
    sq_stats: Tensor | None = None  # (M, 2) float64: sum of squared real-token score rows, number of rows
    given: Tensor | None = None  # (n, L) int64: each trajectory's given tokens (conditional teachers)
    kind: str = "steps"  # "steps": the base rule's N steps (run_teacher); "exact": first hitting (run_exact_teacher)
    reveal: Tensor | None = None  # "exact": (n, L) float64 reveal time of every position (its state at any time)

    def __post_init__(self) -> None:
        if self.store not in STORES:
            raise ValueError(f"unknown teacher store {self.store!r}; expected one of {list(STORES)}")
        if self.kind not in TEACHER_KINDS:
            raise ValueError(f"unknown teacher kind {self.kind!r}; expected one of {list(TEACHER_KINDS)}")
        self._score_fn = None
        self.recomputed_calls = 0

    @property
    def num(self) -> int:
        return self.x_T.shape[0]

    def held(self, idx: Tensor | slice = slice(None)) -> Tensor | None:
        """(b, L) bool: the positions trajectories ``idx`` hold fixed (None for an unconditional teacher). The free
        token is the largest id of ``given``: one past the vocabulary, and every row has a free position."""
        return None if self.given is None else self.given[idx] != self.given.max()

    def take(self, idx: Tensor) -> "TeacherCache":
        """The trajectories ``idx`` (b,) int64, in that order (their score rows and the loss scales stay the whole
        run's, as ``subsample`` keeps them)."""
        out = TeacherCache(self.x_T[idx], [s[idx] for s in self.states], [r[idx] for r in self.rows], self.scores,
                           self.x_0[idx], self.times, self.teacher_steps, self.nfe, self.seconds, self.store,
                           self.sq_stats, given=None if self.given is None else self.given[idx], kind=self.kind,
                           reveal=None if self.reveal is None else self.reveal[idx])
        if self._score_fn is not None:
            out._score_fn, out._graph = self._score_fn, self._graph
        return out

    def attach(self, score_fn: ScoreFn, graph: Graph, noise: Noise) -> "TeacherCache":
        """Give a "states" cache the teacher's network (the one that made it) to recompute its scores."""
        self._score_fn = CountedScore(score_fn, graph, noise)
        self._graph = graph
        return self

    def score_at(self, k: int, idx: Tensor, device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """For trajectories ``idx`` (b,): (state (b, L), stored mask (b, L) bool, scores (b, L, N)), on ``device``
        for a "states" cache (recomputed there), on the CPU for a "scores" cache."""
        if self.store == "states":
            return self._recompute(k, idx, device)
        rows = self.rows[k][idx]
        stored = rows >= 0
        if self.scores[k].shape[0] == 0:  # no trajectory had a movable row at this step
            return self.states[k][idx], stored, self.scores[k].new_zeros(*rows.shape, self.scores[k].shape[-1])
        s = self.scores[k][rows.clamp_min(0)]
        return self.states[k][idx], stored, s * stored[..., None]

    def _recompute(self, k: int, idx: Tensor, device) -> tuple[Tensor, Tensor, Tensor]:
        if self._score_fn is None:
            raise RuntimeError("a 'states' teacher cache needs attach(score_fn, graph, noise) before use")
        graph = self._graph
        x = self.states[k][idx].to(device if device is not None else "cpu")
        stored = graph.movable(x)
        if self.given is not None:  # a held position is not generated: never compared
            stored = stored & (self.given[idx] == graph.num_tokens).to(x.device)
        if x.shape[0] == 0 or not stored.any():  # nothing to compare: no network call
            return x, stored, torch.zeros(*x.shape, graph.num_tokens, device=x.device)
        score = self._score_fn(x, self.times[k])[..., : graph.num_tokens].float()
        self.recomputed_calls += 1
        return x, stored, score * stored[..., None]

    def mean_sq(self, k: int) -> float:
        """Mean squared norm of the teacher's score rows at step k (a fixed scale for the l2 loss)."""
        if self.store == "states":
            total, count = (float(v) for v in self.sq_stats[k])
            return total / count if count > 0 else 1.0
        sc = self.scores[k].double()
        return float((sc * sc).sum(-1).mean()) if sc.numel() else 1.0

    def subsample(self, nfe: int) -> "TeacherCache":
        """The cache seen by a coarser student of ``nfe`` steps whose uniform grid nests in this one."""
        m = len(self.states)
        if nfe < 1 or m % nfe:
            raise ValueError(f"a {m}-step cache serves students whose steps divide {m}, not {nfe}")
        r = m // nfe
        sq = None if self.sq_stats is None else self.sq_stats[::r]
        out = TeacherCache(self.x_T, self.states[::r], self.rows[::r], self.scores[::r], self.x_0,
                           self.times[::r], self.teacher_steps, self.nfe, self.seconds, self.store, sq,
                           given=self.given, kind=self.kind, reveal=self.reveal)
        if self._score_fn is not None:
            out._score_fn, out._graph = self._score_fn, self._graph
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.states, *self.rows, *self.scores])

    def to_state(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


STORES = ("scores", "states")
TEACHER_KINDS = ("steps", "exact")  # the base rule's N steps, or first hitting (absorbing graph)


def full_cache_bytes(num: int, length: int, num_tokens: int, nfe: int) -> float:
    """Expected size of a "scores" cache for an absorbing model on a uniform grid: the masked fraction at the
    student times averages about 1/2, so about num L M / 2 rows of 4 N bytes."""
    return 0.5 * num * length * nfe * 4.0 * num_tokens


def choose_store(store: str, num: int, length: int, num_tokens: int, nfe: int, limit: float = 2 * 2**30) -> str:
    """"auto" -> "scores" while the score rows would take at most ``limit`` bytes (2 GiB), else "states"."""
    if store != "auto":
        if store not in STORES:
            raise ValueError(f"unknown teacher store {store!r}; expected auto or one of {list(STORES)}")
        return store
    return "scores" if full_cache_bytes(num, length, num_tokens, nfe) <= limit else "states"


def cache_file(folder, fingerprint: str, base: str, teacher_steps: int, nfe: int, num: int, batch_size: int,
               seed: int, eps: float, store: str, prompts: str | None = None):
    """Where a teacher run is kept in ``folder`` (``lsdd bench/distill --teacher-cache``): a name made of everything
    that determines the run - model fingerprint, the given tokens' fingerprint (``prompts``, conditional runs:
    ``prompt_fingerprint``; an unconditional name has none, so neither kind ever reads the other), base, teacher
    steps, the student grid it is cached on (uniform, ``nfe`` steps to ``eps``), trajectories, batch size (the
    random streams), seed and store - so that a file is only ever read by a command that would have made the same
    run."""
    from pathlib import Path

    cond = "" if prompts is None else f"_p{prompts}"
    return Path(folder) / (f"teacher_{fingerprint}{cond}_{base}_{teacher_steps}_m{nfe}_n{num}_b{batch_size}_s{seed}"
                           f"_e{eps:g}_{store}.pt")


def prompt_fingerprint(given: Tensor, digits: int = 16) -> str:
    """The first ``digits`` hex digits of the sha256 of given tokens (P, L) int64 (``prompts.Condition.given``):
    names a conditional teacher run (``cache_file``)."""
    import hashlib

    arr = given.detach().cpu().to(torch.int64).contiguous().numpy()
    head = f"{tuple(arr.shape)}".encode()
    return hashlib.sha256(head + arr.tobytes()).hexdigest()[:digits]


def find_cached(path, nfe: int):
    """The run ``path`` (a ``cache_file``) names, or the same run cached on a finer uniform grid (m a multiple of
    ``nfe``: uniform grids to the same end nest, so its states and scores at this grid's times are a subset), or
    either of these kept in the other store (a "scores" run serves a "states" reader as is; a "states" run serves a
    "scores" reader by recomputing the scores, one network call per student call); None when there is none."""
    if path.is_file():
        return path
    head, tail = path.name.split(f"_m{nfe}_", 1)
    rest, own = tail.rsplit("_", 1)  # own: "<store>.pt"
    for store in [own, *(f"{s}.pt" for s in STORES if f"{s}.pt" != own)]:
        for other in sorted(path.parent.glob(f"{head}_m*_{rest}_{store}")):
            m = other.name[len(head) + 2 :].split("_", 1)[0]
            if m.isdigit() and int(m) % nfe == 0:
                return other
    return None


def load_cached(path, nfe: int, device: torch.device | str = "cpu") -> TeacherCache:
    """Read a saved run and view it on the ``nfe``-step grid (``TeacherCache.subsample``)."""
    return TeacherCache(**torch.load(path, map_location=device, weights_only=True)).subsample(nfe)


def save_cached(cache: TeacherCache, path) -> None:
    """Write a run atomically (a reader never sees half a file)."""
    from .. import atomic

    with atomic.atomic_path(path) as tmp:
        torch.save(cache.to_state(), tmp)


def _movable(graph: Graph, x: Tensor, held: Tensor | None) -> Tensor:
    """(n, L) bool: the rows a teacher keeps - movable, and not held fixed (``held`` (n, L) bool or None)."""
    keep = graph.movable(x)
    return keep if held is None else keep & ~held.to(keep.device)


def _sq_stats(graph: Graph, x: Tensor, score: Tensor, held: Tensor | None = None) -> Tensor:
    """(2,) float64: sum over movable (free) rows of |real-token score row|^2, and the number of such rows."""
    keep = _movable(graph, x, held)
    sq = (score[..., : graph.num_tokens].double() ** 2).sum(-1)
    return torch.stack([(sq * keep).sum(), keep.sum().double()]).cpu()


def _pack(graph: Graph, x: Tensor, score: Tensor, held: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Keep the real-token score columns of movable (free) rows: (rows (n, L) int64, scores (n_k, N) float32)."""
    keep = _movable(graph, x, held)
    keep = keep.cpu()
    rows = torch.full(x.shape, -1, dtype=torch.long)
    rows[keep] = torch.arange(int(keep.sum()))
    return rows, score[..., : graph.num_tokens][keep.to(score.device)].float().cpu()


def _hold(graph: Graph, x_T: Tensor, given: Tensor | None, first: int) -> tuple[Tensor, Tensor | None]:
    """The start x_T (n, L) of trajectories first .. first + n - 1 with trajectory j holding row j mod P of ``given``
    (P, L) at its given positions, and those positions (n, L) bool; (x_T, None) without ``given``."""
    if given is None:
        return x_T, None
    rows = given[(first + torch.arange(x_T.shape[0])) % given.shape[0]].to(x_T.device)
    held = rows != graph.num_tokens
    return torch.where(held, rows, x_T), held


@torch.no_grad()
def run_teacher(score_fn: ScoreFn, graph: Graph, noise: Noise, student_times: Tensor, teacher_steps: int,
                num: int, length: int, *, method: str = "euler", batch_size: int = 64, seed: int = 0,
                device: torch.device | str = "cpu", progress: bool = True, store: str = "scores",
                coupled_seed: int | None = None, given: Tensor | None = None) -> TeacherCache:
    """Run ``num`` teacher trajectories of ``teacher_steps`` steps on the student grid refined uniformly
    (teacher_steps must be a multiple of M), caching the teacher's own scores at the student times
    (``store`` "scores") or only its states there ("states": the cache recomputes the scores, see the module).

    With ``coupled_seed`` the draws come from per-trajectory clocks and value uniforms instead
    (``lsdd.sampling.coupling``; absorbing graph), which a coupled student shares.

    Batch b of trajectories draws from ``make_generator(seed, device, b)``; under torch.distributed the
    batches are spread over the ranks and every rank gets the whole cache back (independent of the count).

    ``given`` (P, L) int64 (``prompts.Condition.given``): trajectory i holds row i mod P fixed (``loop.free_token``
    at the free positions); the start is the given token where there is one and the limit draw elsewhere, as
    ``samplers.sample`` starts.
    """
    check_times(student_times)
    m = student_times.numel() - 1
    if teacher_steps % m:
        raise ValueError(f"teacher steps ({teacher_steps}) must be a multiple of the student's ({m})")
    r = teacher_steps // m
    if given is not None and coupled_seed is not None:
        raise ValueError("coupled teacher paths (per-position clocks) do not hold given tokens; drop one of them")
    times = refine_times(student_times.to(torch.float64), r)
    n_batches = -(-num // batch_size)
    mine = dist.my_items(n_batches)
    per_batch: dict[int, tuple] = {}
    nfe, start = 0, time.perf_counter()
    # the bar counts teacher steps (batches x steps), not batches: a 1024-step teacher moves from its first step on
    bar = tqdm(total=len(mine) * teacher_steps, desc="teacher", unit="step", disable=not progress or not dist.is_main(),
               leave=False)
    for i, b in enumerate(mine):
        if not bar.disable:
            bar.set_postfix_str(f"batch {i + 1}/{len(mine)}", refresh=False)
        n = min(batch_size, num - b * batch_size)
        x_T, held = _hold(graph, graph.sample_limit(n, length, generator=make_generator(seed, device, b),
                                                    device=device), given, b * batch_size)
        cached = []

        def keep(info: StepInfo) -> None:
            if info.k % r == 0:
                if store == "states":
                    # no rows either: (n, 0) placeholders keep the per-trajectory slicing of callers working
                    packed = (torch.zeros(info.x.shape[0], 0, dtype=torch.long), torch.zeros(0, graph.num_tokens))
                else:
                    packed = _pack(graph, info.x, info.score, held)
                cached.append((info.x.cpu(), *packed, _sq_stats(graph, info.x, info.score, held)))
            bar.update(1)

        advance = None
        if coupled_seed is not None:
            from ..sampling.coupling import ClockAdvance, clock_noise

            advance = ClockAdvance(*clock_noise(coupled_seed, torch.arange(b * batch_size, b * batch_size + n), length))
        out = reverse_loop(score_fn, graph, noise, times, x_T, rule=method, on_score=keep,
                           generator=make_generator(seed, device, b, 1), advance=advance, fixed=held)
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
    sq = torch.stack([sum(c[k][3] for _, _, c in ordered) for k in range(m)])  # (M, 2)
    out = TeacherCache(x_T, states, rows, scores, x_0, student_times.cpu().to(torch.float64), teacher_steps, nfe,
                       time.perf_counter() - start, store, sq,
                       None if given is None else given.cpu()[torch.arange(num) % given.shape[0]])
    return out


def _check_cache_folder(folder, student_times: Tensor, coupled_seed: int | None) -> float:
    """Refuse what a teacher-cache folder cannot keep (coupled runs, non-uniform grids, a file for a folder);
    returns the grid's eps, part of the cached runs' names."""
    from pathlib import Path

    from .. import errors
    from ..sampling.schedules import uniform_times

    if coupled_seed is not None:
        raise ValueError("a teacher-cache folder keeps uncoupled teacher runs; it does not apply to coupled ones")
    eps = float(student_times[-1])
    if not torch.allclose(student_times.to(torch.float64), uniform_times(student_times.numel() - 1, eps)):
        raise errors.UserError("a teacher-cache folder keeps runs on uniform grids; it does not apply to a "
                               "non-uniform starting grid (--init-grid)")
    if Path(folder).exists() and not Path(folder).is_dir():
        raise errors.UserError(f"teacher cache {folder} is a file; it takes a folder")
    return eps


def get_teacher(model, student_times: Tensor, teacher_steps: int, num: int, *, method: str = "euler",
                batch_size: int = 64, seed: int = 0, store: str = "auto", folder=None,
                coupled_seed: int | None = None, progress: bool = True, log=print, given: Tensor | None = None,
                kind: str = "steps"):
    """The teacher run for these settings: read from ``folder`` when an earlier run saved the same one there (on
    this grid or a finer uniform one, in either store; ``find_cached``), else run it (``run_teacher``) and, with a
    ``folder``, save it there. The one place where a teacher run is looked up, run and kept.

    ``model``: a model value (score_fn, graph, noise, length, device, fingerprint). ``student_times`` (M + 1,):
    a uniform grid when ``folder`` is given (cached runs are named by M and eps). Returns (cache, the file it is
    kept in or None). ``given`` (P, L) int64: a conditional teacher (``run_teacher``), kept under a name of its
    own (``cache_file``'s ``prompts``). ``kind`` "exact": the first-hitting teacher instead
    (``get_exact_teacher``; ``teacher_steps`` and ``method`` do not apply).
    """
    from pathlib import Path

    if kind == "exact":
        return get_exact_teacher(model, student_times, num, batch_size=batch_size, seed=seed, store=store,
                                 folder=folder, coupled_seed=coupled_seed, progress=progress, log=log, given=given)
    if kind not in TEACHER_KINDS:
        raise ValueError(f"unknown teacher kind {kind!r}; expected one of {list(TEACHER_KINDS)}")

    m = student_times.numel() - 1
    store = choose_store(store, num, model.length, model.graph.num_tokens, m)
    saved = None
    if folder is not None:
        eps = _check_cache_folder(folder, student_times, coupled_seed)
        saved = cache_file(folder, model.fingerprint, method, teacher_steps, m, num, batch_size, seed, eps, store,
                           None if given is None else prompt_fingerprint(given))
        found = find_cached(saved, m)
        if found is not None:
            log(f"teacher: {teacher_steps} {method} steps x {num} trajectories, from {found}")
            return load_cached(found, m, model.device), Path(found).resolve()
    log(f"teacher: {teacher_steps} {method} steps x {num} trajectories of length {model.length}")
    cache = run_teacher(model.score_fn, model.graph, model.noise, student_times, teacher_steps, num, model.length,
                        method=method, batch_size=batch_size, seed=seed, device=model.device, progress=progress,
                        store=store, coupled_seed=coupled_seed, given=given)
    log(f"teacher done in {cache.seconds:.1f} s; cache {cache.nbytes() / 2**20:.1f} MiB ({cache.store})")
    if saved is not None:
        if dist.is_main():
            save_cached(cache, saved)
            log(f"teacher run saved to {saved}")
        return cache, Path(saved).resolve()
    return cache, None


# ---- the exact (first-hitting) teacher of masked models ---------------------------------------------------------
EXACT_STREAM = 16  # derive_seed(seed, EXACT_STREAM): the uncoupled exact teacher's per-trajectory clocks


def exact_cache_file(folder, fingerprint: str, nfe: int, num: int, seed: int, eps: float, store: str,
                     prompts: str | None = None):
    """Where an exact (first-hitting) teacher run is kept in ``folder``: like ``cache_file``, with "exact" where a
    step teacher has its base and step count (so a run of one kind is never read as the other: ``find_cached``
    only looks at names with the same head) and no batch size (each trajectory draws from its own stream); a
    conditional run carries its prompts' fingerprint (``_p<fp>``), as ``cache_file`` names them."""
    from pathlib import Path

    cond = "" if prompts is None else f"_p{prompts}"
    return Path(folder) / f"teacher_{fingerprint}_exact_m{nfe}_n{num}_s{seed}_e{eps:g}{cond}_{store}.pt"


def _assemble(per_batch: list[tuple], m: int) -> tuple[list[Tensor], list[Tensor], list[Tensor], Tensor]:
    """Concatenate per-batch (x_T, x_0, cached, ...) runs, cached[k] = (state, rows, scores, sq stats): the cache's
    states, rows (renumbered into the concatenated scores), scores and (M, 2) squared-score sums."""
    states, rows, scores = [], [], []
    for k in range(m):
        offset, r_k = 0, []
        for part in per_batch:
            rk = part[2][k][1].clone()
            rk[rk >= 0] += offset
            offset += part[2][k][2].shape[0]
            r_k.append(rk)
        states.append(torch.cat([p[2][k][0] for p in per_batch]))
        rows.append(torch.cat(r_k))
        scores.append(torch.cat([p[2][k][2] for p in per_batch]))
    sq = torch.stack([sum(p[2][k][3] for p in per_batch) for k in range(m)])
    return states, rows, scores, sq


@torch.no_grad()
def run_exact_teacher(score_fn: ScoreFn, graph: Graph, noise: Noise, student_times: Tensor, num: int, length: int,
                      *, batch_size: int = 64, seed: int = 0, device: torch.device | str = "cpu",
                      progress: bool = True, store: str = "scores", coupled_seed: int | None = None,
                      given: Tensor | None = None) -> TeacherCache:
    """The exact teacher of a masked model: ``num`` trajectories of its continuous-time reverse process, sampled by
    first hitting (``lsdd.sampling.first_hitting``: one network call per revealed token, L per trajectory, no
    discretisation), cached as ``run_teacher`` caches its runs - x_T (all masks), the states at the student times
    t_0..t_{M-1} (a token is unmasked at t_k iff its reveal time is later than t_k), x_0 and, per ``store``, the
    scores at those states and times (one more network call per student time and batch: L + M calls per batch in
    all) - plus every reveal time (``TeacherCache.reveal``). The fit reads it exactly as a step teacher's cache.

    Randomness: trajectory j draws its clocks and value uniforms from its own stream
    (``coupling.clock_noise(derive_seed(seed, EXACT_STREAM), j)``), so a run does not depend on ``batch_size``
    (up to the float rounding of a differently batched network). With ``coupled_seed`` they are the coupled
    student's clocks (``clock_noise(coupled_seed, j)``): a token is revealed in student step k iff its reveal time
    falls in [t_{k+1}, t_k), and the student's coupled draw unmasks it in the step where its own cumulative hazard
    passes the same clock. Absorbing graph only. Under torch.distributed the batches are spread over the ranks.

    ``given`` (P, L) int64 (``prompts.Condition.given``): trajectory j holds row j mod P fixed, as ``run_teacher``
    does. A held token is never revealed (its reveal time is -inf, so it is in every cached state) and the network
    reads it as given, which on the absorbing graph is exact conditioning: first hitting then samples the model's
    reverse process given the prompt, with one call per free token (L - K calls for a prompt of K tokens).
    """
    from ..sampling.coupling import clock_noise
    from ..sampling.draws import derive_seed
    from ..sampling.first_hitting import first_hitting_loop, states_at

    if not graph.absorbing:
        raise ValueError(f"the exact (first-hitting) teacher needs a masked (absorbing) model, not the {graph.name} "
                         "graph")
    if given is not None and coupled_seed is not None:
        raise ValueError("coupled teacher paths (per-position clocks) do not hold given tokens; drop one of them")
    check_times(student_times)
    m = student_times.numel() - 1
    grid = student_times.to(torch.float64).cpu()
    noise_seed = coupled_seed if coupled_seed is not None else derive_seed(seed, EXACT_STREAM)
    n_batches = -(-num // batch_size)
    mine = dist.my_items(n_batches)
    per_batch: dict[int, tuple] = {}
    calls, start = 0, time.perf_counter()
    bar = tqdm(total=len(mine) * (length + m), desc="exact teacher", unit="call",
               disable=not progress or not dist.is_main(), leave=False)
    call = CountedScore(score_fn, graph, noise)
    for i, b in enumerate(mine):
        if not bar.disable:
            bar.set_postfix_str(f"batch {i + 1}/{len(mine)}", refresh=False)
        n = min(batch_size, num - b * batch_size)
        x_T, held = _hold(graph, graph.sample_limit(n, length, device=device), given, b * batch_size)
        clocks, values = clock_noise(noise_seed, torch.arange(b * batch_size, b * batch_size + n), length)
        out = first_hitting_loop(call, graph, noise, x_T, clocks, values, t_start=float(grid[0]),
                                 t_end=float(grid[-1]), fixed=held, on_call=lambda *a: bar.update(1))
        if held is not None:  # a batch makes as many calls as its freest row has free tokens: the bar counts L
            bar.update(length - out.calls)
        cached = []
        for k, x in enumerate(states_at(out.x, out.reveal, grid[:-1], graph.mask_id)):
            score = call(x, grid[k])
            if store == "states":
                packed = (torch.zeros(n, 0, dtype=torch.long), torch.zeros(0, graph.num_tokens))
            else:
                packed = _pack(graph, x, score, held)
            cached.append((x.cpu(), *packed, _sq_stats(graph, x, score, held)))
            bar.update(1)
        per_batch[b] = (x_T.cpu(), out.x.cpu(), cached, out.reveal.cpu())
    calls = call.calls
    bar.close()
    per_batch = dist.gather_items(per_batch, n_batches)
    calls = int(dist.all_reduce_sum(torch.tensor([calls]))[0])
    ordered = [per_batch[b] for b in range(n_batches)]
    states, rows, scores, sq = _assemble(ordered, m)
    return TeacherCache(torch.cat([p[0] for p in ordered]), states, rows, scores, torch.cat([p[1] for p in ordered]),
                        grid, length, calls, time.perf_counter() - start, store, sq,
                        None if given is None else given.cpu()[torch.arange(num) % given.shape[0]], kind="exact",
                        reveal=torch.cat([p[3] for p in ordered]))


def get_exact_teacher(model, student_times: Tensor, num: int, *, batch_size: int = 64, seed: int = 0,
                      store: str = "auto", folder=None, coupled_seed: int | None = None, progress: bool = True,
                      log=print, given: Tensor | None = None):
    """``get_teacher`` for the exact teacher (``run_exact_teacher``): read from ``folder`` when an earlier run saved
    the same one there (``exact_cache_file``; on this grid or a finer uniform one, in either store), else run it
    and, with a ``folder``, save it there. ``given``: a conditional run (``run_exact_teacher``), kept under a name
    of its own. Returns (cache, the file it is kept in or None)."""
    from pathlib import Path

    m = student_times.numel() - 1
    store = choose_store(store, num, model.length, model.graph.num_tokens, m)
    saved = None
    if folder is not None:
        eps = _check_cache_folder(folder, student_times, coupled_seed)
        saved = exact_cache_file(folder, model.fingerprint, m, num, seed, eps, store,
                                 None if given is None else prompt_fingerprint(given))
        found = find_cached(saved, m)
        if found is not None:
            log(f"teacher: exact (first hitting) x {num} trajectories, from {found}")
            return load_cached(found, m, model.device), Path(found).resolve()
    log(f"teacher: exact (first hitting) x {num} trajectories of length {model.length}: {model.length} network "
        f"calls per batch of up to {batch_size}, + {m} at the student times")
    cache = run_exact_teacher(model.score_fn, model.graph, model.noise, student_times, num, model.length,
                              batch_size=batch_size, seed=seed, device=model.device, progress=progress, store=store,
                              coupled_seed=coupled_seed, given=given)
    log(f"teacher done in {cache.seconds:.1f} s ({cache.nfe} network calls); cache "
        f"{cache.nbytes() / 2**20:.1f} MiB ({cache.store})")
    if saved is not None:
        if dist.is_main():
            save_cached(cache, saved)
            log(f"teacher run saved to {saved}")
        return cache, Path(saved).resolve()
    return cache, None
