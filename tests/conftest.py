import pytest
import torch

from lsdd.data.countdown import countdown_log_prob
from lsdd.exact import all_sequences


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


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
