"""``lsdd demo``: the README's main job - distill LSD and LSD+ samplers for the bundled countdown model and
show them against Euler and Tweedie at equal NFE."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import UserError
from .common import Formatter, add_device_args, add_quiet_arg, check_output, load, positive_int

DESCRIPTION = """\
The main job on a bundled model, in a few minutes: run a many-step teacher, distill a few-step sampler from it
(lsdd distill's pipeline: fit, then validate against its base on held-out teacher outputs), and print it in the
bench table beside Euler, Euler with spread movers (nothing learned) and the teacher, each with the task's quality
metrics beside their diversity partners, followed by the validation verdict.

countdown (the default): 8 NFE, a 256-step teacher over 256 trajectories, Euler, spread and LSD; 2 min 19 s on 2
CPU cores. --full: 8 and 16 NFE, a 512-step teacher, Tweedie and LSD+ too (over 10 minutes).
--task text: the bundled text-absorb model (byte-level BPE, 128 tokens of Shakespeare) at 8 NFE with a 256-step
teacher, scored by the bundled evaluator LM (gen PPL beside entropy and MAUVE) with entropy-matched temperature
controls, and three decoded samples per sampler side by side (several minutes).
--task digits: the bundled digits-uniform model (8x8 digits, 17 grey levels) at 8 NFE with LSD+, Frechet distance
and precision/recall, and digits.png with samples of each sampler side by side.

Writes to --out-dir: bench.json, bench.png (quality and diversity against NFE), samplers.png (the learned
coefficients and grids) and each row's sampler (e.g. lsd_euler_nfe8.json, which `lsdd sample --learned` takes).
"""

# how the demo names its samplers in the header and above the samples it shows
LABELS = {"uniform": "Euler", "spread": "spread", "counted": "counted", "lsd": "LSD", "lsd+": "LSD+", "lsd-c": "LSD-C"}
HEADER = {"spread": "Euler with spread movers", "counted": "Euler with counted movers"}


def _demo_tasks() -> list[str]:
    from ..tasks import TASKS

    return [name for name, cls in TASKS.items() if cls.demo is not None]


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="distill LSD/LSD+ on a bundled model (countdown, text, digits) and show "
                                         "the bench",
                              description=DESCRIPTION, formatter_class=Formatter)
    p.add_argument("--task", choices=_demo_tasks(), default="countdown",
                   help="countdown (the default job), text (the bundled text-absorb model) or digits "
                        "(the bundled digits-uniform model)")
    p.add_argument("--model", help="bundled model name or model directory (default: countdown / text-absorb / "
                                   "digits-uniform)")
    p.add_argument("--nfe", type=positive_int, nargs="+", help="student NFEs (default: the task's demo: 8; --full 8 16)")
    p.add_argument("--teacher-nfe", type=positive_int,
                   help="teacher steps (default: countdown 256, --full 512; text 256; digits 512)")
    p.add_argument("--num-samples", type=positive_int,
                   help="samples per row = teacher trajectories (default: countdown 256, text 128, digits 256)")
    p.add_argument("--epochs", type=int, default=10, help="distillation epochs")
    p.add_argument("--full", action="store_true",
                   help="the long demo: countdown at 8 and 16 NFE, a 512-step teacher, Tweedie and LSD+ rows too "
                        "(over 10 minutes on 2 CPU cores)")
    p.add_argument("--seed", type=int, default=0)
    add_device_args(p, compile=False, masked_lm=False)  # the demo runs its task's bundled model
    add_quiet_arg(p)
    p.add_argument("--out-dir", default="lsdd-demo", help="folder for the JSON, the plots and the samplers")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from .. import atomic
    from ..bench import BenchConfig
    from ..plots import plot_bench, plot_samplers
    from ..tasks import task_class

    out = check_output(args.out_dir, flag="--out-dir", folder=True)
    cls = task_class(args.task)
    demo = cls.demo.long() if args.full else cls.demo
    defaults = {"model": cls.default_model, "nfe": list(demo.nfe), "teacher_nfe": demo.teacher_nfe,
                "num_samples": demo.num_samples}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    model = load(args.model, args.device, args.precision)
    task = cls.build(model)
    shows = demo.shows != "table"  # keep the samples to show them; skip the timing runs (slow models)
    cfg = BenchConfig(nfes=tuple(args.nfe), teacher_nfe=args.teacher_nfe, bases=demo.bases, methods=demo.methods,
                      learn_bases=("euler",), num_samples=args.num_samples, seed=args.seed,
                      distill={"epochs": args.epochs}, temperature_control=task.temperature_control,
                      **({"keep_samples": True, "timing_repeats": 0} if shows else {}))
    samplers = ", ".join(HEADER.get(m, LABELS.get(m, m)) for m in demo.methods)
    print(f"lsdd demo: model {model.source} ({model.config.graph}, {model.config.num_tokens} tokens, "
          f"length {model.config.length}); teacher {args.teacher_nfe} steps; {samplers} at NFE {args.nfe}")
    t0 = time.perf_counter()
    result = _bench(model, task, cfg)
    learned = {f"{r.label} M={r.nfe}": r.sampler for r in result.rows if r.sampler is not None}
    atomic.write_json(out / "bench.json", result.to_dict())
    for r in result.rows:
        if r.sampler is not None:
            r.sampler.save(out / f"{r.method}_{r.base}_nfe{r.nfe}.json")
    plot_bench(result, task, out / "bench.png")
    plot_samplers(learned, out / "samplers.png")
    _print_verdicts(result)
    shown = SHOW[demo.shows](task, _picks(result, demo.methods, min(args.nfe)), out)
    print(f"\nwrote {out}/bench.json, bench.png, samplers.png{''.join(', ' + f for f in shown)} and {len(learned)} "
          f"learned samplers in {time.perf_counter() - t0:.0f} s")
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


def _print_verdicts(result) -> None:
    """Each learned row's validation verdict (what `lsdd distill` would print and write)."""
    for r in result.rows:
        v = r.sampler.provenance.get("validation") if r.sampler is not None else None
        if not v:
            continue
        kept = "accepted: the learned sampler is kept" if r.accepted else "rejected: the row is its base sampler"
        print(f"\n{r.label} at {r.nfe} NFE - {kept}")
        print(f"  model NLL bound per token: base {v['nll_base']:.4f}, learned {v['nll_learned']:.4f}, teacher "
              f"{v['nll_teacher']:.4f}{_interval(v, 'nll')}; n-gram MMD^2 x1e3: base {1e3 * v['mmd2_base']:.4f}, "
              f"learned {1e3 * v['mmd2_learned']:.4f}; entropy: base {v['entropy_base']:.4f}, learned "
              f"{v['entropy_learned']:.4f}")
        if _interval(v, "nll_matched"):
            slope = v.get("slope")
            how = "more diverse than the base: the plain difference" if slope is None or slope != slope else \
                f"base frontier slope dNLL/dH {slope:.3f}"
            print(f"  model NLL at matched entropy ({how}){_interval(v, 'nll_matched')}")
        if v.get("reasons"):
            print(f"  why: {'; '.join(v['reasons'])}")


def _interval(v: dict, figure: str) -> str:
    """", difference D [95% CI lo, hi]" from a recorded validation (nothing for files written before intervals)."""
    low = v.get(f"{figure}_low")
    if low is None or low != low:  # absent (older file) or NaN (not computed)
        return ""
    return (f", difference {v[f'{figure}_diff']:+.4f} [{100 * v['level']:g}% CI {v[f'{figure}_low']:+.4f}, "
            f"{v[f'{figure}_high']:+.4f}]")


def _picks(result, methods: tuple[str, ...], nfe: int) -> dict[str, object]:
    """The rows to show, by heading: Euler and each demo sampler at ``nfe``, then the teacher."""
    rows = {}
    for method in ("uniform", *methods):
        row = next((r for r in result.rows if r.method == method and r.base == "euler" and r.nfe == nfe), None)
        if row is not None:
            rows[f"{LABELS.get(method, method)}@{nfe}"] = row
    teacher = result.rows[0]
    rows[f"teacher ({teacher.nfe} steps)"] = teacher
    return rows


def _show_nothing(task, picks: dict, out: Path) -> list[str]:
    return []


def _show_text(task, picks: dict, out: Path) -> list[str]:
    """Print three decoded samples of each picked row side by side; write them to samples.json."""
    from .. import atomic

    decoded = {head: task.decode(r.samples[:3]) for head, r in picks.items()}
    print()
    for i in range(3):
        print(side_by_side([texts[i] for texts in decoded.values()], list(decoded), width=30))
        print()
    atomic.write_json(out / "samples.json", decoded)
    return ["samples.json"]


def _show_images(task, picks: dict, out: Path) -> list[str]:
    """Draw 64 samples of each picked row side by side, headed by the task's headline metric (TASK.png)."""
    q = task.pairs[0][0]
    task.plot_panels({f"{head}  {q} {r.metrics[q]:.1f}": r.samples[:64] for head, r in picks.items()},
                     out / f"{task.name}.png")
    return [f"{task.name}.png"]


# Demo.shows -> how the demo shows the samples beside the table
SHOW = {"table": _show_nothing, "text": _show_text, "images": _show_images}


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
