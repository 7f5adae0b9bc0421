"""``lsdd train``: train a DiT score network on countdown sequences or on a .npy file of token ids."""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields
from pathlib import Path

from ..errors import UserError

DESCRIPTION = """\
Train a score network (a DiT in SEDD's layout) for a discrete diffusion model with the denoising
score-entropy loss of SEDD. Each step corrupts a batch of sequences with the forward process of the chosen
graph -- 'absorbing' replaces tokens by a [MASK] id, 'uniform' by random tokens, 'ordinal' moves them to
nearby values (grey levels) -- at a random time t in
[eps, 1], and teaches the network the ratios p_t(y)/p_t(x) that the reverse process needs. The logged loss
is an upper bound on the negative log-likelihood in nats per sequence: it starts near L*log(V) and falls
towards the data's entropy.

The output directory holds:
  config.json        the model configuration, its fingerprint and how it was trained
  model.safetensors  the EMA weights (load them with `lsdd sample --model DIR` or lsdd.models.load_model)
  train_log.jsonl    one JSON line per --log-every steps: step, mean loss, learning rate, seconds
  checkpoint.pt      full training state; `--resume` continues from it exactly as if never stopped
"""

EPILOG = """\
examples:
  lsdd train --task countdown --out runs/countdown --steps 5000
  lsdd data shakespeare --out corpus/shakespeare            # prepare a text corpus first (one download)
  lsdd train --data text --corpus corpus/shakespeare --tokenizer bpe --vocab-size 1024 --length 128 \
             --out runs/text-absorb --steps 6000
  lsdd train --data tokens.npy --vocab 100 --graph uniform --out runs/mine --steps 2000 --batch-size 32
  lsdd train --data digits --graph ordinal --out runs/digits-ordinal --steps 3000
  lsdd train --out runs/countdown --resume                  # finish an interrupted run
  lsdd train --out runs/countdown --resume --steps 8000 --decay-steps 3000
                                   # extend it, annealing the learning rate; other settings come from the run

On a CPU keep the model small (the defaults: 4 blocks, hidden 128, about 1.2 M parameters) and sequences
short (64 tokens). bf16 autocast is the default on CUDA only: on CPUs without native bf16 (e.g. AMD EPYC here)
it is 5-10x slower than float32, on CPUs with it about 1.3x faster -- try --bf16 on yours.
"""

DATA_DEFAULTS = {"length": None, "num_values": 32}
# data flags -> how the command line spells them (each task's ``data_options`` says which it takes)
DATA_FLAGS = {"length": "--length", "num_values": "--num-values", "vocab": "--vocab", "corpus": "--corpus",
              "tokenizer": "--tokenizer", "vocab_size": "--vocab-size"}
MODEL_FLAGS = ("hidden_size", "cond_dim", "n_blocks", "n_heads", "dropout")
KNOWN_FILES = ("config.json", "model.safetensors", "train_log.jsonl", "checkpoint.pt", "tokenizer.json")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, except the uninformative None/False of optional flags and switches."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _generated_tasks() -> list[str]:
    from ..tasks import TASKS

    return [name for name, cls in TASKS.items() if cls.generates_data]


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="train a score network (countdown task, a .npy token file or a text corpus)",
                              description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter)
    data = p.add_argument_group("data (one of --task or --data; with --resume both may be left out)")
    src = data.add_mutually_exclusive_group()
    src.add_argument("--task", choices=_generated_tasks(), help="generate fresh training sequences every step")
    src.add_argument("--data", metavar="FILE.npy|text|digits",
                     help="integer array (sequences, length) of token ids, 'text' to train on --corpus, or "
                          "'digits' (scikit-learn's 8x8 digits, train split: 64 tokens, 17 grey levels)")
    data.add_argument("--length", type=int, default=DATA_DEFAULTS["length"],
                      help="sequence length for countdown (default 64) or text (default 128)")
    data.add_argument("--num-values", type=int, default=DATA_DEFAULTS["num_values"],
                      help="countdown values 0..N-1 (the vocabulary size)")
    data.add_argument("--vocab", type=int, help="vocabulary size for --data FILE.npy (default: largest id + 1)")
    data.add_argument("--corpus", metavar="DIR", help="with --data text: a corpus prepared by `lsdd data`")
    data.add_argument("--tokenizer", default="char", metavar="{char,bpe}",
                      help="with --data text: one token per character, or byte-level BPE trained on the corpus")
    data.add_argument("--vocab-size", type=int, help="with --tokenizer bpe: vocabulary size (default 1024)")
    model = p.add_argument_group("model")
    model.add_argument("--graph", choices=["absorbing", "uniform", "ordinal"], default="absorbing",
                       help="forward process: masking, uniform resampling of tokens, or jumps to nearby values "
                            "(ordinal: a Gaussian kernel over the values, for grey levels)")
    model.add_argument("--noise", choices=["auto", "loglinear", "geometric"], default="auto",
                       help="noise schedule; auto = loglinear (eps 1e-3) for absorbing, geometric otherwise")
    model.add_argument("--hidden-size", type=int, default=128, help="transformer width")
    model.add_argument("--cond-dim", type=int, default=128, help="width of the noise-level conditioning")
    model.add_argument("--n-blocks", type=int, default=4, help="transformer blocks")
    model.add_argument("--n-heads", type=int, default=4, help="attention heads")
    model.add_argument("--dropout", type=float, default=0.0, help="dropout inside the blocks")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=5000, help="total optimiser steps (also the target with --resume)")
    opt.add_argument("--batch-size", type=int, default=64, help="sequences per step")
    opt.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate after warm-up")
    opt.add_argument("--warmup", type=int, default=500, help="steps of linear learning-rate warm-up")
    opt.add_argument("--decay-steps", type=int, default=0,
                     help="linear learning-rate decay to 0 over the last N steps (0: constant after warm-up)")
    opt.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    opt.add_argument("--ema", type=float, default=0.999, help="decay of the weight average that gets saved")
    opt.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient norm (0: off)")
    opt.add_argument("--t-eps", type=float, default=1e-3, help="training times are drawn from U[t_eps, 1]")
    opt.add_argument("--seed", type=int, default=0, help="seeds initialisation, data and noise")
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="DIR", help="output directory")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    run.add_argument("--force", action="store_true", help="start afresh in a non-empty --out, replacing its run")
    from .common import DEVICE_HELP

    run.add_argument("--device", default="auto", help=DEVICE_HELP)
    run.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                     help="network arithmetic: bf16 autocast (the loss stays float32); auto = bf16 on CUDA, fp32 "
                          "otherwise. --bf16 and --no-bf16 are the same as --precision bf16 and fp32")
    run.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help=argparse.SUPPRESS)
    run.add_argument("--no-bf16", dest="precision", action="store_const", const="fp32", help=argparse.SUPPRESS)
    run.add_argument("--threads", type=int, help="CPU threads for torch (default: all available cores)")
    run.add_argument("--log-every", type=int, default=50, help="steps per train_log.jsonl line")
    run.add_argument("--ckpt-every", type=int, default=500, help="steps between checkpoints")
    from .common import add_quiet_arg

    add_quiet_arg(run)
    p.set_defaults(run=run_train, _parser=p)
    return p


def _noise_spec(args) -> dict:
    kind = args.noise if args.noise != "auto" else ("loglinear" if args.graph == "absorbing" else "geometric")
    return {"type": "loglinear", "eps": 1e-3} if kind == "loglinear" else {"type": "geometric",
                                                                             "sigma_min": 1e-4, "sigma_max": 20.0}


def _bf16(args, device: str) -> bool:
    return {"bf16": True, "fp32": False}.get(args.precision, device.startswith("cuda"))


def _explicit(args, parser, name: str) -> bool:
    """True when the user set ``name`` to something other than its default."""
    return getattr(args, name) != parser.get_default(name)


def _data_task(args) -> tuple[str, str]:
    """The task whose data the flags name, and how they named it: --task NAME (data drawn fresh every step),
    --data NAME (a task's fixed data: text, digits) or --data FILE.npy (the task-free tokens)."""
    from ..tasks import TASKS

    if args.task:
        return args.task, f"--task {args.task}"
    cls = TASKS.get(args.data)
    if cls is not None and not cls.generates_data and "path" not in cls.data_options:
        return args.data, f"--data {args.data}"
    return "tokens", "--data FILE.npy"


def _source_from_args(args, parser):
    """The training data the flags ask for; ``UserError`` for a data flag the task does not take."""
    from ..tasks import task_class

    name, how = _data_task(args)
    cls = task_class(name)
    given = {k: getattr(args, k) for k in DATA_FLAGS if _explicit(args, parser, k)}
    extra = [DATA_FLAGS[k] for k in given if k not in cls.data_options]
    if extra:
        takes = [DATA_FLAGS[k] for k in cls.data_options if k in DATA_FLAGS]
        raise UserError(f"data options {', '.join(extra)} do not apply to {how} "
                        f"(it takes {', '.join(takes) if takes else 'none of them'})")
    if "path" in cls.data_options:
        given["path"] = args.data
    return cls.data(**given)


def _source_from_record(record: dict, out: Path):
    """The training data a run recorded (``DataSource.describe()``; its type names the task)."""
    from ..tasks import task_class

    return task_class(record["type"]).data_from_record(record, out)


def _configs_for_resume(args, parser, out: Path):
    from ..models.dit import DiTConfig
    from ..train import TrainConfig, read_checkpoint

    ckpt = read_checkpoint(out)
    model_cfg = DiTConfig.from_dict(ckpt["model_config"])
    for name in MODEL_FLAGS + ("graph",):
        if _explicit(args, parser, name) and getattr(args, name) != getattr(model_cfg, name):
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)} differs from the run being resumed "
                            f"({getattr(model_cfg, name)}); the model cannot change on --resume")
    saved = dict(ckpt["train_config"])
    flag_of = {"eps": "t_eps"}
    for f in fields(TrainConfig):
        flag = flag_of.get(f.name, f.name)
        if hasattr(args, flag) and _explicit(args, parser, flag):
            saved[f.name] = getattr(args, flag)
    from ..tasks import task_class

    # the data of the run, unless the flags name others (text keeps the run's: its tokenizer is the model's)
    from_record = task_class(ckpt["data"]["type"]).resume_from_record or not (args.task or args.data)
    source = _source_from_record(ckpt["data"], out) if from_record else _source_from_args(args, parser)
    return model_cfg, TrainConfig(**saved), source


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UserError(f"--out {out} is not empty; pass --resume to continue its run or --force to start afresh")
        for name in KNOWN_FILES:
            (out / name).unlink(missing_ok=True)


def run_train(args) -> int:
    from ..models.dit import DiTConfig
    from ..train import TrainConfig, train
    from .common import check_device, check_output

    parser = args._parser
    out = check_output(args.out, flag="--out", folder=True)
    device = check_device(args.device)
    # --precision as the bf16 switch of TrainConfig (None: not given, so --resume keeps the run's own)
    args.bf16 = {"bf16": True, "fp32": False}.get(args.precision)
    if args.resume and args.force:
        raise UserError("--resume and --force exclude each other")
    if args.resume:
        model_cfg, train_cfg, source = _configs_for_resume(args, parser, out)
    else:
        if not (args.task or args.data):
            raise UserError("say what to train on: --task countdown, --data FILE.npy or --data text --corpus DIR")
        source = _source_from_args(args, parser)  # validate the data before touching --out
        model_cfg = DiTConfig(num_tokens=source.num_tokens, graph=args.graph, noise=_noise_spec(args),
                              length=source.length, hidden_size=args.hidden_size, cond_dim=args.cond_dim,
                              n_blocks=args.n_blocks, n_heads=args.n_heads, dropout=args.dropout)
        train_cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                                decay_steps=args.decay_steps, weight_decay=args.weight_decay, ema=args.ema,
                                grad_clip=args.grad_clip, seed=args.seed, log_every=args.log_every,
                                ckpt_every=args.ckpt_every, device=device, bf16=_bf16(args, device), eps=args.t_eps,
                                threads=args.threads)
        _prepare_out(out, args.force)
    result = train(model_cfg, train_cfg, source, out, resume=args.resume, progress=not args.quiet)
    print(f"trained {result.step} steps in {result.seconds:.0f} s; last logged loss {result.final_loss:.4f}; "
          f"model {result.fingerprint} written to {out}")
    print(f"settings: {asdict(train_cfg)}")
    return 0
