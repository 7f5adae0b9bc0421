"""What does each learned part of an lsd-c sampler do? Its parts switched off one at a time, beside the base
(spread movers) swept in temperature so that every row can be read at the learned sampler's entropy.

usage: python benchmarks/lsdc_ablation.py --model text-absorb --learned lsdc_feat4.json [--num 512] [--seeds 1 2 3]
           [--temps 0.97 0.98 0.99 1.0] [--teacher-ppl 94.6] [--json out.json]

Rows (same seed, same batches, so rows differ only by the sampler): the learned sampler; Phi only (slope 0,
beta 1: the per-step count schedule); Phi + beta (no confidence slope); Phi + slope (beta 1); the learned numbers
with spread movers (when it chose another order); and the base (--base: Euler with spread movers, or plain Euler
for uniform-graph models, on the uniform grid) at each temperature of --temps. Each row: the task's metrics (text: gen PPL under the bundled evaluator, entropy,
MAUVE, distinct-2); then, per row and seed, the base's gen PPL interpolated (in log PPL, linearly in entropy
between the two temperatures that bracket it) at the row's entropy, the row's log ratio to it (mean and standard
error over seeds: paired) and the share of the base -> --teacher-ppl log gap closed.
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
        if any(cond["slope"]):  # without a slope, Phi + beta is the learned sampler and Phi + slope is Phi only
            out["phi + beta"] = learned.replace(conditioning={**cond, "slope": [0.0] * m})
            out["phi + slope"] = learned.replace(conditioning={**cond, "beta": [1.0] * m})
    if learned.movers not in ("spread", "independent"):
        out["learned, spread movers"] = learned.replace(movers="spread")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--model", default="text-absorb")
    p.add_argument("--learned", required=True)
    p.add_argument("--num", type=int, default=512)
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="sampling seeds (rows are paired per seed)")
    p.add_argument("--temps", type=float, nargs="+", default=[0.97, 0.98, 0.99, 1.0])
    p.add_argument("--base", choices=("spread", "euler"), default="spread",
                   help="the training-free rule swept in temperature: spread movers (masked models) or Euler")
    p.add_argument("--teacher-ppl", type=float, default=None, help="the teacher's gen PPL, for the gap closed")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    from lsdd.allocator import tune_cpu_allocator

    tune_cpu_allocator()  # large CPU buffers stay in the heap, as under the lsdd command

    model = lsdd.load_model(args.model)
    learned = lsdd.Sampler.load(args.learned)
    task = make_task("text", model)
    samplers = {**rows_for(learned),
                **{f"base T={t:g}": (lsdd.Sampler.spread(learned.nfe) if args.base == "spread" else
                                     lsdd.Sampler.euler(learned.nfe)).with_temperature(t) for t in args.temps}}
    per_seed = []
    for seed in args.seeds:
        results = {}
        for name, smp in samplers.items():
            out = lsdd.sample(model, smp, args.num, seed=seed, batch_size=args.batch_size, force=True)
            assert out.nfe == learned.nfe, (name, out.nfe)
            results[name] = {k: float(v) for k, v in task.compute(out.x).items()}
            r = results[name]
            print(f"seed {seed}  {name:26s} NFE {out.nfe}  gen PPL {r['gen_ppl']:8.2f}  entropy {r['entropy']:.4f}  "
                  f"MAUVE {r.get('mauve', float('nan')):.3f}  distinct-2 {r.get('distinct_2', float('nan')):.3f}",
                  flush=True)
        per_seed.append({"seed": seed, "rows": results, "matched": matched(results, args)})
    print(f"\nat each row's own entropy, the base ({args.base}, temperature-swept) interpolated there; ratio = row / base:")
    summary = {}
    for name in rows_for(learned):
        logs = [p["matched"][name]["log_ratio"] for p in per_seed if name in p["matched"]]
        if len(logs) < len(per_seed):
            print(f"  {name:26s} entropy outside the swept base range on some seed")
            continue
        mean = sum(logs) / len(logs)
        se = (sum((v - mean) ** 2 for v in logs) / (len(logs) - 1) / len(logs)) ** 0.5 if len(logs) > 1 else float("nan")
        ppl = sum(p["rows"][name]["gen_ppl"] for p in per_seed) / len(per_seed)
        base = sum(p["matched"][name]["base_ppl"] for p in per_seed) / len(per_seed)
        ent = sum(p["rows"][name]["entropy"] for p in per_seed) / len(per_seed)
        line = (f"  {name:26s} gen PPL {ppl:7.2f}  base at its entropy {base:7.2f}  entropy {ent:.4f}  "
                f"log ratio {mean:+.4f} +- {se:.4f} (se over {len(logs)} seeds)")
        summary[name] = {"gen_ppl": ppl, "base_at_entropy": base, "entropy": ent, "log_ratio": mean, "se": se}
        if args.teacher_ppl:
            gaps = [p["matched"][name]["gap_closed"] for p in per_seed]
            summary[name]["gap_closed"] = sum(gaps) / len(gaps)
            line += f"  gap closed {100 * summary[name]['gap_closed']:.0f}%"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "per_seed": per_seed, "summary": summary,
                       "learned": learned.to_dict()}, f, indent=1)


def matched(results: dict, args) -> dict:
    """Per learned row: the base's log gen PPL interpolated linearly in entropy between the two swept temperatures
    that bracket the row's entropy, the row's log ratio to it, and the share of the base -> teacher gap closed."""
    base = sorted((results[f"base T={t:g}"]["entropy"], math.log(results[f"base T={t:g}"]["gen_ppl"]))
                  for t in args.temps)
    out = {}
    for name, r in results.items():
        if name.startswith("base T="):
            continue
        h = r["entropy"]
        for (h0, l0), (h1, l1) in zip(base, base[1:]):
            if h0 <= h <= h1:
                at = l0 + (l1 - l0) * (h - h0) / (h1 - h0)
                out[name] = {"base_ppl": math.exp(at), "log_ratio": math.log(r["gen_ppl"]) - at}
                if args.teacher_ppl:
                    out[name]["gap_closed"] = (at - math.log(r["gen_ppl"])) / (at - math.log(args.teacher_ppl))
                break
    return out


if __name__ == "__main__":
    main()
