"""``reports/<profile>/metrics.json``: flat, stable keys (docs/design.md), read by ``dvc metrics diff``
and ``vaebench compare``.

Keys, each a number (the family is the last path element's suffix, so tolerances can be set per
family in params.yaml). A configuration's aggregate keys hold the **mean over its seeds**; they
keep the names they had when every configuration had one seed:

- ``fig2/<dataset>/nz<Nz>/<algorithm>/{train,test}_lb`` -- final lower bound per datapoint (nats),
  mean over seeds; ``..._lb_seed_se`` its standard error over seeds (only with two or more seeds);
  ``fig2/<dataset>/nz<Nz>/<algorithm>/seeds`` -- the number of seeds;
  ``fig2/<dataset>/nz<Nz>/<algorithm>/samples`` -- training samples evaluated at that point;
- ``fig3/ntrain<N>/<algorithm>/{train,test}_ml`` -- final Appendix D marginal likelihood, mean over
  the seeds that estimated it; ``..._ml_se`` the estimators' own standard error of that mean;
  ``..._ml_seed_se`` its standard error over seeds; ``..._ml_is`` / ``..._ml_grid`` the cross-checks
  (mean over the seeds that ran them: the first); ``fig3/ntrain<N>/<algorithm>/seeds``, ``.../samples``;
- per seed (configurations with two or more seeds), the same names with a ``seed<S>`` element before the last: ``fig2/mnist/nz20/aevb/seed2/test_lb``,
  ``fig3/ntrain1000/aevb/seed3/test_ml`` (and ``_ml_se``, ``_ml_is``, ``_ml_grid``);
- ``speed/<experiment>/<run>/samples_per_second`` -- training throughput, mean over seeds (a
  stacked seed is charged its share of the stack's time);
- ``estimator_variance/<dataset>/nz<Nz>/{a,b}_gradient_variance`` and ``..._value_variance``;
- ``claims/<claim>`` -- 1 pass, 0.5 inconclusive, 0 fail (claims without data are left out);
  ``claims_paper_at_budget/<claim>`` -- the same tests on the paper's curves at this budget
  (left out where the paper's axes do not reach it).
"""
from __future__ import annotations

import math

import pandas as pd

from pipeline.reporting.claims import VERDICT_SCORES, Claim, final_values
from pipeline.reporting.seed_statistics import summarize

ML_SUFFIX = {"appendix_d": "ml", "importance_sampling": "ml_is", "grid": "ml_grid"}


def _number(value) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def _fig2_metrics(curves: pd.DataFrame) -> dict:
    metrics = {}
    fig2 = curves[curves.experiment == "fig2"]
    if fig2.empty:
        return metrics
    bounds = fig2[fig2.metric == "lower_bound"]
    last_samples = bounds.groupby(["dataset", "nz", "algorithm"]).samples_seen.max()
    finals = final_values(fig2)
    for (dataset, nz, algorithm), group in finals.groupby(["dataset", "nz", "algorithm"]):
        prefix = f"fig2/{dataset}/nz{nz}/{algorithm}"
        metrics[f"{prefix}/samples"] = int(last_samples[(dataset, nz, algorithm)])
        metrics[f"{prefix}/seeds"] = int(len(group))
        for split in ("train", "test"):
            if split not in group or group[split].isna().any():
                continue
            summary = summarize(group[split])
            metrics[f"{prefix}/{split}_lb"] = _number(summary.mean)
            if summary.n > 1:  # the spread, and each seed's own value
                metrics[f"{prefix}/{split}_lb_seed_se"] = _number(summary.seed_se)
                for row in group.itertuples():
                    metrics[f"{prefix}/seed{int(row.seed)}/{split}_lb"] = _number(getattr(row, split))
    return metrics


def _fig3_metrics(marginal_likelihoods: pd.DataFrame) -> dict:
    metrics = {}
    ml = marginal_likelihoods
    if ml.empty:
        return metrics
    if "seed" not in ml:
        ml = ml.assign(seed=0)
    last = ml[ml.samples_seen == ml.groupby(["run", "seed"]).samples_seen.transform("max")]
    for (ntrain, algorithm), group in last.groupby(["ntrain", "algorithm"]):
        prefix = f"fig3/ntrain{int(ntrain)}/{algorithm}"
        metrics[f"{prefix}/samples"] = int(group.samples_seen.max())
        metrics[f"{prefix}/seeds"] = int(group.seed.nunique())
        for (split, estimator), rows in group.groupby(["split", "estimator"]):
            name = f"{split}_{ML_SUFFIX[estimator]}"
            errors = rows.standard_error if estimator == "appendix_d" else None
            summary = summarize(rows.value, errors)
            metrics[f"{prefix}/{name}"] = _number(summary.mean)
            if estimator == "appendix_d":
                metrics[f"{prefix}/{name}_se"] = _number(summary.estimator_se)
            if group.seed.nunique() > 1:  # the spread, and each seed's own values
                if summary.n > 1:
                    metrics[f"{prefix}/{name}_seed_se"] = _number(summary.seed_se)
                for row in rows.itertuples():
                    metrics[f"{prefix}/seed{int(row.seed)}/{name}"] = _number(row.value)
                    if estimator == "appendix_d":
                        metrics[f"{prefix}/seed{int(row.seed)}/{name}_se"] = _number(row.standard_error)
    return metrics


def build_metrics(curves: pd.DataFrame, marginal_likelihoods: pd.DataFrame, finals: pd.DataFrame,
                  variance: pd.DataFrame | None, claims: list[Claim]) -> dict[str, float]:
    metrics: dict[str, float | None] = {**_fig2_metrics(curves), **_fig3_metrics(marginal_likelihoods)}
    speeds = finals.dropna(subset=["training_samples_per_second"]).groupby(["experiment", "run"])
    for (experiment, run), group in speeds:
        metrics[f"speed/{experiment}/{run}/samples_per_second"] = _number(group.training_samples_per_second.mean())
    if variance is not None:
        for row in variance.itertuples():
            prefix = f"estimator_variance/{row.dataset}/nz{row.nz}/{row.estimator.lower()}"
            metrics[f"{prefix}_gradient_variance"] = _number(row.gradient_variance)
            metrics[f"{prefix}_value_variance"] = _number(row.value_variance)
    for claim in claims:
        if claim.verdict in VERDICT_SCORES:
            metrics[f"claims/{claim.key}"] = VERDICT_SCORES[claim.verdict]
        if claim.paper_verdict in VERDICT_SCORES:
            metrics[f"claims_paper_at_budget/{claim.key}"] = VERDICT_SCORES[claim.paper_verdict]
    return {key: metrics[key] for key in sorted(metrics) if metrics[key] is not None}
