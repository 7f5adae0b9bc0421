"""Train a score network with denoising score entropy (SEDD, Lou et al. 2024, eq. for DSE).

Per step: x0 from the data, t ~ U[eps, 1], x_t ~ exp(sigma_bar(t) Q) x0, and the loss
    sigma(t) * sum_i DSE_i(s_theta(x_t, sigma_bar(t)), x_t, x0)      averaged over the batch,
an upper bound on the negative log-likelihood in nats per sequence. AdamW with linear warm-up to a constant
learning rate, gradient clipping, an EMA of the weights (what ``model.safetensors`` holds), periodic atomic
checkpoints and bit-exact resumption. Every random draw comes from seeded generators saved in the checkpoint.

Output directory: config.json + model.safetensors (EMA weights), train_log.jsonl, checkpoint.pt.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from . import __version__, atomic
from .data.countdown import DEFAULT_VALUES, generate_countdown
from .errors import UserError
from .graphs import make_graph
from .models.checkpoint import save_model_dir
from .models.dit import DiTConfig, ScoreDiT
from .noise import noise_from_dict

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.jsonl"
CHECKPOINT_FORMAT = "lsdd-train-checkpoint"
# TrainConfig fields that may change when a run is resumed; all others must match the checkpoint
RESUMABLE_FIELDS = ("steps", "decay_steps", "log_every", "ckpt_every", "device", "threads")


@dataclass
class TrainConfig:
    """Optimisation settings. ``eps``: t is drawn from U[eps, 1]; ``ema``: EMA decay (warmed up as
    min(ema, (1 + step) / (10 + step))); ``warmup``: steps of linear lr warm-up, then constant;
    ``decay_steps``: the learning rate falls linearly to 0 over the last ``decay_steps`` steps (0: never);
    ``threads``: torch CPU threads (None: all cores this process may use)."""

    steps: int = 5000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 500
    decay_steps: int = 0
    weight_decay: float = 0.0
    ema: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 500
    device: str = "cpu"
    bf16: bool = False
    eps: float = 1e-3
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "ckpt_every"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.decay_steps <= self.steps:
            raise UserError(f"decay_steps must lie in [0, steps={self.steps}], got {self.decay_steps!r}")
        if self.warmup < 0 or self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise UserError(f"need lr > 0 and warmup, weight_decay, grad_clip >= 0; got lr={self.lr}, "
                            f"warmup={self.warmup}, weight_decay={self.weight_decay}, grad_clip={self.grad_clip}")
        if not 0.0 <= self.ema < 1.0 or not 0.0 < self.eps < 1.0:
            raise UserError(f"need 0 <= ema < 1 and 0 < eps < 1, got ema={self.ema}, eps={self.eps}")


class DataSource(Protocol):
    num_tokens: int
    length: int

    def batch(self, n: int, generator: torch.Generator) -> Tensor: ...  # (n, L) int64
    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CountdownSource:
    """Fresh countdown sequences every step (lsdd.data.countdown)."""

    length: int
    num_values: int = DEFAULT_VALUES

    @property
    def num_tokens(self) -> int:
        return self.num_values

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        return generate_countdown(n, self.length, self.num_values, generator=generator)

    def describe(self) -> dict[str, Any]:
        return {"type": "countdown", "length": self.length, "num_values": self.num_values}


@dataclass(frozen=True)
class TokenSource:
    """Batches drawn with replacement from a fixed (n, L) int64 tensor of token ids."""

    tokens: Tensor
    num_tokens: int
    path: str | None = None

    @property
    def length(self) -> int:
        return int(self.tokens.shape[1])

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        return self.tokens[torch.randint(0, self.tokens.shape[0], (n,), generator=generator)]

    def describe(self) -> dict[str, Any]:
        return {"type": "tokens", "path": self.path, "num_sequences": int(self.tokens.shape[0]),
                "length": self.length, "num_tokens": self.num_tokens}


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    final_loss: float  # mean loss over the last logging window
    seconds: float  # wall time of all legs of the run together
    fingerprint: str


def _as_source(data: Tensor | DataSource, model_cfg: DiTConfig) -> DataSource:
    source = TokenSource(data.long(), model_cfg.num_tokens) if isinstance(data, Tensor) else data
    if isinstance(source, TokenSource):
        x = source.tokens
        if x.ndim != 2 or x.numel() == 0 or int(x.min()) < 0 or int(x.max()) >= model_cfg.num_tokens:
            raise UserError(f"training tokens must be a non-empty (n, L) array with ids in [0, {model_cfg.num_tokens})")
    if source.num_tokens != model_cfg.num_tokens or source.length != model_cfg.length:
        raise UserError(f"data has {source.num_tokens} tokens and length {source.length}, but the model config "
                        f"says {model_cfg.num_tokens} and {model_cfg.length}")
    return source


def resolve_device(name: str) -> torch.device:
    """torch.device for ``name``; UserError when CUDA is asked for but absent."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device {name!r} ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested, but CUDA is not available on this machine; use --device cpu")
    return device


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up over ``cfg.warmup`` steps, constant,
    then a linear decay to 0 over the last ``cfg.decay_steps`` steps.

    The schedule up to ``steps - decay_steps`` does not depend on ``steps``, so a constant-rate run can be extended
    with ``--resume --steps S --decay-steps D`` and match an uninterrupted run with the same S and D.
    """
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    decay = min(1.0, (cfg.steps - step) / cfg.decay_steps) if cfg.decay_steps else 1.0
    return cfg.lr * warm * decay


def read_checkpoint(out_dir: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load ``out_dir/checkpoint.pt``; UserError if missing or not ours."""
    path = Path(out_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint to resume from")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not an lsdd training checkpoint")
    return ckpt


def _check_resume(ckpt: dict[str, Any], model_cfg: DiTConfig, train_cfg: TrainConfig, source: DataSource) -> None:
    if ckpt["model_config"] != model_cfg.to_dict():
        raise UserError(f"the checkpoint was trained with model config {ckpt['model_config']}, "
                        f"not {model_cfg.to_dict()}")
    new = asdict(train_cfg)
    bad = [f"{k}: {v!r} -> {new[k]!r}" for k, v in ckpt["train_config"].items()
           if k not in RESUMABLE_FIELDS and new.get(k) != v]
    if bad:
        raise UserError(f"cannot resume with changed training settings ({'; '.join(bad)}); only "
                        f"{list(RESUMABLE_FIELDS)} may change")
    if ckpt["data"] != source.describe():
        raise UserError(f"the checkpoint was trained on {ckpt['data']}, not {source.describe()}")


def _truncate_log(path: Path, step: int) -> None:
    """Keep only log lines up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        atomic.write_text(path, "".join(ln + "\n" for ln in lines))


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)


def _loss(model, graph, noise, source, cfg: TrainConfig, gen: torch.Generator, device) -> Tensor:
    """One batch of the DSE loss; all draws on the CPU generator so runs agree across devices."""
    x0 = source.batch(cfg.batch_size, gen)
    t = cfg.eps + (1.0 - cfg.eps) * torch.rand(cfg.batch_size, generator=gen)
    sigma = noise.total(t)
    x_t = graph.sample_transition(x0, sigma, gen)
    x0, x_t, t, sigma = x0.to(device), x_t.to(device), t.to(device), sigma.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        log_score = model(x_t, sigma)
    per_token = graph.score_entropy(log_score.float(), sigma, x_t, x0)  # (B, L)
    return (noise.rate(t)[:, None] * per_token).sum(-1).mean()


def train(model_cfg: DiTConfig, train_cfg: TrainConfig, data_source: Tensor | DataSource, out_dir: str | Path,
          resume: bool = False, progress: bool = True) -> TrainResult:
    """Train a ScoreDiT on ``data_source`` and write the model directory ``out_dir``.

    Args:
        model_cfg: network and forward process (graph, noise).
        train_cfg: optimisation settings.
        data_source: a (n, L) int64 tensor of token ids, or a DataSource (e.g. ``CountdownSource``).
        out_dir: output directory (config.json, model.safetensors, train_log.jsonl, checkpoint.pt).
        resume: continue from ``out_dir/checkpoint.pt`` up to ``train_cfg.steps``, bit for bit as if never stopped.
        progress: show a tqdm bar with the running loss.
    """
    source = _as_source(data_source, model_cfg)
    device = resolve_device(train_cfg.device)
    out_dir = Path(out_dir)
    if not resume and ((out_dir / CHECKPOINT_FILE).exists() or (out_dir / LOG_FILE).exists()):
        raise UserError(f"{out_dir} already holds a training run; resume it or choose another directory")
    old_threads = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(train_cfg.threads or cores)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(train_cfg.seed)  # parameter init and dropout; restored afterwards by fork_rng
            trainer = _Trainer(model_cfg, train_cfg, source, device)
            if resume:
                ckpt = read_checkpoint(out_dir, device)
                _check_resume(ckpt, model_cfg, train_cfg, source)
                trainer.restore(ckpt)
                _truncate_log(out_dir / LOG_FILE, trainer.step)
            return _loop(trainer, out_dir, progress)
    finally:
        torch.set_num_threads(old_threads)


def _loop(tr: "_Trainer", out_dir: Path, progress: bool) -> TrainResult:
    from tqdm import tqdm

    cfg = tr.cfg
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=cfg.steps, initial=tr.step, disable=not progress, mininterval=1.0, dynamic_ncols=True)
    t_start = time.perf_counter() - tr.seconds
    fp = ""
    while tr.step < cfg.steps:
        tr.train_step()
        tr.seconds = time.perf_counter() - t_start
        bar.update(1)
        if tr.step % cfg.log_every == 0 or tr.step == cfg.steps:
            tr.log(out_dir / LOG_FILE)
            bar.set_postfix(loss=f"{tr.last_loss:.3f}")
        if tr.step % cfg.ckpt_every == 0 or tr.step == cfg.steps:
            fp = tr.save(out_dir)
    bar.close()
    if not fp:  # resumed at or past the requested number of steps: nothing to train, rewrite the same files
        fp = tr.save(out_dir)
    return TrainResult(out_dir=out_dir, step=tr.step, final_loss=tr.last_loss, seconds=tr.seconds, fingerprint=fp)


class _Trainer:
    """The mutable state of a run: network, EMA copy, optimiser, generator, counters and the loss window."""

    def __init__(self, model_cfg: DiTConfig, cfg: TrainConfig, source: DataSource, device: torch.device):
        self.model_cfg, self.cfg, self.source, self.device = model_cfg, cfg, source, device
        self.graph = make_graph(model_cfg.graph, model_cfg.num_tokens)
        self.noise = noise_from_dict(model_cfg.noise)
        self.model = ScoreDiT(model_cfg).to(device).train()
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # data, t and x_t draws
        self.step, self.seconds, self.window, self.last_loss = 0, 0.0, [0.0, 0], math.nan

    def train_step(self) -> None:
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = lr_at(cfg, self.step)
        loss = _loss(self.model, self.graph, self.noise, self.source, cfg, self.gen, self.device)
        if not torch.isfinite(loss):
            raise UserError(f"the loss became {loss.item()} at step {self.step + 1}; try a lower --lr or --no-bf16")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        _ema_update(self.ema, self.model, min(cfg.ema, (1 + self.step) / (10 + self.step)))
        self.step += 1
        self.window = [self.window[0] + loss.item(), self.window[1] + 1]

    def log(self, path: Path) -> None:
        """Append the mean loss since the last line to the training log."""
        self.last_loss = self.window[0] / self.window[1]
        record = {"step": self.step, "loss": round(self.last_loss, 5), "lr": lr_at(self.cfg, self.step - 1),
                  "seconds": round(self.seconds, 2)}
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.window = [0.0, 0]

    def state(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "version": 1, "step": self.step, "seconds": self.seconds,
                "window": self.window, "last_loss": self.last_loss, "model_config": self.model_cfg.to_dict(),
                "train_config": asdict(self.cfg), "data": self.source.describe(), "model": self.model.state_dict(),
                "ema": self.ema.state_dict(), "optimizer": self.opt.state_dict(), "generator": self.gen.get_state(),
                "torch_rng": torch.get_rng_state()}

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.gen.set_state(ckpt["generator"].cpu())
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        self.step, self.seconds, self.window = ckpt["step"], ckpt["seconds"], list(ckpt["window"])
        self.last_loss = ckpt["last_loss"]

    def save(self, out_dir: Path) -> str:
        """Write checkpoint.pt, then the model directory with the EMA weights; returns the fingerprint."""
        with atomic.atomic_path(out_dir / CHECKPOINT_FILE) as tmp:
            torch.save(self.state(), tmp)
        loss = None if math.isnan(self.last_loss) else self.last_loss
        extra = {"training": {"steps": self.step, "seconds": round(self.seconds, 1), "last_logged_loss": loss,
                              "train_config": asdict(self.cfg), "data": self.source.describe(),
                              "lsdd_version": __version__, "weights": "EMA"}}
        tokenizer = getattr(self.source, "tokenizer", None)
        if tokenizer is not None:  # text models carry their tokenizer (written before config.json names it)
            tokenizer.save(out_dir)
            extra["tokenizer"] = tokenizer.describe()
        return save_model_dir(out_dir, self.ema, self.model_cfg, extra)


__all__ = ["TrainConfig", "TrainResult", "CountdownSource", "TokenSource", "DataSource", "train",
           "read_checkpoint", "resolve_device", "lr_at", "CHECKPOINT_FILE", "LOG_FILE"]
