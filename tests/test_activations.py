"""vae_core.activations: the fast tanh is torch.tanh up to rounding."""
import pytest
import torch

from vae_core.activations import tanh_from_sigmoid_


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 2.5e-7), (torch.float64, 5e-16)])
def test_tanh_from_sigmoid_is_tanh(dtype, tolerance):
    a = torch.cat([torch.linspace(-30, 30, 100_001, dtype=dtype),
                   torch.tensor([0.0, 1e-30, -1e-30, 1e-8, 88.0, -88.0, 1e4, -1e4], dtype=dtype)])
    expected = torch.tanh(a.double())
    result = tanh_from_sigmoid_(a.clone())
    assert result.dtype == dtype
    assert float((result.double() - expected).abs().max()) <= tolerance
    assert float(result.abs().max()) <= 1.0  # never outside tanh's range


def test_tanh_from_sigmoid_works_in_place_and_keeps_nan():
    a = torch.tensor([0.5, float("nan"), float("inf"), -float("inf")])
    out = tanh_from_sigmoid_(a)
    assert out.data_ptr() == a.data_ptr()
    assert out[0] == pytest.approx(0.46211716)
    assert torch.isnan(out[1]) and out[2] == 1.0 and out[3] == -1.0
