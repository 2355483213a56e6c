"""The mathematics of the SGVB estimators against closed forms and independent implementations."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import Normal, kl_divergence

from vae_core import (
    ModelConfig,
    VariationalAutoEncoder,
    kl_diagonal_gaussian_to_standard_normal,
    minibatch_estimator,
    sgvb_estimator,
    sgvb_estimator_a,
    sgvb_estimator_b,
)
from vae_core.networks import GaussianMLPDecoder


def test_closed_form_kl_matches_monte_carlo_and_torch():
    mean = torch.tensor([[0.3, -1.2, 2.0], [0.0, 0.5, -0.7]], dtype=torch.float64)
    log_var = torch.tensor([[-0.5, 0.8, 0.1], [1.5, -2.0, 0.0]], dtype=torch.float64)
    closed = kl_diagonal_gaussian_to_standard_normal(mean, log_var)

    q = Normal(mean, torch.exp(0.5 * log_var))
    reference = kl_divergence(q, Normal(torch.zeros_like(mean), torch.ones_like(mean))).sum(-1)
    torch.testing.assert_close(closed, reference)

    z = q.sample((400_000,))
    log_ratio = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(z.shape[0])
    assert torch.all((mc - closed).abs() < 4 * se + 1e-3), (mc, closed, se)


def test_kl_is_zero_only_at_the_prior():
    zero = kl_diagonal_gaussian_to_standard_normal(torch.zeros(1, 4), torch.zeros(1, 4))
    assert zero.abs().item() < 1e-7
    assert kl_diagonal_gaussian_to_standard_normal(torch.full((1, 4), 0.1), torch.zeros(1, 4)).item() > 0


def _trained_looking_model(decoder: str, x_dim: int) -> VariationalAutoEncoder:
    """A small model with weights large enough that the posterior is far from the prior."""
    torch.manual_seed(0)
    model = VariationalAutoEncoder(ModelConfig(x_dim, 3, 16, decoder, init_std=0.5)).double()
    return model


def test_estimators_a_and_b_agree_in_expectation_and_b_has_lower_variance():
    model = _trained_looking_model("bernoulli", 12)
    x = torch.rand(8, 12, dtype=torch.float64)
    repeats = 20_000
    with torch.no_grad():
        a = sgvb_estimator_a(model, x.repeat(repeats, 1)).view(repeats, -1)
        b = sgvb_estimator_b(model, x.repeat(repeats, 1)).view(repeats, -1)
    se = torch.sqrt(a.var(0) / repeats + b.var(0) / repeats)
    assert torch.all((a.mean(0) - b.mean(0)).abs() < 4 * se), (a.mean(0), b.mean(0), se)
    assert torch.all(b.var(0) < a.var(0)), (a.var(0), b.var(0))


def test_more_samples_reduce_estimator_variance():
    model = _trained_looking_model("bernoulli", 12)
    x = torch.rand(1, 12, dtype=torch.float64).repeat(5_000, 1)
    with torch.no_grad():
        single = sgvb_estimator_b(model, x, L=1).var()
        ten = sgvb_estimator_b(model, x, L=10).var()
    assert ten < single / 5


def test_gaussian_decoder_log_density_matches_scipy():
    torch.manual_seed(3)
    decoder = GaussianMLPDecoder(z_dim=2, hidden_units=7, x_dim=5).double()
    for p in decoder.parameters():
        torch.nn.init.normal_(p, 0, 0.7)
    z = torch.randn(4, 2, dtype=torch.float64)
    x = torch.rand(4, 5, dtype=torch.float64)
    with torch.no_grad():
        ours = decoder(z).log_prob(x).numpy()
        h = np.tanh(z.numpy() @ decoder.hidden.weight.numpy().T + decoder.hidden.bias.numpy())
        out = h @ decoder.heads.weight.numpy().T + decoder.heads.bias.numpy()
    mean = 1 / (1 + np.exp(-out[:, :5]))  # sigmoid mean (docs/protocol.md, section 1)
    std = np.exp(0.5 * out[:, 5:])
    expected = stats.norm.logpdf(x.numpy(), loc=mean, scale=std).sum(-1)
    np.testing.assert_allclose(ours, expected, rtol=1e-10)


def test_bernoulli_decoder_is_the_cross_entropy_on_grey_levels():
    model = _trained_looking_model("bernoulli", 6)
    z = torch.randn(3, 3, dtype=torch.float64)
    x = torch.rand(3, 6, dtype=torch.float64)
    with torch.no_grad():
        y = model.decoder.mean(z)
        expected = (x * torch.log(y) + (1 - x) * torch.log1p(-y)).sum(-1)
        torch.testing.assert_close(model.decoder(z).log_prob(x), expected)


def test_minibatch_estimator_scales_by_n_over_m():
    per_point = torch.tensor([-1.0, -2.0, -3.0, -6.0])
    assert minibatch_estimator(per_point, 1000).item() == pytest.approx(1000 / 4 * -12.0)


def test_unknown_estimator_name_is_rejected():
    assert sgvb_estimator("B") is sgvb_estimator_b
    with pytest.raises(ValueError, match="choose A"):
        sgvb_estimator("C")


def test_initialization_follows_the_paper():
    model = VariationalAutoEncoder(ModelConfig(784, 20, 500, "bernoulli"))
    w = model.encoder.hidden.weight
    assert abs(w.std().item() - 0.01) < 5e-4 and abs(w.mean().item()) < 5e-4
    assert torch.all(model.encoder.heads.weight[20:] == 0) and torch.all(model.encoder.heads.bias[20:] == 0)
    assert torch.all(model.decoder.output.bias == 0)
