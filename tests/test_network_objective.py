"""The ``network`` distribution objective: the energy distance between pooled hidden states of the frozen network
(the input of its output projection, found by shape in one ordinary forward pass), for lsdd's DiT and for any
clean-logit module; refused, before any teacher, for a bare score function. And ``nll@entropy``: the model's NLL
bound moved along the base's temperature frontier to the teacher's entropy (exact on fixed features)."""

import pytest
import torch
from torch import nn

import lsdd
from lsdd.distillation import pipeline
from lsdd.distillation.objective import (CombinedObjective, FeatureObjective, NetworkObjective, NgramObjective,
                                        make_objective, needs_network)
from lsdd.errors import UserError
from lsdd.models import ScoreModel
from lsdd.models.features import hidden_states, pooled


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from test_conditioned import _tiny_model

    return lsdd.load_model(_tiny_model(tmp_path_factory.mktemp("m") / "m", "uniform"))


def test_hidden_states_are_the_input_of_the_output_projection(tiny):
    net = tiny.module
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, tiny.graph.num_states, (5, tiny.length), generator=g)
    sigma = torch.full((5,), 0.3)
    h = hidden_states(tiny)(x, sigma)
    # the same computation, by hand: blocks, then the output layer's adaLN; its linear map gives the logits
    import torch.nn.functional as F
    from lsdd.models.dit import modulate

    with torch.no_grad():
        z = net.vocab_embed(x)
        c = F.silu(net.sigma_map(sigma))
        cos, sin = net.rotary_emb.cos_sin(x.shape[1])
        for block in net.blocks:
            z = block(z, c, cos, sin)
        shift, scale = net.output_layer.adaLN_modulation(c)[:, None].chunk(2, -1)
        want = modulate(net.output_layer.norm_final(z), shift, scale)
        assert torch.allclose(net.output_layer.linear(want), net.logits(x, sigma), atol=1e-5)
    assert h.shape == (5, tiny.length, net.config.hidden_size) and torch.allclose(h, want, atol=1e-5)
    # no hook is left behind
    assert all(not m._forward_hooks for m in net.modules())


def test_hidden_states_of_a_clean_logit_module():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 8)
            self.mix = nn.Linear(8, 8)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            return self.head(torch.tanh(self.mix(self.emb(x))))

    torch.manual_seed(0)
    net = Net()
    model = lsdd.from_clean_logits(lambda x, s: net(x), mask_id=4, vocab_size=5, length=6, module=net)
    x = torch.randint(0, 4, (3, 6))
    h = hidden_states(model)(x, torch.full((3,), 0.1))
    with torch.no_grad():
        want = torch.tanh(net.mix(net.emb(model.ids.model_ids(x))))
    assert torch.allclose(h, want, atol=1e-6)
    bare = ScoreModel(model.score_fn, model.graph, model.noise, 6)
    assert hidden_states(bare) is None


def test_pooled_reads_the_generated_positions_only():
    h = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)
    free = torch.tensor([[True, False, True, False]])
    p = pooled(h, free)
    sel = h[0, [0, 2]].double()
    assert torch.allclose(p[0, :3], sel.mean(0)) and torch.allclose(p[0, 3:], sel.std(0, unbiased=False))
    assert torch.allclose(pooled(h)[0, :3], h[0].double().mean(0))


def test_network_objective_separates_laws_and_not_copies(tiny):
    g = torch.Generator().manual_seed(1)
    S, L = tiny.graph.num_states, tiny.length
    target = torch.randint(0, S, (48, L), generator=g)
    same = torch.randint(0, S, (48, L), generator=g)
    other = torch.randint(0, 2, (48, L), generator=g)  # only two of the six tokens
    obj = NetworkObjective(hidden_states(tiny), tiny.noise, target, batch_size=16)
    d_same, p_same = obj.test(same, permutations=50, seed=0)
    d_other, p_other = obj.test(other, permutations=50, seed=0)
    assert d_other > 10 * abs(d_same) and p_other == 1 / 51 and p_same > 0.05
    assert d_other == pytest.approx(obj(other), rel=1e-9)
    # batching does not change the features
    one = NetworkObjective(hidden_states(tiny), tiny.noise, target, batch_size=48)
    assert torch.allclose(one.features(other), obj.features(other), atol=1e-5)


def test_make_objective_builds_every_name_and_combines_terms(tiny):
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, tiny.graph.num_states, (24, tiny.length), generator=g)
    x = torch.randint(0, tiny.graph.num_states, (16, tiny.length), generator=g)
    kw = dict(score_fn=tiny.score_fn, graph=tiny.graph, noise=tiny.noise, target=target, seed=0, batch_size=8,
              hidden_fn=hidden_states(tiny))
    assert isinstance(make_objective("network", **kw), NetworkObjective)
    assert isinstance(make_objective("features", **kw), FeatureObjective)
    assert isinstance(make_objective("mmd", **kw), NgramObjective)
    three = make_objective("features+network+mmd", **kw)
    assert isinstance(three, CombinedObjective) and three.labels == ["features", "network", "mmd"]
    noise = three.calibrate(x, permutations=40, seed=0)
    assert len(noise) == 3 and min(noise) > 1e-9  # a real spread, not the 1e-12 floor
    parts = [t(x) for t in three.terms]
    assert three(x) == pytest.approx(sum(v / s for v, s in zip(parts, noise)), rel=1e-9)
    with pytest.raises(ValueError, match="bare score function"):
        make_objective("network+mmd", **{**kw, "hidden_fn": None})
    with pytest.raises(ValueError, match="unknown distribution objective"):
        make_objective("trajectory", **kw)
    assert needs_network("network+mmd") and not needs_network("features+mmd")


def test_a_bare_score_function_is_refused_before_the_teacher(tiny, monkeypatch):
    def no_teacher(*a, **k):
        raise AssertionError("the teacher ran before the refusal")

    monkeypatch.setattr(pipeline, "get_teacher", no_teacher)
    bare = ScoreModel(tiny.score_fn, tiny.graph, tiny.noise, tiny.length)
    with pytest.raises(UserError, match="hidden states.*bare score function"):
        lsdd.distill(bare, lsdd.LSDC(objective="network"), nfe=2)


def test_distill_with_the_network_objective_end_to_end(tiny, tmp_path):
    method = lsdd.LSDC(objective="network", obj_samples=32, cma_iters=2, cma_popsize=4, early_exit=False)
    sampler, val = lsdd.distill(tiny, method, nfe=2, teacher=lsdd.Teacher(nfe=8, num_traj=32), validate=False,
                                progress=False)
    prov = sampler.provenance
    assert prov["objective"] == "network" and prov["distill_config"]["objective"] == "network"
    assert sampler.nfe == 2 and len(prov["history"]) == 1 + 2


class _Fixed(FeatureObjective):
    """Features read straight from the samples: column 0 / 100 is the 'NLL', column 1 / 100 the 'entropy'."""

    def __init__(self, target):
        super(FeatureObjective, self).__init__(target)  # EnergyObjective.__init__: target features and scale
        self.free = None

    def features(self, x, free=None):
        return x[:, :2].to(torch.float64) / 100.0


def test_nll_at_entropy_is_the_nll_moved_along_the_frontier_to_the_teachers_entropy():
    from lsdd.distillation.objective import MatchedNLLObjective
    from lsdd.distillation.validate import ENTROPY_TOL

    g = torch.Generator().manual_seed(0)
    target = torch.stack([torch.randint(400, 500, (64,), generator=g), torch.randint(420, 440, (64,), generator=g)], 1)
    obj = MatchedNLLObjective(_Fixed(target))
    with pytest.raises(RuntimeError, match="slope"):
        obj(target)
    h_t, n_t = target[:, 1].double().mean() / 100, target[:, 0].double().mean() / 100
    assert obj.entropy_teacher == pytest.approx(float(h_t)) and obj.tol == pytest.approx(ENTROPY_TOL * float(h_t))
    # the base's frontier: two temperatures, NLL rising 3 per unit of entropy
    cold = torch.stack([torch.full((32,), 450), torch.full((32,), 420)], 1)
    warm = torch.stack([torch.full((32,), 456), torch.full((32,), 422)], 1)
    assert obj.calibrate_slope(cold, warm) == pytest.approx(3.0)
    x = torch.stack([torch.randint(380, 460, (40,), generator=g), torch.randint(425, 445, (40,), generator=g)], 1)
    dn = float(x[:, 0].double().mean() / 100 - n_t)
    dh = float(x[:, 1].double().mean() / 100 - h_t)
    assert obj(x) == pytest.approx(dn - 3.0 * dh + 3.0 * dh**2 / obj.tol, rel=1e-9)
    # along a frontier of slope 3 through the teacher, J = 3 dH^2 / tol: smallest at the teacher's entropy
    def on_frontier(d):
        h = float(h_t) + d
        return torch.stack([torch.full((16,), round(100 * (float(n_t) + 3.0 * d)), dtype=torch.float64),
                            torch.full((16,), 100 * h)], 1)

    vals = {d: MatchedNLLObjective._stat(obj, on_frontier(d) / 100, obj.target) for d in (-0.02, 0.0, 0.02)}
    assert vals[0.0] < min(vals[-0.02], vals[0.02])
    # no trade to read: a warmer set that is not more diverse gives slope 0
    assert obj.calibrate_slope(warm, cold) == 0.0
    # the permutation test: a copy of the teacher is not told apart
    obj.calibrate_slope(cold, warm)
    value, p = obj.test(target.clone(), permutations=50)
    assert abs(value) < 1e-12 and p > 0.5


def test_nll_at_entropy_fit_records_its_calibration(tiny):
    method = lsdd.LSDC(objective="nll@entropy+mmd", obj_samples=32, cma_iters=2, cma_popsize=4, early_exit=False)
    sampler, _ = lsdd.distill(tiny, method, nfe=2, teacher=lsdd.Teacher(nfe=8, num_traj=32), validate=False,
                              progress=False)
    cal = sampler.provenance["objective_calibration"]
    # the calibration reaches the file (the slope's value is checked exactly on fixed features above)
    assert "slope" in cal and set(cal["noise"]) == {"nll@entropy", "mmd"} and min(cal["noise"].values()) > 1e-9
    # CMA-ES's first step: this objective's own default unless given
    from lsdd.distillation.objective import default_sigma

    assert cal["cma_sigma"] == default_sigma("nll@entropy+mmd") == 0.2 and default_sigma("features+mmd") == 0.5
    given = lsdd.LSDC(objective="nll@entropy", obj_samples=32, cma_iters=1, cma_popsize=4, early_exit=False,
                      cma_sigma=0.3)
    sampler, _ = lsdd.distill(tiny, given, nfe=2, teacher=lsdd.Teacher(nfe=8, num_traj=32), validate=False,
                              progress=False)
    assert sampler.provenance["objective_calibration"]["cma_sigma"] == 0.3


def test_nll_at_entropy_fit_reads_the_slope_on_validations_chord(tiny, monkeypatch):
    """The fit's frontier slope comes from the base at T = 1 (the start's own outputs, reused) and at validation's
    colder probe: the side of the curved frontier that validation reads, not a secant across T = 1."""
    from lsdd.distillation import distill as distill_mod
    from lsdd.distillation.objective import MatchedNLLObjective
    from lsdd.distillation.validate import PROBE_TEMPERATURE, SLOPE_TEMPERATURES

    assert SLOPE_TEMPERATURES == (PROBE_TEMPERATURE, 1.0)
    temps, pairs = [], []
    tempered = distill_mod.tempered_score
    monkeypatch.setattr(distill_mod, "tempered_score", lambda fn, t: temps.append(t) or tempered(fn, t))
    calibrate = MatchedNLLObjective.calibrate_slope
    monkeypatch.setattr(MatchedNLLObjective, "calibrate_slope",
                        lambda self, cold, warm: pairs.append((cold, warm)) or calibrate(self, cold, warm))
    method = lsdd.LSDC(objective="nll@entropy+mmd", obj_samples=32, cma_iters=1, cma_popsize=4, early_exit=False)
    sampler, _ = lsdd.distill(tiny, method, nfe=2, teacher=lsdd.Teacher(nfe=8, num_traj=32), validate=False,
                              progress=False)
    assert temps == [PROBE_TEMPERATURE]  # one colder draw; T = 1 is the start's outputs
    (cold, warm), = pairs
    base = distill_mod.base_sampler(distill_mod.DistillConfig(nfe=2, method="lsd-c"))
    again = lsdd.sample(tiny, base, num=32, seed=distill_mod.derive_seed(0, 11)).x
    assert torch.equal(warm, again.to(warm.device)) and not torch.equal(cold, warm)


def test_lsdc_default_objective_is_decided_by_the_graph(tiny):
    from lsdd.distillation.distill import DistillConfig
    from lsdd.distillation.objective import DEFAULT_OUTPUT_OBJECTIVE, MASKED_OUTPUT_OBJECTIVE, resolve_objective
    from lsdd.graphs import make_graph

    assert lsdd.LSDC().objective == "auto"
    assert resolve_objective("lsd", "auto") == resolve_objective("lsd+", "auto", True) == "trajectory"
    assert resolve_objective("lsd-c", "auto") == "auto"  # the model is not known yet
    assert resolve_objective("lsd-c", "auto", True) == MASKED_OUTPUT_OBJECTIVE
    assert resolve_objective("lsd-c", "auto", False) == DEFAULT_OUTPUT_OBJECTIVE
    assert resolve_objective("lsd-c", "mmd", True) == "mmd"  # a name given is kept
    cfg = DistillConfig(nfe=2, method="lsd-c")
    absorbing, uniform = make_graph("absorbing", 8), make_graph("uniform", 8)
    assert cfg.resolve(absorbing).resolved_objective() == MASKED_OUTPUT_OBJECTIVE
    assert cfg.resolve(uniform).resolved_objective() == DEFAULT_OUTPUT_OBJECTIVE
    # the file records the objective that was fitted, not "auto" (tiny is a uniform-graph model)
    method = lsdd.LSDC(obj_samples=32, cma_iters=1, cma_popsize=4, early_exit=False)
    sampler, _ = lsdd.distill(tiny, method, nfe=2, teacher=lsdd.Teacher(nfe=8, num_traj=32), validate=False,
                              progress=False)
    assert sampler.provenance["objective"] == DEFAULT_OUTPUT_OBJECTIVE
    assert sampler.provenance["distill_config"]["objective"] == DEFAULT_OUTPUT_OBJECTIVE
