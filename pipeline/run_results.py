"""Read the run directories (DESIGN.md "File contracts") into tidy pandas tables for figures,
claims, metrics and the report.

Every table carries the run's identity from its ``config.json`` — experiment, dataset, algorithm,
Nz, hidden units, Ntrain — so a figure selects panels by those columns, never by parsing paths.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

IDENTITY = ["run", "experiment", "dataset", "algorithm", "nz", "hidden_units", "ntrain"]


class MissingRunError(FileNotFoundError):
    """A figure or report needs a run directory that has not been trained."""


def run_identity(run_dir: Path) -> dict:
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise MissingRunError(f"{config_path} not found: train this run first (`dvc repro`)")
    config = json.loads(config_path.read_text())
    return {
        "run": run_dir.name,
        "experiment": config["experiment"],
        "dataset": config["dataset"],
        "algorithm": config["algorithm"],
        "nz": int(config["z_dim"]),
        "hidden_units": int(config["hidden_units"]),
        # None = the whole training split; the report names MNIST's full split 50,000 as the paper does
        "ntrain": int(config["ntrain"]) if config.get("ntrain") is not None else None,
    }


def run_directories(runs_root: Path, experiment: str) -> list[Path]:
    root = Path(runs_root) / experiment
    return sorted(p for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []


def load_curves(runs_root: Path, experiment: str) -> pd.DataFrame:
    """Every ``curve.csv`` of an experiment, stacked, with the run identity on each row."""
    frames = []
    for run_dir in run_directories(runs_root, experiment):
        if not (run_dir / "curve.csv").is_file():
            raise MissingRunError(f"{run_dir / 'curve.csv'} not found: the run did not finish (`dvc repro`)")
        frame = pd.read_csv(run_dir / "curve.csv")
        frames.append(frame.assign(**run_identity(run_dir)))
    if not frames:
        raise MissingRunError(f"no trained runs under {Path(runs_root) / experiment}: run `dvc repro` first")
    return pd.concat(frames, ignore_index=True)


def load_finals(runs_root: Path, experiment: str) -> pd.DataFrame:
    """One row per run: its identity and the contents of ``final.json`` (wall times, throughput)."""
    rows = []
    for run_dir in run_directories(runs_root, experiment):
        final_path = run_dir / "final.json"
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
        path = run_dir / "marginal_likelihood.csv"
        if not path.is_file():
            raise MissingRunError(f"{path} not found: run `vaebench evaluate marginal-likelihood --run {run_dir}`")
        frame = pd.read_csv(path).drop(columns=["run", "algorithm", "ntrain"], errors="ignore")
        frames.append(frame.assign(**run_identity(run_dir)))
    if not frames:
        raise MissingRunError(f"no trained runs under {Path(runs_root) / experiment}: run `dvc repro` first")
    return pd.concat(frames, ignore_index=True)


def final_checkpoint(run_dir: Path) -> Path:
    """The checkpoint at the end of a run's budget (the newest one)."""
    paths = sorted((Path(run_dir) / "checkpoints").glob("samples_*.pt"))
    if not paths:
        raise MissingRunError(f"{Path(run_dir) / 'checkpoints'} holds no checkpoints: train the run first")
    return paths[-1]
