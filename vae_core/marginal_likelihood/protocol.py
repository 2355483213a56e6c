"""How the suite applies the marginal-likelihood estimators to a trained model (Figure 3).

Two choices the paper leaves to the implementation, made here because they decide the numbers
(and so belong to the method, not to the pipeline that schedules the work):

- **Where Appendix D's HMC chains start** (:func:`appendix_d_start`). The posteriors of these
  models are often multimodal, and 4-step HMC does not cross between modes, so the start decides
  the mode. For Nz <= 3 (Figure 3) every chain starts, whatever the algorithm, at a node of a
  shared grid picked with probability proportional to p(x, z)
  (:func:`vae_core.marginal_likelihood.prior_resampled_start`): on the default profile's Figure 3
  models the encoder mean (AEVB, Ntrain 1,000, test points) left the average 0.8 nat low (one
  point 56 nats), and MCEM's own training chains (Ntrain 50,000) 3.4 nats low, where the grid
  start agrees with the grid estimator to about +0.1 nat, the estimator's documented bias
  (README, "Marginal likelihood"). For larger Nz the chains start at the encoder mean when the
  model has a trained encoder, and otherwise (MCEM) at prior draws resampled by p(x|z), or at
  the run's own persistent chains for its training points (they are posterior samples already).
- **The importance-sampling proposal** (:func:`importance_sampling_proposal`): the encoder
  q(z|x) when the model has a trained encoder; for MCEM, which trains none, a Gaussian fitted per
  datapoint to Appendix D's own HMC samples, its covariance widened by 1.5.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.distributions import Distribution

from .estimate import MarginalLikelihoodEstimate
from .importance_sampling import gaussian_proposal_from_samples

GRID_START_MAX_NZ = 3


def appendix_d_start(z_dim: int, trained_encoder: bool, chain_states: torch.Tensor | None = None) -> dict:
    """Keyword arguments of :func:`appendix_d_estimator` that say where its chains start.

    ``chain_states`` (C, Nz): a model without a trained encoder may pass its own posterior chains
    for these datapoints (MCEM's persistent chains, for its training points).
    """
    if z_dim <= GRID_START_MAX_NZ:
        return {"init": "prior"}
    if trained_encoder:
        return {"init": "encoder"}
    return {"init": "prior"} if chain_states is None else {"init": "prior", "z_init": chain_states}


def importance_sampling_proposal(
    trained_encoder: bool, appendix_d: MarginalLikelihoodEstimate
) -> Callable[[torch.Tensor], Distribution] | None:
    """The proposal of :func:`importance_sampling_estimator` for this model: None (its default,
    the encoder) or, without a trained encoder, a Gaussian around ``appendix_d``'s HMC samples."""
    if trained_encoder:
        return None
    return gaussian_proposal_from_samples(appendix_d.details["samples"])
