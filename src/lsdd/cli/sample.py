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
--sampler dilated (DUS, coarse-to-fine dilated positions), halton (1-D Halton order with a random rotation
per sequence), confidence, margin or entropy (the top tokens by the step's own value law).

Semi-autoregressive blocks (--block B, every sampler): the free positions are cut into blocks of B tokens,
decoded left to right, everything outside the current block held (earlier blocks decoded, later ones masked).
A fixed-grid sampler runs its whole grid once per block: --nfe N is the total (N must be a multiple of the
number of blocks), --steps M the steps per block. eb and threshold choose their tokens within the first block
that still has masks (at least one call per block).

Conditional generation (at most one of these): --prompt TEXT continues a prefix; --prompt-file F holds one
prompt per line (blank lines skipped), sample i continuing prompt i mod P; --infill TEMPLATE fills the gaps of
a text, each gap written {{n}} for n free tokens (e.g. "To be, or {{6}} to be"; the positions after the
template are free too); --fixed FILE.npy gives any model a (L,) or (P, L) int array of tokens with the mask id
(the number of tokens, also on models without a mask) at the free positions. The given tokens never change.
Text needs a model with a tokenizer. OUT.json records the condition: `lsdd decode` shows prompt and
continuation apart, `lsdd eval --task text` scores the continuation given its prompt.
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
  lsdd sample --model text-absorb --sampler dilated --block 32 --nfe 32 --num 256 --out samples.npy  # DUS, 4 blocks
  lsdd sample --model text-absorb --spread --nfe 8 --prompt "ROMEO:" --num 16 --out samples.npy  # continue a prefix
  lsdd sample --model text-absorb --spread --nfe 8 --prompt-file prompts.txt --num 64 --out samples.npy
  lsdd sample --model text-absorb --spread --nfe 8 --infill "To be, or {{6}} to be" --num 8 --out samples.npy
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
    p.add_argument("--block", type=positive_int, metavar="B",
                   help="semi-autoregressive blocks of B free tokens, decoded left to right (any sampler; a fixed grid "
                        "runs once per block: --nfe is the total, --steps per block; default: the whole sequence)")
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--prompt", metavar="TEXT", help="continue this text (a model with a tokenizer)")
    cond.add_argument("--prompt-file", metavar="F",
                      help="one prompt per line (blank lines skipped); sample i continues prompt i mod P")
    cond.add_argument("--infill", metavar="TEMPLATE",
                      help="fill the gaps of this text, each written {{n}} for n free tokens; positions after the "
                           "template are free too")
    cond.add_argument("--fixed", metavar="FILE.npy",
                      help="(L,) or (P, L) int array of given tokens, the mask id (= the number of tokens) at the "
                           "free positions; sample i holds row i mod P (any model)")
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
    p.add_argument("--final-step", choices=("tweedie",), default=None,
                   help="euler / tweedie: the rule of the last step (no extra call). tweedie on the uniform graph draws "
                        "each token from the score's posterior p(x0 | x_t), removing the noise tokens an Euler step "
                        "leaves; on masked models every last step already unmasks all")
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
        if args.block is not None:
            sampler = sampler.replace(block=args.block)
    else:
        sampler = _base_sampler(args)
    if args.temperature != 1.0:
        if not args.temperature > 0:
            raise UserError(f"--temperature must be > 0, got {args.temperature!r}")
        sampler = sampler.with_temperature(args.temperature * sampler.temperature)
    given = _given(args)
    model = load_args(args)
    free = _free_positions(model, given, args.num)  # UserError for a bad prompt, before any sampling
    if not args.learned and sampler.adaptive is None and args.block is not None and args.nfe is not None:
        sampler = _base_sampler(args, free)  # --nfe is the total over the blocks
    t0 = time.perf_counter()
    res = sample(model, sampler, args.num, seed=args.seed, batch_size=args.batch_size, force=args.force,
                 progress=not getattr(args, "quiet", False), **given)
    secs = time.perf_counter() - t0
    if args.learned:
        res.info["sampler_file"] = str(args.learned)
    if dist.is_main():
        res.save(out)
    procs = f" on {dist.world()} processes" if dist.world() > 1 else ""
    what = f"learned sampler {args.learned} ({sampler.describe()})" if args.learned else sampler.describe()
    calls = (f"{res.nfe_mean:.2f} network calls per sample on average, {res.nfe} at most" if sampler.adaptive
             else f"{res.nfe} network calls per sample")
    if sampler.adaptive is None and sampler.block is not None:
        calls += f" ({sampler.blocks(free)} blocks x {sampler.nfe})"
    cond = f", {_describe_given(given)}" if given else ""
    print(f"{args.num} samples of length {res.x.shape[1]} from {model.source} with {what}{cond}: "
          f"{calls}, {secs:.2f} s{procs} ({1e3 * secs / args.num:.2f} ms/sample) -> {out}")
    return 0


def _given(args) -> dict:
    """lsdd.sample's condition keyword from --prompt, --prompt-file, --infill or --fixed (files read here)."""
    if args.prompt is not None:
        return {"prompt": args.prompt}
    if args.infill is not None:
        return {"infill": args.infill}
    if args.prompt_file is not None:
        from .common import read_prompt_file

        return {"prompt": read_prompt_file(args.prompt_file)}
    if args.fixed is not None:
        return {"fixed": _load_fixed(args.fixed)}
    return {}


def _load_fixed(path: str):
    """The (L,) or (P, L) integer array of --fixed FILE.npy; one-line UserErrors naming the problem."""
    from pathlib import Path

    import numpy as np

    if Path(path).suffix != ".npy":
        raise UserError(f"--fixed must name a .npy array, got {path!r}")
    if not Path(path).is_file():
        raise UserError(f"--fixed {path}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"--fixed {path}: cannot read it as a .npy array ({e})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
        what = f"shape {arr.shape} dtype {arr.dtype}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise UserError(f"--fixed {path}: expected a (L,) or (P, L) integer array, got {what}")
    return arr.astype(np.int64)


def _free_positions(model, given: dict, num: int) -> int:
    """The most free positions of any sample (the model's length without a condition); UserError for a bad one."""
    from ..sampling.prompts import condition

    cond = condition(model, **given)
    return model.length if cond is None else cond.free_positions(num)


def _describe_given(given: dict) -> str:
    (kind, value), = given.items()
    if kind == "prompt":
        return f"continuing {len(value)} prompts" if isinstance(value, list) else f"continuing {value[:30]!r}"
    if kind == "infill":
        return f"filling {value[:30]!r}"
    return f"with the tokens of {len(value)} given row{'s' * (len(value) != 1)}"


def _no_base_flags(args) -> None:
    if (args.theta is not None or args.nfe is not None or args.steps is not None or args.counted or args.spread
            or args.gamma is not None or args.threshold is not None or args.final_step):
        raise UserError("--learned brings its own sampler and grid; drop --steps, --nfe, --theta, --counted, "
                        "--spread, --final-step, --gamma and --threshold (--block runs its grid once per block)")


def _base_sampler(args, free: int | None = None):
    """The ``Sampler`` that --sampler, --steps, --nfe, --theta, --counted, --spread and --block ask for (UserError
    when they disagree). With --block and --nfe N, ``free`` (the most free positions of a sample) sets the number
    of blocks that share the N calls; None checks the flags alone."""
    from ..sampling.sampler import Sampler
    from ..sampling.steps import get_rule

    if args.sampler in ("eb", "threshold") or args.gamma is not None or args.threshold is not None:
        return _adaptive_sampler(args)
    if (args.counted or args.spread or args.final_step) and args.sampler not in ("euler", "tweedie"):
        flag = "--spread" if args.spread else "--counted" if args.counted else "--final-step"
        raise UserError(f"{flag} applies to the one-call samplers euler and tweedie, not {args.sampler}")
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
        blocks = 1 if args.block is None or free is None else -(-free // args.block)
        if args.nfe % blocks:
            raise UserError(f"--nfe {args.nfe} is not a multiple of the {blocks} blocks of --block {args.block} "
                            f"({free} free positions): every block runs the same grid")
        per = args.nfe // blocks
        if per % rule.calls:
            raise UserError(f"{args.sampler} makes {rule.calls} network calls per step; --nfe {args.nfe} is "
                            f"{per} per block, not a multiple of {rule.calls}" if blocks > 1 else
                            f"{args.sampler} makes {rule.calls} network calls per step; --nfe {args.nfe} is not a "
                            f"multiple of {rule.calls}")
        if steps is not None and (args.block is None or free is not None) and steps * rule.calls * blocks != args.nfe:
            raise UserError(f"--steps {steps} with {args.sampler} is {steps * rule.calls * blocks} network calls per "
                            f"sample, not --nfe {args.nfe}")
        steps = per // rule.calls
    steps = 64 if steps is None else steps
    movers = order or ("spread" if args.spread else "counted" if args.counted else "independent")
    return Sampler.base(name, steps * rule.calls, movers=movers, eps=args.eps, theta=args.theta, block=args.block,
                        final=args.final_step)


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
    if (args.steps is not None or args.nfe is not None or args.theta is not None or args.counted or args.spread
            or args.final_step):
        raise UserError(f"--sampler {args.sampler} is adaptive (its network calls depend on the sample); drop "
                        "--steps, --nfe, --theta, --counted, --spread and --final-step")
    return Sampler.adaptive_rule(args.sampler, param, eps=args.eps, block=args.block)
