"""The one reverse-time loop: NFE counting, the score contract, errors naming the step, hooks, two-call
steps, state-dependent coefficients, generator/device plumbing and per-chunk random streams."""

import pytest
import torch

from lsdd.sampling.draws import RowStreams, check_generator, derive_seed, make_generator
from lsdd.sampling.exact import ExactScore, exact_sampler_law
from lsdd.graphs import Absorbing, Uniform
from lsdd.sampling.loop import CountedScore, ScoreContractError, reverse_loop
from lsdd.noise import Geometric, LogLinear
from lsdd.sampling.samplers import sample
from lsdd.sampling.schedules import uniform_times
from lsdd.sampling.steps import Euler

from conftest import countdown_law, toy_law

ABS, LOGLIN = Absorbing(3), LogLinear(1e-3)
UNI, GEO = Uniform(3), Geometric(1e-3, 8.0)


def test_contract_enforced_stay_entry_cannot_change_the_law():
    # an adapter that forgets the stay entry (here: 7 instead of 1) must not change the sampler's law;
    # Tweedie on the uniform graph reads that entry, so an unenforced contract would change it
    exact = ExactScore(toy_law(3, 2), UNI, 2)

    def careless(x, sigma):
        return exact(x, sigma).scatter(-1, x[..., None], 7.0)

    times = uniform_times(5, eps=1e-3)
    good = exact_sampler_law(exact, UNI, GEO, times, 2, method="tweedie")
    bad = exact_sampler_law(careless, UNI, GEO, times, 2, method="tweedie")
    torch.testing.assert_close(bad, good, rtol=1e-12, atol=1e-14)


def test_nan_score_error_names_the_step():
    exact = ExactScore(countdown_law(3, 2), ABS, 2)
    calls = []

    def broken(x, sigma):
        calls.append(1)
        out = exact(x, sigma)
        return out * float("nan") if len(calls) == 3 else out

    with pytest.raises(ScoreContractError, match=r"step 2 \(t=0\.6.*NaN or infinite"):
        sample(broken, ABS, LOGLIN, uniform_times(5), (4, 2), generator=torch.Generator().manual_seed(0))


def test_wrong_score_shape_is_an_error():
    with pytest.raises(ScoreContractError, match=r"returned shape \(4, 2, 3\), expected .* \(4, 2, 4\)"):
        sample(lambda x, s: torch.ones(*x.shape, 3), ABS, LOGLIN, uniform_times(3), (4, 2))


class TwoCallEuler(Euler):
    """A step that evaluates the network a second time (like theta-RK-2) and averages the scores."""

    calls = 2

    def __call__(self, graph, noise, x, score, t, s, coeff=1.0, mode="linear", last=False, call=None):
        mid = call(x, (t + s) / 2)
        return super().__call__(graph, noise, x, (score + mid) / 2, t, s, coeff, mode, last, call)


def test_nfe_counted_in_one_place_including_two_call_steps():
    exact = ExactScore(countdown_law(3, 2), ABS, 2)
    x = ABS.sample_limit(8, 2)
    one = reverse_loop(exact, ABS, LOGLIN, uniform_times(6), x, generator=torch.Generator().manual_seed(0))
    two = reverse_loop(exact, ABS, LOGLIN, uniform_times(6), x, rule=TwoCallEuler(),
                       generator=torch.Generator().manual_seed(0))
    # M steps of a one-call rule are M network calls; a two-call rule makes 2M, counted by the loop
    assert one.nfe == 6 and two.nfe == 12
    # the count is the number of real calls the score function received
    counted = CountedScore(exact, ABS, LOGLIN)
    reverse_loop(counted, ABS, LOGLIN, uniform_times(6), x, rule=TwoCallEuler(),
                 generator=torch.Generator().manual_seed(0))
    assert counted.calls == 12 and exact.calls > 0


def test_state_dependent_coefficients_through_the_loop():
    exact = ExactScore(countdown_law(3, 2), ABS, 2)
    times = uniform_times(4, eps=1e-3)
    const = exact_sampler_law(exact, ABS, LOGLIN, times, 2, coeffs=torch.full((4,), 0.6, dtype=torch.float64))
    # a callable that returns the same value for every token reproduces the per-step law exactly
    same = exact_sampler_law(exact, ABS, LOGLIN, times, 2,
                             coeffs=lambda k, x, score: torch.full(x.shape, 0.6, dtype=torch.float64))
    torch.testing.assert_close(same, const, rtol=1e-12, atol=1e-14)
    # one that depends on the token's confidence changes the law
    conf = exact_sampler_law(exact, ABS, LOGLIN, times, 2,
                             coeffs=lambda k, x, score: score[..., :3].amax(-1).double().clamp(0.1, 2.0))
    assert (conf - const).abs().sum() > 1e-3


def test_hooks_see_every_step_in_order():
    exact = ExactScore(countdown_law(3, 2), ABS, 2)
    seen = []
    reverse_loop(exact, ABS, LOGLIN, uniform_times(4), ABS.sample_limit(2, 2),
                 generator=torch.Generator().manual_seed(0),
                 on_score=lambda i: seen.append(("score", i.k, i.law is None)),
                 on_step=lambda i: seen.append(("step", i.k, i.law is not None)))
    assert seen == [(kind, k, True) for k in range(4) for kind in ("score", "step")]


def test_generator_must_live_on_the_draw_device():
    # a CPU generator cannot drive CUDA draws: a clear error, raised before any network call
    with pytest.raises(ValueError, match="generator lives on cpu but the draws happen on cuda"):
        check_generator(torch.Generator(), "cuda")
    with pytest.raises(ValueError, match="torch.Generator\\(device='cuda'\\)"):
        sample(lambda x, s: 1 / 0, ABS, LOGLIN, uniform_times(3), (2, 2), generator=torch.Generator(),
               device="cuda")
    assert make_generator(5, "cpu").device.type == "cpu"
    check_generator(make_generator(5, "cpu"), torch.device("cpu"))


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert len({derive_seed(0, b) for b in range(1000)} | {derive_seed(1, b) for b in range(1000)}) == 2000
    a = torch.rand(3, generator=make_generator(0, "cpu", 7))
    assert torch.equal(a, torch.rand(3, generator=make_generator(derive_seed(0, 7), "cpu")))


@pytest.mark.parametrize("graph,noise", [(ABS, LOGLIN), (UNI, GEO)], ids=["absorbing", "uniform"])
def test_row_streams_make_chunks_independent_of_their_neighbours(graph, noise):
    # chunk 0's samples do not depend on which chunks share its batch: what makes sharding by rank exact
    exact = ExactScore(toy_law(3, 3), graph, 3)
    times = uniform_times(5)
    streams = lambda ids, sizes: RowStreams([make_generator(0, "cpu", i) for i in ids], sizes)
    alone = sample(exact, graph, noise, times, (4, 3), generator=streams([0], [4]))
    both = sample(exact, graph, noise, times, (10, 3), generator=streams([0, 1], [4, 6]))
    other = sample(exact, graph, noise, times, (10, 3), generator=streams([0, 2], [4, 6]))
    assert torch.equal(both.x[:4], alone.x) and torch.equal(other.x[:4], alone.x)
    assert not torch.equal(both.x[4:], other.x[4:])
