"""A log-likelihood for every Figure 2 model, validated: the stage ``log_likelihood``.

Per Figure 2 configuration, on its first seed's final checkpoint, on the first ``test_points``
test points:

- ``elbo``: the lower bound (estimator B, eq. 7) averaged over ``elbo_samples`` draws of eps per
  point, the quantity Figure 2 plots;
- ``importance_weighted``: the K-sample importance-weighted bound with the encoder as proposal
  (K = ``importance_samples``; Burda et al. 2015), a tighter lower bound;
- ``ais``: annealed importance sampling from the prior with HMC transitions
  (:mod:`vae_core.marginal_likelihood.ais`), the estimate of log p(x);
- ``bdmc_lower`` / ``bdmc_upper``: forward and reverse AIS with the same schedule on
  ``simulated_points`` points drawn from the model itself (the BDMC sandwich): their gap bounds
  the AIS estimate's error on data like the model's own.

So "the bound's gap to log p(x)" of a panel is ``ais - elbo``. On each Figure 3 configuration (Nz
= 3, where the exact grid runs), AIS and the grid on the first ``grid_points`` test points validate
AIS against the exact value. Writes ``runs/log_likelihood.csv``; params.yaml
``evaluation.log_likelihood`` (seed, leapfrog steps, step size, acceptance target, ELBO samples) and
``profiles.<profile>.log_likelihood`` (points, chains, steps, K).
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from vae_core import sgvb_estimator_b
from vae_core.marginal_likelihood import grid_estimator, importance_sampling_estimator
from vae_core.marginal_likelihood.ais import ais_estimator, bdmc_sandwich, simulate_from_model

from pipeline.plumbing.cpu_threads import ThreadGovernor
from pipeline.plumbing.devices import resolve_device
from pipeline.plumbing.files import write_atomically
from pipeline.plumbing.params import ParamsError, lookup, require_positive_int
from pipeline.runs.directory import (final_checkpoint, load_checkpoint, load_run_data, model_from_checkpoint,
                                     read_run_config, run_directories, seed_directories)

COLUMNS = ["experiment", "run", "dataset", "nz", "algorithm", "seed", "samples_seen", "data", "estimator", "value",
           "standard_error", "points", "chains", "steps", "wall_seconds"]
COMMON_KEYS = ("seed", "leapfrog_steps", "elbo_samples")
BUDGET_KEYS = ("test_points", "chains", "steps", "importance_samples", "simulated_points", "grid_points")


def settings_from_params(params: dict) -> dict:
    common = lookup(params, "evaluation.log_likelihood")
    budget = lookup(params, f"profiles.{params['profile']}.log_likelihood")
    settings = {key: require_positive_int(common.get(key), f"evaluation.log_likelihood.{key}") for key in COMMON_KEYS}
    for key in ("step_size", "target_accept"):
        value = common.get(key)
        if not isinstance(value, (int, float)) or not 0 < float(value) < (1 if key == "target_accept" else 10):
            raise ParamsError(f"evaluation.log_likelihood.{key} must be a number in (0, "
                              f"{1 if key == 'target_accept' else 10}), got {value!r}")
        settings[key] = float(value)
    for key in BUDGET_KEYS:
        settings[key] = require_positive_int(budget.get(key), f"profiles.{params['profile']}.log_likelihood.{key}")
    return settings


def _row(config, run: str, state, data: str, estimator: str, value: float, standard_error: float, points: int,
         seconds: float, chains: int | None = None, steps: int | None = None) -> dict:
    return {"experiment": config.experiment, "run": run, "dataset": config.dataset, "nz": config.z_dim,
            "algorithm": config.algorithm, "seed": config.seed, "samples_seen": int(state["samples_seen"]),
            "data": data, "estimator": estimator, "value": value, "standard_error": standard_error, "points": points,
            "chains": chains, "steps": steps, "wall_seconds": round(seconds, 3)}


def _ais_kwargs(settings: dict) -> dict:
    return {"n_chains": settings["chains"], "n_steps": settings["steps"], "n_leapfrog": settings["leapfrog_steps"],
            "step_size": settings["step_size"], "target_accept": settings["target_accept"]}


def figure_2_rows(model, config, run: str, state, test: torch.Tensor, settings: dict) -> list[dict]:
    """ELBO, importance-weighted bound and AIS on the test points; the BDMC sandwich on simulated data."""
    rows, chains, steps = [], settings["chains"], settings["steps"]
    start = time.perf_counter()
    with torch.no_grad():  # (draws, points): the noise of the mean over draws, per point, then over points
        draws = torch.stack([sgvb_estimator_b(model, test) for _ in range(settings["elbo_samples"])]).double()
    noise = (draws.var(0) / draws.shape[0]).sum().sqrt() / draws.shape[1]
    rows.append(_row(config, run, state, "test", "elbo", float(draws.mean()), float(noise), len(test),
                     time.perf_counter() - start))
    start = time.perf_counter()
    weighted = importance_sampling_estimator(model, test, n_samples=settings["importance_samples"])
    rows.append(_row(config, run, state, "test", "importance_weighted", weighted.mean(), weighted.mean_standard_error(),
                     len(test), time.perf_counter() - start, chains=settings["importance_samples"]))
    start = time.perf_counter()
    ais = ais_estimator(model, test, **_ais_kwargs(settings))
    rows.append(_row(config, run, state, "test", "ais", ais.mean(), ais.mean_standard_error(), len(test),
                     time.perf_counter() - start, chains, steps))
    start = time.perf_counter()
    x, z = simulate_from_model(model, settings["simulated_points"])
    lower, upper = bdmc_sandwich(model, x, z, **_ais_kwargs(settings))
    seconds = time.perf_counter() - start
    for name, estimate in (("bdmc_lower", lower), ("bdmc_upper", upper)):
        rows.append(_row(config, run, state, "simulated", name, estimate.mean(), estimate.mean_standard_error(), len(x),
                         seconds / 2, chains, steps))
    return rows


def figure_3_rows(model, config, run: str, state, test: torch.Tensor, settings: dict) -> list[dict]:
    """AIS against the exact grid on the same test points (Nz = 3)."""
    rows = []
    for name, estimate in (("grid", lambda: grid_estimator(model, test)),
                           ("ais", lambda: ais_estimator(model, test, **_ais_kwargs(settings)))):
        start = time.perf_counter()
        result = estimate()
        rows.append(_row(config, run, state, "test", name, result.mean(), result.mean_standard_error(), len(test),
                         time.perf_counter() - start, *((settings["chains"], settings["steps"]) if name == "ais" else ())))
    return rows


def measure_log_likelihoods(runs_root: Path, prepared_dir: Path, settings: dict, device: str = "auto",
                            out: Path | None = None, echo=print) -> pd.DataFrame:
    """Every Figure 2 and Figure 3 configuration's first seed at its final checkpoint (module docstring)."""
    device = resolve_device(device)
    # one thread (VAEBENCH_THREADS overrides): the chains' tensors are small, a second thread beside a
    # busy core mostly waits at barriers, and the estimates then do not depend on the core count
    ThreadGovernor(max_threads=1)
    rows, test_sets = [], {}  # one load per prepared file and binarization, not one per model
    for experiment, points, measure in (("fig2", settings["test_points"], figure_2_rows),
                                        ("fig3", settings["grid_points"], figure_3_rows)):
        for run_dir in run_directories(runs_root, experiment):
            if seed_directories(run_dir.parent)[0] != run_dir:  # the first seed: a property of the estimators
                continue
            config = read_run_config(run_dir)
            state = load_checkpoint(final_checkpoint(run_dir), device)
            model = model_from_checkpoint(config, state, device)
            key = (config.prepared_file, config.binarize, points)
            if key not in test_sets:
                test_sets[key] = load_run_data(config, prepared_dir, device, eval_test_points=points).eval_test[:points]
            test = test_sets[key]
            torch.manual_seed(settings["seed"])
            start = time.perf_counter()
            new = measure(model, config, run_dir.parent.name, state, test, settings)
            rows += new
            echo(f"{experiment}/{run_dir.parent.name}: " + ", ".join(f"{r['estimator']} {r['value']:.2f}" for r in new)
                 + f" ({time.perf_counter() - start:.0f} s)")
    if not rows:
        raise FileNotFoundError(f"no trained Figure 2 or 3 runs under {runs_root}: run `dvc repro` first")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if out is not None:
        write_atomically(Path(out), lambda path: frame.to_csv(path, index=False))
    return frame


__all__ = ["COLUMNS", "figure_2_rows", "figure_3_rows", "measure_log_likelihoods", "settings_from_params"]
