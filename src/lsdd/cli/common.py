"""Helpers shared by the subcommands: help formatting, argument types, model loading, devices."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults (except uninformative None/False) and keep the description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def resolve_device(name: str):
    """torch.device for --device; under torchrun, cuda means this rank's GPU (cuda:LOCAL_RANK)."""
    import torch

    from .. import dist

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} requested, but CUDA is not available on this machine")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"bad --device {name!r}: {e}") from None
    ranked = dist.init_from_env(name)
    return ranked if ranked is not None else device


def add_device_args(p: argparse.ArgumentParser) -> None:
    """--device, --precision and --compile, shared by the commands that run the network."""
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun: each rank's own GPU)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="network arithmetic: bf16 autocast (scores stay float32); auto = bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (pays off over hundreds of calls; first call compiles)")


def load(model: str, device: str = "cpu", precision: str = "auto", compile: bool = False):
    """Load a bundled model name or a model directory (UserError if neither), on ``device``."""
    from ..models import load_model

    return load_model(model, resolve_device(device)).configure(precision, compile)


def load_args(args):
    """``load`` with the --model/--device/--precision/--compile flags of ``args``."""
    return load(args.model, args.device, getattr(args, "precision", "auto"), getattr(args, "compile", False))


def default_task(model) -> str:
    """The task that scores a model's samples when --task is not given (``lsdd.tasks.default_task``)."""
    from ..tasks import default_task as task_of

    return task_of(model)


def default_evaluator(model) -> str | None:
    """The evaluator a model's text is scored with when --evaluator is not given
    (``lsdd.tasks.text.default_evaluator``)."""
    from ..tasks.text import default_evaluator as evaluator_of

    return evaluator_of(model)


def add_text_args(p) -> None:
    """--evaluator and --reference, for the text task."""
    g = p.add_argument_group("text task (--task text)")
    g.add_argument("--evaluator", metavar="NAME|DIR|HUB_ID",
                   help="causal LM that scores the text: a save_pretrained directory, a hub id such as gpt2-large "
                        "(downloaded once, then read from the local cache), or the bundled 'shakespeare-gpt2'; "
                        "default: gpt2-large for GPT-2-vocabulary checkpoints (SEDD/RADD/MDLM), else the bundled one")
    g.add_argument("--reference", metavar="FILE|CORPUS_DIR",
                   help="held-out real text for MAUVE and the reference rows: a text file or a corpus prepared by "
                        "`lsdd data` (its test split); default: the Shakespeare test slice bundled with lsdd")


def make_task(name: str, model=None, args=None, **options):
    """Build task ``name`` for ``model`` with ``options`` and the flags of ``args`` that the task reads
    (``Task.build_options``, e.g. the text task's --evaluator and --reference)."""
    from ..tasks import task_class

    cls = task_class(name)
    given = {k: getattr(args, k) for k in cls.build_options if getattr(args, k, None) is not None}
    return cls.build(model, **given, **options)


def check_output(path: str | None, suffix: str | None = None) -> Path | None:
    """Validate an output path before any work is done (its folder is created on write)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise UserError(f"output path {p} is a directory")
    if suffix and p.suffix != suffix:
        raise UserError(f"output file {p} must end in {suffix}")
    return p


def set_threads() -> None:
    """Use the machine's cores for intra-op work, unless the user set OMP_NUM_THREADS."""
    import os

    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
