"""lsdd.tasks: every task owns its metrics, pairs, decode, data and defaults; the registry, default_task and
evaluate(); the commands ask the task (eval, decode, train)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lsdd.cli import main
from lsdd.errors import UserError
from lsdd.models import bundled_models, load_model
from lsdd.tasks import (TASKS, CountdownTask, DigitsTask, MarkovTask, Task, TextTask, default_task, evaluate, get_task,
                        task_class)

TINY = ["--hidden-size", "32", "--cond-dim", "32", "--n-blocks", "1", "--n-heads", "2", "--threads", "1", "--quiet"]
TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"


def _bundled(name: str):
    if name not in bundled_models():
        pytest.skip(f"{name} is not bundled in this checkout")
    return load_model(name)


def _tiny_samples(name: str) -> tuple[Task, torch.Tensor]:
    """The task called ``name`` and a few samples of its own data."""
    g = torch.Generator().manual_seed(0)
    if name == "text":
        task = TextTask.from_model(_bundled("text-absorb"))
        ids = task.tokenizer.encode(TEXT)
        return task, torch.from_numpy(np.stack([ids[:16], ids[4:20]]))
    if name == "digits":
        from lsdd.data.digits import load_digits_tokens

        return get_task("digits"), load_digits_tokens("test")[0][:8]
    if name == "markov":
        return get_task("markov"), MarkovTask.data(length=12).batch(6, g)
    if name == "countdown":
        return get_task("countdown"), CountdownTask.data(length=12).batch(6, g)
    return get_task(name), torch.randint(0, 5, (6, 12), generator=g)


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_decodes_computes_and_pairs(name):
    task, x = _tiny_samples(name)
    assert task.name == name and TASKS[name] is type(task)
    values = task.compute(x)
    # one float per metric, in the order of task.metrics
    assert list(values) == [m.name for m in task.metrics] and all(isinstance(v, float) for v in values.values())
    # every pair is (a quality metric, a diversity metric) of this task; the first is the headline
    kinds = {m.name: m.kind for m in task.metrics}
    assert task.pairs and all(kinds[q] == "quality" and kinds[d] == "diversity" for q, d in task.pairs)
    texts = task.decode(x)
    assert len(texts) == x.shape[0] and all(isinstance(t, str) and t for t in texts)


def test_decode_reads_each_task_as_its_data():
    # countdown, markov and tokens: the ids separated by spaces
    for name in ("countdown", "markov", "tokens"):
        assert get_task(name).decode(torch.tensor([[3, 2, 1, 0], [0, 5, 4, 3]])) == ["3 2 1 0", "0 5 4 3"]
    # text: the model's tokenizer, so encoding then decoding gives the text back
    task = TextTask.from_model(_bundled("text-absorb"))
    assert task.decode(torch.from_numpy(task.tokenizer.encode(TEXT))[None]) == [TEXT]
    with pytest.raises(UserError, match="outside the tokenizer's vocabulary of 1024"):
        task.decode(torch.tensor([[1024]]))
    # digits: 8 lines of 8 characters; background (0) is a space, full ink (16) the darkest character, a mask '?'
    art = get_task("digits").decode(torch.tensor([[0] * 63 + [16], [17] + [0] * 63]))
    assert art[0].split("\n") == [" " * 8] * 7 + [" " * 7 + "@"] and art[1].startswith("?       \n")


def test_registry_errors_list_the_valid_tasks(capsys, tmp_path):
    names = ", ".join(sorted(TASKS))
    ids = np.zeros((1, 2), dtype=np.int64)
    for call in (lambda: task_class("nope"), lambda: get_task("nope"), lambda: evaluate(ids, task="nope")):
        with pytest.raises(UserError, match=f"unknown task 'nope'; valid tasks: {names}"):
            call()
    np.save(tmp_path / "x.npy", np.zeros((2, 3), dtype=np.int64))
    assert main(["eval", "--task", "nope", str(tmp_path / "x.npy")]) == 2
    assert f"valid tasks: {names}" in capsys.readouterr().err


@pytest.mark.parametrize("model, task", [("countdown", "countdown"), ("markov", "markov"), ("text-absorb", "text"),
                                         ("digits-uniform", "digits")])
def test_default_task_of_bundled_models(model, task):
    m = _bundled(model)
    assert default_task(m) == task
    # a model's own task is the one whose default model it is, and that task says it matches it
    assert TASKS[task].default_model == model and TASKS[task].matches(m)
    # no other task claims it
    assert [n for n, cls in TASKS.items() if cls.matches(m)] == [task]


def test_from_model_takes_what_the_model_carries():
    countdown = _bundled("countdown")
    assert CountdownTask.from_model(countdown).num_values == countdown.config.num_tokens == 32
    assert CountdownTask.from_model(countdown, num_values=8).num_values == 8  # an option wins
    # digits need 8x8 images of 17 grey levels
    with pytest.raises(UserError, match="needs a model of 64 tokens with 17 grey levels"):
        DigitsTask.from_model(countdown)


def test_commands_defaults_come_from_the_task():
    # demo: the tasks with a demo, each with its bundled model
    assert [n for n, cls in TASKS.items() if cls.demo is not None] == ["countdown", "text", "digits"]
    assert CountdownTask.demo.nfe == (8,) and TextTask.demo.teacher_nfe == 256 and DigitsTask.demo.shows == "images"
    # the quick countdown demo and the long one (--full)
    assert CountdownTask.demo.methods == ("spread", "lsd") and CountdownTask.demo.teacher_nfe == 256
    full = CountdownTask.demo.long()
    assert full.nfe == (8, 16) and full.teacher_nfe == 512 and full.methods == ("spread", "lsd", "lsd+")
    assert TextTask.demo.long() == TextTask.demo  # no long variant: --full changes nothing there
    # bench: only the text task adds the temperature control by default
    assert [n for n, cls in TASKS.items() if cls.temperature_control] == ["text"]
    # train --task: the tasks whose data are drawn fresh every step
    assert [n for n, cls in TASKS.items() if cls.generates_data] == ["countdown", "markov"]


def _as_json(values: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in values.items()}


def test_evaluate_equals_lsdd_eval_on_the_bundled_countdown_model(tmp_path, capsys):
    model = _bundled("countdown")
    x = tmp_path / "x.npy"
    assert main(["sample", "--model", "countdown", "--sampler", "euler", "--steps", "8", "--num", "16", "--seed", "0",
                 "--out", str(x)]) == 0
    assert main(["eval", "--task", "countdown", str(x), "--json", str(tmp_path / "m.json")]) == 0
    printed = json.loads((tmp_path / "m.json").read_text())["metrics"]
    arr = np.load(x)
    # the model's own task, from a numpy array: exactly the numbers lsdd eval wrote (NaN is null in JSON)
    got = _as_json(evaluate(arr, model=model))
    assert list(got) == list(printed) and got == printed
    # the same from a tensor with the task named, or given as a Task
    assert _as_json(evaluate(torch.from_numpy(arr), task="countdown")) == got
    assert _as_json(evaluate(arr, task=CountdownTask())) == got
    with pytest.raises(UserError, match="needs a task or a model"):
        evaluate(arr)


def test_decode_command_asks_the_models_task(tmp_path, capsys):
    _bundled("countdown")
    np.save(tmp_path / "c.npy", np.array([[3, 2, 1, 0], [1, 0, 2, 1]]))
    assert main(["decode", "--model", "countdown", str(tmp_path / "c.npy"), "--plain"]) == 0
    assert capsys.readouterr().out == "3 2 1 0\n\n1 0 2 1\n"


def test_eval_flags_of_other_tasks_are_refused(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 64), dtype=np.int64))
    assert main(["eval", "--task", "markov", str(tmp_path / "x.npy"), "--evaluator", "x"]) == 2
    assert "--model, --evaluator and --reference apply to --task text" in capsys.readouterr().err


def test_train_markov_task_and_resume(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "--task", "markov", "--length", "8", *TINY, "--steps", "2", "--batch-size", "4",
                 "--out", str(out)]) == 0
    record = json.loads((out / "config.json").read_text())["training"]["data"]
    # the run records the chain, so --resume rebuilds the same data
    assert record == {"type": "markov", "length": 8, "num_values": 24, "degree": 3, "seed": 0}
    assert main(["train", "--out", str(out), "--resume", "--steps", "3", "--quiet"]) == 0
    # a model trained on the markov task's data has the task's vocabulary
    assert load_model(str(out)).config.num_tokens == 24


def test_train_refuses_data_flags_the_task_does_not_take(tmp_path, capsys):
    assert main(["train", "--task", "countdown", "--corpus", "c", "--out", str(tmp_path / "x")]) == 2
    assert "data options --corpus do not apply to --task countdown (it takes --length, --num-values)" in \
        capsys.readouterr().err
    assert main(["train", "--data", "x.npy", "--length", "8", "--out", str(tmp_path / "y")]) == 2
    assert "--length do not apply to --data FILE.npy (it takes --vocab)" in capsys.readouterr().err
