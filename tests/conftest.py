import pytest
import torch

from lsdd.data.countdown import countdown_log_prob
from lsdd.sampling.exact import all_sequences


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _cpu_by_default(request, monkeypatch):
    """--device auto means cpu in the tests (outside tests marked gpu), so that the CLI's results match the
    library's CPU runs on a machine with a GPU too."""
    if "gpu" not in request.keywords:
        import lsdd.cli.common

        monkeypatch.setattr(lsdd.cli.common, "auto_device", lambda: "cpu")


def toy_law(num_values: int, length: int, seed: int = 0) -> torch.Tensor:
    """A random data law over all sequences with a few zeros, (V^L,) float64."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(num_values**length, generator=g, dtype=torch.float64) ** 2
    p[:: max(2, num_values)] = 0.0
    return p / p.sum()


def countdown_law(num_values: int, length: int) -> torch.Tensor:
    """The exact countdown data law over all sequences, (V^L,) float64."""
    lp = countdown_log_prob(all_sequences(num_values, length), num_values)
    p = lp.exp()
    return p / p.sum()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def sampler_law_vs_samples(exact, graph, noise, times, length: int, kw: dict, n: int = 20000, seed: int = 1):
    """A sampler's exact output law (``lsdd.sampling.exact.exact_sampler_law``) and a chi-square of ``n`` of its samples
    against it: returns (law, chi2, live cells). Asserts that the law sums to 1 and that no sample falls where the
    law is zero."""
    from lsdd.sampling.draws import make_generator
    from lsdd.sampling.exact import exact_sampler_law, seq_index
    from lsdd.sampling.loop import reverse_loop

    ref = exact_sampler_law(exact, graph, noise, times, length, **kw)
    assert abs(float(ref.sum()) - 1.0) < 1e-12
    start = graph.sample_limit(n, length, generator=make_generator(seed, "cpu", 1))  # uniform graph: random
    out = reverse_loop(exact, graph, noise, times, start, rule=kw["method"],
                       coeffs=kw["coeffs"], generator=make_generator(seed)).x
    emp = torch.bincount(seq_index(out, graph.num_states), minlength=ref.numel()).double() / n
    live = ref > 1e-9
    assert float(emp[~live].sum()) == 0.0
    chi2 = float((((emp - ref) ** 2 / ref.clamp_min(1e-300))[live]).sum() * n)
    return ref, chi2, int(live.sum())

