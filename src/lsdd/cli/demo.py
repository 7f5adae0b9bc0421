"""``lsdd demo``: the README's main job - distill LSD and LSD+ samplers for the bundled countdown model and
show them against Euler and Tweedie at equal NFE."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import UserError
from .common import Formatter, add_device_args, add_quiet_arg, check_output, load, positive_int

DESCRIPTION = """\
Distill LSD and LSD+ samplers at 8 and 16 network calls for the bundled countdown model (64 tokens,
values 0..31) and print the bench table: the uniform-grid Euler and Tweedie samplers, Euler with spread
movers (nothing learned: each sequence unmasks the expected number of tokens, spread along it), the learned
samplers (with spread movers, lsdd distill's default on masked models), and the many-step teacher as reference, each with its violation rates and the diversity of
the generated run start values. Writes to --out-dir: bench.json, bench.png (quality and diversity
against NFE), samplers.png (the learned coefficients and time grids against the uniform grid) and
the learned samplers as lsd+_euler_nfe8.json etc., which `lsdd sample --learned` takes.
Takes a few minutes on 2 CPU cores.

--task text does the same for the bundled text diffusion model `text-absorb` (byte-level BPE, 128 tokens of
Shakespeare): it distills LSD at 8 network calls, scores Euler@8, Euler@8 with spread movers, LSD@8, Euler@8
at the temperatures that match their entropies, and the teacher with the bundled evaluator LM (generative
perplexity beside entropy and MAUVE), and prints decoded samples of Euler@8, spread@8, LSD@8 and the teacher
side by side. About 9 minutes on 2 CPU cores (8 min 41 s measured, alone on them).

--task digits does it for the bundled image model `digits-uniform` (8x8 digits, 17 grey levels; or
--model digits-ordinal): it distills LSD+ at 8 network calls, scores Euler@8, LSD+@8 and the teacher on the
digits metrics (Fréchet distance in the bundled classifier's features, precision/recall, class balance) and
writes digits.png: samples of Euler@8, LSD+@8 and the teacher side by side. A few minutes on 2 CPU cores.
"""

DIGITS_DEFAULTS = {"model": "digits-uniform", "nfe": [8], "teacher_nfe": 512, "num_samples": 256}
TEXT_DEFAULTS = {"model": "text-absorb", "nfe": [8], "teacher_nfe": 256, "num_samples": 128}
COUNTDOWN_DEFAULTS = {"model": "countdown", "nfe": [8, 16], "teacher_nfe": 512, "num_samples": 256}


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="distill LSD/LSD+ on a bundled model (countdown, text, digits) and show "
                                         "the bench",
                              description=DESCRIPTION, formatter_class=Formatter)
    p.add_argument("--task", choices=["countdown", "text", "digits"], default="countdown",
                   help="countdown (the default job), text (the bundled text-absorb model) or digits "
                        "(the bundled digits-uniform model)")
    p.add_argument("--model", help="bundled model name or model directory (default: countdown / text-absorb / "
                                   "digits-uniform)")
    p.add_argument("--nfe", type=positive_int, nargs="+", help="student NFEs (default: 8 16 / 8 / 8)")
    p.add_argument("--teacher-nfe", type=positive_int, help="teacher steps (default: 512 / 256 / 512)")
    p.add_argument("--num-samples", type=positive_int,
                   help="samples per row = teacher trajectories (default: 256 / 128 / 256)")
    p.add_argument("--epochs", type=int, default=10, help="distillation epochs")
    p.add_argument("--seed", type=int, default=0)
    add_device_args(p, compile=False)
    add_quiet_arg(p)
    p.add_argument("--out-dir", default="lsdd-demo", help="folder for the JSON, the plots and the samplers")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from .. import atomic
    from ..bench import BenchConfig
    from ..metrics import get_task
    from ..plots import plot_bench, plot_samplers

    out = check_output(args.out_dir, flag="--out-dir", folder=True)
    text = args.task == "text"
    defaults = {"text": TEXT_DEFAULTS, "digits": DIGITS_DEFAULTS}.get(args.task, COUNTDOWN_DEFAULTS)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    model = load(args.model, args.device, args.precision)
    if args.task == "digits":
        return run_digits(args, model, out)
    if text:
        from .common import make_task

        if model.tokenizer is None:
            raise UserError(f"--task text needs a text model (one with a tokenizer); {args.model} has none")
        task = make_task("text", model, None)
        cfg = BenchConfig(nfes=tuple(args.nfe), teacher_nfe=args.teacher_nfe, bases=("euler",),
                          methods=("spread", "lsd"), learn_bases=("euler",), num_samples=args.num_samples, seed=args.seed,
                          distill={"epochs": args.epochs}, keep_samples=True, temperature_control=True,
                          timing_repeats=0)
    else:
        task = get_task("countdown", num_values=model.config.num_tokens)
        cfg = BenchConfig(nfes=tuple(args.nfe), teacher_nfe=args.teacher_nfe, bases=("euler", "tweedie"),
                          methods=("spread", "lsd", "lsd+"), learn_bases=("euler",), num_samples=args.num_samples,
                          seed=args.seed, distill={"epochs": args.epochs})
    print(f"lsdd demo: model {model.source} ({model.config.graph}, {model.config.num_tokens} tokens, "
          f"length {model.config.length}); teacher {args.teacher_nfe} steps; "
          f"{'LSD' if text else 'LSD and LSD+'} (spread movers) and Euler with spread movers at NFE {args.nfe}")
    t0 = time.perf_counter()
    result = _bench(model, task, cfg)
    learned = {f"{r.label} M={r.nfe}": r.sampler for r in result.rows if r.sampler is not None}
    atomic.write_json(out / "bench.json", result.to_dict())
    for r in result.rows:
        if r.sampler is not None:
            r.sampler.save(out / f"{r.method}_{r.base}_nfe{r.nfe}.json")
    plot_bench(result, task, out / "bench.png")
    plot_samplers(learned, out / "samplers.png")
    if text:
        nfe = min(args.nfe)
        pick = {"Euler": next(r for r in result.rows if r.method == "uniform" and r.nfe == nfe),
                "spread": next(r for r in result.rows if r.method == "spread" and r.nfe == nfe),
                "LSD": next(r for r in result.rows if r.method == "lsd" and r.nfe == nfe),
                "teacher": result.rows[0]}
        decoded = {k: model.tokenizer.decode_batch(r.samples[:3].numpy()) for k, r in pick.items()}
        heads = [f"{k}@{r.nfe}" if k != "teacher" else f"teacher ({r.nfe} steps)" for k, r in pick.items()]
        print()
        for i in range(3):
            print(side_by_side([decoded[k][i] for k in pick], heads, width=30))
            print()
        atomic.write_json(out / "samples.json", {h: decoded[k] for h, k in zip(heads, pick)})
    print(f"\nwrote {out}/bench.json, bench.png, samplers.png and {len(learned)} learned samplers "
          f"in {time.perf_counter() - t0:.0f} s")
    return 0


def _bench(model, task, cfg):
    """Run the demo's bench (a ValueError from the settings becomes a UserError) and print its table."""
    from ..bench import format_table, run_bench

    try:
        result = run_bench(model, task, cfg)
    except ValueError as e:
        raise UserError(str(e)) from None
    print()
    print(format_table(result, task))
    return result


def run_digits(args, model, out: Path) -> int:
    """Distill LSD+ for a digits model at the smallest --nfe, bench it against Euler and the teacher, and draw
    64 samples of Euler, LSD+ and the teacher side by side (digits.png)."""
    from .. import atomic
    from ..bench import BenchConfig
    from ..metrics import get_task
    from ..plots import plot_digit_panels, plot_samplers

    if (model.config.num_tokens, model.config.length) != (17, 64):
        raise UserError(f"--task digits needs a model of 64 tokens with 17 grey levels; {args.model} has "
                        f"{model.config.length} tokens and {model.config.num_tokens} levels")
    task = get_task("digits")
    nfe = min(args.nfe)
    cfg = BenchConfig(nfes=tuple(args.nfe), teacher_nfe=args.teacher_nfe, bases=("euler",), methods=("lsd+",),
                      learn_bases=("euler",), num_samples=args.num_samples, seed=args.seed,
                      distill={"epochs": args.epochs}, keep_samples=True, timing_repeats=0)
    print(f"lsdd demo: model {model.source} ({model.config.graph} graph, 17 grey levels, 8x8); teacher "
          f"{args.teacher_nfe} Euler steps; LSD+ at NFE {args.nfe}")
    t0 = time.perf_counter()
    result = _bench(model, task, cfg)
    euler = next(r for r in result.rows if r.method == "uniform" and r.nfe == nfe)
    lsd = next(r for r in result.rows if r.method == "lsd+" and r.nfe == nfe)
    teacher = result.rows[0]
    panels = {f"Euler@{nfe}  fid {euler.metrics['fid']:.1f}": euler.samples[:64].numpy(),
              f"LSD+@{nfe}  fid {lsd.metrics['fid']:.1f}": lsd.samples[:64].numpy(),
              f"teacher ({teacher.nfe} steps)  fid {teacher.metrics['fid']:.1f}": teacher.samples[:64].numpy()}
    plot_digit_panels(panels, out / "digits.png")
    atomic.write_json(out / "bench.json", result.to_dict())
    learned = {f"{r.label} M={r.nfe}": r.sampler for r in result.rows if r.sampler is not None}
    for r in result.rows:
        if r.sampler is not None:
            r.sampler.save(out / f"{r.method}_{r.base}_nfe{r.nfe}.json")
    plot_samplers(learned, out / "samplers.png")
    print(f"\nwrote {out}/digits.png (Euler@{nfe}, LSD+@{nfe}, teacher), bench.json, samplers.png and "
          f"{len(learned)} learned samplers in {time.perf_counter() - t0:.0f} s")
    return 0


def side_by_side(texts: list[str], heads: list[str], width: int = 38) -> str:
    """Texts in columns of ``width`` characters (lines wrapped, newlines kept), under their headings."""
    import textwrap

    cols = []
    for t in texts:
        lines = []
        for line in t.replace("\t", " ").split("\n"):
            lines += textwrap.wrap(line, width, replace_whitespace=False, drop_whitespace=True) or [""]
        cols.append(lines)
    depth = max(len(c) for c in cols)
    rows = [" | ".join(h[:width].ljust(width) for h in heads), "-+-".join("-" * width for _ in heads)]
    for i in range(depth):
        rows.append(" | ".join((c[i] if i < len(c) else "").ljust(width) for c in cols))
    return "\n".join(rows)
