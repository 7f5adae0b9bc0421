"""``lsdd demo``: the README's main job - distill LSD and LSD+ samplers for the bundled countdown model and
show them against Euler and Tweedie at equal NFE."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import UserError
from .common import Formatter, load, positive_int

DESCRIPTION = """\
Distill LSD and LSD+ samplers at 8 and 16 network calls for the bundled countdown model (64 tokens,
values 0..31) and print the bench table: the uniform-grid Euler and Tweedie samplers, the learned
samplers, and the many-step teacher as reference, each with its violation rates and the diversity of
the generated run start values. Writes to --out-dir: bench.json, bench.png (quality and diversity
against NFE), samplers.png (the learned coefficients and time grids against the uniform grid) and
the learned samplers as lsd+_euler_nfe8.json etc., which `lsdd sample --learned` takes.
Takes a few minutes on 2 CPU cores.
"""


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="distill LSD/LSD+ on the bundled countdown model and show the bench",
                              description=DESCRIPTION, formatter_class=Formatter)
    p.add_argument("--model", default="countdown", help="bundled model name or model directory")
    p.add_argument("--nfe", type=positive_int, nargs="+", default=[8, 16], help="student NFEs")
    p.add_argument("--teacher-nfe", type=positive_int, default=512, help="teacher steps")
    p.add_argument("--num-samples", type=positive_int, default=256, help="samples per row = teacher trajectories")
    p.add_argument("--epochs", type=int, default=10, help="distillation epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="lsdd-demo", help="folder for the JSON, the plots and the samplers")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from .. import atomic
    from ..bench import BenchConfig, format_table, run_bench
    from ..metrics import get_task
    from ..plots import plot_bench, plot_samplers

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out-dir {out} exists and is not a folder")
    model = load(args.model)
    task = get_task("countdown", num_values=model.config.num_tokens)
    cfg = BenchConfig(nfes=tuple(args.nfe), teacher_nfe=args.teacher_nfe, bases=("euler", "tweedie"),
                      methods=("lsd", "lsd+"), learn_bases=("euler",), num_samples=args.num_samples, seed=args.seed,
                      distill={"epochs": args.epochs})
    print(f"lsdd demo: model {model.source} ({model.config.graph}, {model.config.num_tokens} tokens, "
          f"length {model.config.length}); teacher {args.teacher_nfe} steps; LSD and LSD+ at NFE {args.nfe}")
    t0 = time.perf_counter()
    try:
        result = run_bench(model, task, cfg)
    except ValueError as e:
        raise UserError(str(e)) from None
    print()
    print(format_table(result, task))
    learned = {f"{r.label} M={r.nfe}": r.sampler for r in result.rows if r.sampler is not None}
    atomic.write_json(out / "bench.json", result.to_dict())
    for r in result.rows:
        if r.sampler is not None:
            r.sampler.save(out / f"{r.method}_{r.base}_nfe{r.nfe}.json")
    plot_bench(result, task, out / "bench.png")
    plot_samplers(learned, out / "samplers.png")
    print(f"\nwrote {out}/bench.json, bench.png, samplers.png and {len(learned)} learned samplers "
          f"in {time.perf_counter() - t0:.0f} s")
    return 0
