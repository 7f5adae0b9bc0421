"""Helpers shared by the benchmark scripts (run them from the repository root: `python benchmarks/X.py`)."""

from __future__ import annotations

from lsdd.distillation.distill import DistillConfig, make_teacher
from lsdd.distillation.teacher import TeacherCache


def cached_teacher(model, cfg: DistillConfig, cache_dir: str | None) -> TeacherCache:
    """The teacher trajectories of ``cfg`` for ``model``: read from ``cache_dir`` when a run with the same settings
    is kept there (the library's teacher cache, the one `lsdd bench/distill --teacher-cache` use), else run and
    saved there. Coupled runs and non-uniform grids are always run (the cache keeps neither)."""
    from lsdd.distillation.teacher import cache_file, choose_store, find_cached, load_cached, save_cached

    path = None
    if cache_dir and not cfg.coupled and cfg.init_times is None:
        length = model.config.length
        store = choose_store(cfg.teacher_store, cfg.num_traj, length, model.graph.num_tokens, cfg.nfe)
        path = cache_file(cache_dir, model.fingerprint, cfg.base, cfg.teacher_nfe, cfg.nfe, cfg.num_traj,
                          cfg.batch_size, cfg.seed, cfg.eps, store)
        found = find_cached(path, cfg.nfe)
        if found is not None:
            return load_cached(found, cfg.nfe, model.device)
    cache = make_teacher(model.score_fn, model.graph, model.noise, model.config.length, cfg, progress=False)
    if path is not None:
        save_cached(cache, path)
    print(f"teacher {model.source} N={cfg.teacher_nfe}: {cache.seconds:.1f} s", flush=True)
    return cache


def evaluate(model, task, times, coeffs, mode: str, num: int, seed: int, base: str = "euler",
             kwargs: dict | None = None) -> dict[str, float]:
    """Task metrics of ``num`` samples from ``model`` with the given grid, coefficients and base sampler (or the
    ``sample_batched`` keyword arguments ``kwargs``: method, coeffs, phi_mode, e.g. a learned sampler's)."""
    from lsdd.sampling.samplers import sample_batched

    kw = kwargs or {"method": base, "coeffs": coeffs, "phi_mode": mode}
    out = sample_batched(model.score_fn, model.graph, model.noise, times, num, model.config.length, seed=seed,
                         device=model.device, **kw)
    return task.compute(out.x)
