"""``lsdd schedule``: a time grid chosen without distillation - Jump Your Steps (JYS) - as a learned-sampler file."""

from __future__ import annotations

import argparse
import time

from ..errors import UserError
from .common import Formatter, add_device_args, add_quiet_arg, check_output, load_args, positive_int

DESCRIPTION = """\
Choose an --nfe-step time grid for a model with Jump Your Steps (Park et al., ICLR 2025) and write it as a
learned-sampler file with Phi = 1 at every step: `lsdd sample --learned`, `lsdd bench` and, as a starting grid,
`lsdd distill --init-grid` take it. The sampler makes one network call per step (NFE = --nfe).

The search: starting from the grid {1, eps}, every interval gets the point that removes the most of a KL upper
bound (KLUB) on tau-leaping's error, found by golden-section search; this doubles the steps level by level, and
for an --nfe that is not a power of two the last level adds only the points of largest KLUB gain. The KLUB is
estimated on --num-samples sequences noised to each time with the same random numbers throughout: samples of
the model itself (drawn with --data-steps steps of --base) unless --data gives training sequences (.npy).

--import reads JYS's own saved schedule file instead (sampling_schedule_list-*.pt: index lists into its 1,025-
point grid linspace(1, 1e-5, 1025)) and writes its --nfe-step schedule.
"""

EPILOG = """\
examples:
  lsdd schedule --method jys --model countdown --nfe 8 --out jys8.json
  lsdd sample --model countdown --learned jys8.json --num 256 --out samples.npy
  lsdd distill --model countdown --nfe 8 --init-grid jys8.json --out lsd8.json
  lsdd schedule --method jys --model countdown --nfe 16 --import sampling_schedule_list-nfe_1024.pt --out jys16.json
"""


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    from ..distillation.jys import JYSConfig

    d = JYSConfig()
    p = subparsers.add_parser(name, help="choose a time grid with Jump Your Steps (KLUB search)",
                              description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter)
    p.add_argument("--method", choices=["jys"], default="jys", help="schedule method")
    p.add_argument("--model", required=True, help="bundled model name, model directory (ours, or a SEDD/RADD/MDLM "
                   "checkpoint as published) or hub id owner/name")
    p.add_argument("--nfe", type=positive_int, required=True, help="steps M = network calls per sample")
    p.add_argument("--base", choices=["euler", "tweedie"], default="euler", help="base sampler of the written file")
    p.add_argument("--import", dest="import_file", metavar="FILE", help="import JYS's own schedule file (no search)")
    p.add_argument("--data", metavar="TOKENS.npy", help="KLUB data: training sequences (default: model samples)")
    p.add_argument("--num-samples", type=positive_int, default=256, help="sequences in the KLUB estimate")
    p.add_argument("--data-steps", type=positive_int, default=256, help="steps of the sampler that draws model data")
    p.add_argument("--max-iter", type=positive_int, default=d.max_iter, help="golden-section evaluations per point")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--eps", type=float, default=d.eps, help="last time of the grid")
    p.add_argument("--seed", type=int, default=0)
    add_device_args(p)
    add_quiet_arg(p)
    p.add_argument("--out", required=True, help="output JSON file (a learned-sampler artifact, Phi = 1)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from .. import __version__
    from ..distillation.jys import import_jys_grid, schedule_artifact

    out = check_output(args.out, ".json")
    if not 0.0 < args.eps < 1.0:
        raise UserError(f"--eps must lie in (0, 1), got {args.eps}")
    if args.max_iter < 2:
        raise UserError(f"--max-iter must be >= 2, got {args.max_iter}")
    if args.import_file and args.data:
        raise UserError("--import reads a finished schedule; --data is for the search, pass one of them")
    model = load_args(args)
    info = {"model_fingerprint": model.fingerprint, "model_source": model.source, "lsdd_version": __version__}
    if args.import_file:
        times = import_jys_grid(args.import_file, args.nfe)
        prov = {**info, "method": "jys", "source": "imported JYS schedule file", "file": str(args.import_file)}
        print(f"imported the {args.nfe}-step schedule of {args.import_file}")
    else:
        times, prov = _search(args, model)
        prov = {**info, **prov}
    sampler = schedule_artifact(times, model, args.base, prov)
    sampler.save(out)
    print(f"JYS {args.base} sampler with {args.nfe} NFE -> {out}")
    print(f"  time grid: {', '.join(f'{t:.4f}' for t in sampler.times)}")
    return 0


def _search(args, model):
    from ..data.tokens import load_token_file
    from ..sampling.draws import derive_seed
    from ..distillation.jys import JYSConfig, JYSSearch, KLUBEstimator
    from ..sampling.generate import sample
    from ..sampling.sampler import Sampler

    cfg = JYSConfig(max_iter=args.max_iter, batch_size=args.batch_size, seed=args.seed, eps=args.eps)
    length = model.length
    if args.data:
        x0, _ = load_token_file(args.data, model.graph.num_tokens)
        if x0.shape[1] != length:
            raise UserError(f"{args.data}: sequences of length {x0.shape[1]}, the model's length is {length}")
        x0 = x0[: args.num_samples]
        data = f"{x0.shape[0]} sequences of {args.data}"
    else:
        t0 = time.perf_counter()
        data_sampler = Sampler.base(args.base, args.data_steps, eps=args.eps)
        x0 = sample(model, data_sampler, args.num_samples, seed=derive_seed(args.seed, 11), batch_size=args.batch_size,
                    progress=not args.quiet).x
        data = f"{args.num_samples} model samples ({args.data_steps} {args.base} steps)"
        print(f"KLUB data: {data}, {time.perf_counter() - t0:.1f} s")
    est = KLUBEstimator(model.score_fn, model.graph, model.noise, x0, cfg, model.device)
    search = JYSSearch(est, log=print)
    times = search.grid(args.nfe)
    print(f"search: {est.evaluations} KLUB evaluations, {est.call.calls} network calls on batches of "
          f"<= {args.batch_size}, {search.seconds:.1f} s")
    prov = {"method": "jys", "source": "KLUB search", "data": data, "max_iter": args.max_iter, "seed": args.seed,
            "klub_evaluations": est.evaluations, "search_seconds": round(search.seconds, 3),
            "splits": [[a, b, t, g] for (a, b), (t, g) in search.splits.items()]}
    return times, prov
