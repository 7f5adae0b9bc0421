"""The digits data (lsdd.data.digits): tokens, the recorded split, the training source, the PNG reader, and
`lsdd train --data digits` on the ordinal graph (tiny)."""

import json

import numpy as np
import pytest
import torch

from lsdd.cli import main
from lsdd.data.digits import (DigitsSource, load_digits_tokens, quantise, read_image_folder, split_indices,
                              split_record)
from lsdd.errors import UserError
from lsdd.models import load_model


def test_digits_tokens_and_split():
    x, y = load_digits_tokens("all")
    # 1,797 images of 64 pixels in raster order, 17 grey levels, ten classes
    assert x.shape == (1797, 64) and x.dtype == torch.int64 and int(x.min()) == 0 and int(x.max()) == 16
    assert sorted(torch.unique(y).tolist()) == list(range(10))
    from sklearn.datasets import load_digits

    img = load_digits().images[5]
    assert x[5].view(8, 8).tolist() == img.astype(int).tolist()  # row by row
    train, test = split_indices()
    # a partition of all images, stratified (each class ~20 % in test), fixed by its seed
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(1797))
    assert len(set(train.tolist()) & set(test.tolist())) == 0
    frac = torch.bincount(y[test], minlength=10).double() / torch.bincount(y, minlength=10).double()
    assert (frac - 0.2).abs().max() < 0.01
    assert torch.equal(split_indices()[1], test) and not torch.equal(split_indices(seed=1)[1], test)
    rec = split_record()
    assert (rec["train"], rec["test"]) == (train.numel(), test.numel()) and len(rec["test_indices_sha256"]) == 64
    xt, yt = load_digits_tokens("test")
    assert torch.equal(xt, x[test]) and torch.equal(yt, y[test])
    with pytest.raises(UserError, match="unknown digits split 'valid'"):
        load_digits_tokens("valid")


def test_digits_source_draws_training_images_only():
    src = DigitsSource()
    batch = src.batch(500, torch.Generator().manual_seed(0))
    assert batch.shape == (500, 64) and (src.num_tokens, src.length) == (17, 64)
    test, _ = load_digits_tokens("test")
    rows = {tuple(r) for r in test.tolist()} - {tuple(r) for r in src.tokens.tolist()}
    # no test image (that is not also a train image) is ever drawn
    assert not rows & {tuple(r) for r in batch.tolist()}
    assert src.describe()["type"] == "digits" and src.describe()["train"] == src.tokens.shape[0]


def test_read_image_folder(tmp_path):
    from PIL import Image

    a = np.zeros((16, 16), dtype=np.uint8)
    a[:, 8:] = 255  # left half black, right half white
    Image.fromarray(a).save(tmp_path / "b.png")
    Image.fromarray(np.full((4, 4), 128, dtype=np.uint8)).convert("RGB").save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    x, names = read_image_folder(tmp_path, size=4, levels=17)
    # sorted PNGs only; resized to 4x4, quantised to 0..16 by rounding v * 16 / 255, raster order
    assert names == ["a.png", "b.png"] and x.shape == (2, 16)
    assert x[0].tolist() == [int(np.rint(128 * 16 / 255))] * 16
    assert x[1].view(4, 4)[:, :2].eq(0).all() and x[1].view(4, 4)[:, 2:].eq(16).all()
    inv, _ = read_image_folder(tmp_path, size=4, levels=2, invert=True)
    assert inv[1].view(4, 4)[:, :2].eq(1).all() and inv[1].view(4, 4)[:, 2:].eq(0).all()
    assert quantise(np.array([0, 127, 128, 255]), 2).tolist() == [0, 0, 1, 1]
    with pytest.raises(UserError, match="levels must be an integer in \\[2, 256\\], got 1"):
        read_image_folder(tmp_path, 4, 1)
    with pytest.raises(UserError, match="image size must be a positive integer, got 0"):
        read_image_folder(tmp_path, 0, 17)
    with pytest.raises(UserError, match="image folder not found"):
        read_image_folder(tmp_path / "nope")
    (tmp_path / "c.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read image .*c.png"):
        read_image_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no .png files"):
        read_image_folder(empty)


def test_cli_train_digits_ordinal_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["--hidden-size", "32", "--cond-dim", "32", "--n-blocks", "1", "--n-heads", "2", "--threads", "1",
            "--quiet", "--batch-size", "8", "--log-every", "2", "--ckpt-every", "2"]
    assert main(["train", "--data", "digits", "--graph", "ordinal", *tiny, "--steps", "2", "--out", str(out)]) == 0
    # resumed from its record (no --data needed): the digits source is rebuilt from the checkpoint
    assert main(["train", "--out", str(out), "--resume", "--steps", "4"]) == 0
    model = load_model(out)
    assert (model.config.graph, model.config.num_tokens, model.config.length) == ("ordinal", 17, 64)
    assert model.config.noise["type"] == "geometric" and model.graph.name == "ordinal"
    meta = json.loads((out / "config.json").read_text())
    assert meta["training"]["data"]["type"] == "digits" and meta["training"]["steps"] == 4
    assert main(["train", "--data", "digits", "--length", "32", "--out", str(tmp_path / "x")]) == 2
    assert "do not apply to --data digits" in capsys.readouterr().err


def test_cli_data_images_writes_tokens_for_train(tmp_path, capsys):
    from PIL import Image

    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 60 * i, dtype=np.uint8)).save(pngs / f"{i}.png")
    out = tmp_path / "x.npy"
    assert main(["data", "images", "--images", str(pngs), "--size", "4", "--levels", "5", "--out", str(out)]) == 0
    x = np.load(out)
    # 60 i / 255 * 4 rounded: levels 0, 1, 2
    assert x.shape == (3, 16) and x.dtype == np.int64 and x[:, 0].tolist() == [0, 1, 2]
    assert main(["data", "images", "--images", str(pngs), "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["data", "images", "--images", str(pngs), "--out", str(tmp_path / "y.txt")]) == 2
    assert not (tmp_path / "y.txt").exists()
