"""lsd-c (state-conditioned steps), the artifact's format version 2, the distribution objective and coupled
trajectories: checked on exact laws of tiny toys where possible."""

import json
from dataclasses import replace
import math

import numpy as np
import pytest
import torch

from conftest import countdown_law
from lsdd.sampling.sampler import Sampler
from lsdd.cli import main
from lsdd.sampling.conditioned import ConditionedParams, ConditionedRule, confidence
from lsdd.sampling.coupling import ClockAdvance, clock_noise
from lsdd.distillation.distill import DistillConfig, distill, to_sampler
from lsdd.errors import UserError
from lsdd.sampling.exact import ExactScore, exact_sampler_law, seq_index
from lsdd.graphs import Absorbing
from lsdd.sampling.loop import reverse_loop
from lsdd.models import DiTConfig, ScoreDiT
from lsdd.models.checkpoint import save_model_dir
from lsdd.noise import LogLinear
from lsdd.distillation.objective import ngram_hellinger, minimise_cma
from lsdd.sampling.samplers import sample
from lsdd.sampling.schedules import uniform_times

V, L, M = 2, 3, 4
GRAPH, NOISE = Absorbing(V), LogLinear(1e-3)


@pytest.fixture(scope="module")
def exact():
    return ExactScore(countdown_law(V, L), GRAPH, L)


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    p = ConditionedParams(M, 0.4 * torch.randn(M, generator=g, dtype=torch.float64),
                          2.0 * torch.randn(M, generator=g, dtype=torch.float64),
                          0.5 * torch.randn(M, generator=g, dtype=torch.float64))
    return p.requires_grad_(False)


def test_zero_extra_parameters_are_exactly_lsd(exact):
    times = uniform_times(M)
    phi = torch.tensor([0.7, 1.3, 0.9, 1.0], dtype=torch.float64)
    lsd = exact_sampler_law(exact, GRAPH, NOISE, times, L, coeffs=phi)
    p = ConditionedParams(M, log_phi=phi.log()).requires_grad_(False)
    cond = exact_sampler_law(exact, GRAPH, NOISE, times, L, method=ConditionedRule(), coeffs=p.coeff_fn(GRAPH))
    assert torch.allclose(cond, lsd, atol=1e-13, rtol=0)
    other = exact_sampler_law(exact, GRAPH, NOISE, times, L, method=ConditionedRule(), coeffs=_params().coeff_fn(GRAPH))
    assert (other - lsd).abs().sum() > 1e-2  # the slope and temperature do change the law


def test_step_law_formula():
    """One step by hand: move = min(1, c phi c_i^a sum s), values ~ s^beta."""
    graph = Absorbing(3)
    x = torch.full((1, 2), graph.mask_id)
    score = torch.tensor([[[3.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]])
    t, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    p = ConditionedParams(1, torch.tensor([0.2]), torch.tensor([1.5]), torch.tensor([math.log(2.0)]))
    law = ConditionedRule()(graph, NOISE, x, score, t, s, p.coeff_fn(graph)(0, x, score), "linear", False)
    c = float((t - s) * NOISE.rate(t))
    conf = torch.tensor([0.75, 1 / 3], dtype=torch.float64)
    assert torch.allclose(confidence(graph, score)[0].double(), conf)
    want_move = (c * math.exp(0.2) * conf**1.5 * torch.tensor([4.0, 3.0], dtype=torch.float64)).clamp(max=1.0)
    assert torch.allclose(law.move[0], want_move, atol=1e-12)
    dense = law.dense()[0]
    assert torch.allclose(dense[0, :3] / dense[0, :3].sum(), torch.tensor([0.9, 0.1, 0.0], dtype=torch.float64))
    assert torch.allclose(dense[1, :3] / dense[1, :3].sum(), torch.full((3,), 1 / 3, dtype=torch.float64))
    # gradients reach all three parameters through the exact law
    q = ConditionedParams(1)
    law = ConditionedRule()(graph, NOISE, x, score, t, s, q.coeff_fn(graph)(0, x, score), "linear", False)
    law.dense()[0, 0, 0].backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in (q.log_phi, q.slope, q.log_beta))


def test_coupled_paths_keep_the_exact_law(exact):
    """Clock-driven draws (shared per-position clocks and value uniforms) give the exact output law: a chi-square
    test of 20,000 coupled samples against lsdd.sampling.exact, with a non-trivial lsd-c sampler."""
    times, p = uniform_times(M), _params(1)
    kw = dict(rule=ConditionedRule(), coeffs=p.coeff_fn(GRAPH))
    ref = exact_sampler_law(exact, GRAPH, NOISE, times, L, method=kw["rule"], coeffs=kw["coeffs"])
    n = 20000
    clocks, unif = clock_noise(0, torch.arange(n), L)
    out = reverse_loop(exact, GRAPH, NOISE, times, GRAPH.sample_limit(n, L), advance=ClockAdvance(clocks, unif), **kw).x
    emp = torch.bincount(seq_index(out, GRAPH.num_states), minlength=ref.numel()).double() / n
    live = ref > 1e-9
    assert float(emp[~live].sum()) == 0.0
    chi2 = float((((emp - ref) ** 2 / ref.clamp_min(1e-300))[live]).sum() * n)
    assert chi2 < 30.0, chi2  # df = 7 here; P(chi2 > 30) ~ 1e-4 under the null
    # a broken coupling (the same uniform for clock and value) is caught by the same test
    bad = reverse_loop(exact, GRAPH, NOISE, times, GRAPH.sample_limit(n, L),
                       advance=ClockAdvance(-torch.log1p(-unif), unif), **kw).x
    emp_bad = torch.bincount(seq_index(bad, GRAPH.num_states), minlength=ref.numel()).double() / n
    assert float((((emp_bad - ref) ** 2 / ref.clamp_min(1e-300))[live]).sum() * n) > 100.0


def test_clock_noise_per_trajectory():
    e, u = clock_noise(3, torch.tensor([5, 9]), 4)
    e2, u2 = clock_noise(3, torch.tensor([9]), 4)
    assert torch.equal(e[1], e2[0]) and torch.equal(u[1], u2[0]) and not torch.equal(e[0], e[1])


def test_hellinger_counts_scattered_mass():
    a = torch.zeros(50, 4, dtype=torch.long)
    assert ngram_hellinger(a, a, 6) == 0.0
    b = a.clone()
    b[:5, 2] = torch.arange(1, 6)  # 10% of sequences break one bigram pair each, scattered over 5 values
    h = ngram_hellinger(b, a, 6)
    assert 0.02 < h < 0.2


def test_cma_never_worse_than_start():
    res = minimise_cma(lambda v: float(((v - 1.0) ** 2).sum()), torch.zeros(3, dtype=torch.float64), 0.5, 20, 6, 0)
    assert res.value <= res.start_value and res.value < 0.05


def test_cma_probe_rotates_the_search_to_a_diagonal_valley_and_converges_where_one_sigma_does_not():
    """An ill-conditioned quadratic whose steep direction is a diagonal of two coordinates (as the first step's value
    temperature is in the level and tilt coordinates of a 2-NFE fit on text): the probe's finite differences give its
    Hessian exactly, the steep eigenvector gets the step at which its quadratic rises by |f0| / d, the others keep
    sigma, and in the same 12 x 8 budget CMA-ES gets far closer to the minimum than with one sigma for all."""
    from lsdd.distillation.objective import PROBE_FLOOR, probe_metric

    c = math.sqrt(0.5)
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -c], [0.0, c, c]], dtype=torch.float64)  # columns: eigenvectors
    lam = torch.tensor([2.0, 800.0, 2.0], dtype=torch.float64)
    hess = rot @ torch.diag(lam) @ rot.T
    opt = torch.tensor([0.5, 0.3, -0.25], dtype=torch.float64)  # far along the flat diagonal, near on the steep one
    f = lambda v: float(0.5 * (v - opt) @ hess @ (v - opt))  # noqa: E731
    x0 = torch.zeros(3, dtype=torch.float64)
    metric, stds, axes, probes = probe_metric(f, x0, f(x0), 0.2)
    # eigh sorts the eigenvalues: 2, 2, 800; the steep one's step is sqrt(2 D / 800) / sigma with D = f0 / 3
    steep = math.sqrt(2 * f(x0) / 3 / 800) / 0.2
    assert stds[0] == stds[1] == 1.0 and stds[2] == pytest.approx(steep, rel=1e-9)
    assert abs(float(axes[:, 2] @ rot[:, 1])) == pytest.approx(1.0, abs=1e-9)  # along the diagonal (0, 1, 1) / sqrt 2
    # the first cloud's covariance sigma^2 T T^T: sigma^2 along the flat directions, (steep sigma)^2 along the steep one
    cov = metric @ metric.T
    assert float(rot[:, 1] @ cov @ rot[:, 1]) == pytest.approx(steep**2, rel=1e-9)
    assert float(rot[:, 0] @ cov @ rot[:, 0]) == pytest.approx(1.0, rel=1e-9)
    eye = 0.2 * torch.eye(3, dtype=torch.float64)
    expect = [eye[i] for i in range(3)] + [-eye[i] for i in range(3)] + [eye[0] + eye[1], eye[0] + eye[2], eye[1] + eye[2]]
    assert torch.equal(torch.stack([x for x, _ in probes]), torch.stack(expect)) and all(v == f(x) for x, v in probes)
    plain = minimise_cma(f, x0, 0.2, 12, 8, 0, probe=False)
    probed = minimise_cma(f, x0, 0.2, 12, 8, 0, probe=True)
    assert probed.stds == stds and plain.stds is None and probed.evaluations == plain.evaluations + 9
    assert probed.value <= probed.start_value
    # over five CMA-ES seeds: better every time, and by a factor of ten or more in the median run
    ratios = sorted(minimise_cma(f, x0, 0.2, 12, 8, s, probe=True).value / minimise_cma(f, x0, 0.2, 12, 8, s).value
                    for s in range(5))
    assert ratios[-1] < 0.5 and ratios[2] < 0.1
    again = minimise_cma(f, x0, 0.2, 12, 8, 0, probe=True)
    assert torch.equal(again.x, probed.x)  # seeded: the same run
    # a direction where the objective is flat or falls keeps sigma; a steep one never goes below the floor
    assert probe_metric(lambda v: -float(v.sum()), x0, 0.0, 0.2)[1] == [1.0, 1.0, 1.0]
    assert probe_metric(lambda v: 1e12 * float((v**2).sum()) + 1.0, x0, 1.0, 0.2)[1] == [PROBE_FLOOR] * 3
    # one coordinate (cma needs two: a dummy one is added), probe or not
    for probe in (False, True):
        one = minimise_cma(lambda v: float(400 * (v[0] - 0.05) ** 2), torch.zeros(1, dtype=torch.float64), 0.2, 12, 8, 0,
                           probe=probe)
        assert one.x.shape == (1,) and one.value < 1e-3


def test_lsd_c_distill_artifact_round_trip(exact, tmp_path, monkeypatch):
    cfg = DistillConfig(nfe=M, teacher_nfe=16, num_traj=64, method="lsd-c", obj_samples=64, cma_iters=3,
                        cma_popsize=4, val_samples=32, choose=True, early_exit=False)
    res = distill(exact, GRAPH, NOISE, L, cfg, progress=False)
    again = distill(exact, GRAPH, NOISE, L, cfg, progress=False)
    assert torch.equal(res.coeffs, again.coeffs) and res.conditioning == again.conditioning  # seeded
    import lsdd.distillation.distill as engine

    sizes, real = [], engine.minimise_cma
    monkeypatch.setattr(engine, "minimise_cma", lambda fn, x0, *a, **k: (sizes.append(x0.numel()), real(fn, x0, *a, **k))[1])
    for slope, nfe in ((False, M), (True, M), (False, 2)):
        distill(exact, GRAPH, NOISE, L, replace(cfg, slope=slope, nfe=nfe, validation=False), progress=False)
    # (Phi, beta), then (Phi, slope, beta): basis numbers each; at 2 NFE Phi's last step is inert: 1 + 2 numbers
    assert sizes == [2 * cfg.basis, 3 * cfg.basis, 1 + cfg.basis]
    start, best = res.history[0]["loss_phi"], res.history[-1]["best_so_far"]
    probe = res.calibration.get("cma_probe_best", math.inf)  # with cma_probe, the probe's points are candidates too
    assert best <= start and best == min([h["loss_phi"] for h in res.history] + [probe])  # never worse than the base
    art = to_sampler(res, cfg, None, {}, use_base=False)
    art.save(tmp_path / "c.json")
    back = Sampler.load(tmp_path / "c.json")
    assert back == art and back.conditioning == res.conditioning and back.movers == res.movers
    # the movers were chosen among spread and the peer orders by the objective at the base parameters
    assert list(res.choice) == ["spread", "halton", "dilated"] and res.movers == min(res.choice, key=res.choice.get)
    assert art.provenance["discrete_choice"] == {k: round(v, 6) for k, v in res.choice.items()}
    # the reference: the conditioned rule built by hand from the fitted numbers, not through the Sampler
    params = ConditionedParams.from_count(M, res.movers, res.coeffs.log(), torch.tensor(res.conditioning["slope"], dtype=torch.float64),
                                          torch.tensor(res.conditioning["beta"], dtype=torch.float64).log()).requires_grad_(False)
    if res.movers != "halton":  # exact laws (a Halton run keeps a random rotation that the exact law cannot follow)
        law_a = exact_sampler_law(exact, GRAPH, NOISE, back.times_tensor(), L, **back.loop_args(GRAPH))
        law_b = exact_sampler_law(exact, GRAPH, NOISE, res.times, L, method=ConditionedRule("euler"),
                                  coeffs=params.coeff_fn(GRAPH))
        assert torch.allclose(law_a, law_b, atol=1e-12)
    draws = [sample(exact, GRAPH, NOISE, res.times, (64, L), generator=torch.Generator().manual_seed(5), **kw).x
             for kw in (back.loop_args(GRAPH), {"method": ConditionedRule("euler"), "coeffs": params.coeff_fn(GRAPH)})]
    assert torch.equal(draws[0], draws[1])


def _v1_dict():
    return {"format": "lsdd-learned-sampler", "format_version": 1, "base": "euler", "graph": "absorbing",
            "num_tokens": V, "noise": NOISE.to_dict(), "times": [1.0, 0.5, 1e-5], "coeffs": [0.5, 1.0],
            "phi_mode": "linear", "provenance": {}, "nfe": 2}


def test_version_1_artifacts_still_load(exact, tmp_path):
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(_v1_dict()))
    s = Sampler.load(path)
    assert s.conditioning is None and s.coeffs == (0.5, 1.0) and s.movers == "independent" and s.rule == "euler"
    law = exact_sampler_law(exact, GRAPH, NOISE, s.times_tensor(), L, **s.loop_args(GRAPH))
    ref = exact_sampler_law(exact, GRAPH, NOISE, s.times_tensor(), L, coeffs=s.coeffs_tensor())
    assert torch.equal(law, ref)


@pytest.mark.parametrize("change, msg", [
    ({"conditioning": {"feature": "confidence", "slope": [0, 0], "beta": [1, 1]}}, "needs format_version 2"),
    ({"format_version": 2, "conditioning": {"feature": "entropy", "slope": [0, 0], "beta": [1, 1]}}, "feature"),
    ({"format_version": 2, "conditioning": {"feature": "confidence", "slope": [0], "beta": [1, 1]}}, "slope"),
    ({"format_version": 2, "conditioning": {"feature": "confidence", "slope": [0, 0], "beta": [1, 0]}}, "beta > 0"),
    ({"format_version": 3}, "unsupported format_version 3"),
])
def test_bad_conditioning_refused(change, msg):
    with pytest.raises(UserError, match=msg):
        Sampler.from_dict({**_v1_dict(), **change})


def _tiny_model(path, graph):
    torch.manual_seed(0)
    cfg = DiTConfig(num_tokens=6, graph=graph, noise={"type": "loglinear", "eps": 1e-3}, length=8,
                    hidden_size=16, cond_dim=16, n_blocks=1, n_heads=2)
    model = ScoreDiT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    save_model_dir(path, model, cfg, {"note": "test model"})
    return str(path)


def test_cli_lsd_c_distill_and_sample(tmp_path, capsys):
    model = _tiny_model(tmp_path / "m", "absorbing")
    out = tmp_path / "c.json"
    rc = main(["distill", "--model", model, "--nfe", "4", "--teacher-nfe", "8", "--num-traj", "32", "--method",
               "lsd-c", "--slope", "--obj-samples", "32", "--cma-iters", "2", "--cma-popsize", "4", "--no-validate",
               "--no-early-exit", "--out", str(out)])
    assert rc == 0 and "confidence slope" in capsys.readouterr().out
    art = json.loads(out.read_text())
    assert art["format_version"] == 3 and art["conditioning"]["feature"] == "confidence"
    assert art["movers"] == "spread" and "discrete_choice" not in art["provenance"]  # movers chosen only with --choose
    rc = main(["sample", "--model", model, "--learned", str(out), "--num", "8", "--seed", "1", "--out",
               str(tmp_path / "x.npy")])
    x = np.load(tmp_path / "x.npy")
    assert rc == 0 and x.shape == (8, 8) and (x < 6).all()
    # coupled LSD runs end to end; on a uniform-graph model lsd-c fits Phi and chooses the last step
    rc = main(["distill", "--model", model, "--nfe", "4", "--teacher-nfe", "8", "--num-traj", "32", "--epochs", "1",
               "--method", "lsd", "--coupled", "--no-validate", "--out", str(tmp_path / "k.json")])
    assert rc == 0
    uni = _tiny_model(tmp_path / "u", "uniform")
    capsys.readouterr()
    rc = main(["distill", "--model", uni, "--nfe", "4", "--teacher-nfe", "8", "--num-traj", "32", "--method", "lsd-c",
               "--choose", "--obj-samples", "32", "--cma-iters", "2", "--cma-popsize", "4", "--no-validate",
               "--no-early-exit", "--out", str(tmp_path / "u.json")])
    out_text = capsys.readouterr().out
    art = json.loads((tmp_path / "u.json").read_text())
    assert rc == 0 and not any(art["conditioning"]["slope"]) and "confidence slope" not in out_text
    assert "value beta" in out_text  # a per-step value temperature of the jump targets, fitted
    assert set(art["provenance"]["discrete_choice"]) == {"independent", "independent+tweedie-final", "spread",
                                                         "spread+tweedie-final"}
    assert art.get("final") == ("tweedie" if "last step" in out_text else None)
    # lsd-c (the default) refuses the settings of lsd / lsd+ instead of ignoring them, before any work
    rc = main(["distill", "--model", model, "--nfe", "4", "--epochs", "3", "--out", str(tmp_path / "e.json")])
    assert rc == 2 and "--epochs does not apply to --method lsd-c" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()
    rc = main(["distill", "--model", model, "--nfe", "4", "--method", "lsd", "--slope", "--out", str(tmp_path / "e.json")])
    assert rc == 2 and "--slope does not apply to --method lsd" in capsys.readouterr().err  # refused, not ignored
    rc = main(["distill", "--model", uni, "--nfe", "4", "--teacher", "exact", "--method", "lsd-c", "--out",
               str(tmp_path / "v.json")])
    assert rc == 2 and "absorbing" in capsys.readouterr().err
    assert not (tmp_path / "v.json").exists()


def test_time_ratio_moves_the_absorbing_score_exactly(exact):
    from lsdd.distillation.losses import time_ratio

    x = torch.tensor([[GRAPH.mask_id, 1, GRAPH.mask_id], [0, GRAPH.mask_id, GRAPH.mask_id]])
    t, tau = torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.45, dtype=torch.float64)
    s_t = exact(x, NOISE.total(t).expand(2))
    s_tau = exact(x, NOISE.total(tau).expand(2))
    masked = x == GRAPH.mask_id
    assert torch.allclose((s_t * time_ratio(NOISE, t, tau))[masked][:, :V], s_tau[masked][:, :V], rtol=1e-10)
    assert not torch.allclose(s_t[masked][:, :V], s_tau[masked][:, :V], rtol=1e-2)


def test_bench_runs_lsd_c_rows(tmp_path):
    from lsdd.bench import BenchConfig, run_bench
    from lsdd.tasks import get_task
    from lsdd.models import load_model

    model = load_model(_tiny_model(tmp_path / "m", "absorbing"))
    cfg = BenchConfig(nfes=(4,), teacher_nfe=8, bases=("euler",), methods=("lsd", "lsd-c"), num_samples=16,
                      batch_size=16, timing_repeats=0,
                      distill={"epochs": 1, "cma_iters": 1, "cma_popsize": 2, "obj_samples": 16, "early_exit": False},
                      validate=False)
    res = run_bench(model, get_task("tokens"), cfg, progress=False, log=lambda *a: None)
    row = next(r for r in res.rows if r.method == "lsd-c")
    assert row.nfe == 4 and row.sampler.conditioning is not None and row.sampler.method == "lsd-c"


def test_lsd_plus_select_keeps_the_closer_of_lsd_and_lsd_plus(exact):
    cfg = DistillConfig(nfe=M, teacher_nfe=16, num_traj=64, method="lsd+", epochs=2, init_lsd=True, select=True,
                        match_times=True, val_samples=64)
    res = distill(exact, GRAPH, NOISE, L, cfg, progress=False)
    sel = res.selection
    assert sel["kept"] == ("lsd+" if sel["hellinger_lsd+"] <= sel["hellinger_lsd"] else "lsd")
    if sel["kept"] == "lsd":
        assert torch.equal(res.times, uniform_times(M))
    with pytest.raises(ValueError, match="select"):
        DistillConfig(method="lsd", select=True).validate()


@pytest.mark.parametrize("count", ["independent", "rounded", "spread"])
def test_masked_last_step_phi_and_slope_are_inert_so_the_fit_skips_them(exact, count):
    """On the absorbing graph the last step reveals every remaining token whatever its Phi and confidence slope, so
    the exact law of a 2-step sampler does not move with them (and does move with the last step's beta): the
    distribution fit gives Phi and the slope M - 1 steps' worth of numbers (family_sizes)."""
    from lsdd.distillation.distill import family_sizes, unpack_flat

    times = uniform_times(2, 1e-3)

    def law(log_phi, slope, log_beta):
        p = ConditionedParams.from_count(2, count, torch.tensor(log_phi, dtype=torch.float64),
                                         torch.tensor(slope, dtype=torch.float64),
                                         torch.tensor(log_beta, dtype=torch.float64)).requires_grad_(False)
        return exact_sampler_law(exact, GRAPH, NOISE, times, L, method=ConditionedRule("euler"),
                                 coeffs=p.coeff_fn(GRAPH))

    ref = law([0.2, 0.0], [0.5, 0.0], [-0.1, 0.3])
    assert torch.allclose(law([0.2, 0.9], [0.5, -1.5], [-0.1, 0.3]), ref, atol=1e-12)  # last Phi, slope: inert
    assert (law([0.2, 0.0], [0.5, 0.0], [-0.1, -0.4]) - ref).abs().sum() > 1e-3  # last beta: not inert
    assert (law([-0.5, 0.0], [0.5, 0.0], [-0.1, 0.3]) - ref).abs().sum() > 1e-3  # first Phi: not inert

    cfg = DistillConfig(nfe=2, method="lsd-c", basis=2)
    assert family_sizes(cfg, GRAPH) == (1, 0, 2)  # Phi: one number at 2 NFE; beta: two
    assert family_sizes(replace(cfg, slope=True), GRAPH) == (1, 1, 2)
    assert family_sizes(replace(cfg, nfe=4), GRAPH) == (2, 0, 2)  # the affine basis fits in M - 1 = 3 steps
    assert family_sizes(replace(cfg, nfe=4, basis=3), GRAPH) == (3, 0, 3)
    assert family_sizes(replace(cfg, method="lsd"), GRAPH) == (1, 0, 0)
    from lsdd.graphs import Uniform
    assert family_sizes(cfg, Uniform(V)) == (2, 0, 2)  # no forced last step on the uniform graph
    log_phi, slope, log_beta = unpack_flat(torch.tensor([0.3, -0.2, 0.4], dtype=torch.float64), cfg, (1, 0, 2))
    assert torch.allclose(log_phi, torch.tensor([0.3, 0.3], dtype=torch.float64)) and not slope.any()
    assert torch.allclose(log_beta, torch.tensor([-0.6, 0.2], dtype=torch.float64))  # affine: -0.2 -+ 0.4
    with pytest.raises(ValueError, match="3 numbers for families of \\[2, 0, 2\\]"):
        unpack_flat(torch.zeros(3, dtype=torch.float64), cfg, (2, 0, 2))
