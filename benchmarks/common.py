"""Helpers shared by the benchmark scripts (run them from the repository root: `python benchmarks/X.py`)."""

from __future__ import annotations

from lsdd.distillation.distill import DistillConfig
from lsdd.distillation.teacher import TeacherCache, get_teacher


def cached_teacher(model, cfg: DistillConfig, cache_dir: str | None) -> TeacherCache:
    """The teacher trajectories of ``cfg`` for ``model`` (``cfg.base``, ``cfg.teacher_nfe`` steps on its student
    grid, ``cfg.num_traj`` trajectories, ``cfg.batch_size`` streams of ``cfg.seed``, ``cfg.teacher_store``):
    the library's one teacher lookup (``lsdd.distillation.teacher.get_teacher``, the one `lsdd bench/distill
    --teacher-cache` use): read from ``cache_dir`` when a run with the same settings is kept there, else run and
    saved there. Coupled runs and non-uniform grids are always run (the cache keeps neither)."""
    folder = cache_dir if cache_dir and not cfg.coupled and cfg.init_times is None else None
    cache, _ = get_teacher(model, cfg.student_times(), cfg.teacher_nfe, cfg.num_traj, method=cfg.base,
                           batch_size=cfg.batch_size, seed=cfg.seed, store=cfg.teacher_store, folder=folder,
                           coupled_seed=cfg.coupling_seed(), progress=False,
                           log=lambda msg: print(f"{model.source}: {msg}", flush=True))
    return cache


def evaluate(model, task, times, coeffs, mode: str, num: int, seed: int, base: str = "euler",
             kwargs: dict | None = None) -> dict[str, float]:
    """Task metrics of ``num`` samples from ``model`` with the given grid, coefficients and base sampler (or the
    ``sample_batched`` keyword arguments ``kwargs``: method, coeffs, phi_mode, e.g. a sampler's
    ``Sampler.loop_args(graph)``)."""
    from lsdd.sampling.samplers import sample_batched

    kw = kwargs or {"method": base, "coeffs": coeffs, "phi_mode": mode}
    out = sample_batched(model.score_fn, model.graph, model.noise, times, num, model.length, seed=seed,
                         device=model.device, **kw)
    return task.compute(out.x)


def shown_conditioning(res, cfg) -> dict | None:
    """The conditioning the parameters column shows: lsd-c's, or for a trajectory-fitted sampler with counted or
    spread movers the neutral one (slope 0, beta 1), as the table printed it when movers were conditioning."""
    if res.conditioning is None and res.movers != "independent" and cfg.resolved_objective() == "trajectory":
        m = res.coeffs.numel()
        return {"slope": [0.0] * m, "beta": [1.0] * m}
    return res.conditioning
