"""Print an lsd-c fit's CMA-ES generations from its checkpoint (OUT.ckpt, written while the fit runs): each
generation's candidate values, beside the start's. Shows whether the first generations search where the
objective is steep (values many times the start's).

usage: python cma_generations.py ta4_s2.json.ckpt [--start 2.204] [--show 3]"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("ckpt")
    p.add_argument("--start", type=float, default=None, help="the start's objective (the fit's log prints it)")
    p.add_argument("--show", type=int, default=0, help="print the candidates of the first SHOW generations")
    args = p.parse_args()
    state = torch.load(args.ckpt, weights_only=False).get("state") or {}
    gens = state.get("cma", {}).get("generations", [])
    if not gens:
        raise SystemExit(f"{args.ckpt}: no CMA-ES generation recorded yet")
    for g, rec in enumerate(gens, 1):
        vals = sorted(rec["values"])
        ratio = "" if not args.start else f"  median / start {vals[len(vals) // 2] / args.start:.2f}"
        print(f"generation {g:2d}: " + " ".join(f"{v:8.2f}" for v in vals) + ratio)
        if g <= args.show:
            for c, v in zip(rec["candidates"], rec["values"]):
                print(f"      {[round(x, 3) for x in c]} -> {v:.3f}")


if __name__ == "__main__":
    main()
