"""lsd-c and the distribution objective on countdown (bundled model), against Euler and LSD at the same NFE.

One teacher (Euler, --teacher-nfe steps on the uniform 16-step grid refined, --num-traj trajectories) serves every
row: the trajectory rows (LSD, linear Phi / l2, as in the bench) match its scores, the distribution rows (CMA-ES
on the n-gram Hellinger distance to its outputs, common random numbers) match its outputs. Every row is then
scored on --num-samples fresh samples (seed 1, batch 64: the bench's streams) with the countdown task's metrics.
"gap closed" is the share of the Euler -> teacher gap in log violation_rate closed at equal NFE, against the
bench's 1024-step teacher (0.0029, benchmarks/bench_baselines_countdown.md) and against this run's own teacher.

    python benchmarks/lsdc_countdown.py --out benchmarks/lsdc_countdown.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from common import cached_teacher, shown_conditioning
from lsdd import atomic
from lsdd.distillation.distill import DistillConfig, distill
from lsdd.models import load_model
from lsdd.sampling.sampler import Sampler
from lsdd.sampling.samplers import sample_batched
from lsdd.sampling.schedules import uniform_times
from lsdd.tasks import get_task

TEACHER_1024 = 0.0029  # violation_rate of the 1024-step teacher, benchmarks/bench_baselines_countdown.md


VARIANTS = {  # key: (row name, DistillConfig changes)
    "lsd": ("LSD (trajectory, linear/l2)", {"method": "lsd"}),
    "lsd+": ("LSD+ (trajectory, linear/l2)", {"method": "lsd+"}),
    "lsd+init": ("LSD+ from LSD, matched times", {"method": "lsd+", "init_lsd": True, "match_times": True}),
    "lsd+select": ("LSD+ from LSD, matched times, selected (25% held out)",
                   {"method": "lsd+", "init_lsd": True, "match_times": True, "select": True, "validation": True}),
    "coupled": ("LSD coupled (trajectory, linear/l2)", {"method": "lsd", "coupled": True}),
    "lsd-cma": ("LSD (hellinger, CMA)", {"method": "lsd", "objective": "hellinger"}),
    "lsd-c": ("lsd-c (hellinger, CMA)", {"method": "lsd-c"}),
    "lsd-c-mmd": ("lsd-c (mmd, CMA)", {"method": "lsd-c", "objective": "mmd"}),
    "lsd-c-features": ("lsd-c (features, CMA)", {"method": "lsd-c", "objective": "features"}),
    "counted": ("lsd-c counted (hellinger, CMA)", {"method": "lsd-c", "counted": True}),
    "counted-mmd": ("lsd-c counted (mmd, CMA)", {"method": "lsd-c", "counted": True, "objective": "mmd"}),
    "counted-features": ("lsd-c counted (features, CMA)", {"method": "lsd-c", "counted": True,
                                                           "objective": "features"}),
    "spread": ("lsd-c spread (hellinger, CMA)", {"method": "lsd-c", "spread": True}),
    "spread-features": ("lsd-c spread (features, CMA)", {"method": "lsd-c", "spread": True, "objective": "features"}),
}
DEFAULT_VARIANTS = ["lsd", "lsd+", "lsd+init", "lsd+select", "coupled", "lsd-cma", "lsd-c"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="countdown")
    ap.add_argument("--nfe", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--teacher-nfe", type=int, default=256)
    ap.add_argument("--num-traj", type=int, default=256)
    ap.add_argument("--num-samples", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--obj-samples", type=int, default=256)
    ap.add_argument("--cma-iters", type=int, default=12)
    ap.add_argument("--cma-popsize", type=int, default=8)
    ap.add_argument("--basis", type=int, default=2)
    ap.add_argument("--lsd-objective-nfe", type=int, nargs="*", default=[8], help="NFEs with an LSD-by-CMA row")
    ap.add_argument("--coupled", action=argparse.BooleanOptionalAction, default=True,
                    help="add LSD with coupled teacher/student trajectories (a second, coupled teacher run)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS,
                    help="distilled rows beside Euler and Euler with counted / spread movers "
                         "(counted: --counted movers; spread: --spread)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    model = load_model(args.model)
    task = get_task("countdown", num_values=model.graph.num_tokens)
    top = max(args.nfe)
    base = DistillConfig(nfe=top, teacher_nfe=args.teacher_nfe, num_traj=args.num_traj, batch_size=64,
                         epochs=args.epochs, seed=0, validation=False, obj_samples=args.obj_samples,
                         cma_iters=args.cma_iters, cma_popsize=args.cma_popsize, basis=args.basis)
    t0 = time.perf_counter()
    cache_top = cached_teacher(model, base, None)
    teacher_s = time.perf_counter() - t0
    print(f"teacher {args.teacher_nfe} steps x {args.num_traj}: {teacher_s:.0f} s", flush=True)
    teacher = task.compute(cache_top.x_0)
    keys = ["violation_rate", "any_violation", "start_tv", "start_entropy", "nll_valid"]
    rows = [(f"teacher N={args.teacher_nfe} ({args.num_traj} outputs)", args.teacher_nfe, teacher, "", 0.0)]

    def evaluate(times, kw):
        out = sample_batched(model.score_fn, model.graph, model.noise, times, args.num_samples, model.length,
                             batch_size=64, seed=1, **kw)
        return task.compute(out.x)

    coupled_caches: dict = {}
    for nfe in args.nfe:
        cache = cache_top.subsample(nfe) if nfe != top else cache_top
        times = uniform_times(nfe)
        euler = evaluate(times, {"method": "euler"})
        rows.append(("Euler", nfe, euler, "", 0.0))
        for movers, label in (("counted", "Euler, counted movers"), ("spread", "Euler, spread movers")):
            smp = Sampler(times.tolist(), "euler", movers=movers)
            rows.append((label, nfe, evaluate(times, smp.loop_args(model.graph)), "nothing learned", 0.0))
        variants = [(VARIANTS[k][0], VARIANTS[k][1]) for k in args.variants
                    if not (k == "coupled" and not args.coupled)
                    and not (k == "lsd-cma" and nfe not in args.lsd_objective_nfe)]
        for name, change in variants:
            cfg = DistillConfig(**{**base.__dict__, "nfe": nfe, **change})
            t0 = time.perf_counter()
            use = cache
            if cfg.coupled:
                if nfe not in coupled_caches:
                    top_c = coupled_caches.get("top") or cached_teacher(
                        model, DistillConfig(**{**base.__dict__, "coupled": True}), None)
                    coupled_caches["top"] = top_c
                    coupled_caches[nfe] = top_c.subsample(nfe) if nfe != top else top_c
                use = coupled_caches[nfe]
            res = distill(model.score_fn, model.graph, model.noise, model.length, cfg, cache=use,
                          progress=False)
            secs = time.perf_counter() - t0
            met = evaluate(res.times, res.sampler(cfg).loop_args(model.graph))
            p = f"phi {' '.join(f'{v:.2f}' for v in res.coeffs.tolist())}"
            cond = shown_conditioning(res, cfg)
            if cond:
                p += (f"; a {' '.join(f'{v:.2f}' for v in cond['slope'])}; beta "
                      f"{' '.join(f'{v:.2f}' for v in cond['beta'])}")
            if cfg.method == "lsd+":
                p += f"; grid {' '.join(f'{v:.3f}' for v in res.times.tolist())}"
            if res.selection:
                p += (f"; kept {res.selection['kept']} (held-out Hellinger LSD+ {res.selection['hellinger_lsd+']:.4f}, "
                      f"LSD {res.selection['hellinger_lsd']:.4f})")
            if cfg.resolved_objective() != "trajectory":
                h = res.history
                p += f"; objective {h[0]['loss_phi']:.4f} -> {h[-1]['best_so_far']:.4f}"
            rows.append((name, nfe, met, p, secs))
            print(f"{name} @ {nfe}: " + " ".join(f"{k} {met[k]:.4f}" for k in keys) + f" ({secs:.0f} s) {p}",
                  flush=True)

    def gap(v, e, t):
        return (math.log(e) - math.log(v)) / (math.log(e) - math.log(t)) if v > 0 and e > t else float("nan")

    lines = ["# lsd-c and the distribution objective on countdown", "",
             "Command: `python benchmarks/lsdc_countdown.py " + " ".join(sys.argv[1:]) + "`", "",
             f"Teacher: Euler, {args.teacher_nfe} steps, {args.num_traj} trajectories (seed 0), {teacher_s:.0f} s. "
             f"Rows: {args.num_samples} samples each (seed 1, batch 64). CMA: basis {args.basis} per parameter family, "
             f"{args.cma_iters} generations x {args.cma_popsize}, {args.obj_samples} samples per candidate. "
             f"Total {time.perf_counter() - t_all:.0f} s on {args.threads} CPU thread(s).", "",
             "| NFE | sampler | " + " | ".join(keys) + " | gap closed (log viol., vs 1024 / own teacher) | fit s | parameters |",
             "|---|---|" + "---|" * len(keys) + "---|---|---|"]
    euler_v = {r[1]: r[2]["violation_rate"] for r in rows if r[0] == "Euler"}
    for name, nfe, met, p, secs in rows:
        g = ""
        if nfe in euler_v and name != "Euler":
            g = f"{gap(met['violation_rate'], euler_v[nfe], TEACHER_1024):+.2f} / " \
                f"{gap(met['violation_rate'], euler_v[nfe], teacher['violation_rate']):+.2f}"
        lines.append(f"| {nfe} | {name} | " + " | ".join(f"{met[k]:.4f}" for k in keys) + f" | {g} | {secs:.0f} | {p} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic.write_text(args.out, text)


if __name__ == "__main__":
    main()
