"""Which configurations a profile asks for, and which of them a runs folder holds finished.

A report of a partial set of runs (docs/paper-budget.md: the part of the paper profile a
machine could run) lists every configuration of the active profile with its status, so that what
did not run is marked "not run", never extrapolated, and the claims that compare a missing
configuration are not judged (:func:`pipeline.reporting.claims.mark_not_run`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.plumbing.params import lookup
from pipeline.runs.config import configuration_seeds
from pipeline.runs.directory import FINAL_FILE, marginal_likelihood_path, seed_directories


def expected_configurations(params: dict) -> pd.DataFrame:
    """Every configuration dvc.yaml trains on the active profile: what it is for (``role``: fig2,
    figures 4-5, binarization study, fig3), its folder under runs/ (``experiment_dir``), the experiment whose budgets it uses, dataset, algorithm, Nz, Ntrain
    and the seeds params.yaml gives it; ``marginal_likelihood`` where Appendix D runs on it."""
    experiments = lookup(params, "experiments")
    fig2, fig3, fig4 = experiments["fig2"], experiments["fig3"], experiments["fig4"]
    rows = []
    for dataset in ("mnist", "frey_face"):
        for nz in fig2[dataset]["nz"]:
            for algorithm in fig2["algorithms"]:
                rows.append(("fig2", "fig2", "fig2", f"{dataset}_nz{nz}_{algorithm}", dataset, algorithm, nz, None))
    extra = fig4["mnist"]["nz"]  # Figures 4-5's MNIST Nz = 2 run (AEVB), when not in Figure 2's grid
    if extra not in fig2["mnist"]["nz"] or "aevb" not in fig2["algorithms"]:
        rows.append(("figures 4-5", "fig2", "fig2", f"mnist_nz{extra}_aevb", "mnist", "aevb", extra, None))
    study = fig2.get("binarization_study")
    if study:
        for nz in study["nz"]:
            rows.append(("binarization study", "binarization", "fig2", f"mnist_nz{nz}_aevb_{study['binarize']}", "mnist",
                         "aevb", nz, None))
    for ntrain in fig3["ntrain"]:
        for algorithm in fig3["algorithms"]:
            rows.append(("fig3", "fig3", "fig3", f"mnist_ntrain{ntrain}_{algorithm}", "mnist", algorithm,
                         fig3["mnist"]["nz"], ntrain))
    frame = pd.DataFrame(rows, columns=["role", "experiment_dir", "experiment", "configuration", "dataset", "algorithm",
                                        "nz", "ntrain"])
    frame["seeds"] = [configuration_seeds(params, e, c) for e, c in zip(frame.experiment, frame.configuration)]
    frame["marginal_likelihood"] = frame.experiment == "fig3"
    return frame


def configuration_status(runs_root: str | Path, expected: pd.DataFrame) -> pd.DataFrame:
    """:func:`expected_configurations` with what ``runs_root`` holds: the seeds that finished
    (a final.json; for Figure 3 also the marginal-likelihood rows) and a status: ``ran``, ``ran
    (k of n seeds)``, or ``not run``."""
    runs_root = Path(runs_root)
    finished, statuses = [], []
    for row in expected.itertuples():
        done = []
        for run_dir in seed_directories(runs_root / row.experiment_dir / row.configuration):
            if not (run_dir / FINAL_FILE).is_file():
                continue
            if row.marginal_likelihood and not marginal_likelihood_path(run_dir, runs_root).is_file():
                continue
            done.append(int(run_dir.name.removeprefix("seed")))
        finished.append(done)
        wanted = len(row.seeds)
        statuses.append("not run" if not done else "ran" if len(done) >= wanted else f"ran ({len(done)} of {wanted} seeds)")
    return expected.assign(finished_seeds=finished, status=statuses)


def claims_not_run(status: pd.DataFrame, variance_present: bool) -> dict[str, list[str]]:
    """Per claim key (:mod:`pipeline.reporting.claims`), the configurations it compares that did not run."""
    missing = status[status.status == "not run"]

    def names(frame: pd.DataFrame) -> list[str]:
        return [f"{e}/{c}" for e, c in zip(frame.experiment_dir, frame.configuration)]

    grid = missing[missing.role == "fig2"]
    fig3 = missing[missing.role == "fig3"]
    full = status[status.role == "fig3"].ntrain.max()
    aevb_fig2 = grid[grid.algorithm == "aevb"]
    return {
        "aevb_better_bound": names(grid),
        "aevb_converges_faster": names(grid),
        "no_overfitting_with_more_latents": names(aevb_fig2),
        "aevb_fastest_marginal_likelihood": names(fig3),
        "mcem_impractical_on_full_set": names(fig3[(fig3.ntrain == full) & fig3.algorithm.isin(["aevb", "mcem"])]),
        "estimator_b_lower_variance": names(aevb_fig2) + ([] if variance_present else ["runs/estimator_variance.csv"]),
    }


def status_table(status: pd.DataFrame) -> pd.DataFrame:
    """The report's table of configurations: folder, seeds asked for and finished, status."""
    return pd.DataFrame({
        "for": status.role,
        "configuration": [f"{e}/{c}" for e, c in zip(status.experiment_dir, status.configuration)],
        "seeds asked": [", ".join(map(str, s)) for s in status.seeds],
        "seeds finished": [", ".join(map(str, s)) or "–" for s in status.finished_seeds],
        "status": status.status,
    })


__all__ = ["claims_not_run", "configuration_status", "expected_configurations", "status_table"]
