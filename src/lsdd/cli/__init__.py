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
    "bench": "bench",
    "demo": "demo",
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


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserError as e:
        print(f"lsdd {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lsdd {args.command}: interrupted", file=sys.stderr)
        return 130
