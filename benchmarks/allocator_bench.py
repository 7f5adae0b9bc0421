"""glibc's default allocator against ``lsdd.allocator.tune_cpu_allocator`` on the CPU, side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/allocator_bench.py [--model text-uniform] [--nfe 8] [--num 256] [--repeats 2]

Each round draws ``--num`` samples (``--nfe`` Euler steps, batches of 64, the fit's batch) and their NLL bound (8 noise
levels, as the fit's objective and validation read it). The arms alternate: glibc as the process started (first,
before any setting: the true default), the tuned thresholds, glibc's mmap threshold fixed at 32 MiB (its largest
dynamic value: the default's behaviour for blocks above it), the tuned thresholds again, and so on. Printed per arm:
wall, user and system CPU seconds and minor page faults (``getrusage``), and the ratio tuned / default of the sums.
The draws are the same in every arm (same seeds), and a check asserts it.
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import time

import torch

import lsdd
from lsdd.allocator import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, tune_cpu_allocator
from lsdd.distillation.statistics import model_nll


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--model", default="text-uniform")
    p.add_argument("--nfe", type=int, default=8)
    p.add_argument("--num", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2, help="rounds of (default, tuned)")
    args = p.parse_args()
    model = lsdd.load_model(args.model)
    sampler = lsdd.Sampler.euler(args.nfe)

    def work():
        x = lsdd.sample(model, sampler, num=args.num, seed=0, batch_size=64, progress=False).x
        nll = model_nll(model.score_fn, model.graph, model.noise, x, batch_size=64)
        return x, nll

    def measured():
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        out = work()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        return out, (time.perf_counter() - t0, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime,
                     r1.ru_minflt - r0.ru_minflt)

    libc = ctypes.CDLL(None)
    ref, _ = measured()  # warm-up (imports, first allocations), not counted
    rows = []
    for r in range(args.repeats):
        if r > 0:  # glibc's default behaviour for blocks above 32 MiB: a fresh mapping per block
            libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
            libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)
        out, m = measured()
        rows.append(("default" if r == 0 else "32 MiB threshold", m))
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
        if not tune_cpu_allocator():
            raise SystemExit("tune_cpu_allocator did nothing here (not glibc, or set by the environment)")
        out, m = measured()
        rows.append(("tuned", m))
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    print(f"{args.model}, {args.num} samples at {args.nfe} NFE and their NLL bound, {torch.get_num_threads()} thread(s)")
    print(f"{'arm':18s} {'wall s':>8s} {'user s':>8s} {'sys s':>8s} {'minor faults':>13s}")
    for name, (w, u, s, f) in rows:
        print(f"{name:18s} {w:8.2f} {u:8.2f} {s:8.2f} {f:13d}")
    base = [m for n, m in rows if n != "tuned"]
    tuned = [m for n, m in rows if n == "tuned"]
    ratio = [sum(t[i] for t in tuned) / sum(b[i] for b in base) for i in range(4)]
    print(f"{'tuned / default':18s} {ratio[0]:8.2f} {ratio[1]:8.2f} {ratio[2]:8.2f} {ratio[3]:13.2f}")
    cpu = sum(t[1] + t[2] for t in tuned) / sum(b[1] + b[2] for b in base)
    print(f"CPU time (user + sys) tuned / default: {cpu:.2f}")


if __name__ == "__main__":
    main()
