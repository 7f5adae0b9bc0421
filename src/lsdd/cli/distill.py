"""``lsdd distill``: learn an M-step sampler (LSD / LSD+) for a frozen model from an N-step teacher."""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields
from pathlib import Path

from ..errors import UserError
from .common import Formatter, add_device_args, add_quiet_arg, check_output, fraction, load_args, positive_int

DESCRIPTION = """\
Distill a few-step sampler for a frozen score model (Learnable Sampler Distillation, arXiv 2509.19962).

The teacher runs --teacher-nfe steps of the base sampler from the noise and records its scores at the
student's --nfe times. The student runs --nfe steps from a start perturbed in --zeta of its positions
and learns one coefficient Phi_k per step (LSD) - and with --method lsd+ also its own time grid - so that
its scores match the teacher's along the way. The model is never changed. The result is a small JSON file
(a time grid and M coefficients) that `lsdd sample --learned` and `lsdd bench` use at no extra cost.

Phi modes: 'linear' scales the off-diagonal scores (for masked models this only changes how many tokens
are unmasked per step, like a time-grid change); 'log' scales log-scores, i.e. a per-step temperature
on which token is chosen plus a rate change. Losses: 'l2' on the scores (the paper), 'kl' between the
one-step laws the two scores induce (scale-free across steps).
"""

EPILOG = """\
examples:
  lsdd distill --model countdown --nfe 8 --out sampler8.json
  lsdd distill --model countdown --nfe 16 --method lsd --phi-mode linear --loss l2 --out lsd16.json
  lsdd distill --model countdown --nfe 8 --out sampler8.json --resume   # continue an interrupted run
  lsdd sample --model countdown --learned sampler8.json --num 256 --out samples.npy

  torchrun --nproc-per-node 2 -m lsdd distill --model countdown --nfe 8 --out sampler8.json   # same result

Validation (on by default): --val-frac of the teacher trajectories are held out of training. After training,
the learned sampler and its base (uniform grid or --init-grid, Phi = 1) each draw --val-samples samples at the
same NFE. The learned one counts as better only if (1) the frozen model's own NLL bound of its samples is
lower, (2) their unigram+bigram MMD^2 to the held-out teacher outputs is lower, and (3) its unigram entropy does
not drop below min(base, teacher) by more than 1% (no sharpening). If it is not better, OUT holds the base sampler instead, with
the learned numbers and every figure in its provenance; --force writes the learned one anyway.

Progress is checkpointed to OUT.ckpt after the teacher and after every epoch (the teacher run itself is
written once, to OUT.ckpt.teacher, or not at all when --teacher-cache holds it); both are removed when done.
"""


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    from ..distillation.distill import DistillConfig
    from ..distillation.objective import OBJECTIVES

    d = DistillConfig()
    p = subparsers.add_parser(name, help="distill a learned few-step sampler (LSD / LSD+ / LSD-C)",
                              description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter)
    p.add_argument("--model", required=True, help="bundled model name, model directory (ours, or a SEDD/RADD/MDLM "
                   "checkpoint as published) or hub id owner/name")
    p.add_argument("--base", choices=["euler", "tweedie"], default=d.base, help="base sampler of student and teacher")
    p.add_argument("--nfe", type=positive_int, default=d.nfe, help="student steps M (network calls per sample)")
    p.add_argument("--teacher-nfe", type=positive_int, default=d.teacher_nfe, help="teacher steps N, a multiple of M")
    p.add_argument("--method", choices=["lsd", "lsd+", "lsd-c"], default=d.method,
                   help="lsd+: also learn the time grid; lsd-c: per-step confidence slope and value temperature "
                        "(absorbing graph, fitted on the output distribution)")
    p.add_argument("--objective", choices=["auto", *OBJECTIVES], default=d.objective,
                   help="trajectory: match the teacher's scores step by step (lsd, lsd+); the others match the "
                        "teacher's outputs (CMA-ES, common random numbers): hellinger / mmd on pooled n-grams (mmd is "
                        "unbiased; hellinger's sampling noise favours sharper samplers), features = energy distance "
                        "of per-sample (model NLL, unigram entropy); auto: hellinger for lsd-c")
    p.add_argument("--basis", type=positive_int, default=d.basis,
                   help="distribution objective: numbers per parameter family (1 constant, 2 affine in the step)")
    p.add_argument("--obj-samples", type=positive_int, default=d.obj_samples,
                   help="distribution objective: samples per candidate")
    p.add_argument("--cma-iters", type=positive_int, default=d.cma_iters, help="distribution objective: CMA-ES generations")
    p.add_argument("--cma-popsize", type=positive_int, default=d.cma_popsize, help="distribution objective: candidates per generation")
    p.add_argument("--cma-sigma", type=float, default=d.cma_sigma, help="distribution objective: CMA-ES initial step size")
    p.add_argument("--match-times", action="store_true",
                   help="lsd+ (absorbing graph): compare the student's score with the teacher's moved exactly to the "
                        "student's own time (the score scales as 1/(e^sigma_bar - 1)), so Phi does not absorb the grid")
    p.add_argument("--init-lsd", action="store_true", help="lsd+: fit LSD's Phi on the fixed grid first and start from it")
    p.add_argument("--select", action="store_true",
                   help="lsd+: also fit LSD and keep whichever is closer (n-gram Hellinger) to held-out teacher outputs")
    p.add_argument("--counted", action="store_true",
                   help="lsd-c: each sequence unmasks a number of tokens set by rounding the expected number (its sum "
                        "of move probabilities), chosen without replacement by weight, instead of each token on its own")
    p.add_argument("--spread", action=argparse.BooleanOptionalAction, default=None,
                   help="spread movers (default: on for absorbing-graph models, unless --counted, --coupled or --phi-mode "
                        "log; off for the others, where --spread asks for them): each sequence unmasks (or, on the "
                        "uniform graph, changes) the expected number of tokens, spread along the sequence (systematic "
                        "sampling in position order), so tokens unmasked in one step are rarely neighbours; lsd/lsd+ fit "
                        "Phi with these movers, lsd-c chooses its movers so; validation compares with the base rule with "
                        "the same movers (lsdd sample --spread), which is written if the learned sampler is no better")
    p.add_argument("--coupled", action="store_true",
                   help="teacher and student share per-position unmasking clocks and value uniforms (absorbing graph; "
                        "each path keeps its exact law)")
    p.add_argument("--phi-mode", choices=["linear", "log"], default=d.phi_mode, help="how Phi enters the step")
    p.add_argument("--loss", choices=["l2", "kl", "rkl"], default=d.loss, help="trajectory-matching distance")
    p.add_argument("--zeta", type=fraction, default=d.zeta, help="fraction of student start tokens perturbed")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the teacher trajectories")
    p.add_argument("--num-traj", type=positive_int, default=d.num_traj, help="teacher trajectories")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="trajectories per step")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate of the coefficients")
    p.add_argument("--lr-time", type=float, default=d.lr_time, help="Adam learning rate of the grid (lsd+)")
    p.add_argument("--alternate", action="store_true", help="lsd+: alternate epochs of Phi and grid updates")
    p.add_argument("--closed-form", action="store_true",
                   help="lsd + linear + l2 only: refit Phi exactly while simulating instead of Adam")
    p.add_argument("--eps", type=float, default=d.eps, help="last time of the grid")
    p.add_argument("--init-grid", metavar="SAMPLER.json",
                   help="start from this sampler's time grid (e.g. `lsdd schedule --method jys`) instead of the uniform "
                        "one; the teacher refines it, and validation compares against it")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of teacher and student draws")
    p.add_argument("--validate", dest="validation", action=argparse.BooleanOptionalAction, default=d.validation,
                   help="compare the learned sampler with its base on held-out teacher outputs; write the base "
                        "sampler instead when the learned one is not better")
    p.add_argument("--val-frac", type=fraction, default=d.val_frac,
                   help="share of the teacher trajectories held out of training for validation")
    p.add_argument("--val-samples", type=positive_int, default=d.val_samples,
                   help="samples drawn from each of base and learned sampler for validation")
    p.add_argument("--force", action="store_true",
                   help="write the learned sampler even when validation finds it no better than its base")
    p.add_argument("--chunk", type=positive_int, default=d.chunk,
                   help="trajectories per random stream (the unit spread over torchrun processes)")
    p.add_argument("--teacher-store", choices=["auto", "scores", "states"], default=d.teacher_store,
                   help="teacher cache: 'scores' keeps the teacher's score rows (4 N bytes per masked row: ~823 MB "
                        "per trajectory at GPT-2 size), 'states' keeps only its states (64 KiB per trajectory) and "
                        "recomputes the scores (one extra network call per student call); auto: scores up to 2 GiB")
    p.add_argument("--teacher-cache", metavar="DIR",
                   help="read the teacher run from DIR when `lsdd bench/distill --teacher-cache DIR` saved the same "
                        "one (same model, base, steps, trajectories, batch size, seed and eps; in either store; also "
                        "cached on a finer uniform grid, e.g. a bench's at NFE 64 for --nfe 8), else run it and save "
                        "it there")
    add_device_args(p)
    add_quiet_arg(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    p.add_argument("--out", required=True, help="output JSON file of the learned sampler")
    p.set_defaults(run=run)
    return p


def config_from_args(args):
    from ..distillation.distill import DistillConfig

    names = {f.name for f in fields(DistillConfig)}
    cfg = DistillConfig(**{k: v for k, v in vars(args).items() if k in names})
    if getattr(args, "init_grid", None):
        from ..sampling.artifact import LearnedSampler

        grid = LearnedSampler.load(args.init_grid)
        if grid.nfe != cfg.nfe:
            raise UserError(f"--init-grid {args.init_grid} has {grid.nfe} steps but --nfe is {cfg.nfe}")
        if abs(grid.times[-1] - cfg.eps) > 1e-12:
            raise UserError(f"--init-grid {args.init_grid} ends at {grid.times[-1]!r}; pass --eps {grid.times[-1]!r}")
        cfg.init_times = grid.times
    try:
        cfg.validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    return cfg


def run(args) -> int:
    import torch

    from .. import atomic, dist
    from ..distillation.distill import distill, make_teacher, to_artifact

    out = check_output(args.out, ".json")
    if args.teacher_cache is not None and Path(args.teacher_cache).exists() and not Path(args.teacher_cache).is_dir():
        raise UserError(f"--teacher-cache {args.teacher_cache} is a file; it takes a folder")
    check_output(args.teacher_cache, flag="--teacher-cache", folder=True)
    cfg = config_from_args(args)
    model = load_args(args)
    cfg = cfg.resolve(model.graph)
    if (cfg.method == "lsd-c" or cfg.coupled or cfg.match_times) and not model.graph.absorbing:
        raise UserError(f"--method lsd-c, --coupled and --match-times need an absorbing-graph model; "
                        f"{model.source} has a {model.graph.name} graph")
    info = {"model_fingerprint": model.fingerprint, "model_source": model.source}
    if args.init_grid:
        from ..sampling.artifact import LearnedSampler

        grid = LearnedSampler.load(args.init_grid)
        # a grid is just times: it must fit the model's graph and noise, not its weights
        grid.check_model(model.graph.name, model.graph.num_tokens, model.noise.to_dict(), model.fingerprint, force=True)
        info["init_grid"] = {"file": str(args.init_grid), "method": grid.provenance.get("method", "?")}
    ckpt = Path(str(out) + ".ckpt")
    teacher_ckpt = Path(str(out) + ".ckpt.teacher")  # the teacher run, written once (not with every epoch)
    cache, state = None, None
    teacher_ref = {}  # where a resume finds the teacher run: a --teacher-cache file, or OUT.ckpt.teacher
    if args.resume:
        if not ckpt.is_file():
            raise UserError(f"--resume: no checkpoint {ckpt} to resume from")
        try:
            resumed = torch.load(ckpt, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is a user-facing error
            raise UserError(f"--resume: cannot read {ckpt}: {e}") from None
        if resumed.get("config") != asdict(cfg) or resumed.get("model_fingerprint") != model.fingerprint:
            raise UserError(f"--resume: {ckpt} was written for other settings or another model; "
                            "rerun with the same flags, or delete it")
        teacher_ref = {k: resumed[k] for k in ("teacher_file", "teacher_ckpt") if k in resumed}
        cache, state = _resume_teacher(teacher_ref, ckpt, cfg.nfe, model.device), resumed["state"]
        print(f"resuming from {ckpt} (epoch {state['epoch'] if state else 0} of {cfg.epochs})")
    elif ckpt.exists():
        raise UserError(f"{ckpt} exists from an interrupted run: pass --resume, or delete it")

    def save_ckpt(state_now):
        if not dist.is_main():
            return
        if not teacher_ref:
            from ..distillation.teacher import save_cached

            save_cached(cache, teacher_ckpt)
            teacher_ref["teacher_ckpt"] = teacher_ckpt.name
        with atomic.atomic_path(ckpt) as tmp:
            torch.save({"config": asdict(cfg), "model_fingerprint": model.fingerprint, **teacher_ref,
                        "state": state_now}, tmp)

    length = model.config.length
    saved = found = None
    if cache is None and args.teacher_cache is not None:
        from ..distillation.teacher import cache_file, choose_store, find_cached, load_cached

        if cfg.coupled or cfg.init_times is not None:
            raise UserError("--teacher-cache keeps uncoupled teacher runs on uniform grids; it does not apply with "
                            "--coupled or --init-grid")
        store = choose_store(cfg.teacher_store, cfg.num_traj, length, model.graph.num_tokens, cfg.nfe)
        saved = cache_file(args.teacher_cache, model.fingerprint, cfg.base, cfg.teacher_nfe, cfg.nfe, cfg.num_traj,
                           cfg.batch_size, cfg.seed, cfg.eps, store)
        found = find_cached(saved, cfg.nfe)
        if found is not None:
            print(f"teacher: {cfg.teacher_nfe} {cfg.base} steps x {cfg.num_traj} trajectories, from {found}")
            cache = load_cached(found, cfg.nfe, model.device)
            teacher_ref["teacher_file"] = str(Path(found).resolve())  # read there on --resume, not copied
            save_ckpt(None)
    if cache is None:
        print(f"teacher: {cfg.teacher_nfe} {cfg.base} steps x {cfg.num_traj} trajectories of length {length}")
        cache = make_teacher(model.score_fn, model.graph, model.noise, length, cfg, device=model.device)
        if saved is not None and dist.is_main():
            from ..distillation.teacher import save_cached

            save_cached(cache, saved)
            print(f"teacher run saved to {saved}")
            teacher_ref["teacher_file"] = str(Path(saved).resolve())
        save_ckpt(None)
        print(f"teacher done in {cache.seconds:.1f} s; cache {cache.nbytes() / 2**20:.1f} MiB ({cache.store})")
    result = distill(model.score_fn, model.graph, model.noise, length, cfg, device=model.device, cache=cache,
                     state=state, on_epoch=lambda rec, st: save_ckpt(st))
    val = result.validation
    use_base = val is not None and not val.learned_better and not args.force
    sampler = to_artifact(result, cfg, model.graph, model.noise,
                          info, use_base=use_base)
    if dist.is_main():
        sampler.save(out)
        ckpt.unlink(missing_ok=True)
        teacher_ckpt.unlink(missing_ok=True)
    last = result.history[-1] if result.history else {}
    if val is not None:
        print(val.summary())
    if use_base:
        base = f"{cfg.base} with spread movers" if cfg.spread else f"plain {cfg.base}"
        print(f"lsdd distill: the learned sampler is not better than {base} at {cfg.nfe} NFE on held-out "
              f"teacher outputs, so {out} holds the base sampler ({'the --init-grid' if args.init_grid else 'uniform'} "
              "grid, Phi = 1); the learned numbers are in its provenance. Pass --force to write the learned sampler "
              "anyway.")
        print(f"  rejected coefficients: {', '.join(f'{c:.3f}' for c in result.coeffs)}")
        return 0
    if val is not None and not val.learned_better:
        print("warning: validation found the learned sampler no better than its base; written anyway (--force)")
    print(f"{cfg.method} {cfg.base} sampler with {cfg.nfe} NFE -> {out}")
    print(f"  coefficients: {', '.join(f'{c:.3f}' for c in sampler.coeffs)}")
    print(f"  time grid:    {', '.join(f'{t:.4f}' for t in sampler.times)}")
    if sampler.conditioning is not None and sampler.conditioning.get("count") == "spread":
        print("  movers:       counted, spread along the sequence (--spread)")
    if sampler.conditioning is not None and cfg.method == "lsd-c":
        print(f"  confidence slope: {', '.join(f'{a:.3f}' for a in sampler.conditioning['slope'])}")
        print(f"  value beta:       {', '.join(f'{b:.3f}' for b in sampler.conditioning['beta'])}")
    print(f"  final loss: phi {last.get('loss_phi', float('nan')):.4g}, time {last.get('loss_time', 0.0):.4g}; "
          f"teacher {result.teacher_seconds:.1f} s, student epochs {result.student_seconds:.1f} s "
          f"(ratio {result.student_seconds / max(result.teacher_seconds, 1e-9):.2f})")
    return 0


def _resume_teacher(ref: dict, ckpt: Path, nfe: int, device):
    """The teacher run of an interrupted distillation: the --teacher-cache file it read (or wrote), else the
    OUT.ckpt.teacher file written beside the checkpoint once, after the teacher. A missing or unreadable file is
    a one-line error."""
    from ..distillation.teacher import load_cached

    if "teacher_file" in ref:
        path = Path(ref["teacher_file"])
        if not path.is_file():
            raise UserError(f"--resume: the teacher run {path} that {ckpt} reads is gone; delete {ckpt} and rerun")
        return load_cached(path, nfe, device)
    if "teacher_ckpt" not in ref:
        raise UserError(f"--resume: {ckpt} names no teacher run (written by an older lsdd?); delete it and rerun")
    path = ckpt.parent / ref["teacher_ckpt"]
    try:
        return load_cached(path, nfe, device)
    except Exception as e:  # noqa: BLE001 - a missing or unreadable file is a user-facing error
        raise UserError(f"--resume: cannot read the teacher run {path}: {e}; delete {ckpt} and rerun") from None
