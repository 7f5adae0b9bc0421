"""``lsdd eval``: score a .npy file of token samples with a task's metrics; print a table, optionally JSON."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import UserError
from .common import Formatter

DESCRIPTION = """\
Evaluate token samples on a task and print one row per metric (value, direction, meaning).

The samples are a .npy array of integer token ids, shape (num_samples, length). A leftover mask
id (>= --num-values) counts as a violation.

countdown metrics: violation_rate (strict, per transition), any_violation, jys_error (the JYS/LSD
number, which skips every other check; for comparison only), valid_fraction, nll_valid (exact data
NLL per token of the valid samples), and the diversity of run start values: start_tv (TV to uniform;
read it against start_tv_ref, its value for ideal samples of the same size) and start_entropy.

markov metrics (the sparse Markov chain task of the bundled `markov` model): invalid_rate, any_invalid,
successor_tv (generated successor laws against the chain's), nll (exact, per valid transition), and
successor_entropy, to read against chain_entropy (below it: sharpened; above it: noisy).

tokens metrics (any model, no task knowledge): repeat_rate, unigram_entropy, distinct_1.

text metrics (text models; --model gives the tokenizer): gen_ppl (evaluator perplexity per sequence,
averaged: SEDD's convention) and gen_ppl_corpus (over all tokens: MDLM's), mauve (against held-out real
text, on the evaluator's features), entropy (per-sample unigram entropy of the model's tokens), distinct_1/2/3
(word n-grams over all samples), and ref_gen_ppl / ref_entropy: the same numbers for real held-out text
windows of the same length -- read every perplexity beside its entropy (sharpening lowers both).
Conditional samples (lsdd sample --prompt, --prompt-file, --infill, --fixed; their SAMPLES.json records the
given tokens) are scored on their continuation: gen_ppl is the evaluator's NLL of the generated tokens only,
each given the prompt and the text before it, entropy and distinct_* read the generated tokens, and the
reference windows are scored at the same positions.
The evaluator is the bundled GPT-2-architecture 'shakespeare-gpt2' unless --evaluator names another causal
LM; when its tokenizer differs from the model's, samples are decoded and re-encoded.

digits metrics (8x8 digit images, 64 grey levels 0..16 in raster order): fid (Fréchet distance to the
359 held-out test digits in the features of the bundled digit classifier `digits-cnn`, by torchmetrics),
precision and recall (k-NN manifold, k=3, same features), confident (share labelled with p >= 0.9),
class_entropy and class_tv (balance of the predicted labels), and ref_*: the same for as many real
training digits -- the floor to read the sample's numbers against. --grid PNG draws the samples.

examples:
  lsdd eval --task countdown samples.npy --json metrics.json
  lsdd eval --task digits x.npy --json m.json --grid x.png
  lsdd eval --task markov samples.npy
  lsdd eval --task text x.npy --model text-absorb --json m.json
  lsdd eval --task text x.npy --model text-absorb --evaluator gpt2-large      # with internet
"""


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    """Register ``lsdd eval`` on ``subparsers`` under ``name``."""
    parser = subparsers.add_parser(
        name,
        help="evaluate token samples on a task (countdown, markov, tokens, text, digits)",
        description=DESCRIPTION,
        formatter_class=lambda prog: Formatter(prog, max_help_position=32),
    )
    parser.add_argument("samples", help="samples as a .npy integer array of shape (num_samples, length)")
    parser.add_argument("--task",
                        help="task whose metrics to compute: countdown, markov, tokens, text or digits (default: the "
                             "task of the model named in the samples' provenance sidecar, SAMPLES.json)")
    parser.add_argument("--model", help="text: the diffusion model whose tokenizer wrote the samples")
    parser.add_argument(
        "--num-values", type=int, default=None, metavar="N",
        help="number of data values, tokens 0..N-1 (default: the task's own: countdown 32, markov 24)",
    )
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the metrics to this JSON file")
    parser.add_argument("--grid", metavar="PNG", default=None, help="digits: also draw the samples as a PNG grid")
    parser.add_argument("--force", action="store_true",
                        help="score samples whose provenance (SAMPLES.json, written by lsdd sample) names another "
                             "model or vocabulary than --model / --task")
    from .common import add_quiet_arg

    add_quiet_arg(parser)
    from .common import add_text_args

    add_text_args(parser)
    from .common import add_masked_lm_args

    add_masked_lm_args(parser)
    parser.set_defaults(run=run)
    return parser


def load_samples(path: str):
    """Load a (n, L) integer .npy array as an int64 tensor; ``UserError`` naming the problem otherwise."""
    import numpy as np
    import torch

    p = Path(path)
    if p.suffix != ".npy":
        raise UserError(f"samples file must be a .npy array, got {path!r}")
    if not p.is_file():
        raise UserError(f"samples file not found: {path!r}")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"cannot read {path!r} as a .npy array: {e}") from None
    if not isinstance(arr, np.ndarray):
        raise UserError(f"{path!r} holds {type(arr).__name__}, not a single array")
    if arr.ndim != 2:
        raise UserError(f"samples in {path!r} must have shape (num_samples, length), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise UserError(f"samples in {path!r} must be integer token ids, got dtype {arr.dtype}")
    if arr.size == 0:
        raise UserError(f"samples in {path!r} are empty (shape {arr.shape})")
    if arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
        raise UserError(f"samples in {path!r} hold token ids too large for int64 (max {arr.max()})")
    return torch.from_numpy(arr.astype(np.int64, copy=False))


def format_table(task, values: dict[str, float]) -> str:
    """Aligned text table: metric, value, direction, description."""
    rows = [("metric", "value", "direction", "description")]
    for m in task.metrics:
        rows.append((m.name, f"{values[m.name]:.6g}", m.direction, m.description))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``lsdd eval``; returns 0. Raises ``UserError`` on bad input before writing anything."""
    from ..atomic import write_json
    from .common import make_task

    from .common import check_output

    if args.json is not None and Path(args.json).is_dir():
        raise UserError(f"--json must be a file path, got the directory {args.json!r}")
    check_output(args.json, ".json", flag="--json")
    from ..tasks import TASKS, task_class

    if args.task is None:
        _task_from_provenance(args)
    cls = task_class(args.task)
    if not cls.build_options and (args.model or args.evaluator or args.reference):
        readers = " / ".join(n for n, c in TASKS.items() if c.build_options)
        raise UserError(f"--model, --evaluator and --reference apply to --task {readers}")
    if args.grid is not None and not cls.draws_images:
        raise UserError(f"--grid applies to --task {' / '.join(n for n, c in TASKS.items() if c.draws_images)}")
    if args.grid is not None and Path(args.grid).suffix.lower() != ".png":
        raise UserError(f"--grid must name a .png file, got {args.grid!r}")
    check_output(args.grid, ".png", flag="--grid")
    samples = load_samples(args.samples)
    model = None
    if args.model is not None:
        from .common import load_for_samples

        model = load_for_samples(args.model, samples, args)
        if int(samples.max()) >= model.graph.num_tokens or int(samples.min()) < 0:
            bad = int(samples.max()) if int(samples.max()) >= model.graph.num_tokens else int(samples.min())
            raise UserError(f"{args.samples}: token id {bad} is outside the vocabulary of model "
                            f"{args.model} ({model.graph.num_tokens} tokens)")
    held = None
    if args.task == "text":
        held = _check_text_provenance(args, model, samples)
    task = make_task(args.task, model, args, **({} if args.num_values is None else {"num_values": args.num_values}))
    if args.task != "text" and getattr(task, "num_values", None) is not None:
        from ..sampling.record import check_provenance, read_info

        check_provenance(read_info(args.samples), num_tokens=task.num_values, force=args.force, what=args.samples,
                         against=f"task {task.name} (--num-values {task.num_values})")
    values = task.compute(samples) if held is None else task.compute(samples, fixed=held)
    n, length = samples.shape
    given = "" if held is None else ", scored on their continuation given the prompt"
    print(f"task {task.name}: {n} samples of length {length} from {args.samples}{given}")
    print(format_table(task, values))
    examples = list(task.examples)
    for i, text in enumerate(examples):
        print(f"\n--- sample {i} ---\n{text}")
    if args.grid is not None:
        task.plot_grid(samples, args.grid, title=f"{Path(args.samples).name}: {min(n, 256)} of {n}")
        print(f"wrote {args.grid}")
    if args.json is not None:
        record = {
            "task": task.name,
            "num_samples": n,
            "length": length,
            "options": {"num_values": task.num_values} if hasattr(task, "num_values") else {},
            # JSON has no NaN: undefined metrics (e.g. nll_valid with no valid sample) are written as null
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in values.items()},
            "source": str(args.samples),
        }
        if held is not None:
            record["conditional"] = True  # the metrics read the generated tokens, given their prompt
        record.update(task.record())
        write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0


def _task_from_provenance(args) -> None:
    """No --task: the task of the model that made the samples, as their sidecar names it (and that model, for the
    tasks that read one: text). UserError when there is no sidecar, or its model is not here or has changed."""
    from ..sampling.record import check_provenance, read_info
    from ..tasks import default_task, task_class
    from .common import load_for_samples

    info = read_info(args.samples)
    source = args.model or (info or {}).get("model_source")
    if source is None:
        raise UserError(f"pass --task: {args.samples} has no provenance sidecar naming the model that made it "
                        f"(written by lsdd sample beside the .npy)")
    model = load_for_samples(source, load_samples(args.samples), args)
    check_provenance(info, fingerprint=model.fingerprint, force=args.force, what=args.samples,
                     against=f"the model {source} now")
    args.task = default_task(model)
    if task_class(args.task).build_options and args.model is None:
        args.model = source
    print(f"task {args.task}, from the samples' model {source}")


def _check_text_provenance(args, model, samples):
    """--task text: refuse samples whose sidecar says they are not text, or were written with another tokenizer
    than --model's (a note on stderr when only the weights differ: the same tokenizer decodes them). Returns the
    samples' given positions (n, L) bool from the sidecar, None for unconditional samples."""
    import sys

    from ..sampling.record import check_provenance, held_positions, read_info

    info = read_info(args.samples)
    if info is None:
        return None
    tok = model.tokenizer if model is not None else None
    sha = tok.sha256() if tok is not None and hasattr(tok, "sha256") else None
    check_provenance(info, tokenizer_sha256=sha, text=True, force=args.force, what=args.samples,
                     num_tokens=model.graph.num_tokens if model is not None else None,
                     against=f"this model {model.source}" if model is not None else "this model")
    if model is not None and not args.force and info.get("model_fingerprint") != model.fingerprint:
        print(f"lsdd eval: note: {args.samples} was sampled from {info.get('model_source')}, not from "
              f"{model.source}; they share a tokenizer", file=sys.stderr)
    return held_positions(info, samples, str(args.samples))
