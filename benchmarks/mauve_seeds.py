"""How much does MAUVE move between seeds? Paired samplers on a text model over several sampling seeds.

Issue 7's target asks that the best few-step sampler's MAUVE be "no worse than Euler's". One bench row is one
draw of 256-512 samples, scored against one fixed set of real windows; this script measures the spread of that
number across sampling seeds, with the samplers paired on each seed (same seed, same batches), so that a
difference can be read against its own standard error.

usage: python benchmarks/mauve_seeds.py [--model text-absorb] [--nfe 8] [--num 256] [--seeds 8]
           [--extra-nfe 64 --extra-seeds 2] [--json out.json]

Rows: Euler on the uniform grid, and Euler with spread movers (``lsdd sample --spread``), both at --nfe; and,
on the first --extra-seeds seeds, Euler at --extra-nfe (a better sampler: does MAUVE rank it higher?).
Each row: mean and standard error over seeds of gen PPL, entropy and MAUVE; then the paired difference
spread - Euler per seed, its mean and standard error.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

import lsdd
from lsdd.cli.common import make_task

KEYS = ("gen_ppl", "entropy", "mauve", "distinct_2")


def draw(model, nfe: int, num: int, seed: int, spread: bool) -> torch.Tensor:
    sampler = lsdd.Sampler.spread(nfe) if spread else lsdd.Sampler.euler(nfe)  # the uniform grid to 1e-5
    out = lsdd.sample(model, sampler, num, seed=seed, batch_size=64)
    assert out.nfe == nfe, (out.nfe, nfe)
    return out.x


def stats(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")
    return float(a.mean()), se


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="text-absorb")
    p.add_argument("--nfe", type=int, default=8)
    p.add_argument("--num", type=int, default=256)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--extra-nfe", type=int, default=64)
    p.add_argument("--extra-seeds", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    model = lsdd.load_model(args.model)
    task = make_task("text", model)
    rows: dict[str, list[dict]] = {"euler": [], "spread": [], f"euler@{args.extra_nfe}": []}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for name, spread in (("euler", False), ("spread", True)):
            rows[name].append(task.compute(draw(model, args.nfe, args.num, seed, spread)))
        if seed < args.extra_seeds:
            rows[f"euler@{args.extra_nfe}"].append(task.compute(draw(model, args.extra_nfe, args.num, seed, False)))
        e, s = rows["euler"][-1], rows["spread"][-1]
        print(f"seed {seed}: euler ppl {e['gen_ppl']:.1f} mauve {e['mauve']:.3f} | spread ppl {s['gen_ppl']:.1f} "
              f"mauve {s['mauve']:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\n{args.model}, {args.num} samples per row and seed, seeds 0..{args.seeds - 1}; "
          f"real-text reference gen PPL {rows['euler'][0]['ref_gen_ppl']:.1f}\n")
    print("| row | seeds | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 2) + "|")
    summary = {}
    for name, rs in rows.items():
        if not rs:
            continue
        label = f"{name}@{args.nfe}" if "@" not in name else name
        cells = []
        for k in KEYS:
            m, se = stats([r[k] for r in rs])
            summary.setdefault(label, {})[k] = {"mean": m, "se": se, "values": [r[k] for r in rs]}
            cells.append(f"{m:.3f} ± {se:.3f}" if k != "gen_ppl" else f"{m:.1f} ± {se:.1f}")
        print(f"| {label} | {len(rs)} | " + " | ".join(cells) + " |")
    print("\npaired, spread - euler, same seed:")
    for k in KEYS:
        d = [s[k] - e[k] for s, e in zip(rows["spread"], rows["euler"])]
        m, se = stats(d)
        wins = sum(v >= 0 for v in d)
        print(f"  {k}: {m:+.4f} ± {se:.4f} (se; {m / se if se > 0 else float('nan'):+.1f} se), "
              f"spread >= euler on {wins}/{len(d)} seeds")
        summary.setdefault("paired_spread_minus_euler", {})[k] = {"mean": m, "se": se, "values": d}
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
