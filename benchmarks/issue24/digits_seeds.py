"""FID of digits samplers over several sampling seeds (256 samples each): the FID of one 256-sample set moves by
about +-10 between seeds (the 1024-step teacher: 49.7 and 66.7), so one set cannot rank samplers a few FID apart.

    python benchmarks/issue24/digits_seeds.py --model runs/digits24/digits-uniform-s16000 --nfe 8 \
        --samplers euler spread runs/s30/dg8_net.json --seeds 1 2 3 4 [--teacher-sets a.npy b.npy] [--save PREFIX]

Prints one row per sampler: FID mean and standard deviation over the seeds, recall and class entropy (means), and
the share of Euler's log-FID gap to the teacher that the row closes (when teacher sets are given).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

import numpy as np
import torch

import lsdd


def sampler_of(spec: str, nfe: int) -> lsdd.Sampler:
    if spec == "euler":
        return lsdd.Sampler.euler(nfe)
    if spec == "spread":
        return lsdd.Sampler.spread(nfe)
    return lsdd.Sampler.load(spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--model", required=True)
    p.add_argument("--nfe", type=int, required=True)
    p.add_argument("--samplers", nargs="+", required=True, help="euler, spread, or sampler JSON files")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4])
    p.add_argument("--num", type=int, default=256)
    p.add_argument("--teacher-sets", nargs="*", default=[], help=".npy sample sets of the teacher (scored as given)")
    p.add_argument("--json", default=None)
    p.add_argument("--save", default=None, metavar="PREFIX",
                   help="also write each sample set as PREFIX_<sampler>_<seed>.npy (e.g. teacher sets for --teacher-sets)")
    args = p.parse_args()
    from lsdd.allocator import tune_cpu_allocator

    tune_cpu_allocator()  # large CPU buffers stay in the heap, as under the lsdd command
    model = lsdd.load_model(args.model)
    rows = {}

    def score(name, sets):
        ms = [lsdd.evaluate(torch.as_tensor(x).long(), model, task="digits") for x in sets]
        fid = [m["fid"] for m in ms]
        rows[name] = {"fid": fid, "fid_mean": statistics.mean(fid),
                      "fid_sd": statistics.stdev(fid) if len(fid) > 1 else math.nan,
                      "recall": statistics.mean(m["recall"] for m in ms),
                      "class_entropy": statistics.mean(m["class_entropy"] for m in ms)}

    if args.teacher_sets:
        score("teacher", [np.load(f) for f in args.teacher_sets])
    for spec in args.samplers:
        s = sampler_of(spec, args.nfe)
        if s.nfe != args.nfe:
            raise SystemExit(f"{spec}: {s.nfe} NFE, not {args.nfe}")
        sets = [lsdd.sample(model, s, num=args.num, seed=seed).x for seed in args.seeds]
        if args.save:
            tag = spec.rsplit("/", 1)[-1].removesuffix(".json")
            for seed, x in zip(args.seeds, sets):
                np.save(f"{args.save}_{tag}{args.nfe}_{seed}.npy", x.cpu().numpy())
        score(spec, sets)
    t = rows.get("teacher", {}).get("fid_mean")
    e = rows.get("euler", {}).get("fid_mean")
    print(f"{'sampler':40s} {'FID mean':>9s} {'sd':>6s} {'recall':>7s} {'class H':>8s} {'gap closed':>10s}")
    for name, r in rows.items():
        gap = "" if not (t and e and name not in ("teacher", "euler")) else \
            f"{100 * (math.log(e) - math.log(r['fid_mean'])) / (math.log(e) - math.log(t)):.0f}%"
        print(f"{name:40s} {r['fid_mean']:9.1f} {r['fid_sd']:6.1f} {r['recall']:7.3f} {r['class_entropy']:8.3f} "
              f"{gap:>10s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
