import pytest
import torch

from lsdd.distillation.distill import DistillConfig, SamplerParams, distill, perturb_start
from lsdd.sampling.exact import ExactScore, all_sequences, exact_state_laws
from lsdd.graphs import Absorbing, Ordinal, Uniform
from lsdd.noise import Geometric, LogLinear
from lsdd.sampling.schedules import refine_times, uniform_times

from conftest import countdown_law, toy_law

L, M, N_TEACHER = 3, 4, 32
GRAPH, NOISE = Absorbing(3), LogLinear(1e-3)


@pytest.fixture(scope="module")
def exact():
    return ExactScore(countdown_law(3, L), GRAPH, L)


def population_optimal_phi(exact, eps=1e-5):
    """The exact optimum of the LSD linear/l2 objective (zeta = 0), by enumeration.

    Teacher and student paths are independent given the all-mask start, so at step k
    Phi_k = E<s(x)_i, s(x*)_i> / E|s(x)_i|^2 over positions i masked in both, x ~ student law at t_k
    (which depends on Phi_<k), x* ~ teacher law at t_k.
    """
    student = uniform_times(M, eps)
    teacher_laws = exact_state_laws(exact, GRAPH, NOISE, refine_times(student, N_TEACHER // M), L)
    states = all_sequences(GRAPH.num_states, L)
    phi = torch.ones(M, dtype=torch.float64)
    for k in range(M):
        q = exact_state_laws(exact, GRAPH, NOISE, student, L, coeffs=phi)[k]  # depends on phi[:k] only
        p = teacher_laws[k * (N_TEACHER // M)]
        sigma = NOISE.total(student[k]).float().expand(states.shape[0])
        s = exact(states, sigma)[..., :3]  # (K, L, N) real-token scores of every state
        masked = states == GRAPH.mask_id  # (K, L)
        both = masked[:, None, :] & masked[None, :, :]  # (K student, K teacher, L)
        w = q[:, None, None] * p[None, :, None] * both
        num = (w * (s[:, None] * s[None, :]).sum(-1)).sum()
        den = (w * (s[:, None] ** 2).sum(-1)).sum()
        phi[k] = num / den
    return phi


def test_distillation_recovers_closed_form_optimum(exact):
    target = population_optimal_phi(exact)
    # the optimum is not trivial: the coarse student meets other contexts than the teacher
    assert (target[1:-1] - 1).abs().max() > 0.05
    common = dict(nfe=M, teacher_nfe=N_TEACHER, method="lsd", phi_mode="linear", loss="l2", zeta=0.0,
                  num_traj=3000, batch_size=500, seed=0, spread=False)  # the optimum above has independent movers
    fast = distill(exact, GRAPH, NOISE, L, DistillConfig(closed_form=True, epochs=2, **common), progress=False)
    adam = distill(exact, GRAPH, NOISE, L, DistillConfig(epochs=40, lr=0.05, **common), progress=False)
    # both the closed-form fast path and Adam land on the population optimum (Monte Carlo error ~1%)
    torch.testing.assert_close(fast.coeffs[:-1], target[:-1], atol=0.03, rtol=0)
    torch.testing.assert_close(adam.coeffs[:-1], fast.coeffs[:-1], atol=0.03, rtol=0)
    # the linear Phi of the forced last step cancels in sampling; both still fit it
    assert abs(float(fast.coeffs[-1] - target[-1])) < 0.05


def test_lsd_plus_grid_stays_valid_and_moves(exact):
    cfg = DistillConfig(nfe=M, teacher_nfe=N_TEACHER, method="lsd+", phi_mode="log", loss="kl", zeta=0.34,
                        num_traj=256, batch_size=64, epochs=6, lr_time=0.2, seed=1)
    out = distill(exact, GRAPH, NOISE, L, cfg, progress=False)
    t = out.times
    # the grid was learned: it moved away from uniform, by more than rounding
    assert (t - uniform_times(M, cfg.eps)).abs().max() > 0.01
    # and it was trained for exactly the configured epochs, each recording both losses
    assert [h["epoch"] for h in out.history] == list(range(1, 7))
    assert all(h["loss_time"] > 0 for h in out.history)


def test_distill_is_deterministic(exact):
    cfg = DistillConfig(nfe=M, teacher_nfe=8, method="lsd+", phi_mode="log", loss="l2", num_traj=64,
                        batch_size=32, epochs=2, seed=3)
    a = distill(exact, GRAPH, NOISE, L, cfg, progress=False)
    b = distill(exact, GRAPH, NOISE, L, cfg, progress=False)
    c = distill(exact, GRAPH, NOISE, L, DistillConfig(**{**cfg.__dict__, "seed": 4}), progress=False)
    # same seed, same sampler, bit for bit; it learned something, and another seed learns something else
    assert torch.equal(a.coeffs, b.coeffs) and torch.equal(a.times, b.times)
    assert not torch.equal(a.coeffs, torch.ones(M, dtype=torch.float64))
    assert not torch.equal(a.coeffs, c.coeffs)


def test_resume_matches_uninterrupted(exact):
    cfg = DistillConfig(nfe=M, teacher_nfe=8, method="lsd+", phi_mode="linear", loss="kl", num_traj=64,
                        batch_size=32, epochs=4, seed=2)
    full = distill(exact, GRAPH, NOISE, L, cfg, progress=False)
    states = []
    part_cfg = DistillConfig(**{**cfg.__dict__, "epochs": 2})
    distill(exact, GRAPH, NOISE, L, part_cfg, progress=False, on_epoch=lambda rec, st: states.append(st))
    resumed = distill(exact, GRAPH, NOISE, L, cfg, progress=False, state=states[-1])
    # the resumed run kept the first two epochs' records (wall times included) and ran only epochs 3-4
    assert resumed.history[:2] == states[-1]["history"] and len(resumed.history) == 4
    torch.testing.assert_close(resumed.coeffs, full.coeffs, rtol=0, atol=0)
    torch.testing.assert_close(resumed.times, full.times, rtol=0, atol=0)


def test_softmax_grid_parameterisation():
    p = SamplerParams(5, 1e-5, learn_times=True)
    # theta = 0 is the uniform grid
    torch.testing.assert_close(p.times().detach(), uniform_times(5, 1e-5))
    with torch.no_grad():
        p.theta.copy_(torch.tensor([3.0, -2.0, 0.5, 0.0, 1.0]))
    t = p.times().detach()
    # tau_k = 1 - (1 - eps) cumsum(softmax(theta))_k, by hand
    w = torch.exp(torch.tensor([3.0, -2.0, 0.5, 0.0, 1.0], dtype=torch.float64))
    kappa = (1 - 1e-5) * w / w.sum()
    ref = torch.cat([torch.ones(1, dtype=torch.float64), 1 - torch.cumsum(kappa, 0)])
    torch.testing.assert_close(t, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("graph", [Absorbing(5), Uniform(5), Ordinal(5)], ids=lambda g: g.name)
def test_perturb_start_hamming_distance(graph):
    g = torch.Generator().manual_seed(0)
    x = graph.sample_limit(50, 40, generator=g)
    y = perturb_start(x, graph, 0.05, g)
    # exactly ceil(zeta L) = 2 positions change, to real tokens, and a fresh draw each call
    assert ((x != y).sum(-1) == 2).all()
    assert (y[x != y] < graph.num_tokens).all()
    assert not torch.equal(y, perturb_start(x, graph, 0.05, g))
    assert torch.equal(perturb_start(x, graph, 0.0, g), x)


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="multiple of the student nfe 8"):
        DistillConfig(nfe=8, teacher_nfe=100).validate()
    with pytest.raises(ValueError, match="closed-form fast path"):
        DistillConfig(closed_form=True, phi_mode="log").validate()


def test_teacher_cache_with_no_movable_rows_at_a_step():
    # a student step at which no teacher trajectory has a mask left: nothing is stored, nothing compared
    from lsdd.distillation.teacher import TeacherCache

    states = [torch.full((2, 3), 3), torch.zeros(2, 3, dtype=torch.long)]
    rows = [torch.arange(6).view(2, 3), torch.full((2, 3), -1)]
    scores = [torch.rand(6, 3), torch.zeros(0, 3)]
    cache = TeacherCache(states[0], states, rows, scores, states[1], uniform_times(2), 8, 16, 0.0)
    x, stored, s = cache.score_at(1, torch.tensor([1, 0]))
    assert not stored.any() and s.shape == (2, 3, 3) and (s == 0).all()
    x, stored, s = cache.score_at(0, torch.tensor([1]))
    torch.testing.assert_close(s[0], scores[0][3:6])


@pytest.mark.parametrize("base", ["euler", "tweedie"])
def test_lsd_plus_on_the_ordinal_graph(base):
    # LSD+ on the ordinal graph (rates that depend on the target value), exact scores of a toy law over 3 levels
    graph, noise, length = Ordinal(3, bandwidth=1.0), Geometric(1e-3, 8.0), 2
    exact = ExactScore(toy_law(3, length), graph, length)
    cfg = DistillConfig(base=base, nfe=2, teacher_nfe=16, method="lsd+", phi_mode="linear", loss="kl", zeta=0.0,
                        num_traj=128, batch_size=64, epochs=4, lr_time=0.2, seed=0, validation=False)
    out = distill(exact, graph, noise, length, cfg, progress=False)
    again = distill(exact, graph, noise, length, cfg, progress=False)
    # a valid grid that moved, finite coefficients that moved, and the same result for the same seed
    assert (out.times[:-1] > out.times[1:]).all() and float(out.times[0]) == 1.0
    assert torch.isfinite(out.coeffs).all() and (out.coeffs - 1).abs().max() > 1e-3
    if base == "tweedie":  # (Euler's first step from t = 1 saturates under the geometric schedule: no gradient
        # reaches the grid there, and it stays uniform)
        assert (out.times - uniform_times(2, cfg.eps)).abs().max() > 1e-3
    assert torch.equal(out.coeffs, again.coeffs) and torch.equal(out.times, again.times)
    assert all(h["loss_time"] > 0 for h in out.history)


@pytest.mark.parametrize("graph", [Absorbing(5), Uniform(5)])
def test_l2_linear_loss_matches_autograd_through_the_dense_loss(graph):
    """The default l2 / linear-Phi step loss is computed on the compared rows with its gradient in closed form
    (losses._l2_linear); it equals the dense reference - autograd through scale_score and _sq_sum on the full
    (b, L, S) tensors - in value and in d/dPhi, on both graph kinds and with rows left out."""
    from lsdd.distillation.losses import _compare_mask, _full_score, _l2_linear, _off_diag, _sq_sum
    from lsdd.sampling.samplers import scale_score

    gen = torch.Generator().manual_seed(3)
    b, length = 4, 6
    x = torch.randint(0, graph.num_states, (b, length), generator=gen)
    x_star = torch.randint(0, graph.num_states, (b, length), generator=gen)
    if not graph.absorbing:  # the uniform graph compares rows at the same current token
        x_star[:, ::2] = x[:, ::2]
    stored = torch.rand(b, length, generator=gen) < 0.8
    score = torch.rand(b, length, graph.num_states, generator=gen, dtype=torch.float64) * 3
    s_star = torch.rand(b, length, graph.num_tokens, generator=gen, dtype=torch.float64) * 3
    rows = _compare_mask(graph, x, x_star, stored)
    assert 0 < int(rows.sum()) < b * length
    for value in (0.3, 1.0, 1.7):
        phi_a = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        ref = _sq_sum(_off_diag(graph, x, scale_score(score, x, phi_a, "linear")),
                      _off_diag(graph, x, _full_score(graph, x, s_star)), rows)
        ref.backward()
        phi_b = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        fast = _l2_linear(graph, x, score.float(), s_star.float(), rows, phi_b)
        fast.backward()
        torch.testing.assert_close(fast.detach(), ref.detach(), rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(phi_b.grad, phi_a.grad, rtol=1e-6, atol=1e-9)
        assert abs(float(phi_a.grad)) > 1e-3  # a real gradient, not two zeros


@pytest.mark.parametrize("base,loss", [("euler", "l2"), ("tweedie", "l2"), ("euler", "kl")])
def test_lsd_plus_time_loss_on_compared_rows_equals_the_dense_loss(base, loss):
    """LSD+'s time loss is computed on the compared rows only (step laws factorise over positions); its value and
    its gradient in the grid equal the dense formula over all (b, L) rows with the mask, written out here."""
    from lsdd.distillation.distill import DistillConfig
    from lsdd.distillation.losses import _compare_mask, _full_score, _kl_sum, _off_diag, _sq_sum, step_losses, step_stats
    from lsdd.sampling.samplers import step_law_dense

    graph, noise = Absorbing(6), LogLinear()
    cfg = DistillConfig(method="lsd+", base=base, loss=loss, nfe=4, teacher_nfe=8)
    gen = torch.Generator().manual_seed(5)
    b, length, k = 3, 7, 1
    x = torch.where(torch.rand(b, length, generator=gen) < 0.6, 6, torch.randint(0, 6, (b, length), generator=gen))
    x_star = torch.where(torch.rand(b, length, generator=gen) < 0.6, 6, x)
    stored = graph.movable(x_star)
    # scores small enough that no row's move probability is clipped at 1 (a clipped law has no grid gradient)
    score = torch.rand(b, length, graph.num_states, generator=gen, dtype=torch.float64) * 0.1
    s_star = torch.rand(b, length, graph.num_tokens, generator=gen, dtype=torch.float64) * 0.1
    t_uni = uniform_times(4).to(torch.float64)
    rows = _compare_mask(graph, x, x_star, stored)
    assert 0 < int(rows.sum()) < b * length
    stats = step_stats(cfg, graph, noise, x, score, x_star, stored, s_star, t_uni, k, False)
    tau = t_uni.clone().requires_grad_(True)
    phi = torch.tensor(0.8, dtype=torch.float64)
    got = step_losses(cfg, graph, noise, x, score, x_star, stored, s_star, phi, tau, k, False, 1.0, stats.values,
                      stats.teacher_law).time
    got.backward()
    # the dense reference over every row, masked
    p_teacher = step_law_dense(base, graph, noise, x, _full_score(graph, x, s_star), t_uni[k], t_uni[k + 1])
    tau_ref = t_uni.clone().requires_grad_(True)
    p_student = step_law_dense(base, graph, noise, x, score, tau_ref[k], tau_ref[k + 1], phi, "linear")
    n_rows = float(rows.sum())
    if loss == "l2":
        scale_t = float(((_off_diag(graph, x, p_teacher) ** 2).sum(-1) * rows).sum()) / n_rows
        ref = _sq_sum(_off_diag(graph, x, p_student), _off_diag(graph, x, p_teacher), rows) / (n_rows * scale_t)
    else:
        ref = _kl_sum(p_teacher, p_student, rows) / n_rows
    ref.backward()
    torch.testing.assert_close(got.detach(), ref.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(tau.grad, tau_ref.grad, rtol=1e-9, atol=1e-12)
    assert tau.grad[k:k + 2].abs().sum() > 0
