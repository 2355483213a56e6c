"""The paper's claims (docs/protocol.md sections 4 and 10; the paper's Section 2.3), judged from the data.

Each ``claim_*`` function takes tidy tables (see :mod:`pipeline.runs.results`; one row per seed
where a configuration has several) and the thresholds of params.yaml ``report``, and returns a
:class:`Claim`: a verdict, the interval behind it, a one-line summary and the evidence table, one
row per panel or configuration.

**Three-valued verdicts.** Each claim reduces to a statistic per panel (a difference of means over
seeds, a fraction of a budget) with a 95% interval (:mod:`pipeline.reporting.seed_statistics`: Student-t
over seeds, combined in quadrature with the estimator's own standard error where there is one).
A panel passes when its whole interval is on the claim's side of the threshold, fails when its
whole interval is on the other side, and is **inconclusive** when the interval straddles the
threshold. A claim fails if any panel fails, else is inconclusive if any panel is, else passes.
The interval reported for a claim is that of its deciding panel (the failing panel, else the
inconclusive one, else the one closest to the threshold). A configuration with one seed has no
seed spread: its interval holds only the estimator's error (or is a point), and the claim is
flagged ``single_seed`` -- its verdict rests on one seed.

**The paper at the same budget.** :func:`pipeline.reporting.paper_claims.evaluate_paper_claims` applies the same functions to
the paper's own curves (``reports/reference``) read at this run's evaluation points (Figure 2 on
log x, Figure 3 on linear x): "pass"/"fail", or "not on the paper's axes" when the paper's curves
do not reach this budget. The agreement of the two verdicts is the reproduction result of a
reduced-budget profile (:func:`pipeline.reporting.paper_claims.agreement`).

Definitions (also in docs/report.md):

- **aevb_better_bound** (Figure 2): in every panel AEVB's final lower bound exceeds wake-sleep's,
  on the training and on the test set, by more than ``better_bound_margin`` nats.
- **aevb_converges_faster** (Figure 2): in every panel AEVB's test bound reaches wake-sleep's final
  test bound within ``faster_fraction`` of wake-sleep's training samples (interval: the first
  evaluation where AEVB's upper band reaches wake-sleep's lower one, and where its lower band
  reaches wake-sleep's upper one).
- **no_overfitting_with_more_latents** (Figure 2): per dataset, the train-test gap at the largest
  Nz exceeds the smallest gap among that dataset's Nz by at most ``overfitting_tolerance``.
- **aevb_fastest_marginal_likelihood** (Figure 3): for each Ntrain, AEVB's test marginal likelihood
  (Appendix D) averaged over all checkpoints is the highest of the three algorithms: over the same
  evenly spaced budgets it is ahead, which is what "converges faster" means on a linear axis.
- **mcem_impractical_on_full_set** (Figure 3): at Ntrain = 50,000 MCEM trains at most
  ``mcem_throughput_fraction`` of AEVB's samples per second and its final test marginal likelihood
  is below AEVB's.
- **estimator_b_lower_variance** (Section 2.3): on every Figure 2 AEVB model (its first seed) the
  minibatch gradient of estimator B has a smaller variance (trace of its covariance over eps)
  than A's. One measurement per model: no interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.reporting.seed_statistics import LEVEL, Summary, difference, summarize, summarize_frame

PASS, FAIL, INCONCLUSIVE, NO_DATA = "pass", "fail", "inconclusive", "no data"
NOT_RUN = "not run"  # a partial set of runs lacks configurations the claim compares
NOT_ON_AXES = "not on the paper's axes"
VERDICTS = (PASS, FAIL, INCONCLUSIVE, NO_DATA, NOT_RUN)
# metrics.json's coding of a verdict (pipeline.reporting.metrics; vaebench compare orders them)
VERDICT_SCORES = {PASS: 1.0, INCONCLUSIVE: 0.5, FAIL: 0.0}


@dataclass
class Claim:
    key: str
    statement: str  # the paper's claim in words, with where it is made
    verdict: str
    summary: str
    evidence: pd.DataFrame = field(default_factory=pd.DataFrame)
    interval: str = ""  # the deciding statistic, its interval and the threshold, in words
    single_seed: bool = False  # some configuration behind the verdict has one seed
    seeds: str = ""  # the seed counts behind the verdict, e.g. "3" or "1-3"
    paper_verdict: str = ""  # the same test on the paper's curves at this budget
    paper_summary: str = ""
    # the verdict of the part of the claim the paper's curves can show, where that is less than the
    # whole claim (MCEM's: the marginal likelihood, not the throughput); "" means the verdict
    comparable_verdict: str = ""


def side_of(low: float, high: float, threshold: float, above: bool = True) -> str:
    """pass if the interval [low, high] lies wholly on the passing side of ``threshold`` (above it,
    or with ``above=False`` at or below it), fail if wholly on the other side, else inconclusive."""
    if above:
        return PASS if low > threshold else FAIL if high <= threshold else INCONCLUSIVE
    return PASS if high <= threshold else FAIL if low > threshold else INCONCLUSIVE


def combine(verdicts) -> str:
    verdicts = list(verdicts)
    if not verdicts:
        return NO_DATA
    return FAIL if FAIL in verdicts else INCONCLUSIVE if INCONCLUSIVE in verdicts else PASS


def deciding_row(evidence: pd.DataFrame, closeness: pd.Series) -> pd.Series:
    """The panel that decides a claim: a failing one, else an inconclusive one, else the one
    whose interval comes closest to the threshold (``closeness``: smaller is closer)."""
    for verdict in (FAIL, INCONCLUSIVE):
        rows = evidence[evidence.verdict == verdict]
        if len(rows):
            return rows.loc[closeness[rows.index].idxmin()]
    return evidence.loc[closeness.idxmin()]


def seed_counts(counts) -> str:
    counts = sorted({int(c) for c in counts})
    return "" if not counts else str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def _interval_text(value: float, low: float, high: float, unit: str = "nats") -> str:
    return f"{value:+.2f} {unit} [{low:+.2f}, {high:+.2f}]"


def final_values(curves: pd.DataFrame) -> pd.DataFrame:
    """Per run and seed: the lower bound at the last evaluation, train and test, as columns."""
    bounds = curves[curves.metric == "lower_bound"]
    if "seed" not in bounds:
        bounds = bounds.assign(seed=0)
    last = bounds[bounds.samples_seen == bounds.groupby(["run", "seed"]).samples_seen.transform("max")]
    wide = last.pivot_table(index=["dataset", "nz", "algorithm", "seed"], columns="split", values="value").reset_index()
    wide.columns.name = None
    for split in ("train", "test"):  # an empty table (the paper's axes at a small budget) has no columns
        if split not in wide:
            wide[split] = pd.Series(dtype=float)
    return wide


def claim_aevb_better_bound(curves: pd.DataFrame, margin: float) -> Claim:
    statement = "AEVB reaches a better lower bound than wake-sleep in every panel (Figure 2)"
    finals = final_values(curves)
    rows = []
    for (dataset, nz), panel in finals.groupby(["dataset", "nz"]):
        aevb, ws = panel[panel.algorithm == "aevb"], panel[panel.algorithm == "wake_sleep"]
        if aevb.empty or ws.empty:
            continue
        row = {"dataset": dataset, "nz": int(nz), "seeds (AEVB/WS)": f"{len(aevb)}/{len(ws)}"}
        verdicts = []
        for split in ("train", "test"):
            a, w = summarize(aevb[split]), summarize(ws[split])
            gap = difference(a, w)
            low, high = gap.interval()
            row.update({f"aevb_{split}": a.mean, f"wake_sleep_{split}": w.mean, f"margin_{split}": gap.mean,
                        f"margin_{split}_low": low, f"margin_{split}_high": high,
                        f"verdict_{split}": side_of(low, high, margin)})
            verdicts.append(row[f"verdict_{split}"])
        row["verdict"] = combine(verdicts)
        row["n_min"] = min(len(aevb), len(ws))
        rows.append(row)
    if not rows:
        return Claim("aevb_better_bound", statement, NO_DATA, "no panels with both algorithms")
    evidence = pd.DataFrame(rows)
    closeness = evidence[["margin_train_low", "margin_test_low"]].min(axis=1) - margin
    worst = deciding_row(evidence, closeness)
    split = next((name for verdict in (FAIL, INCONCLUSIVE) for name in ("train", "test")
                  if worst[f"verdict_{name}"] == verdict),
                 "train" if worst.margin_train_low < worst.margin_test_low else "test")
    verdict = combine(evidence.verdict)
    interval = (f"AEVB - WS final {split} bound, {worst.dataset} Nz = {worst.nz}: "
                f"{_interval_text(worst[f'margin_{split}'], worst[f'margin_{split}_low'], worst[f'margin_{split}_high'])}"
                f" vs threshold {margin:+.2f}")
    summary = (f"AEVB ahead in {int((evidence.verdict == PASS).sum())} of {len(evidence)} panels on both splits "
               f"(inconclusive {int((evidence.verdict == INCONCLUSIVE).sum())}, behind {int((evidence.verdict == FAIL).sum())}); "
               f"deciding: {interval}")
    return Claim("aevb_better_bound", statement, verdict, summary,
                 evidence.drop(columns=["n_min", "verdict_train", "verdict_test"]), interval,
                 bool((evidence.n_min < 2).any()), seed_counts(evidence.n_min))


def mean_curve(curve: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per evaluation point, with its interval (low, high)."""
    if "seed" not in curve:
        curve = curve.assign(seed=0)
    return summarize_frame(curve, ["samples_seen"]).sort_values("samples_seen", ignore_index=True)


def samples_to_reach(curve: pd.DataFrame, level: float, column: str = "value") -> float:
    """The first evaluated sample count at which ``curve[column]`` reaches ``level``."""
    reached = curve[curve[column] >= level]
    return float(reached.samples_seen.min()) if len(reached) else math.inf


def claim_aevb_converges_faster(curves: pd.DataFrame, fraction: float,
                                earliest: dict | None = None) -> Claim:
    """``earliest`` (dataset, nz) -> the first sample count at which the claim could be judged,
    where ``curves`` start later (the paper's curves, whose axes begin after our first evaluation):
    a curve that has already reached the level at its first point may have reached it at any
    count from ``earliest`` on, so the optimistic end of the interval goes back there."""
    statement = "AEVB converges considerably faster than wake-sleep (Figure 2)"
    tests = curves[(curves.metric == "lower_bound") & (curves.split == "test")]
    rows = []
    for (dataset, nz), panel in tests.groupby(["dataset", "nz"]):
        aevb_runs, ws_runs = panel[panel.algorithm == "aevb"], panel[panel.algorithm == "wake_sleep"]
        if aevb_runs.empty or ws_runs.empty:
            continue
        aevb, ws = mean_curve(aevb_runs), mean_curve(ws_runs)
        target = ws.iloc[-1]
        budget = float(target.samples_seen)
        point = samples_to_reach(aevb, target["mean"], "mean") / budget
        optimistic = samples_to_reach(aevb, target["low"], "high") / budget
        pessimistic = samples_to_reach(aevb, target["high"], "low") / budget
        start = (earliest or {}).get((dataset, int(nz)))
        if start is not None and float(aevb.samples_seen.iloc[0]) > start and \
                optimistic * budget <= float(aevb.samples_seen.iloc[0]):
            optimistic = start / budget  # reached before the curve's first point: unknown how early
        rows.append({"dataset": dataset, "nz": int(nz), "seeds (AEVB/WS)": f"{int(aevb.n_seeds.min())}/{int(ws.n_seeds.min())}",
                     "wake_sleep_final_test": float(target["mean"]), "wake_sleep_samples": budget,
                     "fraction_of_budget": point, "fraction_low": optimistic, "fraction_high": pessimistic,
                     "verdict": side_of(optimistic, pessimistic, fraction, above=False),
                     "n_min": int(min(aevb.n_seeds.min(), ws.n_seeds.min()))})
    if not rows:
        return Claim("aevb_converges_faster", statement, NO_DATA, "no panels with both algorithms")
    evidence = pd.DataFrame(rows)
    worst = deciding_row(evidence, fraction - evidence.fraction_high.clip(upper=10.0))
    interval = (f"fraction of wake-sleep's budget AEVB needs to reach its final test bound, {worst.dataset} Nz = "
                f"{worst.nz}: {_fraction(worst.fraction_of_budget)} [{_fraction(worst.fraction_low)}, "
                f"{_fraction(worst.fraction_high)}] vs threshold {fraction:.0%}")
    summary = (f"AEVB reaches wake-sleep's final test bound within {fraction:.0%} of its samples in "
               f"{int((evidence.verdict == PASS).sum())} of {len(evidence)} panels (inconclusive "
               f"{int((evidence.verdict == INCONCLUSIVE).sum())}); deciding: {interval}")
    return Claim("aevb_converges_faster", statement, combine(evidence.verdict), summary, evidence.drop(columns="n_min"),
                 interval, bool((evidence.n_min < 2).any()), seed_counts(evidence.n_min))


def _fraction(value: float) -> str:
    return "never" if not math.isfinite(value) else f"{value:.0%}"


def claim_no_overfitting_with_more_latents(curves: pd.DataFrame, tolerance: float) -> Claim:
    statement = "More latent variables do not cause more overfitting (Figure 2; train-test gap of AEVB)"
    finals = final_values(curves)
    aevb = finals[finals.algorithm == "aevb"].copy()
    aevb["gap"] = aevb.train - aevb.test
    rows = []
    for dataset, group in aevb.groupby("dataset"):
        gaps = {int(nz): summarize(g.gap) for nz, g in group.groupby("nz")}
        if len(gaps) < 2:
            continue
        largest = max(gaps)
        # the smallest gap among the other Nz: the largest Nz against itself would be a difference
        # of one quantity, not of two independent ones
        smallest_nz = min((n for n in gaps if n != largest), key=lambda n: gaps[n].mean)
        excess = difference(gaps[largest], gaps[smallest_nz])
        low, high = excess.interval()
        rows.append({"dataset": dataset, "largest_nz": largest, "gap_at_largest_nz": gaps[largest].mean,
                     "smallest_gap": gaps[smallest_nz].mean, "nz_of_smallest_gap": smallest_nz,
                     "excess": excess.mean, "excess_low": low, "excess_high": high,
                     "gaps_by_nz": ", ".join(f"{n}: {g.mean:.2f}" for n, g in sorted(gaps.items())),
                     "verdict": side_of(low, high, tolerance, above=False),
                     "n_min": min(g.n for g in gaps.values())})
    if not rows:
        return Claim("no_overfitting_with_more_latents", statement, NO_DATA, "fewer than two Nz per dataset")
    evidence = pd.DataFrame(rows)
    worst = deciding_row(evidence, tolerance - evidence.excess_high)
    interval = (f"gap at Nz = {worst.largest_nz} minus the smallest other gap (Nz = {worst.nz_of_smallest_gap}), "
                f"{worst.dataset}: {_interval_text(worst.excess, worst.excess_low, worst.excess_high)} vs tolerance "
                f"{tolerance:.2f}")
    summary = "; ".join(f"{r.dataset}: gap {r.gap_at_largest_nz:.2f} at Nz = {r.largest_nz} vs the smallest of the others "
                        f"{r.smallest_gap:.2f} (Nz = {r.nz_of_smallest_gap}), excess "
                        f"{_interval_text(r.excess, r.excess_low, r.excess_high)}" for r in evidence.itertuples())
    return Claim("no_overfitting_with_more_latents", statement, combine(evidence.verdict), summary,
                 evidence.drop(columns="n_min"), interval, bool((evidence.n_min < 2).any()), seed_counts(evidence.n_min))


def _per_seed_checkpoint_mean(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (ntrain, algorithm, seed): the mean over checkpoints of the test estimate, and the
    standard error of that mean from the estimator's own errors. Only the checkpoints every seed
    of every algorithm of that Ntrain has are averaged (the same budgets for all)."""
    if "seed" not in frame:
        frame = frame.assign(seed=0)
    if "standard_error" not in frame:
        frame = frame.assign(standard_error=0.0)
    common = []
    for ntrain, group in frame.groupby("ntrain"):
        shared = set.intersection(*(set(g.samples_seen) for _, g in group.groupby(["algorithm", "seed"])))
        common.append(group[group.samples_seen.isin(shared)])
    frame = pd.concat(common) if common else frame
    grouped = frame.groupby(["ntrain", "algorithm", "seed"])
    return pd.DataFrame({
        "value": grouped.value.mean(),
        "standard_error": grouped.standard_error.apply(lambda s: float(np.sqrt(np.nansum(s ** 2))) / len(s)),
        "checkpoints": grouped.samples_seen.nunique(),
    }).reset_index()


def claim_aevb_fastest_marginal_likelihood(marginal_likelihoods: pd.DataFrame) -> Claim:
    statement = "AEVB converges fastest in marginal likelihood (Figure 3)"
    frame = marginal_likelihoods[(marginal_likelihoods.estimator == "appendix_d") & (marginal_likelihoods.split == "test")]
    per_seed = _per_seed_checkpoint_mean(frame)
    rows = []
    for ntrain, group in per_seed.groupby("ntrain"):
        summaries = {a: summarize(g.value, g.standard_error) for a, g in group.groupby("algorithm")}
        if "aevb" not in summaries or len(summaries) < 2:
            continue
        others = {a: s for a, s in summaries.items() if a != "aevb"}
        runner_up = max(others, key=lambda a: others[a].mean)
        lead = difference(summaries["aevb"], others[runner_up])
        low, high = lead.interval()
        rows.append({"ntrain": int(ntrain), **{f"mean_test_{a}": s.mean for a, s in sorted(summaries.items())},
                     "seeds": "/".join(f"{s.n}" for _, s in sorted(summaries.items())),
                     "runner_up": runner_up, "lead": lead.mean, "lead_low": low, "lead_high": high,
                     # the verdict rests on AEVB and its runner-up: their seed counts, not a trailing third's
                     "verdict": side_of(low, high, 0.0), "n_min": min(summaries["aevb"].n, others[runner_up].n)})
    if not rows:
        return Claim("aevb_fastest_marginal_likelihood", statement, NO_DATA, "no marginal likelihoods")
    evidence = pd.DataFrame(rows)
    worst = deciding_row(evidence, evidence.lead_low)
    interval = (f"AEVB - {worst.runner_up}, Ntrain {worst.ntrain:,} (test, mean over checkpoints): "
                f"{_interval_text(worst.lead, worst.lead_low, worst.lead_high)} vs threshold 0")
    summary = "; ".join(f"Ntrain {r.ntrain:,}: AEVB leads {r.runner_up} by {_interval_text(r.lead, r.lead_low, r.lead_high)}"
                        f" (test, mean over checkpoints)" for r in evidence.itertuples())
    return Claim("aevb_fastest_marginal_likelihood", statement, combine(evidence.verdict), summary,
                 evidence.drop(columns="n_min"), interval, bool((evidence.n_min < 2).any()), seed_counts(evidence.n_min))


def claim_mcem_impractical_on_full_set(marginal_likelihoods: pd.DataFrame, finals: pd.DataFrame | None,
                                       throughput_fraction: float) -> Claim:
    """With ``finals`` None (the paper's curves, which show no throughput) only the marginal
    likelihood half is judged."""
    statement = "MCEM cannot be run efficiently on the full training set (Figure 3)"
    ml = marginal_likelihoods[(marginal_likelihoods.estimator == "appendix_d") & (marginal_likelihoods.split == "test")]
    full = ml.ntrain.max() if len(ml) else None  # Figure 3's full training set: its largest Ntrain
    ml = ml[ml.ntrain == full]
    if "seed" not in ml:
        ml = ml.assign(seed=0)
    if ml.empty or not {"aevb", "mcem"} <= set(ml.algorithm):
        return Claim("mcem_impractical_on_full_set", statement, NO_DATA,
                     "no Ntrain = 50,000 marginal likelihoods of both AEVB and MCEM")
    last = ml[ml.samples_seen == ml.groupby(["algorithm", "seed"]).samples_seen.transform("max")]
    # the verdict rests on AEVB and MCEM alone: their seed counts, not wake-sleep's
    summaries = {a: summarize(g.value, g.standard_error if "standard_error" in g else None)
                 for a, g in last.groupby("algorithm") if a in ("aevb", "mcem")}
    gap = difference(summaries["aevb"], summaries["mcem"])
    low, high = gap.interval()
    behind = side_of(low, high, 0.0)
    row = {"aevb_final_test_ml": summaries["aevb"].mean, "mcem_final_test_ml": summaries["mcem"].mean,
           "aevb_minus_mcem": gap.mean, "low": low, "high": high,
           "seeds (AEVB/MCEM)": f"{summaries['aevb'].n}/{summaries['mcem'].n}"}
    interval = f"AEVB - MCEM final test marginal likelihood: {_interval_text(gap.mean, low, high)} vs threshold 0"
    if finals is None:
        verdict, speed_text = behind, "throughput not shown by the paper; "
    else:
        runs = finals[(finals.experiment == "fig3") & (finals.ntrain == full)]
        speed = runs.groupby("algorithm").training_samples_per_second.mean()
        if not {"aevb", "mcem"} <= set(speed.index):
            return Claim("mcem_impractical_on_full_set", statement, NO_DATA, "no Ntrain = 50,000 runs of AEVB and MCEM")
        ratio = float(speed["mcem"] / speed["aevb"])
        slow = ratio <= throughput_fraction
        row.update({"aevb_samples_per_second": float(speed["aevb"]), "mcem_samples_per_second": float(speed["mcem"]),
                    "throughput_ratio": ratio})
        verdict = behind if slow else FAIL
        speed_text = (f"MCEM trains at {ratio:.2f}x AEVB's samples/s ({speed['mcem']:,.0f} vs {speed['aevb']:,.0f}, "
                      f"threshold {throughput_fraction:.2f}x); ")
    row["verdict"] = verdict
    summary = f"{speed_text}AEVB - MCEM at the end: {_interval_text(gap.mean, low, high)}"
    n_min = min(s.n for s in summaries.values())
    return Claim("mcem_impractical_on_full_set", statement, verdict, summary, pd.DataFrame([row]), interval,
                 n_min < 2, seed_counts([s.n for s in summaries.values()]), comparable_verdict=behind)


def claim_estimator_b_lower_variance(variance: pd.DataFrame | None) -> Claim:
    statement = "Estimator B has lower variance than estimator A (Section 2.3)"
    if variance is None or variance.empty:
        return Claim("estimator_b_lower_variance", statement, NO_DATA, "no estimator-variance measurement")
    wide = variance.pivot_table(index=["dataset", "nz"], columns="estimator",
                                values=["gradient_variance", "value_variance"])
    evidence = pd.DataFrame({
        "gradient_variance_a": wide[("gradient_variance", "A")], "gradient_variance_b": wide[("gradient_variance", "B")],
        "value_variance_a": wide[("value_variance", "A")], "value_variance_b": wide[("value_variance", "B")],
    })
    evidence["gradient_ratio_b_over_a"] = evidence.gradient_variance_b / evidence.gradient_variance_a
    evidence["value_ratio_b_over_a"] = evidence.value_variance_b / evidence.value_variance_a
    evidence["verdict"] = np.where(evidence.gradient_ratio_b_over_a < 1, PASS, FAIL)
    evidence = evidence.reset_index()
    ok = evidence.verdict == PASS
    worst = evidence.loc[evidence.gradient_ratio_b_over_a.idxmax()]
    interval = (f"largest B/A gradient variance ratio {worst.gradient_ratio_b_over_a:.2f} ({worst.dataset} Nz = "
                f"{worst.nz}) vs threshold 1; one measurement per model, no interval")
    summary = (f"gradient variance of B below A's on {int(ok.sum())} of {len(ok)} models (B/A from "
               f"{evidence.gradient_ratio_b_over_a.min():.2f} to {evidence.gradient_ratio_b_over_a.max():.2f}; "
               f"value variance B/A from {evidence.value_ratio_b_over_a.min():.2f} to {evidence.value_ratio_b_over_a.max():.2f})")
    return Claim("estimator_b_lower_variance", statement, combine(evidence.verdict), summary, evidence, interval,
                 True, "1")


def figure_2_panels(curves: pd.DataFrame) -> pd.DataFrame:
    """Figure 2's panels: the grid's Nz only (the extra MNIST Nz = 2 run serves Figures 4-5)."""
    fig2 = curves[curves.experiment == "fig2"]
    return fig2[fig2.groupby(["dataset", "nz"]).algorithm.transform("nunique") > 1]


def evaluate_claims(curves: pd.DataFrame, marginal_likelihoods: pd.DataFrame, finals: pd.DataFrame,
                    variance: pd.DataFrame | None, settings: dict, not_run: dict[str, list[str]] | None = None
                    ) -> list[Claim]:
    """Every claim, in the order of the paper.

    ``not_run`` (a partial set of runs): per claim key, the configurations it compares that did
    not run; such a claim is ``NOT_RUN``, never judged on the part that ran (a claim about three
    algorithms is not the same claim about two). Its summary names what is missing and, where
    something ran, what the part that ran would say, as information only."""
    fig2 = figure_2_panels(curves)
    claims = [
        claim_aevb_better_bound(fig2, float(settings["better_bound_margin"])),
        claim_aevb_converges_faster(fig2, float(settings["faster_fraction"])),
        claim_no_overfitting_with_more_latents(fig2, float(settings["overfitting_tolerance"])),
        claim_aevb_fastest_marginal_likelihood(marginal_likelihoods),
        claim_mcem_impractical_on_full_set(marginal_likelihoods, finals, float(settings["mcem_throughput_fraction"])),
        claim_estimator_b_lower_variance(variance),
    ]
    return [mark_not_run(claim, (not_run or {}).get(claim.key, [])) for claim in claims]


def mark_not_run(claim: Claim, missing: list[str]) -> Claim:
    """``claim`` as NOT_RUN when configurations it compares are ``missing`` (their names listed)."""
    if not missing:
        return claim
    shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    partial = (f"; on the configurations that ran alone it would read {claim.verdict} ({claim.summary})"
               if claim.verdict not in (NO_DATA, NOT_RUN) else "")
    return Claim(claim.key, claim.statement, NOT_RUN, f"not run: {shown}{partial}",
                 claim.evidence, "", claim.single_seed, claim.seeds)

def verdict_counts(claims: list[Claim]) -> dict[str, int]:
    return {v: sum(c.verdict == v for c in claims) for v in VERDICTS}


__all__ = ["Claim", "evaluate_claims",
           "final_values", "verdict_counts", "side_of", "mark_not_run", "PASS", "FAIL", "INCONCLUSIVE", "NO_DATA",
           "NOT_RUN", "NOT_ON_AXES",
           "VERDICT_SCORES", "LEVEL", "Summary"]
