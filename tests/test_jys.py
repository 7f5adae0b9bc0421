"""Jump Your Steps (lsdd.distillation.jys): the KLUB gain against its formula, golden-section search, the hierarchical grids,
the import of JYS's schedule files, and the CLI paths (schedule, sample --learned, distill --init-grid, bench rows
for every baseline with its counted calls)."""

import json
import math

import numpy as np
import pytest
import torch

from lsdd.sampling.sampler import Sampler
from lsdd.cli import main
from lsdd.sampling.exact import ExactScore, all_sequences
from lsdd.graphs import Absorbing
from lsdd.distillation.jys import JYSConfig, JYSSearch, KLUBEstimator, golden_max, import_jys_grid, jys_fine_grid
from lsdd.noise import LogLinear

from test_cli_sampling import _tiny

ABS, LOGLIN = Absorbing(3), LogLinear(1e-3)


def test_golden_section_finds_the_maximum():
    calls = []
    best, val = golden_max(lambda t: calls.append(t) or -(t - 0.3) ** 2, 0.0, 1.0, 20)
    # 20 evaluations shrink the bracket by 0.618^18 ~ 2e-4
    assert abs(best - 0.3) < 1e-3 and val == -(best - 0.3) ** 2 and len(calls) == 20


def test_klub_gain_matches_its_formula_on_one_token():
    # one token: the true score of a masked token is p0(v) / (e^sigma_bar - 1), so R_t(v) = sigma(t) p0(v) / (e^sb - 1)
    p0 = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    exact = ExactScore(p0, ABS, 1)
    x0 = torch.multinomial(p0, 200, replacement=True, generator=torch.Generator().manual_seed(1))[:, None]
    est = KLUBEstimator(exact, ABS, LOGLIN, x0, JYSConfig(batch_size=64, seed=3))
    t_a, t_mid, t_b = 0.9, 0.4, 0.1

    def rates(t):
        tt = torch.tensor(t, dtype=torch.float64)
        return LOGLIN.rate(tt) * p0 / torch.expm1(LOGLIN.total(tt))

    r1, r2 = rates(t_a), rates(t_mid)
    per_token = float((r2 * torch.log(r2 / r1) - r2 + r1).sum())
    masked = est.u[:, 0] < -math.expm1(-float(LOGLIN.total(torch.tensor(t_mid, dtype=torch.float64))))
    want = (t_mid - t_b) * per_token * float(masked.double().mean())
    # the estimator makes its calls through the loop's counted score (sigma_bar in float32)
    assert est.gain(t_a, t_mid, t_b) == pytest.approx(want, rel=1e-5)
    # the noising is coupled: what is masked at t_mid is masked at t_a, and it is the same for every call
    assert bool(((est.noised(t_mid) == 3) <= (est.noised(t_a) == 3)).all())
    assert torch.equal(est.noised(t_mid), est.noised(t_mid))


def test_hierarchical_grids_nest_and_share_their_splits():
    g = torch.Generator().manual_seed(0)
    p0 = torch.rand(9, generator=g, dtype=torch.float64) ** 2
    p0 = p0 / p0.sum()
    exact = ExactScore(p0, ABS, 2)
    x0 = all_sequences(3, 2)[torch.multinomial(p0, 64, replacement=True, generator=g)]
    search = JYSSearch(KLUBEstimator(exact, ABS, LOGLIN, x0, JYSConfig(max_iter=6, eps=1e-3)))
    g4 = search.grid(4)
    evals = search.est.evaluations
    g2, g3 = search.grid(2), search.grid(3)
    # grids are strictly decreasing from 1 to eps, one level refines the previous one
    assert g4[0] == 1.0 and g4[-1] == 1e-3 and bool((g4[1:] < g4[:-1]).all())
    assert set(g2.tolist()) <= set(g3.tolist()) <= set(g4.tolist())
    # 3 steps = the 2-step grid plus the one point of the next level with the largest KLUB gain
    extra = (set(g3.tolist()) - set(g2.tolist())).pop()
    gains = {search.splits[(a, b)][0]: search.splits[(a, b)][1] for a, b in zip(g2[:-1].tolist(), g2[1:].tolist())}
    assert gains[extra] == max(gains.values())
    # coarser grids reuse the searched splits: no new evaluation; 1 + 2 intervals x 6 evaluations for M = 4
    assert search.est.evaluations == evals == 3 * 6


def test_search_on_the_uniform_graph():
    from lsdd.graphs import Uniform
    from lsdd.noise import Geometric

    uni = Uniform(3)
    p0 = torch.tensor([0.4, 0.1, 0.2, 0.05, 0.1, 0.05, 0.02, 0.03, 0.05], dtype=torch.float64)
    exact = ExactScore(p0, uni, 2)
    x0 = all_sequences(3, 2)[torch.multinomial(p0, 64, replacement=True, generator=torch.Generator().manual_seed(0))]
    est = KLUBEstimator(exact, uni, Geometric(1e-3, 8.0), x0, JYSConfig(max_iter=5, eps=1e-3))
    # uniform noising: a token resampled at t_mid is resampled (to the same value) at t_a
    x_a, x_m = est.noised(0.9), est.noised(0.4)
    assert bool(((x_m != x0) <= (x_a == x_m)).all())
    search = JYSSearch(est)
    grid = search.grid(4)
    assert grid.numel() == 5 and bool((grid[1:] < grid[:-1]).all()) and grid[-1] == 1e-3
    # the Girsanov integrand is >= 0 term by term, so every gain is
    assert all(g >= 0 for _, g in search.splits.values())


def test_import_jys_schedule_files(tmp_path):
    lists = [[0, 1024], [0, 300, 1024], [0, 100, 300, 700, 1024]]
    torch.save(lists, tmp_path / "sampling_schedule_list-nfe_1024-samples_1024.pt")
    (tmp_path / "s.json").write_text(json.dumps(lists))
    fine = jys_fine_grid()
    # indices into JYS's 1,025-point grid linspace(1, 1e-5, 1025)
    assert fine.numel() == 1025 and fine[-1] == 1e-5
    for name in ("sampling_schedule_list-nfe_1024-samples_1024.pt", "s.json"):
        torch.testing.assert_close(import_jys_grid(tmp_path / name, 4), fine[[0, 100, 300, 700, 1024]])
    with pytest.raises(ValueError, match=r"no 8-step schedule in this JYS file; it has NFE \[1, 2, 4\]"):
        import_jys_grid(tmp_path / "s.json", 8)
    bad = {"end.json": [[0, 512]], "order.json": [[0, 700, 300, 1024]], "dict.json": {"nfe": 4},
           "bool.json": [[0, True, 1024]], "empty.json": []}
    for name, content in bad.items():
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(ValueError, match="not a JYS schedule file .*1,025-point time grid"):
            import_jys_grid(tmp_path / name, 1)
    (tmp_path / "junk.pt").write_bytes(b"\x00\xffnot a file")
    with pytest.raises(ValueError, match="neither a torch file nor JSON"):
        import_jys_grid(tmp_path / "junk.pt", 1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(_tiny(tmp_path_factory.mktemp("tiny"), 0))


def test_cli_schedule_sample_distill_from_the_grid(tiny, tmp_path, capsys):
    s = tmp_path / "jys3.json"
    assert main(["schedule", "--method", "jys", "--model", tiny, "--nfe", "3", "--num-samples", "8",
                 "--data-steps", "4", "--max-iter", "3", "--out", str(s)]) == 0
    art = Sampler.load(s)
    # a learned-sampler file that is just a grid: one call per step, Phi = 1, made for this model
    assert art.nfe == 3 and art.coeffs is None and art.rule == "euler" and art.provenance["method"] == "jys"
    assert art.times[0] == 1.0 and art.times[-1] == 1e-5
    assert main(["sample", "--model", tiny, "--learned", str(s), "--num", "4", "--out", str(tmp_path / "x.npy")]) == 0
    assert "3 network calls per sample" in capsys.readouterr().out
    # LSD starts from the JYS grid: without LSD+ the grid stays exactly that one
    out = tmp_path / "lsd.json"
    assert main(["distill", "--method", "lsd", "--model", tiny, "--nfe", "3", "--teacher-nfe", "6", "--init-grid", str(s), "--epochs", "1",
                 "--num-traj", "16", "--batch-size", "16", "--no-validate", "--out", str(out)]) == 0
    lsd = Sampler.load(out)
    assert lsd.times == art.times and lsd.provenance["init_grid"]["method"] == "jys"
    assert main(["distill", "--model", tiny, "--nfe", "4", "--init-grid", str(s), "--out", str(out)]) == 2
    assert "has 3 steps but --nfe is 4" in capsys.readouterr().err
    # JYS's own schedule file imports to the same kind of artifact
    torch.save([[0, 1024], [0, 512, 1024]], tmp_path / "jys.pt")
    assert main(["schedule", "--model", tiny, "--nfe", "2", "--import", str(tmp_path / "jys.pt"),
                 "--out", str(tmp_path / "imp.json")]) == 0
    assert Sampler.load(tmp_path / "imp.json").times == (1.0, float(jys_fine_grid()[512]), 1e-5)
    assert main(["schedule", "--model", tiny, "--nfe", "4", "--import", str(tmp_path / "jys.pt"),
                 "--out", str(tmp_path / "imp4.json")]) == 2
    assert "no 4-step schedule" in capsys.readouterr().err and not (tmp_path / "imp4.json").exists()


def test_cli_sample_theta_counts_two_calls_per_step(tiny, tmp_path, capsys):
    x = tmp_path / "x.npy"
    assert main(["sample", "--model", tiny, "--sampler", "theta-rk2", "--steps", "2", "--num", "3", "--out", str(x)]) == 0
    # --steps 2 of a two-call sampler: 4 network calls per sample, counted and printed as such
    assert "theta-rk2, 2 steps x 2 network calls: 4 network calls per sample" in capsys.readouterr().out
    assert main(["sample", "--model", tiny, "--sampler", "theta-trapezoidal", "--nfe", "4", "--theta", "0.3",
                 "--num", "3", "--out", str(x)]) == 0
    assert "4 network calls per sample" in capsys.readouterr().out and np.load(x).shape == (3, 8)
    for argv, msg in [(["--sampler", "theta-rk2", "--nfe", "5"], "--nfe 5 is not a multiple of 2"),
                      (["--sampler", "theta-rk2", "--steps", "4", "--nfe", "4"], "--steps 4 with theta-rk2 is 8 network"),
                      (["--sampler", "theta-trapezoidal", "--theta", "1.5"], "0 < theta < 1"),
                      (["--sampler", "euler", "--theta", "0.5"], "theta applies to")]:
        assert main(["sample", "--model", tiny, *argv, "--out", str(tmp_path / "y.npy")]) == 2, argv
        assert msg in capsys.readouterr().err, msg


def test_bench_rows_for_every_baseline(tiny, tmp_path, capsys):
    js = tmp_path / "b.json"
    assert main(["bench", "--model", tiny, "--task", "countdown", "--nfe", "2", "4", "--teacher-nfe", "8",
                 "--num-samples", "16", "--batch-size", "16", "--bases", "euler", "--methods", "jys", "theta-rk2",
                 "theta-trapezoidal", "--jys-max-iter", "3", "--timing-repeats", "0", "--json", str(js)]) == 0
    text = capsys.readouterr().out
    rows = json.loads(js.read_text())["rows"]
    got = {(r["label"], r["nfe"], r["steps"]) for r in rows}
    # every row at its NFE, counted; the theta solvers take NFE / 2 steps of 2 calls
    assert got == {("teacher-euler", 8, 8), ("uniform-euler", 2, 2), ("uniform-euler", 4, 4), ("JYS-euler", 2, 2),
                   ("JYS-euler", 4, 4), ("theta-rk2", 2, 1), ("theta-rk2", 4, 2), ("theta-trapezoidal", 2, 1),
                   ("theta-trapezoidal", 4, 2)}
    assert "steps x calls" in text and " 2x2 " in text
    jys = [r for r in rows if r["method"] == "jys"]
    assert all(Sampler.from_dict(r["sampler"]).coeffs_tensor().tolist() == [1.0] * r["nfe"] for r in jys)
    assert main(["bench", "--model", tiny, "--nfe", "3", "--teacher-nfe", "6", "--methods", "theta-rk2",
                 "--json", str(tmp_path / "c.json")]) == 2
    assert "runs at even NFE only" in capsys.readouterr().err


def test_lsd_plus_starts_exactly_on_the_given_grid():
    from lsdd.distillation.distill import SamplerParams

    grid = torch.tensor([1.0, 0.93, 0.61, 0.2, 1e-5], dtype=torch.float64)
    # theta = log of the grid's steps, so softmax(theta) (1 - eps) rebuilds the grid before any update
    torch.testing.assert_close(SamplerParams(4, 1e-5, True, grid).times().detach(), grid, rtol=0, atol=1e-15)
    assert torch.equal(SamplerParams(4, 1e-5, False, grid).times(), grid)
