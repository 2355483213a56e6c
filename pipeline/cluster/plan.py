"""Predict the wall time of a profile on N workers from measured stage costs (issue 18, item 6).

``vaebench cluster-plan`` (:mod:`pipeline.commands.cluster_plan`) scales the stage wall times one
profile measured (``reports/<profile>/provenance.json``, ``stage_wall_seconds``) to another
profile's budgets, then list-schedules the stage graph on W identical workers.

This module's one job is that orchestration: the target profile's stage graph with every stage's
predicted seconds (:func:`scaled_stages`) and its schedule on each worker count
(:func:`plan_cluster`, :class:`ClusterPlan`). The parts it puts together, each importing only
those before it: :mod:`pipeline.cluster.scheduling` (list scheduling of any stage graph),
:mod:`pipeline.cluster.training_stages` (a profile's training stages, each configuration resolved
once), :mod:`pipeline.cluster.cost_model` (work and constants) and
:mod:`pipeline.cluster.measured_costs` (provenance.json, the params it was measured under, rates).

The model, as assumptions a reader can check (every number it reads is named with its file):

1. **Stage graph** (dvc.yaml): download -> prepare -> every training stage (one per
   configuration: ``experiments.fig2`` datasets x Nz x algorithms, ``experiments.fig4.mnist``,
   ``experiments.fig2.binarization_study`` Nz (fig2_binarization: MNIST AEVB with Figure 2's
   budgets and seed patterns, its folder runs/binarization), ``experiments.fig3`` Ntrain x
   algorithms in params.yaml, as :func:`pipeline.runs.configurations.expected_configurations`
   lists them) -> each Figure 3 training stage's marginal-likelihood stage; all runs/fig2
   training -> estimator_variance; everything but the binarization study -> figures ->
   report; the binarization study -> report (figures does not read runs/binarization). Training
   and marginal-likelihood stages are fanned out to workers, one task each, and each task pays
   ``task_overhead_seconds`` (clone + dvc pull + push); download, prepare, estimator_variance,
   figures and report run on the coordinator, one at a time.
2. **Measured costs are per stage, all seeds of a configuration** (pipeline/reporting/provenance.py
   ``stage_wall_times``): a training stage's wall time on the measuring machine
   (``machine.cpu_count`` cores), a marginal-likelihood stage's estimator seconds summed over its
   seeds. They are turned into the cost of one seed with the seed counts of the params the costs
   were measured under (pipeline/runs/config.py ``configuration_seeds``; which params those are:
   :func:`pipeline.cluster.measured_costs.resolve_costs_params`), and back into a stage with the
   target profile's seed counts.
3. **Seeds of one stage**: fused AEVB seeds train stacked in one process and stacking gains
   nothing on 2 cores (docs/pipeline.md, "Seeds": 3 stacked MNIST Nz = 20 seeds 182 s, one alone 56 s), so
   S stacked seeds take S times one seed; wake-sleep and MCEM seeds train side by side, one
   single-threaded process each (pipeline/training/train.py ``train_seeds``), so S seeds on c cores take
   ceil(S / c) times one seed (3 MCEM seeds on 2 cores: 1.6-2.2x one alone, docs/pipeline.md, "Seeds"); with
   ``seeds.side_by_side: false`` they take S times. One seed's speed does not depend on the cores.
4. **A training seed** costs ``t_sample x samples + t_sample x step_size_trial_samples x
   len(optimizer.step_size_grid)`` (no trial where the profile fixes the step size) ``+ t_eval x
   evaluations x (eval_train_points + eval_test_points)`` (evaluations: pipeline/training/train.py
   ``evaluation_schedule``; points capped at the dataset's size; MCEM has no bound to evaluate:
   no evaluation cost). Where ``runs/<experiment>/<configuration>/seed<N>/final.json`` exist the
   three rates are measured (train_seconds / samples_seen, trial_seconds, eval_seconds: per seed,
   averaged); otherwise the measured stage cost is split by
   :data:`~pipeline.cluster.cost_model.EVALUATION_SHARE` (docs/speed.md, "Evaluation": the evaluation passes
   take 9-10% (MNIST) and 10-13% (Figure 3) of a default run).
   A binarization-study stage neither measured nor in runs/ takes the rates of its Figure 2 twin
   (the MNIST AEVB run at the same Nz: same model, budgets and evaluations; only the targets
   differ, a Bernoulli draw per minibatch, taken as negligible), stated in the plan's notes; this
   lets costs measured before the study existed still plan it.
5. **A marginal-likelihood seed** (pipeline/evaluation/marginal_likelihood.py) costs, over its checkpoints
   (pipeline/training/train.py ``checkpoint_schedule``) and its splits' points, Appendix D on every
   checkpoint, and on the cross-checked checkpoints (``cross_checks``: final, all, none)
   importance sampling (cost proportional to K) and the grid, on ``cross_check_splits``; seeds
   after the first use ``other_seeds``. The estimators' relative costs are
   :data:`~pipeline.cluster.cost_model.ESTIMATOR_SECONDS` (docs/speed.md, "Evaluation", per 1,000 points),
   scaled to the measured stage; where
   ``runs/marginal_likelihood/fig3/<configuration>/seed<N>.csv`` exist their own seconds per point.
   Seeds run side by side, one process each: the stage takes max(total / min(S, cores), longest seed).
   The longest seed is not sped up by the cores the others leave free (pipeline/evaluation/marginal_likelihood.py lets its
   threads grow): an upper estimate, 3.4 min per default-profile stage where docs/pipeline.md, "Seeds",
   measured about 2.6.
6. **Coordinator stages**: estimator_variance scales with sum over Figure 2 AEVB configurations of
   value_points x value_repeats + gradient_points x gradient_repeats (points capped at the
   training set; pipeline/evaluation/estimator_variance.py); figures and report keep their measured seconds;
   download and prepare their measured seconds if provenance.json has them, else 0.
7. **Scheduling**: list scheduling on W identical workers (and the one coordinator), respecting
   dependencies; among ready tasks the one with the longest remaining chain (its own time plus the
   longest chain of stages after it) starts first, which for independent tasks is
   longest-processing-time-first. The critical path (longest chain of dependent costs, overheads
   included) is the wall time with unlimited workers, and a lower bound for every W.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.cluster.cost_model import (DEFAULT_CORES_PER_WORKER, estimator_variance_work,
                                         marginal_likelihood_seeds_work, marginal_likelihood_stage_seconds,
                                         seeds_wall_factor, stage_shape, training_work)
from pipeline.cluster.measured_costs import MeasuredCosts, configuration_rates, estimator_rates
from pipeline.cluster.scheduling import CriticalPath, Stage, critical_path, list_schedule, task_seconds
from pipeline.cluster.training_stages import Resolutions, configurations

DEFAULT_WORKERS = (1, 4, 16, 64)


# ---------------------------------------------------------------------------------------------
# The scaled stage graph


@dataclass
class ScaledStages:
    """The scaled stage graph and the notes on where its costs came from."""

    stages: list[Stage]
    notes: list[str] = field(default_factory=list)


def scaled_stages(target: dict[str, Any], costs_params: dict[str, Any], measured: MeasuredCosts,
                  cores_per_worker: int = DEFAULT_CORES_PER_WORKER, runs_root: Path | None = None) -> ScaledStages:
    """The stage graph of ``target``'s profile with every stage's predicted seconds, from the
    costs measured on ``costs_params``' profile (the module docstring's model). Each configuration
    is resolved once on ``target`` and, where a measured stage gives its rates, once on
    ``costs_params``."""
    if cores_per_worker < 1:
        raise ValueError(f"--cores-per-worker must be at least 1, got {cores_per_worker}")
    profile = target["profile"]
    on_target = Resolutions(target)
    on_costs = on_target if costs_params is target else Resolutions(costs_params)
    notes: list[str] = []
    stages: list[Stage] = []
    coordinator_seconds = {name: measured.stage_seconds.get(name, 0.0) for name in ("download", "prepare")}
    missing = [name for name in ("download", "prepare") if name not in measured.stage_seconds]
    if missing:
        notes.append(f"{' and '.join(missing)}: not in {measured.source}; counted as 0 s")
    stages.append(Stage("download", coordinator_seconds["download"], (), on_worker=False))
    stages.append(Stage("prepare", coordinator_seconds["prepare"], ("download",), on_worker=False))
    from_runs = marginal_likelihoods_from_runs = 0
    trains, fig2_trains, marginal_likelihoods, study_trains, from_twins = [], [], [], [], []
    for configuration in configurations(target):
        rates, origin = configuration_rates(configuration, costs_params, measured, profile, runs_root, on_costs)
        from_runs += origin == "runs"
        if origin == "twin":
            from_twins.append(configuration)
        run = on_target(configuration)
        seeds, stacked, side_by_side = stage_shape(target, run)
        seconds = rates.seed_seconds(training_work(target, run)) * seeds_wall_factor(
            seeds, stacked, side_by_side, cores_per_worker)
        stages.append(Stage(configuration.train_stage, seconds, ("prepare",), seeds=seeds))
        if configuration.folder == "binarization":  # read by the report only, not by figures
            study_trains.append(configuration.train_stage)
        else:
            trains.append(configuration.train_stage)
        if configuration.folder == "fig2":
            fig2_trains.append(configuration.train_stage)
        if configuration.experiment == "fig3":
            per_unit, estimator_origin = estimator_rates(configuration, costs_params, measured, profile, runs_root,
                                                         on_costs)
            marginal_likelihoods_from_runs += estimator_origin == "runs"
            seed_seconds = [w.seconds(per_unit) for w in marginal_likelihood_seeds_work(target, run)]
            stages.append(Stage(configuration.marginal_likelihood_stage,
                                marginal_likelihood_stage_seconds(seed_seconds, cores_per_worker),
                                (configuration.train_stage,), seeds=len(seed_seconds)))
            marginal_likelihoods.append(configuration.marginal_likelihood_stage)
    if from_twins:
        notes.append(f"{', '.join(c.train_stage for c in from_twins)}: not in {measured.source}"
                     f"{f' nor {runs_root}' if runs_root is not None else ''}; costed as the Figure 2 run with "
                     f"the same model and budgets ({', '.join(c.twin().train_stage for c in from_twins)}), only "
                     f"the targets' binarization differing")
    if runs_root is not None:
        notes.append(f"rates from {runs_root}: training (seed*/final.json) for {from_runs} of "
                     f"{len(trains) + len(study_trains)} "
                     f"configurations, marginal likelihood (marginal_likelihood/*/*/seed*.csv) for "
                     f"{marginal_likelihoods_from_runs} of {len(marginal_likelihoods)}; the rest from {measured.source}")
    variance = measured.seconds("estimator_variance", profile) * (
        estimator_variance_work(target, on_target) / estimator_variance_work(costs_params, on_costs))
    stages.append(Stage("estimator_variance", variance, tuple(fig2_trains), on_worker=False))
    stages.append(Stage("figures", measured.seconds("figures", profile), tuple(trains + marginal_likelihoods),
                        on_worker=False))
    stages.append(Stage("report", measured.seconds("report", profile),
                        ("figures", "estimator_variance", *study_trains), on_worker=False))
    return ScaledStages(stages, notes)


# ---------------------------------------------------------------------------------------------
# The plan: the stage graph scheduled on every worker count


@dataclass(frozen=True)
class PlanRow:
    """The schedule on one worker count, as the plan's table shows it."""

    workers: int
    wall_seconds: float
    speed_up: float
    utilisation: float
    lower_bound_seconds: float  # max(critical path, worker work / W, the coordinator's work)
    limited_by: str  # "critical path" where the wall time is the critical path's, else "workers"


@dataclass(frozen=True)
class ClusterPlan:
    """The stage graph scheduled on every worker count asked for, its critical path and notes."""

    rows: tuple[PlanRow, ...]
    critical_path: CriticalPath
    worker_seconds: float  # the sum of every worker task's time (overheads included)
    stages: tuple[Stage, ...]
    task_overhead_seconds: float
    notes: tuple[str, ...] = ()

    def table(self) -> pd.DataFrame:
        """One row per worker count: wall time and its lower bound in hours, speed-up over one
        worker, utilisation, and what limits the wall time."""
        return pd.DataFrame([{
            "workers": r.workers,
            "wall_hours": round(r.wall_seconds / 3600, 2),
            "speed_up": round(r.speed_up, 2),
            "utilisation": round(r.utilisation, 2),
            "lower_bound_hours": round(r.lower_bound_seconds / 3600, 2),
            "limited_by": r.limited_by,
        } for r in self.rows])

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.table().to_dict("records"),
            "critical_path": {"stages": list(self.critical_path.stages),
                              "hours": round(self.critical_path.seconds / 3600, 3)},
            "worker_hours": round(self.worker_seconds / 3600, 3),
            "task_overhead_seconds": self.task_overhead_seconds,
            "stages": [{"name": s.name, "hours": round(s.seconds / 3600, 4), "seeds": s.seeds,
                        "on_worker": s.on_worker, "after": list(s.after)} for s in self.stages],
            "notes": list(self.notes),
        }


def plan_cluster(stages: list[Stage], workers: list[int] | tuple[int, ...], overhead: float,
                 notes: tuple[str, ...] = ()) -> ClusterPlan:
    """Schedule the stages on every worker count; speed-up is against one worker."""
    if not workers:
        raise ValueError("give at least one worker count")
    if overhead < 0:
        raise ValueError(f"the task overhead must be >= 0 seconds, got {overhead}")
    path = critical_path(stages, overhead)
    on_one = list_schedule(stages, 1, overhead).wall_seconds
    worker_seconds = sum(task_seconds(s, overhead) for s in stages if s.on_worker)
    coordinator_seconds = sum(s.seconds for s in stages if not s.on_worker)
    rows = []
    for count in sorted(set(workers)):
        schedule = list_schedule(stages, count, overhead)
        wall = schedule.wall_seconds
        limited_by = "critical path" if wall <= path.seconds * 1.001 + 1e-9 else "workers"
        bound = max(path.seconds, worker_seconds / count, coordinator_seconds)
        rows.append(PlanRow(count, wall, on_one / wall if wall else 1.0, schedule.utilisation, bound, limited_by))
    return ClusterPlan(tuple(rows), path, worker_seconds, tuple(stages), overhead, notes)
