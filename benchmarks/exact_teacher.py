"""The exact (first-hitting) teacher against the N-step Euler teacher on a masked model, side by side in one process.

Runs the same number of trajectories through both teachers (same student grid, same batch size, same seed), a
second exact run on another seed (the spread between two runs of one teacher), then reports wall times, network
calls, the masked rows' score totals against the true total 1 / (e^sigma_bar - 1) along the exact teacher's states
(where first hitting and the model's Euler limit differ: ``lsdd.sampling.first_hitting``), and each run's outputs
scored by the model's NLL bound and the task's metrics.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/exact_teacher.py --model text-absorb --num 32 --out benchmarks/exact_teacher_text_absorb.md
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import lsdd
from lsdd import atomic
from lsdd.distillation.statistics import model_nll
from lsdd.distillation.teacher import run_exact_teacher, run_teacher
from lsdd.models import load_model
from lsdd.sampling.schedules import uniform_times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="text-absorb")
    p.add_argument("--num", type=int, default=32, help="trajectories per teacher run")
    p.add_argument("--teacher-nfe", type=int, default=1024)
    p.add_argument("--nfe", type=int, default=8, help="student steps (the grid the caches are kept on)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", help="Markdown record")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    m = load_model(args.model)
    times = uniform_times(args.nfe, 1e-5)
    common = dict(batch_size=args.batch_size, progress=False, store="scores")
    runs = {}
    t0 = time.perf_counter()
    runs["exact, seed 0"] = run_exact_teacher(m.score_fn, m.graph, m.noise, times, args.num, m.length, seed=0, **common)
    runs["exact, seed 0"].seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    runs[f"Euler {args.teacher_nfe}, seed 0"] = run_teacher(m.score_fn, m.graph, m.noise, times, args.teacher_nfe,
                                                            args.num, m.length, seed=0, **common)
    runs[f"Euler {args.teacher_nfe}, seed 0"].seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    runs["exact, seed 1"] = run_exact_teacher(m.score_fn, m.graph, m.noise, times, args.num, m.length, seed=1, **common)
    runs["exact, seed 1"].seconds = time.perf_counter() - t0
    euler = runs[f"Euler {args.teacher_nfe}, seed 0"]
    lines = [f"# The exact (first-hitting) teacher vs the {args.teacher_nfe}-step Euler teacher: `{args.model}`", "",
             "```bash", "OMP_NUM_THREADS=1 nice -n 10 python benchmarks/exact_teacher.py " + " ".join(sys.argv[1:]),
             "```", "",
             f"{args.num} trajectories per run, batch {args.batch_size}, student grid {args.nfe} steps to 1e-5, one "
             "thread, runs in the order listed (one process).", "",
             "| run | wall s | network calls | Euler / run wall | model NLL bound / token (mean ± se) | gen PPL | "
             "entropy |", "|---|---|---|---|---|---|---|"]
    for name, c in runs.items():
        nll = model_nll(m.score_fn, m.graph, m.noise, c.x_0, seed=5, batch_size=args.batch_size, num_times=16)
        q = lsdd.evaluate(c.x_0, m)
        lines.append(f"| {name} | {c.seconds:.1f} | {c.nfe} | {euler.seconds / c.seconds:.2f} | "
                     f"{float(nll.mean()):.4f} ± {float(nll.std() / len(nll) ** 0.5):.4f} | "
                     f"{q.get('gen_ppl', float('nan')):.1f} | {q.get('entropy', float('nan')):.3f} |")
    lines += ["", "Masked rows' real-token score totals / the true total 1 / (e^sigma_bar - 1), on the exact "
              "teacher's states (seed 0) at the student times (1 everywhere for clean-token models: there first "
              "hitting is the model's reverse process exactly):", "",
              "| t | mean | 5% | 50% | 95% |", "|---|---|---|---|---|"]
    ex = runs["exact, seed 0"]
    with torch.no_grad():
        for k in range(args.nfe):
            x = ex.states[k]
            sig = m.noise.total(times[k].expand(x.shape[0]))
            s = m.score_fn(x, sig.float())[..., : m.graph.num_tokens].double()
            c = (s.sum(-1) * torch.expm1(sig)[:, None])[x == m.graph.mask_id]
            q = torch.quantile(c, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)).tolist()
            lines.append(f"| {float(times[k]):.3f} | {float(c.mean()):.4f} | {q[0]:.3f} | {q[1]:.3f} | {q[2]:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic.write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
