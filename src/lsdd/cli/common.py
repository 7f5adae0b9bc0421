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
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} requested, but CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise UserError(f"bad --device {name!r}: {e}") from None


def load(model: str, device: str = "cpu"):
    """Load a bundled model name or a model directory (UserError if neither)."""
    from ..models import load_model

    return load_model(model, resolve_device(device))


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
