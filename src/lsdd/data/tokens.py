"""User token files: a .npy integer array of shape (num_sequences, length) with ids in [0, vocabulary)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    row, col = np.argwhere(mask)[0]
    return int(row), int(col)


def load_token_file(path: str | Path, num_tokens: int | None = None) -> tuple[Tensor, int]:
    """Read and validate a token file.

    Args:
        path: a ``.npy`` file holding a 2-D integer array (sequences, length).
        num_tokens: vocabulary size N; every id must lie in [0, N). ``None`` infers N = max id + 1.

    Returns:
        (tokens (n, L) int64, N).

    Raises:
        UserError: naming the file and the bad value (missing file, not .npy, wrong ndim or dtype, empty,
            negative or out-of-vocabulary ids).
    """
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise UserError(f"{name}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/OSError/EOFError/UnpicklingError for non-npy bytes
        raise UserError(f"{name}: not a readable .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        raise UserError(f"{name}: expected a single array saved with numpy.save, got {type(arr).__name__}")
    if arr.ndim != 2:
        raise UserError(f"{name}: expected a 2-D array (sequences, length) of token ids, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise UserError(f"{name}: token ids must be integers, got dtype {arr.dtype}")
    if arr.size == 0:
        raise UserError(f"{name}: the array is empty (shape {arr.shape})")
    if num_tokens is not None and (isinstance(num_tokens, bool) or int(num_tokens) != num_tokens or num_tokens < 1):
        raise UserError(f"vocabulary size must be a positive integer, got {num_tokens!r}")
    if arr.dtype.kind == "i" and arr.min() < 0:
        row, col = _first_bad(arr < 0)
        raise UserError(f"{name}: token id {arr[row, col]} at row {row}, position {col} is negative")
    top = int(arr.max())
    if top >= 2**31:
        row, col = _first_bad(arr == arr.max())
        raise UserError(f"{name}: token id {top} at row {row}, position {col} is too large to be a vocabulary index")
    if num_tokens is None:
        num_tokens = top + 1
    elif top >= num_tokens:
        row, col = _first_bad(arr >= num_tokens)
        raise UserError(f"{name}: token id {arr[row, col]} at row {row}, position {col} is out of range for a "
                        f"vocabulary of {num_tokens}")
    return torch.from_numpy(arr.astype(np.int64)), int(num_tokens)


__all__ = ["load_token_file"]
