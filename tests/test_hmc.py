"""Batched HMC against targets whose answers are known."""
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from vae_core.hmc import adapt_step_size, hmc_sample, hmc_step, leapfrog, log_prob_and_grad

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=torch.float64)


def gaussian_target():
    return MultivariateNormal(MEAN, COV).log_prob


@pytest.mark.parametrize("target_accept", [0.9, 0.65])
def test_hmc_recovers_a_correlated_gaussian_and_hits_the_target_acceptance(target_accept):
    torch.manual_seed(0)
    chains, kept = 2000, 100
    result = hmc_sample(gaussian_target(), torch.zeros(chains, 2, dtype=torch.float64), n_samples=kept,
                        n_leapfrog=4, step_size=0.05, burn_in=150, target_accept=target_accept)
    samples = result.samples.reshape(-1, 2)
    # Successive samples of a chain are correlated; chains are independent, so judge the error
    # with the standard error of the per-chain means (independent across chains).
    chain_means = result.samples.mean(0)
    se = chain_means.std(0) / math.sqrt(chains)
    assert torch.all((samples.mean(0) - MEAN).abs() < 5 * se), (samples.mean(0), se)
    cov = torch.cov(samples.T)
    assert torch.allclose(cov, COV, atol=0.1), cov
    assert abs(result.accept_rate.mean().item() - target_accept) < 0.05, result.accept_rate.mean()


def test_leapfrog_is_reversible_and_nearly_conserves_energy():
    precision = torch.linalg.inv(COV)
    grad = lambda z: -(z - MEAN) @ precision  # noqa: E731
    energy = lambda z, p: 0.5 * ((z - MEAN) @ precision * (z - MEAN)).sum(-1) + 0.5 * p.pow(2).sum(-1)  # noqa: E731
    torch.manual_seed(1)
    z0, p0 = torch.randn(50, 2, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64)
    z1, p1 = leapfrog(z0, p0, grad, 0.1, 25)
    z_back, p_back = leapfrog(z1, -p1, grad, 0.1, 25)
    torch.testing.assert_close(z_back, z0, rtol=0, atol=1e-10)
    torch.testing.assert_close(-p_back, p0, rtol=0, atol=1e-10)
    errors = []
    for step in (0.1, 0.05):
        z, p = leapfrog(z0, p0, grad, step, int(round(2.5 / step)))
        errors.append((energy(z, p) - energy(z0, p0)).abs().max().item())
    assert errors[0] < 0.05
    assert 2.5 < errors[0] / errors[1] < 6.0, errors  # O(step^2): halving the step quarters it


def test_the_metropolis_step_rejects_non_finite_proposals():
    def log_prob(z):
        return torch.where(z[:, 0] > 0.5, torch.full_like(z[:, 0], torch.nan), -0.5 * z.pow(2).sum(-1))

    z = torch.zeros(100, 2, dtype=torch.float64)
    move = hmc_step(log_prob, z, 2.0, 5)
    crossed = move.accepted.clone()
    assert torch.isfinite(move.log_prob).all() and torch.isfinite(move.z).all()
    assert (move.z[:, 0] <= 0.5).all() or not crossed.any()


def test_gradient_does_not_touch_parameter_grads():
    weight = torch.nn.Parameter(torch.tensor([2.0]))
    logp, grad = log_prob_and_grad(lambda z: -(weight * z).pow(2).sum(-1), torch.ones(3, 1))
    assert weight.grad is None
    torch.testing.assert_close(grad, torch.full((3, 1), -8.0))


def test_authors_adaptation_rule():
    step = torch.tensor([0.1, 0.1])
    new = adapt_step_size(step, torch.tensor([0.95, 0.5]), 0.9, 1.25)
    torch.testing.assert_close(new, torch.tensor([0.125, 0.08]))
