"""The result type shared by the marginal-likelihood estimators: per-datapoint log p(x) and errors."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class MarginalLikelihoodEstimate:
    """Per-datapoint estimates of log p(x) and their errors.

    ``log_px`` (C,) and ``standard_error`` (C,) are per datapoint. ``error_kind`` says what the
    error is: ``"statistical"`` (a Monte Carlo standard error, independent between datapoints
    because every datapoint has its own chain / samples) or ``"bound"`` (the grid's deterministic
    discretization error, which may have the same sign on every datapoint). ``details`` holds the
    estimator's diagnostics (acceptance rates, step sizes, effective sample sizes, boxes, ...),
    every one a tensor with the datapoints on the first axis unless its name says otherwise.
    """

    log_px: torch.Tensor
    standard_error: torch.Tensor
    estimator: str
    error_kind: str = "statistical"
    details: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.log_px.shape[0])

    def mean(self) -> float:
        """Average log p(x) per datapoint (the y-axis of Figure 3)."""
        return float(self.log_px.double().mean())

    def mean_standard_error(self, include_datapoint_spread: bool = False) -> float:
        """Error of :meth:`mean`.

        By default only the estimator's own noise: for ``"statistical"`` errors, which are
        independent between datapoints, sqrt(sum_c se_c^2) / C; for ``"bound"`` errors (the grid),
        which need not cancel, the plain average of the per-point bounds, mean_c se_c.
        This is the error that matters when two models, or two estimators, are compared on the
        *same* datapoints (as the report does): the choice of datapoints is common to both.

        With ``include_datapoint_spread`` the sampling error of the datapoints themselves is added
        in quadrature, var_c(log p(x_c)) / C (sample variance, ddof=1): the error of the average as
        an estimate of the expected log-likelihood over the data distribution.
        """
        se = self.standard_error.double()
        n = se.shape[0]
        if self.error_kind == "bound":
            noise = float(se.mean())
        else:
            noise = float(se.pow(2).sum().sqrt() / n)
        if include_datapoint_spread and n > 1:
            spread = float(self.log_px.double().var() / n)
            return math.sqrt(noise**2 + spread)
        return noise

    def rows(self, selection: slice) -> "MarginalLikelihoodEstimate":
        """The estimate restricted to some datapoints (``selection`` along the first axis); every
        per-datapoint detail is restricted with it, the others are kept as they are."""
        n = len(self)
        details = {k: v[selection] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n else v
                   for k, v in self.details.items()}
        return MarginalLikelihoodEstimate(self.log_px[selection], self.standard_error[selection],
                                          self.estimator, self.error_kind, details)

    def summary(self) -> str:
        return f"{self.estimator}: {self.mean():.3f} +- {self.mean_standard_error():.3f} ({len(self)} points)"


def log_mean_weight(log_sum: torch.Tensor, log_sum_squares: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """From log sum_k w_k and log sum_k w_k^2 over n weights per datapoint: log (1/n) sum_k w_k, its
    delta-method standard error sqrt((n / ESS - 1) / (n - 1)) (NaN for n = 1), and the effective
    sample size ESS = (sum w)^2 / sum w^2. Shared by importance sampling and AIS."""
    ess = torch.exp(2 * log_sum - log_sum_squares)
    if n > 1:
        se = torch.sqrt(((n / ess) - 1).clamp(min=0) / (n - 1))
    else:
        se = torch.full_like(log_sum, math.nan)
    return log_sum - math.log(n), se, ess

