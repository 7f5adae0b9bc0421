"""``lsdd sample``: draw token sequences from a model with a base sampler or a learned one."""

from __future__ import annotations

import argparse
import time

from ..errors import UserError
from .common import Formatter, add_device_args, check_output, load_args, positive_int

DESCRIPTION = """\
Sample from a discrete diffusion model. Either a base sampler on the uniform time grid
(--sampler euler|tweedie --steps M) or a learned sampler from `lsdd distill` (--learned sampler.json),
which brings its own base sampler, time grid and coefficients. Every sampler makes exactly one network
call per step (the last step turns any remaining mask into a real token); the count is printed.
"""

EPILOG = """\
examples:
  lsdd sample --model countdown --sampler euler --steps 64 --num 256 --seed 0 --out samples.npy
  lsdd sample --model countdown --learned sampler.json --num 256 --seed 0 --out samples.npy
  lsdd eval --task countdown samples.npy
"""


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="draw samples with a base or learned sampler",
                              description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter)
    p.add_argument("--model", default="countdown", help="bundled model name or model directory")
    p.add_argument("--sampler", choices=["euler", "tweedie"], default="euler", help="base sampler (uniform grid)")
    p.add_argument("--steps", type=positive_int, default=64, help="steps = network calls per sample")
    p.add_argument("--eps", type=float, default=1e-5, help="last time of the uniform grid")
    p.add_argument("--learned", metavar="SAMPLER.json", help="use a learned sampler (overrides --sampler/--steps)")
    p.add_argument("--force", action="store_true", help="use a learned sampler distilled for another model")
    p.add_argument("--num", "--num-samples", dest="num", type=positive_int, default=64, help="number of sequences (under torchrun write --num-samples: torchrun reads --num itself)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="sequences per network call")
    p.add_argument("--seed", type=int, default=0,
                   help="seed; batch b draws from its own stream (seed, b), so torchrun gives the same samples")
    add_device_args(p)
    p.add_argument("--out", required=True, help="output .npy file, int64 array (num, length)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from .. import atomic
    from ..artifact import LearnedSampler
    from ..samplers import sample_batched
    from ..schedules import uniform_times

    out = check_output(args.out, ".npy")
    if not 0.0 < args.eps < 1.0:
        raise UserError(f"--eps must lie in (0, 1), got {args.eps}")
    model = load_args(args)
    if args.learned:
        learned = LearnedSampler.load(args.learned)
        learned.check_model(model.graph.name, model.graph.num_tokens, model.noise.to_dict(), model.fingerprint,
                            force=args.force)
        method, times, coeffs, mode = learned.base, learned.times_tensor(), learned.coeffs_tensor(), learned.phi_mode
        desc = f"learned {learned.provenance.get('method', '?')}-{method} ({learned.nfe} steps, phi {mode})"
    else:
        method, times, coeffs, mode = args.sampler, uniform_times(args.steps, args.eps), None, "linear"
        desc = f"{method} on the uniform grid ({args.steps} steps)"
    from .. import dist

    t0 = time.perf_counter()
    res = sample_batched(model.score_fn, model.graph, model.noise, times, args.num, model.config.length,
                         batch_size=args.batch_size, method=method, coeffs=coeffs, phi_mode=mode, seed=args.seed,
                         device=model.device, progress=True)
    secs, nfe = time.perf_counter() - t0, res.nfe
    x = res.x.numpy()
    if dist.is_main():
        atomic.save_npy(out, x)
    procs = f" on {dist.world()} processes" if dist.world() > 1 else ""
    print(f"{args.num} samples of length {x.shape[1]} from {model.source} with {desc}: "
          f"{nfe} network calls per sample, {secs:.2f} s{procs} ({1e3 * secs / args.num:.2f} ms/sample) -> {out}")
    return 0
