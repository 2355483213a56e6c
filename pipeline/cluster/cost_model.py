"""The cluster plan's cost model: what one seed of a stage does, and what that costs at given rates.

Its one job: the work of a training seed (samples, trial samples, evaluated points), of a
marginal-likelihood seed (point evaluations per estimator) and of the estimator_variance stage, on
a profile's budgets; one seed's seconds from that work and per-unit rates; a stage's seconds from
its seeds' (stacked, side by side, one after another); and the constants the model assumes
(docs/speed.md and docs/pipeline.md, "Seeds"). Where the rates come from is :mod:`pipeline.cluster.measured_costs`'s
job; the model's assumptions are stated in :mod:`pipeline.cluster.plan`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.cluster.training_stages import (Configuration, ResolvedConfiguration, Resolutions, configurations,
                                              resolve)
from pipeline.data.sources import FREY_FACE_PKL, MNIST_PKL
from pipeline.evaluation.estimator_variance import settings_from_params as estimator_variance_settings
from pipeline.evaluation.marginal_likelihood import MarginalLikelihoodSettings, other_seed_settings, settings_from_params
from pipeline.plumbing.params import lookup
from pipeline.runs.config import RunConfig
from pipeline.training.schedule import checkpoint_schedule, evaluation_schedule

# The per-task cost of fanning a stage out to a worker: clone the repository, `dvc pull` its
# inputs, start the stage's command, `dvc push` its outputs. Measured: the median of (task wall time
# - the stage's own recorded time) over the 30 tasks of a 2-worker LocalCluster smoke run here
# (tests/test_distribute.py; 5.6-8.6 s, local-folder remote). A remote across a network adds its
# transfers (data/prepared is 70 MB; a paper-profile run directory some more).
TASK_OVERHEAD_SECONDS = 6.5
DEFAULT_CORES_PER_WORKER = 2  # this machine
# Share of a default-profile training seed spent evaluating the bound curve, where no final.json
# splits it (docs/speed.md, "Evaluation": 9-10% on MNIST, 10-13% on Figure 3).
EVALUATION_SHARE = {"fig2": 0.10, "fig3": 0.115}
# Seconds per 1,000 points on Figure 3's model (docs/speed.md, "Evaluation": Appendix D 1.1-1.5 s, importance
# sampling with K = 5,000 12-20 s, grid 8-14 s; midpoints): only their ratios are used.
ESTIMATOR_SECONDS = {"appendix_d": 1.3, "importance_sampling": 16.0, "grid": 11.0}
ESTIMATOR_SECONDS_K = 5000  # the K of ESTIMATOR_SECONDS["importance_sampling"]
MNIST_TEST_POINTS = MNIST_PKL.arrays["test_x"].shape[0]
FREY_FACE_IMAGES = FREY_FACE_PKL.arrays["faces"].shape[0]


def dataset_sizes(params: dict[str, Any], config: RunConfig) -> tuple[int, int]:
    """(training points, test points) of the run's data (pipeline/data/sources.py, params.yaml data)."""
    if config.dataset == "frey_face":
        train = int(lookup(params, "data.frey_face.train_size"))
        return train, FREY_FACE_IMAGES - train
    return (config.ntrain or MNIST_PKL.arrays["train_x"].shape[0]), MNIST_TEST_POINTS


# ---------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainingWork:
    """What one training seed does: samples trained, trial samples (every candidate's), and
    datapoint evaluations of the bound curve."""

    samples: int
    trial_samples: int
    evaluation_points: int


def training_work(params: dict[str, Any], configuration: Configuration | ResolvedConfiguration) -> TrainingWork:
    """One seed's training work on ``params``' profile (``configuration`` already resolved on
    ``params`` is not resolved again)."""
    config = resolve(params, configuration).run_config
    M = config.minibatch_size
    total = math.ceil(config.samples / M) * M
    trial = 0 if config.step_size is not None else config.step_size_trial_samples * len(config.step_size_grid)
    if not config.trains_encoder:  # MCEM: no bound to evaluate (baselines/mcem.py evaluate_lower_bound)
        return TrainingWork(total, trial, 0)
    n_train, n_test = dataset_sizes(params, config)
    evaluations = len(evaluation_schedule(config.eval_first_samples, total, config.eval_points_per_decade, M))
    points = min(config.eval_train_points, n_train) + min(config.eval_test_points, n_test)
    return TrainingWork(total, trial, evaluations * points)


@dataclass(frozen=True)
class TrainingRates:
    """Seconds of one seed alone per training sample, per trial sample and per evaluated point."""

    sample: float
    trial_sample: float
    evaluation_point: float
    source: str

    def seed_seconds(self, work: TrainingWork) -> float:
        return (self.sample * work.samples + self.trial_sample * work.trial_samples
                + self.evaluation_point * work.evaluation_points)


def seeds_wall_factor(seeds: int, stacked: bool, side_by_side: bool, cores: int) -> float:
    """A stage's wall time in units of one seed's: stacked (or one after another) S seeds take S;
    side by side, one single-threaded process each, ceil(S / cores)."""
    if stacked or not side_by_side:
        return float(seeds)
    return float(math.ceil(seeds / max(1, cores)))


def stage_shape(params: dict[str, Any], configuration: Configuration | ResolvedConfiguration,
                ) -> tuple[int, bool, bool]:
    """(seeds, stacked, side by side) of a configuration's training stage on ``params``' profile."""
    run = resolve(params, configuration)
    return len(run.seeds), run.stacked, run.side_by_side


# ---------------------------------------------------------------------------------------------
# Marginal likelihood


@dataclass(frozen=True)
class EstimatorWork:
    """Point evaluations of each marginal-likelihood estimator by one seed (importance sampling
    counted in points x K)."""

    appendix_d: float = 0.0
    importance_sampling: float = 0.0
    grid: float = 0.0

    def seconds(self, rates: dict[str, float]) -> float:
        return (self.appendix_d * rates["appendix_d"] + self.importance_sampling * rates["importance_sampling"]
                + self.grid * rates["grid"])


def split_points(settings: MarginalLikelihoodSettings, config: RunConfig, params: dict[str, Any]) -> dict[str, int]:
    """The points each split the estimators run on: the settings' counts capped at the data's."""
    n_train, n_test = dataset_sizes(params, config)
    available = {"train": min(settings.train_points, n_train), "test": min(settings.test_points, n_test)}
    return {split: available[split] for split in settings.splits}


def marginal_likelihood_seed_work(params: dict[str, Any], configuration: Configuration | ResolvedConfiguration,
                                  settings: MarginalLikelihoodSettings) -> EstimatorWork:
    """One seed's estimator work over its checkpoints (pipeline/evaluation/marginal_likelihood.py
    ``_evaluate_checkpoints``); ``configuration`` already resolved on ``params`` is not resolved again."""
    config = resolve(params, configuration).run_config
    M = config.minibatch_size
    checkpoints = len(checkpoint_schedule(config.checkpoint_every, math.ceil(config.samples / M) * M, M))
    points = split_points(settings, config, params)
    checked = {"all": checkpoints, "final": 1, "none": 0}[settings.cross_checks]
    checked_points = sum(n for split, n in points.items() if split in settings.cross_check_splits)
    transitions = (settings.burn_in + settings.hmc_samples) * settings.leapfrog_steps
    return EstimatorWork(
        appendix_d=checkpoints * sum(points.values()) * transitions,
        importance_sampling=checked * checked_points * settings.importance_samples,
        grid=checked * checked_points if config.z_dim <= 3 else 0.0,
    )


def marginal_likelihood_seeds_work(params: dict[str, Any], configuration: Configuration | ResolvedConfiguration,
                                   ) -> list[EstimatorWork]:
    """Every seed's work: the first with the profile's settings, the others with ``other_seeds``."""
    run = resolve(params, configuration)
    first = settings_from_params(params, run.configuration.experiment)
    others = other_seed_settings(params, first, run.configuration.experiment)
    return [marginal_likelihood_seed_work(params, run, first if i == 0 else others) for i in range(len(run.seeds))]


def relative_estimator_rates(params: dict[str, Any]) -> dict[str, float]:
    """Seconds per unit of :class:`EstimatorWork` up to one common factor (:data:`ESTIMATOR_SECONDS`):
    Appendix D per point and transition, importance sampling per point and sample, grid per point."""
    settings = settings_from_params(params)
    transitions = (settings.burn_in + settings.hmc_samples) * settings.leapfrog_steps
    return {"appendix_d": ESTIMATOR_SECONDS["appendix_d"] / 1000 / transitions,
            "importance_sampling": ESTIMATOR_SECONDS["importance_sampling"] / 1000 / ESTIMATOR_SECONDS_K,
            "grid": ESTIMATOR_SECONDS["grid"] / 1000}


def marginal_likelihood_stage_seconds(seed_seconds: list[float], cores: int) -> float:
    """Seeds side by side, one process each: max(total / min(seeds, cores), the longest seed)."""
    if not seed_seconds:
        return 0.0
    return max(sum(seed_seconds) / min(len(seed_seconds), max(1, cores)), max(seed_seconds))


# ---------------------------------------------------------------------------------------------
# Estimator variance


def estimator_variance_work(params: dict[str, Any], resolutions: Resolutions | None = None) -> float:
    """Point evaluations of the estimator_variance stage: for the first seed of every Figure 2 AEVB
    configuration, value_points x value_repeats + gradient_points x gradient_repeats (a gradient
    point counted as one value point), points capped at its training set, both estimators. Only
    runs/fig2 counts (pipeline/evaluation/estimator_variance.py), not the binarization study's runs.
    ``resolutions``: the configurations already resolved on ``params`` (they are not resolved again)."""
    if resolutions is not None and resolutions.params is not params:
        raise ValueError("estimator_variance_work was given configurations resolved on other params")
    settings = estimator_variance_settings(params)
    work = 0.0
    for configuration in configurations(params):
        if configuration.folder != "fig2" or configuration.algorithm != "aevb":
            continue
        config = resolutions(configuration).run_config if resolutions is not None else configuration.run_config(params)
        n_train, _ = dataset_sizes(params, config)
        work += 2 * (min(settings["value_points"], n_train) * settings["value_repeats"]
                     + min(settings["gradient_points"], n_train) * settings["gradient_repeats"])
    return work
