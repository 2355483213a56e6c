"""Batched HMC (vae_core/hmc.py) against targets whose answers are known.

Error bars come from the sample itself: chains are independent, so a statistic averaged within
each chain and then across C chains has standard error std_across_chains / sqrt(C), whatever the
autocorrelation inside a chain.
"""
import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from vae_core import ModelConfig, VariationalAutoEncoder
from vae_core.hmc import (
    StepSizeAdaptation,
    authors_adapt_factor,
    hmc_sample,
    hmc_step,
    leapfrog,
    log_prob_and_grad,
)

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=torch.float64)
PRECISION = torch.linalg.inv(COV)
Z_SCORE = 4.5  # two-sided tail ~7e-6 per comparison


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids spin-waiting on a machine shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gaussian_target():
    return MultivariateNormal(MEAN, COV).log_prob


def chain_averaged(statistic: torch.Tensor):
    """statistic (S, C, ...) -> (mean over samples and chains, its standard error)."""
    per_chain = statistic.mean(0)
    return per_chain.mean(0), per_chain.std(0) / math.sqrt(per_chain.shape[0])


def quadratic_energy(z, p):
    """H(z, p) for the target N(MEAN, COV): -log p(z) (up to a constant) + |p|^2 / 2."""
    return 0.5 * ((z - MEAN) @ PRECISION * (z - MEAN)).sum(-1) + 0.5 * p.pow(2).sum(-1)


def trajectory(z, p, step, n):
    """(z, momentum) at the end of ``n`` leapfrog steps on the Gaussian target."""
    return leapfrog(gaussian_target(), z, p, step, n)[:2]


@pytest.mark.parametrize("target_accept", [0.9, 0.65])
def test_hmc_recovers_a_correlated_gaussian_and_hits_the_target_acceptance(target_accept):
    torch.manual_seed(0)
    chains, kept = 2000, 200
    # All chains start at one point 2.5 standard deviations from the mean: burn-in must move them.
    result = hmc_sample(gaussian_target(), torch.zeros(chains, 2, dtype=torch.float64), n_samples=kept,
                        n_leapfrog=4, step_size=0.05, burn_in=150,
                        adaptation=StepSizeAdaptation("robbins_monro", target_accept))
    assert result.samples.shape == (kept, chains, 2) and result.log_prob.shape == (kept, chains)
    torch.testing.assert_close(result.log_prob, gaussian_target()(result.samples))

    mean, mean_se = chain_averaged(result.samples)
    assert torch.all((mean - MEAN).abs() < Z_SCORE * mean_se), (mean, mean_se)
    centred = result.samples - MEAN  # the true mean, so no finite-chain bias in the covariance
    cov, cov_se = chain_averaged(centred.unsqueeze(-1) * centred.unsqueeze(-2))
    assert torch.all((cov - COV).abs() < Z_SCORE * cov_se), (cov, cov_se)
    assert cov_se.max() < 0.03  # the check has teeth: a 7% error in the variance 2.0 would fail it

    assert abs(result.accept_rate.mean().item() - target_accept) < 0.05, result.accept_rate.mean()
    assert result.step_size.shape == (chains,) and result.burn_in_accept_rate.shape == (chains,)


def test_the_metropolis_correction_makes_a_coarse_integrator_exact():
    """One leapfrog step of size 1.6 on N(0, 1): without the accept/reject step (or with the
    ratio inverted) the chain's stationary variance is 1 / (1 - eps^2 / 4) = 2.78, not 1."""
    torch.manual_seed(1)
    chains, kept, eps = 4000, 100, 1.6
    target = Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    log_prob = lambda z: target.log_prob(z).sum(-1)  # noqa: E731
    start = torch.randn(chains, 1, dtype=torch.float64)  # a stationary start
    result = hmc_sample(log_prob, start, n_samples=kept, n_leapfrog=1, step_size=eps, burn_in=20,
                        adaptation=None)
    assert torch.all(result.step_size == eps)
    second_moment, se = chain_averaged(result.samples.pow(2))
    assert abs(second_moment.item() - 1.0) < Z_SCORE * se.item(), (second_moment, se)
    assert 0.2 < result.accept_rate.mean() < 0.9  # the correction is doing work here


def test_leapfrog_is_reversible_and_nearly_conserves_energy():
    torch.manual_seed(1)
    z0, p0 = torch.randn(50, 2, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64)
    z1, p1 = trajectory(z0, p0, 0.1, 25)
    assert (z1 - z0).abs().max() > 0.5  # it moved
    z_back, p_back = trajectory(z1, -p1, 0.1, 25)
    torch.testing.assert_close(z_back, z0, rtol=0, atol=1e-10)
    torch.testing.assert_close(-p_back, p0, rtol=0, atol=1e-10)
    errors = []
    for step in (0.1, 0.05):  # the same trajectory length 2.5
        z, p = trajectory(z0, p0, step, int(round(2.5 / step)))
        errors.append((quadratic_energy(z, p) - quadratic_energy(z0, p0)).abs().max().item())
    assert errors[0] < 0.05
    assert 3.0 < errors[0] / errors[1] < 5.0, errors  # O(step^2): halving the step quarters it


def test_leapfrog_returns_the_density_and_gradient_at_its_end_point_and_reuses_a_given_one():
    torch.manual_seed(2)
    z0, p0 = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    z, p, log_prob, grad = leapfrog(gaussian_target(), z0, p0, 0.1, 6)
    expected_log_prob, expected_grad = log_prob_and_grad(gaussian_target(), z)
    torch.testing.assert_close(log_prob, expected_log_prob)
    torch.testing.assert_close(grad, expected_grad)
    # a caller's gradient at z0 replaces the first evaluation: a wrong one changes the trajectory
    same = leapfrog(gaussian_target(), z0, p0, 0.1, 6, grad=log_prob_and_grad(gaussian_target(), z0)[1])
    torch.testing.assert_close(same[0], z, rtol=0, atol=1e-12)
    wrong = leapfrog(gaussian_target(), z0, p0, 0.1, 6, grad=torch.zeros_like(z0))
    assert (wrong[0] - z).abs().max() > 1e-3


def test_leapfrog_takes_one_step_size_per_chain():
    z0, p0 = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    steps = torch.tensor([0.1, 0.2, 0.1, 0.3, 0.2, 0.1], dtype=torch.float64)
    for shape in ((6,), (6, 1)):
        z, p = trajectory(z0, p0, steps.reshape(shape), 7)
        for c in range(6):
            z_c, p_c = trajectory(z0[c:c + 1], p0[c:c + 1], steps[c].item(), 7)
            torch.testing.assert_close(z[c:c + 1], z_c, rtol=0, atol=1e-12)
            torch.testing.assert_close(p[c:c + 1], p_c, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        trajectory(z0, p0, 0.1, 0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_the_metropolis_step_rejects_non_finite_proposals(bad):
    """log p is ``bad`` on z_0 > 0.3 and standard normal elsewhere: no chain may end up there
    (a +inf density would win any naive Metropolis ratio), and the others still move."""
    def log_prob(z):
        return torch.where(z[:, 0] > 0.3, torch.full_like(z[:, 0], bad), -0.5 * z.pow(2).sum(-1))

    torch.manual_seed(2)
    z = torch.zeros(400, 2, dtype=torch.float64)
    move = hmc_step(log_prob, z, 0.5, 3)
    assert not (move.z[:, 0] > 0.3).any()
    assert torch.isfinite(move.logp).all() and torch.isfinite(move.z).all() and torch.isfinite(move.grad).all()
    assert torch.isfinite(move.accept_prob).all() and (move.accept_prob[~move.accepted] < 1).all()
    assert 0.2 < move.accepted.float().mean() < 0.8  # the chains heading left were accepted


def test_hmc_step_reuses_the_given_density_and_gradient():
    calls = []

    def log_prob(z):
        calls.append(1)
        return -0.5 * z.pow(2).sum(-1)

    z = torch.randn(10, 3, dtype=torch.float64)
    logp, grad = log_prob_and_grad(log_prob, z)
    calls.clear()
    move = hmc_step(log_prob, z, 0.1, 5, logp, grad)
    assert len(calls) == 5  # one evaluation per leapfrog step
    torch.testing.assert_close(move.logp, log_prob(move.z))
    torch.testing.assert_close(move.grad, -move.z)


def test_gradient_does_not_touch_parameter_grads_or_need_grad_mode():
    weight = torch.nn.Parameter(torch.tensor([2.0]))
    with torch.no_grad():
        logp, grad = log_prob_and_grad(lambda z: -(weight * z).pow(2).sum(-1), torch.ones(3, 1))
    assert weight.grad is None and not logp.requires_grad and not grad.requires_grad
    torch.testing.assert_close(grad, torch.full((3, 1), -8.0))


def test_hmc_runs_on_a_decoder_posterior_without_touching_the_model():
    torch.manual_seed(3)
    model = VariationalAutoEncoder(ModelConfig(12, 2, 8, "bernoulli", init_std=0.5))
    x = torch.rand(30, 12)
    before = [p.detach().clone() for p in model.parameters()]
    result = hmc_sample(lambda z: model.log_joint(x, z), torch.randn(30, 2), n_samples=5, n_leapfrog=3,
                        step_size=0.2, burn_in=5)
    assert result.samples.shape == (5, 30, 2) and torch.isfinite(result.samples).all()
    torch.testing.assert_close(result.log_prob[-1], model.log_joint(x, result.samples[-1]).detach())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_authors_adaptation_rule():
    step = torch.tensor([0.1, 0.1, 0.1])
    new = StepSizeAdaptation("authors", 0.9, factor=1.25).update(step, torch.tensor([0.95, 0.5, 0.9]))
    torch.testing.assert_close(new, torch.tensor([0.125, 0.08, 0.08]))
    assert authors_adapt_factor(100) == 1.25 and authors_adapt_factor(1000) == 1.25
    assert authors_adapt_factor(5) == pytest.approx(1.02**5)
    assert StepSizeAdaptation.for_minibatches("authors", 0.9, 5).factor == pytest.approx(1.02**5)


def test_the_mean_targeting_rule():
    step = torch.tensor([0.1, 0.1, 0.1])
    rule = StepSizeAdaptation.for_minibatches("mean", 0.9, 100)  # its largest move up is the authors' factor
    assert rule.gain == pytest.approx(math.log(1.25) / 0.1)
    new = rule.update(step, torch.tensor([1.0, 0.9, 0.0]))
    torch.testing.assert_close(new, torch.tensor([0.125, 0.1, 0.1 * 1.25**-9]))


def test_the_robbins_monro_rule_takes_smaller_steps_as_burn_in_goes_on():
    rule = StepSizeAdaptation("robbins_monro", 0.9)
    step, above = torch.tensor([0.1]), torch.tensor([1.0])
    moves = [float(rule.update(step, above, t) / step) for t in (0, 9, 99)]
    assert moves[0] == pytest.approx(math.exp(2.0 * 0.1)) and moves[0] > moves[1] > moves[2] > 1.0
    assert float(rule.update(step, torch.tensor([0.9]), 5)) == pytest.approx(0.1)  # at the target: no move
    with pytest.raises(ValueError, match="unknown step-size adaptation rule"):
        StepSizeAdaptation("median")


def test_jittered_sampling_is_still_exact():
    torch.manual_seed(4)
    result = hmc_sample(gaussian_target(), MEAN + torch.randn(1000, 2, dtype=torch.float64) @ torch.linalg.cholesky(COV).T,
                        n_samples=100, n_leapfrog=4, step_size=0.5, burn_in=30, step_size_jitter=0.3)
    centred = result.samples - MEAN
    cov, cov_se = chain_averaged(centred.unsqueeze(-1) * centred.unsqueeze(-2))
    assert torch.all((cov - COV).abs() < Z_SCORE * cov_se), (cov, cov_se)
    with pytest.raises(ValueError):
        hmc_sample(gaussian_target(), torch.zeros(2, 2, dtype=torch.float64), 1, 1, step_size_jitter=1.0)
