"""The paper's claims (docs/protocol.md section 4; the paper's Section 2.3), judged from the data of a run.

Each ``claim_*`` function takes tidy tables (see :mod:`pipeline.run_results`) and the thresholds
of params.yaml ``report`` and returns a :class:`Claim`: a verdict (``pass``, ``fail`` or
``no data``), a one-line summary with the numbers that decide it, and the evidence table behind
it, one row per panel or configuration. The functions never look at the paper's values: a claim
is about this run's data. Definitions (also in the README):

- **aevb_better_bound** (Figure 2): in every panel AEVB's final lower bound exceeds wake-sleep's,
  on the training and on the test set, by more than ``better_bound_margin`` nats.
- **aevb_converges_faster** (Figure 2): in every panel AEVB's test bound reaches wake-sleep's final
  test bound within ``faster_fraction`` of wake-sleep's training samples.
- **no_overfitting_with_more_latents** (Figure 2): per dataset, the train-test gap at the largest
  Nz exceeds the smallest gap among that dataset's Nz by at most ``overfitting_tolerance``.
- **aevb_fastest_marginal_likelihood** (Figure 3): for each Ntrain, AEVB's test marginal likelihood
  (Appendix D) averaged over all checkpoints is the highest of the three algorithms: over the same
  evenly spaced budgets it is ahead, which is what "converges faster" means on a linear axis.
- **mcem_impractical_on_full_set** (Figure 3): at Ntrain = 50,000 MCEM trains at most
  ``mcem_throughput_fraction`` of AEVB's samples per second and its final test marginal likelihood
  is below AEVB's by more than their combined standard errors.
- **estimator_b_lower_variance** (Section 2.3): on every Figure 2 AEVB model the minibatch
  gradient of estimator B has a smaller variance (trace of its covariance over eps) than A's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

PASS, FAIL, NO_DATA = "pass", "fail", "no data"


@dataclass
class Claim:
    key: str
    statement: str  # the paper's claim in words, with where it is made
    verdict: str
    summary: str
    evidence: pd.DataFrame = field(default_factory=pd.DataFrame)


def _verdict(ok: pd.Series) -> str:
    return NO_DATA if len(ok) == 0 else (PASS if bool(ok.all()) else FAIL)


def final_bounds(curves: pd.DataFrame) -> pd.DataFrame:
    """Per run: the lower bound at the last evaluation, train and test, as columns."""
    bounds = curves[curves.metric == "lower_bound"]
    last = bounds[bounds.samples_seen == bounds.groupby("run").samples_seen.transform("max")]
    wide = last.pivot_table(index=["dataset", "nz", "algorithm"], columns="split", values="value").reset_index()
    wide.columns.name = None
    return wide


def claim_aevb_better_bound(curves: pd.DataFrame, margin: float) -> Claim:
    finals = final_bounds(curves)
    aevb = finals[finals.algorithm == "aevb"].set_index(["dataset", "nz"])
    ws = finals[finals.algorithm == "wake_sleep"].set_index(["dataset", "nz"])
    common = aevb.index.intersection(ws.index)
    evidence = pd.DataFrame({
        "aevb_train": aevb.loc[common, "train"], "wake_sleep_train": ws.loc[common, "train"],
        "aevb_test": aevb.loc[common, "test"], "wake_sleep_test": ws.loc[common, "test"],
    })
    evidence["margin_train"] = evidence.aevb_train - evidence.wake_sleep_train
    evidence["margin_test"] = evidence.aevb_test - evidence.wake_sleep_test
    ok = (evidence.margin_train > margin) & (evidence.margin_test > margin)
    evidence["passes"] = ok
    evidence = evidence.reset_index()
    worst = evidence.loc[evidence.margin_test.idxmin()] if len(evidence) else None
    summary = (f"AEVB ahead in {int(ok.sum())} of {len(ok)} panels on both splits; smallest test margin "
               f"{worst.margin_test:+.2f} nats ({worst.dataset}, Nz = {worst.nz})" if worst is not None else "no panels")
    return Claim("aevb_better_bound", "AEVB reaches a better lower bound than wake-sleep in every panel (Figure 2)",
                 _verdict(ok), summary, evidence)


def samples_to_reach(curve: pd.DataFrame, level: float) -> float:
    """The first evaluated sample count at which ``curve`` (samples_seen, value) reaches ``level``."""
    reached = curve[curve.value >= level]
    return float(reached.samples_seen.min()) if len(reached) else math.inf


def claim_aevb_converges_faster(curves: pd.DataFrame, fraction: float) -> Claim:
    tests = curves[(curves.metric == "lower_bound") & (curves.split == "test")]
    rows = []
    for (dataset, nz), panel in tests.groupby(["dataset", "nz"]):
        aevb = panel[panel.algorithm == "aevb"].sort_values("samples_seen")
        ws = panel[panel.algorithm == "wake_sleep"].sort_values("samples_seen")
        if aevb.empty or ws.empty:
            continue
        target = float(ws.value.iloc[-1])
        reach = samples_to_reach(aevb, target)
        budget = float(ws.samples_seen.iloc[-1])
        rows.append({"dataset": dataset, "nz": nz, "wake_sleep_final_test": target,
                     "wake_sleep_samples": budget, "aevb_samples_to_reach": reach,
                     "fraction_of_budget": reach / budget, "passes": reach <= fraction * budget})
    evidence = pd.DataFrame(rows)
    ok = evidence.passes if len(evidence) else pd.Series(dtype=bool)
    summary = (f"AEVB reaches wake-sleep's final test bound within {fraction:.0%} of its samples in "
               f"{int(ok.sum())} of {len(ok)} panels; slowest: {evidence.fraction_of_budget.max():.0%} of the budget"
               if len(evidence) else "no panels with both algorithms")
    return Claim("aevb_converges_faster", "AEVB converges considerably faster than wake-sleep (Figure 2)",
                 _verdict(ok), summary, evidence)


def claim_no_overfitting_with_more_latents(curves: pd.DataFrame, tolerance: float) -> Claim:
    finals = final_bounds(curves)
    aevb = finals[finals.algorithm == "aevb"].copy()
    aevb["gap"] = aevb.train - aevb.test
    rows = []
    for dataset, group in aevb.groupby("dataset"):
        if len(group) < 2:
            continue
        group = group.sort_values("nz")
        largest = group.iloc[-1]
        smallest_gap = float(group.gap.min())
        rows.append({"dataset": dataset, "largest_nz": int(largest.nz), "gap_at_largest_nz": float(largest.gap),
                     "smallest_gap": smallest_gap, "nz_of_smallest_gap": int(group.nz[group.gap.idxmin()]),
                     "gaps_by_nz": ", ".join(f"{int(n)}: {g:.2f}" for n, g in zip(group.nz, group.gap)),
                     "passes": float(largest.gap) <= smallest_gap + tolerance})
    evidence = pd.DataFrame(rows)
    ok = evidence.passes if len(evidence) else pd.Series(dtype=bool)
    summary = ("; ".join(f"{r.dataset}: gap {r.gap_at_largest_nz:.2f} at Nz = {r.largest_nz} vs smallest {r.smallest_gap:.2f} "
                         f"(Nz = {r.nz_of_smallest_gap})" for r in evidence.itertuples()) or "fewer than two Nz per dataset")
    return Claim("no_overfitting_with_more_latents",
                 "More latent variables do not cause more overfitting (Figure 2; train-test gap of AEVB)",
                 _verdict(ok), summary, evidence)


def claim_aevb_fastest_marginal_likelihood(marginal_likelihoods: pd.DataFrame) -> Claim:
    frame = marginal_likelihoods[(marginal_likelihoods.estimator == "appendix_d") & (marginal_likelihoods.split == "test")]
    means = frame.groupby(["ntrain", "algorithm"]).value.mean().unstack("algorithm")
    rows = []
    for ntrain, row in means.iterrows():
        others = row.drop("aevb", errors="ignore").dropna()
        if "aevb" not in row or pd.isna(row["aevb"]) or others.empty:
            continue
        rows.append({"ntrain": int(ntrain), **{f"mean_test_{a}": float(v) for a, v in row.items()},
                     "runner_up": others.idxmax(), "lead": float(row["aevb"] - others.max()),
                     "passes": bool(row["aevb"] > others.max())})
    evidence = pd.DataFrame(rows)
    ok = evidence.passes if len(evidence) else pd.Series(dtype=bool)
    summary = ("; ".join(f"Ntrain {r.ntrain:,}: AEVB leads {r.runner_up} by {r.lead:+.2f} nats (test, mean over checkpoints)"
                         for r in evidence.itertuples()) or "no marginal likelihoods")
    return Claim("aevb_fastest_marginal_likelihood",
                 "AEVB converges fastest in marginal likelihood (Figure 3)", _verdict(ok), summary, evidence)


def claim_mcem_impractical_on_full_set(marginal_likelihoods: pd.DataFrame, finals: pd.DataFrame,
                                       throughput_fraction: float) -> Claim:
    ml = marginal_likelihoods[(marginal_likelihoods.estimator == "appendix_d") & (marginal_likelihoods.split == "test")]
    full = ml.ntrain.max() if len(ml) else None  # Figure 3's full training set: its largest Ntrain
    ml = ml[ml.ntrain == full]
    runs = finals[(finals.experiment == "fig3") & (finals.ntrain == full)].set_index("algorithm")
    if ml.empty or not {"aevb", "mcem"} <= set(runs.index) or not {"aevb", "mcem"} <= set(ml.algorithm):
        return Claim("mcem_impractical_on_full_set", "MCEM cannot be run efficiently on the full training set (Figure 3)",
                     NO_DATA, "no Ntrain = 50,000 runs of both AEVB and MCEM")
    last = ml[ml.samples_seen == ml.groupby("algorithm").samples_seen.transform("max")].set_index("algorithm")
    speed = runs.training_samples_per_second
    ratio = float(speed["mcem"] / speed["aevb"])
    gap = float(last.value["aevb"] - last.value["mcem"])
    error = float(math.hypot(last.standard_error["aevb"], last.standard_error["mcem"]))
    slow, behind = ratio <= throughput_fraction, gap > error
    evidence = pd.DataFrame([{
        "aevb_samples_per_second": float(speed["aevb"]), "mcem_samples_per_second": float(speed["mcem"]),
        "throughput_ratio": ratio, "aevb_final_test_ml": float(last.value["aevb"]),
        "mcem_final_test_ml": float(last.value["mcem"]), "aevb_minus_mcem": gap, "combined_se": error,
        "passes": slow and behind}])
    summary = (f"MCEM trains at {ratio:.2f}x AEVB's samples/s ({speed['mcem']:,.0f} vs {speed['aevb']:,.0f}) and ends "
               f"{gap:+.2f} nats behind AEVB (combined s.e. {error:.2f})")
    return Claim("mcem_impractical_on_full_set", "MCEM cannot be run efficiently on the full training set (Figure 3)",
                 PASS if slow and behind else FAIL, summary, evidence)


def claim_estimator_b_lower_variance(variance: pd.DataFrame) -> Claim:
    if variance is None or variance.empty:
        return Claim("estimator_b_lower_variance", "Estimator B has lower variance than estimator A (Section 2.3)",
                     NO_DATA, "no estimator-variance measurement")
    wide = variance.pivot_table(index=["dataset", "nz"], columns="estimator",
                                values=["gradient_variance", "value_variance"])
    evidence = pd.DataFrame({
        "gradient_variance_a": wide[("gradient_variance", "A")], "gradient_variance_b": wide[("gradient_variance", "B")],
        "value_variance_a": wide[("value_variance", "A")], "value_variance_b": wide[("value_variance", "B")],
    })
    evidence["gradient_ratio_b_over_a"] = evidence.gradient_variance_b / evidence.gradient_variance_a
    evidence["value_ratio_b_over_a"] = evidence.value_variance_b / evidence.value_variance_a
    evidence["passes"] = evidence.gradient_ratio_b_over_a < 1
    evidence = evidence.reset_index()
    ok = evidence.passes
    summary = (f"gradient variance of B below A's on {int(ok.sum())} of {len(ok)} models (B/A from "
               f"{evidence.gradient_ratio_b_over_a.min():.2f} to {evidence.gradient_ratio_b_over_a.max():.2f}; "
               f"value variance B/A from {evidence.value_ratio_b_over_a.min():.2f} to {evidence.value_ratio_b_over_a.max():.2f})")
    return Claim("estimator_b_lower_variance", "Estimator B has lower variance than estimator A (Section 2.3)",
                 _verdict(ok), summary, evidence)


def evaluate_claims(curves: pd.DataFrame, marginal_likelihoods: pd.DataFrame, finals: pd.DataFrame,
                    variance: pd.DataFrame | None, settings: dict) -> list[Claim]:
    """Every claim, in the order of the paper."""
    fig2 = curves[curves.experiment == "fig2"]
    # Figure 2's panels are the grid's Nz only (the extra MNIST Nz = 2 run serves Figures 4-5)
    fig2 = fig2[fig2.groupby(["dataset", "nz"]).algorithm.transform("nunique") > 1]
    return [
        claim_aevb_better_bound(fig2, float(settings["better_bound_margin"])),
        claim_aevb_converges_faster(fig2, float(settings["faster_fraction"])),
        claim_no_overfitting_with_more_latents(fig2, float(settings["overfitting_tolerance"])),
        claim_aevb_fastest_marginal_likelihood(marginal_likelihoods),
        claim_mcem_impractical_on_full_set(marginal_likelihoods, finals, float(settings["mcem_throughput_fraction"])),
        claim_estimator_b_lower_variance(variance),
    ]


def verdict_counts(claims: list[Claim]) -> dict[str, int]:
    return {v: sum(c.verdict == v for c in claims) for v in (PASS, FAIL, NO_DATA)}


__all__ = ["Claim", "evaluate_claims", "final_bounds", "verdict_counts", "PASS", "FAIL", "NO_DATA"]
