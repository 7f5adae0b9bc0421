"""The lsd-c objective's curvature at the start (the base) of a text-absorb fit, by finite differences: f at x0,
x0 +- s e_i and x0 + s (e_i + e_j), the Hessian, its eigenvalues and directions, and f along the straight line from
x0 to a fitted sampler's vector. Says whether the steep direction is a coordinate axis (then a per-coordinate step
fixes it) or a diagonal (then only a rotated metric does).

usage (from a directory with the teacher cache, as the fits ran):
  python landscape.py --nfe 2 --seed 1 --toward ta2_s0.json [--step 0.2]"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import lsdd
import lsdd.graphs
import lsdd.distillation.distill as engine
from lsdd.cli import main as cli
from lsdd.distillation.objective import CMAResult, finite_hessian

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "s34"))
from cross_score import fit_parser, flat  # noqa: E402


def run() -> None:
    p = fit_parser(__doc__)
    p.add_argument("--toward", default=None, help="a fitted sampler: f along the line from the start to it")
    p.add_argument("--step", type=float, default=0.2)
    args = p.parse_args()

    def fake_cma(fn, x0, sigma0, iterations, popsize, seed, **kw):
        d, s = x0.numel(), args.step
        f0 = fn(x0)
        h, probes = finite_hessian(fn, x0, f0, s)
        fp, fm = [v for _, v in probes[:d]], [v for _, v in probes[d:2 * d]]
        print(f"f0 {f0:.4f}; f(x0 + s e_i) {[round(v, 3) for v in fp]}; f(x0 - s e_i) {[round(v, 3) for v in fm]}")
        print("Hessian (coordinates: log Phi basis, log beta basis [level, tilt]):")
        for row in h.tolist():
            print("  " + "  ".join(f"{v:9.2f}" for v in row))
        lam, q = torch.linalg.eigh(h)
        for k in range(d):
            print(f"  eigenvalue {lam[k]:9.2f}  direction {[round(float(a), 3) for a in q[:, k]]}")
        if args.toward:
            v = flat(lsdd.Sampler.load(args.toward), engine.family_sizes(
                engine.DistillConfig(nfe=args.nfe, method="lsd-c"), lsdd.graphs.Absorbing(2)))
            print(f"line x0 -> {args.toward} {[round(float(a), 3) for a in v]}:")
            for a in (0.25, 0.5, 0.75, 1.0):
                print(f"  a = {a:.2f}: f {fn(x0 + a * (v - x0)):.4f}")
        return CMAResult(x0, f0, f0, 1, [])

    engine.minimise_cma = fake_cma
    cli(["distill", "--model", args.model, "--nfe", str(args.nfe), "--seed", str(args.seed), "--teacher-cache",
         args.teacher_cache, "--no-validate", "--out", f"/tmp/landscape_{args.seed}.json"])


if __name__ == "__main__":
    run()
