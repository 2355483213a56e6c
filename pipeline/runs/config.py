"""One training run = one configuration, resolved from params.yaml and the active profile.

The resolved configuration is written to the run directory as ``config.json`` and is what a
checkpoint must match to be resumed.
"""
from __future__ import annotations

import fnmatch

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.plumbing.devices import DEVICE_CHOICES
from pipeline.plumbing.params import (
    ParamsError,
    active_profile,
    lookup,
    require_choice,
    require_int,
    require_positive_float,
    require_positive_int,
)

ALGORITHMS = ("aevb", "wake_sleep", "mcem")
SGVB_ESTIMATORS = ("A", "B")
BINARIZATIONS = ("none", "dynamic")


@dataclass(frozen=True)
class DatasetSpec:
    """What the model needs to know about a dataset: its size per datapoint and its likelihood."""

    name: str
    x_dim: int
    decoder: str  # bernoulli for [0, 1] grey levels (MNIST), gaussian for continuous (Frey Face)
    image_shape: tuple[int, int]
    full_train_size: int | None  # Ntrain of the whole train split; subsets exist only where set


DATASETS = {
    "mnist": DatasetSpec("mnist", 784, "bernoulli", (28, 28), 50_000),
    "frey_face": DatasetSpec("frey_face", 560, "gaussian", (28, 20), None),
}


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ParamsError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


@dataclass(frozen=True)
class RunConfig:
    experiment: str
    dataset: str
    algorithm: str
    z_dim: int
    hidden_units: int
    ntrain: int | None  # None = the whole training split
    seed: int
    samples: int  # training budget: number of training samples evaluated
    minibatch_size: int
    samples_per_datapoint: int
    estimator: str
    binarize: str
    step_size: float | None  # None = choose from step_size_grid by a trial
    step_size_grid: tuple[float, ...]
    step_size_trial_samples: int
    warmup_steps: int
    adagrad_eps: float
    weight_prior_std: float
    init_std: float
    eval_points_per_decade: int
    eval_first_samples: int
    eval_train_points: int
    eval_test_points: int
    checkpoint_every: int
    device: str = "auto"
    algorithm_options: dict[str, Any] = field(default_factory=dict)  # MCEM: params.yaml baselines.mcem

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def trains_encoder(self) -> bool:
        """Whether the algorithm trains the recognition model q(z|x) (MCEM trains none)."""
        return self.algorithm != "mcem"

    def fingerprint(self) -> str:
        """sha256 of the configuration, minus the device (a run may resume on another device)."""
        payload = {k: v for k, v in self.to_dict().items() if k != "device"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def prepared_file(self) -> str:
        """The prepared .npz this run trains on (data/prepared, :mod:`pipeline.data.prepared`)."""
        if self.ntrain is None or self.ntrain == dataset_spec(self.dataset).full_train_size:
            return self.dataset
        return f"{self.dataset}_ntrain{self.ntrain}"

    def without_seed(self) -> "RunConfig":
        """The configuration with the seed left out: runs that differ only in it can train stacked."""
        return replace(self, seed=0)

    def default_configuration_dir(self, runs_root: str | Path = "runs") -> Path:
        """``runs/<experiment>/<configuration>``: the folder of this configuration's seeds (each in
        ``seed<N>/``, :func:`pipeline.runs.directory.seed_run_dir`)."""
        name = f"{self.dataset}_nz{self.z_dim}_h{self.hidden_units}_{self.algorithm}"
        if self.ntrain is not None:
            name += f"_ntrain{self.ntrain}"
        return Path(runs_root) / self.experiment / name


MCEM_STEP_SIZE_RULES = ("mean", "authors")


def mcem_options(params: dict[str, Any]) -> dict[str, Any]:
    """Monte Carlo EM's knobs (params.yaml ``baselines.mcem``), checked; keyword arguments of
    :class:`baselines.mcem.MonteCarloEM`."""
    options = lookup(params, "baselines.mcem")
    target = options.get("target_accept")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
        raise ParamsError(f"baselines.mcem.target_accept must be a number in (0, 1), got {target!r}")
    return {
        "n_leapfrog": require_positive_int(options.get("leapfrog_steps"), "baselines.mcem.leapfrog_steps"),
        "updates_per_batch": require_positive_int(options.get("updates_per_batch"), "baselines.mcem.updates_per_batch"),
        "target_accept": float(target),
        "step_size_rule": require_choice(options.get("step_size_rule"), "baselines.mcem.step_size_rule",
                                         MCEM_STEP_SIZE_RULES),
    }


def build_run_config(
    params: dict[str, Any],
    experiment: str,
    dataset: str,
    algorithm: str,
    z_dim: int,
    ntrain: int | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> RunConfig:
    """Resolve one run from params.yaml: the experiment's architecture, the profile's budget."""
    spec = dataset_spec(dataset)
    require_choice(algorithm, "algorithm", ALGORITHMS)
    if ntrain is not None and (spec.full_train_size is None or not 0 < ntrain <= spec.full_train_size):
        raise ParamsError(f"--ntrain {ntrain} is not available for {dataset} (subsets of MNIST's 50,000 only)")
    require_positive_int(z_dim, "nz")
    profile = active_profile(params)
    if experiment not in profile:
        raise ParamsError(
            f"profile {params['profile']!r} has no budgets for experiment {experiment!r} "
            f"(it has: {', '.join(profile)})"
        )
    budgets = profile[experiment]
    per_dataset = budgets.get(dataset)
    if not isinstance(per_dataset, dict):
        raise ParamsError(
            f"profiles.{params['profile']}.{experiment} has no entry for dataset {dataset!r}"
        )
    training = lookup(params, "training")
    optimizer = lookup(params, "optimizer")
    prefix = f"profiles.{params['profile']}.{experiment}"
    # a profile may fix the step size for a dataset (the smoke profile: its 20,000 samples leave
    # no room for a meaningful trial after Adagrad's warm-up); otherwise optimizer.step_size
    step_size_key = f"{prefix}.{dataset}.step_size" if "step_size" in per_dataset else "optimizer.step_size"
    step_size = per_dataset.get("step_size", optimizer.get("step_size", "auto"))
    if step_size != "auto":
        step_size = require_positive_float(step_size, step_size_key)
    grid = tuple(
        require_positive_float(s, "optimizer.step_size_grid[]")
        for s in lookup(params, "optimizer.step_size_grid")
    )
    if step_size == "auto" and not grid:
        raise ParamsError("optimizer.step_size is auto but optimizer.step_size_grid is empty")
    minibatch_size = require_positive_int(lookup(params, "training.minibatch_size"), "training.minibatch_size")
    warmup = lookup(params, "optimizer.warmup_steps")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ParamsError(f"optimizer.warmup_steps must be a non-negative integer, got {warmup!r}")
    trial_key = f"{prefix}.{dataset}.step_size_trial_samples"
    trial = per_dataset.get("step_size_trial_samples", 0)
    if isinstance(trial, dict):  # per algorithm, with a default (docs/fidelity.md: wake-sleep's longer trial)
        unknown = set(trial) - {"default", *ALGORITHMS}
        if unknown:
            raise ParamsError(f"{trial_key} names {sorted(unknown)}: expected `default` and algorithms of "
                              f"{list(ALGORITHMS)}")
        trial_key += f".{algorithm}" if algorithm in trial else ".default"
        trial = trial.get(algorithm, trial.get("default", 0))
    trial = require_int(trial, trial_key)
    if step_size == "auto" and trial <= warmup * minibatch_size:
        raise ParamsError(
            f"{trial_key} = {trial} does not reach past the "
            f"Adagrad warm-up ({warmup} updates x M = {warmup * minibatch_size} samples): the "
            f"trial would compare untrained models. Raise it or lower optimizer.warmup_steps."
        )
    return RunConfig(
        experiment=experiment,
        dataset=dataset,
        algorithm=algorithm,
        z_dim=z_dim,
        hidden_units=require_positive_int(
            lookup(params, f"experiments.{experiment}.{dataset}.hidden_units"),
            f"experiments.{experiment}.{dataset}.hidden_units",
        ),
        ntrain=ntrain,
        seed=require_int(profile_seeds(params)[0] if seed is None else seed, "--seed"),
        samples=require_positive_int(per_dataset.get("samples"), f"{prefix}.{dataset}.samples"),
        minibatch_size=minibatch_size,
        samples_per_datapoint=require_positive_int(
            lookup(params, "training.samples_per_datapoint"), "training.samples_per_datapoint"
        ),
        estimator=require_choice(lookup(params, "training.estimator"), "training.estimator", SGVB_ESTIMATORS),
        binarize=require_choice(lookup(params, "training.binarize"), "training.binarize", BINARIZATIONS),
        step_size=None if step_size == "auto" else step_size,
        step_size_grid=grid,
        step_size_trial_samples=trial,
        warmup_steps=warmup,
        adagrad_eps=require_positive_float(lookup(params, "optimizer.adagrad_eps"), "optimizer.adagrad_eps"),
        weight_prior_std=require_positive_float(
            lookup(params, "optimizer.weight_prior_std"), "optimizer.weight_prior_std"
        ),
        init_std=require_positive_float(lookup(params, "model.init_std"), "model.init_std"),
        eval_points_per_decade=require_positive_int(
            budgets.get("eval_points_per_decade"), f"{prefix}.eval_points_per_decade"
        ),
        eval_first_samples=require_positive_int(
            budgets.get("eval_first_samples"), f"{prefix}.eval_first_samples"
        ),
        eval_train_points=require_positive_int(
            budgets.get("eval_train_points"), f"{prefix}.eval_train_points"
        ),
        eval_test_points=require_positive_int(
            budgets.get("eval_test_points"), f"{prefix}.eval_test_points"
        ),
        checkpoint_every=require_positive_int(
            budgets.get("checkpoint_every"), f"{prefix}.checkpoint_every"
        ),
        device=require_choice(device or training.get("device", "auto"), "training.device", DEVICE_CHOICES),
        algorithm_options=mcem_options(params) if algorithm == "mcem" else {},
    )


def profile_seeds(params: dict[str, Any]) -> list[int]:
    """The active profile's seed list (``profiles.<profile>.seeds.list``), checked: distinct integers."""
    prefix = f"profiles.{params['profile']}.seeds"
    seeds = active_profile(params).get("seeds")
    if not isinstance(seeds, dict) or "list" not in seeds:
        raise ParamsError(f"params.yaml has no {prefix}.list (the seeds each configuration trains with)")
    values = seeds["list"]
    if not isinstance(values, list) or not values:
        raise ParamsError(f"{prefix}.list must be a non-empty list of integers, got {values!r}")
    checked = [require_int(v, f"{prefix}.list[]") for v in values]
    if len(set(checked)) != len(checked):
        raise ParamsError(f"{prefix}.list repeats a seed: {checked}")
    return checked


def configuration_seeds(params: dict[str, Any], experiment: str, run_name: str) -> list[int]:
    """The seeds ``runs/<experiment>/<run_name>`` trains with on the active profile: the whole
    list if ``<experiment>/<run_name>`` matches a pattern of ``seeds.several`` (shell-style, e.g.
    ``fig3/*``), otherwise only its first seed (docs/protocol.md, section 10: which configurations
    get several seeds is a budget choice, stated in params.yaml and in the report)."""
    seeds = profile_seeds(params)
    patterns = active_profile(params)["seeds"].get("several", ["*"])
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ParamsError(f"profiles.{params['profile']}.seeds.several must be a list of patterns, got {patterns!r}")
    name = f"{experiment}/{run_name}"
    return seeds if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns) else seeds[:1]


def seeds_side_by_side(params: dict[str, Any]) -> bool:
    """Whether the seeds of a configuration that cannot train stacked run side by side, one worker
    process each (``profiles.<profile>.seeds.side_by_side``, default true): worth a process start
    each (a few seconds) except on the smoke profile's tiny runs."""
    value = active_profile(params)["seeds"].get("side_by_side", True)
    if not isinstance(value, bool):
        raise ParamsError(f"profiles.{params['profile']}.seeds.side_by_side must be true or false, got {value!r}")
    return value
