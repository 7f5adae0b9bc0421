"""Choose `lsdd distill`'s defaults on more than one task: every recipe on countdown and on the sparse Markov
chain task, at the same NFE, with the validation step that `lsdd distill` runs by default.

For each (task, recipe): distill on 75% of the teacher trajectories, validate against the held-out 25% (what
`lsdd distill` would write: the learned sampler or, if it is no better, the base), then score both the learned
and the written sampler with the task's metrics on the same evaluation seeds. Prints and writes markdown.

    python benchmarks/defaults_sweep.py --out benchmarks/defaults_sweep.md --cache-dir runs/teachers
        (models: the bundled countdown and markov; src/lsdd/bundled/*/README.md record how they were made)
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from common import cached_teacher, evaluate
from lsdd.distillation.distill import DistillConfig, base_sampler, distill
from lsdd.models import load_model
from lsdd.sampling.schedules import uniform_times
from lsdd.tasks import get_task

RECIPES = {  # name -> DistillConfig overrides
    "LSD linear/l2": dict(method="lsd", phi_mode="linear", loss="l2"),
    "LSD linear/kl": dict(method="lsd", phi_mode="linear", loss="kl"),
    "LSD log/kl": dict(method="lsd", phi_mode="log", loss="kl"),
    "LSD log/l2": dict(method="lsd", phi_mode="log", loss="l2"),
    "LSD+ linear/l2": dict(method="lsd+", phi_mode="linear", loss="l2"),
    "LSD+ linear/kl": dict(method="lsd+", phi_mode="linear", loss="kl"),
    "LSD linear/l2, spread": dict(method="lsd", phi_mode="linear", loss="l2", spread=True),
    "LSD+ linear/l2, spread": dict(method="lsd+", phi_mode="linear", loss="l2", spread=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markov-model", default="markov")
    ap.add_argument("--nfe", type=int, default=8)
    ap.add_argument("--teacher-nfe", type=int, default=512)
    ap.add_argument("--num-traj", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--eval-samples", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES))
    ap.add_argument("--cache-dir")
    ap.add_argument("--out")
    args = ap.parse_args()
    # (tag, model, task, columns: quality metrics first, then diversity, then a reference)
    tasks = [("countdown", "countdown", get_task("countdown"), ["violation_rate", "start_tv", "start_entropy"]),
             ("markov", args.markov_model, get_task("markov"),
              ["invalid_rate", "successor_tv", "successor_entropy", "chain_entropy"])]
    lines = ["# Defaults on two tasks: every recipe with `lsdd distill`'s validation", "",
             f"Command: `python benchmarks/defaults_sweep.py --nfe {args.nfe} --teacher-nfe {args.teacher_nfe} "
             f"--num-traj {args.num_traj} --epochs {args.epochs} --eval-samples {args.eval_samples} --seed {args.seed}`",
             "", f"Load average at start {os.getloadavg()[0]:.2f}. Teacher: {args.teacher_nfe} Euler steps x "
             f"{args.num_traj} trajectories (25% held out for validation). Evaluation: {args.eval_samples} samples per "
             "row, the same seeds for every row. `val ...`: the validation figures of `lsdd distill` (base -> learned; "
             "model NLL bound per token, MMD^2 x1e3 to the held-out teacher outputs, unigram entropy); `written` is "
             "what `lsdd distill` writes (the learned sampler only if all three checks pass).", ""]
    for tag, model_ref, task, cols in tasks:
        model = load_model(model_ref)
        q = cols[0]
        cfg0 = DistillConfig(nfe=args.nfe, teacher_nfe=args.teacher_nfe, num_traj=args.num_traj, epochs=args.epochs,
                             seed=args.seed)
        cache = cached_teacher(model, cfg0, args.cache_dir)
        eval_seed = args.seed + 100
        times0 = uniform_times(args.nfe, cfg0.eps)
        base = evaluate(model, task, times0, None, "linear", args.eval_samples, eval_seed)
        spread_base = None
        if model.graph.absorbing and any(RECIPES[r].get("spread") for r in args.recipes):
            spread_base = evaluate(model, task, times0, None, "linear", args.eval_samples, eval_seed,
                                   kwargs=base_sampler(replace(cfg0, spread=True).resolve(model.graph))
                                   .loop_args(model.graph))
        ref = task.compute(cache.x_0)
        lines += [f"## {tag} ({model.source}, {model.fingerprint})", "",
                  f"| sampler | {' | '.join(cols)} | val NLL base -> learned | val MMD^2 base -> learned "
                  f"| val entropy base -> learned | written | {q} of written | coefficients |",
                  "|---|" + "---|" * (len(cols) + 6)]
        fmt = lambda m: " | ".join(f"{m[c]:.4f}" for c in cols)
        lines.append(f"| teacher ({args.teacher_nfe} steps, {cache.num} samples) | {fmt(ref)} | | | | | | |")
        lines.append(f"| Euler, {args.nfe} NFE | {fmt(base)} | | | | | | |")
        print(lines[-2], lines[-1], sep="\n", flush=True)
        if spread_base is not None:
            lines.append(f"| Euler with spread movers, {args.nfe} NFE (nothing learned) | {fmt(spread_base)} | | | | | | |")
            print(lines[-1], flush=True)
        for name in args.recipes:
            cfg = replace(cfg0, **RECIPES[name])
            t0 = time.perf_counter()
            res = distill(model.score_fn, model.graph, model.noise, model.length, cfg, cache=cache,
                          progress=False)
            val = res.validation
            learned = evaluate(model, task, res.times, res.coeffs, cfg.phi_mode, args.eval_samples, eval_seed,
                               kwargs=res.sampler(cfg).loop_args(model.graph))
            written = learned if val.learned_better else spread_base if cfg.spread else base
            coeffs = ", ".join(f"{c:.2f}" for c in res.coeffs)
            lines.append(f"| {name} | {fmt(learned)} | {val.nll_base:.3f} -> {val.nll_learned:.3f} | "
                         f"{1e3 * val.mmd2_base:.3f} -> {1e3 * val.mmd2_learned:.3f} | "
                         f"{val.entropy_base:.3f} -> {val.entropy_learned:.3f} | "
                         f"{'learned' if val.learned_better else 'base'} | {written[q]:.4f} | {coeffs} |")
            print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
        lines.append("")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
