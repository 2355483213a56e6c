"""Annealed importance sampling and the BDMC sandwich (vae_core/marginal_likelihood/ais.py) against
known answers: the linear-Gaussian model's closed-form p(x), and the exact grid on a non-linear
decoder with a non-Gaussian posterior (tests/test_marginal_likelihood.py's)."""
import pytest
import torch

from tests.test_linear_gaussian import exact_log_marginal, make_model, sample_data
from tests.test_marginal_likelihood import _one_thread, nonlinear  # noqa: F401 (fixtures: one thread, the decoder)
from vae_core.marginal_likelihood.ais import ais_estimator, bdmc_sandwich, sigmoid_schedule, simulate_from_model


def test_the_schedule_runs_from_zero_to_one_and_is_denser_at_the_ends():
    betas = sigmoid_schedule(100)
    assert betas[0] == 0 and betas[-1] == 1 and torch.all(betas[1:] > betas[:-1])
    steps = betas[1:] - betas[:-1]
    assert steps[0] < steps[50] and steps[-1] < steps[50]
    with pytest.raises(ValueError, match="at least one"):
        sigmoid_schedule(0)


def test_ais_finds_the_closed_form_marginal_and_improves_with_more_steps():
    torch.manual_seed(0)
    model, weight, bias = make_model()
    x = sample_data(weight, bias, n=60)
    exact = exact_log_marginal(x, weight, bias)
    short = ais_estimator(model, x, n_chains=8, n_steps=5)
    long = ais_estimator(model, x, n_chains=8, n_steps=200)
    assert float((exact - long.log_px).mean()) == pytest.approx(0.0, abs=0.05)
    assert float((exact - short.log_px).mean()) > 0.2  # few steps: the downward (Jensen) bias shows
    assert float(long.details["accept_rate"].mean()) > 0.5


def test_the_sandwich_brackets_the_true_marginal_and_closes_with_more_steps():
    torch.manual_seed(1)
    model, weight, bias = make_model()
    x, z = simulate_from_model(model, 300)
    exact = exact_log_marginal(x, weight, bias)
    gaps = []
    for steps in (10, 100):
        lower, upper = bdmc_sandwich(model, x, z, n_chains=4, n_steps=steps)
        assert float((lower.log_px - exact).mean()) < 0.02
        assert float((upper.log_px - exact).mean()) > -0.02
        gaps.append(float((upper.log_px - lower.log_px).mean()))
    assert gaps[1] < gaps[0] / 4 and gaps[1] < 0.3


def test_ais_agrees_with_the_exact_grid_on_a_non_gaussian_posterior(nonlinear):
    model, x, grid = nonlinear
    torch.manual_seed(2)
    estimate = ais_estimator(model, x, n_chains=16, n_steps=300)
    difference = estimate.log_px - grid.log_px
    assert abs(float(difference.mean())) < 0.05
    assert float(difference.abs().max()) < 0.5
