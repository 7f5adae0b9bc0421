"""Helpers shared by the benchmark scripts (run them from the repository root: `python benchmarks/X.py`)."""

from __future__ import annotations

from pathlib import Path

import torch

from lsdd.distill import DistillConfig, make_teacher
from lsdd.teacher import TeacherCache


def cached_teacher(model, cfg: DistillConfig, cache_dir: str | None, tag: str) -> TeacherCache:
    """The teacher trajectories of ``cfg`` for ``model``, reused from ``cache_dir`` when present (torch files
    named by tag, teacher steps, student steps, trajectories and seed), else run and saved there."""
    name = f"teacher_{tag}_{cfg.teacher_nfe}_{cfg.nfe}_{cfg.num_traj}_{cfg.seed}.pt"
    path = Path(cache_dir) / name if cache_dir else None
    if path is not None and path.exists():
        return TeacherCache(**torch.load(path, weights_only=False))
    cache = make_teacher(model.score_fn, model.graph, model.noise, model.config.length, cfg, progress=False)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(cache.to_state(), path)
    print(f"teacher {tag} N={cfg.teacher_nfe}: {cache.seconds:.1f} s", flush=True)
    return cache


def evaluate(model, task, times, coeffs, mode: str, num: int, seed: int, base: str = "euler",
             kwargs: dict | None = None) -> dict[str, float]:
    """Task metrics of ``num`` samples from ``model`` with the given grid, coefficients and base sampler (or the
    ``sample_batched`` keyword arguments ``kwargs``: method, coeffs, phi_mode, e.g. a learned sampler's)."""
    from lsdd.samplers import sample_batched

    kw = kwargs or {"method": base, "coeffs": coeffs, "phi_mode": mode}
    out = sample_batched(model.score_fn, model.graph, model.noise, times, num, model.config.length, seed=seed,
                         device=model.device, **kw)
    return task.compute(out.x)
