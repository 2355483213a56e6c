"""The measured side of the cluster plan: stage costs one profile measured, and rates from them.

Its one job: read ``stage_wall_seconds`` of a provenance.json (:class:`MeasuredCosts`), find the
params they were measured under (:func:`resolve_costs_params`: ``--costs-params``, else params.yaml
at the provenance's commit through :mod:`pipeline.plumbing.git` if its sha256 matches, else the
current params, an assumption stated), and turn measurements into per-unit rates of
:mod:`pipeline.cluster.cost_model`: a configuration's finished runs (``final.json``,
marginal-likelihood CSVs), else its measured stage, else (binarization study) its Figure 2 twin's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipeline.cluster.cost_model import (DEFAULT_CORES_PER_WORKER, EVALUATION_SHARE, FREY_FACE_IMAGES,
                                         MNIST_TEST_POINTS, TrainingRates, marginal_likelihood_seeds_work,
                                         relative_estimator_rates, seeds_wall_factor, stage_shape, training_work)
from pipeline.cluster.training_stages import Configuration, ResolvedConfiguration, Resolutions, resolve, with_profile
from pipeline.evaluation.marginal_likelihood import settings_from_params
from pipeline.plumbing.git import GitUnavailableError, show_file
from pipeline.reporting.provenance import params_hash


class CostsError(ValueError):
    """The measured costs (provenance.json, runs/) cannot give a stage the plan needs."""


# ---------------------------------------------------------------------------------------------
# The measured stage costs and the params they were measured under


@dataclass(frozen=True)
class MeasuredCosts:
    """``stage_wall_seconds`` of a provenance.json and what they were measured under."""

    stage_seconds: dict[str, float]
    profile: str
    cores: int
    params_sha256: str | None = None
    commit: str | None = None
    source: str = "provenance.json"

    def seconds(self, stage: str, target_profile: str) -> float:
        if stage not in self.stage_seconds:
            raise CostsError(
                f"{self.source} has no measured cost for stage {stage!r}, which profile {target_profile!r} needs. "
                f"Fix: run the {self.profile} profile so that its report records it (`dvc exp run -S "
                f"profile={self.profile}`, or `dvc repro`; the report stage writes reports/{self.profile}/provenance.json), "
                f"or pass --costs with a provenance.json that has it, or --runs with that configuration's run directories")
        return float(self.stage_seconds[stage])


def load_measured_costs(path: str | Path) -> MeasuredCosts:
    """Read a provenance.json (pipeline/reporting/provenance.py); errors say what is wrong and how to fix it."""
    path = Path(path)
    if not path.is_file():
        raise CostsError(f"costs file {path} not found. Fix: run the default profile (`dvc repro`), whose report "
                         f"stage writes reports/default/provenance.json, or pass --costs PATH to a provenance.json")
    try:
        provenance = json.loads(path.read_text())
    except ValueError as err:
        raise CostsError(f"costs file {path} is not valid JSON ({err}). Fix: regenerate it with `vaebench report`") from err
    times = provenance.get("stage_wall_seconds") if isinstance(provenance, dict) else None
    if not isinstance(times, dict) or not times:
        raise CostsError(f"{path} has no stage_wall_seconds (a provenance.json written by `vaebench report` has "
                         f"them). Fix: pass --costs with a report's provenance.json")
    if not isinstance(provenance.get("profile"), str):
        raise CostsError(f"{path} does not say which profile it measured (its 'profile' key). Fix: regenerate it "
                         f"with `vaebench report`")
    bad = [k for k, v in times.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0]
    if bad:
        raise CostsError(f"{path}: stage_wall_seconds of {', '.join(bad)} are not non-negative numbers")
    cores = (provenance.get("machine") or {}).get("cpu_count") or DEFAULT_CORES_PER_WORKER
    return MeasuredCosts({k: float(v) for k, v in times.items() if not k.startswith("total")},
                         provenance["profile"], int(cores), provenance.get("params_sha256"),
                         (provenance.get("git") or {}).get("commit"), str(path))


def params_at_commit(commit: str, repo: str | Path = ".") -> dict[str, Any] | None:
    """params.yaml as of ``commit`` in the git repository ``repo`` (:func:`pipeline.plumbing.git.show_file`),
    or None where git cannot show it: git missing or failing, a commit that is not a revision, a
    file that is not a YAML mapping."""
    try:
        text, _ = show_file(commit, "params.yaml", repo, timeout=30)
    except (GitUnavailableError, ValueError):
        return None
    if text is None:
        return None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return loaded if isinstance(loaded, dict) else None


def resolve_costs_params(measured: MeasuredCosts, params: dict[str, Any], params_label: str,
                         costs_params: dict[str, Any] | None = None, repo: str | Path = ".",
                         ) -> tuple[dict[str, Any], str]:
    """The params the costs were measured under (their seed counts turn a stage into seeds), and a
    note saying which: ``costs_params`` if given; else params.yaml of the provenance's git commit,
    if git has it and its sha256 is the one provenance.json records; else ``params`` (an
    assumption the note states, with the fix)."""
    if costs_params is not None:
        return with_profile(costs_params, measured.profile), "seed counts of the measured run: from --costs-params"
    if measured.commit and measured.params_sha256:
        at_commit = params_at_commit(measured.commit, repo)
        if at_commit is not None and params_hash(at_commit) == measured.params_sha256:
            return (with_profile(at_commit, measured.profile),
                    f"seed counts of the measured run: params.yaml of commit {measured.commit[:7]} "
                    f"(its sha256 matches {measured.source})")
    chosen = with_profile(params, measured.profile)
    if measured.params_sha256 and params_hash(params) == measured.params_sha256:
        return chosen, f"seed counts of the measured run: {params_label} (its sha256 matches {measured.source})"
    fix = (f"`git show {measured.commit}:params.yaml > measured.yaml` and pass --costs-params measured.yaml"
           if measured.commit else "pass --costs-params with the params.yaml the costs were measured under")
    return chosen, (f"assumption: the measured run had the seed counts of {params_label}'s {measured.profile} profile "
                    f"({measured.source} records another params sha256); to use the measured ones, {fix}")

# ---------------------------------------------------------------------------------------------
# Rates: from finished runs, else from the measured stages


def rates_from_stage(measured_seconds: float, params: dict[str, Any],
                     configuration: Configuration | ResolvedConfiguration, cores: int) -> TrainingRates:
    """One seed's rates from a measured training stage: the stage's seconds over its seed factor,
    split between evaluation (:data:`~pipeline.cluster.cost_model.EVALUATION_SHARE`) and training
    samples (trial included). ``params``: those the stage was measured under."""
    run = resolve(params, configuration)
    seeds, stacked, side_by_side = stage_shape(params, run)
    one_seed = measured_seconds / seeds_wall_factor(seeds, stacked, side_by_side, cores)
    work = training_work(params, run)
    share = EVALUATION_SHARE.get(run.configuration.experiment, 0.10) if work.evaluation_points else 0.0
    per_sample = (1 - share) * one_seed / (work.samples + work.trial_samples)
    per_point = share * one_seed / work.evaluation_points if work.evaluation_points else 0.0
    return TrainingRates(per_sample, per_sample, per_point, "provenance.json")


def rates_from_runs(runs_root: Path, configuration: Configuration) -> TrainingRates | None:
    """One seed's rates from ``runs/<folder>/<run>/seed<N>/final.json`` and config.json (the
    mean over seeds), or None where the configuration has no finished run there."""
    folder = Path(runs_root) / configuration.folder / configuration.run_name
    samples, trials, points = [], [], []
    for seed_dir in sorted(folder.glob("seed*")):
        final_path, config_path = seed_dir / "final.json", seed_dir / "config.json"
        if not final_path.is_file() or not config_path.is_file():
            continue
        try:
            final, config = json.loads(final_path.read_text()), json.loads(config_path.read_text())
            if final.get("train_seconds") and final.get("samples_seen"):
                samples.append(final["train_seconds"] / final["samples_seen"])
            trial_samples = (config["step_size_trial_samples"] * len(config["step_size_grid"])
                             if config.get("step_size") is None else 0)
            if trial_samples and final.get("trial_seconds"):
                trials.append(final["trial_seconds"] / trial_samples)
            n_test = FREY_FACE_IMAGES - config["n_train"] if config["dataset"] == "frey_face" else MNIST_TEST_POINTS
            evaluated = len(config["evaluation_points"]) * (min(config["eval_train_points"], config["n_train"])
                                                            + min(config["eval_test_points"], n_test))
            if config.get("algorithm") != "mcem" and evaluated:
                points.append(final.get("eval_seconds", 0.0) / evaluated)
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as err:
            raise CostsError(f"{seed_dir} has an unreadable final.json or config.json ({err!r}). Fix: retrain it "
                             f"(`vaebench train`) or pass --runs with another folder") from err
    if not samples:
        return None
    sample = sum(samples) / len(samples)
    return TrainingRates(sample, sum(trials) / len(trials) if trials else sample,
                         sum(points) / len(points) if points else 0.0, f"{folder}/seed*/final.json")


def configuration_rates(configuration: Configuration, costs_params: dict[str, Any], measured: MeasuredCosts,
                        profile: str, runs_root: Path | None, resolutions: Resolutions | None = None,
                        ) -> tuple[TrainingRates, str]:
    """One seed's training rates and where they came from (``runs``, ``stage``, ``twin``): the
    configuration's run directories, else its measured stage, else, for a binarization-study
    configuration, its Figure 2 twin's (:meth:`~pipeline.cluster.training_stages.Configuration.twin`;
    its runs, else its stage). Where none has them, the error names the configuration's own stage and
    the fix. ``resolutions``: configurations resolved on ``costs_params``, shared across calls so
    that each (the twin too) resolves once, and only where a measured stage is used."""
    if resolutions is None:
        resolutions = Resolutions(costs_params)
    elif resolutions.params is not costs_params:
        raise ValueError("configuration_rates was given configurations resolved on other params than costs_params")
    rates = rates_from_runs(runs_root, configuration) if runs_root is not None else None
    if rates is not None:
        return rates, "runs"
    twin = configuration.twin()
    if configuration.train_stage in measured.stage_seconds or twin is None:
        return rates_from_stage(measured.seconds(configuration.train_stage, profile), costs_params,
                                resolutions(configuration), measured.cores), "stage"
    rates = rates_from_runs(runs_root, twin) if runs_root is not None else None
    if rates is None and twin.train_stage in measured.stage_seconds:
        rates = rates_from_stage(measured.stage_seconds[twin.train_stage], costs_params, resolutions(twin),
                                 measured.cores)
    if rates is None:
        measured.seconds(configuration.train_stage, profile)  # raises, naming the study's own stage
    return rates, "twin"


def estimator_rates_from_runs(runs_root: Path, configuration: Configuration,
                              costs_params: dict[str, Any]) -> dict[str, float] | None:
    """Seconds per unit of :class:`EstimatorWork` measured in
    ``runs/marginal_likelihood/<folder>/<run>/seed<N>.csv`` (rows: estimator, points,
    wall_seconds), or None where there are none or an estimator the plan needs is missing."""
    folder = Path(runs_root) / "marginal_likelihood" / configuration.folder / configuration.run_name
    files = sorted(folder.glob("seed*.csv"))
    if not files:
        return None
    try:
        rows = pd.concat([pd.read_csv(f, usecols=["estimator", "points", "wall_seconds"]) for f in files])
    except (OSError, ValueError) as err:
        raise CostsError(f"cannot read the marginal-likelihood CSVs in {folder} ({err}). Fix: re-run `vaebench "
                         f"evaluate marginal-likelihood` for it or pass --runs with another folder") from err
    totals = rows.groupby("estimator")[["points", "wall_seconds"]].sum()
    if not {"appendix_d", "importance_sampling", "grid"} <= set(totals.index):
        return None
    profile = profile_of_runs(costs_params, Path(runs_root) / configuration.folder / configuration.run_name,
                              configuration)
    settings = settings_from_params(with_profile(costs_params, profile), configuration.experiment)
    per_point = totals.wall_seconds / totals.points
    return {"appendix_d": per_point["appendix_d"] / ((settings.burn_in + settings.hmc_samples) * settings.leapfrog_steps),
            "importance_sampling": per_point["importance_sampling"] / settings.importance_samples,
            "grid": per_point["grid"]}


def profile_of_runs(params: dict[str, Any], configuration_dir: Path, configuration: Configuration) -> str:
    """The profile whose budget trained the runs in ``configuration_dir`` (the first whose samples
    match a seed's config.json), else ``params``' own: it says which K their importance sampling had."""
    for config_path in sorted(configuration_dir.glob("seed*/config.json")):
        try:
            samples = json.loads(config_path.read_text()).get("samples")
        except (OSError, ValueError):
            continue
        for name, budget in params.get("profiles", {}).items():
            per_dataset = (budget.get(configuration.experiment) or {}).get(configuration.dataset) or {}
            if per_dataset.get("samples") == samples:
                return name
        break
    return params["profile"]


def estimator_rates(configuration: Configuration, costs_params: dict[str, Any], measured: MeasuredCosts,
                    profile: str, runs_root: Path | None, resolutions: Resolutions | None = None,
                    ) -> tuple[dict[str, float], str]:
    """Seconds per unit of :class:`~pipeline.cluster.cost_model.EstimatorWork` for a Figure 3
    configuration's marginal-likelihood seeds and where they came from (``runs``, ``stage``): its
    CSVs (:func:`estimator_rates_from_runs`), else :data:`~pipeline.cluster.cost_model.ESTIMATOR_SECONDS`'
    relative costs scaled so that the work of the measured stage's seeds (on ``costs_params``) takes
    its measured seconds. ``resolutions``: as for :func:`configuration_rates`."""
    if resolutions is None:
        resolutions = Resolutions(costs_params)
    elif resolutions.params is not costs_params:
        raise ValueError("estimator_rates was given configurations resolved on other params than costs_params")
    rates = estimator_rates_from_runs(runs_root, configuration, costs_params) if runs_root is not None else None
    if rates is not None:
        return rates, "runs"
    measured_work = marginal_likelihood_seeds_work(costs_params, resolutions(configuration))
    relative = relative_estimator_rates(costs_params)
    scale = (measured.seconds(configuration.marginal_likelihood_stage, profile)
             / sum(w.seconds(relative) for w in measured_work))
    return {k: v * scale for k, v in relative.items()}, "stage"
