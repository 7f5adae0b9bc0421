"""Any masked LM as an lsdd model: ``lsdd.models.from_clean_logits`` (checked against the exact score of an
enumerated data law and against RADD's own conversion) and transformers masked-LM directories written here with
``save_pretrained`` (tiny random BERT and ModernBERT, a hand-made tokenizer, and a tiny model whose code ships
in its directory, LLaDA- and Dream-style), loaded offline by ``--model DIR`` / ``lsdd.load_model``."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

import lsdd
from lsdd.cli import main
from lsdd.errors import UserError
from lsdd.graphs import Absorbing
from lsdd.models import CleanLogitModel, from_clean_logits, load_model
from lsdd.models.external import detect_format
from lsdd.models.masked import IdMap
from lsdd.noise import LogLinear
from lsdd.sampling.exact import ExactScore, all_sequences, exact_sampler_law, seq_index
from lsdd.sampling.sampler import Sampler

from conftest import toy_law

transformers = pytest.importorskip("transformers")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]
VOCAB, MASK = len(WORDS), 4  # BERT-style: the mask is a token inside the vocabulary
N = VOCAB - 1  # lsdd's real tokens; lsdd's mask id is N


def _tokenizer():
    return transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)})


def _bert(directory, tokenizer=True, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32, pad_token_id=0)
    transformers.BertForMaskedLM(cfg).save_pretrained(directory)
    if tokenizer:
        _tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return _bert(tmp_path_factory.mktemp("bert") / "bert")


def _lsdd_inputs(length=8, batch=3, seed=1, num_tokens=N):
    """lsdd ids with about half the positions masked (mask = ``num_tokens``), one all-mask row; sigma_bar per row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, num_tokens, (batch, length), generator=g)
    x[torch.rand(batch, length, generator=g) < 0.5] = num_tokens
    x[0] = num_tokens
    return x, torch.tensor([0.05, 0.7, 3.0])[:batch]


def _direct_probs(directory, x_model):
    """p_theta(x0 | x_t) from the network itself (transformers, not lsdd): softmax over the real tokens, i.e. the
    model's logits without the mask column, in the model's id order. (B, L, VOCAB - 1) float64."""
    net = transformers.AutoModelForMaskedLM.from_pretrained(str(directory), local_files_only=True).eval()
    with torch.no_grad():
        logits = net(input_ids=x_model).logits.double()
    keep = [i for i in range(VOCAB) if i != MASK]
    return torch.softmax(logits[..., keep], dim=-1)


# -- the id map ---------------------------------------------------------------------------------------------------

def test_id_map_moves_the_mask_to_the_end():
    m = IdMap(mask_id=2, vocab_size=5)
    assert m.num_tokens == 4 and m.to_model_table().tolist() == [0, 1, 3, 4, 2]
    x = torch.tensor([[0, 1, 2, 3, 4]])
    assert m.model_ids(x).tolist() == [[0, 1, 3, 4, 2]]
    assert m.lsdd_ids(m.model_ids(x)).tolist() == x.tolist()
    logits = torch.arange(7.0)[None]  # 5 tokens + 2 padding columns
    assert m.real_columns(logits).tolist() == [[0.0, 1.0, 3.0, 4.0]]
    with pytest.raises(UserError, match="outside the model's vocabulary of 5"):
        m.lsdd_ids(torch.tensor([5]))
    last = IdMap(mask_id=4, vocab_size=5)  # mask already last: the identity on 0..4
    assert last.num_tokens == 4 and last.identity and last.model_ids(x).tolist() == x.tolist()
    outside = IdMap(mask_id=5, vocab_size=5)  # MDLM: the mask after the vocabulary
    assert outside.num_tokens == 5 and outside.identity and outside.real_columns(torch.arange(6.0)).tolist() == [
        0.0, 1.0, 2.0, 3.0, 4.0]


# -- from_clean_logits on an exact toy ----------------------------------------------------------------------------

TOY_N, TOY_L, TOY_MASK, TOY_VOCAB = 3, 3, 1, 4  # model ids: 0, [MASK]=1, 2, 3; plus 2 padding logit columns


def _posterior_fn(p0: torch.Tensor):
    """A clean-logit function in the model's ids that returns log p(x0^i = v | x_t) exactly, from the enumerated
    law p0 over lsdd's real tokens: x0 is consistent with x_t's unmasked tokens, weighted by p0 (the sigma_bar
    factors are the same for every consistent x0). Junk in the mask column and the padding columns, which the
    adapter must drop. States of probability 0 get uniform logits."""
    ids = IdMap(TOY_MASK, TOY_VOCAB)
    data = all_sequences(TOY_N, TOY_L)  # (K, L) lsdd ids
    real_cols = ids.to_model_table()[:TOY_N]

    def fn(x_model: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x = ids.lsdd_ids(x_model)
        ok = ((data[None] == x[:, None]) | (x[:, None] == TOY_N)).all(-1)  # (B, K)
        w = ok * p0[None]
        post = torch.einsum("bk,klv->blv", w, torch.nn.functional.one_hot(data, TOY_N).double())
        post = post / post.sum(-1, keepdim=True).clamp_min(1e-300)
        logp = torch.where(post.sum(-1, keepdim=True) > 0, post.log(), torch.zeros_like(post))
        out = torch.full((*x.shape, TOY_VOCAB + 2), 5.0, dtype=torch.float64)
        out[..., real_cols] = logp
        return out

    return fn


def test_from_clean_logits_is_the_exact_score_of_an_enumerated_law():
    p0 = toy_law(TOY_N, TOY_L, seed=3)
    graph, noise = Absorbing(TOY_N), LogLinear()
    exact = ExactScore(p0, graph, TOY_L)
    model = from_clean_logits(_posterior_fn(p0), TOY_MASK, TOY_VOCAB, TOY_L)
    assert isinstance(model, CleanLogitModel) and model.graph.num_tokens == TOY_N and model.length == TOY_L
    assert model.noise.to_dict() == {"type": "loglinear", "eps": 1e-3}
    states = all_sequences(TOY_N + 1, TOY_L)
    for s in (0.02, 0.7, 4.0):
        sigma = torch.full((states.shape[0],), s, dtype=torch.float64)
        live = exact.marginal(states, sigma) > 0
        ours, ref = model.score_fn(states[live], sigma[live].float()).double(), exact(states[live], sigma[live])
        masked = states[live] == TOY_N
        torch.testing.assert_close(ours[masked], ref[masked], rtol=2e-5, atol=1e-9)  # masked rows: the same score
        assert (ours.gather(-1, states[live][..., None]) == 1).all()  # 1 at the current token
        unmasked = ours[~masked]  # rows the absorbing reverse process never reads: one-hot
        assert (unmasked == torch.nn.functional.one_hot(states[live][~masked], TOY_N + 1)).all()
    # the sampler law is then the exact one's: a 3-step Euler sampler propagated exactly
    times = torch.linspace(1.0, 1e-3, 4, dtype=torch.float64)
    law = exact_sampler_law(model.score_fn, graph, noise, times, TOY_L)
    ref = exact_sampler_law(exact, graph, noise, times, TOY_L)
    torch.testing.assert_close(law, ref, atol=1e-6, rtol=0)
    full = exact_sampler_law(exact, graph, noise, torch.linspace(1.0, 1e-3, 2 ** 9, dtype=torch.float64), TOY_L)
    target = torch.zeros_like(full)
    target[seq_index(all_sequences(TOY_N, TOY_L), TOY_N + 1)] = p0
    assert float((full - target).abs().sum()) < 0.05  # and many steps recover p0 itself


def test_from_clean_logits_reproduces_radd(tmp_path):
    """RADD's loader (lsdd.models.clean) and the adapter fed RADD's clean log-probabilities give the same score:
    both use p / (e^sigma_bar - 1)."""
    from external_refs import TOKENS, LENGTH, radd_doc, random_state, write_checkpoint

    radd = load_model(str(write_checkpoint(tmp_path / "radd", radd_doc(), random_state("radd", TOKENS + 1))))
    fn = lambda x, s: radd.module.clean_log_probs(x, s)  # noqa: E731 - (B, L, TOKENS): the mask is id TOKENS
    adapted = from_clean_logits(fn, TOKENS, TOKENS, LENGTH, noise=radd.noise.to_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, TOKENS, (3, LENGTH), generator=g)
    x[torch.rand(3, LENGTH, generator=g) < 0.6] = TOKENS
    sigma = torch.tensor([0.1, 1.0, 5.0])
    masked = x == TOKENS
    torch.testing.assert_close(adapted.score_fn(x, sigma)[masked], radd.score_fn(x, sigma)[masked], rtol=1e-5,
                               atol=0)


def test_from_clean_logits_bad_inputs():
    fn = lambda x, s: torch.zeros(*x.shape, 6)  # noqa: E731
    with pytest.raises(UserError, match="length must be a positive integer"):
        from_clean_logits(fn, 1, 4, 0)
    with pytest.raises(UserError, match="mask id must be >= 0"):
        from_clean_logits(fn, -1, 4, 3)
    with pytest.raises(UserError, match="leaves no real token"):
        from_clean_logits(fn, 0, 1, 3)
    with pytest.raises(UserError, match="suppress: id 1"):
        from_clean_logits(fn, 1, 4, 3, suppress=[1])  # the mask itself
    with pytest.raises(TypeError):
        from_clean_logits("not a function", 1, 4, 3)
    narrow = from_clean_logits(lambda x, s: torch.zeros(*x.shape, 3), 1, 4, 3)
    with pytest.raises(UserError, match="fewer than the vocabulary size 4"):
        narrow.score_fn(torch.full((1, 3), 3), torch.tensor([1.0]))
    flat = from_clean_logits(lambda x, s: torch.zeros(x.shape[0], 6), 1, 4, 3)
    with pytest.raises(UserError, match="expected \\(B, L, V\\)"):
        flat.score_fn(torch.full((1, 3), 3), torch.tensor([1.0]))


def test_suppressed_ids_are_never_sampled():
    model = from_clean_logits(lambda x, s: torch.zeros(*x.shape, 5), 4, 5, 6, suppress=[0, 2])
    s = model.score_fn(torch.full((2, 6), 4), torch.tensor([0.5, 0.5]))
    assert (s[..., [0, 2]] == 0).all() and torch.allclose(s[..., [1, 3]], torch.full((2, 6, 2), 0.5 / math.expm1(0.5)))
    x = lsdd.sample(model, Sampler.base("euler", 4), num=16, seed=0).x
    assert set(x.unique().tolist()) <= {1, 3}


# -- transformers directories ---------------------------------------------------------------------------------------

def test_bert_directory_loads_with_its_tokenizer(bert):
    assert detect_format(bert) == "masked-lm"
    model = load_model(str(bert))
    assert isinstance(model, CleanLogitModel) and model.graph.name == "absorbing"
    assert model.graph.num_tokens == N and model.ids.mask_id == MASK and model.length == 32
    assert model.noise.to_dict() == {"type": "loglinear", "eps": 1e-3}
    assert model.meta["architecture"] == "BertForMaskedLM" and model.meta["checkpoint_format"] == "masked-lm"
    assert len(model.fingerprint) == 16 and model.fingerprint == load_model(str(bert)).fingerprint
    assert load_model(str(bert), length=8).length == 8
    # lsdd id 4 is the model's id 5 (ids above the mask move down one); lsdd's mask N is [MASK]
    assert model.tokenizer.decode([0, 3, 4, N]) == "[PAD] [SEP] w0 [MASK]"
    assert model.tokenizer.encode("w0 w1").tolist() == [4, 5] and model.tokenizer.vocab_size == N
    assert lsdd.from_clean_logits is from_clean_logits


def test_bert_score_is_the_networks_own_softmax(bert):
    model = load_model(str(bert))
    x, sigma = _lsdd_inputs()
    score = model.score_fn(x, sigma).double()
    assert score.shape == (3, 8, N + 1)
    probs = _direct_probs(bert, model.ids.model_ids(x))  # in the model's order without the mask = lsdd's order
    masked = x == N
    factor = (1.0 / torch.expm1(sigma.double()))[:, None, None].expand(-1, 8, N)
    torch.testing.assert_close(score[..., :N][masked], (probs * factor)[masked], rtol=2e-5, atol=0)
    assert (score.gather(-1, x[..., None]) == 1).all()  # 1 at the current token (the mask column of masked rows)
    assert (score[~masked] == torch.nn.functional.one_hot(x[~masked], N + 1)).all()  # unmasked rows: one-hot
    # the sigma_bar factor is exact: the network takes no time
    other = model.score_fn(x, torch.full((3,), 1.5)).double()
    ratio = other[..., :N][masked] / score[..., :N][masked]
    want = (torch.expm1(sigma.double()) / math.expm1(1.5))[:, None].expand(-1, 8)[masked][:, None]
    torch.testing.assert_close(ratio, want.expand_as(ratio), rtol=1e-5, atol=0)


def test_bert_samples_with_lsdd_sample(bert):
    model = load_model(str(bert), length=10)
    out = lsdd.sample(model, Sampler.base("euler", 4), num=5, seed=7)
    assert out.x.shape == (5, 10) and out.nfe == 4 and int(out.x.max()) < N and int(out.x.min()) >= 0
    assert torch.equal(out.x, lsdd.sample(model, Sampler.base("euler", 4), num=5, seed=7).x)
    assert out.info["model_fingerprint"] == model.fingerprint and out.info["num_tokens"] == N
    assert out.info["tokenizer_sha256"] == model.tokenizer.sha256()
    adaptive = lsdd.sample(model, Sampler.adaptive_rule("threshold", 0.5), num=4, seed=0)
    assert adaptive.x.shape == (4, 10) and 1 <= adaptive.nfe <= 10 and int(adaptive.x.max()) < N


def test_bert_prompts_and_blocks(bert, tmp_path, capsys):
    """A transformers masked LM continues a text prompt through its own tokenizer: the prompt's ids stay in every
    sample, blocks after it are decoded left to right with NFE counted across them, and text the vocabulary lacks
    is a one-line error (exit code 2) before any sampling."""
    model = load_model(str(bert), length=10)
    ids = list(model.tokenizer.encode("w3 w7 w1"))
    assert len(ids) == 3
    out = lsdd.sample(model, Sampler.base("euler", 2, block=4), num=4, seed=0, prompt="w3 w7 w1")
    assert (out.x[:, :3] == torch.tensor(ids)).all() and int(out.x.max()) < N
    assert out.nfe == 2 * 2  # 7 free positions in blocks of 4: two blocks of one 2-step grid each
    path = tmp_path / "p.npy"
    assert main(["sample", "--model", str(bert), "--length", "10", "--steps", "2", "--num", "4", "--seed", "0",
                 "--prompt", "w3 w7 w1", "--device", "cpu", "--out", str(path)]) == 0
    capsys.readouterr()
    assert np.array_equal(np.load(path)[:, :3], np.tile(ids, (4, 1)))
    bad = tmp_path / "bad.npy"
    assert main(["sample", "--model", str(bert), "--length", "10", "--steps", "2", "--num", "4",
                 "--prompt", "w3 zebra", "--device", "cpu", "--out", str(bad)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "Loading weights" not in ln]
    assert len(err) == 1 and "no token for part of" in err[0] and not bad.exists()


def test_cli_sample_and_decode_a_bert_directory(bert, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert main(["sample", "--model", str(bert), "--steps", "4", "--length", "8", "--num", "3", "--seed", "1",
                 "--device", "cpu", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "3 samples of length 8" in line and "4 network calls per sample" in line
    x = np.load(out)
    info = json.loads((tmp_path / "s.npy.json").read_text())
    assert x.shape == (3, 8) and x.max() < N and info["nfe"] == 4
    ref = lsdd.sample(load_model(str(bert), length=8), Sampler.base("euler", 4), num=3, seed=1).x
    assert np.array_equal(x, ref.numpy())  # the CLI draws what the library draws
    assert main(["decode", "--model", str(bert), str(out)]) == 0
    text = capsys.readouterr().out
    words = [w for line in text.splitlines() if not line.startswith("===") for w in line.split()]
    assert text.count("=== sample") == 3 and len(words) == 24 and set(words) <= set(WORDS)


def test_modernbert_directory(tmp_path):
    if not hasattr(transformers, "ModernBertForMaskedLM"):
        pytest.skip("this transformers has no ModernBERT")
    torch.manual_seed(1)
    cfg = transformers.ModernBertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=32, max_position_embeddings=64, pad_token_id=0,
                                        bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
                                        global_attn_every_n_layers=1, local_attention=16)
    d = tmp_path / "modernbert"
    transformers.ModernBertForMaskedLM(cfg).save_pretrained(d)
    with pytest.raises(UserError, match="no mask token: config.json has no mask_token_id and there is no tokenizer"):
        load_model(str(d))
    _tokenizer().save_pretrained(d)
    model = load_model(str(d))
    assert model.length == 64 and model.graph.num_tokens == N and model.meta["architecture"] == "ModernBertForMaskedLM"
    x, sigma = _lsdd_inputs(length=12)
    net = transformers.AutoModelForMaskedLM.from_pretrained(str(d), local_files_only=True).eval()
    with torch.no_grad():
        logits = net(input_ids=model.ids.model_ids(x)).logits.double()
    probs = torch.softmax(logits[..., [i for i in range(VOCAB) if i != MASK]], dim=-1)
    masked = x == N
    want = probs / torch.expm1(sigma.double())[:, None, None]
    torch.testing.assert_close(model.score_fn(x, sigma).double()[..., :N][masked], want[masked], rtol=2e-5, atol=0)
    assert lsdd.sample(model, Sampler.base("euler", 3), num=2, seed=0).nfe == 3


def test_not_a_masked_lm_and_length_errors(tmp_path, bert, capsys):
    gpt = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=VOCAB,
                                                         n_positions=16, bos_token_id=0, eos_token_id=0)
                                 ).save_pretrained(gpt)
    with pytest.raises(UserError, match="GPT2LMHeadModel, which is not a masked LM"):
        load_model(str(gpt))
    capsys.readouterr()
    assert main(["sample", "--model", str(gpt), "--steps", "2", "--out", str(tmp_path / "g.npy")]) == 2
    err = capsys.readouterr().err.strip().split("\n")
    assert len(err) == 1 and "not a masked LM" in err[0]
    with pytest.raises(UserError, match="takes at most 32 positions"):
        load_model(str(bert), length=33)
    with pytest.raises(UserError, match="fixed length of 64 tokens"):
        load_model("countdown", length=8)
    assert main(["sample", "--model", "countdown", "--length", "8", "--steps", "2", "--device", "cpu",
                 "--out", str(tmp_path / "c.npy")]) == 2
    assert "--length sets the length of transformers masked LMs" in capsys.readouterr().err
    assert load_model("countdown", length=64).length == 64


def test_missing_transformers_is_a_user_error(bert, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UserError, match="needs `transformers`"):
        load_model(str(bert))


# -- a model whose code ships in its directory (LLaDA, Dream) ------------------------------------------------------

CONFIG_CODE = '''
from transformers import PretrainedConfig


class ToyConfig(PretrainedConfig):
    model_type = "{model_type}"

    def __init__(self, vocab_size=12, hidden=8, max_position_embeddings=16, mask_token_id=7, **kwargs):
        self.vocab_size, self.hidden = vocab_size, hidden
        self.max_position_embeddings, self.mask_token_id = max_position_embeddings, mask_token_id
        super().__init__(**kwargs)
'''

MODEL_CODE = '''
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_toy import ToyConfig


class ToyModel(PreTrainedModel):
    """Embedding, one bidirectional mixing layer (the mean over positions), a linear head."""

    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden)
        self.pos = torch.nn.Embedding(config.max_position_embeddings, config.hidden)
        self.head = torch.nn.Linear(2 * config.hidden, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, **kwargs):
        h = self.embed(input_ids) + self.pos(torch.arange(input_ids.shape[1], device=input_ids.device))
        ctx = h.mean(1, keepdim=True).expand_as(h)
        return MaskedLMOutput(logits=self.head(torch.cat([h, ctx], -1)))
'''


@pytest.fixture(scope="module")
def remote_dirs(tmp_path_factory):
    """Two directories whose model class is their own code: LLaDA-style (model_type toy-llada) and Dream-style
    (model_type dream: shifted logits). transformers copies such code to its modules cache: a temporary one."""
    import importlib.util

    from transformers import dynamic_module_utils

    root = tmp_path_factory.mktemp("remote")
    mp = pytest.MonkeyPatch()
    mp.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(root / "modules_cache"))
    dirs = {}
    for kind, model_type in (("llada", "toy-llada"), ("dream", "dream")):
        d = root / kind
        d.mkdir()
        (d / "configuration_toy.py").write_text(CONFIG_CODE.format(model_type=model_type))
        (d / "modeling_toy.py").write_text(MODEL_CODE)
        pkg = f"toy_{kind}_pkg"
        for name in ("configuration_toy", "modeling_toy"):
            spec = importlib.util.spec_from_file_location(f"{pkg}.{name}", d / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[f"{pkg}.{name}"] = module
            if name == "configuration_toy":
                sys.modules[pkg] = type(sys)(pkg)
                sys.modules[pkg].__path__ = [str(d)]
            spec.loader.exec_module(module)
        torch.manual_seed(2)
        net = sys.modules[f"{pkg}.modeling_toy"].ToyModel(sys.modules[f"{pkg}.configuration_toy"].ToyConfig())
        net.save_pretrained(d)
        doc = json.loads((d / "config.json").read_text())
        doc["auto_map"] = {"AutoConfig": "configuration_toy.ToyConfig", "AutoModel": "modeling_toy.ToyModel"}
        (d / "config.json").write_text(json.dumps(doc))
        dirs[kind] = (d, net.eval())
    yield dirs
    mp.undo()


def test_remote_code_needs_the_flag(remote_dirs, tmp_path, capsys):
    d, _ = remote_dirs["llada"]
    assert detect_format(d) == "masked-lm"
    with pytest.raises(UserError, match="pass --trust-remote-code"):
        load_model(str(d))
    capsys.readouterr()
    assert main(["sample", "--model", str(d), "--steps", "2", "--out", str(tmp_path / "r.npy")]) == 2
    err = capsys.readouterr().err.strip().split("\n")
    assert len(err) == 1 and "configuration_toy.py, modeling_toy.py" in err[0] and "--trust-remote-code" in err[0]
    doc = json.loads((d / "config.json").read_text())
    nomask = tmp_path / "nomask"
    nomask.mkdir()
    (nomask / "config.json").write_text(json.dumps({k: v for k, v in doc.items() if k != "mask_token_id"}))
    with pytest.raises(UserError, match="not a masked LM"):
        detect_format(nomask)  # an auto_map model without a mask token is not taken for one


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_remote_code_model_with_the_flag(remote_dirs, kind, tmp_path):
    d, net = remote_dirs[kind]
    model = load_model(str(d), trust_remote_code=True, length=10)
    assert model.meta["remote_code"] and model.meta["shift_logits"] == (kind == "dream")
    assert model.graph.num_tokens == 11 and model.ids.mask_id == 7 and model.tokenizer is None
    assert type(model.module).__module__.startswith("transformers_modules.")  # loaded by transformers from DIR
    x, sigma = _lsdd_inputs(length=10, num_tokens=11)
    with torch.no_grad():
        logits = net(input_ids=model.ids.model_ids(x)).logits.double()
    if kind == "dream":  # position i reads the prediction made at position i - 1
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    probs = torch.softmax(logits[..., [i for i in range(12) if i != 7]], dim=-1)
    masked = x == 11
    want = probs / torch.expm1(sigma.double())[:, None, None]
    torch.testing.assert_close(model.score_fn(x, sigma).double()[..., :11][masked], want[masked], rtol=2e-5, atol=0)
    out = tmp_path / "r.npy"
    assert main(["sample", "--model", str(d), "--trust-remote-code", "--length", "10", "--steps", "3", "--num", "2",
                 "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    assert np.load(out).shape == (2, 10)
    if kind == "llada":  # eval reads the model from the sidecar: the flag lets it load, the samples give the length
        assert main(["eval", str(out), "--quiet"]) == 2
        assert main(["eval", str(out), "--trust-remote-code", "--quiet", "--json", str(tmp_path / "m.json")]) == 0
        assert json.loads((tmp_path / "m.json").read_text())["task"] == "tokens"


def test_hidden_states_of_a_transformers_masked_lm_are_its_last_hidden_layer_after_the_head_transform(bert):
    """The ``network`` objective's features on a BERT directory: the input of the vocabulary projection, which for
    BertForMaskedLM is the prediction head's transform of the last hidden layer (transformers computes it itself)."""
    from lsdd.models.features import hidden_states

    model = lsdd.load_model(str(bert), length=8)
    x, sigma = _lsdd_inputs()
    h = hidden_states(model)(x, sigma)
    net = transformers.AutoModelForMaskedLM.from_pretrained(str(bert), local_files_only=True).eval()
    with torch.no_grad():
        last = net(input_ids=model.ids.model_ids(x), output_hidden_states=True).hidden_states[-1]
        want = net.cls.predictions.transform(last)
    assert h.shape == (3, 8, 16) and torch.allclose(h, want, atol=1e-5)
