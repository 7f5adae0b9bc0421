"""The Sampler value: what it is, its file and the files of earlier versions, and that `lsdd.sample` draws exactly
the law the value describes (checked against the loop driven by hand on an exact toy)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import countdown_law
from lsdd.errors import UserError
from lsdd.graphs import Absorbing
from lsdd.models import ScoreModel
from lsdd.noise import LogLinear
from lsdd.sampling.conditioned import ConditionedParams, ConditionedRule
from lsdd.sampling.exact import ExactScore, exact_sampler_law
from lsdd.sampling.generate import sample
from lsdd.sampling.sampler import Sampler
from lsdd.sampling.samplers import sample_batched
from lsdd.sampling.schedules import uniform_times

V, L, M = 3, 3, 2
GRAPH, NOISE = Absorbing(V), LogLinear(1e-3)


@pytest.fixture(scope="module")
def exact():
    return ExactScore(countdown_law(V, L), GRAPH, L)


def _v2(conditioning, coeffs=(0.7, 1.0)):
    return {"format": "lsdd-learned-sampler", "format_version": 2, "base": "euler", "graph": "absorbing",
            "num_tokens": V, "noise": NOISE.to_dict(), "times": [1.0, 0.5, 1e-5], "coeffs": list(coeffs),
            "phi_mode": "linear", "provenance": {"method": "lsd", "model_fingerprint": "abc"}, "nfe": 2,
            "conditioning": conditioning}


def test_a_version_2_spread_file_is_the_same_law_as_movers(exact):
    # what earlier lsdd wrote for LSD with spread movers: coefficients plus "fake" lsd-c conditioning
    old = _v2({"feature": "confidence", "slope": [0.0, 0.0], "beta": [1.0, 1.0], "count": "spread"})
    s = Sampler.from_dict(old)
    assert s.movers == "spread" and s.conditioning is None and s.coeffs == (0.7, 1.0) and s.rule == "euler"
    assert s.model == {"graph": "absorbing", "num_tokens": V, "noise": NOISE.to_dict(), "fingerprint": "abc",
                       "source": None}
    law = exact_sampler_law(exact, GRAPH, NOISE, s.times_tensor(), L, **s.loop_args(GRAPH))
    # the reference is what version 2 meant, built by hand: the conditioned rule with those numbers
    p = ConditionedParams.from_count(2, "spread", torch.tensor([0.7, 1.0], dtype=torch.float64).log(),
                                     torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    ref = exact_sampler_law(exact, GRAPH, NOISE, s.times_tensor(), L, method=ConditionedRule("euler"),
                            coeffs=p.requires_grad_(False).coeff_fn(GRAPH))
    assert torch.equal(law, ref)
    # and it is not the independent-movers law: the field is read
    indep = exact_sampler_law(exact, GRAPH, NOISE, s.times_tensor(), L, coeffs=s.coeffs_tensor())
    assert float((law - indep).abs().sum()) > 1e-3


def test_round_trip_and_the_file_format(tmp_path):
    s = Sampler([1.0, 0.6, 1e-5], "tweedie", [0.5, 2.0], phi_mode="log", temperature=0.9,
                model={"graph": "absorbing", "num_tokens": V, "noise": NOISE.to_dict()}, provenance={"method": "lsd"})
    s.save(tmp_path / "s.json")
    d = json.loads((tmp_path / "s.json").read_text())
    assert d["format"] == "lsdd-sampler" and d["format_version"] == 3 and d["nfe"] == 2 and d["rule"] == "tweedie"
    assert Sampler.load(tmp_path / "s.json") == s
    # theta rules: nfe counts both calls of a step
    t = Sampler.base("theta-rk2", 8, theta=0.3)
    assert t.steps == 4 and t.nfe == 8 and Sampler.from_dict(t.to_dict()) == t
    with pytest.raises(UserError, match="nfe must be a positive multiple of 2"):
        Sampler.base("theta-trapezoidal", 3)


@pytest.mark.parametrize("change, msg", [
    ({"nfe": 3}, "nfe is 3"),
    ({"rule": "heun"}, "unknown step rule 'heun'"),
    ({"movers": "some"}, "unknown movers 'some'"),
    ({"rule": "theta-rk2", "movers": "spread"}, "need a one-call rule"),
    ({"theta": 0.5}, "theta applies to"),
    ({"temperature": 0}, "temperature must be > 0"),
    ({"coeffs": [1.0]}, "3 times need 2 coeffs"),
    ({"times": [1.0, 1e-5, 0.5]}, "strictly decreasing"),
    ({"format_version": 4}, "unsupported format_version 4"),
    ({"model": {"graph": "absorbing"}}, "field 'model' must be an object with graph, num_tokens and noise"),
])
def test_bad_files_name_the_bad_field(change, msg):
    good = Sampler.euler(2).to_dict()
    with pytest.raises(UserError, match=msg):
        Sampler.from_dict({**good, **change}, "x.json")


def test_sample_draws_what_the_value_says(exact):
    model = ScoreModel(exact, GRAPH, NOISE, L, fingerprint="toy")
    for smp in (Sampler.euler(M), Sampler.spread(M), Sampler([1.0, 0.4, 1e-5], "euler", [0.6, 1.3])):
        out = sample(model, smp, 40, seed=5, batch_size=16)
        want = sample_batched(exact, GRAPH, NOISE, smp.times_tensor(), 40, L, seed=5, batch_size=16,
                              **smp.loop_args(GRAPH))
        assert out.nfe == smp.nfe == M and torch.equal(out.x, want.x)
    # Sampler.euler is the uniform grid with the plain rule: the same draws as the loop with no coefficients
    plain = sample_batched(exact, GRAPH, NOISE, uniform_times(M), 40, L, seed=5, batch_size=16, method="euler")
    assert torch.equal(sample(model, Sampler.euler(M), 40, seed=5, batch_size=16).x, plain.x)
    # the temperature is part of the value; T = 1 is the identity
    hot = sample(model, Sampler.euler(M).with_temperature(3.0), 40, seed=5, batch_size=16)
    assert not torch.equal(hot.x, plain.x)


def test_a_sampler_refuses_another_model():
    made_for = {"graph": "absorbing", "num_tokens": V, "noise": NOISE.to_dict(), "fingerprint": "aaa", "source": "m"}
    s = Sampler.euler(2).replace(model=made_for)
    other = ScoreModel(lambda x, sig: torch.ones(*x.shape, V + 1), GRAPH, NOISE, L, fingerprint="bbb")
    with pytest.raises(UserError, match="pass --force"):
        s.check_model(other)
    s.check_model(other, force=True)  # same graph and noise: forced through
    bigger = ScoreModel(other.score_fn, Absorbing(V + 1), NOISE, L, fingerprint="aaa")
    with pytest.raises(UserError, match="made for a model with the absorbing graph and 3 tokens"):
        s.check_model(bigger, force=True)  # another size is never forced
    Sampler.euler(2).check_model(bigger)  # a training-free sampler fits any model
