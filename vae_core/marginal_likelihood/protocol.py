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
  (docs/method.md, "Marginal likelihood"). For larger Nz the chains start at the encoder mean when the
  model has a trained encoder, and otherwise (MCEM) at prior draws resampled by p(x|z), or at
  the run's own persistent chains for its training points (they are posterior samples already).
- **The importance-sampling proposal** (:func:`importance_sampling_proposal`): for every model,
  the defensive mixture of :func:`defensive_mixture_proposal`, fitted per datapoint to Appendix
  D's own HMC samples (a Student-t at their mean and widened covariance), with the encoder q(z|x)
  where the model trained one and the prior as components. The encoder alone, the first choice,
  left importance sampling 8.6 nats under the grid on the overfit AEVB model (Ntrain 1,000, test
  points; 300 points, K = 2,000), the mixture 0.005 (docs/method.md, "Marginal likelihood").
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.distributions import Distribution

from .estimate import MarginalLikelihoodEstimate
from .importance_sampling import defensive_mixture_proposal

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
    model, x: torch.Tensor, trained_encoder: bool, appendix_d: MarginalLikelihoodEstimate
) -> Callable[[torch.Tensor], Distribution]:
    """The proposal of :func:`importance_sampling_estimator` for this model and these datapoints:
    the defensive mixture fitted to ``appendix_d``'s HMC samples (its ``details["samples"]``), with
    the encoder q(z|x) as a component where the model trained one."""
    encoder = model.encoder(x.to(next(model.parameters()).device)) if trained_encoder else None
    return defensive_mixture_proposal(appendix_d.details["samples"], encoder)
