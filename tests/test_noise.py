import math

import pytest
import torch

from lsdd.noise import Geometric, LogLinear, noise_from_dict


@pytest.mark.parametrize("noise", [LogLinear(1e-3), Geometric(1e-4, 20.0)])
def test_rate_is_derivative_of_total(noise):
    t = torch.linspace(0.01, 0.99, 17, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(noise.total(t).sum(), t)
    # sigma(t) = d sigma_bar / dt
    torch.testing.assert_close(noise.rate(t.detach()), grad)


def test_loglinear_reference_values():
    n = LogLinear(1e-3)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    # P(mask at t) = 1 - e^{-sigma_bar} = (1 - eps) t
    torch.testing.assert_close(-torch.expm1(-n.total(t)), (1 - 1e-3) * t)
    assert float(n.total(t)[0]) == 0.0 and math.isclose(float(n.total(t)[2]), -math.log(1e-3))
    # sigma(t) = (1 - eps) / (1 - (1 - eps) t): 0.999 at 0, 0.999 / 0.5005 at 0.5, 0.999 / 0.001 at 1
    torch.testing.assert_close(n.rate(t), torch.tensor([0.999, 0.999 / 0.5005, 999.0], dtype=torch.float64))


def test_geometric_reference_values():
    n = Geometric(1e-4, 20.0)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(n.total(t), torch.tensor([1e-4, math.sqrt(1e-4 * 20.0), 20.0], dtype=torch.float64))
    # sigma(t) = sigma_bar(t) log(sigma_max / sigma_min)
    torch.testing.assert_close(n.rate(t), n.total(t) * math.log(2e5))


def test_round_trip_and_errors():
    assert LogLinear(0.01).to_dict() == {"type": "loglinear", "eps": 0.01}
    assert Geometric(1e-3, 10.0).to_dict() == {"type": "geometric", "sigma_min": 1e-3, "sigma_max": 10.0}
    for n in (LogLinear(0.01), Geometric(1e-3, 10.0)):
        assert noise_from_dict(n.to_dict()) == n
    with pytest.raises(ValueError, match="unknown noise type 'cosine'"):
        noise_from_dict({"type": "cosine"})
    with pytest.raises(ValueError, match="bad parameters for noise 'loglinear'"):
        noise_from_dict({"type": "loglinear", "sigma": 1.0})
    with pytest.raises(ValueError, match=r"LogLinear eps must lie in \(0, 1\), got 0.0"):
        LogLinear(0.0)
    with pytest.raises(ValueError, match="0 < sigma_min < sigma_max"):
        Geometric(1.0, 0.5)
