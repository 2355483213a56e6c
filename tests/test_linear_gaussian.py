"""An exactly tractable linear-Gaussian model: the bound is below log p(x), equal at the posterior.

p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I). Then p(x) = N(b, W W^T + s^2 I) and the posterior is
N(m, S) with S = (I + W^T W / s^2)^-1, m = S W^T (x - b) / s^2. W has orthogonal columns, so S is
diagonal and the paper's diagonal-Gaussian q can represent the exact posterior.
"""
import math

import torch
from torch import nn
from torch.distributions import MultivariateNormal

from vae_core import ModelConfig, VariationalAutoEncoder, sgvb_estimator_a, sgvb_estimator_b
from vae_core.networks import diagonal_gaussian

X_DIM, Z_DIM, NOISE_STD = 5, 2, 0.5


class LinearGaussianDecoder(nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, z):
        mean = z @ self.weight.T + self.bias
        return diagonal_gaussian(mean, torch.full_like(mean, 2 * math.log(NOISE_STD)))


class GivenPosteriorEncoder(nn.Module):
    """q(z|x) = N(m(x) + shift, S * scale) from the exact posterior moments."""

    def __init__(self, weight, bias, shift=0.0, scale=1.0):
        super().__init__()
        self.weight, self.bias, self.shift, self.scale = weight, bias, shift, scale
        self.z_dim = weight.shape[1]

    def exact_moments(self, x):
        precision = torch.eye(self.z_dim, dtype=x.dtype) + self.weight.T @ self.weight / NOISE_STD**2
        cov = torch.linalg.inv(precision)
        mean = (x - self.bias) @ self.weight @ cov.T / NOISE_STD**2
        return mean, cov

    def mean_and_log_var(self, x):
        mean, cov = self.exact_moments(x)
        log_var = torch.log(torch.diagonal(cov) * self.scale).expand_as(mean)
        return mean + self.shift, log_var

    def forward(self, x):
        return diagonal_gaussian(*self.mean_and_log_var(x))


def make_model(shift=0.0, scale=1.0):
    torch.manual_seed(7)
    q, _ = torch.linalg.qr(torch.randn(X_DIM, Z_DIM, dtype=torch.float64))
    weight = q * torch.tensor([1.5, 0.7], dtype=torch.float64)  # orthogonal columns
    bias = torch.randn(X_DIM, dtype=torch.float64) * 0.3
    model = VariationalAutoEncoder(ModelConfig(X_DIM, Z_DIM, 3, "gaussian")).double()
    model.decoder = LinearGaussianDecoder(weight, bias)
    model.encoder = GivenPosteriorEncoder(weight, bias, shift, scale)
    return model, weight, bias


def exact_log_marginal(x, weight, bias):
    cov = weight @ weight.T + NOISE_STD**2 * torch.eye(X_DIM, dtype=x.dtype)
    return MultivariateNormal(bias, cov).log_prob(x)


def sample_data(weight, bias, n=6):
    z = torch.randn(n, Z_DIM, dtype=torch.float64)
    return z @ weight.T + bias + NOISE_STD * torch.randn(n, X_DIM, dtype=torch.float64)


def test_posterior_is_diagonal_so_q_can_be_exact():
    model, weight, bias = make_model()
    _, cov = model.encoder.exact_moments(torch.zeros(1, X_DIM, dtype=torch.float64))
    assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-12)


def test_bound_equals_log_marginal_at_the_exact_posterior():
    model, weight, bias = make_model()
    x = sample_data(weight, bias)
    exact = exact_log_marginal(x, weight, bias)
    with torch.no_grad():
        # Estimator A has zero variance at the exact posterior: every sample gives log p(x).
        torch.testing.assert_close(sgvb_estimator_a(model, x, L=3), exact, rtol=0, atol=1e-9)
        b = sgvb_estimator_b(model, x, L=200_000)
    assert torch.all((b - exact).abs() < 0.02), (b, exact)


def test_bound_is_below_log_marginal_by_the_kl_gap_for_a_wrong_posterior():
    model, weight, bias = make_model(shift=0.4, scale=2.0)
    x = sample_data(weight, bias)
    exact = exact_log_marginal(x, weight, bias)
    mean_q, log_var_q = model.encoder.mean_and_log_var(x)
    mean_p, cov_p = model.encoder.exact_moments(x)
    var_p, var_q = torch.diagonal(cov_p), log_var_q.exp()
    gap = 0.5 * (var_q / var_p + (mean_q - mean_p) ** 2 / var_p - 1 + torch.log(var_p / var_q)).sum(-1)
    with torch.no_grad():
        for estimator in (sgvb_estimator_a, sgvb_estimator_b):
            bound = estimator(model, x, L=200_000)
            assert torch.all(bound < exact), estimator.__name__
            torch.testing.assert_close(bound, exact - gap, rtol=0, atol=0.02)
