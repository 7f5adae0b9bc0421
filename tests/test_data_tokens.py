"""load_token_file: .npy token arrays and the errors a user sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lsdd.data.tokens import load_token_file
from lsdd.errors import UserError


def write(tmp_path, arr, name="data.npy"):
    path = tmp_path / name
    np.save(path, arr)
    return path


def test_loads_and_infers_vocabulary(tmp_path):
    arr = np.array([[0, 1, 2], [3, 2, 1]], dtype=np.int16)
    tokens, vocab = load_token_file(write(tmp_path, arr), None)
    # int64 tensor with the same ids; vocabulary = largest id + 1
    assert tokens.dtype == torch.int64 and tokens.tolist() == arr.tolist() and vocab == 4


def test_explicit_vocabulary(tmp_path):
    arr = np.array([[0, 5, 3], [2, 2, 1]], dtype=np.uint8)
    tokens, vocab = load_token_file(write(tmp_path, arr), 32)
    # the given size wins over the inferred one (6), and the ids come back unchanged as int64
    assert vocab == 32 and tokens.dtype == torch.int64 and tokens.tolist() == arr.tolist()
    # a vocabulary of exactly max id + 1 is accepted
    assert load_token_file(write(tmp_path, arr), 6)[1] == 6


def test_out_of_range_names_file_value_and_row(tmp_path):
    arr = np.zeros((5, 4), dtype=np.int64)
    arr[3, 2] = 40
    path = write(tmp_path, arr)
    with pytest.raises(UserError, match=r"data.npy: token id 40 at row 3, position 2 is out of range for a "
                                        r"vocabulary of 32"):
        load_token_file(path, 32)


def test_negative_id(tmp_path):
    arr = np.zeros((2, 4), dtype=np.int32)
    arr[1, 0] = -1
    with pytest.raises(UserError, match="token id -1 at row 1, position 0 is negative"):
        load_token_file(write(tmp_path, arr), None)


@pytest.mark.parametrize("arr, message", [
    (np.zeros(5, dtype=np.int64), r"2-D array .* shape \(5,\)"),
    (np.zeros((2, 3, 4), dtype=np.int64), r"2-D array .* shape \(2, 3, 4\)"),
    (np.zeros((2, 3), dtype=np.float32), "must be integers, got dtype float32"),
    (np.zeros((0, 3), dtype=np.int64), "empty"),
])
def test_bad_arrays(tmp_path, arr, message):
    with pytest.raises(UserError, match=message):
        load_token_file(write(tmp_path, arr), None)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(UserError, match="nope.npy: no such file"):
        load_token_file(tmp_path / "nope.npy", None)
    (tmp_path / "junk.npy").write_bytes(b"hello, not numpy")
    with pytest.raises(UserError, match="junk.npy: not a readable .npy"):
        load_token_file(tmp_path / "junk.npy", None)


@pytest.mark.parametrize("vocab", [0, -3, 2.5, True])
def test_bad_vocabulary_argument(tmp_path, vocab):
    with pytest.raises(UserError, match=rf"^vocabulary size must be a positive integer, got {vocab!r}$"):
        load_token_file(write(tmp_path, np.zeros((2, 2), dtype=np.int64)), vocab)


def test_huge_id_is_refused(tmp_path):
    arr = np.zeros((2, 3), dtype=np.int64)
    arr[1, 2] = 2**40
    with pytest.raises(UserError, match=rf"token id {2**40} at row 1, position 2 is too large"):
        load_token_file(write(tmp_path, arr), None)
