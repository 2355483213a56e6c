"""The linear-Gaussian floor (pipeline/evaluation/linear_reference.py) against closed forms: factor
analysis's score is log N(x; mu, W W^T + Psi), independent pixels' is the per-pixel Gaussian, and
factor analysis fitted to data drawn from a factor model comes close to the true model's likelihood."""
import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from pipeline.evaluation.linear_reference import fit_linear_model, independent_pixels_log_likelihood


def factor_model_data(points=4000, dims=12, nz=3, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(dims, nz))
    psi = rng.uniform(0.05, 0.3, size=dims)
    mu = rng.uniform(0.2, 0.8, size=dims)
    z = rng.normal(size=(points, nz))
    x = z @ W.T + mu + rng.normal(size=(points, dims)) * np.sqrt(psi)
    return x, W, psi, mu


def exact_log_likelihood(x, W, psi, mu) -> float:
    covariance = torch.tensor(W @ W.T + np.diag(psi))
    return float(MultivariateNormal(torch.tensor(mu), covariance).log_prob(torch.tensor(x)).mean())


@pytest.mark.parametrize("model", ["factor_analysis", "probabilistic_pca"])
def test_the_score_is_the_exact_gaussian_marginal_of_the_fitted_model(model):
    x, *_ = factor_model_data()
    fitted = fit_linear_model(model, 3, x)
    covariance = fitted.get_covariance()
    assert fitted.score(x) == pytest.approx(exact_log_likelihood(x, np.linalg.cholesky(covariance),
                                                                 np.zeros(x.shape[1]), fitted.mean_), abs=1e-8)


def test_factor_analysis_recovers_the_likelihood_of_the_model_that_drew_the_data():
    x, W, psi, mu = factor_model_data(points=5000)
    truth = exact_log_likelihood(x, W, psi, mu)
    fitted = fit_linear_model("factor_analysis", 3, x).score(x)
    assert truth - 0.01 <= fitted <= truth + 0.01  # the maximum-likelihood fit: at least the truth, barely more
    assert fit_linear_model("factor_analysis", 1, x).score(x) < truth - 0.5  # too few latents cannot


def test_independent_pixels_is_the_per_pixel_maximum_likelihood_gaussian():
    data, *_ = factor_model_data()
    x, held_out = data[:3000], data[3000:]
    mean, std = torch.tensor(x.mean(0)), torch.tensor(x.std(0))
    expected = float(Normal(mean, std).log_prob(torch.tensor(x)).sum(1).mean())
    assert independent_pixels_log_likelihood(x, x) == pytest.approx(expected, abs=1e-9)
    # on held-out data from the same model it is worse than factor analysis, which sees the correlations
    assert independent_pixels_log_likelihood(x, held_out) < fit_linear_model("factor_analysis", 3, x).score(held_out)


def test_an_unknown_model_is_named():
    with pytest.raises(ValueError, match="unknown linear-Gaussian model 'ica'"):
        fit_linear_model("ica", 2, np.zeros((10, 3)))
