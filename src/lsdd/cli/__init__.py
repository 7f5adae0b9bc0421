"""The ``lsdd`` command line: one module per subcommand, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import UserError

# subcommand name -> module under lsdd.cli (imported lazily so `lsdd --help` stays fast)
COMMANDS = {
    "train": "train",
    "sample": "sample",
    "eval": "evaluate",
    "distill": "distill",
    "schedule": "schedule",
    "bench": "bench",
    "demo": "demo",
    "data": "data",
    "decode": "decode",
    "train-evaluator": "train_evaluator",
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="lsdd",
        description="Learnable Sampler Distillation for discrete diffusion models: train a score model, "
        "distill a few-step sampler (LSD/LSD+), sample with it, and benchmark it against Euler/Tweedie.",
    )
    parser.add_argument("--version", action="version", version=f"lsdd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{module}":
                raise
            continue  # subcommand not built yet
        mod.add_parser(sub, name)
    return parser


DISTRIBUTED_COMMANDS = ("sample", "distill", "bench")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 user error, 130 interrupted).

    Under ``torchrun --nproc-per-node K -m lsdd CMD`` (CMD: sample, distill or bench) the K processes share
    the work; rank 0 alone prints and writes the outputs.
    """
    import contextlib
    import io
    import os

    from .. import dist

    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = dist.launched() and int(os.environ.get("RANK", "0")) > 0
    try:
        if dist.launched() and args.command not in DISTRIBUTED_COMMANDS:
            raise UserError(f"'{args.command}' runs in one process; under torchrun use one of "
                            f"{list(DISTRIBUTED_COMMANDS)}")
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            code = int(args.run(args) or 0)
        dist.shutdown()
        return code
    except UserError as e:
        if not quiet:
            print(f"lsdd {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lsdd {args.command}: interrupted", file=sys.stderr)
        return 130
