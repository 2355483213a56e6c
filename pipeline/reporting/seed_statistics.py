"""Means over seeds, their standard errors and confidence intervals (docs/protocol.md, section 10).

A configuration trained with several seeds gives one value per seed (a final bound, a marginal
likelihood at a checkpoint). The suite reports their mean, the standard error of that mean over
seeds (sample standard deviation / sqrt(n)) and, where the value is itself an estimate with a
standard error of its own (Appendix D's), that error too: independent errors add in quadrature,
and the mean of n estimates carries sqrt(mean of their squared errors / n).

Intervals are Student-t intervals at ``LEVEL`` (95%) with n - 1 degrees of freedom for a mean
over n seeds (Welch-Satterthwaite degrees of freedom for a difference of two means). With one
seed there is no seed spread: the interval holds only the estimator's error (a normal interval),
or collapses to the point when there is none -- and every verdict drawn from it is marked as
resting on one seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Summary:
    """A mean over seeds with its errors: ``seed_se`` over seeds (NaN with one seed),
    ``estimator_se`` the estimates' own error of the mean (0 when they have none), ``n`` seeds.
    ``components`` are the variance parts of the mean with their degrees of freedom (the seed
    part n - 1, the estimator's infinite), for Satterthwaite's degrees of freedom."""

    mean: float
    seed_se: float
    estimator_se: float
    n: int
    components: tuple[tuple[float, float], ...] = ()

    @property
    def se(self) -> float:
        """The total standard error of the mean: seed spread and estimator error in quadrature."""
        return math.sqrt(sum(variance for variance, _ in self.parts()))

    def parts(self) -> tuple[tuple[float, float], ...]:
        if self.components:
            return self.components
        parts = [(self.estimator_se ** 2, math.inf)]
        if math.isfinite(self.seed_se):
            parts.append((self.seed_se ** 2, float(self.n - 1)))
        return tuple(parts)

    @property
    def df(self) -> float:
        """Satterthwaite's degrees of freedom over the variance parts (inf when only the
        estimator's error is left: a normal interval)."""
        return satterthwaite(self.parts())

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        half = critical_value(self.df, level) * self.se
        return self.mean - half, self.mean + half


def satterthwaite(parts) -> float:
    total = sum(variance for variance, _ in parts)
    denominator = sum(variance * variance / df for variance, df in parts if math.isfinite(df) and df > 0)
    if denominator <= 0 or total <= 0:
        return math.inf
    return total * total / denominator


def summarize(values, standard_errors=None) -> Summary:
    """The :class:`Summary` of one value per seed (and each value's own standard error, if any)."""
    values = np.asarray(values, dtype=float)
    n = int(values.size)
    if n == 0:
        raise ValueError("no values to summarize")
    seed_se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    estimator_se = 0.0
    if standard_errors is not None:
        errors = np.asarray(standard_errors, dtype=float)
        errors = errors[np.isfinite(errors)]
        if errors.size:
            estimator_se = float(math.sqrt(np.mean(errors ** 2) / n))
    return Summary(float(values.mean()), seed_se, estimator_se, n)


def critical_value(df: float, level: float = LEVEL) -> float:
    """The two-sided t (normal for infinite df) critical value."""
    quantile = 0.5 + level / 2
    return float(stats.norm.ppf(quantile) if not math.isfinite(df) else stats.t.ppf(quantile, df))


def difference(a: Summary, b: Summary) -> Summary:
    """a - b for independent means. The seed parts combine with Welch-Satterthwaite's degrees of
    freedom, the estimators' errors with infinite ones. A side with one seed has no seed spread of
    its own: it is given the other side's seed variance (s^2 of one seed; the two configurations
    are assumed equally variable), so that a difference against a single seed is not narrower than
    the seed spread allows; with one seed on both sides only the estimators' errors remain."""
    parts = [(a.estimator_se ** 2, math.inf), (b.estimator_se ** 2, math.inf)]
    spread = [side for side in (a, b) if side.n > 1 and math.isfinite(side.seed_se)]
    if len(spread) == 2:  # Welch
        seed_parts = [(side.seed_se ** 2, float(side.n - 1)) for side in spread]
    elif len(spread) == 1:  # one s^2, for both sides: s^2 (1/n + 1/1), n - 1 degrees of freedom
        side = spread[0]
        seed_parts = [(side.seed_se ** 2 * (1 + side.n), float(side.n - 1))]
    else:
        seed_parts = []
    parts += seed_parts
    seed_se = math.sqrt(sum(v for v, _ in seed_parts)) if seed_parts else math.nan
    return Summary(a.mean - b.mean, seed_se, math.hypot(a.estimator_se, b.estimator_se), min(a.n, b.n),
                   tuple(parts))


def summarize_frame(frame: pd.DataFrame, by: list[str], value: str = "value",
                    standard_error: str | None = None) -> pd.DataFrame:
    """One row per group of ``by`` (rows of the group are the seeds): ``mean``, ``seed_se``,
    ``estimator_se``, ``se``, ``n_seeds``, ``low`` and ``high`` (the interval at ``LEVEL``)."""
    rows = []
    for key, group in frame.groupby(by, sort=True):
        summary = summarize(group[value], group[standard_error] if standard_error else None)
        low, high = summary.interval()
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "mean": summary.mean, "seed_se": summary.seed_se,
                     "estimator_se": summary.estimator_se, "se": summary.se, "n_seeds": summary.n,
                     "low": low, "high": high})
    return pd.DataFrame(rows, columns=[*by, "mean", "seed_se", "estimator_se", "se", "n_seeds", "low", "high"])
