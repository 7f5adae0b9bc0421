"""The exact (first-hitting) teacher of masked models, checked in probabilities on tiny toys.

Claims (``lsdd.sampling.first_hitting``):
1. with the exact score, first hitting samples the data law (the procedure's law, by recursion over reveal
   orders, is p0 to rounding; the code's samples agree within their standard error);
2. its state at a student time t_k has the forward process's law there: each position masked independently with
   probability m(t_k) / m(1) (m = 1 - e^{-sigma_bar}; the run starts all-masked at t = 1) and, given the mask
   pattern, the unmasked tokens distributed as the data's marginal on those positions;
3. with a time-dependent score whose masked rows carry the true total (any clean-token model), Euler's law
   converges to first hitting's as its steps grow, and a first hitting that read the network at the wrong time
   would be caught;
4. the reveal times are the coupling clocks: a coupled Tweedie student with the same clocks unmasks a token in
   step k iff its reveal time lies in (t_{k+1}, t_k] (Tweedie's move probability is the exact one);
5. the teacher cache: what the fit reads (states, x_0, x_T, scores), L + M calls per batch, seeds, batch-size
   independence, file names of the two kinds never confused, the pipeline and the CLI.
Tolerances on samples: 4.5 standard errors per cell, sqrt(p (1 - p) / n) (27 cells: a false alarm has
probability below 2e-4 for a fair draw; the seeds are fixed anyway).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from lsdd.distillation.teacher import (cache_file, exact_cache_file, find_cached, get_teacher, run_exact_teacher,
                                       run_teacher)
from lsdd.graphs import make_graph
from lsdd.noise import LogLinear
from lsdd.sampling.coupling import ClockAdvance, clock_noise
from lsdd.sampling.exact import ExactScore, all_sequences, exact_sampler_law, seq_index
from lsdd.sampling.first_hitting import first_hitting_loop, masked_fraction, reveal_times, states_at
from lsdd.sampling.loop import reverse_loop
from lsdd.sampling.schedules import uniform_times

NOISE = LogLinear(1e-3)
N_MC = 40000
Z = 4.5


def full_law(v: int, length: int, seed: int = 0) -> torch.Tensor:
    """A random data law of full support over V^L sequences, (V^L,) float64."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(v**length, generator=g, dtype=torch.float64) + 0.05
    return p / p.sum()


class TableScore:
    """A masked-row score from a table of clean laws: real-token score of masked row i = q_t(v | x)_i * total(t),
    total(t) = c(t) / (e^{sigma_bar} - 1) (c = 1: the true total; a clean-token model). q_t = (1 - w(t)) p(v | x)
    + w(t) r with p the exact clean law of ``exact`` (time-agnostic on the absorbing graph), w(t) = ``drift`` t and
    r a fixed law: ``drift`` 0 gives the exact score. Unmasked rows: 0 off the current token (never read). Fast
    for many rows at many times, unlike ``ExactScore``; ``test_table_score_is_the_exact_score`` ties the two."""

    def __init__(self, exact: ExactScore, noise, drift: float = 0.0, mass=lambda t: 1.0):
        graph, length = exact.graph, exact.length
        self.graph, self.noise, self.drift, self.mass = graph, noise, drift, mass
        self.states = all_sequences(graph.num_states, length)  # (K, L)
        score = exact(self.states, torch.ones(self.states.shape[0], dtype=torch.float64))
        real = score[..., : graph.num_tokens].to(torch.float64)
        self.clean = real / real.sum(-1, keepdim=True).clamp_min(1e-300)  # (K, L, N), meaningful on masked rows
        self.r = torch.linspace(1.0, 0.2, graph.num_tokens, dtype=torch.float64)
        self.r = self.r / self.r.sum()
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        g = self.graph
        sig = sigma.to(torch.float64)
        t = -torch.expm1(-sig) / (1.0 - self.noise.eps)  # log-linear: the time of this sigma_bar
        w = (self.drift * t)[:, None, None]
        q = (1.0 - w) * self.clean[seq_index(x, g.num_states)] + w * self.r
        total = torch.as_tensor(self.mass(t), dtype=torch.float64).expand_as(t) / torch.expm1(sig)
        out = torch.zeros(*x.shape, g.num_states, dtype=torch.float64)
        masked = x == g.mask_id
        out[..., : g.num_tokens] = torch.where(masked[..., None], q * total[:, None, None], 0.0)
        return out.scatter(-1, x[..., None], 1.0)


def toy(v: int, length: int, seed: int = 0, drift: float = 0.0):
    graph = make_graph("absorbing", v)
    p0 = full_law(v, length, seed)
    exact = ExactScore(p0, graph, length)
    return graph, p0, exact, TableScore(exact, NOISE, drift)


def fh_samples(score, graph, length: int, n: int = N_MC, seed: int = 0, t_end: float = 1e-5):
    x = graph.sample_limit(n, length)
    clocks, values = clock_noise(seed, torch.arange(n), length)
    return first_hitting_loop(score, graph, NOISE, x, clocks, values, t_end=t_end)


def frequencies(x: torch.Tensor, num_states: int) -> torch.Tensor:
    return torch.bincount(seq_index(x, num_states), minlength=num_states ** x.shape[1]).to(torch.float64) / x.shape[0]


def within_se(freq: torch.Tensor, law: torch.Tensor, n: int) -> float:
    """The largest |freq - law| in standard errors (cells of law 0 or 1 must match exactly)."""
    sure = (law == 0) | (law == 1)
    assert torch.equal(freq[sure], law[sure])
    se = (law * (1 - law) / n).sqrt()
    live = ~sure
    if not bool(live.any()):
        return 0.0
    return float(((freq - law).abs()[live] / se[live]).max())


def order_recursion_law(clean_at, graph, length: int) -> torch.Tensor:
    """The first-hitting procedure's output law for a time-agnostic clean law, by recursion over its reveal
    orders: the order is a uniformly random permutation (iid reveal times), and token pi(j) takes v with
    probability clean_at(state)[pi(j), v]. Returns (S^L,) float64 over ``all_sequences(S, L)``."""
    s = graph.num_states
    out = torch.zeros(s**length, dtype=torch.float64)
    perms = list(itertools.permutations(range(length)))

    def walk(state: torch.Tensor, prob: float, perm, j: int) -> None:
        if j == length:
            out[int(seq_index(state[None], s))] += prob / len(perms)
            return
        law = clean_at(state)[perm[j]]
        for v in range(graph.num_tokens):
            if law[v] > 0:
                nxt = state.clone()
                nxt[perm[j]] = v
                walk(nxt, prob * float(law[v]), perm, j + 1)

    for perm in perms:
        walk(torch.full((length,), graph.mask_id), 1.0, perm, 0)
    return out


def data_law_on_states(p0: torch.Tensor, graph, length: int) -> torch.Tensor:
    ref = torch.zeros(graph.num_states**length, dtype=torch.float64)
    ref[seq_index(all_sequences(graph.num_tokens, length), graph.num_states)] = p0
    return ref


# ---- 1. exact score -> the data law -------------------------------------------------------------------------
@pytest.mark.parametrize("v, length", [(2, 3), (3, 3), (2, 4)])
def test_table_score_is_the_exact_score(v, length):
    """The fast table score equals ExactScore on every masked row's real-token columns, at several times."""
    graph, _, exact, table = toy(v, length)
    states = all_sequences(graph.num_states, length)
    for t in (0.9, 0.37, 0.02):
        sig = NOISE.total(torch.full((states.shape[0],), t, dtype=torch.float64))
        a, b = exact(states, sig), table(states, sig)
        masked = states == graph.mask_id
        torch.testing.assert_close(a[masked][:, :v], b[masked][:, :v], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("v, length", [(2, 3), (3, 3), (2, 4), (3, 4)])
def test_first_hitting_procedure_law_is_the_data_law(v, length):
    """By recursion over reveal orders (no sampling): with the exact clean law the procedure's law is p0."""
    graph, p0, _, table = toy(v, length, seed=v + length)
    law = order_recursion_law(lambda x: table.clean[seq_index(x[None], graph.num_states)][0], graph, length)
    torch.testing.assert_close(law, data_law_on_states(p0, graph, length), rtol=0, atol=1e-13)


@pytest.mark.parametrize("v, length", [(2, 3), (3, 3)])
def test_first_hitting_samples_the_data_law(v, length):
    graph, p0, _, table = toy(v, length, seed=1)
    out = fh_samples(table, graph, length)
    assert out.calls == length and table.calls == length and bool((out.nfe == length).all())
    assert not bool((out.x == graph.mask_id).any())
    assert within_se(frequencies(out.x, graph.num_states), data_law_on_states(p0, graph, length), N_MC) < Z


def test_exact_score_and_table_give_the_same_draws():
    """The code path on ExactScore itself (slow, so few rows): the same clocks give the same outputs."""
    graph, _, exact, table = toy(2, 3, seed=2)
    a, b = fh_samples(exact, graph, 3, n=300, seed=5), fh_samples(table, graph, 3, n=300, seed=5)
    assert torch.equal(a.x, b.x) and torch.equal(a.reveal, b.reveal)


# ---- 2. the states at the student times -------------------------------------------------------------------
def forward_state_law(p0: torch.Tensor, graph, length: int, a: float) -> torch.Tensor:
    """Law over all S^L states of: each position masked independently with probability a, the unmasked tokens
    distributed as the data's marginal on those positions."""
    data = all_sequences(graph.num_tokens, length)
    out = torch.zeros(graph.num_states**length, dtype=torch.float64)
    for pattern in itertools.product([False, True], repeat=length):
        m = torch.tensor(pattern)
        p_pattern = a ** int(m.sum()) * (1 - a) ** int((~m).sum())
        states = torch.where(m, torch.full_like(data, graph.mask_id), data)
        out.index_add_(0, seq_index(states, graph.num_states), p_pattern * p0)
    return out


@pytest.mark.parametrize("v, length", [(2, 3), (3, 3)])
def test_teacher_states_have_the_forward_marginals(v, length):
    graph, p0, _, table = toy(v, length, seed=3)
    times = uniform_times(4, 1e-5)
    cache = run_exact_teacher(table, graph, NOISE, times, N_MC, length, batch_size=N_MC, seed=7, progress=False,
                              store="states")
    assert len(cache.states) == 4 and cache.kind == "exact"
    m1 = float(masked_fraction(NOISE, torch.tensor(1.0)))
    for k in range(4):
        a = float(masked_fraction(NOISE, times[k])) / m1
        law = forward_state_law(p0, graph, length, a)
        assert within_se(frequencies(cache.states[k], graph.num_states), law, N_MC) < Z, k
    assert within_se(frequencies(cache.x_0, graph.num_states), data_law_on_states(p0, graph, length), N_MC) < Z


# ---- 3. a time-dependent score: Euler -> first hitting ------------------------------------------------------
def euler_law(score, graph, length: int, steps: int) -> torch.Tensor:
    return exact_sampler_law(score, graph, NOISE, uniform_times(steps, 1e-5), length, method="euler")


def test_euler_converges_to_first_hitting_on_a_time_dependent_score():
    """q_t drifts from the exact clean law (t = 0) toward a fixed law (w(1) = 0.9), masked-row totals true.
    Reference: Richardson extrapolation of Euler's exact laws at 2048 and 4096 steps (the O(1/N) term cancels).
    Euler's distance to it shrinks about as 1/N; first hitting's samples match it within their standard error,
    while the same procedure reading the network at a fixed time (t = 1 or t = eps) is many errors away."""
    v, length = 3, 3
    graph, p0, _, table = toy(v, length, seed=4, drift=0.9)
    ref = 2 * euler_law(table, graph, length, 4096) - euler_law(table, graph, length, 2048)
    tv = {n: 0.5 * float((euler_law(table, graph, length, n) - ref).abs().sum()) for n in (8, 32, 128, 512)}
    assert tv[8] > tv[32] > tv[128] > tv[512] and tv[512] < 1e-3, tv
    assert 2.5 < tv[128] / tv[512] < 6, tv  # first order: about 4x per 4x steps
    out = fh_samples(table, graph, length, seed=11)
    freq = frequencies(out.x, graph.num_states)
    assert within_se(freq, ref, N_MC) < Z
    for t_fixed in (1.0, 1e-5):  # the test's power: a first hitting at the wrong time is far outside
        sig = NOISE.total(torch.tensor([t_fixed], dtype=torch.float64))
        law_at = lambda x, s=sig: (lambda sc: sc[..., :v] / sc[..., :v].sum(-1, keepdim=True))(table(x[None], s)[0])
        wrong = order_recursion_law(law_at, graph, length)
        assert within_se(wrong, ref, N_MC) > 5 * Z, t_fixed
    assert 0.5 * float((ref - data_law_on_states(p0, graph, length)).abs().sum()) > 0.05  # not the data law


def test_first_hitting_reads_only_the_token_laws():
    """Scaling every masked row's total by c(t) changes Euler's process (its jump rates) but not first hitting's
    draws: it samples the process with the schedule's reveal clock and the network's normalised token laws."""
    graph, _, exact, _ = toy(2, 3, seed=6)
    plain, heavy = TableScore(exact, NOISE, 0.5), TableScore(exact, NOISE, 0.5, mass=lambda t: 1.5 + t)
    a, b = fh_samples(plain, graph, 3, n=2000), fh_samples(heavy, graph, 3, n=2000)
    assert torch.equal(a.x, b.x)
    assert 0.5 * float((euler_law(plain, graph, 3, 64) - euler_law(heavy, graph, 3, 64)).abs().sum()) > 0.01


# ---- 4. reveal times are the coupling clocks ----------------------------------------------------------------
def test_reveal_times_follow_the_masking_law_and_couple_a_tweedie_student():
    graph, _, _, table = toy(2, 4, seed=8)
    n, length = 512, 4
    clocks, values = clock_noise(3, torch.arange(n), length)
    tau = reveal_times(NOISE, clocks)
    # log-linear: m(tau) / m(1) = e^{-E} is uniform, and m is linear in t, so tau = e^{-E}
    torch.testing.assert_close(tau, torch.exp(-clocks), rtol=1e-12, atol=1e-12)
    out = first_hitting_loop(table, graph, NOISE, graph.sample_limit(n, length), clocks, values)
    torch.testing.assert_close(out.reveal, tau)
    times = uniform_times(6, 1e-5)
    fh_states = states_at(out.x, out.reveal, times[:-1], graph.mask_id)
    seen = []
    reverse_loop(table, graph, NOISE, times, graph.sample_limit(n, length), rule="tweedie",
                 advance=ClockAdvance(clocks, values), on_score=lambda info: seen.append(info.x.clone()))
    for k in range(6):  # the same tokens masked at every student time, in both paths
        assert torch.equal(seen[k] == graph.mask_id, fh_states[k] == graph.mask_id), k
    assert len({int((s == graph.mask_id).sum()) for s in seen}) == 6  # tokens unmask at every step: not vacuous
    # the coupled teacher draws from the coupled student's clocks (clock_noise(coupled_seed, trajectory))
    cache = run_exact_teacher(table, graph, NOISE, times, n, length, batch_size=100, coupled_seed=3,
                              progress=False, store="states")
    torch.testing.assert_close(cache.reveal, tau)


# ---- 5. the teacher cache ----------------------------------------------------------------------------------
def _net(graph_name="absorbing", length=8):
    """A tiny random DiT (6 tokens) and its config and noise dict."""
    from lsdd.models import DiTConfig, ScoreDiT

    noise = {"type": "loglinear", "eps": 1e-3} if graph_name == "absorbing" else {"type": "geometric"}
    cfg = DiTConfig(num_tokens=6, graph=graph_name, noise=noise, length=length, hidden_size=16, cond_dim=16,
                    n_blocks=1, n_heads=2)
    torch.manual_seed(0)
    net = ScoreDiT(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net.eval(), cfg, noise


def _dit(graph_name="absorbing", length=8):
    from lsdd.models import ScoreModel

    net, _, noise = _net(graph_name, length)

    def score(x, sigma):
        with torch.no_grad():
            return net(x, sigma).exp()

    from lsdd.noise import noise_from_dict

    return ScoreModel(score, make_graph(graph_name, 6), noise_from_dict(noise), length, fingerprint=f"dit{graph_name}")


def test_exact_teacher_cache_is_what_the_fit_reads():
    model = _dit()
    times = uniform_times(4, 1e-5)
    kw = dict(seed=2, progress=False, store="scores")
    a = run_exact_teacher(model.score_fn, model.graph, model.noise, times, 20, 8, batch_size=8, **kw)
    assert a.nfe == 3 * (8 + 4)  # 3 batches x (L reveal calls + M student-time calls)
    assert a.teacher_steps == 8 and a.kind == "exact" and a.reveal.shape == (20, 8)
    assert bool((a.x_T == model.graph.mask_id).all()) and torch.equal(a.states[0], a.x_T)
    assert not bool((a.x_0 == model.graph.mask_id).any())
    for k in range(4):  # tokens only unmask, and keep their final value
        m = a.states[k] == model.graph.mask_id
        assert torch.equal(a.states[k][~m], a.x_0[~m])
        if k:
            assert bool((m <= (a.states[k - 1] == model.graph.mask_id)).all())
        # the stored scores are the network's at (state, t_k), on the masked rows
        idx = torch.tensor([0, 5, 19])
        x, stored, s = a.score_at(k, idx)
        want = model.score_fn(x, model.noise.total(times[k].expand(3)).float())[..., :6]
        torch.testing.assert_close(s[stored], want[stored].float(), rtol=1e-5, atol=1e-6)
    # same seed, same run; another batch size, the same trajectories (each draws from its own stream)
    b = run_exact_teacher(model.score_fn, model.graph, model.noise, times, 20, 8, batch_size=8, **kw)
    c = run_exact_teacher(model.score_fn, model.graph, model.noise, times, 20, 8, batch_size=20, **kw)
    assert torch.equal(a.x_0, b.x_0) and torch.equal(a.reveal, b.reveal)
    assert torch.equal(a.x_0, c.x_0) and all(torch.equal(s, t) for s, t in zip(a.states, c.states))
    d = run_exact_teacher(model.score_fn, model.graph, model.noise, times, 20, 8, batch_size=8, seed=3,
                          progress=False)
    assert not torch.equal(a.x_0, d.x_0)
    # a coarser student's view of a finer run
    sub = run_exact_teacher(model.score_fn, model.graph, model.noise, uniform_times(8, 1e-5), 20, 8, batch_size=8,
                            **kw).subsample(4)
    assert sub.kind == "exact" and torch.equal(sub.x_0, a.x_0)
    assert all(torch.equal(s, t) for s, t in zip(sub.states, a.states))


def test_exact_teacher_refuses_other_graphs():
    model = _dit("uniform")
    with pytest.raises(ValueError, match="absorbing"):
        run_exact_teacher(model.score_fn, model.graph, model.noise, uniform_times(4, 1e-5), 4, 8, progress=False)


def test_cache_files_of_the_two_kinds_are_never_confused(tmp_path):
    model = _dit()
    times = uniform_times(4, 1e-5)
    quiet = dict(progress=False, log=lambda *a: None)
    steps, f_steps = get_teacher(model, times, 16, 8, batch_size=8, store="states", folder=tmp_path, **quiet)
    assert find_cached(exact_cache_file(tmp_path, model.fingerprint, 4, 8, 0, 1e-5, "states"), 4) is None
    exact, f_exact = get_teacher(model, times, 16, 8, batch_size=8, store="states", folder=tmp_path, kind="exact",
                                 **quiet)
    assert "_exact_" in f_exact.name and f_exact != f_steps and exact.kind == "exact" and steps.kind == "steps"
    # each kind reads its own file back (with its kind), also in the other store and from a finer grid
    again, f_again = get_teacher(model, times, 16, 8, batch_size=8, store="scores", folder=tmp_path, kind="exact",
                                 **quiet)
    assert f_again == f_exact and again.kind == "exact" and torch.equal(again.reveal, exact.reveal)
    back, f_back = get_teacher(model, times, 16, 8, batch_size=8, store="states", folder=tmp_path, **quiet)
    assert f_back == f_steps and back.kind == "steps" and torch.equal(back.x_0, steps.x_0)
    half, f_half = get_teacher(model, uniform_times(2, 1e-5), 16, 8, batch_size=8, folder=tmp_path, kind="exact",
                               **quiet)
    assert f_half == f_exact and torch.equal(half.states[1], exact.states[2])
    assert cache_file(tmp_path, model.fingerprint, "euler", 16, 4, 8, 8, 0, 1e-5, "states") == f_steps


def test_pipeline_distills_from_the_exact_teacher():
    import lsdd
    from lsdd.errors import UserError

    model = _dit()
    teacher = lsdd.Teacher(kind="exact", num_traj=24, batch_size=8, chunk=4, seed=1)
    out = lsdd.distill(model, "lsd", 4, teacher=teacher, validate=False, progress=False, log=lambda *a: None)
    prov = out.sampler.provenance
    assert prov["teacher_kind"] == "exact" and prov["teacher_nfe"] is None
    assert prov["distill_config"]["teacher_kind"] == "exact"
    assert out.sampler.coeffs != (1.0,) * 4  # something was learned
    with pytest.raises(UserError, match="absorbing"):
        lsdd.distill(_dit("uniform"), "lsd", 4, teacher=teacher, validate=False, progress=False)
    steps_run = run_teacher(model.score_fn, model.graph, model.noise, uniform_times(4, 1e-5), 16, 24, 8,
                            batch_size=8, progress=False)
    with pytest.raises(UserError, match="'steps' run"):
        lsdd.distill(model, "lsd", 4, teacher=teacher, validate=False, progress=False, teacher_run=steps_run)
    # prompts: the exact teacher holds them (every output keeps its prompt), and the learned sampler says so
    cond = lsdd.distill(model, "lsd", 4, teacher=teacher, validate=True, progress=False, log=lambda *a: None,
                        prompts=[[1, 0], [0, 1], [2, 2], [3, 1]], force=True)
    assert cond.sampler.provenance["teacher_kind"] == "exact"
    assert cond.sampler.provenance["conditional"]["num_prompts"] == 4


def test_exact_teacher_with_prompts_samples_the_conditional_law():
    """Held tokens are never revealed: with the exact score the outputs of each prompt follow p0(x | prompt), the
    held tokens sit in every cached state, their rows are never stored, and a row makes one call per free token."""
    from lsdd.sampling.exact import exact_conditional_law

    graph, _, exact, table = toy(3, 3, seed=4)
    m = graph.mask_id
    given = torch.tensor([[1, m, m], [m, m, 0]])
    times = uniform_times(4, 1e-5)
    cache = run_exact_teacher(table, graph, NOISE, times, N_MC, 3, batch_size=N_MC, seed=3, progress=False,
                              store="scores", given=given)
    assert cache.nfe == 2 + 4 and table.calls == 2 + 4  # L - K = 2 reveal calls (every row has 2 free), + M
    assert torch.equal(cache.given, given[torch.arange(N_MC) % 2])
    held = cache.given != m
    for k in range(4):
        assert torch.equal(cache.states[k][held], cache.given[held])
        x, stored, _ = cache.score_at(k, torch.arange(N_MC))
        assert not bool((stored & held).any()) and bool((stored == (x == m)).all())
    assert bool(torch.isinf(cache.reveal[held]).all()) and bool(torch.isfinite(cache.reveal[~held]).all())
    for p in range(2):
        rows = cache.x_0[p::2]
        law = exact_conditional_law(exact, given[p])
        assert within_se(frequencies(rows, graph.num_states), law, rows.shape[0]) < Z, p


def test_conditional_exact_runs_are_cached_apart(tmp_path):
    from lsdd.distillation.teacher import prompt_fingerprint

    model = _dit()
    times, quiet = uniform_times(4, 1e-5), dict(progress=False, log=lambda *a: None)
    m = model.graph.mask_id
    given = torch.tensor([[1, 2, m, m, m, m, m, m], [3, m, m, m, m, m, m, m]])
    plain, f_plain = get_teacher(model, times, 16, 8, batch_size=8, folder=tmp_path, kind="exact", **quiet)
    cond, f_cond = get_teacher(model, times, 16, 8, batch_size=8, folder=tmp_path, kind="exact", given=given,
                               **quiet)
    assert f_cond != f_plain and f"_p{prompt_fingerprint(given)}_" in f_cond.name and plain.given is None
    assert cond.nfe == 7 + 4  # one batch: as many reveal calls as its freest row has free tokens (7), + M
    again, f_again = get_teacher(model, times, 16, 8, batch_size=8, folder=tmp_path, kind="exact", given=given,
                                 **quiet)
    assert f_again == f_cond and torch.equal(again.x_0, cond.x_0) and torch.equal(again.given, cond.given)
    held = cond.given != m
    assert torch.equal(cond.x_0[held], cond.given[held]) and torch.equal(cond.given, given[torch.arange(8) % 2])


def test_auto_teacher_is_exact_on_masked_models_of_length_at_most_its_steps():
    import lsdd

    absorbing, uniform = _dit(), _dit("uniform")
    assert lsdd.Teacher().kind == "auto"
    assert lsdd.Teacher().resolved(absorbing).kind == "exact"
    assert lsdd.Teacher(nfe=4).resolved(absorbing).kind == "steps"  # L = 8 > N = 4: the step teacher is cheaper
    assert lsdd.Teacher().resolved(uniform).kind == "steps"
    assert lsdd.Teacher(kind="steps").resolved(absorbing).kind == "steps"
    quiet = dict(validate=False, progress=False, log=lambda *a: None)
    out = lsdd.distill(absorbing, "lsd", 4, teacher=lsdd.Teacher(num_traj=16, batch_size=8, chunk=4), **quiet)
    assert out.sampler.provenance["teacher_kind"] == "exact"
    out = lsdd.distill(uniform, "lsd", 4, teacher=lsdd.Teacher(nfe=16, num_traj=16, batch_size=8, chunk=4), **quiet)
    assert out.sampler.provenance["teacher_kind"] == "steps"
    # a run given decides the kind under auto
    steps_run = run_teacher(absorbing.score_fn, absorbing.graph, absorbing.noise, uniform_times(4, 1e-5), 16, 16, 8,
                            batch_size=8, progress=False)
    out = lsdd.distill(absorbing, "lsd", 4, teacher=lsdd.Teacher(num_traj=16, batch_size=8, chunk=4),
                       teacher_run=steps_run, **quiet)
    assert out.sampler.provenance["teacher_kind"] == "steps"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    from lsdd.models.checkpoint import save_model_dir

    root = tmp_path_factory.mktemp("fh_models")
    for graph_name in ("absorbing", "uniform"):
        net, cfg, _ = _net(graph_name)
        save_model_dir(root / graph_name, net, cfg, {"note": "test model"})
    return root


def test_cli_distill_with_the_exact_teacher(model_dirs, tmp_path, capsys):
    from lsdd.cli import main
    from lsdd.sampling.sampler import Sampler

    out = tmp_path / "s.json"
    args = ["distill", "--method", "lsd", "--nfe", "4", "--teacher", "exact", "--epochs", "1", "--num-traj", "16", "--batch-size", "8",
            "--no-validate", "--quiet"]
    assert main([*args, "--model", str(model_dirs / "absorbing"), "--out", str(out)]) == 0
    assert Sampler.load(out).provenance["teacher_kind"] == "exact"
    capsys.readouterr()
    assert main([*args, "--model", str(model_dirs / "uniform"), "--out", str(tmp_path / "u.json")]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "absorbing" in err[0], err


def test_cli_bench_with_the_exact_teacher(model_dirs, tmp_path, capsys):
    """One exact run serves both learned bases; the teacher row is "teacher-exact" at L calls per sample."""
    import json

    from lsdd.cli import main

    base = ["bench", "--task", "tokens", "--nfe", "4", "--num-samples", "16", "--batch-size", "8", "--bases", "euler",
            "tweedie", "--methods", "lsd", "--epochs", "1", "--timing-repeats", "0", "--no-validate", "--teacher",
            "exact", "--teacher-cache", str(tmp_path / "tc")]
    assert main([*base, "--model", str(model_dirs / "absorbing"), "--json", str(tmp_path / "b.json")]) == 0
    res = json.loads((tmp_path / "b.json").read_text())
    teacher = [r for r in res["rows"] if r["method"] == "teacher"]
    assert len(teacher) == 1 and teacher[0]["label"] == "teacher-exact" and teacher[0]["nfe"] == 8
    assert list(res["teacher_seconds"]) == ["exact"]
    assert [f.name.split("_")[2] for f in (tmp_path / "tc").iterdir()] == ["exact"]  # one run, named by its kind
    capsys.readouterr()
    assert main([*base, "--model", str(model_dirs / "uniform")]) == 2
    err = capsys.readouterr().err.strip()
    assert "absorbing" in err and len(err.splitlines()) == 1
