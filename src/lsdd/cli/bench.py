"""``lsdd bench``: Euler, Tweedie, LSD, LSD+, JYS and the theta solvers side by side at equal NFE, with the teacher
as reference."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from .common import (PROMPTS_HELP, Formatter, PromptSpec, add_device_args, add_quiet_arg, check_output, default_task,
                     fraction, load_args, positive_int)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v

DESCRIPTION = """\
Benchmark samplers for one model in one run with the same seeds: at every --nfe, the uniform-grid
Euler and Tweedie baselines and the samplers that LSD and LSD+ learn on each base (distilled here from
one shared teacher run per base), plus the --teacher-nfe teacher itself as the reference row. --methods
also takes the baselines a learned sampler is compared against: jys (a Jump-Your-Steps time grid, searched
here by KLUB on the teacher's outputs, on each base) and theta-rk2 / theta-trapezoidal (second-order solvers
with two network calls per step: NFE 8 is 4 steps; even NFEs only). counted and spread are the base rules
with counted movers (nothing learned; see lsdd sample --help): each sequence unmasks (absorbing graph) or
changes (other graphs) the expected number of tokens, chosen by weight (counted) or spread along the sequence
(spread). dilated, halton, confidence, margin and entropy are the peer mover orders (absorbing graph);
--block B adds the rows of dilated (DUS), eb and threshold within semi-autoregressive blocks of B tokens,
decoded left to right (labels DILATED-BB-base, eb-BB, threshold-BB), beside their whole-sequence rows; DUS in
blocks is the paper's scheme (each block its own grid of NFE / blocks calls: NFE must be a multiple of the
number of blocks), the adaptive ones in blocks are Fast-dLLM's own setting (at least one call per block).

eb and threshold are the adaptive samplers (EB-Sampler's entropy budget gamma, Fast-dLLM's confidence threshold
tau; absorbing graph only), whose network calls depend on the sample. They are compared at equal mean NFE: at
each --nfe N the parameter is chosen (bisection, lsdd.sampling.adaptive.match_budget, on the row's own samples
and seeds) so that the mean network calls per sample of the row's draw is at most N; the row is listed at N
with its parameter, and its NFE cell shows the mean and the max calls of any one sample. Frontier sweeps keep
that parameter (the mean NFE moves with the temperature).

Each row reports the task's quality metrics beside their diversity partners (a sampler can look better
by collapsing diversity; read both), the network calls per sample as counted, wall time per sample, the
share of the Euler->teacher gap closed in the headline metric, and for learned samplers the wall-time
ratio to their base sampler at equal NFE (interleaved timing runs).

--frontier draws every row but the teacher again at each value temperature T (generative frontiers, Pynadath
et al., arXiv 2604.02718) with the same seeds, so T = 1 is the row itself. The temperature acts where lsdd
sample --temperature does: on the value each jump lands on (each token's jump targets are sharpened, T < 1,
or flattened, T > 1), leaving the jump rates, grid, coefficients and movers alone; T multiplies the row's own
temperature (1 except the temperature-control rows). The frontier plot shows the headline quality metric
against its diversity partner per sampler, with the teacher (and the task's real-data reference) marked; the
table's "at teacher's H" column reads each row's curve at the teacher's diversity: linear interpolation between
the two temperatures whose diversities bracket the teacher's (in log for gen PPL), "out of range" (NaN in the
JSON) when the sweep does not reach it, never an extrapolation. Diversity metrics that fall as diversity
rises (countdown's start_tv) are read the same way and drawn on a reversed axis.

--prompts FILE|held-out:K[:P] benches continuations: every row - the teacher, the baselines, the movers and
peers, the adaptive rows (their parameter matched on the conditional runs), the learned rows (distilled on the
teacher's continuations, validated on held-out prompts as lsdd distill --prompts does) - draws sample i as a
continuation of prompt i mod P with the same seeds, scored on the continuation given its prompt (the text
task's conditional metrics, as lsdd eval scores samples of lsdd sample --prompt); frontiers too.

--report writes one self-contained HTML page: the table, the plots, three decoded samples per row (text) or a
grid of images per row (digits), and for each row the lsdd sample command that draws its samples.
"""

EPILOG = """\
examples:
  lsdd bench --model countdown --nfe 8 16 --teacher-nfe 256 --json bench.json --plot bench.png
  lsdd bench --model countdown --nfe 8 16 32 64 --teacher-nfe 1024 --methods lsd+ --bases euler
  lsdd bench --model countdown --nfe 8 16 --methods lsd lsd+ jys theta-rk2 theta-trapezoidal --json b.json
  lsdd bench --model text-absorb --nfe 8 --teacher-nfe 256 --bases euler --methods theta-trapezoidal \
      --learned s8.json          # score a sampler made earlier by `lsdd distill` beside the baselines
  lsdd bench --model text-absorb --nfe 8 16 --bases euler --methods dilated eb threshold --block 32
                                 # peers: DUS (whole and in blocks of 32) and the adaptive samplers at equal mean NFE
  lsdd bench --model text-absorb --nfe 8 --teacher-nfe 256 --frontier --plot b.png --report b.html
                                 # + frontiers (b_frontier.png, "at teacher's H") and one page to share
  lsdd bench --model text-absorb --nfe 8 16 --bases euler --methods spread lsd --prompts held-out:32 --frontier
                                 # continuations of the first 32 tokens of held-out windows
"""


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    from ..bench import DEFAULT_FRONTIER
    from ..distillation.distill import DistillConfig
    from ..distillation.objective import OBJECTIVES

    d = DistillConfig()
    p = subparsers.add_parser(name, help="compare base and learned samplers at equal NFE",
                              description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter)
    p.add_argument("--model", required=True, help="bundled model name, model directory (ours, or a SEDD/RADD/MDLM "
                   "checkpoint as published) or hub id owner/name")
    p.add_argument("--task", help="task whose metrics score the samples: countdown, markov, tokens, text or digits "
                                  "(default: the bundled model's own task, digits for digit models, else tokens)")
    p.add_argument("--nfe", type=positive_int, nargs="+", default=[8, 16, 32, 64], help="student NFEs")
    p.add_argument("--teacher-nfe", type=positive_int, default=1024, help="teacher steps (a multiple of every NFE)")
    p.add_argument("--teacher", choices=["steps", "exact"], default="steps",
                   help="steps: --teacher-nfe steps of each learned base; exact (masked models only): the model's "
                        "reverse process sampled by first hitting, one network call per token, one run for every "
                        "base (as `lsdd distill --teacher exact`)")
    p.add_argument("--bases", nargs="+", choices=["euler", "tweedie"], default=["euler", "tweedie"])
    p.add_argument("--methods", nargs="*", choices=["lsd", "lsd+", "lsd-c", "jys", "counted", "spread", "theta-rk2",
                                                    "theta-trapezoidal", "dilated", "halton", "confidence",
                                                    "margin", "entropy", "eb", "threshold"],
                   default=["lsd", "lsd+"], help="samplers beside the uniform-grid bases (none: those only)")
    p.add_argument("--block", "--dilated-block", dest="block", type=positive_int, metavar="B",
                   help="with --methods dilated / eb / threshold: also their rows within semi-autoregressive blocks of "
                        "B tokens (labels DILATED-BB-base, eb-BB, threshold-BB), B below the model's length")
    p.add_argument("--learn-bases", nargs="+", choices=["euler", "tweedie"],
                   help="bases of the learned samplers (default: --bases); each needs its own teacher run")
    p.add_argument("--num-samples", type=positive_int, default=256,
                   help="samples per row (= teacher trajectories, which the distillation reuses)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--phi-mode", choices=["linear", "log"], default=d.phi_mode)
    p.add_argument("--loss", choices=["l2", "kl", "rkl"], default=d.loss)
    p.add_argument("--zeta", type=fraction, default=d.zeta)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--learned", nargs="+", default=[], metavar="SAMPLER.json",
                   help="samplers made earlier (lsdd distill / lsdd schedule) to score as extra rows at their NFE, "
                        "which must be one of --nfe")
    p.add_argument("--objective", choices=["auto", *OBJECTIVES], default=d.objective,
                   help="how the distilled samplers are fitted (see lsdd distill --help)")
    p.add_argument("--obj-samples", type=positive_int, default=d.obj_samples,
                   help="distribution objective (lsd-c): samples per CMA-ES candidate")
    p.add_argument("--cma-iters", type=positive_int, default=d.cma_iters, help="distribution objective: generations")
    p.add_argument("--cma-popsize", type=positive_int, default=d.cma_popsize,
                   help="distribution objective: candidates per generation")
    p.add_argument("--cma-probe", action=argparse.BooleanOptionalAction, default=d.cma_probe,
                   help="distribution objective: shape CMA-ES's first search by the objective's Hessian at the start "
                        "(see lsdd distill --help)")
    p.add_argument("--early-exit", action=argparse.BooleanOptionalAction, default=True,
                   help="lsd-c rows: keep the base without fitting when the objective cannot tell its outputs from the "
                        "teacher's (see lsdd distill --help)")
    p.add_argument("--counted", action="store_true", help="lsd-c rows: counted movers (see lsdd distill --help)")
    p.add_argument("--spread", action=argparse.BooleanOptionalAction, default=None,
                   help="lsd / lsd+ / lsd-c rows: spread movers (default as in lsdd distill: on for absorbing-graph "
                        "models; see lsdd distill --help)")
    p.add_argument("--theta", type=float, help="theta of the theta-* samplers (default 0.5)")
    p.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                   help="learned rows go through lsdd distill's validation on held-out teacher outputs and show the "
                        "sampler it accepts (the base when the learned one is no better), exactly what lsdd distill "
                        "writes; --no-validate shows the raw fits")
    p.add_argument("--jys-max-iter", type=positive_int, default=16, help="golden-section evaluations per JYS point")
    p.add_argument("--timing-repeats", type=int, default=3, help="interleaved runs for the overhead ratio")
    p.add_argument("--teacher-store", choices=["auto", "scores", "states"], default="auto",
                   help="what the teacher run keeps for the distillations: its score rows (memory: about "
                        "samples x length x finest NFE / 2 x 4 x vocabulary bytes) or only its states (the scores "
                        "are recomputed: one more network call per student call); auto = scores up to 2 GiB")
    p.add_argument("--teacher-cache", metavar="DIR",
                   help="keep each teacher run in DIR (a file named by model fingerprint, base, steps, grid, "
                        "samples and seed) and reuse it when a later bench needs the same run, also on a coarser grid "
                        "(e.g. --nfe 8 16 reads a run saved by --nfe 8 16 32 64): the teacher is most of a bench's "
                        "network calls")
    p.add_argument("--temperature-control", action=argparse.BooleanOptionalAction, default=None,
                   help="add Euler with a plain temperature tuned to the diversity of each learned Euler-based row (LSD, "
                        "LSD-C, --learned), the control that tells learning from sharpening (default: on for the "
                        "text task)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", metavar="FILE|held-out:K[:P]", help=PROMPTS_HELP + " (the held-out text: --reference)")
    add_device_args(p)
    add_quiet_arg(p)
    from .common import add_text_args

    add_text_args(p)
    p.add_argument("--json", help="write all rows (with the learned samplers) to this JSON file")
    p.add_argument("--plot", help="write a PNG of quality and diversity against NFE")
    p.add_argument("--frontier", type=positive_float, nargs="*", metavar="T",
                   help="value temperatures at which every non-teacher row is drawn again (no values: "
                        f"{' '.join(f'{t:g}' for t in DEFAULT_FRONTIER)}); adds the \"at teacher's H\" column "
                        "(see above)")
    p.add_argument("--frontier-plot", metavar="FILE.png",
                   help="write the frontier plot here (default with --frontier: next to --plot, as NAME_frontier.png)")
    p.add_argument("--report", metavar="FILE.html",
                   help="write one self-contained HTML page: table, plots, samples per row, commands")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from .. import atomic
    from ..bench import DEFAULT_FRONTIER, BenchConfig, format_table, run_bench
    from ..plots import plot_bench

    js, png = check_output(args.json, ".json", flag="--json"), check_output(args.plot, ".png", flag="--plot")
    frontier = None if args.frontier is None else tuple(args.frontier) or DEFAULT_FRONTIER
    if args.frontier_plot is not None and frontier is None:
        raise UserError(f"--frontier-plot {args.frontier_plot} needs --frontier (the temperatures to sweep)")
    fpng = check_output(args.frontier_plot, ".png", flag="--frontier-plot")
    if fpng is None and frontier is not None and png is not None:
        fpng = check_output(str(png.with_name(png.stem + "_frontier.png")), ".png", flag="--plot (its frontier plot)")
    report = check_output(args.report, ".html", flag="--report")
    if args.teacher_cache is not None and Path(args.teacher_cache).exists() and not Path(args.teacher_cache).is_dir():
        raise UserError(f"--teacher-cache {args.teacher_cache} is a file; it takes a folder")
    check_output(args.teacher_cache, flag="--teacher-cache", folder=True)
    if args.block is not None and not {"dilated", "eb", "threshold"} & set(args.methods):
        raise UserError(f"--block {args.block} is the block size of the dilated, eb and threshold rows; add one of "
                        "them to --methods")
    spec = PromptSpec(args.prompts) if args.prompts is not None else None  # a missing / empty file: now
    model = load_args(args)
    cond = None if spec is None else spec.condition(model, args.reference)  # prompts the model cannot take: now
    from .common import make_task

    task = make_task(args.task or default_task(model), model, args)
    from ..sampling.sampler import Sampler

    learned = tuple((Path(f).name, Sampler.load(f)) for f in args.learned)
    control = args.temperature_control if args.temperature_control is not None else task.temperature_control
    cfg = BenchConfig(nfes=tuple(args.nfe), teacher_nfe=args.teacher_nfe, teacher_kind=args.teacher,
                      bases=tuple(args.bases),
                      methods=tuple(args.methods),
                      learn_bases=tuple(args.learn_bases) if args.learn_bases else None, num_samples=args.num_samples, batch_size=args.batch_size,
                      seed=args.seed, timing_repeats=args.timing_repeats, temperature_control=control,
                      distill={"phi_mode": args.phi_mode, "loss": args.loss, "zeta": args.zeta,
                               "epochs": args.epochs, "objective": args.objective, "obj_samples": args.obj_samples,
                               "cma_iters": args.cma_iters, "cma_popsize": args.cma_popsize,
                               "cma_probe": args.cma_probe, "early_exit": args.early_exit, "counted": args.counted, "spread": args.spread, "teacher_store": args.teacher_store},
                      theta=args.theta, jys={"max_iter": args.jys_max_iter}, learned=learned, validate=args.validate,
                      teacher_cache=args.teacher_cache, frontier=frontier or (), keep_samples=report is not None,
                      block=args.block, prompts=cond, prompts_source=args.prompts)
    try:
        result = run_bench(model, task, cfg)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(format_table(result, task))
    from .. import dist

    if not dist.is_main():
        return 0
    if js:
        atomic.write_json(js, result.to_dict())
        print(f"rows -> {js}")
    if png:
        plot_bench(result, task, png)
        print(f"plot -> {png}")
    if fpng:
        from ..plots import plot_frontier

        plot_frontier(result, task, fpng)
        print(f"frontier plot -> {fpng}")
    if report:
        from ..report import write_report

        write_report(result, task, report, model=args.model)
        print(f"report -> {report}")
    return 0
