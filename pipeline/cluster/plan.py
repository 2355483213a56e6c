"""Predict the wall time of a profile on N workers from measured stage costs (issue 18, item 6).

``vaebench cluster-plan`` (:mod:`pipeline.commands.cluster_plan`) scales the stage wall times one
profile measured (``reports/<profile>/provenance.json``, ``stage_wall_seconds``) to another
profile's budgets, then list-schedules the stage graph on W identical workers.

The model, as assumptions a reader can check (every number it reads is named with its file):

1. **Stage graph** (dvc.yaml): download -> prepare -> every training stage (one per
   configuration: ``experiments.fig2`` datasets x Nz x algorithms, ``experiments.fig4.mnist``,
   ``experiments.fig2.binarization_study`` Nz (fig2_binarization: MNIST AEVB with Figure 2's
   budgets and seed patterns, its folder runs/binarization), ``experiments.fig3`` Ntrain x
   algorithms in params.yaml) -> each Figure 3 training stage's marginal-likelihood stage; all
   runs/fig2 training -> estimator_variance; everything but the binarization study -> figures ->
   report; the binarization study -> report (figures does not read runs/binarization). Training
   and marginal-likelihood stages are fanned out to workers, one task each, and each task pays
   ``task_overhead_seconds`` (clone + dvc pull + push); download, prepare, estimator_variance,
   figures and report run on the coordinator, one at a time.
2. **Measured costs are per stage, all seeds of a configuration** (pipeline/reporting/provenance.py
   ``stage_wall_times``): a training stage's wall time on the measuring machine
   (``machine.cpu_count`` cores), a marginal-likelihood stage's estimator seconds summed over its
   seeds. They are turned into the cost of one seed with the seed counts of the params the costs
   were measured under (pipeline/runs/config.py ``configuration_seeds``; which params those are:
   :func:`resolve_costs_params`), and back into a stage with the target profile's seed counts.
3. **Seeds of one stage**: fused AEVB seeds train stacked in one process and stacking gains
   nothing on 2 cores (README, "Seeds": 3 stacked MNIST Nz = 20 seeds 182 s, one alone 56 s), so
   S stacked seeds take S times one seed; wake-sleep and MCEM seeds train side by side, one
   single-threaded process each (pipeline/training/train.py ``train_seeds``), so S seeds on c cores take
   ceil(S / c) times one seed (3 MCEM seeds on 2 cores: 1.6-2.2x one alone, README); with
   ``seeds.side_by_side: false`` they take S times. One seed's speed does not depend on the cores.
4. **A training seed** costs ``t_sample x samples + t_sample x step_size_trial_samples x
   len(optimizer.step_size_grid)`` (no trial where the profile fixes the step size) ``+ t_eval x
   evaluations x (eval_train_points + eval_test_points)`` (evaluations: pipeline/training/train.py
   ``evaluation_schedule``; points capped at the dataset's size; MCEM has no bound to evaluate:
   no evaluation cost). Where ``runs/<experiment>/<configuration>/seed<N>/final.json`` exist the
   three rates are measured (train_seconds / samples_seen, trial_seconds, eval_seconds: per seed,
   averaged); otherwise the measured stage cost is split by :data:`EVALUATION_SHARE` (README,
   "Speed": the evaluation passes take 9-10% (MNIST) and 10-13% (Figure 3) of a default run).
   A binarization-study stage neither measured nor in runs/ takes the rates of its Figure 2 twin
   (the MNIST AEVB run at the same Nz: same model, budgets and evaluations; only the targets
   differ, a Bernoulli draw per minibatch, taken as negligible), stated in the plan's notes; this
   lets costs measured before the study existed still plan it.
5. **A marginal-likelihood seed** (pipeline/evaluation/marginal_likelihood.py) costs, over its checkpoints
   (pipeline/training/train.py ``checkpoint_schedule``) and its splits' points, Appendix D on every
   checkpoint, and on the cross-checked checkpoints (``cross_checks``: final, all, none)
   importance sampling (cost proportional to K) and the grid, on ``cross_check_splits``; seeds
   after the first use ``other_seeds``. The estimators' relative costs are :data:`ESTIMATOR_SECONDS`
   (README, "Speed", per 1,000 points), scaled to the measured stage; where
   ``runs/marginal_likelihood/fig3/<configuration>/seed<N>.csv`` exist their own seconds per point.
   Seeds run side by side, one process each: the stage takes max(total / min(S, cores), longest seed).
   The longest seed is not sped up by the cores the others leave free (pipeline/evaluation/marginal_likelihood.py lets its
   threads grow): an upper estimate, 3.4 min per default-profile stage where README, "Seeds",
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

import copy
import heapq
import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipeline.data.sources import FREY_FACE_PKL, MNIST_PKL
from pipeline.evaluation.marginal_likelihood import MarginalLikelihoodSettings, other_seed_settings, settings_from_params
from pipeline.evaluation.estimator_variance import settings_from_params as estimator_variance_settings
from pipeline.plumbing.params import ParamsError, lookup
from pipeline.reporting.provenance import params_hash
from pipeline.runs.config import RunConfig, build_run_config, configuration_seeds, seeds_side_by_side
from pipeline.training.train import checkpoint_schedule, evaluation_schedule, stackable

# The per-task cost of fanning a stage out to a worker: clone the repository, `dvc pull` its
# inputs, start the stage's command, `dvc push` its outputs. Measured: the median of (task wall time
# - the stage's own recorded time) over the 30 tasks of a 2-worker LocalCluster smoke run here
# (tests/test_distribute.py; 5.6-8.6 s, local-folder remote). A remote across a network adds its
# transfers (data/prepared is 70 MB; a paper-profile run directory some more).
TASK_OVERHEAD_SECONDS = 6.5
DEFAULT_WORKERS = (1, 4, 16, 64)
DEFAULT_CORES_PER_WORKER = 2  # this machine
# Share of a default-profile training seed spent evaluating the bound curve, where no final.json
# splits it (README, "Speed": 9-10% on MNIST, 10-13% on Figure 3).
EVALUATION_SHARE = {"fig2": 0.10, "fig3": 0.115}
# Seconds per 1,000 points on Figure 3's model (README, "Speed": Appendix D 1.1-1.5 s, importance
# sampling with K = 5,000 12-20 s, grid 8-14 s; midpoints): only their ratios are used.
ESTIMATOR_SECONDS = {"appendix_d": 1.3, "importance_sampling": 16.0, "grid": 11.0}
ESTIMATOR_SECONDS_K = 5000  # the K of ESTIMATOR_SECONDS["importance_sampling"]
MNIST_TEST_POINTS = MNIST_PKL.arrays["test_x"].shape[0]
FREY_FACE_IMAGES = FREY_FACE_PKL.arrays["faces"].shape[0]


class CostsError(ValueError):
    """The measured costs (provenance.json, runs/) cannot give a stage the plan needs."""


# ---------------------------------------------------------------------------------------------
# The stage graph and the schedule


@dataclass(frozen=True)
class Stage:
    """One DVC stage as a task: its predicted seconds on its machine (without the task overhead),
    the stages it needs, and whether a worker (True) or the coordinator runs it."""

    name: str
    seconds: float
    after: tuple[str, ...] = ()
    on_worker: bool = True
    seeds: int = 1


@dataclass(frozen=True)
class ScheduledStage:
    name: str
    machine: str  # "worker <i>" or "coordinator"
    start: float
    end: float


@dataclass(frozen=True)
class CriticalPath:
    """The longest chain of dependent stages: the wall time with unlimited workers."""

    stages: tuple[str, ...]
    seconds: float

    def named(self) -> str:
        """The chain as ``a -> b -> c``."""
        return " -> ".join(self.stages)


@dataclass(frozen=True)
class Schedule:
    workers: int
    stages: tuple[ScheduledStage, ...]
    worker_busy_seconds: float  # every worker task's time, overheads included

    @property
    def wall_seconds(self) -> float:
        return max((s.end for s in self.stages), default=0.0)

    @property
    def utilisation(self) -> float:
        """Worker-seconds busy over worker-seconds held for the whole wall time."""
        return self.worker_busy_seconds / (self.workers * self.wall_seconds) if self.wall_seconds else 0.0


def task_seconds(stage: Stage, overhead: float) -> float:
    """A stage's time as a task: a worker task pays the clone + pull + push overhead."""
    return stage.seconds + (overhead if stage.on_worker else 0.0)


def check_graph(stages: list[Stage]) -> dict[str, Stage]:
    """The stages by name; unknown dependencies, duplicate names and cycles are errors."""
    by_name: dict[str, Stage] = {}
    for stage in stages:
        if stage.name in by_name:
            raise ValueError(f"stage {stage.name!r} appears twice in the stage graph")
        if stage.seconds < 0 or not math.isfinite(stage.seconds):
            raise ValueError(f"stage {stage.name!r} has a cost of {stage.seconds} s: costs must be finite and >= 0")
        by_name[stage.name] = stage
    for stage in stages:
        missing = [d for d in stage.after if d not in by_name]
        if missing:
            raise ValueError(f"stage {stage.name!r} needs {', '.join(missing)}, which is not in the stage graph")
    topological_order(by_name)
    return by_name


def topological_order(by_name: dict[str, Stage]) -> list[str]:
    """Stage names with every stage after the stages it needs; a cycle is an error naming it."""
    order, state = [], {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError(f"the stage graph has a cycle: {' -> '.join(path + (name,))}")
        state[name] = "visiting"
        for dependency in by_name[name].after:
            visit(dependency, path + (name,))
        state[name] = "done"
        order.append(name)

    for name in sorted(by_name):
        visit(name, ())
    return order


def dependents(by_name: dict[str, Stage]) -> dict[str, list[str]]:
    following: dict[str, list[str]] = {name: [] for name in by_name}
    for stage in by_name.values():
        for dependency in stage.after:
            following[dependency].append(stage.name)
    return following


def remaining_chain_seconds(stages: list[Stage], overhead: float) -> dict[str, float]:
    """Per stage, its own task time plus the longest chain of stages after it (its bottom level)."""
    by_name = check_graph(stages)
    following = dependents(by_name)
    chain: dict[str, float] = {}
    for name in reversed(topological_order(by_name)):
        chain[name] = task_seconds(by_name[name], overhead) + max((chain[n] for n in following[name]), default=0.0)
    return chain


def critical_path(stages: list[Stage], overhead: float) -> CriticalPath:
    """The longest chain of dependent task times (overheads included), and its stages in order."""
    by_name = check_graph(stages)
    finish: dict[str, float] = {}
    previous: dict[str, str | None] = {}
    for name in topological_order(by_name):
        stage = by_name[name]
        before = max(stage.after, key=lambda d: (finish[d], d), default=None)
        previous[name] = before
        finish[name] = (finish[before] if before else 0.0) + task_seconds(stage, overhead)
    if not finish:
        return CriticalPath((), 0.0)
    last = max(finish, key=lambda n: (finish[n], n))
    chain = []
    node: str | None = last
    while node is not None:
        chain.append(node)
        node = previous[node]
    return CriticalPath(tuple(reversed(chain)), finish[last])


def list_schedule(stages: list[Stage], workers: int, overhead: float) -> Schedule:
    """Simulate the stages on ``workers`` identical workers and one coordinator: whenever a machine
    is free, the ready task of its kind with the longest remaining chain starts on it (ties: name)."""
    if workers < 1:
        raise ValueError(f"the number of workers must be at least 1, got {workers}")
    by_name = check_graph(stages)
    following = dependents(by_name)
    priority = remaining_chain_seconds(stages, overhead)
    waiting_on = {name: len(stage.after) for name, stage in by_name.items()}
    ready = {name for name, count in waiting_on.items() if count == 0}
    free_workers = list(range(1, workers + 1))
    coordinator_free = True
    running: list[tuple[float, str, str]] = []  # (end, name, machine)
    done: list[ScheduledStage] = []
    now = 0.0
    while ready or running:
        for name in sorted(ready, key=lambda n: (-priority[n], n)):
            stage = by_name[name]
            if stage.on_worker and free_workers:
                machine = f"worker {free_workers.pop(0)}"
            elif not stage.on_worker and coordinator_free:
                machine, coordinator_free = "coordinator", False
            else:
                continue
            ready.discard(name)
            end = now + task_seconds(stage, overhead)
            heapq.heappush(running, (end, name, machine))
            done.append(ScheduledStage(name, machine, now, end))
        now, name, machine = heapq.heappop(running)
        finished = [(name, machine)]
        while running and running[0][0] <= now:
            _, other, other_machine = heapq.heappop(running)
            finished.append((other, other_machine))
        for name, machine in finished:
            if machine == "coordinator":
                coordinator_free = True
            else:
                free_workers.append(int(machine.split()[1]))
                free_workers.sort()
            for successor in following[name]:
                waiting_on[successor] -= 1
                if waiting_on[successor] == 0:
                    ready.add(successor)
    busy = sum(task_seconds(by_name[s.name], overhead) for s in done if by_name[s.name].on_worker)
    return Schedule(workers, tuple(sorted(done, key=lambda s: (s.start, s.name))), busy)


@dataclass(frozen=True)
class PlanRow:
    workers: int
    wall_seconds: float
    speed_up: float
    utilisation: float
    lower_bound_seconds: float  # max(critical path, worker work / W, the coordinator's work)
    limited_by: str  # "critical path" where the wall time is the critical path's, else "workers"


@dataclass(frozen=True)
class ClusterPlan:
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


# ---------------------------------------------------------------------------------------------
# Measured costs


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


def with_profile(params: dict[str, Any], profile: str) -> dict[str, Any]:
    """A copy of ``params`` with ``profile`` selected; an unknown profile names the known ones."""
    known = sorted(params.get("profiles", {}))
    if profile not in known:
        raise ParamsError(f"profile {profile!r} is not defined in params.yaml (known profiles: {', '.join(known)})")
    chosen = copy.deepcopy(params)
    chosen["profile"] = profile
    return chosen


def params_at_commit(commit: str, repo: str | Path = ".") -> dict[str, Any] | None:
    """params.yaml as of ``commit`` in the git repository ``repo``, or None where git cannot show it."""
    try:
        result = subprocess.run(["git", "show", f"{commit}:params.yaml"], cwd=repo, capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    try:
        loaded = yaml.safe_load(result.stdout)
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
# Configurations and their work


@dataclass(frozen=True)
class Configuration:
    """One training stage's configuration (dvc.yaml's fig2_mnist, fig2_binarization, fig2_frey_face,
    fig4_mnist, fig3). ``experiment`` is the experiment whose budgets and seed patterns it uses;
    ``binarize`` is set for the binarization study (``--binarize``, overriding training.binarize),
    whose runs use Figure 2's budgets but live in their own folder (:attr:`folder`)."""

    experiment: str
    dataset: str
    algorithm: str
    nz: int
    ntrain: int | None = None
    binarize: str | None = None

    @property
    def folder(self) -> str:
        """The folder under runs/ (and the stage-name prefix in provenance.json): ``binarization``
        for the binarization study, else the experiment."""
        return "binarization" if self.binarize is not None else self.experiment

    @property
    def run_name(self) -> str:
        """``runs/<folder>/<run_name>``, as dvc.yaml names the stage's output."""
        if self.ntrain is not None:
            return f"{self.dataset}_ntrain{self.ntrain}_{self.algorithm}"
        if self.binarize is not None:
            return f"{self.dataset}_nz{self.nz}_{self.algorithm}_{self.binarize}"
        return f"{self.dataset}_nz{self.nz}_{self.algorithm}"

    @property
    def train_stage(self) -> str:
        return f"train {self.folder}/{self.run_name}"

    @property
    def marginal_likelihood_stage(self) -> str:
        return f"marginal_likelihood {self.folder}/{self.run_name}"

    def seeds(self, params: dict[str, Any]) -> list[int]:
        """The seeds the stage trains: ``seeds.several`` is matched against the budget experiment's
        ``<experiment>/<run_name>`` (``fig2/mnist_nz20_aevb_dynamic`` for the binarization study),
        as ``vaebench train --experiment fig2`` does."""
        return configuration_seeds(params, self.experiment, self.run_name)

    def run_config(self, params: dict[str, Any]) -> RunConfig:
        """The run as ``vaebench train`` resolves it; ``--binarize`` overrides training.binarize in
        a copy of ``params`` (the caller's are left alone)."""
        if self.binarize is not None:
            params = {**params, "training": {**lookup(params, "training"), "binarize": self.binarize}}
        return build_run_config(params, self.experiment, self.dataset, self.algorithm, self.nz, self.ntrain)

    def twin(self) -> Configuration | None:
        """A binarization-study configuration's Figure 2 run with training.binarize (same model and
        budgets): its measured cost stands in where the study's own is missing. None otherwise."""
        if self.binarize is None:
            return None
        return Configuration(self.experiment, self.dataset, self.algorithm, self.nz, self.ntrain)


def configurations(params: dict[str, Any]) -> list[Configuration]:
    """The training stages of dvc.yaml, from params.yaml's ``experiments`` (fig4's MNIST model is a
    Figure 2 configuration; it is listed once if the Figure 2 grid already has it). The binarization
    study (``experiments.fig2.binarization_study``: MNIST AEVB at its Nz with its ``binarize``) is
    listed where params.yaml has it; older params files have none."""
    found: list[Configuration] = []
    fig2 = lookup(params, "experiments.fig2")
    for dataset in ("mnist", "frey_face"):
        for nz in lookup(params, f"experiments.fig2.{dataset}.nz"):
            for algorithm in fig2["algorithms"]:
                found.append(Configuration("fig2", dataset, algorithm, nz))
    found.append(Configuration("fig2", "mnist", "aevb", lookup(params, "experiments.fig4.mnist.nz")))
    study = fig2.get("binarization_study")
    if study:
        binarize = lookup(params, "experiments.fig2.binarization_study.binarize")
        for nz in lookup(params, "experiments.fig2.binarization_study.nz"):
            found.append(Configuration("fig2", "mnist", "aevb", nz, binarize=binarize))
    fig3_nz = lookup(params, "experiments.fig3.mnist.nz")
    for ntrain in lookup(params, "experiments.fig3.ntrain"):
        for algorithm in lookup(params, "experiments.fig3.algorithms"):
            found.append(Configuration("fig3", "mnist", algorithm, fig3_nz, ntrain))
    return list(dict.fromkeys(found))


def dataset_sizes(params: dict[str, Any], config: RunConfig) -> tuple[int, int]:
    """(training points, test points) of the run's data (pipeline/data/sources.py, params.yaml data)."""
    if config.dataset == "frey_face":
        train = int(lookup(params, "data.frey_face.train_size"))
        return train, FREY_FACE_IMAGES - train
    return (config.ntrain or MNIST_PKL.arrays["train_x"].shape[0]), MNIST_TEST_POINTS


@dataclass(frozen=True)
class TrainingWork:
    """What one training seed does: samples trained, trial samples (every candidate's), and
    datapoint evaluations of the bound curve."""

    samples: int
    trial_samples: int
    evaluation_points: int


def training_work(params: dict[str, Any], configuration: Configuration) -> TrainingWork:
    config = configuration.run_config(params)
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


def stage_shape(params: dict[str, Any], configuration: Configuration) -> tuple[int, bool, bool]:
    """(seeds, stacked, side by side) of a configuration's training stage on ``params``' profile."""
    seeds = len(configuration.seeds(params))
    return seeds, stackable(configuration.run_config(params)), seeds_side_by_side(params)


def rates_from_stage(measured_seconds: float, params: dict[str, Any], configuration: Configuration,
                     cores: int) -> TrainingRates:
    """One seed's rates from a measured training stage: the stage's seconds over its seed factor,
    split between evaluation (:data:`EVALUATION_SHARE`) and training samples (trial included)."""
    seeds, stacked, side_by_side = stage_shape(params, configuration)
    one_seed = measured_seconds / seeds_wall_factor(seeds, stacked, side_by_side, cores)
    work = training_work(params, configuration)
    share = EVALUATION_SHARE.get(configuration.experiment, 0.10) if work.evaluation_points else 0.0
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
    n_train, n_test = dataset_sizes(params, config)
    available = {"train": min(settings.train_points, n_train), "test": min(settings.test_points, n_test)}
    return {split: available[split] for split in settings.splits}


def marginal_likelihood_seed_work(params: dict[str, Any], configuration: Configuration,
                                  settings: MarginalLikelihoodSettings) -> EstimatorWork:
    """One seed's estimator work over its checkpoints (pipeline/evaluation/marginal_likelihood.py ``_evaluate_checkpoints``)."""
    config = configuration.run_config(params)
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


def marginal_likelihood_seeds_work(params: dict[str, Any], configuration: Configuration) -> list[EstimatorWork]:
    """Every seed's work: the first with the profile's settings, the others with ``other_seeds``."""
    first = settings_from_params(params, configuration.experiment)
    others = other_seed_settings(params, first, configuration.experiment)
    seeds = configuration.seeds(params)
    return [marginal_likelihood_seed_work(params, configuration, first if i == 0 else others)
            for i in range(len(seeds))]


def relative_estimator_rates(params: dict[str, Any]) -> dict[str, float]:
    """Seconds per unit of :class:`EstimatorWork` up to one common factor (:data:`ESTIMATOR_SECONDS`):
    Appendix D per point and transition, importance sampling per point and sample, grid per point."""
    settings = settings_from_params(params)
    transitions = (settings.burn_in + settings.hmc_samples) * settings.leapfrog_steps
    return {"appendix_d": ESTIMATOR_SECONDS["appendix_d"] / 1000 / transitions,
            "importance_sampling": ESTIMATOR_SECONDS["importance_sampling"] / 1000 / ESTIMATOR_SECONDS_K,
            "grid": ESTIMATOR_SECONDS["grid"] / 1000}


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


def marginal_likelihood_stage_seconds(seed_seconds: list[float], cores: int) -> float:
    """Seeds side by side, one process each: max(total / min(seeds, cores), the longest seed)."""
    if not seed_seconds:
        return 0.0
    return max(sum(seed_seconds) / min(len(seed_seconds), max(1, cores)), max(seed_seconds))


def estimator_variance_work(params: dict[str, Any]) -> float:
    """Point evaluations of the estimator_variance stage: for the first seed of every Figure 2 AEVB
    configuration, value_points x value_repeats + gradient_points x gradient_repeats (a gradient
    point counted as one value point), points capped at its training set, both estimators. Only
    runs/fig2 counts (pipeline/evaluation/estimator_variance.py), not the binarization study's runs."""
    settings = estimator_variance_settings(params)
    work = 0.0
    for configuration in configurations(params):
        if configuration.folder != "fig2" or configuration.algorithm != "aevb":
            continue
        n_train, _ = dataset_sizes(params, configuration.run_config(params))
        work += 2 * (min(settings["value_points"], n_train) * settings["value_repeats"]
                     + min(settings["gradient_points"], n_train) * settings["gradient_repeats"])
    return work


# ---------------------------------------------------------------------------------------------
# The scaled stage graph


def configuration_rates(configuration: Configuration, costs_params: dict[str, Any], measured: MeasuredCosts,
                        profile: str, runs_root: Path | None) -> tuple[TrainingRates, str]:
    """One seed's training rates and where they came from (``runs``, ``stage``, ``twin``): the
    configuration's run directories, else its measured stage, else, for a binarization-study
    configuration, its Figure 2 twin's (:meth:`Configuration.twin`; its runs, else its stage).
    Where none has them, the error names the configuration's own stage and the fix."""
    rates = rates_from_runs(runs_root, configuration) if runs_root is not None else None
    if rates is not None:
        return rates, "runs"
    twin = configuration.twin()
    if configuration.train_stage in measured.stage_seconds or twin is None:
        return rates_from_stage(measured.seconds(configuration.train_stage, profile), costs_params,
                                configuration, measured.cores), "stage"
    rates = rates_from_runs(runs_root, twin) if runs_root is not None else None
    if rates is None and twin.train_stage in measured.stage_seconds:
        rates = rates_from_stage(measured.stage_seconds[twin.train_stage], costs_params, twin, measured.cores)
    if rates is None:
        measured.seconds(configuration.train_stage, profile)  # raises, naming the study's own stage
    return rates, "twin"


@dataclass
class ScaledStages:
    stages: list[Stage]
    notes: list[str] = field(default_factory=list)


def scaled_stages(target: dict[str, Any], costs_params: dict[str, Any], measured: MeasuredCosts,
                  cores_per_worker: int = DEFAULT_CORES_PER_WORKER, runs_root: Path | None = None) -> ScaledStages:
    """The stage graph of ``target``'s profile with every stage's predicted seconds, from the
    costs measured on ``costs_params``' profile (the module docstring's model)."""
    if cores_per_worker < 1:
        raise ValueError(f"--cores-per-worker must be at least 1, got {cores_per_worker}")
    profile = target["profile"]
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
        rates, origin = configuration_rates(configuration, costs_params, measured, profile, runs_root)
        from_runs += origin == "runs"
        if origin == "twin":
            from_twins.append(configuration)
        seeds, stacked, side_by_side = stage_shape(target, configuration)
        seconds = rates.seed_seconds(training_work(target, configuration)) * seeds_wall_factor(
            seeds, stacked, side_by_side, cores_per_worker)
        stages.append(Stage(configuration.train_stage, seconds, ("prepare",), seeds=seeds))
        if configuration.folder == "binarization":  # read by the report only, not by figures
            study_trains.append(configuration.train_stage)
        else:
            trains.append(configuration.train_stage)
        if configuration.folder == "fig2":
            fig2_trains.append(configuration.train_stage)
        if configuration.experiment == "fig3":
            estimator_rates = (estimator_rates_from_runs(runs_root, configuration, costs_params)
                               if runs_root is not None else None)
            if estimator_rates is not None:
                marginal_likelihoods_from_runs += 1
            else:
                measured_work = marginal_likelihood_seeds_work(costs_params, configuration)
                relative = relative_estimator_rates(costs_params)
                scale = (measured.seconds(configuration.marginal_likelihood_stage, profile)
                         / sum(w.seconds(relative) for w in measured_work))
                estimator_rates = {k: v * scale for k, v in relative.items()}
            seed_seconds = [w.seconds(estimator_rates) for w in marginal_likelihood_seeds_work(target, configuration)]
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
        estimator_variance_work(target) / estimator_variance_work(costs_params))
    stages.append(Stage("estimator_variance", variance, tuple(fig2_trains), on_worker=False))
    stages.append(Stage("figures", measured.seconds("figures", profile), tuple(trains + marginal_likelihoods),
                        on_worker=False))
    stages.append(Stage("report", measured.seconds("report", profile),
                        ("figures", "estimator_variance", *study_trains), on_worker=False))
    return ScaledStages(stages, notes)
