"""``lsdd train-evaluator``: train the GPT-2-architecture evaluator LM for the text task."""

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
example:
  lsdd train-evaluator --corpus corpus/shakespeare --tokenizer-from text-absorb --out runs/eval-gpt2 --steps 2000
"""


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    from ..text.evaluator import EvaluatorConfig

    d = EvaluatorConfig()
    p = subparsers.add_parser(name, help="train the evaluator language model for --task text",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, metavar="DIR", help="a corpus prepared by `lsdd data`")
    p.add_argument("--tokenizer-from", required=True, metavar="MODEL",
                   help="text model (bundled name or directory) whose tokenizer to use")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must be new or empty)")
    for f in fields(d):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                       help=f"(default {f.default})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import sys

    from ..models import load_model
    from ..text.evaluator import EvaluatorConfig, train_evaluator

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty directory")
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
