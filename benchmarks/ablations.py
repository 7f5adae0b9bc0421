"""Ablations of LSD/LSD+ on one model at one NFE, sharing teacher runs (one per teacher N).

Each variant changes one setting of the default recipe and is scored with the task metrics on the
same evaluation seeds; the Euler baseline and the teacher are the reference rows. Prints markdown.

    python benchmarks/ablations.py --model countdown --nfe 8 --out benchmarks/ablations.md
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, replace

import torch

from common import cached_teacher, evaluate
from lsdd import atomic
from lsdd.distillation.distill import DistillConfig, distill, to_sampler
from lsdd.distillation.teacher import TeacherCache
from lsdd.models import load_model
from lsdd.sampling.schedules import uniform_times
from lsdd.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="countdown")
    ap.add_argument("--nfe", type=int, default=8)
    ap.add_argument("--teacher-nfes", type=int, nargs="+", default=[1024, 256])
    ap.add_argument("--num-traj", type=int, default=256)
    ap.add_argument("--eval-samples", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--cache-dir", default=None, help="save/reuse teacher trajectories here (torch files)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)
    task = get_task("countdown", num_values=model.config.num_tokens)
    q, d = task.pairs[0]
    base_cfg = DistillConfig(nfe=args.nfe, teacher_nfe=args.teacher_nfes[0], num_traj=args.num_traj,
                             epochs=args.epochs, seed=args.seed, validation=False)  # train on every trajectory
    def teacher(cfg):
        return cached_teacher(model, cfg, args.cache_dir)

    caches = {n: teacher(replace(base_cfg, teacher_nfe=n)) for n in args.teacher_nfes}
    variants = [("default", {})]
    variants += [(f"zeta={z}", {"zeta": z}) for z in (0.0, 0.01, 0.10, 0.20)]
    variants += [("phi_mode=linear", {"phi_mode": "linear"}), ("loss=l2", {"loss": "l2"}), ("loss=rkl", {"loss": "rkl"}),
                 ("lsd linear/kl", {"phi_mode": "linear", "method": "lsd"}),
                 ("lsd+ linear/l2", {"phi_mode": "linear", "loss": "l2"}),
                 ("lsd linear/l2", {"phi_mode": "linear", "loss": "l2", "method": "lsd"}), ("method=lsd", {"method": "lsd"}),
                 ("lsd+alternate", {"alternate": True}), ("base=tweedie", {"base": "tweedie"})]
    variants += [(f"teacher N={n}", {"teacher_nfe": n}) for n in args.teacher_nfes[1:]]
    variants += [(f"num_traj={k}", {"num_traj": k}) for k in (32, 64)]
    rows = []
    euler = evaluate(model, task, uniform_times(args.nfe), None, "linear", args.eval_samples, args.seed + 7)
    rows.append(("Euler (uniform grid)", {}, euler, 0.0))
    for name, change in variants:
        cfg = replace(base_cfg, **change)
        cache = caches[cfg.teacher_nfe]
        if cfg.num_traj < cache.num:
            k = cfg.num_traj  # the first k trajectories; their rows still index the full score store
            cache = TeacherCache(cache.x_T[:k], [s[:k] for s in cache.states], [r[:k] for r in cache.rows],
                                 cache.scores, cache.x_0[:k], cache.times, cache.teacher_steps, cache.nfe,
                                 cache.seconds, cache.store, cache.sq_stats)
        if cfg.base == "tweedie":  # Tweedie students learn from a Tweedie teacher of the same N
            key = ("tweedie", cfg.teacher_nfe)
            if key not in caches:
                caches[key] = teacher(cfg)
            cache = caches[key]
        t0 = time.perf_counter()
        res = distill(model.score_fn, model.graph, model.noise, model.length, cfg, cache=cache, progress=False)
        secs = time.perf_counter() - t0
        art = to_sampler(res, cfg, model)
        # scored with the learned grid and Phi under the base rule's own (independent) movers, as this table always was
        m = evaluate(model, task, art.times_tensor(), art.coeffs_tensor(), cfg.phi_mode, args.eval_samples,
                     args.seed + 7, base=cfg.base)
        rows.append((name, asdict(cfg), m, secs, art))
        print(f"{name:18s} {q}={m[q]:.4f} {d}={m[d]:.4f} any={m['any_violation']:.3f} "
              f"phi={[round(c, 2) for c in art.coeffs]} ({secs:.0f} s)", flush=True)
    teacher_m = task.compute(caches[args.teacher_nfes[0]].x_0)
    cols = ["violation_rate", "any_violation", "start_tv", "start_entropy", "nll_valid"]
    lines = [f"# LSD/LSD+ ablations: {args.model}, {args.nfe} NFE", "",
             f"Command: `python benchmarks/ablations.py --model {args.model} --nfe {args.nfe} "
             f"--teacher-nfes {' '.join(map(str, args.teacher_nfes))} --num-traj {args.num_traj} "
             f"--eval-samples {args.eval_samples} --epochs {args.epochs} --seed {args.seed}`", "",
             f"Default recipe: {asdict(base_cfg)}. Evaluation: {args.eval_samples} samples, same seed for every row; "
             f"teacher row: its {args.num_traj} trajectories. start_tv_ref (ideal samples of this size) = "
             f"{euler['start_tv_ref']:.4f}.", "",
             "| variant | " + " | ".join(cols) + " | Phi | distill s |",
             "|---|" + "---|" * (len(cols) + 2)]
    lines.append(f"| teacher N={args.teacher_nfes[0]} | " + " | ".join(f"{teacher_m[c]:.4f}" for c in cols) + " | | |")
    for row in rows:
        name, _, m, secs = row[:4]
        phi = " ".join(f"{c:.2f}" for c in row[4].coeffs) if len(row) > 4 else "-"
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + f" | {phi} | {secs:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic.write_text(args.out, text)


if __name__ == "__main__":
    main()
