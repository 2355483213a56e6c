"""The ``evaluate`` stage: the marginal likelihood of every checkpoint of a run (Figure 3).

For one run directory (DESIGN.md: ``runs/<experiment>/<run-id>/``) and each of its checkpoints, in
order of samples seen, the decoder is evaluated on the first ``train_points`` training points of
the run's own training set and the first ``test_points`` test points (SPEC.md section 5: the paper
used the first 1,000 of each) by

- ``appendix_d``: the paper's estimator (Appendix D; vae_core.marginal_likelihood), on every
  checkpoint: it is Figure 3's y-axis;
- ``importance_sampling``: log-mean-exp over K samples of log p(x, z) - log q(z|x), the run's
  encoder as proposal (AEVB, wake-sleep) or, for MCEM, which trains no encoder, a Gaussian fitted
  per datapoint to the Appendix D HMC samples (widened by 1.5);
- ``grid``: numerical integration over z, exact up to a measured discretization error, for
  Nz <= 3;

the two cross-checks on the checkpoints ``cross_checks`` selects (``final``: the last one only,
``all``, or ``none``), because they cost more than the estimator they check.

HMC chains of Appendix D start at the encoder's mean for AEVB and wake-sleep; for MCEM (no trained
encoder) at the run's own persistent chain states for training points (they are posterior
samples already) and at a draw from the prior for test points; burn-in adapts the step sizes
either way.

``marginal_likelihood.csv`` (one row per checkpoint x split x estimator; columns
:data:`COLUMNS`): ``value`` is the average log p(x) per datapoint in nats, ``standard_error`` the
estimator's own error of that average (independent Monte Carlo errors add in quadrature; the grid's
deterministic error bound is averaged), ``points`` the datapoints averaged, ``wall_seconds`` the
estimator's time, ``diagnostic``/``diagnostic_value`` one health number per estimator (Appendix D:
HMC acceptance rate; importance sampling: mean effective sample size; grid: largest error bound).

The file is rewritten atomically after every checkpoint. Every row carries a fingerprint of the
settings, of the checkpoint file and of the estimators' source code; a re-run keeps the rows whose fingerprint still matches and
computes only the rest, so an interrupted evaluation resumes and an unchanged one costs nothing.
Random numbers are seeded per (seed, checkpoint, split): the same settings give the same numbers.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

import vae_core

from vae_core import ModelConfig, VariationalAutoEncoder
from vae_core.marginal_likelihood import (
    MarginalLikelihoodEstimate,
    appendix_d_estimator,
    gaussian_proposal_from_samples,
    grid_estimator,
    importance_sampling_estimator,
)

from .devices import resolve_device
from .files import write_atomically
from .params import ParamsError, active_profile, lookup, require_choice, require_positive_int
from .run_config import RunConfig, dataset_spec
from .train import load_run_data

COLUMNS = ["run", "algorithm", "ntrain", "samples_seen", "split", "estimator", "value", "standard_error",
           "points", "wall_seconds", "diagnostic", "diagnostic_value", "fingerprint"]
CROSS_CHECKS = ("final", "all", "none")
ESTIMATORS = ("appendix_d", "importance_sampling", "grid")


class EvaluationError(RuntimeError):
    """A run directory that cannot be evaluated (no config, no checkpoints, wrong model)."""


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

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def settings_from_params(params: dict[str, Any], experiment: str = "fig3") -> MarginalLikelihoodSettings:
    """The estimator settings (``evaluation.marginal_likelihood``) and this profile's point counts
    (``profiles.<profile>.<experiment>.marginal_likelihood``, which may also set its own
    ``importance_samples``), checked."""
    common = lookup(params, "evaluation.marginal_likelihood")
    profile = active_profile(params)
    budget = profile.get(experiment, {}).get("marginal_likelihood")
    prefix = f"profiles.{params['profile']}.{experiment}.marginal_likelihood"
    if not isinstance(budget, dict):
        raise ParamsError(f"params.yaml has no {prefix} (train_points, test_points, cross_checks)")
    seed = common.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ParamsError(f"evaluation.marginal_likelihood.seed must be an integer, got {seed!r}")
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
    )
    if settings.hmc_samples < 8:
        raise ParamsError("evaluation.marginal_likelihood.hmc_samples must be at least 8 (half fit q(z), half estimate)")
    return settings


def read_run_config(run_dir: Path) -> RunConfig:
    """The :class:`RunConfig` a run was trained with, from its ``config.json``."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise EvaluationError(f"{path} not found: {run_dir} is not a trained run directory (run `vaebench train` first)")
    stored = json.loads(path.read_text())
    names = {f.name for f in fields(RunConfig)}
    config = RunConfig(**{k: v for k, v in stored.items() if k in names})
    return replace(config, step_size_grid=tuple(config.step_size_grid))


def checkpoints_of(run_dir: Path) -> list[Path]:
    paths = sorted((run_dir / "checkpoints").glob("samples_*.pt"))
    if not paths:
        raise EvaluationError(f"{run_dir / 'checkpoints'} holds no checkpoints: train the run first")
    return paths


def model_from_checkpoint(config: RunConfig, state: dict, device: torch.device) -> VariationalAutoEncoder:
    spec = dataset_spec(config.dataset)
    model = VariationalAutoEncoder(
        ModelConfig(spec.x_dim, config.z_dim, config.hidden_units, spec.decoder, config.init_std)).to(device)
    model.load_state_dict(state["algorithm"]["model"])
    model.eval()
    return model


def estimator_source_fingerprint() -> str:
    """sha256 over the estimators' source (vae_core/marginal_likelihood/, the HMC and its hand-derived
    target log p(x, z) with the activation it uses, the model and this module, which chooses how
    chains start), so rows computed by other code are recomputed, never reused."""
    root = Path(vae_core.__file__).parent
    digest = hashlib.sha256()
    for path in sorted([*(root / "marginal_likelihood").glob("*.py"), root / "hmc.py", root / "hand_gradients.py",
                        root / "activations.py", root / "model.py", root / "networks.py", Path(__file__)], key=str):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def estimate_split(model, x: torch.Tensor, algorithm: str, settings: MarginalLikelihoodSettings,
                   cross_check: bool, chain_states: torch.Tensor | None) -> list[tuple[MarginalLikelihoodEstimate, float]]:
    """The sampling estimates of one split of one checkpoint (Appendix D, and with ``cross_check``
    importance sampling), each with its wall time in seconds. The grid, which is deterministic and
    whose cost is mostly a pass of the decoder over nodes shared by all datapoints, is computed
    for all splits at once by :func:`grid_by_split`."""
    results = []
    start = time.perf_counter()
    z_dim = model.config.z_dim
    if z_dim <= 3:
        # chains start by resampling a shared grid by p(x, z) (appendix_d.prior_resampled_start),
        # for every algorithm: on the default profile's Figure 3 models both the encoder mean
        # (AEVB, Ntrain 1,000, test: -0.8 nat on average, -56 at worst) and MCEM's own training
        # chains (Ntrain 50,000, train: -3.4 nats) start some chains in minor posterior modes
        # that 4-step HMC never leaves; the grid start agrees with the grid to +0.12 nat.
        init = {"init": "prior"}
    elif algorithm == "mcem":
        init = {"init": "prior"}
        if chain_states is not None:  # the run's own posterior chains for these training points
            init = {"init": "prior", "z_init": chain_states}
    else:
        init = {"init": "encoder"}
    appendix_d = appendix_d_estimator(model, x, n_samples=settings.hmc_samples, n_leapfrog=settings.leapfrog_steps,
                                      burn_in=settings.burn_in, **init)
    results.append((appendix_d, time.perf_counter() - start))
    if not cross_check:
        return results
    start = time.perf_counter()
    proposal = None
    if algorithm == "mcem":  # no trained encoder: a Gaussian around the HMC samples
        proposal = gaussian_proposal_from_samples(appendix_d.details["samples"])
    estimate = importance_sampling_estimator(model, x, n_samples=settings.importance_samples, proposal=proposal)
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


def evaluate_run(run_dir: str | Path, prepared_dir: str | Path, settings: MarginalLikelihoodSettings,
                 device: str = "auto", progress: bool = True) -> pd.DataFrame:
    """Write ``run_dir/marginal_likelihood.csv`` for every checkpoint of the run; returns its rows."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    checkpoints = checkpoints_of(run_dir)
    torch_device = resolve_device(device)
    data = load_run_data(replace(config, eval_train_points=settings.train_points,
                                 eval_test_points=settings.test_points), prepared_dir, torch_device)
    splits = {"train": data.eval_train, "test": data.eval_test}
    out = run_dir / "marginal_likelihood.csv"
    existing = read_existing_rows(out)
    done = set(existing["fingerprint"].astype(str))
    estimator_source = estimator_source_fingerprint()
    rows = []
    for index, path in enumerate(tqdm(checkpoints, desc=f"marginal likelihood {run_dir.name}", disable=not progress)):
        cross_check = settings.cross_checks == "all" or (settings.cross_checks == "final" and index == len(checkpoints) - 1)
        fingerprint = hashlib.sha256(
            f"{settings.fingerprint()} {file_sha256(path)} {cross_check} {estimator_source}".encode()).hexdigest()[:16]
        if fingerprint in done:
            rows += existing[existing["fingerprint"].astype(str) == fingerprint].to_dict("records")
            continue
        state = torch.load(path, map_location=torch_device, weights_only=False)
        model = model_from_checkpoint(config, state, torch_device)
        samples_seen = int(state["samples_seen"])
        grids = grid_by_split(model, splits) if cross_check else {}
        for split_index, (split, x) in enumerate(splits.items()):
            torch.manual_seed(settings.seed * 1_000_003 + samples_seen * 2 + split_index)
            chains = None
            if config.algorithm == "mcem" and split == "train":
                chains = state["algorithm"]["chains"][: x.shape[0]].to(torch_device)
            estimates = estimate_split(model, x, config.algorithm, settings, cross_check, chains)
            for estimate, seconds in estimates + ([grids[split]] if split in grids else []):
                diagnostic, diagnostic_value = diagnostic_of(estimate)
                rows.append({
                    "run": run_dir.name, "algorithm": config.algorithm,
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
