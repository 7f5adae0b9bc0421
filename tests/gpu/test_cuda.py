"""Checks that need CUDA (marked ``gpu``; skipped without it): draws on the GPU with a GPU generator, the
factorised law on the GPU equal to the CPU's, bf16 scores out in float32, distill/sample/train on cuda."""

import numpy as np
import pytest
import torch

from lsdd.cli import main
from lsdd.sampling.draws import make_generator
from lsdd.graphs import Absorbing
from lsdd.models import load_model
from lsdd.noise import LogLinear
from lsdd.sampling.samplers import sample
from lsdd.sampling.schedules import uniform_times
from lsdd.sampling.steps import get_rule

pytestmark = pytest.mark.gpu


def test_law_on_gpu_equals_cpu():
    graph, noise = Absorbing(50), LogLinear(1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 51, (4, 32), generator=g)
    score = torch.rand(4, 32, 51, generator=g).scatter(-1, x[..., None], 1.0)
    t, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    for mode in ("linear", "log"):
        cpu = get_rule("euler")(graph, noise, x, score, t, s, 0.8, mode, False, None).dense()
        gpu = get_rule("euler")(graph, noise, x.cuda(), score.cuda(), t, s, 0.8, mode, False, None).dense()
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-6, atol=1e-9)


def test_sample_on_gpu_is_seeded_and_counted():
    model = load_model("countdown", "cuda").configure("bf16")
    out = [sample(model.score_fn, model.graph, model.noise, uniform_times(8), (16, 64),
                  generator=make_generator(s, "cuda"), device="cuda") for s in (0, 0, 1)]
    assert out[0].x.is_cuda and out[0].nfe == 8
    assert torch.equal(out[0].x, out[1].x) and not torch.equal(out[0].x, out[2].x)
    assert (out[0].x < model.graph.num_tokens).all()
    # bf16 autocast inside the network, float32 scores out
    sc = model.score_fn(out[0].x, torch.full((16,), 0.5, device="cuda"))
    assert sc.dtype == torch.float32 and sc.is_cuda


def test_cli_on_cuda(tmp_path):
    assert main(["sample", "--model", "countdown", "--device", "cuda", "--steps", "8", "--num", "32",
                 "--out", str(tmp_path / "x.npy")]) == 0
    assert np.load(tmp_path / "x.npy").shape == (32, 64)
    assert main(["distill", "--model", "countdown", "--device", "cuda", "--nfe", "4", "--teacher-nfe", "16",
                 "--num-traj", "32", "--batch-size", "16", "--epochs", "1", "--out", str(tmp_path / "s.json")]) == 0
    assert main(["train", "--task", "countdown", "--device", "cuda", "--steps", "5", "--warmup", "1",
                 "--hidden-size", "32", "--cond-dim", "32", "--n-blocks", "1", "--n-heads", "2", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
