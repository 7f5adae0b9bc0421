import math
from math import comb

import pytest
import torch

from lsdd.data.countdown import generate_countdown
from lsdd.errors import UserError
from lsdd.tasks import TASKS, MetricSpec, expected_tv_to_uniform, get_task, tv_to_uniform
from lsdd.tasks.countdown import CountdownTask, jys_error, start_counts, strict_violations

V = 32


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_and_specs():
    task = get_task("countdown")
    assert isinstance(task, CountdownTask) and set(TASKS) == {"countdown", "markov", "tokens", "text", "digits"}
    names = [m.name for m in task.metrics]
    # compute returns exactly the declared metrics, in order
    assert list(task.compute(torch.tensor([[1, 0]])).keys()) == names
    # every pair is (quality, diversity); the headline pair is (any_violation, start_tv)
    for q, d in task.pairs:
        assert task.spec(q).kind == "quality" and task.spec(d).kind == "diversity"
    assert task.pairs[0] == ("any_violation", "start_tv")
    # directions: error rates and distances down, valid share and entropy up, the reference neither
    directions = {m.name: m.direction for m in task.metrics}
    assert directions == {"violation_rate": "lower is better", "any_violation": "lower is better",
                          "jys_error": "lower is better", "valid_fraction": "higher is better",
                          "nll_valid": "lower is better", "start_tv": "lower is better",
                          "start_tv_ref": "reference", "start_entropy": "higher is better"}
    assert MetricSpec("x", "", True, "reference").direction == "reference"
    with pytest.raises(KeyError, match="has no metric 'nope'"):
        task.spec("nope")


def test_get_task_unknown_lists_valid_names():
    with pytest.raises(UserError, match="^unknown task 'nope'; valid tasks: countdown, digits, markov, text, tokens$"):
        get_task("nope")


def test_hand_example_jys_vs_strict():
    x = torch.tensor([[5, 4, 2, 1, 0, 0]])
    m = get_task("countdown").compute(x)
    # JYS resets prev after the checked pair 5->4, so 4->2 is never checked
    assert m["jys_error"] == 0.0
    # strict: only 4->2 of the 5 transitions breaks the rule
    assert m["violation_rate"] == pytest.approx(1 / 5)
    assert m["any_violation"] == 1.0 and m["valid_fraction"] == 0.0
    assert math.isnan(m["nll_valid"])


def test_generated_data_is_clean_and_diverse():
    x = generate_countdown(1000, 64, generator=gen(0))
    m = get_task("countdown").compute(x)
    assert m["violation_rate"] == 0.0 and m["any_violation"] == 0.0 and m["jys_error"] == 0.0
    assert m["valid_fraction"] == 1.0
    # every run start costs log V and nothing else does: nll = (number of starts) log V / (n L)
    assert m["nll_valid"] == pytest.approx(int(start_counts(x, V).sum()) * math.log(V) / (1000 * 64), rel=1e-12)
    # start_tv of true data is only finite-sample noise: same size as its reference (~0.035 here)
    assert m["start_tv"] < 0.06 and abs(m["start_tv"] - m["start_tv_ref"]) < 0.03
    assert m["start_entropy"] == pytest.approx(math.log(V), abs=0.02)


def test_uniform_random_matches_published_figures():
    x = torch.randint(0, V, (2000, 256), generator=gen(1))
    m = get_task("countdown").compute(x)
    # peers.md §3: JYS ≈ 0.475; Markov chain: 961/2016 per checked token, first token free
    assert m["jys_error"] == pytest.approx(0.475, abs=0.01)
    assert m["jys_error"] == pytest.approx(961 / 2016 * 255 / 256, abs=0.003)
    # peers.md §3: strict ≈ 0.934 (their per-token form, L in the denominator); per transition it is (31/32)^2
    assert m["violation_rate"] == pytest.approx(0.934, abs=0.01)
    assert m["violation_rate"] == pytest.approx((31 / 32) ** 2, abs=0.003)


def test_mask_counts_as_violation():
    mask = V
    x = torch.tensor([[3, 2, 1, 0, mask, 1, 0, 0]])
    m = get_task("countdown").compute(x)
    # 0->mask and mask->1 both touch the mask
    assert m["violation_rate"] == pytest.approx(2 / 7)
    assert m["any_violation"] == 1.0 and m["valid_fraction"] == 0.0
    # JYS: the mask (after a 0) and the 1 checked against it are wrong (1 - 6/8)
    assert m["jys_error"] == pytest.approx(2 / 8)
    # mask -> 31 would pass a naive cur == prev - 1 check; it must not
    y = torch.tensor([[0, mask, mask - 1, mask - 2]])
    assert strict_violations(y, V).tolist() == [[True, True, False]]
    assert jys_error(y, V).tolist() == [0.5]
    # a mask in the first position of a length-1 sample is still a violation
    assert get_task("countdown").compute(torch.tensor([[mask]]))["any_violation"] == 1.0


def test_nll_valid_single_sequence():
    x = torch.tensor([[2, 1, 0, 0, 3, 2, 1, 0]])
    m = get_task("countdown").compute(x)
    # starts: position 0 and positions 3, 4 (after a 0); the final 0 starts nothing
    assert m["nll_valid"] == pytest.approx(3 * math.log(V) / 8)
    assert start_counts(x, V)[[2, 0, 3]].tolist() == [1, 1, 1]


def test_start_entropy_and_tv_on_a_peaked_start_distribution():
    x = torch.tensor([[0, 0, 0, 0]])  # every start is 0
    m = get_task("countdown").compute(x)
    assert m["start_entropy"] == 0.0
    # all mass on 1 of 32 bins: TV = 1 - 1/32
    assert m["start_tv"] == pytest.approx(1 - 1 / V)
    # two starts, 3 (position 0) and 1 (after the first 0); the final 0 starts nothing. Equal shares:
    # entropy log 2, TV = (2 (1/2 - 1/32) + 30 / 32) / 2 = 1 - 2/32, reference for 2 draws
    m = get_task("countdown").compute(torch.tensor([[3, 2, 1, 0, 1, 0]]))
    assert m["start_entropy"] == pytest.approx(math.log(2)) and m["start_tv"] == pytest.approx(1 - 2 / V)
    assert m["start_tv_ref"] == pytest.approx(expected_tv_to_uniform(2, V))
    # 2 uniform draws over 32 bins: TV 1 - 1/32 if they coincide (prob 1/32), else 1 - 2/32
    assert expected_tv_to_uniform(2, V) == pytest.approx((1 - 1 / V) / V + (1 - 2 / V) * (1 - 1 / V))


def test_expected_tv_matches_exact_binomial_sum():
    for n, k in [(1, 2), (5, 3), (64, 32), (100, 7)]:
        p = 1 / k
        exact = k / 2 * sum(comb(n, j) * p**j * (1 - p) ** (n - j) * abs(j / n - p) for j in range(n + 1))
        assert expected_tv_to_uniform(n, k) == pytest.approx(exact, rel=1e-9)


def test_expected_tv_matches_monte_carlo():
    n, k, reps = 500, 32, 400
    draws = torch.randint(0, k, (reps, n), generator=gen(2))
    mc = sum(tv_to_uniform(torch.bincount(d, minlength=k)) for d in draws) / reps
    assert expected_tv_to_uniform(n, k) == pytest.approx(mc, rel=0.03)


def test_bad_inputs_raise():
    task = CountdownTask()
    with pytest.raises(UserError, match="shape"):
        task.compute(torch.zeros(4, dtype=torch.long))
    with pytest.raises(UserError, match="dtype"):
        task.compute(torch.zeros(2, 4))
    with pytest.raises(UserError, match="num_values"):
        CountdownTask(num_values=0)


def test_num_values_option():
    # with 4 values, 4 is out of range and the NLL uses log 4
    task = get_task("countdown", num_values=4)
    assert task.compute(torch.tensor([[4, 3]]))["any_violation"] == 1.0
    assert task.compute(torch.tensor([[3, 2, 1, 0]]))["nll_valid"] == pytest.approx(math.log(4) / 4)


def test_tokens_task_hand_computed():
    from lsdd.tasks import get_task

    task = get_task("tokens")
    x = torch.tensor([[1, 1, 2, 3], [5, 5, 5, 5]])
    m = task.compute(x)
    # repeats: 1 of 3 pairs, 3 of 3 pairs; entropies: H(1/2, 1/4, 1/4) and 0; distinct: 3/4 and 1/4
    assert m["repeat_rate"] == pytest.approx((1 / 3 + 1) / 2)
    assert m["unigram_entropy"] == pytest.approx((1.5 * math.log(2)) / 2)
    assert m["distinct_1"] == pytest.approx(0.5)
    assert task.pairs[0] == ("repeat_rate", "unigram_entropy")


def test_markov_task_hand_checked():
    from lsdd.data.markov import generate_markov, markov_chain, markov_log_prob

    task = get_task("markov", num_values=6, degree=2, seed=3)
    chain = markov_chain(6, 2, 3)
    # each row of the chain is a distribution over exactly 2 successors
    torch.testing.assert_close(chain.sum(1), torch.ones(6, dtype=torch.float64))
    assert ((chain > 0).sum(1) == 2).all()
    x = generate_markov(400, 30, chain, gen(0))
    m = task.compute(x)
    # samples of the chain break no rule, and their successor laws approach the chain's
    assert m["invalid_rate"] == 0.0 and m["any_invalid"] == 0.0 and m["successor_tv"] < 0.05
    assert abs(m["successor_entropy"] - m["chain_entropy"]) < 0.02
    # the per-transition NLL is the exact one: -mean log P over all transitions
    lp = markov_log_prob(x, chain) + math.log(6)  # drop the uniform first token
    assert m["nll"] == pytest.approx(float(-lp.sum() / (400 * 29)), rel=1e-9)
    # a forbidden transition 0 -> a planted in the first of two samples (a -> next may be forbidden too)
    a = chain[0].argmin().item()
    y = x[:2].clone()
    y[0, 0], y[0, 1] = 0, a
    n_bad = 1 + int(chain[a, y[0, 2]] == 0)
    bad = task.compute(y)
    assert bad["any_invalid"] == 0.5
    assert bad["invalid_rate"] == pytest.approx(n_bad / 29 / 2)
