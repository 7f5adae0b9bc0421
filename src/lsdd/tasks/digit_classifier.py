"""A small CNN classifier of the 8x8 digits, whose penultimate layer is the feature space of the digits task
(Fréchet distance, nearest-neighbour precision/recall) and whose labels measure class balance.

Trained on the digits' train split only (``lsdd.data.digits``); its test-split accuracy is recorded beside
the weights. ``lsdd train-evaluator --task digits --out DIR`` trains one; the bundled ``digits-cnn``
(``lsdd/bundled/evaluators/digits-cnn``) was made that way.

Input: tokens (B, 64) int64 grey levels 0..16 in raster order, or images (B, 1, 8, 8) float in [0, 1].
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError

BUNDLED_CLASSIFIER = "digits-cnn"
CLASSIFIER_FORMAT = "lsdd-digit-classifier"
LEVELS = 17


@dataclass
class ClassifierConfig:
    """Network width and optimisation of ``train_digit_classifier``."""

    channels: int = 16
    features: int = 64
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


def tokens_to_images(x: Tensor, levels: int = LEVELS) -> Tensor:
    """(B, 64) int64 grey levels -> (B, 1, 8, 8) float32 in [0, 1]."""
    side = int(round(math.sqrt(x.shape[-1])))
    return (x.float() / (levels - 1)).reshape(-1, 1, side, side)


class DigitClassifier(nn.Module):
    """conv3x3(1 -> c) - ReLU - conv3x3(c -> 2c) - ReLU - maxpool2 - linear(2c * 16 -> d) - ReLU [features]
    - linear(d -> 10) [logits]."""

    def __init__(self, channels: int = 16, features: int = 64):
        super().__init__()
        self.channels, self.num_features = int(channels), int(features)
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.fc = nn.Linear(2 * channels * 16, features)
        self.head = nn.Linear(features, 10)

    def features(self, images: Tensor) -> Tensor:
        """(B, 1, 8, 8) float -> (B, d) penultimate features (after the ReLU)."""
        h = F.relu(self.conv2(F.relu(self.conv1(images))))
        h = F.max_pool2d(h, 2).flatten(1)
        return F.relu(self.fc(h))

    def forward(self, images: Tensor) -> Tensor:
        """(B, 1, 8, 8) float -> (B, 10) logits."""
        return self.head(self.features(images))


class FeatureExtractor(nn.Module):
    """The classifier's feature layer as torchmetrics' custom FID feature extractor: images (B, 1, 8, 8) float
    -> (B, d) features; ``num_features`` tells torchmetrics d."""

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            return self.classifier.features(images.float())


@torch.no_grad()
def accuracy(model: DigitClassifier, x: Tensor, y: Tensor) -> float:
    model.eval()
    return float((model(tokens_to_images(x)).argmax(-1) == y).double().mean())


def train_digit_classifier(cfg: ClassifierConfig, out_dir: str | Path | None = None,
                           provenance: dict[str, Any] | None = None) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train on the digits' train split (AdamW, cross-entropy, batches with replacement from a seeded
    generator) and report train and test accuracy; with ``out_dir`` write model.safetensors and config.json."""
    from ..data.digits import load_digits_tokens, split_record

    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise UserError(f"need steps, batch_size >= 1 and lr > 0, got {cfg.steps}, {cfg.batch_size}, {cfg.lr}")
    x_train, y_train = load_digits_tokens("train")
    x_test, y_test = load_digits_tokens("test")
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = DigitClassifier(cfg.channels, cfg.features)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    t0 = time.perf_counter()
    model.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:  # cosine decay to 0
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        idx = torch.randint(0, x_train.shape[0], (cfg.batch_size,), generator=gen)
        loss = F.cross_entropy(model(tokens_to_images(x_train[idx])), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    info = {"format": CLASSIFIER_FORMAT, "config": asdict(cfg), "parameters": sum(p.numel() for p in model.parameters()),
            "train_accuracy": accuracy(model, x_train, y_train), "test_accuracy": accuracy(model, x_test, y_test),
            "split": split_record(), "seconds": round(time.perf_counter() - t0, 1), **(provenance or {})}
    if out_dir is not None:
        save_classifier(model, info, out_dir)
    return model, info


def save_classifier(model: DigitClassifier, info: dict[str, Any], out_dir: str | Path) -> None:
    from safetensors.torch import save_file

    from .. import atomic

    out = Path(out_dir)
    with atomic.atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    atomic.write_text(out / "config.json", json.dumps(info, indent=2) + "\n")


def classifier_dir(name_or_path: str | Path | None) -> Path:
    """The directory of a classifier: the bundled ``digits-cnn`` (None or that name) or a path."""
    from ..models import BUNDLED_DIR

    if name_or_path is None or str(name_or_path) == BUNDLED_CLASSIFIER:
        return BUNDLED_DIR / "evaluators" / BUNDLED_CLASSIFIER
    return Path(name_or_path)


def load_digit_classifier(name_or_path: str | Path | None = None) -> tuple[DigitClassifier, dict[str, Any]]:
    """Load a classifier written by ``train_digit_classifier`` (default: the bundled one), in eval mode."""
    from safetensors.torch import load_file

    path = classifier_dir(name_or_path)
    cfg_path, weights = path / "config.json", path / "model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise UserError(f"no digit classifier in {str(path)!r} (expected config.json and model.safetensors)")
    try:
        info = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_path}: not JSON ({e})") from None
    if info.get("format") != CLASSIFIER_FORMAT:
        raise UserError(f"{cfg_path}: not an lsdd digit classifier")
    cfg = info["config"]
    model = DigitClassifier(cfg["channels"], cfg["features"])
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as e:
        raise UserError(f"{weights}: weights do not match the config ({e})") from None
    return model.eval().requires_grad_(False), info


__all__ = ["ClassifierConfig", "DigitClassifier", "FeatureExtractor", "tokens_to_images", "accuracy",
           "train_digit_classifier", "save_classifier", "load_digit_classifier", "classifier_dir",
           "BUNDLED_CLASSIFIER"]
