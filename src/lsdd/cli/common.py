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


DEVICES = "auto, cpu, cuda, cuda:N or mps"
DEVICE_HELP = ("auto = cuda if available, else mps if available, else cpu; or cpu, cuda, cuda:N, mps "
               "(under torchrun, cuda is each rank's own GPU)")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def auto_device() -> str:
    """What --device auto means here: cuda if available, else mps if available, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"


def check_device(name: str) -> str:
    """The device name ``name`` (a --device value) stands for on this machine: ``auto`` becomes cuda, mps or cpu
    (the first available); cpu, cuda, cuda:N and mps are returned when this machine has them. UserError (one line,
    naming the value) for anything else or for a device that is not there. Starts nothing."""
    import re

    import torch

    name = str(name)
    if name == "auto":
        return auto_device()
    m = re.fullmatch(r"cpu|mps|cuda(?::(\d+))?", name)
    if m is None:
        raise UserError(f"unknown --device {name!r}; expected {DEVICES}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UserError(f"--device {name}: CUDA is not available on this machine ({why}); use --device cpu or auto")
        count = torch.cuda.device_count()
        if m.group(1) is not None and int(m.group(1)) >= count:
            raise UserError(f"--device {name}: this machine has {count} CUDA device{'s' * (count != 1)} "
                            f"(cuda:0 to cuda:{count - 1})")
    if name == "mps" and not _mps_available():
        raise UserError("--device mps: Apple's MPS backend is not available on this machine; use --device cpu or auto")
    return name


def resolve_device(name: str):
    """torch.device for --device (``check_device``); under torchrun, cuda means this rank's GPU (cuda:LOCAL_RANK)."""
    import torch

    from .. import dist

    name = check_device(name)
    ranked = dist.init_from_env(name)
    return ranked if ranked is not None else torch.device(name)


def add_device_args(p: argparse.ArgumentParser, compile: bool = True, masked_lm: bool = True) -> None:
    """--device, --precision and --compile, shared by the commands that run the network, and (``masked_lm``) the
    masked-LM flags of ``add_masked_lm_args``."""
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="network arithmetic: bf16 autocast (scores stay float32); auto = bf16 on CUDA, fp32 otherwise")
    if compile:
        p.add_argument("--compile", action="store_true",
                       help="torch.compile the network (pays off over hundreds of calls; first call compiles)")
    if masked_lm:
        add_masked_lm_args(p)


def add_masked_lm_args(p: argparse.ArgumentParser) -> None:
    """--length and --trust-remote-code, read when --model is a transformers masked-LM directory."""
    g = p.add_argument_group("transformers masked LMs (--model DIR holding one; docs/masked-lms.md)")
    g.add_argument("--length", type=positive_int,
                   help="tokens per sequence (default: the model's max_position_embeddings, at most 512); other "
                        "models have a fixed length")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="let a checkpoint whose model class ships as Python code in its directory (config.json "
                        "auto_map: LLaDA, Dream) run that code; only for checkpoints you trust")


def add_quiet_arg(p: argparse.ArgumentParser) -> None:
    """--quiet, for the commands that do long work (``lsdd.cli.main`` applies it)."""
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars and no info lines (errors still print; eval and bench still print their "
                        "table)")


def load(model: str, device: str = "cpu", precision: str = "auto", compile: bool = False, *,
         trust_remote_code: bool = False, length: int | None = None):
    """Load a bundled model name or a model directory (UserError if neither), on ``device``; ``trust_remote_code``
    and ``length`` apply to transformers masked LMs (``lsdd.models.load_model``)."""
    from ..models import load_model

    options = {}
    if trust_remote_code:
        options["trust_remote_code"] = True
    if length is not None:
        options["length"] = length
    return load_model(model, resolve_device(device), **options).configure(precision, compile)


def load_for_samples(source: str, samples, args):
    """The model that made ``samples`` (``lsdd decode`` / ``lsdd eval``, on the CPU): --trust-remote-code as given,
    and a transformers masked-LM directory at the samples' own length unless --length says otherwise (its length
    is a load option, and the samples fix it)."""
    from pathlib import Path

    from ..models import load_model

    length = getattr(args, "length", None)
    if length is None and Path(source).is_dir():
        from ..models.external import detect_format

        try:
            if detect_format(Path(source)) == "masked-lm":
                length = int(samples.shape[-1])
        except UserError:
            pass  # not a model directory of any kind: load_model says so
    return load_model(source, trust_remote_code=getattr(args, "trust_remote_code", False), length=length)


def load_args(args):
    """``load`` with the --model/--device/--precision/--compile/--length/--trust-remote-code flags of ``args``."""
    return load(args.model, args.device, getattr(args, "precision", "auto"), getattr(args, "compile", False),
                trust_remote_code=getattr(args, "trust_remote_code", False), length=getattr(args, "length", None))


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


def check_output(path: str | None, suffix: str | None = None, *, flag: str = "--out",
                 folder: bool = False) -> Path | None:
    """Validate an output path before any work is done; returns it as a Path (None for None).

    A file output must not be an existing folder and must end in ``suffix`` (when given, any case); a ``folder``
    output must not be an existing file. Either way the folder it is written in must be creatable and writable:
    the nearest existing ancestor must be a folder (not a regular file) that we may write in. The folder itself is
    created only on write. UserError (one line naming ``flag`` and the path) otherwise.
    """
    import os

    if path is None:
        return None
    p = Path(path)
    if folder:
        if p.exists() and not p.is_dir():
            raise UserError(f"{flag} {p} exists and is not a folder")
        where = p
    else:
        if p.is_dir():
            ending = f" ending in {suffix}" if suffix else ""
            raise UserError(f"{flag} {p} is a folder; it takes a file name{ending}")
        if suffix and p.suffix.lower() != suffix.lower():
            raise UserError(f"{flag} {p}: the output file must end in {suffix}")
        where = p.parent
    anc = where
    while not anc.exists() and not anc.is_symlink() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"{flag} {p} cannot be written: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {p} cannot be written: no permission to write in {anc}")
    return p


def set_threads() -> None:
    """Use the machine's cores for intra-op work, unless the user set OMP_NUM_THREADS."""
    import os

    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))


PROMPTS_HELP = ("continuations of prompts: FILE holds one text prompt per line (blank lines skipped; the model's "
                "tokenizer), or held-out:K[:P] takes the first K tokens of each window of the model's length in the "
                "held-out text (--reference, default the bundled Shakespeare test slice; with :P, P windows evenly "
                "spaced over them); sample / trajectory i continues prompt i mod P")


def read_prompt_file(path: str, flag: str = "--prompt-file") -> list[str]:
    """The prompts of a text file, one per line (blank lines skipped; a trailing \\r dropped); UserError (one line)
    when it cannot be read or holds none."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{flag} {path}: cannot read it ({type(e).__name__}: {e})") from None
    lines = [line.removesuffix("\r") for line in text.split("\n") if line.strip()]
    if not lines:
        raise UserError(f"{flag} {path} holds no prompt (every line is blank)")
    return lines


class PromptSpec:
    """``--prompts FILE|held-out:K[:P]`` read and checked before the model is loaded (``PROMPTS_HELP``):
    ``condition(model, reference)`` makes the prompts (one-line UserErrors for prompts the model cannot take)."""

    def __init__(self, spec: str, flag: str = "--prompts"):
        self.spec, self.flag = spec, flag
        self.texts: list[str] | None = None
        self.k = self.num = None
        if spec.startswith("held-out:"):
            parts = spec.split(":")[1:]
            if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) >= 1 for p in parts):
                raise UserError(f"{flag} {spec}: expected held-out:K or held-out:K:P with integers K, P >= 1 (K prompt "
                                "tokens, P prompts)")
            self.k = int(parts[0])
            self.num = int(parts[1]) if len(parts) == 2 else None
        else:
            self.texts = read_prompt_file(spec, flag)

    def condition(self, model, reference: str | None = None):
        """The prompts as a ``lsdd.sampling.prompts.Condition`` for ``model``."""
        from ..sampling.prompts import from_prompt

        if self.texts is not None:
            return from_prompt(model, self.texts)
        from ..tasks.text import held_out_prompts

        return from_prompt(model, held_out_prompts(model, self.k, reference, self.num))
