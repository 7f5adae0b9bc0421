"""The compact teacher cache ("states") against the full one ("scores"): bytes, time and the learned sampler.

Same model, same teacher trajectories (same seed), same distillation settings; only where the teacher's scores
come from differs (kept rows vs recomputed from the kept states). Prints a markdown report: the bytes per
trajectory at the paper's scale (arithmetic), then the measured run.

    python benchmarks/teacher_store.py --model countdown --nfe 8 --teacher-nfe 256 --num-traj 128 --epochs 10 \
        --out benchmarks/teacher_store.md
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from lsdd.distillation.distill import DistillConfig, distill
from lsdd.distillation.teacher import full_cache_bytes, get_teacher
from lsdd.models import load_model


def paper_scale_rows() -> list[str]:
    rows = ["| M (student steps) | scores: bytes / trajectory | states: bytes / trajectory (int64) | ratio |",
            "|---|---|---|---|"]
    for m in (8, 16, 32, 64):
        full = full_cache_bytes(1, 1024, 50257, m)
        states = m * 1024 * 8
        rows.append(f"| {m} | {full / 1e6:,.0f} MB | {states / 2**10:,.0f} KiB | {full / states:,.0f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="countdown")
    ap.add_argument("--nfe", type=int, default=8)
    ap.add_argument("--teacher-nfe", type=int, default=256)
    ap.add_argument("--num-traj", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--method", default="lsd")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)
    res = {}
    for store in ("scores", "states"):
        cfg = DistillConfig(nfe=args.nfe, teacher_nfe=args.teacher_nfe, num_traj=args.num_traj, epochs=args.epochs,
                            method=args.method, seed=args.seed, validation=False, teacher_store=store)
        t0 = time.perf_counter()
        cache, _ = get_teacher(model, cfg.student_times(), cfg.teacher_nfe, cfg.num_traj, method=cfg.base,
                               batch_size=cfg.batch_size, seed=cfg.seed, store=cfg.teacher_store, progress=False,
                               log=lambda msg: None)  # never kept: each store's run is timed
        t_teacher = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = distill(model.score_fn, model.graph, model.noise, model.length, cfg, cache=cache, progress=False)
        res[store] = dict(bytes=cache.nbytes(), teacher=t_teacher, distill=time.perf_counter() - t0,
                          calls=out.student_calls, extra=cache.recomputed_calls, coeffs=out.coeffs, times=out.times,
                          loss=out.history[-1]["loss_phi"])
        print(store, res[store], flush=True)
    a, b = res["scores"], res["states"]
    lines = [
        "# Teacher cache: scores kept vs recomputed from states",
        "",
        "Command: `python benchmarks/" + os.path.basename(__file__) + f" --model {args.model} --nfe {args.nfe} "
        f"--teacher-nfe {args.teacher_nfe} --num-traj {args.num_traj} --epochs {args.epochs} --method {args.method} "
        f"--seed {args.seed}` (CPU, 2 threads, fp32, validation off; load average {os.getloadavg()[0]:.1f}).",
        "",
        "## Bytes per teacher trajectory at the paper's scale (V = 50,257, L = 1,024; arithmetic)",
        "",
        "The 'scores' cache keeps, per student step, every masked row's N = 50,257 real-token scores in float32;",
        "on the uniform grid about half of the L rows are masked on average over the steps, so L M / 2 rows of",
        "4 N bytes. The 'states' cache keeps the M (L,) token states (plus x_T and x_0 for every cache).",
        "",
        *paper_scale_rows(),
        "",
        "At 256 trajectories and M = 8 that is about 211 GB against 16 MiB. The price: one extra network call per",
        "student call during distillation (the teacher's score at its own state, recomputed).",
        "",
        f"## Measured on `{args.model}` (L = {model.length}, N = {model.graph.num_tokens})",
        "",
        "| store | cache bytes | teacher s | distill s | student calls | recomputed teacher calls | final l2 loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        lines.append(f"| {name} | {r['bytes']:,} | {r['teacher']:.1f} | {r['distill']:.1f} | {r['calls']} | "
                     f"{r['extra']} | {r['loss']:.6g} |")
    diff = float((a["coeffs"] - b["coeffs"]).abs().max())
    lines += ["", "Learned coefficients (Phi_k):", "",
              "| store | " + " | ".join(f"k={k}" for k in range(args.nfe)) + " |",
              "|---|" + "---|" * args.nfe]
    for name, r in res.items():
        lines.append(f"| {name} | " + " | ".join(f"{float(c):.6f}" for c in r["coeffs"]) + " |")
    lines += ["", f"Largest coefficient difference: {diff:.3g}; largest grid difference: "
              f"{float((a['times'] - b['times']).abs().max()):.3g}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
