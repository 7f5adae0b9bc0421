"""``lsdd train-evaluator``: train the evaluator of a task: a GPT-2-architecture LM (text) or a digit classifier."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from ..errors import UserError

DESCRIPTION = """\
Train a causal language model (GPT-2 architecture, `transformers`) on a corpus's training split with a text
diffusion model's tokenizer, and write it with save_pretrained (config.json, model.safetensors, the tokenizer,
and lsdd_evaluator.json with the settings and its validation perplexity). `lsdd eval --task text
--evaluator DIR` and `lsdd bench` then score generated text with it. Sharing the diffusion model's tokenizer
means no re-tokenisation; any other causal LM works too (it re-tokenises the decoded text).
"""

EPILOG = """\
examples:
  lsdd train-evaluator --corpus corpus/shakespeare --tokenizer-from text-absorb --out runs/eval-gpt2 --steps 2000
  lsdd train-evaluator --task digits --out runs/digits-cnn --seed 0
      (--task digits: the small CNN of `lsdd eval --task digits`, trained on the digits' train split; of the
       flags below it reads --steps, --batch-size, --lr, --weight-decay and --seed when given, else its own
       defaults: 1500 steps, batch 64, lr 2e-3, weight decay 1e-4)
"""


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    from ..text.evaluator import EvaluatorConfig

    d = EvaluatorConfig()
    p = subparsers.add_parser(name, help="train the evaluator of --task text (an LM) or --task digits (a classifier)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=list(TRAINERS), default="text",
                   help="text: a GPT-2 LM for --task text; digits: the digit classifier of --task digits")
    p.add_argument("--corpus", metavar="DIR", help="text: a corpus prepared by `lsdd data` (required)")
    p.add_argument("--tokenizer-from", metavar="MODEL",
                   help="text: text model (bundled name or directory) whose tokenizer to use (required)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must be new or empty)")
    for f in fields(d):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                       help=f"(default {f.default})")
    from .common import add_quiet_arg

    add_quiet_arg(p)
    p.set_defaults(run=run, _parser=p)
    return p


def run_digits(args, out: Path) -> int:
    import sys

    from ..tasks.digit_classifier import ClassifierConfig, train_digit_classifier

    if args.corpus or args.tokenizer_from:
        raise UserError("--corpus and --tokenizer-from apply to --task text")
    parser = args._parser
    given = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "weight_decay", "seed")
             if getattr(args, k) != parser.get_default(k)}
    cfg = ClassifierConfig(**given)
    _, info = train_digit_classifier(cfg, out, provenance={"command": "lsdd " + " ".join(sys.argv[1:])})
    print(f"digit classifier ({info['parameters']:,} parameters) written to {out}; accuracy: train "
          f"{info['train_accuracy']:.4f}, test {info['test_accuracy']:.4f} ({info['split']['test']} held-out digits)")
    return 0


def run(args) -> int:
    from .common import check_output

    out = check_output(args.out, flag="--out", folder=True)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty directory")
    return TRAINERS[args.task](args, out)


def run_text(args, out: Path) -> int:
    import sys

    from ..models import load_model
    from ..text.evaluator import EvaluatorConfig, train_evaluator

    if not args.corpus or not args.tokenizer_from:
        raise UserError("--task text needs --corpus DIR and --tokenizer-from MODEL")
    model = load_model(args.tokenizer_from)
    if model.tokenizer is None:
        raise UserError(f"model {args.tokenizer_from} has no tokenizer (not a text model)")
    cfg = EvaluatorConfig(**{f.name: getattr(args, f.name) for f in fields(EvaluatorConfig)})
    if cfg.steps < 1 or cfg.n_embd % cfg.n_head:
        raise UserError(f"need steps >= 1 and n_embd divisible by n_head, got {cfg.steps}, {cfg.n_embd}/{cfg.n_head}")
    info = train_evaluator(args.corpus, model.tokenizer, out, cfg, progress=not args.quiet,
                           provenance={"command": "lsdd " + " ".join(sys.argv[1:]),
                                       "tokenizer_from": model.source})
    print(f"evaluator ({info['parameters']:,} parameters) written to {out}; validation perplexity "
          f"{info['valid_ppl']:.2f} per token")
    return 0


# task -> how its evaluator is trained (the text task's LM, the digits task's classifier)
TRAINERS = {"text": run_text, "digits": run_digits}
