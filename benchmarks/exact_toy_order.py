"""Convergence order of Euler, Tweedie, theta-RK-2 and theta-trapezoidal on exact toys.

True score of a known data law over N = 3 values and L = 2 tokens (``lsdd.sampling.exact``), output laws by enumeration
(no sampling noise), error = TV to the law of the exact reverse process from the same start
(``exact_reverse_law``). The slope is log2(error(M) / error(2M)): 1 for a first-order sampler, 2 for a
second-order one. Two laws: a mild one (token dependence small enough that theta-trapezoidal's clipped
extrapolation never clips) and a strong one (it clips).

    python benchmarks/exact_toy_order.py --out benchmarks/exact_toy_order.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from lsdd.sampling.exact import ExactScore, exact_reverse_law, exact_sampler_law
from lsdd.graphs import Absorbing, Uniform
from lsdd.noise import Geometric, LogLinear
from lsdd.sampling.schedules import uniform_times

METHODS = ("euler", "tweedie", "theta-rk2", "theta-trapezoidal")


def law(num_values: int, length: int, spread: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.exp(spread * torch.randn(num_values**length, generator=g, dtype=torch.float64))
    return p / p.sum()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--spreads", type=float, nargs="+", default=[0.3, 1.5])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cases = [("absorbing, log-linear(1e-3), eps 1e-5", Absorbing(3), LogLinear(1e-3), 1e-5),
             ("uniform, geometric(1e-3, 8), eps 1e-3", Uniform(3), Geometric(1e-3, 8.0), 1e-3)]
    t0 = time.perf_counter()
    lines = ["# Convergence order on exact toys", "",
             "Command: `python benchmarks/exact_toy_order.py " + " ".join(sys.argv[1:]) + "`", "",
             "Exact score of a data law p0 over N = 3 values, L = 2 tokens (p0 ∝ exp(spread · z), z standard normal, "
             "seed 0); each sampler's output law computed by enumeration (two-call rules: every intermediate state "
             "enumerated); error = TV to the exact reverse process's law from the same start. M = steps; the "
             "theta rules make 2 network calls per step, so compare theta at M with Euler at 2M for equal NFE. "
             "Slope = log2(err(M) / err(2M)).", ""]
    for spread in args.spreads:
        for name, graph, noise, eps in cases:
            exact = ExactScore(law(3, 2, spread), graph, 2)
            ref = exact_reverse_law(exact, noise, eps)
            lines += [f"## {name}, spread {spread}", "",
                      "| sampler | " + " | ".join(f"M={m}" for m in args.steps) + " | slopes |",
                      "|---|" + "---|" * (len(args.steps) + 1)]
            for method in METHODS:
                errs = [float((exact_sampler_law(exact, graph, noise, uniform_times(m, eps), 2, method=method) - ref)
                              .abs().sum() / 2) for m in args.steps]
                sl = [math.log2(a / b) if a > 1e-13 and b > 1e-13 else float("nan") for a, b in zip(errs, errs[1:])]
                lines.append(f"| {method} | " + " | ".join(f"{e:.2e}" for e in errs) + " | "
                             + ", ".join(f"{v:.2f}" for v in sl) + " |")
            lines.append("")
    lines.append(f"({time.perf_counter() - t0:.0f} s on 1 CPU thread.)")
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
