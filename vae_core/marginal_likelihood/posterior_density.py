"""Batched density estimators q(z) fitted to posterior samples (Appendix D, step 2; docs/protocol.md, section 5).

A Gaussian kernel density estimate per datapoint, with the definition of scipy.stats.gaussian_kde
(tested equal), whose bandwidth is chosen by held-out likelihood, and the Gaussian fit the authors
fell back on when there are too few samples per dimension. Batched in torch (float64) because
Appendix D fits one density per datapoint for 1,000 datapoints at a time; scipy's gaussian_kde
would need a Python loop over them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.distributions import MultivariateNormal


def scott_factor(n: int, d: int) -> float:
    """Scott's rule bandwidth factor n^(-1/(d+4)), as scipy.stats.gaussian_kde defines it."""
    return float(n) ** (-1.0 / (d + 4))


# Multipliers of Scott's factor tried by the held-out bandwidth selection: exp((i - 5) / 2) for
# i = 0..7, i.e. from e^-2.5 = 0.08 to e^1 = 2.7 times Scott's factor in steps of e^0.5. The
# authors' code of the time (docs/protocol.md, section 5) used i = 0..9 (up to 7.4 times Scott's factor); the
# two widest are dropped because a kernel wider than the posterior makes the ratios q / p(z|x)
# heavy-tailed and biases the estimate upward, and held-out likelihood on 25 correlated samples
# sometimes picks them (see select_kde_bandwidth).
DEFAULT_BANDWIDTH_MULTIPLIERS: tuple[float, ...] = tuple(math.exp((i - 5) / 2.0) for i in range(8))


def batched_covariance(samples: torch.Tensor) -> torch.Tensor:
    """Unbiased (ddof=1) covariance of each batch: (C, n, D) -> (C, D, D), as numpy.cov."""
    centred = samples - samples.mean(dim=1, keepdim=True)
    return centred.transpose(1, 2) @ centred / (samples.shape[1] - 1)


def add_ridge(cov: torch.Tensor, ridge: float) -> torch.Tensor:
    """cov + (ridge * mean variance + tiny) I, so a (near-)singular sample covariance stays usable.

    ``ridge`` is relative to the average variance tr(cov) / D; the tiny absolute term only matters
    when every sample is identical (a chain that never moved), whose estimate is then meaningless
    and flagged by an infinite standard error.
    """
    d = cov.shape[-1]
    scale = torch.diagonal(cov, dim1=-2, dim2=-1).mean(-1)
    tiny = 1e-12 if cov.dtype == torch.float64 else 1e-8
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    return cov + (ridge * scale + tiny)[..., None, None] * eye


class BatchedGaussianKDE:
    """A Gaussian kernel density estimate per batch element, as ``scipy.stats.gaussian_kde``.

    For batch element c with samples y_1..y_n (D-dimensional) and bandwidth factor f_c,
    q_c(z) = (1/n) sum_i N(z; y_i, f_c^2 Sigma_c), with Sigma_c the unbiased sample covariance of
    the y_i (ddof=1). This is scipy's definition (``kernel covariance = data covariance *
    factor^2``); with ``ridge=0`` the log densities equal scipy's ``logpdf`` (tested).

    samples: (C, n, D); bandwidth_factor: a float or (C,); evaluated by :meth:`log_prob` on
    points (C, m, D) -> (C, m). Computed in float64 (D is small, so this is cheap).
    """

    def __init__(self, samples: torch.Tensor, bandwidth_factor, ridge: float = 1e-6):
        samples = samples.double()
        self.n, self.d = samples.shape[1], samples.shape[2]
        cov = batched_covariance(samples)
        if ridge > 0:
            cov = add_ridge(cov, ridge)
        self.chol, info = torch.linalg.cholesky_ex(cov)
        if bool((info != 0).any()):  # singular despite the ridge: fall back on a larger one
            self.chol = torch.linalg.cholesky(add_ridge(cov, max(ridge, 1e-6) * 1e3))
        factor = torch.as_tensor(bandwidth_factor, dtype=torch.float64, device=samples.device)
        self.factor = factor.expand(samples.shape[0]).clone()
        self.whitened = self._whiten(samples)
        self.log_det_chol = torch.log(torch.diagonal(self.chol, dim1=-2, dim2=-1)).sum(-1)

    def _whiten(self, points: torch.Tensor) -> torch.Tensor:
        """L^-1 y for Sigma = L L^T: (C, m, D) -> (C, m, D)."""
        return torch.linalg.solve_triangular(self.chol, points.double().transpose(1, 2), upper=False).transpose(1, 2)

    def log_prob(self, points: torch.Tensor) -> torch.Tensor:
        u = self._whiten(points)  # (C, m, D)
        sq = torch.cdist(u, self.whitened).pow(2)  # (C, m, n)
        f = self.factor[:, None, None]
        log_kernel = -0.5 * sq / f.pow(2)
        log_norm = (
            -self.d * torch.log(self.factor)
            - self.log_det_chol
            - 0.5 * self.d * math.log(2 * math.pi)
            - math.log(self.n)
        )
        return torch.logsumexp(log_kernel, dim=-1) + log_norm[:, None]


class BatchedGaussian:
    """A Gaussian fitted to each batch element's samples: q_c = N(mean_c, Sigma_c).

    ``diagonal=True`` uses the per-dimension variances (ddof=1; the authors' fallback), otherwise
    the full unbiased covariance; both with the relative ``ridge`` of :func:`add_ridge`.
    samples (C, n, D); :meth:`log_prob` maps (C, m, D) -> (C, m). Float64.
    """

    def __init__(self, samples: torch.Tensor, diagonal: bool = True, ridge: float = 1e-6):
        samples = samples.double()
        self.mean = samples.mean(dim=1)
        cov = batched_covariance(samples)
        if diagonal:
            cov = torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
        cov = add_ridge(cov, ridge)
        self.distribution = MultivariateNormal(self.mean, covariance_matrix=cov, validate_args=False)

    def log_prob(self, points: torch.Tensor) -> torch.Tensor:
        return self.distribution.log_prob(points.double().transpose(0, 1)).transpose(0, 1)


def select_kde_bandwidth(
    samples: torch.Tensor,
    multipliers: Sequence[float] = DEFAULT_BANDWIDTH_MULTIPLIERS,
    split: str = "interleaved",
    ridge: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per batch element, the KDE bandwidth factor for ``samples`` (C, n, D) by held-out likelihood.

    The n samples (in chain order) are split in two halves: with ``split="interleaved"``
    (default) the odd-numbered samples are held out and the KDE is fitted to the even-numbered
    ones; with ``"contiguous"`` (the authors' code) the first half is held out and the KDE is
    fitted to the second. For every multiplier m, the KDE with factor m * scott(n_fit) is scored by
    the summed log density of the held-out samples; the best m per element is then applied to all
    n samples with Scott's factor for n: factor = m * n^(-1/(D+4)) (the chosen multiplier, not the
    absolute bandwidth, carries over from the smaller fit).

    Why interleaved: consecutive HMC samples are correlated, so a contiguous held-out half lies
    partly where the fitted half has few samples, and the score then favours a too-wide kernel;
    for Appendix D a too-wide q gives heavy-tailed ratios q / p(z|x) and an upward-biased
    log p(x) (about +0.2 nat per datapoint on the non-linear test model of
    tests/test_marginal_likelihood.py with 50 samples, against about +0.05 interleaved). The
    interleaved split errs the other way (neighbours favour a narrow kernel), which for this
    estimator is the safe side.

    Returns (factor (C,), chosen multiplier (C,)).
    """
    c, n, d = samples.shape
    if n < 4:
        raise ValueError(f"need at least 4 samples to select a bandwidth, got {n}")
    if split == "interleaved":
        fit, held_out = samples[:, 0::2], samples[:, 1::2]
    elif split == "contiguous":
        held_out, fit = samples[:, : n // 2], samples[:, n // 2 :]
    else:
        raise ValueError(f"split must be 'interleaved' or 'contiguous', got {split!r}")
    mult = torch.as_tensor(list(multipliers), dtype=torch.float64, device=samples.device)
    base = scott_factor(fit.shape[1], d)
    scores = torch.stack(
        [BatchedGaussianKDE(fit, float(m) * base, ridge).log_prob(held_out).sum(-1) for m in mult.tolist()],
        dim=-1,
    )  # (C, n_multipliers)
    scores = torch.nan_to_num(scores, nan=-math.inf)
    best = mult[scores.argmax(dim=-1)]
    return best * scott_factor(n, d), best


def fit_posterior_density(
    samples: torch.Tensor,
    multipliers: Sequence[float] = DEFAULT_BANDWIDTH_MULTIPLIERS,
    min_samples_per_dim: int = 4,
    fallback: str = "diagonal",
    ridge: float = 1e-6,
    split: str = "interleaved",
):
    """The density estimator q(z) of Appendix D step 2, fitted per datapoint to samples (C, n, D).

    - n >= ``min_samples_per_dim`` * D (and n >= 4): a :class:`BatchedGaussianKDE` whose bandwidth
      factor is chosen per datapoint by :func:`select_kde_bandwidth` (held-out ``split``).
    - otherwise ("too few samples", e.g. 25 samples for Nz = 20): a :class:`BatchedGaussian`,
      ``fallback="diagonal"`` (the authors' choice) or ``"full"`` covariance with the ridge.
    The rule n / D < 4 -> Gaussian is the authors' code's.

    Returns (density, info) where density has ``log_prob(points (C, m, D)) -> (C, m)`` and info is
    a dict with ``kind`` ("kde" or "gaussian_diagonal"/"gaussian_full") and, for the KDE,
    ``bandwidth_factor`` (C,) and ``bandwidth_multiplier`` (C,).
    """
    _, n, d = samples.shape
    if n >= max(4, min_samples_per_dim * d):
        factor, multiplier = select_kde_bandwidth(samples, multipliers, split=split, ridge=ridge)
        kde = BatchedGaussianKDE(samples, factor, ridge)
        return kde, {"kind": "kde", "bandwidth_factor": factor, "bandwidth_multiplier": multiplier}
    if fallback not in ("diagonal", "full"):
        raise ValueError(f"fallback must be 'diagonal' or 'full', got {fallback!r}")
    if n < 2:
        raise ValueError("need at least 2 samples to fit a Gaussian")
    return BatchedGaussian(samples, diagonal=fallback == "diagonal", ridge=ridge), {"kind": f"gaussian_{fallback}"}
