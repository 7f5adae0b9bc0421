"""A transformers masked LM on CUDA (marked ``gpu``; skipped without it): loaded on the GPU, scores in float32
under bf16 autocast close to the CPU's, and `lsdd sample --device cuda` with it."""

import numpy as np
import pytest
import torch

from lsdd.cli import main
from lsdd.models import load_model

pytestmark = pytest.mark.gpu
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]
    d = tmp_path_factory.mktemp("bert") / "bert"
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32, pad_token_id=0)
    transformers.BertForMaskedLM(cfg).save_pretrained(d)
    transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(d)
    return d


def test_masked_lm_on_cuda_matches_cpu(bert):
    cpu = load_model(str(bert))
    gpu = load_model(str(bert), device="cuda").configure("bf16")
    assert gpu.device.type == "cuda" and next(gpu.module.parameters()).is_cuda
    x = torch.full((2, 16), cpu.graph.mask_id)
    x[1, ::3] = 5
    sigma = torch.tensor([0.3, 2.0])
    ours = gpu.score_fn(x.cuda(), sigma.cuda())
    assert ours.dtype == torch.float32 and ours.is_cuda
    torch.testing.assert_close(ours.cpu(), cpu.score_fn(x, sigma), rtol=5e-2, atol=1e-3)


def test_cli_sample_masked_lm_on_cuda(bert, tmp_path):
    out = tmp_path / "s.npy"
    assert main(["sample", "--model", str(bert), "--length", "16", "--steps", "4", "--num", "8", "--device", "cuda",
                 "--out", str(out), "--quiet"]) == 0
    x = np.load(out)
    assert x.shape == (8, 16) and x.max() < 39
