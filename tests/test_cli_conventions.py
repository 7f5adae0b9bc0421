"""CLI conventions: one user mistake per test, each answered by one line on stderr and exit code 2 before any work
(no abbreviated flags, unwritable outputs, unavailable devices, another model's samples), plus the samples'
provenance sidecar, --quiet and step-level progress."""

import json

import numpy as np
import pytest
import torch

import lsdd.models
from lsdd.cli import build_parser, main
from lsdd.errors import UserError
from lsdd.sampling.record import check_provenance, model_info, read_info, sidecar_path, write_samples

FAST = ["--steps", "2", "--seed", "0", "--device", "cpu"]


def _no_model(monkeypatch):
    """Make any model load fail loudly: the command must stop before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded; the mistake should have been caught before any work")

    monkeypatch.setattr(lsdd.models, "load_model", refuse)


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith(f"lsdd {command}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """Samples of the bundled countdown model and of the bundled text model, written by `lsdd sample`."""
    d = tmp_path_factory.mktemp("drawn")
    c, t = d / "c.npy", d / "t.npy"
    assert main(["sample", "--model", "countdown", *FAST, "--num-samples", "4", "--out", str(c), "--quiet"]) == 0
    assert main(["sample", "--model", "text-absorb", *FAST, "--num", "2", "--out", str(t), "--quiet"]) == 0
    return c, t


# -- 1. no abbreviations -----------------------------------------------------------------------------------------

def test_eval_num_is_not_read_as_num_values(drawn, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--task", "countdown", "--num", "4", str(drawn[0])])
    assert e.value.code == 2
    line = _one_line_error(capsys, "eval")
    assert "unrecognized arguments: --num" in line and "did you mean --num-values?" in line


def test_distill_num_is_not_read_as_num_traj(tmp_path, monkeypatch, capsys):
    _no_model(monkeypatch)
    with pytest.raises(SystemExit) as e:
        main(["distill", "--model", "countdown", "--num", "100", "--out", str(tmp_path / "s.json")])
    assert e.value.code == 2
    assert "did you mean --num-traj?" in _one_line_error(capsys, "distill")
    assert list(tmp_path.iterdir()) == []


def test_every_parser_refuses_abbreviations():
    parser = build_parser()
    assert parser.allow_abbrev is False
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) >= {"sample", "eval", "distill", "bench", "demo", "train", "decode", "schedule"}
    assert all(p.allow_abbrev is False for p in commands.values())


# -- 2. same names for the same things ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["sample", "distill", "bench", "demo", "train", "eval", "schedule"])
def test_long_commands_take_quiet_and_the_network_ones_device(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--quiet" in text
    if command != "eval":
        assert "--device" in text and "--precision" in text and "--seed" in text


def test_old_flag_names_are_declared_aliases():
    parser = build_parser()
    sample = parser.parse_args(["sample", "--num", "5", "--out", "x.npy"])
    assert sample.num == 5 and parser.parse_args(["sample", "--num-samples", "5", "--out", "x.npy"]).num == 5
    assert parser.parse_args(["decode", "--model", "m", "x.npy", "--num", "3"]).num == 3
    assert parser.parse_args(["decode", "--model", "m", "x.npy", "--num-samples", "3"]).num == 3
    assert parser.parse_args(["train", "--out", "d", "--bf16"]).precision == "bf16"
    assert parser.parse_args(["train", "--out", "d", "--no-bf16"]).precision == "fp32"
    assert parser.parse_args(["train", "--out", "d"]).precision == "auto"
    for argv in (["sample", "--out", "x.npy"], ["train", "--out", "d"], ["demo"], ["bench", "--model", "m"]):
        assert parser.parse_args(argv).device == "auto"


def test_sample_num_alias_draws_the_same_samples(drawn, tmp_path):
    x = tmp_path / "x.npy"
    assert main(["sample", "--model", "countdown", *FAST, "--num", "4", "--out", str(x), "--quiet"]) == 0
    assert np.array_equal(np.load(x), np.load(drawn[0]))


# -- 3. outputs checked before any work --------------------------------------------------------------------------

@pytest.mark.parametrize("command, flag, name", [
    (["sample", "--model", "countdown", *FAST], "--out", "x.npy"),
    (["distill", "--model", "countdown"], "--out", "s.json"),
    (["bench", "--model", "countdown"], "--json", "b.json"),
    (["bench", "--model", "countdown"], "--plot", "b.png"),
    (["bench", "--model", "countdown"], "--teacher-cache", "cache"),
    (["schedule", "--model", "countdown", "--nfe", "4"], "--out", "j.json"),
    (["demo"], "--out-dir", "demo"),
    (["train", "--task", "countdown"], "--out", "run"),
    (["eval", "--task", "countdown", "SAMPLES"], "--json", "m.json"),
    (["decode", "--model", "text-absorb", "SAMPLES"], "--out", "x.txt"),
    (["data", "images", "--images", "imgs"], "--out", "x.npy"),
])
def test_output_under_a_regular_file_is_refused_before_any_work(command, flag, name, drawn, tmp_path, monkeypatch,
                                                                  capsys):
    _no_model(monkeypatch)
    (tmp_path / "f.txt").write_text("not a folder\n")
    target = tmp_path / "f.txt" / "sub" / name
    argv = [str(drawn[0]) if a == "SAMPLES" else a for a in command] + [flag, str(target)]
    assert main(argv) == 2
    line = _one_line_error(capsys, command[0])
    assert f"{flag} {target} cannot be written: {tmp_path / 'f.txt'} is a file, not a folder" in line
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"] and (tmp_path / "f.txt").read_text() == "not a folder\n"


def test_file_output_that_is_a_folder_or_has_the_wrong_suffix(tmp_path, monkeypatch, capsys):
    _no_model(monkeypatch)
    (tmp_path / "x.npy").mkdir()
    assert main(["sample", "--model", "countdown", "--out", str(tmp_path / "x.npy")]) == 2
    assert f"--out {tmp_path / 'x.npy'} is a folder" in _one_line_error(capsys, "sample")
    assert main(["bench", "--model", "countdown", "--json", str(tmp_path / "b.txt")]) == 2
    assert f"--json {tmp_path / 'b.txt'}: the output file must end in .json" in _one_line_error(capsys, "bench")
    assert main(["sample", "--model", "countdown", "--out", str(tmp_path / "x.npz")]) == 2
    assert "must end in .npy" in _one_line_error(capsys, "sample")
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"] and list((tmp_path / "x.npy").iterdir()) == []


def test_new_nested_output_folders_are_accepted(tmp_path):
    x = tmp_path / "a" / "b" / "x.npy"
    assert main(["sample", "--model", "countdown", *FAST, "--num-samples", "2", "--out", str(x), "--quiet"]) == 0
    assert np.load(x).shape == (2, 64) and sidecar_path(x).is_file()


# -- 4. devices ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device, message", [
    ("mps", "--device mps: Apple's MPS backend is not available on this machine"),
    ("cuda", "--device cuda: CUDA is not available on this machine"),
    ("cuda:0", "--device cuda:0: CUDA is not available on this machine"),
    ("tpu", "unknown --device 'tpu'; expected auto, cpu, cuda, cuda:N or mps"),
])
@pytest.mark.parametrize("command", [["sample", "--model", "countdown"], ["distill", "--model", "countdown"],
                                     ["train", "--task", "countdown"]])
def test_unavailable_device_is_one_line(command, device, message, tmp_path, monkeypatch, capsys):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    _no_model(monkeypatch)
    out = tmp_path / ("x.npy" if command[0] == "sample" else "s.json" if command[0] == "distill" else "run")
    assert main([*command, "--device", device, "--out", str(out)]) == 2
    assert message in _one_line_error(capsys, command[0])
    assert list(tmp_path.iterdir()) == []


def test_auto_device_is_the_best_available(monkeypatch):
    from lsdd.cli.common import check_device

    monkeypatch.undo()  # the real auto (conftest makes it cpu for the other tests)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        expected = "mps"
    assert check_device("auto") == expected and check_device("cpu") == "cpu"


# -- 5. provenance sidecar ----------------------------------------------------------------------------------------

def test_sample_writes_a_plain_npy_and_its_provenance(drawn):
    c, _ = drawn
    x = np.load(c, allow_pickle=False)
    assert x.dtype == np.int64 and x.shape == (4, 64)
    info = json.loads(sidecar_path(c).read_text())
    assert sidecar_path(c) == c.with_name("c.npy.json")
    model = lsdd.models.load_model("countdown")
    assert info == {"format": "lsdd-samples", "format_version": 1, **model_info(model),
                    "sampler": lsdd.Sampler.euler(2).to_dict(),
                    "nfe": 2, "num_samples": 4, "seed": 0, "batch_size": 64, "lsdd_version": lsdd.__version__}
    # the sidecar's sampler is the Sampler value itself: it loads back whole
    assert lsdd.Sampler.from_dict(info["sampler"]) == lsdd.Sampler.euler(2)
    assert model_info(model) == {"model_fingerprint": "0dbf3371e1bdc5f4", "model_source": "bundled:countdown",
                                 "graph": "absorbing", "num_tokens": 32, "length": 64, "tokenizer_sha256": None}
    assert read_info(c) == info


def test_record_api_round_trip_and_checks(tmp_path):
    path = tmp_path / "y.npy"
    assert read_info(path) is None
    x = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.int32)
    write_samples(path, x, {"model_fingerprint": "ab12ab12ab12ab12", "model_source": "bundled:countdown",
                            "num_tokens": 32, "length": 3, "tokenizer_sha256": None})
    back = np.load(path)
    assert back.dtype == np.int64 and back.tolist() == [[1, 2, 3], [4, 5, 6]]
    info = read_info(path)
    assert info["format"] == "lsdd-samples" and info["format_version"] == 1 and info["num_tokens"] == 32
    with pytest.raises(UserError, match=r"^y\.npy: sampled from bundled:countdown \(fingerprint ab12ab12ab12ab12\), "
                                        r"not from this model bundled:text-absorb \(cd34cd34cd34cd34\); pass --force"):
        check_provenance(info, fingerprint="cd34cd34cd34cd34", what="y.npy", against="this model bundled:text-absorb")
    check_provenance(info, fingerprint="cd34cd34cd34cd34", force=True)  # --force lets it through
    check_provenance(info, fingerprint="ab12ab12ab12ab12", num_tokens=32, length=3)  # all match
    check_provenance(None, fingerprint="cd34", text=True)  # no sidecar: nothing to check
    with pytest.raises(UserError, match="with length 3, not the length 4"):
        check_provenance(info, length=4)
    with pytest.raises(UserError, match="which has no tokenizer, so they are not text"):
        check_provenance(info, text=True)
    sidecar_path(path).write_text('{"format": "something-else"}')
    with pytest.raises(UserError, match="is not an lsdd samples record"):
        read_info(path)


def test_eval_and_decode_refuse_another_models_samples(drawn, capsys):
    c, t = drawn
    for argv, command in [(["eval", "--task", "text", str(c)], "eval"),
                          (["eval", "--task", "text", "--model", "text-absorb", str(c)], "eval"),
                          (["decode", "--model", "text-absorb", str(c)], "decode")]:
        assert main(argv) == 2
        line = _one_line_error(capsys, command)
        assert line.endswith(f"{c}: sampled from bundled:countdown (fingerprint 0dbf3371e1bdc5f4), which has no "
                             "tokenizer, so they are not text; pass --force to use them anyway")
    assert main(["eval", "--task", "countdown", str(t)]) == 2
    assert _one_line_error(capsys, "eval").endswith(
        f"{t}: sampled from bundled:text-absorb (fingerprint b3ae57f1b3d5299e) with 1024 token values, not the 32 of "
        "task countdown (--num-values 32); pass --force to use them anyway")


def test_force_lets_another_models_samples_through(drawn, capsys):
    c, t = drawn
    assert main(["decode", "--model", "text-absorb", str(c), "--force", "--plain"]) == 0
    texts = capsys.readouterr().out
    assert texts == "\n\n".join(s.strip("\n") for s in lsdd.models.load_model("text-absorb").tokenizer.decode_batch(
        np.load(c))) + "\n"
    assert main(["eval", "--task", "countdown", str(t), "--force"]) == 0
    assert "task countdown: 2 samples of length 128" in capsys.readouterr().out


def test_samples_without_sidecar_are_read_as_before(drawn, tmp_path, capsys):
    bare = tmp_path / "bare.npy"
    np.save(bare, np.load(drawn[0]))
    assert main(["decode", "--model", "text-absorb", str(bare), "--plain", "--num-samples", "1"]) == 0
    assert capsys.readouterr().out.strip() != ""


def test_same_tokenizer_other_weights_is_a_note(drawn, capsys):
    assert main(["decode", "--model", "text-uniform", str(drawn[1]), "--num-samples", "1"]) == 0
    err = capsys.readouterr().err.strip().split("\n")
    assert err == [f"lsdd decode: note: {drawn[1]} was sampled from bundled:text-absorb, not from bundled:text-uniform;"
                   " they share a tokenizer"]


# -- 6. --quiet and step-level progress ---------------------------------------------------------------------------

def test_quiet_sample_prints_nothing(tmp_path, capsys):
    x = tmp_path / "x.npy"
    assert main(["sample", "--model", "countdown", *FAST, "--num-samples", "2", "--out", str(x), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["sample", "--model", "countdown", *FAST, "--num-samples", "2", "--out", str(x)]) == 0
    assert capsys.readouterr().out.startswith("2 samples of length 64 from bundled:countdown")


def test_quiet_eval_keeps_its_table(drawn, capsys):
    assert main(["eval", "--task", "countdown", str(drawn[0]), "--quiet"]) == 0
    out = capsys.readouterr()
    assert out.err == "" and "violation_rate" in out.out


class _Bar:
    """A stand-in for tqdm that records its total and updates."""

    made: list = []

    def __init__(self, iterable=None, total=None, disable=False, **kwargs):
        self.total, self.disable, self.n = total, disable, 0
        _Bar.made.append(self)

    def update(self, k=1):
        self.n += k

    def set_postfix_str(self, *args, **kwargs):
        pass

    def close(self):
        pass


def test_sampling_progress_counts_steps_and_changes_no_draw(monkeypatch):
    import tqdm.auto

    from lsdd.sampling.samplers import sample_batched
    from lsdd.sampling.schedules import uniform_times

    model = lsdd.models.load_model("countdown")
    args = (model.score_fn, model.graph, model.noise, uniform_times(3), 10, model.config.length)
    quiet = sample_batched(*args, seed=5, batch_size=4, progress=False)
    _Bar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    seen = []
    loud = sample_batched(*args, seed=5, batch_size=4, progress=True, callback=lambda info: seen.append(info.k))
    assert torch.equal(quiet.x, loud.x) and quiet.nfe == loud.nfe == 3
    (bar,) = _Bar.made
    assert bar.total == 3 * 3 and bar.n == 9  # 3 batches x 3 steps
    assert seen == [0, 1, 2] * 3  # a caller's own callback still sees every step


def test_teacher_progress_counts_steps(monkeypatch):
    import lsdd.distillation.teacher as teacher
    from lsdd.sampling.schedules import uniform_times

    model = lsdd.models.load_model("countdown")
    _Bar.made = []
    monkeypatch.setattr(teacher, "tqdm", _Bar)
    cache = teacher.run_teacher(model.score_fn, model.graph, model.noise, uniform_times(2), 8, 6,
                                model.config.length, batch_size=4, progress=True)
    (bar,) = _Bar.made
    assert bar.total == 2 * 8 and bar.n == 16 and cache.nfe == 2 * 8  # 2 batches x 8 teacher steps
