"""Read the run directories (:mod:`pipeline.runs.directory`) into tidy pandas tables for figures,
claims, metrics and the report.

Every table carries the run's identity from its ``config.json`` — experiment, dataset, algorithm,
Nz, hidden units, Ntrain — so a figure selects panels by those columns, never by parsing paths.

``missing_ok`` (a partial set of runs, e.g. the part of the paper profile a machine could run:
docs/paper-budget.md): an experiment without runs gives an empty table and a run that
has not finished (no final.json, or no marginal-likelihood rows) is left out, never read halfway;
the report lists what is missing as "not run" (:func:`pipeline.reporting.report.configurations_table`).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.runs.directory import (CONFIG_FILE, CURVE_FILE, FINAL_FILE, MissingRunError, final_checkpoint,
                                     load_checkpoint, marginal_likelihood_path, model_from_checkpoint, read_run_config,
                                     run_directories, run_identity, seed_directories)


CURVE_COLUMNS = ["samples_seen", "wall_seconds", "split", "metric", "value"]
MARGINAL_LIKELIHOOD_COLUMNS = ["samples_seen", "split", "estimator", "value", "standard_error", "points",
                               "wall_seconds", "diagnostic", "diagnostic_value", "fingerprint"]
IDENTITY_COLUMNS = ["run", "seed", "experiment", "dataset", "algorithm", "nz", "hidden_units", "ntrain", "binarize"]


def _finished(run_dir: Path) -> bool:
    return (run_dir / FINAL_FILE).is_file()


def load_curves(runs_root: Path, experiment: str, missing_ok: bool = False) -> pd.DataFrame:
    """Every ``curve.csv`` of an experiment, stacked, with the run identity on each row."""
    frames = []
    for run_dir in run_directories(runs_root, experiment):
        if missing_ok and not _finished(run_dir):
            continue
        if not (run_dir / CURVE_FILE).is_file():
            raise MissingRunError(f"{run_dir / CURVE_FILE} not found: the run did not finish (`dvc repro`)")
        frame = pd.read_csv(run_dir / CURVE_FILE)
        frames.append(frame.assign(**run_identity(run_dir)))
    if not frames:
        if missing_ok:
            return pd.DataFrame(columns=CURVE_COLUMNS + IDENTITY_COLUMNS)
        raise MissingRunError(f"no trained runs under {Path(runs_root) / experiment}: run `dvc repro` first")
    return pd.concat(frames, ignore_index=True)


def load_finals(runs_root: Path, experiment: str, missing_ok: bool = False) -> pd.DataFrame:
    """One row per run: its identity and the contents of ``final.json`` (wall times, throughput)."""
    rows = []
    for run_dir in run_directories(runs_root, experiment):
        if missing_ok and not _finished(run_dir):
            continue
        final_path = run_dir / FINAL_FILE
        if not final_path.is_file():
            raise MissingRunError(f"{final_path} not found: the run did not finish (`dvc repro`)")
        final = json.loads(final_path.read_text())
        extra = final.pop("final_metrics", {}) or {}
        final.pop("step_size_trial_scores", None)
        rows.append({**run_identity(run_dir), **final, **{f"final_{k}": v for k, v in extra.items()}})
    return pd.DataFrame(rows, columns=None if rows else IDENTITY_COLUMNS)


def load_marginal_likelihoods(runs_root: Path, experiment: str = "fig3", missing_ok: bool = False) -> pd.DataFrame:
    """Every ``marginal_likelihood.csv`` of an experiment (Figure 3's y-axis), with run identity."""
    frames = []
    for run_dir in run_directories(runs_root, experiment):
        path = marginal_likelihood_path(run_dir, runs_root)
        if missing_ok and not (_finished(run_dir) and path.is_file()):
            continue
        if not path.is_file():
            raise MissingRunError(f"{path} not found: run `vaebench evaluate marginal-likelihood --run {run_dir.parent}`")
        frame = pd.read_csv(path).drop(columns=["run", "algorithm", "ntrain", "seed"], errors="ignore")
        frames.append(frame.assign(**run_identity(run_dir)))
    if not frames:
        if missing_ok:
            return pd.DataFrame(columns=MARGINAL_LIKELIHOOD_COLUMNS + IDENTITY_COLUMNS)
        raise MissingRunError(f"no trained runs under {Path(runs_root) / experiment}: run `dvc repro` first")
    return pd.concat(frames, ignore_index=True)


def find_run(runs_root: Path, experiment: str, dataset: str, nz: int, algorithm: str = "aevb") -> Path:
    """The run directory of one configuration's first seed (the lowest seed number):
    ``runs_root/experiment/<dataset>_nz<nz>_<algorithm>/seed<N>/``. A configuration directory
    named otherwise is found by its first seed's config.json."""
    root = Path(runs_root) / experiment
    seeds = seed_directories(root / f"{dataset}_nz{nz}_{algorithm}")
    if seeds:
        return seeds[0]
    for configuration_dir in sorted(root.iterdir()) if root.is_dir() else []:
        seeds = seed_directories(configuration_dir)
        if seeds:
            config = read_run_config(seeds[0])
            if (config.dataset, config.z_dim, config.algorithm) == (dataset, nz, algorithm):
                return seeds[0]
    raise MissingRunError(f"no {algorithm} run of {dataset} with Nz = {nz} under {root} (looked for "
                          f"{root / f'{dataset}_nz{nz}_{algorithm}'}/seed<N>/{CONFIG_FILE}): "
                          f"run `dvc repro` (the figures need it)")


def load_final_model(run_dir: Path):
    """A run's model at the end of its budget, in float64 on the CPU."""
    config = read_run_config(run_dir)
    return model_from_checkpoint(config, load_checkpoint(final_checkpoint(run_dir))).double()
