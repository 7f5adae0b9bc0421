import json
import math

import numpy as np
import pytest
import torch

from lsdd.cli import main
from lsdd.data.countdown import generate_countdown
from lsdd.tasks import get_task


@pytest.fixture
def samples_path(tmp_path):
    path = tmp_path / "samples.npy"
    np.save(path, generate_countdown(20, 32, generator=torch.Generator().manual_seed(0)).numpy())
    return path


def test_eval_writes_json(samples_path, tmp_path, capsys):
    out = tmp_path / "out" / "metrics.json"
    assert main(["eval", "--task", "countdown", str(samples_path), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["task"] == "countdown" and record["num_samples"] == 20 and record["length"] == 32
    assert record["source"] == str(samples_path) and record["options"] == {"num_values": 32}
    # the file holds exactly what the library computes on the same array, in the task's order
    expected = get_task("countdown").compute(torch.from_numpy(np.load(samples_path)))
    assert list(record["metrics"]) == list(expected) and record["metrics"] == expected
    # clean data: no violations, every sample valid
    assert record["metrics"]["violation_rate"] == 0.0 and record["metrics"]["jys_error"] == 0.0
    assert record["metrics"]["valid_fraction"] == 1.0
    # the table prints every metric with its value (6 significant digits) and direction
    printed = capsys.readouterr().out
    assert "task countdown: 20 samples of length 32" in printed
    lines = printed.splitlines()
    for name, value in expected.items():
        row = next(ln for ln in lines if ln.startswith(name + " "))
        assert f"{value:.6g}" in row.split(), (name, row)
    assert "lower is better" in next(ln for ln in lines if ln.startswith("violation_rate "))
    assert "higher is better" in next(ln for ln in lines if ln.startswith("valid_fraction "))


def test_eval_nan_becomes_null(tmp_path):
    path, out = tmp_path / "masks.npy", tmp_path / "m.json"
    np.save(path, np.full((3, 5), 32, dtype=np.int32))  # all mask: nothing valid, no in-range start
    assert main(["eval", "--task", "countdown", str(path), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    # every transition and every token is wrong; the undefined metrics (no valid sample, no start) are null
    assert metrics == {"violation_rate": 1.0, "any_violation": 1.0, "jys_error": 1.0, "valid_fraction": 0.0,
                       "nll_valid": None, "start_tv": None, "start_tv_ref": None, "start_entropy": None}


def test_eval_num_values_changes_the_verdict(tmp_path):
    # [3, 2, 1, 0, 5, 4]: valid with 32 values, but 5 and 4 are out of range with --num-values 4
    path = tmp_path / "s.npy"
    np.save(path, np.array([[3, 2, 1, 0, 5, 4]], dtype=np.int64))
    results = {}
    for nv in ("32", "4"):
        out = tmp_path / f"m{nv}.json"
        assert main(["eval", "--task", "countdown", "--num-values", nv, str(path), "--json", str(out)]) == 0
        results[nv] = json.loads(out.read_text())["metrics"]
    assert results["32"]["any_violation"] == 0.0
    assert results["32"]["nll_valid"] == pytest.approx(2 * math.log(32) / 6)
    # with 4 values: 0->5, 5->4 touch out-of-range tokens: 2 of 5 transitions
    assert results["4"]["any_violation"] == 1.0 and results["4"]["violation_rate"] == pytest.approx(2 / 5)


def _bad_inputs(tmp_path, samples_path):
    np.save(tmp_path / "float.npy", np.zeros((3, 4)))
    np.save(tmp_path / "flat.npy", np.zeros(4, dtype=np.int64))
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), dtype=np.int64))
    (tmp_path / "garbage.npy").write_bytes(b"not an array")
    (tmp_path / "samples.txt").write_text("1 0\n")
    return {
        "missing": (["--task", "countdown", str(tmp_path / "missing.npy")], "samples file not found"),
        "not_npy": (["--task", "countdown", str(tmp_path / "samples.txt")], "samples file must be a .npy array"),
        "float": (["--task", "countdown", str(tmp_path / "float.npy")],
                  "must be integer token ids, got dtype float64"),
        "ndim": (["--task", "countdown", str(tmp_path / "flat.npy")],
                 "must have shape (num_samples, length), got shape (4,)"),
        "empty": (["--task", "countdown", str(tmp_path / "empty.npy")], "are empty (shape (0, 4))"),
        "garbage": (["--task", "countdown", str(tmp_path / "garbage.npy")], "as a .npy array"),
        "task": (["--task", "nope", str(samples_path)], "unknown task 'nope'; valid tasks: countdown"),
        "num_values": (["--task", "countdown", "--num-values", "0", str(samples_path)],
                       "num_values must be a positive integer, got 0"),
    }


@pytest.mark.parametrize("case", ["missing", "not_npy", "float", "ndim", "empty", "garbage", "task", "num_values"])
def test_eval_bad_input_exits_2_and_writes_nothing(case, tmp_path, samples_path, capsys):
    out = tmp_path / "out.json"
    args, message = _bad_inputs(tmp_path, samples_path)[case]
    assert main(["eval", *args, "--json", str(out)]) == 2
    assert not out.exists()
    # one-line error naming the problem, no traceback, nothing on stdout
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("lsdd eval: error:") and "\n" not in err and message in err, err
    assert captured.out == ""


def test_eval_json_directory_is_refused(samples_path, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    assert main(["eval", "--task", "countdown", str(samples_path), "--json", str(folder)]) == 2
    assert "--json must be a file path" in capsys.readouterr().err and list(folder.iterdir()) == []


def test_eval_help_exits_0(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and "--num-values" in out and "--json" in out and "start_tv_ref" in out


def test_eval_markov_uses_the_tasks_own_vocabulary(tmp_path, capsys):
    # without --num-values the markov task keeps its 24-token chain (a countdown default of 32 would build
    # another chain and call almost every transition invalid)
    from lsdd.data.markov import generate_markov, markov_chain

    x = generate_markov(50, 20, markov_chain(24, 3, 0), torch.Generator().manual_seed(0))
    path = tmp_path / "m.npy"
    np.save(path, x.numpy())
    assert main(["eval", "--task", "markov", str(path), "--json", str(tmp_path / "m.json")]) == 0
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["options"] == {"num_values": 24} and record["metrics"]["invalid_rate"] == 0.0
