"""Quality of the uniform-grid Euler and Tweedie samplers against the step count, and seconds per call.

    python benchmarks/baselines.py --model countdown --steps 8 16 32 64 256 1024 --num 256 \
        --out benchmarks/baselines_countdown.md
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from lsdd import atomic
from lsdd.tasks import get_task
from lsdd.models import load_model
from lsdd.sampling.samplers import sample
from lsdd.sampling.schedules import uniform_times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="countdown")
    ap.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32, 64, 256, 1024])
    ap.add_argument("--samplers", nargs="+", default=["euler", "tweedie"])
    ap.add_argument("--num", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)
    task = get_task("countdown", num_values=model.config.num_tokens)
    cols = ["violation_rate", "any_violation", "jys_error", "nll_valid", "start_tv", "start_tv_ref", "start_entropy"]
    lines = [f"# Uniform-grid baselines: {model.source} ({model.fingerprint})", "",
             "Command: `python benchmarks/baselines.py --model " + args.model + " --steps "
             + " ".join(map(str, args.steps)) + f" --num {args.num} --seed {args.seed}`", "",
             f"{args.num} samples per row, batch {args.batch_size}, same seed per row; load average at start "
             f"{os.getloadavg()[0]:.2f}.", "",
             "| sampler | steps | NFE | " + " | ".join(cols) + " | s per call (batch) |",
             "|---|---|---|" + "---|" * (len(cols) + 1)]
    for steps in args.steps:
        for method in args.samplers:
            gen = torch.Generator().manual_seed(args.seed)
            xs, calls, t0 = [], 0, time.perf_counter()
            for b0 in range(0, args.num, args.batch_size):
                out = sample(model.score_fn, model.graph, model.noise, uniform_times(steps),
                             (min(args.batch_size, args.num - b0), model.config.length), method=method, generator=gen)
                xs.append(out.x)
                calls += out.nfe
            secs = time.perf_counter() - t0
            m = task.compute(torch.cat(xs))
            line = (f"| {method} | {steps} | {out.nfe} | " + " | ".join(f"{m[c]:.4f}" for c in cols)
                    + f" | {secs / calls:.4f} |")
            lines.append(line)
            print(line, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic.write_text(args.out, text)


if __name__ == "__main__":
    main()
