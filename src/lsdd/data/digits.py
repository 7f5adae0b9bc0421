"""Digit images as token sequences: scikit-learn's bundled 8x8 digits, and a reader for a folder of PNGs.

The digits (``sklearn.datasets.load_digits``, 1,797 images, offline) have 17 grey levels 0..16 (0 background,
16 ink); an image becomes 64 tokens in raster order (row by row, left to right). The train/test split is
fixed and stratified: within each class the images are ordered by a permutation from a seeded
``torch.Generator`` and the first ``round(test_fraction * n_class)`` go to the test split.
``split_record()`` records it (seed, fraction, sizes, sha256 of the test indices).

Shapes: n images, L = size * size tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError

DIGITS_LEVELS = 17  # grey levels 0..16
DIGITS_SIZE = 8
DIGITS_LENGTH = DIGITS_SIZE * DIGITS_SIZE
SPLIT_SEED = 0
TEST_FRACTION = 0.2
SPLITS = ("train", "test", "all")


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency of the images extra
        raise UserError("the digits data need scikit-learn (pip install 'lsdd[images]')") from None
    data = load_digits()
    tokens = np.asarray(data.images, dtype=np.int64).reshape(-1, DIGITS_LENGTH)
    return tokens, np.asarray(data.target, dtype=np.int64)


def split_indices(seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION) -> tuple[Tensor, Tensor]:
    """(train indices, test indices) into the 1,797 digits, each sorted; stratified by class."""
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    _, labels = _load()
    labels_t = torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(int(seed))
    train, test = [], []
    for c in range(10):
        idx = torch.nonzero(labels_t == c)[:, 0]
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_test = int(round(test_fraction * idx.numel()))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def load_digits_tokens(split: str = "train", seed: int = SPLIT_SEED,
                       test_fraction: float = TEST_FRACTION) -> tuple[Tensor, Tensor]:
    """The digits of ``split`` ("train", "test" or "all"): tokens (n, 64) int64 in 0..16, labels (n,) int64."""
    if split not in SPLITS:
        raise UserError(f"unknown digits split {split!r}; expected one of {list(SPLITS)}")
    tokens, labels = _load()
    if split == "all":
        return torch.from_numpy(tokens.copy()), torch.from_numpy(labels.copy())
    train, test = split_indices(seed, test_fraction)
    idx = (train if split == "train" else test).numpy()
    return torch.from_numpy(tokens[idx]), torch.from_numpy(labels[idx])


def split_record(seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION) -> dict[str, Any]:
    """What identifies the split: seed, fraction, sizes and the sha256 of the test indices (as int64 bytes)."""
    train, test = split_indices(seed, test_fraction)
    digest = hashlib.sha256(test.numpy().astype("<i8").tobytes()).hexdigest()
    return {"seed": int(seed), "test_fraction": float(test_fraction), "train": int(train.numel()),
            "test": int(test.numel()), "test_indices_sha256": digest}


@dataclass(frozen=True, eq=False)
class DigitsSource:
    """Training batches drawn with replacement from the digits' train split (a ``train.DataSource``)."""

    split: str = "train"
    seed: int = SPLIT_SEED
    test_fraction: float = TEST_FRACTION

    def __post_init__(self) -> None:
        tokens, _ = load_digits_tokens(self.split, self.seed, self.test_fraction)
        object.__setattr__(self, "tokens", tokens)

    @property
    def num_tokens(self) -> int:
        return DIGITS_LEVELS

    @property
    def length(self) -> int:
        return DIGITS_LENGTH

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        return self.tokens[torch.randint(0, self.tokens.shape[0], (n,), generator=generator)]

    def describe(self) -> dict[str, Any]:
        return {"type": "digits", "split": self.split, "num_sequences": int(self.tokens.shape[0]),
                "length": DIGITS_LENGTH, "num_tokens": DIGITS_LEVELS,
                **{k: v for k, v in split_record(self.seed, self.test_fraction).items()}}


IMAGE_SUFFIXES = (".png",)


def quantise(grey: np.ndarray, levels: int) -> np.ndarray:
    """8-bit grey values (any shape, 0..255) -> levels 0..levels-1 by rounding v (levels - 1) / 255."""
    return np.rint(grey.astype(np.float64) * (levels - 1) / 255.0).astype(np.int64)


def read_image_folder(folder: str | Path, size: int = DIGITS_SIZE, levels: int = DIGITS_LEVELS, *,
                      invert: bool = False) -> tuple[Tensor, list[str]]:
    """Read every ``*.png`` in ``folder`` (sorted by name) as a grey image resized to ``size`` x ``size``
    (box filter: the mean of the covered pixels) and quantised to ``levels`` grey levels; ``invert`` maps
    dark ink on white paper to the digits' convention (0 = background). Returns tokens (n, size * size) int64 in raster order and the file names.

    UserError: missing folder, no PNG files, an unreadable file, size < 1 or levels outside [2, 256].
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover
        raise UserError("reading images needs Pillow (pip install pillow)") from None
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise UserError(f"image size must be a positive integer, got {size!r}")
    if isinstance(levels, bool) or int(levels) != levels or not 2 <= levels <= 256:
        raise UserError(f"number of grey levels must be an integer in [2, 256], got {levels!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder not found: {str(folder)!r}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no .png files in {str(folder)!r}")
    rows = []
    for path in files:
        try:
            with Image.open(path) as img:
                grey = img.convert("L").resize((int(size), int(size)), Image.Resampling.BOX)
                arr = np.asarray(grey, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise UserError(f"cannot read image {str(path)!r}: {e}") from None
        if invert:
            arr = 255 - arr
        rows.append(quantise(arr, int(levels)).reshape(-1))
    return torch.from_numpy(np.stack(rows)), [p.name for p in files]


__all__ = ["DIGITS_LEVELS", "DIGITS_SIZE", "DIGITS_LENGTH", "SPLIT_SEED", "TEST_FRACTION", "split_indices",
           "load_digits_tokens", "split_record", "DigitsSource", "quantise", "read_image_folder"]
