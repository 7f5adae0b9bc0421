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


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``lsdd CMD: error: ...``, exit code 2) and no abbreviated flags."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False  # a prefix of a flag is an error, never silently another flag
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """The error for arguments ``parser`` does not know, with the flags a prefix was probably meant for."""
    msg = f"unrecognized arguments: {' '.join(extras)}"
    for arg in extras:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--"):
            close = sorted(o for o in parser._option_string_actions if o.startswith(flag) and o != flag)
            if close:
                msg += f"; flags are not abbreviated: did you mean {' or '.join(close)}?"
                break
    return msg


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(
        prog="lsdd",
        allow_abbrev=False,
        description="Learnable Sampler Distillation for discrete diffusion models: train a score model, "
        "distill a few-step sampler (LSD/LSD+), sample with it, and benchmark it against Euler/Tweedie.",
    )
    parser.add_argument("--version", action="version", version=f"lsdd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{module}":
                raise
            continue  # subcommand not built yet
        mod.add_parser(sub, name)
    for p in sub.choices.values():
        # a prefix of a flag is an error, never silently another flag (`--num` once read as `--num-values`)
        p.allow_abbrev = False
    parser.set_defaults(_commands=sub.choices)
    return parser


# commands whose table on stdout is their result: --quiet keeps it (and drops only bars and notes)
RESULT_ON_STDOUT = ("eval", "bench", "demo", "decode")


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

    from ..allocator import tune_cpu_allocator

    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    commands = vars(args).pop("_commands")
    if extras:  # reported by the subcommand's parser, which knows its flags
        commands[args.command].error(_unrecognized(commands[args.command], extras))
    quiet = dist.launched() and int(os.environ.get("RANK", "0")) > 0
    # --quiet: progress bars and notes (stderr) and info lines (stdout) go nowhere; errors are printed below
    hush = bool(getattr(args, "quiet", False))
    try:
        if dist.launched() and args.command not in DISTRIBUTED_COMMANDS:
            raise UserError(f"'{args.command}' runs in one process; under torchrun use one of "
                            f"{list(DISTRIBUTED_COMMANDS)}")
        try:  # large logits buffers stay in the heap between network calls (lsdd.allocator)
            tune_cpu_allocator()
        except ValueError as e:
            raise UserError(str(e)) from None
        with contextlib.ExitStack() as stack:
            if quiet or (hush and args.command not in RESULT_ON_STDOUT):
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            if hush:
                stack.enter_context(contextlib.redirect_stderr(stack.enter_context(open(os.devnull, "w"))))
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
