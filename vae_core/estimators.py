"""SGVB estimators of the variational lower bound (Section 2.3, eqs. 6-8, Appendix B).

All functions return one value per datapoint (shape (M,)) unless they say otherwise, so the
caller decides how to average. ``L`` is the number of reparameterized samples per datapoint.
"""
from __future__ import annotations

import torch

from .model import VariationalAutoEncoder
from .networks import diagonal_gaussian


def kl_diagonal_gaussian_to_standard_normal(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) in closed form (Appendix B; the KL term of eq. 10).

    -KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2), summed over the last dimension.
    """
    return -0.5 * torch.sum(1.0 + log_var - mean.pow(2) - log_var.exp(), dim=-1)


def sgvb_estimator_a(model: VariationalAutoEncoder, x: torch.Tensor, L: int = 1) -> torch.Tensor:
    """Generic SGVB estimator A (eq. 6), per datapoint.

    L~A = (1/L) sum_l [log p(x, z_l) - log q(z_l|x)], z_l = mu + sigma * eps_l (reparameterization
    trick, Section 2.4, via ``rsample``). Every term is estimated by Monte Carlo.
    """
    posterior = model.encoder(x)
    z = posterior.rsample((L,))  # (L, M, Nz)
    return (model.log_joint(x, z) - posterior.log_prob(z)).mean(dim=0)


def sgvb_estimator_b(model: VariationalAutoEncoder, x: torch.Tensor, L: int = 1) -> torch.Tensor:
    """SGVB estimator B (eq. 7), per datapoint: the KL term analytic, the reconstruction by MC.

    L~B = -KL(q(z|x) || p(z)) + (1/L) sum_l log p(x|z_l), with the Gaussian KL of Appendix B.
    """
    mean, log_var = model.encoder.mean_and_log_var(x)
    z = diagonal_gaussian(mean, log_var).rsample((L,))  # z = mu + sigma * eps (Section 2.4)
    reconstruction = model.decoder(z).log_prob(x).mean(dim=0)
    return reconstruction - kl_diagonal_gaussian_to_standard_normal(mean, log_var)


SGVB_ESTIMATORS = {"A": sgvb_estimator_a, "B": sgvb_estimator_b}


def sgvb_estimator(name: str):
    """Look up estimator ``A`` or ``B`` by name; anything else is a ValueError naming the choices."""
    try:
        return SGVB_ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown SGVB estimator {name!r}; choose A (eq. 6) or B (eq. 7)") from None


def minibatch_estimator(per_datapoint_bound: torch.Tensor, n_train: int) -> torch.Tensor:
    """The minibatch estimator of the full-dataset bound (eq. 8): (N / M) sum_i L~(x_i)."""
    return n_train * per_datapoint_bound.mean()


@torch.no_grad()
def average_lower_bound(
    model: VariationalAutoEncoder, x: torch.Tensor, L: int = 1, chunk_size: int = 10_000
) -> float:
    """Average lower bound per datapoint over a dataset (the y-axis of Figure 2), estimator B.

    Evaluated in chunks so a 50,000-point set does not build one huge activation tensor. B is
    used for every evaluation whatever estimator trained the model: both estimate the same bound
    and B has the lower variance.
    """
    total = 0.0
    for start in range(0, x.shape[0], chunk_size):
        total += float(sgvb_estimator_b(model, x[start : start + chunk_size], L).sum())
    return total / x.shape[0]
