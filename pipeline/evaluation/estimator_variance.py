"""Measure the variance of SGVB estimators A and B on the trained Figure 2 AEVB models (the
claim of Section 2.3 that B, eq. 7, has lower variance than A, eq. 6), for the report.

Writes ``runs/estimator_variance.csv``: one row per (dataset, Nz, estimator) with the value and
gradient variances of :mod:`vae_core.estimator_variance`, measured on the final checkpoint of each
``runs/fig2/<dataset>_nz<Nz>_aevb`` run, on the first ``value_points`` training points (value) and
the first ``gradient_points`` (one minibatch, M = 100 by default; gradient), both estimators on
the same model, the same data and draws of eps from the same seed. Settings in params.yaml:
``evaluation.estimator_variance`` (seed, gradient_points) and the profile's
``profiles.<profile>.estimator_variance`` (value_points, value_repeats, gradient_repeats).
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from vae_core.estimator_variance import estimator_gradient_variance, estimator_value_variance

from pipeline.plumbing.devices import resolve_device
from pipeline.plumbing.files import write_atomically
from pipeline.plumbing.params import ParamsError, lookup, require_positive_int
from pipeline.runs.directory import (final_checkpoint, load_checkpoint, load_run_data, model_from_checkpoint, read_run_config,
                            run_directories, seed_directories)

COLUMNS = ["run", "dataset", "nz", "hidden_units", "samples_seen", "estimator", "value_mean", "value_variance",
           "gradient_variance", "gradient_variance_encoder", "gradient_variance_decoder", "gradient_norm",
           "value_points", "gradient_points", "value_repeats", "gradient_repeats", "wall_seconds"]


def settings_from_params(params: dict) -> dict:
    common = lookup(params, "evaluation.estimator_variance")
    budget = lookup(params, f"profiles.{params['profile']}.estimator_variance")
    settings = {key: require_positive_int(common.get(key), f"evaluation.estimator_variance.{key}")
                for key in ("gradient_points", "seed")}
    for key in ("value_points", "value_repeats", "gradient_repeats"):
        settings[key] = require_positive_int(budget.get(key), f"profiles.{params['profile']}.estimator_variance.{key}")
    if settings["value_repeats"] < 2 or settings["gradient_repeats"] < 2:
        raise ParamsError("estimator_variance value_repeats and gradient_repeats must be at least 2 (a variance)")
    return settings


def measure_estimator_variance(runs_root: Path, prepared_dir: Path, settings: dict, device: str = "auto",
                               out: Path | None = None) -> pd.DataFrame:
    device = resolve_device(device)
    rows = []
    for run_dir in run_directories(runs_root, "fig2"):
        config = read_run_config(run_dir)
        # the first seed of each AEVB configuration (docs/protocol.md, section 10): a property of
        # the estimators on a trained model, measured on one model per configuration
        if config.algorithm != "aevb" or seed_directories(run_dir.parent)[0] != run_dir:
            continue
        checkpoint = final_checkpoint(run_dir)
        state = load_checkpoint(checkpoint, device)
        model = model_from_checkpoint(config, state, device)
        data = load_run_data(config, prepared_dir, device)
        for estimator in ("A", "B"):
            start = time.perf_counter()
            torch.manual_seed(settings["seed"])
            values = estimator_value_variance(model, data.train[: settings["value_points"]], estimator,
                                              settings["value_repeats"])
            gradients = estimator_gradient_variance(model, data.train[: settings["gradient_points"]], estimator,
                                                    settings["gradient_repeats"])
            rows.append({"run": run_dir.parent.name, "seed": config.seed, "dataset": config.dataset, "nz": config.z_dim,
                         "hidden_units": config.hidden_units, "samples_seen": int(state["samples_seen"]),
                         "estimator": estimator, **values, **gradients,
                         "value_points": min(settings["value_points"], data.train.shape[0]),
                         "gradient_points": min(settings["gradient_points"], data.train.shape[0]),
                         "value_repeats": settings["value_repeats"], "gradient_repeats": settings["gradient_repeats"],
                         "wall_seconds": round(time.perf_counter() - start, 3)})
    if not rows:
        raise FileNotFoundError(f"no trained AEVB runs under {Path(runs_root) / 'fig2'}: run `dvc repro` first")
    frame = pd.DataFrame(rows, columns=COLUMNS).sort_values(["dataset", "nz", "estimator"], ignore_index=True)
    if out is not None:
        write_atomically(Path(out), lambda path: frame.to_csv(path, index=False))
    return frame
