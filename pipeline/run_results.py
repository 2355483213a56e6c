"""Read the run directories (:mod:`pipeline.run_directory`) into tidy pandas tables for figures,
claims, metrics and the report.

Every table carries the run's identity from its ``config.json`` — experiment, dataset, algorithm,
Nz, hidden units, Ntrain — so a figure selects panels by those columns, never by parsing paths.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .run_directory import (CURVE_FILE, FINAL_FILE, MissingRunError, marginal_likelihood_path, run_directories,
                            run_identity)


def load_curves(runs_root: Path, experiment: str) -> pd.DataFrame:
    """Every ``curve.csv`` of an experiment, stacked, with the run identity on each row."""
    frames = []
    for run_dir in run_directories(runs_root, experiment):
        if not (run_dir / CURVE_FILE).is_file():
            raise MissingRunError(f"{run_dir / CURVE_FILE} not found: the run did not finish (`dvc repro`)")
        frame = pd.read_csv(run_dir / CURVE_FILE)
        frames.append(frame.assign(**run_identity(run_dir)))
    if not frames:
        raise MissingRunError(f"no trained runs under {Path(runs_root) / experiment}: run `dvc repro` first")
    return pd.concat(frames, ignore_index=True)


def load_finals(runs_root: Path, experiment: str) -> pd.DataFrame:
    """One row per run: its identity and the contents of ``final.json`` (wall times, throughput)."""
    rows = []
    for run_dir in run_directories(runs_root, experiment):
        final_path = run_dir / FINAL_FILE
        if not final_path.is_file():
            raise MissingRunError(f"{final_path} not found: the run did not finish (`dvc repro`)")
        final = json.loads(final_path.read_text())
        extra = final.pop("final_metrics", {}) or {}
        final.pop("step_size_trial_scores", None)
        rows.append({**run_identity(run_dir), **final, **{f"final_{k}": v for k, v in extra.items()}})
    return pd.DataFrame(rows)


def load_marginal_likelihoods(runs_root: Path, experiment: str = "fig3") -> pd.DataFrame:
    """Every ``marginal_likelihood.csv`` of an experiment (Figure 3's y-axis), with run identity."""
    frames = []
    for run_dir in run_directories(runs_root, experiment):
        path = marginal_likelihood_path(run_dir, runs_root)
        if not path.is_file():
            raise MissingRunError(f"{path} not found: run `vaebench evaluate marginal-likelihood --run {run_dir.parent}`")
        frame = pd.read_csv(path).drop(columns=["run", "algorithm", "ntrain", "seed"], errors="ignore")
        frames.append(frame.assign(**run_identity(run_dir)))
    if not frames:
        raise MissingRunError(f"no trained runs under {Path(runs_root) / experiment}: run `dvc repro` first")
    return pd.concat(frames, ignore_index=True)
