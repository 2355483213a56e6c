"""Importance-sampling estimates of log p(x) (the cross-check of docs/protocol.md, section 5)."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.distributions import Distribution, MultivariateNormal

from .estimate import MarginalLikelihoodEstimate
from .log_joint import DEFAULT_MAX_CHUNK_ELEMENTS, fast_log_joint
from .posterior_density import add_ridge, batched_covariance


def gaussian_proposal_from_samples(
    samples: torch.Tensor,
    covariance_scale: float = 1.5,
    ridge: float = 1e-6,
    diagonal: bool = False,
) -> Callable[[torch.Tensor], Distribution]:
    """An importance-sampling proposal from posterior samples (S, C, D), e.g. HMC chains of MCEM.

    Per datapoint c: N(mean_c, covariance_scale * Sigma_c) with Sigma_c the unbiased sample
    covariance (diagonal if ``diagonal``) plus the relative ``ridge``. The covariance is inflated
    (default x1.5) because importance sampling needs a proposal at least as wide as the posterior:
    a too-narrow proposal gives heavy-tailed weights, a too-wide one only costs efficiency, and
    the sample covariance of a short correlated chain tends to be too small.

    Returns a callable x -> MultivariateNormal with batch shape (C,), event (D,), which ignores x
    except to check that it has C rows (the samples must be those of the same datapoints, in order).
    """
    if samples.dim() != 3 or samples.shape[0] < 2:
        raise ValueError(f"samples must have shape (S >= 2, C, D), got {tuple(samples.shape)}")
    per_point = samples.detach().transpose(0, 1)  # (C, S, D)
    mean = per_point.mean(dim=1)
    cov = batched_covariance(per_point)
    if diagonal:
        cov = torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
    cov = add_ridge(cov * covariance_scale, ridge)
    distribution = MultivariateNormal(mean, covariance_matrix=cov, validate_args=False)

    def proposal(x: torch.Tensor) -> Distribution:
        if x.shape[0] != mean.shape[0]:
            raise ValueError(f"proposal was fitted to {mean.shape[0]} datapoints, got x with {x.shape[0]} rows")
        return distribution

    return proposal


@torch.no_grad()
def importance_sampling_estimator(
    model,
    x: torch.Tensor,
    n_samples: int = 5000,
    proposal: Callable[[torch.Tensor], Distribution] | None = None,
    chunk_size: int | None = None,
    max_chunk_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS,
) -> MarginalLikelihoodEstimate:
    """Importance-sampling estimate of log p(x), the encoder as proposal (docs/protocol.md, section 5 cross-check).

    log p(x) ~ log (1/K) sum_k w_k, log w_k = log p(x, z_k) - log q(z_k|x), z_k ~ q(z|x), K =
    ``n_samples``. By Jensen's inequality its expectation is a lower bound on log p(x) that tightens
    as K grows (K = 1 is the SGVB estimator A with L = 1, eq. 6), and it is consistent as K -> inf.

    ``proposal``: any callable x -> torch distribution over z with batch shape (C,) and event
    (D,) (``sample((k,))`` -> (k, C, D), ``log_prob`` -> (k, C)); default ``model.encoder``. For a
    model without a trained encoder, use :func:`gaussian_proposal_from_samples` on HMC samples.

    Memory: the K samples are drawn in chunks of ``chunk_size`` (default: as many as keep
    chunk x C x x_dim <= ``max_chunk_elements``, e.g. 10 for 1,000 MNIST points) and the
    log-sum-exp is streamed across chunks in float64, so K = 5,000 on 1,000 MNIST points needs
    only a few hundred MB.

    Standard error: the delta method on the mean of the weights, se(log wbar) ~ sd(w) /
    (sqrt(K) wbar) = sqrt((K / ESS - 1) / (K - 1)) with ESS = (sum w)^2 / sum w^2 (streamed as two
    log-sum-exps). It measures the noise of the estimate, not its downward (Jensen) bias, and it
    can itself be underestimated when the weights are heavy-tailed. NaN for K = 1.

    ``details``: ``effective_sample_size`` (C,).
    """
    if n_samples < 1:
        raise ValueError("n_samples must be >= 1")
    parameter = next(model.parameters())
    x = x.to(device=parameter.device, dtype=parameter.dtype)
    distribution = (proposal or model.encoder)(x)
    n_points, x_dim = x.shape[0], x.shape[-1]
    if chunk_size is None:
        chunk_size = max(1, max_chunk_elements // max(1, n_points * x_dim))
    lse1 = torch.full((n_points,), -math.inf, dtype=torch.float64, device=x.device)
    lse2 = lse1.clone()
    done = 0
    while done < n_samples:
        k = min(chunk_size, n_samples - done)
        z = distribution.sample((k,))
        log_w = (fast_log_joint(model, x, z) - distribution.log_prob(z)).double()  # (k, C)
        lse1 = torch.logaddexp(lse1, torch.logsumexp(log_w, dim=0))
        lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, dim=0))
        done += k
    log_px = lse1 - math.log(n_samples)
    ess = torch.exp(2 * lse1 - lse2)
    if n_samples > 1:
        se = torch.sqrt(((n_samples / ess) - 1).clamp(min=0) / (n_samples - 1))
    else:
        se = torch.full_like(log_px, math.nan)
    return MarginalLikelihoodEstimate(log_px, se, f"importance_sampling_k{n_samples}", "statistical",
                                      {"effective_sample_size": ess})
