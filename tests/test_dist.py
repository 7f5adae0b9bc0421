"""torch.distributed on the CPU (gloo): K = 2 processes give the same learned sampler and the same samples
as one process, through the real command line under torchrun."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lsdd import dist


def _run(args, cwd, nproc):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    if nproc == 1:
        cmd = [sys.executable, "-m", "lsdd", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "lsdd", *args]
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.parametrize("method,loss", [("lsd", "l2"), ("lsd+", "kl")])
def test_distill_two_processes_same_sampler(tmp_path, method, loss):
    # 40 trajectories in batches of 24 and chunks of 8: 3 + 2 chunks, so rank 1 owns fewer chunks than rank 0
    args = ["distill", "--model", "countdown", "--nfe", "4", "--teacher-nfe", "8", "--num-traj", "40",
            "--batch-size", "24", "--chunk", "8", "--epochs", "2", "--method", method, "--loss", loss, "--force",
            "--val-samples", "48"]
    _run([*args, "--out", "one.json"], tmp_path, 1)
    res = _run([*args, "--out", "two.json"], tmp_path, 2)
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    # the same learned coefficients and grid, to float tolerance: the network computes in float32 and two ranks
    # reduce its outputs in another order (3e-9 relative on the stop-34 machine, at the stop-33 code too)
    np.testing.assert_allclose(two["coeffs"], one["coeffs"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(two["times"], one["times"], rtol=1e-6, atol=0)
    assert one["coeffs"] != [1.0] * 4  # it learned something (--force writes it whatever validation says)
    # validation (on 10 held-out trajectories, sampled and scored on the ranks) gives the same figures
    for key, value in one["provenance"]["validation"].items():
        other = two["provenance"]["validation"][key]
        assert other == pytest.approx(value, rel=1e-6) if isinstance(value, float) else other == value
    # rank 0 alone writes and prints: one artifact, one summary line
    assert res.stdout.count("sampler with 4 NFE") == 1
    assert not list(tmp_path.glob("*.ckpt*"))


def test_sample_two_processes_same_samples(tmp_path):
    args = ["sample", "--model", "countdown", "--steps", "4", "--num-samples", "40", "--batch-size", "8",
            "--seed", "3"]
    _run([*args, "--out", "one.npy"], tmp_path, 1)
    _run([*args, "--out", "two.npy"], tmp_path, 2)
    one, two = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    assert one.shape == (40, 64)
    np.testing.assert_array_equal(two, one)


def test_single_process_helpers_are_identities():
    assert not dist.is_distributed() and dist.rank() == 0 and dist.world() == 1 and dist.is_main()
    assert dist.my_items(5) == [0, 1, 2, 3, 4]
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(dist.all_reduce_sum(t), t)
    assert dist.gather_items({0: "a"}, 1) == {0: "a"}


def test_bench_two_processes_same_rows(tmp_path):
    args = ["bench", "--model", "countdown", "--nfe", "4", "--teacher-nfe", "8", "--num-samples", "24",
            "--batch-size", "8", "--epochs", "1", "--bases", "euler", "--methods", "lsd", "--timing-repeats", "0"]
    _run([*args, "--json", "one.json"], tmp_path, 1)
    _run([*args, "--json", "two.json"], tmp_path, 2)
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    # every row (teacher, Euler, LSD) scores the same samples, and LSD learns the same coefficients
    assert [r["label"] for r in one["rows"]] == [r["label"] for r in two["rows"]] == ["teacher-euler", "uniform-euler",
                                                                                      "LSD-euler"]
    for a, b in zip(one["rows"], two["rows"]):
        assert a["metrics"] == b["metrics"] and a["nfe"] == b["nfe"]
    np.testing.assert_allclose(two["rows"][2]["sampler"]["coeffs"], one["rows"][2]["sampler"]["coeffs"], rtol=1e-9)
