"""The ``evaluate`` stage: the marginal likelihood of every checkpoint of a run (Figure 3).

For one run directory (:mod:`pipeline.runs.directory`) and each of its checkpoints, in order of
samples seen, the decoder is evaluated on the first ``train_points`` training points of the run's
own training set and the first ``test_points`` test points (docs/protocol.md, section 5: the
paper used the first 1,000 of each) by

- ``appendix_d``: the paper's estimator (Appendix D; vae_core.marginal_likelihood), on every
  checkpoint: it is Figure 3's y-axis;
- ``importance_sampling``: log-mean-exp over K samples of log p(x, z) - log q(z|x);
- ``grid``: numerical integration over z, exact up to a measured discretization error, for
  Nz <= 3;

the two cross-checks on the checkpoints ``cross_checks`` selects (``final``: the last one only,
``all``, or ``none``), because they cost more than the estimator they check. Where Appendix D's
chains start and which proposal importance sampling uses are the method's choices
(:mod:`vae_core.marginal_likelihood.protocol`).

Each seed of a configuration writes ``runs/marginal_likelihood/<experiment>/<configuration>/seed<N>.csv``
(:func:`evaluate_configuration`; the first seed with the profile's settings, the others with its
``other_seeds`` settings) (one row per checkpoint x split x estimator; columns
:data:`COLUMNS`): ``value`` is the average log p(x) per datapoint in nats, ``standard_error`` the
estimator's own error of that average (independent Monte Carlo errors add in quadrature; the grid's
deterministic error bound is averaged), ``points`` the datapoints averaged, ``wall_seconds`` the
estimator's time, ``diagnostic``/``diagnostic_value`` one health number per estimator (Appendix D:
HMC acceptance rate; importance sampling: mean effective sample size; grid: largest error bound).

The file is rewritten atomically after every checkpoint. Every row carries a fingerprint of the
settings, of the checkpoint file and of the estimators' code (the import closure of
:data:`ESTIMATOR_MODULES`, :mod:`pipeline.plumbing.code_dependencies`): a re-run keeps the rows whose
fingerprint still matches and computes only the rest, so an interrupted evaluation resumes and an
unchanged one costs nothing, while an edit to this module's bookkeeping recomputes nothing.
Random numbers are seeded per (estimator seed, training seed, checkpoint, split): the same
settings give the same numbers, and the seeds of a configuration get independent estimator noise.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from vae_core.marginal_likelihood import (
    MarginalLikelihoodEstimate,
    appendix_d_estimator,
    appendix_d_start,
    grid_estimator,
    importance_sampling_estimator,
    importance_sampling_proposal,
)

from pipeline.plumbing.code_dependencies import source_fingerprint
from pipeline.plumbing.cpu_threads import ThreadGovernor, available_cores
from pipeline.plumbing.devices import resolve_device
from pipeline.plumbing.files import sha256_of, write_atomically
from pipeline.plumbing.processes import run_in_processes
from pipeline.plumbing.params import ParamsError, active_profile, lookup, require_choice, require_positive_int
from pipeline.runs.directory import (CONFIG_FILE, list_checkpoints, load_checkpoint, load_run_data, locked_run_directory,
                            marginal_likelihood_path, model_from_checkpoint, read_run_config, require_finished,
                            seed_directories)

COLUMNS = ["run", "algorithm", "ntrain", "samples_seen", "split", "estimator", "value", "standard_error",
           "points", "wall_seconds", "diagnostic", "diagnostic_value", "fingerprint"]
CROSS_CHECKS = ("final", "all", "none")


class EstimateError(ValueError):
    """An estimator gave no usable number for a checkpoint."""

# The estimators' code: the rows' fingerprint covers the import closure of this package.
ESTIMATOR_MODULES = ("vae_core.marginal_likelihood",)


@dataclass(frozen=True)
class MarginalLikelihoodSettings:
    """Everything that determines the numbers of ``marginal_likelihood.csv`` (params.yaml)."""

    train_points: int
    test_points: int
    cross_checks: str  # final | all | none
    hmc_samples: int  # Appendix D: kept HMC samples per datapoint, both halves (paper: 50)
    leapfrog_steps: int  # Appendix D: leapfrog steps per HMC transition (paper: 4)
    burn_in: int  # Appendix D: step-size-adapting transitions before the kept ones
    importance_samples: int  # K of the importance-sampling cross-check
    seed: int
    splits: tuple[str, ...] = ("train", "test")  # which evaluation points: the run's training and/or test set
    cross_check_splits: tuple[str, ...] = ("train", "test")  # where the cross-checks run
    noise: str = "per training seed"  # the estimators' random numbers: seeded per training seed, checkpoint, split

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


SPLITS = ("train", "test")


def other_seed_settings(params: dict[str, Any], settings: MarginalLikelihoodSettings,
                        experiment: str = "fig3") -> MarginalLikelihoodSettings:
    """The settings for the seeds after a configuration's first: ``other_seeds`` of the profile's
    ``marginal_likelihood`` may narrow the splits and the cross-checks (docs/protocol.md, section
    10: the claims use the test points, and the cross-checks check the estimator, not the seed)."""
    prefix = f"profiles.{params['profile']}.{experiment}.marginal_likelihood.other_seeds"
    other = active_profile(params)[experiment]["marginal_likelihood"].get("other_seeds", {})
    if not isinstance(other, dict):
        raise ParamsError(f"{prefix} must be a mapping (splits, cross_checks), got {other!r}")
    splits = other.get("splits", list(settings.splits))
    if not isinstance(splits, list) or not splits or any(s not in SPLITS for s in splits):
        raise ParamsError(f"{prefix}.splits must be a non-empty list of {', '.join(SPLITS)}, got {splits!r}")
    return replace(settings, splits=tuple(s for s in SPLITS if s in splits),
                   cross_checks=require_choice(other.get("cross_checks", settings.cross_checks),
                                               f"{prefix}.cross_checks", CROSS_CHECKS))


def settings_from_params(params: dict[str, Any], experiment: str = "fig3") -> MarginalLikelihoodSettings:
    """The estimator settings (``evaluation.marginal_likelihood``) and this profile's point counts
    (``profiles.<profile>.<experiment>.marginal_likelihood``, which may also set its own
    ``importance_samples``), checked: the settings of a configuration's first seed."""
    common = lookup(params, "evaluation.marginal_likelihood")
    profile = active_profile(params)
    budget = profile.get(experiment, {}).get("marginal_likelihood")
    prefix = f"profiles.{params['profile']}.{experiment}.marginal_likelihood"
    if not isinstance(budget, dict):
        raise ParamsError(f"params.yaml has no {prefix} (train_points, test_points, cross_checks)")
    seed = common.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ParamsError(f"evaluation.marginal_likelihood.seed must be an integer, got {seed!r}")
    cross_check_splits = budget.get("cross_check_splits", list(SPLITS))
    if not isinstance(cross_check_splits, list) or any(s not in SPLITS for s in cross_check_splits):
        raise ParamsError(f"{prefix}.cross_check_splits must be a list of {', '.join(SPLITS)}, got {cross_check_splits!r}")
    settings = MarginalLikelihoodSettings(
        train_points=require_positive_int(budget.get("train_points"), f"{prefix}.train_points"),
        test_points=require_positive_int(budget.get("test_points"), f"{prefix}.test_points"),
        cross_checks=require_choice(budget.get("cross_checks"), f"{prefix}.cross_checks", CROSS_CHECKS),
        hmc_samples=require_positive_int(common.get("hmc_samples"), "evaluation.marginal_likelihood.hmc_samples"),
        leapfrog_steps=require_positive_int(common.get("leapfrog_steps"), "evaluation.marginal_likelihood.leapfrog_steps"),
        burn_in=require_positive_int(common.get("burn_in"), "evaluation.marginal_likelihood.burn_in"),
        importance_samples=require_positive_int(
            budget.get("importance_samples", common.get("importance_samples")),
            f"{prefix}.importance_samples" if "importance_samples" in budget
            else "evaluation.marginal_likelihood.importance_samples"),
        seed=seed,
        cross_check_splits=tuple(s for s in SPLITS if s in cross_check_splits),
    )
    if settings.hmc_samples < 8:
        raise ParamsError("evaluation.marginal_likelihood.hmc_samples must be at least 8 (half fit q(z), half estimate)")
    return settings


def estimate_split(model, x: torch.Tensor, trained_encoder: bool, settings: MarginalLikelihoodSettings,
                   cross_check: bool, chain_states: torch.Tensor | None) -> list[tuple[MarginalLikelihoodEstimate, float]]:
    """The sampling estimates of one split of one checkpoint (Appendix D, and with ``cross_check``
    importance sampling), each with its wall time in seconds. The grid, which is deterministic and
    whose cost is mostly a pass of the decoder over nodes shared by all datapoints, is computed
    for all splits at once by :func:`grid_by_split`."""
    start = time.perf_counter()
    appendix_d = appendix_d_estimator(model, x, n_samples=settings.hmc_samples, n_leapfrog=settings.leapfrog_steps,
                                      burn_in=settings.burn_in,
                                      **appendix_d_start(model.config.z_dim, trained_encoder, chain_states))
    results = [(appendix_d, time.perf_counter() - start)]
    if cross_check:
        start = time.perf_counter()
        estimate = importance_sampling_estimator(model, x, n_samples=settings.importance_samples,
                                                 proposal=importance_sampling_proposal(model, x, trained_encoder, appendix_d))
        results.append((estimate, time.perf_counter() - start))
    return results


def grid_by_split(model, splits: dict[str, torch.Tensor]) -> dict[str, tuple[MarginalLikelihoodEstimate, float]]:
    """The grid (Nz <= 3) on every split's points in one call, then split again; each split's
    wall time is its share (by points) of the call's. Every datapoint's grid value is its own
    (the boxes and refinements are per datapoint), so this equals one call per split, with the
    decoder's pass over the shared nodes done once instead of once per split."""
    if model.config.z_dim > 3:
        return {}
    start = time.perf_counter()
    estimate = grid_estimator(model, torch.cat(list(splits.values())))
    seconds = time.perf_counter() - start
    total = sum(x.shape[0] for x in splits.values())
    results, first = {}, 0
    for split, x in splits.items():
        results[split] = (estimate.rows(slice(first, first + x.shape[0])), seconds * x.shape[0] / total)
        first += x.shape[0]
    return results


def estimator_name(estimate: MarginalLikelihoodEstimate) -> str:
    """The ``estimator`` column: appendix_d, importance_sampling (K is in the settings) or grid."""
    return "importance_sampling" if estimate.estimator.startswith("importance_sampling") else estimate.estimator


def diagnostic_of(estimate: MarginalLikelihoodEstimate) -> tuple[str, float]:
    details = estimate.details
    if estimator_name(estimate) == "appendix_d":
        return "hmc_acceptance_rate", float(details["accept_rate"].float().mean())
    if estimator_name(estimate) == "importance_sampling" and "effective_sample_size" in details:
        return "mean_effective_sample_size", float(details["effective_sample_size"].double().mean())
    if estimate.estimator == "grid":
        return "max_error_bound", float(estimate.standard_error.double().max())
    return "", math.nan


def read_existing_rows(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return pd.DataFrame(columns=COLUMNS)  # unreadable: recomputed, never trusted
    return frame if list(frame.columns) == COLUMNS else pd.DataFrame(columns=COLUMNS)


def evaluate_configuration(configuration_dir: str | Path, out_dir: str | Path, prepared_dir: str | Path,
                           settings: MarginalLikelihoodSettings, other_seeds: MarginalLikelihoodSettings,
                           device: str = "auto", progress: bool = True, parallel: bool = True) -> pd.DataFrame:
    """Every seed of a configuration (``<configuration_dir>/seed<N>``): the first seed with
    ``settings``, the others with ``other_seeds``, each into ``<out_dir>/seed<N>.csv``; returns
    all rows with a ``seed`` column. The seeds run side by side, one process each (``parallel``):
    the other seeds' light settings finish while the first seed's cross-checks run. ``configuration_dir`` may also be one run directory (it
    holds a config.json): that run alone, with ``settings``, into ``<out_dir>/<its name>.csv``."""
    configuration_dir = Path(configuration_dir)
    runs = [configuration_dir] if (configuration_dir / CONFIG_FILE).is_file() else seed_directories(configuration_dir)
    if not runs:  # neither a run nor a configuration of runs: the run directory's own clear error
        read_run_config(configuration_dir)
    calls = [((run_dir, prepared_dir, settings if index == 0 else other_seeds, device, progress and len(runs) == 1,
               Path(out_dir) / f"{run_dir.name}.csv"), str(run_dir)) for index, run_dir in enumerate(runs)]
    if parallel and len(calls) > 1:  # each seed in its own process, as training does (pipeline.plumbing.processes)
        frames = run_in_processes(evaluate_run, calls, progress)
    else:
        frames = [evaluate_run(*arguments) for arguments, _ in calls]
    return pd.concat([frame.assign(seed=read_run_config(run_dir).seed) for frame, run_dir in zip(frames, runs)],
                     ignore_index=True)


def evaluate_run(run_dir: str | Path, prepared_dir: str | Path, settings: MarginalLikelihoodSettings,
                 device: str = "auto", progress: bool = True, out: str | Path | None = None) -> pd.DataFrame:
    """Write ``out`` (a CSV of :data:`COLUMNS`; by default the run's
    :func:`~pipeline.runs.directory.marginal_likelihood_path`) for every checkpoint of the run;
    returns its rows."""
    run_dir = Path(run_dir)
    out = out if out is not None else marginal_likelihood_path(run_dir)
    # The estimators' numbers on Figure 3's model do not depend on the thread count (measured, and
    # tests/test_evaluate.py): the count follows the cores other processes leave free, so the first
    # seed's cross-checks take both cores once the other seeds' workers have finished.
    governor = ThreadGovernor(max_threads=available_cores(), adaptive=True)
    config = read_run_config(run_dir)
    with locked_run_directory(run_dir):  # a seed that another process is training: refused, naming it
        require_finished(run_dir)
        return _evaluate_checkpoints(run_dir, Path(out), config, prepared_dir, settings, resolve_device(device),
                                     progress, governor)


def _evaluate_checkpoints(run_dir: Path, out: Path, config, prepared_dir, settings: MarginalLikelihoodSettings,
                          torch_device: torch.device, progress: bool, governor: ThreadGovernor) -> pd.DataFrame:
    checkpoints = list_checkpoints(run_dir)
    data = load_run_data(config, prepared_dir, torch_device, settings.train_points, settings.test_points)
    splits = {name: x for name, x in (("train", data.eval_train), ("test", data.eval_test)) if name in settings.splits}
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = read_existing_rows(out)
    done = set(existing["fingerprint"].astype(str))
    estimator_source = source_fingerprint(ESTIMATOR_MODULES)[:16]
    rows = []
    for index, path in enumerate(tqdm(checkpoints, desc=f"marginal likelihood {run_dir.parent.name}/{run_dir.name}", disable=not progress)):
        governor.update()
        cross_check = settings.cross_checks == "all" or (settings.cross_checks == "final" and index == len(checkpoints) - 1)
        fingerprint = hashlib.sha256(
            f"{settings.fingerprint()} {sha256_of(path)} {cross_check} {estimator_source}".encode()).hexdigest()[:16]
        if fingerprint in done:
            rows += existing[existing["fingerprint"].astype(str) == fingerprint].to_dict("records")
            continue
        state = load_checkpoint(path, torch_device)
        model = model_from_checkpoint(config, state, torch_device)
        samples_seen = int(state["samples_seen"])
        checked = {name: x for name, x in splits.items() if name in settings.cross_check_splits}
        grids = grid_by_split(model, checked) if cross_check and checked else {}
        for split, x in splits.items():
            # each training seed its own estimator noise (independent errors across seeds)
            torch.manual_seed(settings.seed * 1_000_003 + config.seed * 7_919_009 + samples_seen * 2
                              + SPLITS.index(split))
            chains = None
            if not config.trains_encoder and split == "train":  # MCEM's own posterior chains
                chains = state["algorithm"]["chains"][: x.shape[0]].to(torch_device)
            estimates = estimate_split(model, x, config.trains_encoder, settings,
                                       cross_check and split in settings.cross_check_splits, chains)
            for estimate, seconds in estimates + ([grids[split]] if split in grids else []):
                if not math.isfinite(estimate.mean()):
                    raise EstimateError(
                        f"{estimate.estimator} gave a non-finite log p(x) ({estimate.mean()}) on the {split} points of "
                        f"{path}: the checkpoint's model has diverged or is damaged; no row was written for it "
                        f"(the rows of earlier checkpoints are kept in {out})")
                diagnostic, diagnostic_value = diagnostic_of(estimate)
                rows.append({
                    "run": run_dir.parent.name, "algorithm": config.algorithm,
                    "ntrain": data.train.shape[0], "samples_seen": samples_seen, "split": split,
                    "estimator": estimator_name(estimate), "value": estimate.mean(),
                    "standard_error": estimate.mean_standard_error(), "points": len(estimate),
                    "wall_seconds": round(seconds, 3), "diagnostic": diagnostic,
                    "diagnostic_value": diagnostic_value, "fingerprint": fingerprint,
                })
        frame = pd.DataFrame(rows, columns=COLUMNS)
        write_atomically(out, lambda tmp: frame.to_csv(tmp, index=False))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    write_atomically(out, lambda tmp: frame.to_csv(tmp, index=False))
    return frame
