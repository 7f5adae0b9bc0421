import json

import numpy as np
import pytest

from lsdd.cli import main
from lsdd.data.countdown import generate_countdown


@pytest.fixture
def samples_path(tmp_path):
    import torch

    path = tmp_path / "samples.npy"
    np.save(path, generate_countdown(20, 32, generator=torch.Generator().manual_seed(0)).numpy())
    return path


def test_eval_writes_json(samples_path, tmp_path, capsys):
    out = tmp_path / "out" / "metrics.json"
    assert main(["eval", "--task", "countdown", str(samples_path), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["task"] == "countdown" and record["num_samples"] == 20
    assert record["source"] == str(samples_path)
    # clean data: no violations
    assert record["metrics"]["violation_rate"] == 0.0 and record["metrics"]["jys_error"] == 0.0
    # the table names every metric
    printed = capsys.readouterr().out
    assert all(name in printed for name in record["metrics"])


def test_eval_nan_becomes_null(tmp_path):
    path, out = tmp_path / "masks.npy", tmp_path / "m.json"
    np.save(path, np.full((3, 5), 32, dtype=np.int32))  # all mask: nothing valid, no in-range start
    assert main(["eval", "--task", "countdown", str(path), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["nll_valid"] is None and metrics["any_violation"] == 1.0


def _bad_inputs(tmp_path, samples_path):
    np.save(tmp_path / "float.npy", np.zeros((3, 4)))
    np.save(tmp_path / "flat.npy", np.zeros(4, dtype=np.int64))
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), dtype=np.int64))
    (tmp_path / "garbage.npy").write_bytes(b"not an array")
    (tmp_path / "samples.txt").write_text("1 0\n")
    return {
        "missing": ["--task", "countdown", str(tmp_path / "missing.npy")],
        "not_npy": ["--task", "countdown", str(tmp_path / "samples.txt")],
        "float": ["--task", "countdown", str(tmp_path / "float.npy")],
        "ndim": ["--task", "countdown", str(tmp_path / "flat.npy")],
        "empty": ["--task", "countdown", str(tmp_path / "empty.npy")],
        "garbage": ["--task", "countdown", str(tmp_path / "garbage.npy")],
        "task": ["--task", "nope", str(samples_path)],
        "num_values": ["--task", "countdown", "--num-values", "0", str(samples_path)],
    }


@pytest.mark.parametrize("case", ["missing", "not_npy", "float", "ndim", "empty", "garbage", "task", "num_values"])
def test_eval_bad_input_exits_2_and_writes_nothing(case, tmp_path, samples_path, capsys):
    out = tmp_path / "out.json"
    args = _bad_inputs(tmp_path, samples_path)[case]
    assert main(["eval", *args, "--json", str(out)]) == 2
    assert not out.exists()
    # one-line error, no traceback
    err = capsys.readouterr().err.strip()
    assert err.startswith("lsdd eval: error:") and "\n" not in err


def test_eval_help_exits_0(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--help"])
    assert e.value.code == 0
    assert "example" in capsys.readouterr().out
