"""The report's fidelity tables (docs/fidelity.md): how far an estimator sits from the truth, and
what a model must beat.

- Appendix D's bias: on Figure 3, Appendix D minus the exact grid on the seed where the grid ran,
  beside Appendix D's own standard error, and a sentence on whether that error covers the bias.
- A log-likelihood for every Figure 2 model (:mod:`pipeline.evaluation.log_likelihood`): the ELBO,
  an importance-weighted bound and AIS per panel, the BDMC sandwich's gap, and AIS against the
  exact grid on Figure 3's models.
- The linear-Gaussian floor on Frey Face (:mod:`pipeline.evaluation.linear_reference`): the exact
  test log-likelihood of factor analysis and probabilistic PCA at each latent size, and of
  independent pixels, beside the Figure 2 bounds (ours and the paper's at the same samples).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.reporting.claims import final_values
from pipeline.reporting.reference import Reference
from pipeline.reporting.render import Block

LINEAR_REFERENCE_FILE = "linear_reference.csv"
LOG_LIKELIHOOD_FILE = "log_likelihood.csv"


def appendix_d_bias(last: pd.DataFrame, split: str) -> tuple[float, float] | None:
    """Appendix D minus the exact grid on the seed(s) where the grid ran, and Appendix D's own
    standard error there (averaged over those seeds): the bias beside the error the estimator
    claims. None where the grid did not run on this split."""
    grid = last[(last.split == split) & (last.estimator == "grid")]
    appendix_d = last[(last.split == split) & (last.estimator == "appendix_d") & last.seed.isin(grid.seed)]
    if grid.empty or appendix_d.empty:
        return None
    paired = appendix_d.merge(grid[["seed", "value"]], on="seed", suffixes=("", "_grid"))
    return float((paired.value - paired.value_grid).mean()), float(paired.standard_error.mean())


def appendix_d_bias_sentence(table: pd.DataFrame) -> str:
    """One sentence on whether Appendix D's standard error covers its bias against the grid (the
    bias beyond two standard errors is not covered)."""
    rows = [(f"Ntrain {int(r.Ntrain):,} {r.algorithm} {split}", r[f"{split} App. D - grid"], r[f"{split} App. D s.e."])
            for _, r in table.iterrows() for split in ("train", "test")
            if f"{split} App. D - grid" in table and pd.notna(r.get(f"{split} App. D - grid"))]
    if not rows:
        return "The exact grid did not run here, so Appendix D's bias is not measured."
    uncovered = [(label, bias, se) for label, bias, se in rows if abs(bias) > 2 * se]
    if not uncovered:
        return ("Appendix D's bias against the exact grid (App. D - grid) lies within two of its own standard "
                "errors on every row: its standard error covers it.")
    worst = max(uncovered, key=lambda item: abs(item[1]) / max(item[2], 1e-12))
    return (f"Appendix D's standard error does not cover its bias on {len(uncovered)} of {len(rows)} rows "
            f"(|App. D - grid| beyond two standard errors; the largest, {worst[0]}: {worst[1]:+.3f} nat against "
            f"a standard error of {worst[2]:.3f}): it measures the spread of its own estimate, not its distance "
            f"from log p(x), so differences of this size between rows are the estimator's, not the models'.")


def read_linear_reference(runs_root: Path) -> pd.DataFrame | None:
    """``runs/linear_reference.csv`` (the stage ``linear_reference``), or None where it did not run."""
    path = Path(runs_root) / LINEAR_REFERENCE_FILE
    return pd.read_csv(path) if path.is_file() else None


def linear_floor_table(linear: pd.DataFrame, curves: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Per Frey Face latent size: factor analysis and probabilistic PCA (exact log p(x), train and
    test), our final AEVB and wake-sleep test bounds (mean over seeds, with the seed count and the
    standard error over seeds where there are several), the budget, and the paper's test curves at
    the same samples."""
    fig2 = curves[(curves.experiment == "fig2") & (curves.dataset == "frey_face")]
    finals = final_values(fig2) if not fig2.empty else pd.DataFrame(columns=["nz", "algorithm", "test"])
    budget = fig2[fig2.metric == "lower_bound"].groupby("nz").samples_seen.max() if not fig2.empty else pd.Series(dtype=float)
    rows = []
    for nz in sorted(int(n) for n in linear[linear.nz > 0].nz.unique()):
        row = {"Nz": nz}
        for model, label in (("factor_analysis", "FA"), ("probabilistic_pca", "PPCA")):
            for split in ("train", "test"):
                hit = linear[(linear.model == model) & (linear.nz == nz) & (linear.split == split)]
                row[f"{label} {split} (exact)"] = float(hit.log_likelihood.iloc[0]) if len(hit) else None
        for algorithm, label in (("aevb", "AEVB"), ("wake_sleep", "WS")):
            tests = finals[(finals.nz == nz) & (finals.algorithm == algorithm)].test.astype(float)
            row[f"{label} test bound (ours)"] = float(tests.mean()) if len(tests) else None
            row[f"{label} seeds"] = len(tests)
            row[f"{label} s.e. over seeds"] = float(tests.std() / len(tests) ** 0.5) if len(tests) > 1 else None
        samples = budget.get(nz)
        row["samples"] = int(samples) if samples is not None else None
        for algorithm, label in (("aevb", "AEVB"), ("wake_sleep", "WS")):
            value = reference.fig2_at("frey_face", nz, algorithm, "test", float(samples)) if samples is not None else None
            row[f"paper {label} test @ same samples"] = value if value is not None else "off-axis"
        ours, floor = row["AEVB test bound (ours)"], row["FA test (exact)"]
        row["AEVB - FA (test)"] = ours - floor if ours is not None and floor is not None else None
        rows.append(row)
    return pd.DataFrame(rows)


def linear_floor_blocks(linear: pd.DataFrame | None, curves: pd.DataFrame, reference: Reference) -> list[Block]:
    """The report's section on the linear-Gaussian floor (nothing where the stage did not run)."""
    if linear is None or linear.empty:
        return []
    independent = linear[linear.model == "independent_pixels"].set_index("split").log_likelihood
    return [
        Block("h2", "Frey Face: the linear-Gaussian floor"),
        Block("p", "The exact log-likelihood per datapoint of factor analysis (FA) and probabilistic PCA (PPCA) with "
                   "Nz latents, fitted by maximum likelihood to the same training faces (pixel / 256, the same split; "
                   "scikit-learn), on the same test faces: a linear-mean, constant-variance special case of the "
                   "Gaussian MLP decoder, so a nonlinear model of that latent size that learned anything should beat "
                   "it (docs/fidelity.md). Our bounds and the paper's are lower bounds on their models' log p(x). "
                   f"Independent pixels (no latent at all; the per-pixel Gaussian): test "
                   f"{float(independent.get('test', float('nan'))):,.2f}, train "
                   f"{float(independent.get('train', float('nan'))):,.2f}: a wake-sleep curve level with it "
                   f"has a decoder that ignores its latents."),
        Block("table", linear_floor_table(linear, curves, reference)),
    ]


def read_log_likelihoods(runs_root: Path) -> pd.DataFrame | None:
    """``runs/log_likelihood.csv`` (the stage ``log_likelihood``), or None where it did not run."""
    path = Path(runs_root) / LOG_LIKELIHOOD_FILE
    return pd.read_csv(path) if path.is_file() else None


def log_likelihood_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per Figure 2 panel (first seed, final checkpoint): ELBO, importance-weighted bound, AIS, the
    bound's gap to the best estimate of log p(x), and the BDMC sandwich gap on simulated data."""
    fig2 = frame[frame.experiment == "fig2"]
    rows = []
    for (dataset, nz, algorithm), group in fig2.groupby(["dataset", "nz", "algorithm"]):
        value = group.set_index("estimator").value
        error = group.set_index("estimator").standard_error
        best = max(value.get("ais", float("-inf")), value.get("importance_weighted", float("-inf")))
        rows.append({"dataset": dataset, "Nz": int(nz), "algorithm": algorithm,
                     "samples": int(group.samples_seen.iloc[0]), "test points": int(group.points.iloc[0]),
                     "ELBO": value.get("elbo"), "IW bound": value.get("importance_weighted"),
                     "AIS log p(x)": value.get("ais"), "AIS s.e.": error.get("ais"),
                     "ELBO gap to log p(x), at least": best - value.get("elbo", float("nan")),
                     "sandwich gap (simulated)": value.get("bdmc_upper", float("nan")) - value.get("bdmc_lower", float("nan"))})
    return pd.DataFrame(rows)


def ais_validation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """AIS against the exact grid on Figure 3's models (the same test points, the same AIS settings)."""
    fig3 = frame[frame.experiment == "fig3"]
    rows = []
    for run, group in fig3.groupby("run"):
        value = group.set_index("estimator").value
        if "ais" in value and "grid" in value:
            rows.append({"configuration": run, "test points": int(group.points.iloc[0]), "grid (exact)": value["grid"],
                         "AIS": value["ais"], "AIS - grid": value["ais"] - value["grid"]})
    return pd.DataFrame(rows)


def log_likelihood_blocks(frame: pd.DataFrame | None) -> list[Block]:
    """The report's section on how loose each Figure 2 bound is (nothing where the stage did not run)."""
    if frame is None or frame.empty:
        return []
    settings = frame[frame.estimator == "ais"].iloc[0] if (frame.estimator == "ais").any() else None
    validation = ais_validation_table(frame)
    if validation.empty:
        check = "No Figure 3 model was there to check AIS against the exact grid."
    else:
        difference = validation["AIS - grid"]
        check = (f"With the same settings on Figure 3's models (Nz = 3), AIS minus the exact grid runs from "
                 f"{difference.min():+.2f} to {difference.max():+.2f} nat (means over the same test points); "
                 f"{int((difference.abs() <= 0.1).sum())} of {len(difference)} are within 0.1 nat (second table).")
    return [
        Block("h2", "How loose is the bound: log p(x) of every Figure 2 model"),
        Block("p", "On each Figure 2 configuration's first seed at its final checkpoint, on the first test points: "
                   "the ELBO (estimator B), the importance-weighted bound with the encoder as proposal (IW), and "
                   "log p(x) by annealed importance sampling from the prior with HMC transitions (AIS"
                   + (f", {int(settings.chains)} chains, {int(settings.steps)} steps" if settings is not None else "")
                   + "). IW and AIS are both stochastic lower bounds on log p(x), so the ELBO's gap to log p(x) is at "
                   "least the larger of them minus the ELBO. The sandwich gap is reverse minus forward AIS with the "
                   "same schedule on data simulated from the model (bidirectional Monte Carlo): it bounds AIS's error "
                   "on data like the model's own. " + check),
        Block("table", log_likelihood_table(frame)),
        *([Block("table", validation)] if not validation.empty else []),
    ]


__all__ = ["LINEAR_REFERENCE_FILE", "LOG_LIKELIHOOD_FILE", "ais_validation_table", "log_likelihood_blocks",
           "log_likelihood_table", "read_log_likelihoods", "appendix_d_bias", "appendix_d_bias_sentence", "linear_floor_blocks",
           "linear_floor_table", "read_linear_reference"]
