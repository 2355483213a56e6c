"""``reports/<profile>/metrics.json``: flat, stable keys (docs/design.md), read by ``dvc metrics diff``
and ``vaebench compare``.

Keys, each a number (the family is the last path element's suffix, so tolerances can be set per
family in params.yaml):

- ``fig2/<dataset>/nz<Nz>/<algorithm>/{train,test}_lb`` -- final lower bound per datapoint (nats);
- ``fig2/<dataset>/nz<Nz>/<algorithm>/samples`` -- training samples evaluated at that point;
- ``fig3/ntrain<N>/<algorithm>/{train,test}_ml`` and ``..._ml_se`` -- final Appendix D marginal
  likelihood and its standard error; ``..._ml_is`` / ``..._ml_grid`` the cross-checks there;
  ``fig3/ntrain<N>/<algorithm>/samples`` -- the samples evaluated at that checkpoint;
- ``speed/<experiment>/<run>/samples_per_second`` -- training throughput of each run;
- ``estimator_variance/<dataset>/nz<Nz>/{a,b}_gradient_variance`` and ``..._value_variance``;
- ``claims/<claim>`` -- 1 for pass, 0 for fail (claims without data are left out).
"""
from __future__ import annotations

import math

import pandas as pd

from .claims import FAIL, PASS, Claim, final_bounds


def _number(value) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def build_metrics(curves: pd.DataFrame, marginal_likelihoods: pd.DataFrame, finals: pd.DataFrame,
                  variance: pd.DataFrame | None, claims: list[Claim]) -> dict[str, float]:
    metrics: dict[str, float | None] = {}
    fig2 = curves[curves.experiment == "fig2"]
    bounds = fig2[fig2.metric == "lower_bound"]
    last_samples = bounds.groupby(["dataset", "nz", "algorithm"]).samples_seen.max()
    for row in final_bounds(fig2).itertuples():
        prefix = f"fig2/{row.dataset}/nz{row.nz}/{row.algorithm}"
        for split in ("train", "test"):
            metrics[f"{prefix}/{split}_lb"] = _number(getattr(row, split))
        metrics[f"{prefix}/samples"] = int(last_samples[(row.dataset, row.nz, row.algorithm)])
    if not marginal_likelihoods.empty:
        ml = marginal_likelihoods
        last = ml[ml.samples_seen == ml.groupby("run").samples_seen.transform("max")]
        suffix = {"appendix_d": "ml", "importance_sampling": "ml_is", "grid": "ml_grid"}
        for row in last.itertuples():
            run_prefix = f"fig3/ntrain{int(row.ntrain)}/{row.algorithm}"
            metrics[f"{run_prefix}/samples"] = int(row.samples_seen)
            prefix = f"{run_prefix}/{row.split}"
            metrics[f"{prefix}_{suffix[row.estimator]}"] = _number(row.value)
            if row.estimator == "appendix_d":
                metrics[f"{prefix}_ml_se"] = _number(row.standard_error)
    for row in finals.itertuples():
        if row.training_samples_per_second is not None and not pd.isna(row.training_samples_per_second):
            metrics[f"speed/{row.experiment}/{row.run}/samples_per_second"] = _number(row.training_samples_per_second)
    if variance is not None:
        for row in variance.itertuples():
            prefix = f"estimator_variance/{row.dataset}/nz{row.nz}/{row.estimator.lower()}"
            metrics[f"{prefix}_gradient_variance"] = _number(row.gradient_variance)
            metrics[f"{prefix}_value_variance"] = _number(row.value_variance)
    for claim in claims:
        if claim.verdict in (PASS, FAIL):
            metrics[f"claims/{claim.key}"] = int(claim.verdict == PASS)
    return {key: metrics[key] for key in sorted(metrics) if metrics[key] is not None}
