"""Estimators of the marginal likelihood log p(x) of a trained decoder (Appendix D; docs/protocol.md, section 5).

Four estimators, each returning a :class:`MarginalLikelihoodEstimate` (one value and one error per
datapoint, so the caller decides how to average):

- :func:`appendix_d_estimator` -- the paper's estimator (Appendix D): HMC samples of p(z|x), a
  density estimate q(z) fitted to the first half of them, and on the second half
  p(x) ~ ((1/L) sum_l q(z_l) / (p(z_l) p(x|z_l)))^-1. Used for Figure 3.
- :func:`importance_sampling_estimator` -- log-mean-exp of log p(x, z_k) - log q(z_k|x) over K
  samples of a proposal (the encoder by default): a stochastic lower bound that tightens as K grows.
- :func:`ais_estimator` -- annealed importance sampling from the prior with HMC transitions, and
  :func:`bdmc_sandwich`, forward and reverse AIS on simulated data, whose gap bounds its error
  (Figure 2's models, where the grid cannot reach).
- :func:`grid_estimator` -- numerical integration of p(x, z) over a dense grid in z, for Nz <= 3:
  exact up to a discretization error that it measures.

:mod:`.protocol` holds the choices of how they are applied to a trained model (where Appendix D's
chains start, which proposal importance sampling uses). docs/protocol.md, section 5, asks that the
three agree within their error bars on the same model; the tests in
tests/test_marginal_likelihood.py check that against a linear-Gaussian model with a closed-form
p(x) and against the grid on a small non-linear decoder.

Everything runs under ``torch.no_grad()``; HMC enables gradients with respect to z only, locally
(vae_core/hmc.py). All estimators are batched over datapoints: one tensor operation serves every
datapoint, with Python loops only over samples, chunks or HMC transitions.
"""
from .ais import ais_estimator, bdmc_sandwich, sigmoid_schedule, simulate_from_model
from .appendix_d import appendix_d_estimator, prior_resampled_start
from .estimate import MarginalLikelihoodEstimate
from .grid import DEFAULT_ADAPTIVE_GRID_POINTS, DEFAULT_GRID_POINTS, grid_estimator
from .importance_sampling import (MultivariateStudentT, ProposalMixture, defensive_mixture_proposal,
                                  gaussian_proposal_from_samples, importance_sampling_estimator)
from .log_joint import fast_log_joint, shared_grid_log_joint
from .protocol import appendix_d_start, importance_sampling_proposal
from .posterior_density import (
    DEFAULT_BANDWIDTH_MULTIPLIERS,
    BatchedGaussian,
    BatchedGaussianKDE,
    fit_posterior_density,
    scott_factor,
    select_kde_bandwidth,
)

__all__ = [
    "MarginalLikelihoodEstimate",
    "ais_estimator",
    "bdmc_sandwich",
    "sigmoid_schedule",
    "simulate_from_model",
    "appendix_d_estimator",
    "prior_resampled_start",
    "importance_sampling_estimator",
    "defensive_mixture_proposal",
    "MultivariateStudentT",
    "ProposalMixture",
    "grid_estimator",
    "gaussian_proposal_from_samples",
    "appendix_d_start",
    "importance_sampling_proposal",
    "BatchedGaussianKDE",
    "BatchedGaussian",
    "fit_posterior_density",
    "select_kde_bandwidth",
    "scott_factor",
    "fast_log_joint",
    "shared_grid_log_joint",
    "DEFAULT_BANDWIDTH_MULTIPLIERS",
    "DEFAULT_GRID_POINTS",
    "DEFAULT_ADAPTIVE_GRID_POINTS",
]
