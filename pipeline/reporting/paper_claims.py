"""The paper at the same budget: the claim tests of :mod:`pipeline.reporting.claims` applied to the
paper's own curves (``reports/reference``) read at this run's evaluation points (Figure 2 on log x,
Figure 3 on linear x), and the agreement of the two verdicts -- the reproduction result of a
reduced-budget profile. A claim whose data the paper's axes do not show is "not on the paper's axes"."""
from __future__ import annotations

import pandas as pd

from pipeline.reporting.claims import (INCONCLUSIVE, NO_DATA, NOT_ON_AXES, NOT_RUN, Claim,
                                       claim_aevb_better_bound, claim_aevb_converges_faster,
                                       claim_aevb_fastest_marginal_likelihood, claim_mcem_impractical_on_full_set,
                                       claim_no_overfitting_with_more_latents, figure_2_panels)


def paper_curves_at_budget(curves: pd.DataFrame, reference) -> pd.DataFrame:
    """Figure 2's paper curves read at this run's evaluation points (log-x interpolation), shaped
    like ``curves`` with one "seed"; a configuration is left out where the paper's curve does not
    reach this run's final evaluation (its axes start later or the curve is off them)."""
    fig2 = figure_2_panels(curves)
    bounds = fig2[fig2.metric == "lower_bound"]
    rows = []
    for (run, dataset, nz, algorithm, split), group in bounds.groupby(["run", "dataset", "nz", "algorithm", "split"]):
        points = sorted(group.samples_seen.unique())
        values = [(s, reference.fig2_at(dataset, int(nz), algorithm, split, float(s))) for s in points]
        if values[-1][1] is None:
            continue
        rows += [{"run": run, "seed": 0, "experiment": "fig2", "dataset": dataset, "nz": nz, "algorithm": algorithm,
                  "split": split, "metric": "lower_bound", "samples_seen": s, "value": v}
                 for s, v in values if v is not None]
    frame = pd.DataFrame(rows, columns=["run", "seed", "experiment", "dataset", "nz", "algorithm", "split", "metric",
                                        "samples_seen", "value"])
    # a panel needs both algorithms on both splits at this budget
    complete = frame.groupby(["dataset", "nz"]).apply(
        lambda g: len(g[["algorithm", "split"]].drop_duplicates()) == 4, include_groups=False)
    keep = complete[complete].index
    return frame.set_index(["dataset", "nz"]).loc[lambda f: f.index.isin(keep)].reset_index()


def paper_marginal_likelihoods_at_budget(marginal_likelihoods: pd.DataFrame, reference) -> pd.DataFrame:
    """Figure 3's paper curves (test) read at this run's checkpoints; a configuration is left out
    unless the paper's curve covers every one of them."""
    ml = marginal_likelihoods[(marginal_likelihoods.estimator == "appendix_d") & (marginal_likelihoods.split == "test")]
    rows = []
    for (ntrain, algorithm), group in ml.groupby(["ntrain", "algorithm"]):
        points = sorted(group.samples_seen.unique())
        values = [reference.fig3_at(int(ntrain), algorithm, "test", float(s)) for s in points]
        if any(v is None for v in values):
            continue
        rows += [{"ntrain": ntrain, "algorithm": algorithm, "seed": 0, "split": "test", "estimator": "appendix_d",
                  "samples_seen": s, "value": v, "standard_error": 0.0} for s, v in zip(points, values)]
    return pd.DataFrame(rows, columns=["ntrain", "algorithm", "seed", "split", "estimator", "samples_seen", "value",
                                       "standard_error"])


def evaluate_paper_claims(curves: pd.DataFrame, marginal_likelihoods: pd.DataFrame, reference,
                          settings: dict) -> list[Claim]:
    """The claim tests applied to the paper's own curves cut at this run's budget (same order as
    :func:`evaluate_claims`); a claim whose data the paper's axes do not show is ``NOT_ON_AXES``."""
    fig2 = paper_curves_at_budget(curves, reference)
    ml = paper_marginal_likelihoods_at_budget(marginal_likelihoods, reference)
    ours_ml = marginal_likelihoods[(marginal_likelihoods.estimator == "appendix_d")]
    ours_fig2 = figure_2_panels(curves)
    earliest = {(d, int(n)): float(g.samples_seen.min()) for (d, n), g in ours_fig2.groupby(["dataset", "nz"])}
    claims = [
        claim_aevb_better_bound(fig2, float(settings["better_bound_margin"])),
        claim_aevb_converges_faster(fig2, float(settings["faster_fraction"]), earliest),
        claim_no_overfitting_with_more_latents(fig2, float(settings["overfitting_tolerance"])),
        claim_aevb_fastest_marginal_likelihood(ml) if _covers(ml, ours_ml, every_ntrain=True)
        else Claim("aevb_fastest_marginal_likelihood", "", NO_DATA, "the paper's Figure 3 does not show every "
                   "algorithm at these checkpoints"),
        _marginal_likelihood_half(claim_mcem_impractical_on_full_set(ml, None, float(settings["mcem_throughput_fraction"])))
        if _covers(ml, ours_ml, every_ntrain=False, full_only=True)
        else Claim("mcem_impractical_on_full_set", "", NO_DATA, "the paper's Figure 3 does not show AEVB and MCEM at "
                   "Ntrain = 50,000 at these checkpoints"),
        Claim("estimator_b_lower_variance", "", NO_DATA, "the paper shows no estimator variances"),
    ]
    for claim in claims:
        if claim.verdict == NO_DATA:
            claim.verdict = NOT_ON_AXES
    if not fig2.empty:  # a panel the paper's axes do not show at this budget is left out: say which
        ours = set(map(tuple, figure_2_panels(curves)[["dataset", "nz"]].drop_duplicates().to_numpy()))
        missing = sorted(ours - set(map(tuple, fig2[["dataset", "nz"]].drop_duplicates().to_numpy())))
        if missing:
            note = " (panels off the paper's axes at this budget, left out: " + ", ".join(
                f"{d} Nz = {n}" for d, n in missing) + ")"
            for claim in claims[:3]:
                if claim.verdict != NOT_ON_AXES:
                    claim.summary += note
    return claims


def _marginal_likelihood_half(claim: Claim) -> Claim:
    claim.summary = "the marginal-likelihood half of the claim only: " + claim.summary
    return claim


def _covers(paper_ml: pd.DataFrame, ours: pd.DataFrame, every_ntrain: bool, full_only: bool = False) -> bool:
    """Whether the paper's curves cover what a Figure 3 claim compares: every algorithm of ours,
    at every Ntrain (``every_ntrain``) or at the full Ntrain (``full_only``, AEVB and MCEM)."""
    if paper_ml.empty or ours.empty:
        return False
    full = ours.ntrain.max()
    needed = ours[ours.ntrain == full] if full_only else ours
    pairs = {(n, a) for n, a in needed[["ntrain", "algorithm"]].drop_duplicates().itertuples(index=False)}
    if full_only:
        pairs = {(n, a) for n, a in pairs if a in ("aevb", "mcem")}
    have = {(n, a) for n, a in paper_ml[["ntrain", "algorithm"]].drop_duplicates().itertuples(index=False)}
    return pairs <= have if (every_ntrain or full_only) else bool(pairs & have)


def agreement(ours: str, paper: str) -> str:
    """Whether our verdict agrees with the paper's curves judged at the same budget (``ours``: the
    verdict of the part of the claim the paper's curves can show, :attr:`Claim.comparable_verdict`)."""
    if ours == NO_DATA:
        return "cannot tell (no data here)"
    if ours == NOT_RUN:
        return "cannot tell (not run)"
    if paper == NOT_ON_AXES:
        return "cannot tell (the paper's axes do not reach this budget)"
    if ours == INCONCLUSIVE:
        return "cannot tell (ours inconclusive)"
    if paper == INCONCLUSIVE:
        return "cannot tell (the paper's inconclusive)"
    return "agrees" if ours == paper else "disagrees"


def attach_paper_verdicts(claims: list[Claim], paper_claims: list[Claim]) -> list[Claim]:
    for claim, paper in zip(claims, paper_claims):
        assert claim.key == paper.key
        if claim.verdict in (NO_DATA, NOT_RUN):  # nothing of ours to set beside the paper's
            paper.verdict, paper.summary = claim.verdict, "nothing here to compare"
        claim.paper_verdict, claim.paper_summary = paper.verdict, paper.summary
    return claims


def claim_agreement(claim: Claim) -> str:
    """:func:`agreement` of a claim with its paper verdict (on the part the paper can show)."""
    return agreement(claim.comparable_verdict or claim.verdict, claim.paper_verdict)


__all__ = ["agreement", "attach_paper_verdicts", "claim_agreement", "evaluate_paper_claims",
           "paper_curves_at_budget", "paper_marginal_likelihoods_at_budget"]
