"""What does each learned part of an lsd-c sampler do? Its parts switched off one at a time, beside the base
(spread movers) swept in temperature so that every row can be read at the learned sampler's entropy.

usage: python benchmarks/lsdc_ablation.py --model text-absorb --learned lsdc_feat4.json [--num 512] [--seed 1]
           [--temps 0.97 0.98 0.99 1.0] [--json out.json]

Rows (same seed, same batches, so rows differ only by the sampler): the learned sampler; Phi only (slope 0,
beta 1: the per-step count schedule); Phi + beta (no confidence slope); Phi + slope (beta 1); the learned numbers
with spread movers (when it chose another order); and the base (Euler, spread movers, uniform grid) at each
temperature of --temps. Each row: the task's metrics (text: gen PPL under the bundled evaluator, entropy,
MAUVE, distinct-2); then the base's gen PPL interpolated (in log PPL, linearly in entropy between the two temps
that bracket it) at the learned sampler's entropy, and the share of the base -> --teacher-ppl log gap closed.
"""

from __future__ import annotations

import argparse
import json
import math

import lsdd
from lsdd.cli.common import make_task


def rows_for(learned: lsdd.Sampler) -> dict[str, lsdd.Sampler]:
    out = {"learned": learned}
    cond = learned.conditioning
    if cond is not None:
        m = learned.steps
        out["phi only"] = learned.replace(conditioning=None)
        out["phi + beta"] = learned.replace(conditioning={**cond, "slope": [0.0] * m})
        out["phi + slope"] = learned.replace(conditioning={**cond, "beta": [1.0] * m})
    if learned.movers != "spread":
        out["learned, spread movers"] = learned.replace(movers="spread")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--model", default="text-absorb")
    p.add_argument("--learned", required=True)
    p.add_argument("--num", type=int, default=512)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--temps", type=float, nargs="+", default=[0.97, 0.98, 0.99, 1.0])
    p.add_argument("--teacher-ppl", type=float, default=None, help="the teacher's gen PPL, for the gap closed")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    model = lsdd.load_model(args.model)
    learned = lsdd.Sampler.load(args.learned)
    task = make_task("text", model)
    results = {}
    samplers = {**rows_for(learned),
                **{f"spread T={t:g}": lsdd.Sampler.spread(learned.nfe).with_temperature(t) for t in args.temps}}
    for name, smp in samplers.items():
        out = lsdd.sample(model, smp, args.num, seed=args.seed, batch_size=args.batch_size, force=True)
        assert out.nfe == learned.nfe, (name, out.nfe)
        results[name] = {k: float(v) for k, v in task.compute(out.x).items()}
        r = results[name]
        print(f"{name:28s} NFE {out.nfe}  gen PPL {r['gen_ppl']:8.2f}  entropy {r['entropy']:.4f}  "
              f"MAUVE {r.get('mauve', float('nan')):.3f}  distinct-2 {r.get('distinct_2', float('nan')):.3f}", flush=True)
    base = sorted((results[f"spread T={t:g}"]["entropy"], math.log(results[f"spread T={t:g}"]["gen_ppl"]))
                  for t in args.temps)
    h = results["learned"]["entropy"]
    summary = {}
    for (h0, l0), (h1, l1) in zip(base, base[1:]):
        if h0 <= h <= h1:
            at = l0 + (l1 - l0) * (h - h0) / (h1 - h0)
            summary = {"base_ppl_at_learned_entropy": math.exp(at), "learned_entropy": h}
            line = f"base (spread) at the learned sampler's entropy {h:.4f}: gen PPL {math.exp(at):.2f}"
            if args.teacher_ppl:
                gap = (at - math.log(results["learned"]["gen_ppl"])) / (at - math.log(args.teacher_ppl))
                summary["gap_closed"] = gap
                line += f"; learned {results['learned']['gen_ppl']:.2f} closes {100 * gap:.0f}% of the log gap to the teacher ({args.teacher_ppl:g})"
            print(line)
            break
    else:
        print(f"the learned sampler's entropy {h:.4f} lies outside the swept base entropies {[b[0] for b in base]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": results, "summary": summary,
                       "learned": learned.to_dict()}, f, indent=1)


if __name__ == "__main__":
    main()
