"""``lsdd decode``: print token samples as their task reads them (text, digit art, ids), one per paragraph."""

from __future__ import annotations

import argparse

from ..errors import UserError

DESCRIPTION = """\
Decode a .npy array of token samples (num_samples, length) as the model's task reads them -- text models
with their tokenizer, digit models as ASCII art, others as their token ids -- and print them, one sample
per paragraph (separated by a blank line and a '=== sample i ===' header unless
--plain), so that any other tool can read or score them.

Conditional samples (lsdd sample --prompt, --prompt-file, --infill or --fixed; their OUT.json records the
given tokens) show the prompt (the given tokens) and the text (the generated ones) apart, under '--- prompt ---'
and '--- text ---'; --plain prints each whole sample. --json prints one JSON object per line and sample,
{"prompt": ..., "text": ...} (the prompt is "" for unconditional samples; with --infill both are the
concatenation of their pieces in order); models without a tokenizer give their token ids.
"""

EPILOG = """\
examples:
  lsdd decode x.npy | less                                  # the model named in x.npy.json
  lsdd decode --model text-absorb x.npy | less
  lsdd decode --model text-absorb x.npy --num 4
  lsdd decode --model text-absorb x.npy --plain --out x.txt
  lsdd decode --model text-absorb x.npy --json | head -3     # {"prompt": "ROMEO:", "text": "..."} per line
"""


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="print the text of token samples of a text model",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("samples", help="samples as a .npy integer array of shape (num_samples, length)")
    p.add_argument("--model", help="the text model (bundled name or directory) that made them (default: the model "
                                   "named in the samples' provenance sidecar, SAMPLES.json, written by lsdd sample)")
    p.add_argument("--num-samples", "--num", dest="num", type=int, metavar="N",
                   help="decode only the first N samples (--num is the same flag)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--plain", action="store_true", help="no headers: samples separated by one blank line only")
    how.add_argument("--json", action="store_true",
                     help='one JSON object per line and sample: {"prompt": the given tokens, "text": the generated ones}')
    p.add_argument("--out", help="write the texts to this file instead of printing them")
    p.add_argument("--force", action="store_true",
                   help="decode samples whose provenance (SAMPLES.json, written by lsdd sample) names another "
                        "tokenizer than --model's")
    from .common import add_masked_lm_args

    add_masked_lm_args(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from .. import atomic
    from ..tasks import default_task, task_class
    from .common import check_output, load_for_samples
    from .evaluate import load_samples

    check_output(args.out, flag="--out")
    samples = load_samples(args.samples)
    if args.model is None:
        from ..sampling.record import read_info

        args.model = (read_info(args.samples) or {}).get("model_source")
        if args.model is None:
            raise UserError(f"pass --model: {args.samples} has no provenance sidecar naming the model that made it "
                            "(written by lsdd sample beside the .npy)")
    model = load_for_samples(args.model, samples, args)
    info = _check_provenance(args, model)
    if args.num is not None:
        if args.num < 1:
            raise UserError(f"--num must be >= 1, got {args.num}")
        samples = samples[: args.num]
    held = _held(args.samples, info, samples)
    try:
        if args.json or (held is not None and not args.plain):
            parts = split_texts(model, samples, held)
        else:
            texts = task_class(default_task(model)).from_model(model).decode(samples)
    except UserError as e:
        raise UserError(f"{args.samples}: {e}") from None
    if args.json:
        import json

        doc = "".join(json.dumps({"prompt": a, "text": b}, ensure_ascii=False) + "\n" for a, b in parts)
        texts = parts
    elif args.plain:
        doc = "\n\n".join(t.strip("\n") for t in texts) + "\n"
    elif held is not None:
        texts = parts
        doc = "\n\n".join(f"=== sample {i} ===\n--- prompt ---\n{a.strip(chr(10))}\n--- text ---\n"
                           f"{b.strip(chr(10))}" for i, (a, b) in enumerate(parts)) + "\n"
    else:
        doc = "\n\n".join(f"=== sample {i} ===\n{t.strip(chr(10))}" for i, t in enumerate(texts)) + "\n"
    if args.out:
        atomic.write_text(args.out, doc)
        print(f"{len(texts)} samples -> {args.out}")
    else:
        print(doc, end="")
    return 0


def _check_provenance(args, model) -> dict | None:
    """Refuse samples whose sidecar names no tokenizer or another one than the model's (UserError; --force
    overrides); a note on stderr when only the weights differ (the same tokenizer decodes them). Returns the
    sidecar (None without one)."""
    import sys

    from ..sampling.record import check_provenance, read_info

    info = read_info(args.samples)
    tok = model.tokenizer
    if tok is None:  # ids, digits: the samples must come from this model
        check_provenance(info, fingerprint=model.fingerprint, num_tokens=model.graph.num_tokens, length=model.length,
                         force=args.force, what=args.samples, against=f"this model {model.source}")
        return info
    check_provenance(info, tokenizer_sha256=tok.sha256() if hasattr(tok, "sha256") else None, text=True,
                     num_tokens=model.graph.num_tokens, force=args.force, what=args.samples,
                     against=f"this model {model.source}")
    if info is not None and not args.force and info.get("model_fingerprint") != model.fingerprint:
        print(f"lsdd decode: note: {args.samples} was sampled from {info.get('model_source')}, not from "
              f"{model.source}; they share a tokenizer", file=sys.stderr)
    return info


def _held(path: str, info: dict | None, samples):
    """(n, L) bool, the given positions of the samples as their sidecar records them (None: unconditional)."""
    from ..sampling.record import held_positions

    return held_positions(info, samples, str(path))


def split_texts(model, samples, held) -> list[tuple[str, str]]:
    """(prompt, text) of each sample (n, L): its given tokens and its generated ones (``held`` (n, L) bool, None:
    none given), each decoded in order with the model's tokenizer, or as token ids without one."""
    import numpy as np

    from ..tasks.text import decode_tokens

    x = samples.numpy()
    mask = np.zeros(x.shape, dtype=bool) if held is None else held.numpy()
    tok = model.tokenizer
    out = []
    for row, given in zip(x, mask):
        pieces = [row[given], row[~given]]
        if tok is None:
            out.append(tuple(" ".join(str(int(v)) for v in p) for p in pieces))
        else:
            out.append(tuple(decode_tokens(tok, p[None])[0] if p.size else "" for p in pieces))
    return out
