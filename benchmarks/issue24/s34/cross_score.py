"""Score fitted samplers under another fit's objective: is a poor fit an optimisation failure (the better sampler
scores better under the poor fit's own objective too) or an objective that differs between fits (its teacher
sample and random streams)?

usage (from a directory with the teacher cache, as the fits ran):
  python cross_score.py --nfe 2 --seed 1 --samplers ta2_s0.json ta2_s1.json [-- extra lsdd distill options]

Runs `lsdd distill` in-process with CMA-ES replaced by: evaluate the fit's objective at the start (the base) and at
each sampler's parameters, print them, and stop (no validation)."""

from __future__ import annotations

import argparse
import torch

import lsdd
import lsdd.graphs
import lsdd.distillation.distill as engine
from lsdd.cli import main as cli
from lsdd.distillation.objective import CMAResult, step_basis


def flat(sampler: lsdd.Sampler, sizes) -> torch.Tensor:
    """The CMA vector of a fitted lsd-c sampler (least squares on each family's basis)."""
    m = sampler.steps
    fams = [torch.tensor(sampler.coeffs, dtype=torch.float64).log(),
            torch.tensor(sampler.conditioning["slope"], dtype=torch.float64),
            torch.tensor(sampler.conditioning["beta"], dtype=torch.float64).log()]
    parts = []
    for j, (n, y) in enumerate(zip(sizes, fams)):
        if n:  # Phi and the slope: the forced last step is not fitted (family_sizes)
            rows = slice(0, m - 1 if j < 2 and m > 1 else m)
            parts.append(torch.linalg.lstsq(step_basis(m, n)[rows], y[rows, None]).solution[:, 0])
    return torch.cat(parts)


def fit_parser(doc: str) -> argparse.ArgumentParser:
    """The options that name a text-absorb fit (as `lsdd distill` ran it): --nfe, --seed, --model, --teacher-cache."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--nfe", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--model", default="text-absorb")
    p.add_argument("--teacher-cache", default="../teachers_auto")
    return p


def run() -> None:
    p = fit_parser(__doc__)
    p.add_argument("--samplers", nargs="+", required=True)
    p.add_argument("rest", nargs="*")
    args = p.parse_args()
    samplers = [lsdd.Sampler.load(f) for f in args.samplers]

    def fake_cma(fn, x0, sigma0, iterations, popsize, seed, **kw):
        sizes = engine.family_sizes(engine.DistillConfig(nfe=args.nfe, method="lsd-c"), lsdd.graphs.Absorbing(2))
        start = fn(x0)
        print(f"objective of seed {args.seed}'s fit: base {start:.4f}")
        for f, s in zip(args.samplers, samplers):
            v = flat(s, sizes)
            print(f"  {f}: {fn(v):.4f}  (vector {[round(float(a), 4) for a in v]})")
        return CMAResult(x0, start, start, 1 + len(samplers), [])

    engine.minimise_cma = fake_cma
    cli(["distill", "--model", args.model, "--nfe", str(args.nfe), "--seed", str(args.seed), "--teacher-cache",
         args.teacher_cache, "--no-validate", "--out", f"/tmp/cross_{args.seed}.json", *args.rest])


if __name__ == "__main__":
    run()
