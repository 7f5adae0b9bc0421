"""``lsdd sample``: draw token sequences from a model with a base sampler or a learned one."""

from __future__ import annotations

import argparse
import time

from ..errors import UserError
from .common import Formatter, add_device_args, add_quiet_arg, check_output, load_args, positive_int

ORDERS = ("dilated", "halton", "confidence", "margin", "entropy")  # lsdd.sampling.orders.ORDERS (no torch import here)

DESCRIPTION = """\
Sample from a discrete diffusion model. Either a base sampler on the uniform time grid
(--sampler euler|tweedie|theta-rk2|theta-trapezoidal --steps M, or --nfe N) or a learned sampler from
`lsdd distill` / `lsdd schedule` (--learned sampler.json), which brings its own base sampler, time grid and
coefficients. Euler, Tweedie and learned samplers make one network call per step; the second-order
theta-rk2 and theta-trapezoidal (Ren et al. 2025) make two, so --steps 4 is 8 NFE (or say --nfe 8). The last
step turns any remaining mask into a real token. The network calls are counted and printed.

Masked models also take two adaptive samplers whose network calls depend on the sample (at most one per
token): --sampler eb --gamma G (EB-Sampler, arXiv 2505.24857: unmask the lowest-entropy tokens while the sum
of their entropies minus the largest stays within G nats) and --sampler threshold --threshold T (Fast-dLLM,
arXiv 2505.22618: unmask every token whose most likely value has probability above T, else the most confident
one). Their mean and max network calls per sample are printed.

Peer mover orders (absorbing graph; Euler with counted movers, the count from the schedule):
--sampler dilated (DUS, coarse-to-fine dilated positions; --block B for semi-autoregressive blocks),
halton (1-D Halton order with a random rotation per sequence), confidence, margin or entropy (the top
tokens by the step's own value law).
"""

EPILOG = """\
examples:
  lsdd sample --model countdown --sampler euler --steps 64 --num 256 --seed 0 --out samples.npy
  lsdd sample --model countdown --learned sampler.json --num 256 --seed 0 --out samples.npy
  lsdd sample --model countdown --sampler theta-rk2 --steps 4 --num 256 --out samples.npy   # 8 NFE
  lsdd sample --model text-absorb --sampler euler --steps 8 --counted --num 256 --out samples.npy  # counted movers
  lsdd sample --model text-absorb --sampler euler --steps 8 --spread --num 256 --out samples.npy   # ... spread out
  lsdd sample --model countdown --sampler eb --gamma 1.0 --num 256 --out samples.npy          # adaptive
  lsdd sample --model countdown --sampler threshold --threshold 0.9 --num 256 --out samples.npy
  lsdd sample --model text-absorb --sampler dilated --block 16 --steps 8 --num 256 --out samples.npy  # DUS order
  lsdd eval --task countdown samples.npy
"""


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="draw samples with a base or learned sampler",
                              description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter)
    p.add_argument("--model", default="countdown",
                   help="bundled model name, model directory (ours, or a SEDD/RADD/MDLM checkpoint as published) "
                        "or hub id owner/name")
    p.add_argument("--sampler", choices=["euler", "tweedie", "theta-rk2", "theta-trapezoidal", *ORDERS, "eb",
                                          "threshold"],
                   default="euler", help="base sampler (uniform grid); Euler with the movers of a peer order "
                                         "(lsdd.sampling.orders; absorbing graph); or an adaptive one for masked "
                                         "models (eb, threshold)")
    p.add_argument("--block", type=positive_int,
                   help="--sampler dilated, eb or threshold: block size B of the semi-autoregressive blocks, decoded left "
                        "to right (default: the whole sequence)")
    p.add_argument("--gamma", type=float, help="eb: entropy budget in nats (>= 0; 0 = one token per call)")
    p.add_argument("--threshold", type=float,
                   help="threshold: confidence tau in [0, 1] (1 = one token per call, 0 = one call)")
    p.add_argument("--steps", type=positive_int, help="steps (default 64); NFE = steps x calls per step (2 for theta-*)")
    p.add_argument("--nfe", type=positive_int, help="network calls per sample, instead of --steps")
    p.add_argument("--theta", type=float, help="theta of theta-rk2 / theta-trapezoidal (default 0.5)")
    p.add_argument("--eps", type=float, default=1e-5, help="last time of the uniform grid")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sharpen (< 1) or flatten (> 1) the token each jump lands on, keeping the jump rates "
                        "(a control for learned samplers; works with --learned too)")
    p.add_argument("--counted", action="store_true",
                   help="euler / tweedie: each sequence unmasks (absorbing graph) or changes (other graphs) a rounded "
                        "number of tokens (the expected number), chosen without replacement by weight, instead of each "
                        "token on its own coin (lsdd.sampling.draws.CountedLaw; no learned parameters, same network calls)")
    p.add_argument("--spread", action="store_true",
                   help="counted movers (implies --counted) chosen spread along the sequence instead of by weight: "
                        "systematic sampling in position order, so the tokens that move together in one step are about "
                        "L / K apart and rarely neighbours; each token keeps its base-rule move probability")
    p.add_argument("--learned", metavar="SAMPLER.json", help="use a learned sampler (it brings its own sampler and grid)")
    p.add_argument("--force", action="store_true", help="use a learned sampler distilled for another model")
    p.add_argument("--num-samples", "--num", dest="num", type=positive_int, default=64,
                   help="number of sequences (--num is the same flag; under torchrun write --num-samples: torchrun "
                        "reads --num itself)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="sequences per network call")
    p.add_argument("--seed", type=int, default=0,
                   help="seed; batch b draws from its own stream (seed, b), so torchrun gives the same samples")
    add_device_args(p)
    add_quiet_arg(p)
    p.add_argument("--out", required=True,
                   help="output .npy file, int64 array (num, length), with its provenance beside it in OUT.json "
                        "(model, sampler, seed; `lsdd eval` and `lsdd decode` check it)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from .. import dist
    from ..sampling.generate import sample
    from ..sampling.sampler import Sampler

    out = check_output(args.out, ".npy")
    check_output(str(out) + ".json", ".json")  # the provenance sidecar (never a folder in the way)
    if not 0.0 < args.eps < 1.0:
        raise UserError(f"--eps must lie in (0, 1), got {args.eps}")
    if args.learned:
        _no_base_flags(args)
        sampler = Sampler.load(args.learned)
    else:
        sampler = _base_sampler(args)
    if args.temperature != 1.0:
        if not args.temperature > 0:
            raise UserError(f"--temperature must be > 0, got {args.temperature!r}")
        sampler = sampler.with_temperature(args.temperature * sampler.temperature)
    model = load_args(args)
    t0 = time.perf_counter()
    res = sample(model, sampler, args.num, seed=args.seed, batch_size=args.batch_size, force=args.force,
                 progress=not getattr(args, "quiet", False))
    secs = time.perf_counter() - t0
    if args.learned:
        res.info["sampler_file"] = str(args.learned)
    if dist.is_main():
        res.save(out)
    procs = f" on {dist.world()} processes" if dist.world() > 1 else ""
    what = f"learned sampler {args.learned} ({sampler.describe()})" if args.learned else sampler.describe()
    calls = (f"{res.nfe_mean:.2f} network calls per sample on average, {res.nfe} at most" if sampler.adaptive
             else f"{res.nfe} network calls per sample")
    print(f"{args.num} samples of length {res.x.shape[1]} from {model.source} with {what}: "
          f"{calls}, {secs:.2f} s{procs} ({1e3 * secs / args.num:.2f} ms/sample) -> {out}")
    return 0


def _no_base_flags(args) -> None:
    if (args.theta is not None or args.nfe is not None or args.steps is not None or args.counted or args.spread
            or args.gamma is not None or args.threshold is not None or args.block is not None):
        raise UserError("--learned brings its own sampler and grid; drop --steps, --nfe, --theta, --counted, "
                        "--spread, --block, --gamma and --threshold")


def _base_sampler(args):
    """The ``Sampler`` that --sampler, --steps, --nfe, --theta, --counted and --spread ask for (UserError when they
    disagree)."""
    from ..sampling.sampler import Sampler
    from ..sampling.steps import get_rule

    if args.sampler in ("eb", "threshold") or args.gamma is not None or args.threshold is not None:
        return _adaptive_sampler(args)
    if (args.counted or args.spread) and args.sampler not in ("euler", "tweedie"):
        flag = "--spread" if args.spread else "--counted"
        raise UserError(f"{flag} applies to the one-call samplers euler and tweedie, not {args.sampler}")
    if args.block is not None and args.sampler != "dilated":
        raise UserError(f"--block {args.block} is the block size of --sampler dilated, eb or threshold, not of "
                        f"{args.sampler}")
    order = args.sampler if args.sampler in ORDERS else None
    if order is not None and args.theta is not None:
        raise UserError(f"--theta applies to theta-rk2 and theta-trapezoidal, not to {args.sampler}")
    name = "euler" if order is not None else args.sampler
    try:
        rule = get_rule(name, args.theta)
    except ValueError as e:
        raise UserError(f"--theta: {e}") from None
    steps = args.steps
    if args.nfe is not None:
        if args.nfe % rule.calls:
            raise UserError(f"{args.sampler} makes {rule.calls} network calls per step; --nfe {args.nfe} is not a "
                            f"multiple of {rule.calls}")
        if steps is not None and steps * rule.calls != args.nfe:
            raise UserError(f"--steps {steps} with {args.sampler} is {steps * rule.calls} network calls per sample, "
                            f"not --nfe {args.nfe}")
        steps = args.nfe // rule.calls
    steps = 64 if steps is None else steps
    movers = order or ("spread" if args.spread else "counted" if args.counted else "independent")
    return Sampler.base(name, steps * rule.calls, movers=movers, eps=args.eps, theta=args.theta, block=args.block)


def _adaptive_sampler(args):
    """The adaptive ``Sampler`` that --sampler eb --gamma / --sampler threshold --threshold ask for."""
    from ..sampling.sampler import Sampler

    param = {"eb": args.gamma, "threshold": args.threshold}.get(args.sampler)
    flag = {"eb": "--gamma", "threshold": "--threshold"}.get(args.sampler)
    other = {"eb": ("--threshold", args.threshold), "threshold": ("--gamma", args.gamma)}.get(args.sampler)
    if flag is None:
        given = "--gamma" if args.gamma is not None else "--threshold"
        raise UserError(f"{given} belongs to --sampler {'eb' if given == '--gamma' else 'threshold'}, not "
                        f"--sampler {args.sampler}")
    if other[1] is not None:
        raise UserError(f"{other[0]} does not apply to --sampler {args.sampler}")
    if param is None:
        raise UserError(f"--sampler {args.sampler} needs {flag}")
    if (args.steps is not None or args.nfe is not None or args.theta is not None or args.counted or args.spread):
        raise UserError(f"--sampler {args.sampler} is adaptive (its network calls depend on the sample); drop "
                        "--steps, --nfe, --theta, --counted and --spread")
    return Sampler.adaptive_rule(args.sampler, param, eps=args.eps, block=args.block)
