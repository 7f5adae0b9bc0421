"""The early exit of distribution fits (lsd-c's default): a permutation test of the base's outputs against the
teacher's with the fit's own objective; when they cannot be told apart the fit is skipped and the base kept.
The permutation p-value is checked against the exact share of all splits of a tiny pooled set."""

import itertools
import json

import pytest
import torch

from conftest import countdown_law
from lsdd.cli import main
from lsdd.distillation import distill as engine
from lsdd.distillation.distill import DistillConfig, distill, skipped, to_sampler
from lsdd.distillation.objective import (AT_TEACHER_P, CombinedObjective, FeatureObjective, Guard, NgramObjective,
                                        at_teacher)
from lsdd.distillation.statistics import energy_distance, permutation_p
from lsdd.graphs import Absorbing
from lsdd.noise import LogLinear
from lsdd.sampling.exact import ExactScore

V, L = 2, 3
GRAPH, NOISE = Absorbing(V), LogLinear(1e-3)


@pytest.fixture(scope="module")
def exact():
    return ExactScore(countdown_law(V, L), GRAPH, L)


def test_permutation_p_matches_the_exact_share_of_all_splits():
    g = torch.Generator().manual_seed(3)
    pooled = torch.randn(7, 2, generator=g, dtype=torch.float64)
    pooled[:3] += 0.8  # the first three a little apart
    n = 3

    def stat(i, j):
        return energy_distance(pooled[i], pooled[j])

    observed = stat(torch.arange(n), torch.arange(n, 7))
    splits = list(itertools.combinations(range(7), n))
    exact_share = sum(stat(torch.tensor(s), torch.tensor([k for k in range(7) if k not in s])) >= observed - 1e-12
                      for s in splits) / len(splits)
    p = permutation_p(stat, 7, n, observed, permutations=4000, seed=0)
    assert abs(p - exact_share) < 0.02 and 0.0 < exact_share < 1.0
    assert p == permutation_p(stat, 7, n, observed, permutations=4000, seed=0)  # seeded
    with pytest.raises(ValueError, match="both sides"):
        permutation_p(stat, 7, 0, observed)


def test_clearly_different_sets_get_the_smallest_p_and_copies_a_large_one():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 2, generator=g, dtype=torch.float64)
    b = torch.randn(40, 2, generator=g, dtype=torch.float64) + 3.0
    pooled = torch.cat([a, b])
    far = permutation_p(lambda i, j: energy_distance(pooled[i], pooled[j]), 80, 40, energy_distance(a, b),
                        permutations=99)
    assert far == 1 / 100 and not at_teacher(far)
    twins = torch.cat([a, a])
    near = permutation_p(lambda i, j: energy_distance(twins[i], twins[j]), 80, 40, energy_distance(a, a),
                         permutations=99)
    assert near > 0.9 and at_teacher(near)


def test_objective_tests_report_the_objective_itself(exact):
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, V, (24, L), generator=g)
    x = torch.randint(0, V, (16, L), generator=g)
    for obj in (NgramObjective("mmd", GRAPH.num_states, target), NgramObjective("hellinger", GRAPH.num_states, target),
                FeatureObjective(exact, GRAPH, NOISE, target, seed=0, batch_size=8)):
        value, p = obj.test(x, permutations=20)
        assert value == pytest.approx(obj(x), abs=1e-12) and 1 / 21 <= p <= 1.0
    with pytest.raises(ValueError, match="unknown distribution objective"):
        NgramObjective("kl", GRAPH.num_states, target)


def _terms(exact, seed: int):
    """(target (24, L), a sample set (16, L), the features term, the n-gram MMD^2 term) from random tokens."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, V, (24, L), generator=g)
    x = torch.randint(0, V, (16, L), generator=g)
    return target, x, FeatureObjective(exact, GRAPH, NOISE, target, seed=0, batch_size=8), \
        NgramObjective("mmd", GRAPH.num_states, target)


def test_combined_objective_counts_each_term_in_units_of_its_noise(exact):
    target, x, feat, ngram = _terms(exact, 2)
    both = CombinedObjective(feat, ngram)
    with pytest.raises(RuntimeError, match="calibrate"):
        both(x)
    s_f, s_m = both.calibrate(x, permutations=50, seed=0)
    assert s_f > 0 and s_m > 0 and both.calibrate(x, permutations=50, seed=0) == (s_f, s_m)  # seeded
    assert both(x) == pytest.approx(feat(x) / s_f + ngram(x) / s_m, rel=1e-12)
    value, p = both.test(x, permutations=30)
    assert value == pytest.approx(both(x), rel=1e-12) and 1 / 31 <= p <= 1.0
    # a far set: the smallest p; the fit runs end to end on it
    far = torch.zeros(16, L, dtype=torch.long)
    assert both.test(far, permutations=30)[1] == 1 / 31


def test_a_guard_term_counts_only_where_it_is_worse_than_at_the_start(exact):
    target, start, feat, ngram = _terms(exact, 3)
    guarded = CombinedObjective(feat, Guard(ngram))
    assert [t.label for t in guarded.terms] == ["features", "mmd-guard"]
    s_f, s_m = guarded.calibrate(start, permutations=50, seed=0)
    assert s_m == CombinedObjective(feat, ngram).calibrate(start, permutations=50, seed=0)[1]  # the same noise
    # at the start the guard adds nothing; a set farther from the target's n-grams pays its excess in noise units,
    # one nearer gets no credit for it
    assert guarded(start) == pytest.approx(feat(start) / s_f, rel=1e-12)
    far = torch.zeros(16, L, dtype=torch.long)
    assert ngram(far) > ngram(start)
    assert guarded(far) == pytest.approx(feat(far) / s_f + (ngram(far) - ngram(start)) / s_m, rel=1e-12)
    near = target[:16]
    assert ngram(near) < ngram(start) and guarded(near) == pytest.approx(feat(near) / s_f, rel=1e-12)
    with pytest.raises(ValueError, match="not a guard"):
        CombinedObjective(Guard(ngram), Guard(ngram))


def _cfg(**kw):
    return DistillConfig(**{"nfe": 4, "teacher_nfe": 4, "num_traj": 64, "method": "lsd-c", "obj_samples": 64,
                            "cma_iters": 2, "cma_popsize": 4, "val_samples": 32, "spread": False, **kw})


def test_a_base_with_the_teachers_law_skips_the_fit(exact, monkeypatch):
    """Teacher and base are the same rule on the same grid (one law): the test cannot tell them apart, CMA-ES is
    never called, and the artifact is the base sampler with the test's figures in its provenance."""
    def no_fit(*a, **k):
        raise AssertionError("CMA-ES ran although the base is at the teacher's level")

    monkeypatch.setattr(engine, "minimise_cma", no_fit)
    cfg = _cfg()
    res = distill(exact, GRAPH, NOISE, L, cfg, progress=False)
    e = res.early_exit
    assert e["skipped"] and e["base"] and e["p"] >= AT_TEACHER_P and res.validation is None and skipped(res)
    assert len(res.history) == 1 and res.history[0]["loss_phi"] == e["objective"]
    art = to_sampler(res, cfg, None, {})
    assert not art.learned and art.coeffs is None and art.conditioning is None and art.movers == "independent"
    assert art.provenance["early_exit"]["skipped"] and "nothing was fitted" in art.provenance["written"]


def test_a_base_far_from_the_teacher_is_fitted(exact):
    cfg = _cfg(nfe=1, teacher_nfe=16, obj_samples=128, validation=False)
    res = distill(exact, GRAPH, NOISE, L, cfg, progress=False)
    e = res.early_exit
    assert not e["skipped"] and e["p"] < AT_TEACHER_P and not skipped(res)
    assert len(res.history) == 1 + cfg.cma_iters and res.history[0]["loss_phi"] == e["objective"]
    off = distill(exact, GRAPH, NOISE, L, _cfg(early_exit=False), progress=False)
    assert off.early_exit is None and len(off.history) == 1 + 2
    both = distill(exact, GRAPH, NOISE, L, _cfg(nfe=1, teacher_nfe=16, obj_samples=128, validation=False,
                                               objective="features+mmd"), progress=False)
    assert not both.early_exit["skipped"] and both.history[-1]["best_so_far"] <= both.history[0]["loss_phi"]


def test_cli_says_why_nothing_was_fitted(exact, tmp_path, capsys):
    from test_conditioned import _tiny_model

    model = _tiny_model(tmp_path / "m", "absorbing")
    out = tmp_path / "c.json"
    rc = main(["distill", "--model", model, "--nfe", "4", "--teacher-nfe", "4", "--num-traj", "32", "--no-spread",
               "--obj-samples", "32", "--out", str(out)])
    text = capsys.readouterr().out
    art = json.loads(out.read_text())
    e = art["provenance"]["early_exit"]
    assert rc == 0 and e["skipped"] and e["p"] >= AT_TEACHER_P  # teacher and base: one law
    assert "nothing is left to fit" in text and "--no-early-exit" in text and "validation at" not in text
    assert art.get("conditioning") is None and "nothing was fitted" in art["provenance"]["written"]
