"""Wake-sleep and Monte Carlo EM on a linear-Gaussian model whose log-likelihood is exact."""
import copy
import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

from baselines import MonteCarloEM, WakeSleep
from vae_core import AEVB, ModelConfig, OptimizerConfig, VariationalAutoEncoder
from vae_core.networks import diagonal_gaussian
from vae_core.training import train_steps

X_DIM, Z_DIM, NOISE_STD, N = 4, 2, 0.3, 400


class LinearGaussianDecoder(nn.Module):
    """p(x|z) = N(W z + b, s^2 I) with learnable W, b and a fixed s."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight.clone()), nn.Parameter(bias.clone())

    def forward(self, z):
        mean = z @ self.weight.T + self.bias
        return diagonal_gaussian(mean, torch.full_like(mean, 2 * math.log(NOISE_STD)))


def exact_average_log_likelihood(decoder, x):
    cov = decoder.weight @ decoder.weight.T + NOISE_STD**2 * torch.eye(X_DIM, dtype=x.dtype)
    return MultivariateNormal(decoder.bias, cov).log_prob(x).mean().item()


@pytest.fixture
def linear_problem():
    torch.manual_seed(0)
    true_weight = torch.tensor([[1.5, 0.0], [0.5, -1.0], [0.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    true_bias = torch.tensor([0.5, -0.5, 1.0, 0.0], dtype=torch.float64)
    z = torch.randn(N, Z_DIM, dtype=torch.float64)
    x = z @ true_weight.T + true_bias + NOISE_STD * torch.randn(N, X_DIM, dtype=torch.float64)

    def make_model():
        torch.manual_seed(1)
        model = VariationalAutoEncoder(ModelConfig(X_DIM, Z_DIM, 16, "gaussian", init_std=0.1)).double()
        model.decoder = LinearGaussianDecoder(0.1 * torch.randn(X_DIM, Z_DIM, dtype=torch.float64),
                                              torch.zeros(X_DIM, dtype=torch.float64))
        return model

    return x, make_model


@pytest.mark.parametrize("algorithm_class, steps", [(WakeSleep, 1500), (MonteCarloEM, 600)])
def test_baselines_raise_the_exact_log_likelihood(linear_problem, algorithm_class, steps):
    x, make_model = linear_problem
    model = make_model()
    before = exact_average_log_likelihood(model.decoder, x)
    algorithm = algorithm_class(model, N, OptimizerConfig(0.05, warmup_steps=10))
    torch.manual_seed(2)
    train_steps(algorithm, x, steps, 50)
    after = exact_average_log_likelihood(model.decoder, x)
    optimum = MultivariateNormal(x.mean(0), torch.cov(x.T, correction=0)).log_prob(x).mean().item()
    assert after > before + 0.5 * (optimum - before), (before, after, optimum)


def test_mcem_moves_only_the_minibatch_chains_and_reaches_the_target_acceptance(linear_problem):
    x, make_model = linear_problem
    algorithm = MonteCarloEM(make_model(), N, OptimizerConfig(0.05, warmup_steps=10), batch_size=50)
    before = algorithm.chains.clone()
    indices = torch.arange(10, 60)
    algorithm.step(x[indices], indices)
    moved = (algorithm.chains != before).any(-1)
    assert not moved[:10].any() and not moved[60:].any() and moved[indices].float().mean() > 0.5
    torch.manual_seed(3)
    train_steps(algorithm, x, 400, 50)  # every chain visited ~50 times: its step size has adapted
    algorithm.accepted_total, algorithm.proposals_total = 0.0, 0
    train_steps(algorithm, x, 200, 50)
    assert abs(algorithm.acceptance_rate - 0.9) < 0.07, algorithm.acceptance_rate


@pytest.mark.parametrize("algorithm_class", [AEVB, WakeSleep, MonteCarloEM])
def test_state_dict_round_trip_continues_identically(algorithm_class):
    x = torch.rand(300, 12)

    def build(seed):
        torch.manual_seed(seed)
        model = VariationalAutoEncoder(ModelConfig(12, 2, 8, "bernoulli"))
        return algorithm_class(model, 300, OptimizerConfig(0.05, warmup_steps=3), batch_size=20) \
            if algorithm_class is MonteCarloEM else algorithm_class(model, 300, OptimizerConfig(0.05, warmup_steps=3))

    original = build(0)
    torch.manual_seed(5)
    train_steps(original, x, 15, 20)
    saved, rng = copy.deepcopy(original.state_dict()), torch.get_rng_state()
    train_steps(original, x, 15, 20)

    resumed = build(9)
    resumed.load_state_dict(saved)
    torch.set_rng_state(rng)
    train_steps(resumed, x, 15, 20)
    for (name, a), b in zip(original.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    if algorithm_class is MonteCarloEM:
        assert torch.equal(original.chains, resumed.chains)
