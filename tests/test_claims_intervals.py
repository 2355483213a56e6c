"""Three-valued verdicts (issue 16): the interval logic on synthetic data where the answer is known,
and the paper's own curves judged at a budget where the answer is known by inspection."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.reporting.claims import (
    FAIL, INCONCLUSIVE, NOT_ON_AXES, NO_DATA, PASS, claim_aevb_better_bound, claim_aevb_converges_faster,
    claim_aevb_fastest_marginal_likelihood, claim_mcem_impractical_on_full_set,
    claim_no_overfitting_with_more_latents, side_of)
from pipeline.reporting.paper_claims import agreement, evaluate_paper_claims
from pipeline.reporting.reference import REFERENCE_DIR, Reference
from pipeline.reporting.seed_statistics import difference, summarize

SETTINGS = {"better_bound_margin": 0.0, "faster_fraction": 0.5, "overfitting_tolerance": 1.0,
            "mcem_throughput_fraction": 0.5}


def curve_rows(dataset, nz, algorithm, seed, samples, train, test):
    """One run's curve: the lower bound on train and test at each sample count."""
    rows = []
    for s, tr, te in zip(samples, train, test):
        rows += [{"run": f"{dataset}_nz{nz}_{algorithm}", "seed": seed, "experiment": "fig2", "dataset": dataset,
                  "nz": nz, "algorithm": algorithm, "metric": "lower_bound", "samples_seen": s, "split": split,
                  "value": value} for split, value in (("train", tr), ("test", te))]
    return rows


def final_panel(aevb_finals, ws_finals, gap=0.0):
    """A one-panel Figure 2 table whose runs end at the given final bounds (train = test + gap)."""
    rows = []
    for algorithm, finals in (("aevb", aevb_finals), ("wake_sleep", ws_finals)):
        for seed, value in enumerate(finals, start=1):
            rows += curve_rows("mnist", 20, algorithm, seed, [1000, 10000], [value - 50 + gap, value + gap],
                               [value - 50, value])
    return pd.DataFrame(rows)


def test_side_of_a_threshold():
    assert side_of(0.1, 2.0, 0.0) == PASS and side_of(-2.0, -0.1, 0.0) == FAIL and side_of(-1, 1, 0) == INCONCLUSIVE
    assert side_of(0.1, 0.4, 0.5, above=False) == PASS and side_of(0.6, 0.9, 0.5, above=False) == FAIL


def test_a_clear_win_a_clear_loss_and_a_straddle():
    win = claim_aevb_better_bound(final_panel([-100.0, -100.2, -99.8], [-110.0, -110.1, -109.9]), 0.0)
    loss = claim_aevb_better_bound(final_panel([-110.0, -110.2, -109.8], [-100.0, -100.1, -99.9]), 0.0)
    straddle = claim_aevb_better_bound(final_panel([-100.0, -98.0, -102.0], [-100.5, -99.5, -101.0]), 0.0)
    assert (win.verdict, loss.verdict, straddle.verdict) == (PASS, FAIL, INCONCLUSIVE)
    assert not win.single_seed and win.seeds == "3"
    # the straddle's interval is Welch's t interval of the difference of the two means
    a, w = np.array([-100.0, -98.0, -102.0]), np.array([-100.5, -99.5, -101.0])
    va, vw = a.var(ddof=1) / 3, w.var(ddof=1) / 3
    df = (va + vw) ** 2 / (va ** 2 / 2 + vw ** 2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vw)
    row = straddle.evidence.iloc[0]
    assert row.margin_test == pytest.approx(a.mean() - w.mean())
    assert (row.margin_test_low, row.margin_test_high) == pytest.approx((a.mean() - w.mean() - half,
                                                                          a.mean() - w.mean() + half))
    assert "[" in straddle.interval and "inconclusive" not in straddle.interval


def test_a_single_seed_side_borrows_the_other_sides_spread_and_is_flagged():
    """Three seeds against one: the one seed's own spread is unknown, so it is given the other side's
    s^2 (pooled), with n - 1 degrees of freedom: not narrower than the seed spread allows."""
    claim = claim_aevb_better_bound(final_panel([-100.0, -99.0, -101.0], [-103.0]), 0.0)
    s = 1.0  # the AEVB seeds' standard deviation
    half = stats.t.ppf(0.975, 2) * s * math.sqrt(1 / 3 + 1)
    row = claim.evidence.iloc[0]
    assert (row.margin_test_low, row.margin_test_high) == pytest.approx((3 - half, 3 + half))
    assert claim.verdict == INCONCLUSIVE and claim.single_seed
    one_each = difference(summarize([-100.0]), summarize([-103.0]))
    assert one_each.interval() == (3.0, 3.0)  # no spread at all: a point, decided as such and flagged


def test_converges_faster_interval_uses_both_bands():
    samples = [1000, 2000, 5000, 10000]
    rows = []
    for seed, shift in enumerate([0.0, 1.0, -1.0], start=1):
        rows += curve_rows("mnist", 20, "wake_sleep", seed, samples, [-200, -150, -120, -110 + shift],
                           [-200, -150, -120, -110 + shift])
    early = rows + [r for seed, shift in enumerate([0.0, 0.5, -0.5], start=1)
                    for r in curve_rows("mnist", 20, "aevb", seed, samples, [-150, -105 + shift, -100, -95],
                                        [-150, -105 + shift, -100, -95])]
    never = rows + [r for seed in (1, 2, 3) for r in curve_rows("mnist", 20, "aevb", seed, samples,
                                                                 [-300] * 4, [-300] * 4)]
    late = rows + [r for seed, shift in enumerate([0.0, 4.0, -4.0], start=1)
                   for r in curve_rows("mnist", 20, "aevb", seed, samples, [-200, -150, -112 + shift, -100],
                                       [-200, -150, -112 + shift, -100])]
    assert claim_aevb_converges_faster(pd.DataFrame(early), 0.5).verdict == PASS  # 20% of the budget
    assert claim_aevb_converges_faster(pd.DataFrame(never), 0.5).verdict == FAIL
    straddle = claim_aevb_converges_faster(pd.DataFrame(late), 0.5)
    row = straddle.evidence.iloc[0]
    assert straddle.verdict == INCONCLUSIVE and row.fraction_low <= 0.5 < row.fraction_high


def test_the_largest_nz_with_the_smallest_gap_passes_without_comparing_it_with_itself():
    rows = []
    for nz, gaps in ((5, [3.0, 3.2, 2.8]), (20, [1.0, 1.1, 0.9])):
        for seed, gap in enumerate(gaps, start=1):
            rows += curve_rows("mnist", nz, "aevb", seed, [1000], [-100 + gap], [-100])
    claim = claim_no_overfitting_with_more_latents(pd.DataFrame(rows), 1.0)
    row = claim.evidence.iloc[0]
    assert claim.verdict == PASS and row.nz_of_smallest_gap == 5 and row.excess == pytest.approx(-2.0)


def ml_rows(ntrain, algorithm, seeds_values, checkpoints=(250_000, 500_000), se=0.01):
    return [{"ntrain": ntrain, "algorithm": algorithm, "seed": seed, "split": "test", "estimator": "appendix_d",
             "samples_seen": s, "value": v, "standard_error": se, "run": f"mnist_ntrain{ntrain}_{algorithm}"}
            for seed, v in enumerate(seeds_values, start=1) for s in checkpoints]


def test_marginal_likelihood_claims_combine_seed_spread_and_estimator_error():
    clear = pd.DataFrame(ml_rows(1000, "aevb", [-140.0, -140.2, -139.8]) + ml_rows(1000, "mcem", [-145.0, -145.1, -144.9])
                         + ml_rows(1000, "wake_sleep", [-160.0, -160.0, -160.0]))
    close = pd.DataFrame(ml_rows(50000, "aevb", [-139.0, -140.0, -138.5]) + ml_rows(50000, "mcem", [-139.1, -139.3, -139.2])
                         + ml_rows(50000, "wake_sleep", [-150.0, -150.0, -150.0]))
    assert claim_aevb_fastest_marginal_likelihood(clear).verdict == PASS
    assert claim_aevb_fastest_marginal_likelihood(close).verdict == INCONCLUSIVE
    finals = pd.DataFrame([{"experiment": "fig3", "ntrain": 50000, "algorithm": a, "training_samples_per_second": v}
                           for a, v in (("aevb", 40000.0), ("mcem", 7000.0))])
    mcem = claim_mcem_impractical_on_full_set(pd.concat([clear, close]), finals, 0.5)
    assert mcem.verdict == INCONCLUSIVE and mcem.comparable_verdict == INCONCLUSIVE
    fast_mcem = finals.assign(training_samples_per_second=[40000.0, 39000.0])
    assert claim_mcem_impractical_on_full_set(pd.concat([clear, close]), fast_mcem, 0.5).verdict == FAIL


def test_a_trailing_single_seed_third_does_not_flag_the_fastest_claim():
    """The default profile gives Figure 3's wake-sleep one seed: the claim's verdict rests on AEVB and
    its runner-up (three seeds each), so it is not marked single-seed; were the runner-up the
    single-seed one, it would be."""
    three_three_one = pd.DataFrame(ml_rows(1000, "aevb", [-140.0, -140.2, -139.8])
                                   + ml_rows(1000, "mcem", [-145.0, -145.1, -144.9]) + ml_rows(1000, "wake_sleep", [-160.0]))
    claim = claim_aevb_fastest_marginal_likelihood(three_three_one)
    assert claim.verdict == PASS and not claim.single_seed and claim.seeds == "3"
    runner_up_single = pd.DataFrame(ml_rows(1000, "aevb", [-140.0, -140.2, -139.8])
                                    + ml_rows(1000, "mcem", [-165.0, -165.1, -164.9]) + ml_rows(1000, "wake_sleep", [-150.0]))
    assert claim_aevb_fastest_marginal_likelihood(runner_up_single).single_seed
    full = pd.DataFrame(ml_rows(50000, "aevb", [-140.0, -140.2, -139.8]) + ml_rows(50000, "mcem", [-139.0, -139.1, -138.9])
                        + ml_rows(50000, "wake_sleep", [-160.0]))
    finals = pd.DataFrame([{"experiment": "fig3", "ntrain": 50000, "algorithm": a, "training_samples_per_second": v}
                           for a, v in (("aevb", 40000.0), ("mcem", 4000.0), ("wake_sleep", 30000.0))])
    mcem = claim_mcem_impractical_on_full_set(full, finals, 0.5)
    assert not mcem.single_seed and mcem.seeds == "3", (mcem.single_seed, mcem.seeds)


def our_curves_at(budget_points):
    """Our Figure 2 runs (one seed, values irrelevant to the paper's verdict) evaluated at these counts."""
    rows = []
    for dataset, nzs in (("mnist", [3, 5, 10, 20, 200]), ("frey_face", [2, 5, 10, 20])):
        for nz in nzs:
            for algorithm in ("aevb", "wake_sleep"):
                rows += curve_rows(dataset, nz, algorithm, 1, budget_points, [0.0] * len(budget_points),
                                   [0.0] * len(budget_points))
    return pd.DataFrame(rows)


def test_the_papers_curves_at_ten_million_samples_pass_the_better_bound_claim():
    """By inspection of the paper's Figure 2 at 10^7 samples: AEVB above wake-sleep in every panel
    on both splits (MNIST Nz = 20: -104.8 against -108.3 on the test set; Frey Face: 1,200 against
    569). Figure 3 at 10^6 samples is off the paper's axes for Ntrain = 50,000 (its curves start
    at 1.8 million), so its claims cannot be judged there."""
    reference = Reference.load(REFERENCE_DIR)
    curves = our_curves_at([2_000_000, 5_000_000, 10_000_000])
    ml = pd.DataFrame(ml_rows(1000, "aevb", [-150.0], (500_000, 1_000_000)) + ml_rows(1000, "mcem", [-150.0], (500_000, 1_000_000))
                      + ml_rows(50000, "aevb", [-150.0], (500_000, 1_000_000))
                      + ml_rows(50000, "mcem", [-150.0], (500_000, 1_000_000)))
    paper = {c.key: c for c in evaluate_paper_claims(curves, ml, reference, SETTINGS)}
    assert paper["aevb_better_bound"].verdict == PASS
    assert paper["aevb_fastest_marginal_likelihood"].verdict == NOT_ON_AXES
    assert paper["mcem_impractical_on_full_set"].verdict == NOT_ON_AXES
    assert paper["estimator_b_lower_variance"].verdict == NOT_ON_AXES
    # at 10^5 samples the paper's Figure 2 shows nothing: no panel can be judged
    early = {c.key: c for c in evaluate_paper_claims(our_curves_at([10_000, 100_000]), ml, reference, SETTINGS)}
    assert early["aevb_better_bound"].verdict == NOT_ON_AXES


def test_agreement():
    assert agreement(PASS, PASS) == "agrees" and agreement(FAIL, PASS) == "disagrees"
    assert agreement(INCONCLUSIVE, PASS).startswith("cannot tell")
    assert agreement(PASS, NOT_ON_AXES).startswith("cannot tell") and agreement(NO_DATA, PASS).startswith("cannot tell")
