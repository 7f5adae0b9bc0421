"""Is validation's n-gram MMD^2 guard seeing a real loss, or what any sampler at that entropy would show? The
learned 2-NFE text samplers are colder than spread movers at T = 1 (they aim at the teacher's entropy) and their
MMD^2 to the held-out teacher outputs is 0.04-0.16 x1e-3 higher; validation's guard compares them with the base at
T = 1 only. Here every sampler draws NUM x len(SEEDS) samples (the same seeds: paired), and each is scored against
a large reference of teacher outputs (the exact teachers' x_0 in the given cache files: 256 each, independent
seeds): MMD^2 x1e3 with a paired bootstrap interval of its difference to the base at T = 1, and the per-sample
unigram entropy. The base is also swept in temperature, so the learned rows can be read against the base at their
own entropy.

usage: python guard_check.py --samplers ta2_s1_hpF.json ... --teachers ../teachers_auto/*_s1_*.pt ... [--temps 1 0.96 0.93]"""

from __future__ import annotations

import argparse

import torch

import lsdd
from lsdd.distillation.bootstrap import RESAMPLES, mmd2_difference_resamples, percentile_interval, resample_counts
from lsdd.distillation.statistics import mmd2, unigram_entropy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--model", default="text-absorb")
    p.add_argument("--samplers", nargs="+", required=True)
    p.add_argument("--teachers", nargs="+", required=True, help="teacher cache files (.pt) whose x_0 form the reference")
    p.add_argument("--last", type=int, default=None,
                   help="take only the last LAST outputs of each teacher file (a fit's held-out validation set: 64)")
    p.add_argument("--split", type=int, default=None,
                   help="also cut the reference into disjoint sets of SPLIT outputs and score each learned row's "
                        "difference against each: the spread of those differences beside the bootstrap's own "
                        "standard error (half its 95%% interval / 1.96) says whether the interval is calibrated")
    p.add_argument("--num", type=int, default=512)
    p.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14])
    p.add_argument("--temps", type=float, nargs="+", default=[1.0, 0.97, 0.94, 0.91])
    args = p.parse_args()
    from lsdd.allocator import tune_cpu_allocator

    tune_cpu_allocator()
    model = lsdd.load_model(args.model)
    ref = torch.cat([torch.load(f, weights_only=False)["x_0"][-(args.last or 0):] for f in args.teachers]).unique(dim=0)
    learned = {f: lsdd.Sampler.load(f) for f in args.samplers}
    nfe = next(iter(learned.values())).nfe
    rows = {f"spread T={t:g}": lsdd.Sampler.spread(nfe).with_temperature(t) for t in args.temps}
    rows.update(learned)
    k = model.graph.num_states
    draws = {name: torch.cat([lsdd.sample(model, s, args.num, seed=seed, batch_size=128, force=True).x.cpu()
                              for seed in args.seeds]) for name, s in rows.items()}
    base = draws[f"spread T={args.temps[0]:g}"]
    n, m = base.shape[0], ref.shape[0]
    gen = torch.Generator().manual_seed(0)
    counts, ref_counts = resample_counts(n, RESAMPLES, gen), resample_counts(m, RESAMPLES, gen)
    d_base = mmd2(base, ref, k)
    print(f"reference: {m} distinct teacher outputs; {n} samples per row (seeds {args.seeds})")
    print(f"{'sampler':28s} {'entropy':>8s} {'MMD^2 x1e3':>11s}   difference to spread T={args.temps[0]:g} (95% paired bootstrap)")
    for name, x in draws.items():
        d = mmd2(x, ref, k)
        h = float(unigram_entropy(x, k).mean())
        if x is base:
            print(f"{name:28s} {h:8.4f} {1e3 * d:11.4f}")
            continue
        iv = percentile_interval(d - d_base, mmd2_difference_resamples(base, x, ref, k, counts, ref_counts), 0.95)
        print(f"{name:28s} {h:8.4f} {1e3 * d:11.4f}   {iv.scaled(1e3)}")
    if args.split:
        chunks = [ref[i:i + args.split] for i in range(0, m - args.split + 1, args.split)]
        print(f"\nagainst {len(chunks)} disjoint reference sets of {args.split} (difference to spread "
              f"T={args.temps[0]:g}, x1e3):")
        for name, x in draws.items():
            if x is base:
                continue
            diffs, ses = [], []
            for c in chunks:
                rc = resample_counts(c.shape[0], RESAMPLES, gen)
                est = mmd2(x, c, k) - mmd2(base, c, k)
                iv = percentile_interval(est, mmd2_difference_resamples(base, x, c, k, counts, rc), 0.95)
                diffs.append(1e3 * est)
                ses.append(1e3 * (iv.high - iv.low) / (2 * 1.96))
            t = torch.tensor(diffs, dtype=torch.float64)
            print(f"  {name:26s} mean {float(t.mean()):+.4f}  sd over sets {float(t.std()):.4f}  bootstrap se "
                  f"(median) {sorted(ses)[len(ses) // 2]:.4f}  sets above 0 beyond noise: "
                  f"{sum(d - 1.96 * s > 0 for d, s in zip(diffs, ses))} of {len(diffs)}")
    h_ref = float(unigram_entropy(ref, k).mean())
    print(f"{'teacher (the reference)':28s} {h_ref:8.4f}")


if __name__ == "__main__":
    main()
