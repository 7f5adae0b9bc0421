"""``distill(model, method, nfe)``: teacher -> fit -> validate -> accept, in one place.

The command line (``lsdd distill``), the bench (``lsdd bench``) and Python (``lsdd.distill``) all call this
function, so the same inputs give the same sampler whatever the entry point:

1. **teacher**: ``Teacher.num_traj`` trajectories of ``Teacher.nfe`` base-rule steps, read from
   ``Teacher.cache_dir`` when an earlier run saved the same one there, else run (and saved there);
2. **fit**: the method (``LSD``, ``LSDPlus``, ``LSDC``, ``JYS``; ``lsdd.distillation.methods``) learns its numbers
   on the first ``1 - val_frac`` of the trajectories;
3. **validate**: the learned sampler and its base (Phi = 1 on the starting grid, the same movers) each draw
   ``val_samples`` samples from the same streams, compared on the held-out teacher outputs with paired
   bootstrap intervals at ``val_level`` (``lsdd.distillation.validate``);
4. **accept**: the learned sampler if validation finds it better beyond noise, else the base (the learned numbers
   and every figure stay in its provenance), unless ``force``.

**Conditional distillation** (``prompts``: P prompts, ``lsdd distill --prompts``): teacher trajectory i continues
prompt i mod P (its tokens held at every step); the prompts some trajectory continues (the first min(P, num_traj))
are split into training prompts and held-out ones - ``round(val_frac x used)`` of them, at least 1, with at least 1
left to train on (fewer than 2 prompts: an error with validation), spread evenly over the prompts (at val_frac 0.25
the last of every 4), so that prompts read from consecutive windows of a text are held out all along it -, the
student is fitted on the
trajectories of the training prompts only, and validation draws base and learned continuations of the held-out
prompts and compares them with the held-out prompts' teacher continuations, on the continuations only. The teacher
cache names the prompts (``teacher.cache_file``), and the sampler's provenance records them (``conditional``:
their number and sha256).

Learnable Sampler Distillation: Fu, Guo, Liu, NeurIPS 2025, arXiv 2509.19962.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from .. import atomic, dist
from ..errors import UserError
from ..models.features import hidden_states
from ..sampling.prompts import Condition
from ..sampling.sampler import Sampler
from ..sampling.steps import ONE_CALL
from . import distill as engine  # the fitting engine (looked up at call time: tests wrap it)
from .distill import DistillConfig, DistillResult, to_sampler, validate_learned
from .methods import JYS, get_method
from .objective import needs_network
from .teacher import STORES, TEACHER_KINDS, TeacherCache, get_teacher, load_cached, prompt_fingerprint, save_cached
from .validate import Validation


@dataclass(frozen=True)
class Teacher:
    """The many-step teacher a sampler is distilled from.

    nfe: teacher steps N (a multiple of the student's). num_traj: trajectories (``val_frac`` of them are held
    out for validation). batch_size: trajectories per network call (and per random stream). chunk: trajectories
    per student random stream (the unit spread over torchrun processes). store: "scores" keeps the teacher's score
    rows, "states" only its states (scores recomputed: one more call per student call), "auto" scores up to 2 GiB.
    cache_dir: keep the run in this folder and reuse it when a later command needs the same one.
    kind: "steps" (the base rule's ``nfe`` steps), "exact" (masked models only: the model's continuous-time
    reverse process sampled by first hitting, one network call per token and no discretisation error,
    ``lsdd.sampling.first_hitting``; ``nfe`` does not apply) or "auto" (the default): "exact" on a masked
    (absorbing-graph) model whose length L is at most ``nfe`` - it then costs L + M calls per batch of
    trajectories against the step teacher's N, with no discretisation error - and "steps" otherwise
    (``resolved``).
    """

    nfe: int = 1024
    num_traj: int = 256
    batch_size: int = 64
    chunk: int = 16
    seed: int = 0
    eps: float = 1e-5
    store: str = "auto"
    cache_dir: str | None = None
    kind: str = "auto"

    def resolved(self, model) -> "Teacher":
        """This teacher with ``kind`` "auto" made concrete for ``model`` (class docstring): "exact" on an
        absorbing-graph model of length at most ``nfe``, else "steps"."""
        if self.kind != "auto":
            return self
        exact = model.graph.absorbing and model.length <= self.nfe
        return replace(self, kind="exact" if exact else "steps")

    def check(self) -> None:
        if self.nfe < 1 or self.num_traj < 1 or self.batch_size < 1 or self.chunk < 1:
            raise UserError(f"teacher nfe, num_traj, batch_size and chunk must be >= 1, got {self.nfe}, "
                            f"{self.num_traj}, {self.batch_size}, {self.chunk}")
        if not 0.0 < self.eps < 1.0:
            raise UserError(f"eps must lie in (0, 1), got {self.eps}")
        if self.kind not in ("auto", *TEACHER_KINDS):
            raise UserError(f"teacher kind must be auto or one of {list(TEACHER_KINDS)}, got {self.kind!r}")
        if self.store not in ("auto", *STORES):
            raise UserError(f"teacher store must be auto or one of {list(STORES)}, got {self.store!r}")
        if self.cache_dir is not None and Path(self.cache_dir).exists() and not Path(self.cache_dir).is_dir():
            raise UserError(f"teacher cache {self.cache_dir} is a file; it takes a folder")


class Distilled(NamedTuple):
    """What ``distill`` returns: the accepted sampler (bound to the model) and the validation verdict (None
    with ``validate=False``)."""

    sampler: Sampler
    validation: Validation | None


class PromptSplit(NamedTuple):
    """How a conditional distillation uses its prompts (module docstring): ``order`` (num_traj,) int64, the teacher
    trajectories with those of the training prompts first and those of the held-out prompts last; ``num_val`` the
    held-out trajectories; ``used`` the prompts some trajectory continues; ``val_prompts`` how many of them (the
    last ones) are held out."""

    condition: Condition
    order: Tensor
    num_val: int
    used: int
    val_prompts: int

    def record(self) -> dict[str, Any]:
        """What the sampler's provenance keeps (``conditional``)."""
        import hashlib

        given = self.condition.given.to(torch.int64).contiguous().numpy()
        return {"kind": self.condition.kind, "num_prompts": int(given.shape[0]), "prompts_used": self.used,
                "held_out_prompts": self.val_prompts, "held_out_trajectories": self.num_val,
                "sha256": hashlib.sha256(f"{given.shape}".encode() + given.tobytes()).hexdigest(),
                "fingerprint": prompt_fingerprint(self.condition.given)}


def split_prompts(condition: Condition, num_traj: int, val_frac: float, validate: bool) -> PromptSplit:
    """The training / held-out split of a conditional distillation's prompts (module docstring); UserError when
    validation has fewer than 2 prompts to split."""
    p = condition.given.shape[0]
    used = min(p, num_traj)
    prompt_of = torch.arange(num_traj) % p
    if not validate:
        return PromptSplit(condition, torch.arange(num_traj), 0, used, 0)
    if used < 2:
        why = f"{p} prompt" if p < 2 else f"{num_traj} teacher trajectory"
        raise UserError(f"conditional validation holds prompts out of the fit, so it needs at least 2 prompts that "
                        f"trajectories continue; got {why}: give more, or pass --no-validate")
    val_prompts = min(max(int(round(used * val_frac)), 1), used - 1)
    j = torch.arange(used)
    spread = (j + 1) * val_prompts // used > j * val_prompts // used  # val_prompts of them, evenly spaced
    held_out = spread[prompt_of]
    order = torch.cat([torch.nonzero(~held_out).flatten(), torch.nonzero(held_out).flatten()])
    return PromptSplit(condition, order, int(held_out.sum()), used, val_prompts)


def as_condition(model, prompts: Any) -> Condition | None:
    """``prompts`` as a Condition: None, a Condition, or what ``lsdd.sample``'s ``prompt`` takes (texts with the
    model's tokenizer, token ids; ``lsdd.sampling.prompts.from_prompt``)."""
    from ..sampling.prompts import from_prompt

    if prompts is None or isinstance(prompts, Condition):
        return prompts
    return from_prompt(model, prompts)


def engine_config(method, nfe: int, base: str, teacher: Teacher, validate: bool, val_frac: float,
                  val_samples: int, init_times: tuple[float, ...] | None, val_level: float = 0.95,
                  val_traj: int | None = None) -> DistillConfig:
    """The fitting engine's config for these settings (internal to the pipeline)."""
    cfg = DistillConfig(**method.engine_fields(), base=base, nfe=nfe, teacher_nfe=teacher.nfe, num_traj=teacher.num_traj,
                        batch_size=teacher.batch_size, chunk=teacher.chunk, seed=teacher.seed, eps=teacher.eps,
                        teacher_store=teacher.store, teacher_kind=teacher.kind, validation=validate, val_frac=val_frac,
                        val_samples=val_samples, val_level=val_level, init_times=init_times, val_traj=val_traj)
    try:
        cfg.validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    return cfg


def prepare(model, method="lsd-c", nfe: int = 8, *, base: str = "euler", teacher: Teacher | None = None,
            validate: bool = True, val_frac: float = 0.25, val_samples: int = 512, val_level: float = 0.95,
            init_grid: Sampler | None = None, prompts: Any = None) -> tuple[Any, DistillConfig]:
    """Check every setting against the model before any work; returns (method object, engine config)."""
    method, cfg, _ = _prepare(model, method, nfe, base=base, teacher=teacher, validate=validate, val_frac=val_frac,
                              val_samples=val_samples, val_level=val_level, init_grid=init_grid, prompts=prompts)
    return method, cfg


def _prepare(model, method, nfe, *, base, teacher, validate, val_frac, val_samples, val_level, init_grid,
             prompts) -> tuple[Any, DistillConfig, PromptSplit | None]:
    """``prepare``, with the prompt split (None without prompts)."""
    method = get_method(method)
    method.check()
    teacher = teacher or Teacher()
    teacher.check()
    teacher = teacher.resolved(model)
    split = None
    cond = as_condition(model, prompts)  # a bad prompt: UserError, before any work
    if cond is not None:
        if isinstance(method, JYS):
            raise UserError("--prompts does not apply to --method jys (its KLUB search reads unconditional outputs)")
        split = split_prompts(cond, teacher.num_traj, val_frac, validate)
    if base not in ONE_CALL:
        raise UserError(f"base must be one of {list(ONE_CALL)}, got {base!r}")
    if not isinstance(nfe, int) or nfe < 1:
        raise UserError(f"nfe must be a positive integer, got {nfe!r}")
    absorbing_only = method.needs_absorbing()
    if absorbing_only and not model.graph.absorbing:
        raise UserError(f"{', '.join(absorbing_only)} need an absorbing-graph model; {getattr(model, 'source', 'the model')} "
                        f"has a {model.graph.name} graph")
    if teacher.kind == "exact" and not model.graph.absorbing:
        raise UserError(f"the exact teacher (first hitting) needs a masked (absorbing) model; "
                        f"{getattr(model, 'source', 'the model')} has a {model.graph.name} graph: use the step teacher")
    init_times = None
    if init_grid is not None:
        if init_grid.model is not None:
            init_grid.check_model(model, force=True)  # a grid is just times: graph and noise must fit, not weights
        if init_grid.steps != nfe:
            raise UserError(f"the starting grid has {init_grid.steps} steps but nfe is {nfe}")
        if abs(init_grid.times[-1] - teacher.eps) > 1e-12:
            raise UserError(f"the starting grid ends at {init_grid.times[-1]!r}; set the teacher's eps to it")
        init_times = init_grid.times
    cfg = engine_config(method, nfe, base, teacher, validate, val_frac, val_samples, init_times,
                        val_level, None if split is None else split.num_val).resolve(model.graph)
    if teacher.cache_dir is not None and (cfg.coupled or init_times is not None):
        what = "--coupled (coupled paths)" if cfg.coupled else "--init-grid (a starting grid)"
        raise UserError(f"a teacher cache keeps uncoupled teacher runs on uniform grids; it does not apply with {what}")
    if split is not None and cfg.coupled:
        raise UserError("--prompts does not apply with --coupled (coupled paths do not hold given tokens)")
    if needs_network(cfg.resolved_objective()) and hidden_states(model) is None:
        raise UserError(f"--objective {cfg.resolved_objective()} reads the network's hidden states, and "
                        f"{getattr(model, 'source', 'the model')} is a bare score function; use --objective features+mmd")
    return method, cfg, split


def distill(model, method="lsd-c", nfe: int = 8, *, base: str = "euler", teacher: Teacher | None = None,
            validate: bool = True, val_frac: float = 0.25, val_samples: int = 512, val_level: float = 0.95,
            force: bool = False, init_grid: Sampler | None = None, teacher_run: TeacherCache | None = None,
            checkpoint: str | Path | None = None, resume: bool = False, progress: bool = True,
            log: Callable[[str], None] = print, prompts: Any = None) -> Distilled:
    """Distill an ``nfe``-call sampler for ``model`` (frozen): teacher -> fit -> validate -> accept.

    Args:
        model: a model value (``lsdd.load_model(...)`` or ``lsdd.models.ScoreModel``).
        method: "lsd", "lsd+", "lsd-c", "jys", or a method object (``LSD(epochs=5)``, ...).
        nfe: the student's network calls per sample (= steps: every learned rule makes one call per step).
        base: the one-call step rule of teacher and student ("euler" or "tweedie").
        teacher: the teacher's settings (``Teacher()``: 256 trajectories of the exact first-hitting teacher on
            a masked model of length at most 1024, else of 1024 base steps; ``Teacher.kind``).
        validate: compare the learned sampler with its base on held-out teacher outputs, and return the base
            when the learned one is not better beyond noise (except with ``force``; the rule:
            ``lsdd.distillation.validate``).
        val_level: level of the paired bootstrap intervals of learned - base that the verdict reads (0.95: the
            learned sampler's model NLL bound must be lower with 95% confidence, two-sided).
        init_grid: start from this sampler's time grid (e.g. a JYS grid) instead of the uniform one.
        teacher_run: a teacher run made earlier for these settings (its grid a refinement-compatible uniform
            one: ``TeacherCache.subsample``), used instead of running or reading one.
        checkpoint: a file to checkpoint to after the teacher and every epoch (``resume``: continue from it);
            removed when done.
        prompts: distill for continuations of these prompts (module docstring): what ``lsdd.sample``'s
            ``prompt`` takes (a list of texts, encoded with the model's tokenizer; token ids: a list of lists, a
            (P, K) integer array) or a ``lsdd.sampling.prompts.Condition``. Teacher trajectory i continues prompt
            i mod P; validation uses held-out prompts (at least 2 prompts with validation).

    Returns:
        ``Distilled(sampler, validation)``.
    """
    if teacher_run is not None and (teacher or Teacher()).kind == "auto":  # the run given decides
        teacher = replace(teacher or Teacher(), kind=teacher_run.kind)
    method, cfg, split = _prepare(model, method, nfe, base=base, teacher=teacher, validate=validate,
                                  val_frac=val_frac, val_samples=val_samples, val_level=val_level,
                                  init_grid=init_grid, prompts=prompts)
    teacher = teacher or Teacher()
    given = None if split is None else split.condition.given
    if teacher_run is not None:
        _check_teacher_run(teacher_run, given)
    info = {"model_fingerprint": getattr(model, "fingerprint", None), "model_source": getattr(model, "source", None)}
    if init_grid is not None:
        info["init_grid"] = {"method": init_grid.method}
    if split is not None:
        info["conditional"] = split.record()
    ckpt = _Checkpoint(checkpoint, cfg, model, None if given is None else prompt_fingerprint(given)) \
        if checkpoint is not None else None
    cache, state = None, None
    if ckpt is not None:
        cache, state = ckpt.open(resume, model.device, log)
    if cache is None and teacher_run is not None:
        if teacher_run.kind != cfg.teacher_kind:
            raise UserError(f"the teacher run given is a {teacher_run.kind!r} run; these settings ask for a "
                            f"{cfg.teacher_kind!r} teacher")
        cache = teacher_run.subsample(cfg.nfe) if len(teacher_run.states) != cfg.nfe else teacher_run
    if cache is None:
        cache, kept = get_teacher(model, cfg.student_times(), cfg.teacher_nfe, cfg.num_traj, method=cfg.base,
                                  batch_size=cfg.batch_size, seed=cfg.seed, store=cfg.teacher_store,
                                  folder=teacher.cache_dir, coupled_seed=cfg.coupling_seed(), progress=progress,
                                  log=log, given=given, kind=cfg.teacher_kind)
        if ckpt is not None:
            ckpt.teacher_done(cache, kept)
    if split is not None:  # the training prompts' trajectories first, the held-out prompts' last (the engine's split)
        cache = cache.take(split.order)
    if isinstance(method, JYS):
        result = _fit_jys(model, method, cfg, cache, progress, log)
    else:
        result = engine.distill(model.score_fn, model.graph, model.noise, model.length, cfg, device=model.device,
                     progress=progress, cache=cache, state=state,
                     on_epoch=None if ckpt is None else (lambda rec, st: ckpt.save(st)),
                     hidden_fn=hidden_states(model))
    val = result.validation
    use_base = val is not None and not val.learned_better and not force
    sampler = to_sampler(result, cfg, model, info, use_base=use_base)
    if isinstance(method, JYS):
        sampler = sampler.replace(provenance={**sampler.provenance, "method": "jys", "jys": asdict(method)})
    if ckpt is not None:
        ckpt.remove()
    return Distilled(sampler, val)


def _check_teacher_run(run: TeacherCache, given: Tensor | None) -> None:
    """ValueError unless a teacher run given to ``distill`` was made with these prompts (or both without)."""
    if (run.given is None) != (given is None):
        have, want = ("unconditional", "prompts") if run.given is None else ("conditional", "no prompts")
        raise ValueError(f"the teacher run given is {have}, but the distillation has {want}")
    if given is not None and not torch.equal(run.given, given[torch.arange(run.num) % given.shape[0]]):
        raise ValueError("the teacher run given continues other prompts than the distillation's")


def _fit_jys(model, method: JYS, cfg: DistillConfig, cache: TeacherCache, progress: bool, log) -> DistillResult:
    """JYS's KLUB search on the training share of the teacher's outputs; validated like any learned grid."""
    import time

    from .jys import JYSConfig, JYSSearch, KLUBEstimator

    n_train = cache.num - cfg.num_val()
    t0 = time.perf_counter()
    jcfg = JYSConfig(max_iter=method.max_iter, batch_size=cfg.batch_size, seed=cfg.seed, eps=cfg.eps)
    est = KLUBEstimator(model.score_fn, model.graph, model.noise, cache.x_0[:n_train], jcfg, model.device)
    times = JYSSearch(est, log=log if progress else (lambda *a: None)).grid(cfg.nfe)
    seconds = time.perf_counter() - t0
    result = DistillResult(times, torch.ones(cfg.nfe, dtype=torch.float64),
                           [{"epoch": 0, "klub_evaluations": est.evaluations, "seconds": seconds}],
                           cache.seconds, seconds, cache.nfe, est.call.calls)
    if cfg.validation:
        result.validation = validate_learned(model.score_fn, model.graph, model.noise, cache.x_0[n_train:], cfg,
                                             result.sampler(cfg), model.device)
    return result


class _Checkpoint:
    """The pipeline's checkpoint: ``path`` holds the settings, the model fingerprint, where the teacher run is
    (a teacher-cache file, or ``path.teacher`` written once beside it) and the fit's state after each epoch."""

    def __init__(self, path, cfg: DistillConfig, model, prompts: str | None = None):
        self.path = Path(path)
        self.teacher_path = Path(str(self.path) + ".teacher")
        self.cfg, self.fingerprint = {**asdict(cfg), "prompts": prompts}, getattr(model, "fingerprint", None)
        self.ref: dict[str, str] = {}
        self.cache: TeacherCache | None = None

    def open(self, resume: bool, device, log):
        if not resume:
            if self.path.exists():
                raise UserError(f"{self.path} exists from an interrupted run: pass --resume, or delete it")
            return None, None
        if not self.path.is_file():
            raise UserError(f"--resume: no checkpoint {self.path} to resume from")
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is a user-facing error
            raise UserError(f"--resume: cannot read {self.path}: {e}") from None
        if saved.get("config") != self.cfg or saved.get("model_fingerprint") != self.fingerprint:
            raise UserError(f"--resume: {self.path} was written for other settings or another model; rerun with the "
                            "same flags, or delete it")
        self.ref = {k: saved[k] for k in ("teacher_file", "teacher_ckpt") if k in saved}
        state = saved["state"]
        if state and "cma" in state:  # a distribution fit: CMA-ES generations
            log(f"resuming from {self.path} (CMA-ES generation {state['epoch']} of {self.cfg['cma_iters']})")
        elif state is None:
            log(f"resuming from {self.path} (the teacher is done; the fit starts)")
        else:
            log(f"resuming from {self.path} (epoch {state['epoch']} of {self.cfg['epochs']})")
        return self._teacher(device), state

    def _teacher(self, device) -> TeacherCache:
        nfe = self.cfg["nfe"]
        if "teacher_file" in self.ref:
            path = Path(self.ref["teacher_file"])
            if not path.is_file():
                raise UserError(f"--resume: the teacher run {path} that {self.path} reads is gone; delete {self.path} "
                                "and rerun")
            return load_cached(path, nfe, device)
        if "teacher_ckpt" not in self.ref:
            raise UserError(f"--resume: {self.path} names no teacher run (written by an older lsdd?); delete it and "
                            "rerun")
        path = self.path.parent / self.ref["teacher_ckpt"]
        try:
            return load_cached(path, nfe, device)
        except Exception as e:  # noqa: BLE001 - a missing or unreadable file is a user-facing error
            raise UserError(f"--resume: cannot read the teacher run {path}: {e}; delete {self.path} and rerun") from None

    def teacher_done(self, cache: TeacherCache, kept: Path | None) -> None:
        """After the teacher: name the cache file that keeps it, or write it once beside the checkpoint."""
        if kept is not None:
            self.ref["teacher_file"] = str(kept)
        else:
            self.cache = cache
        self.save(None)

    def save(self, state) -> None:
        if not dist.is_main():
            return
        if not self.ref:
            save_cached(self.cache, self.teacher_path)
            self.ref["teacher_ckpt"] = self.teacher_path.name
        with atomic.atomic_path(self.path) as tmp:
            torch.save({"config": self.cfg, "model_fingerprint": self.fingerprint, **self.ref, "state": state}, tmp)

    def remove(self) -> None:
        if dist.is_main():
            self.path.unlink(missing_ok=True)
            self.teacher_path.unlink(missing_ok=True)


__all__ = ["Teacher", "Distilled", "distill", "prepare", "engine_config", "PromptSplit", "split_prompts",
           "as_condition"]
