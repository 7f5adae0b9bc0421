"""The compact teacher cache ("states"): same teacher scores, same learned sampler, a fraction of the bytes."""

from __future__ import annotations

import pytest
import torch

from lsdd.distillation.distill import DistillConfig, distill, make_teacher
from lsdd.models.dit import DiTConfig, ScoreDiT
from lsdd.graphs import make_graph
from lsdd.noise import noise_from_dict
from lsdd.sampling.schedules import uniform_times
from lsdd.distillation.teacher import choose_store, full_cache_bytes, run_teacher


def _model(graph="absorbing"):
    noise = {"type": "loglinear", "eps": 1e-3} if graph == "absorbing" else {"type": "geometric"}
    cfg = DiTConfig(num_tokens=7, graph=graph, noise=noise, length=10, hidden_size=32, cond_dim=16, n_blocks=1,
                    n_heads=2)
    torch.manual_seed(0)
    net = ScoreDiT(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    net.eval()

    def score(x, sigma):
        with torch.no_grad():
            return net(x, sigma).exp()

    return score, make_graph(graph, 7), noise_from_dict(cfg.noise)


@pytest.mark.parametrize("graph", ["absorbing", "uniform"])
def test_states_cache_recomputes_the_teachers_scores(graph):
    score, g, noise = _model(graph)
    times = uniform_times(4, 1e-3)
    kw = dict(method="euler", batch_size=5, seed=3, progress=False)
    full = run_teacher(score, g, noise, times, 16, 12, 10, store="scores", **kw)
    small = run_teacher(score, g, noise, times, 16, 12, 10, store="states", **kw).attach(score, g, noise)
    # only the states are kept: (n, L) int64 per student step
    assert small.nbytes() == 4 * 12 * 10 * 8 < full.nbytes()
    for k in range(4):
        assert torch.equal(full.states[k], small.states[k])  # same trajectories (same streams)
        idx = torch.tensor([7, 0, 11, 3])
        xa, sa, va = full.score_at(k, idx)
        xb, sb, vb = small.score_at(k, idx)
        assert torch.equal(xa, xb) and torch.equal(sa, sb)
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6)
        assert small.mean_sq(k) == pytest.approx(full.mean_sq(k), rel=1e-6)
    assert small.recomputed_calls > 0


def test_states_cache_learns_the_same_sampler():
    score, g, noise = _model()
    cfg = dict(nfe=4, teacher_nfe=16, epochs=3, num_traj=24, batch_size=8, chunk=4, validation=False, seed=1)
    results = {}
    for store in ("scores", "states"):
        c = DistillConfig(teacher_store=store, **cfg)
        cache = make_teacher(score, g, noise, 10, c, progress=False)
        assert cache.store == store
        results[store] = distill(score, g, noise, 10, c, cache=cache, progress=False)
    a, b = results["scores"], results["states"]
    assert not torch.allclose(a.coeffs, torch.ones(4, dtype=a.coeffs.dtype), atol=1e-3)  # something was learned
    torch.testing.assert_close(a.coeffs, b.coeffs, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(a.times, b.times)


def test_states_cache_serves_lsd_plus_with_an_lsd_start_and_selection():
    """LSD+ --init-lsd --select fits LSD first on the training share of the cache: in the "states" store that share
    recomputes its scores too (it once lost the store and read empty score lists), so both stores agree."""
    score, g, noise = _model()
    cfg = dict(nfe=4, teacher_nfe=16, epochs=2, num_traj=24, batch_size=8, chunk=4, seed=1, method="lsd+",
               init_lsd=True, select=True, val_samples=16)
    results = {}
    for store in ("scores", "states"):
        c = DistillConfig(teacher_store=store, **cfg)
        results[store] = distill(score, g, noise, 10, c, cache=make_teacher(score, g, noise, 10, c, progress=False),
                                 progress=False)
    a, b = results["scores"], results["states"]
    assert a.selection["kept"] == b.selection["kept"]
    assert not torch.allclose(a.coeffs, torch.ones(4, dtype=a.coeffs.dtype), atol=1e-3)  # something was learned
    torch.testing.assert_close(a.coeffs, b.coeffs, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(a.times, b.times, rtol=1e-5, atol=1e-7)


def test_auto_store_and_paper_scale_bytes():
    # V = 50,257, L = 1,024, M = 8: ~823 MB of score rows per trajectory; auto switches to states
    per_traj = full_cache_bytes(1, 1024, 50257, 8)
    assert 8.2e8 < per_traj < 8.3e8
    assert choose_store("auto", 256, 1024, 50257, 8) == "states"
    assert choose_store("auto", 256, 64, 32, 8) == "scores"
    with pytest.raises(ValueError, match="unknown teacher store"):
        choose_store("topk", 1, 1, 1, 1)
