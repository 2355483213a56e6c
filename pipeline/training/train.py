"""The training stage: one run directory per configuration (:mod:`pipeline.runs.directory`).

A run writes ``config.json`` (the resolved configuration), ``curve.csv`` (tidy: samples_seen,
wall_seconds, split, metric, value), ``checkpoints/`` (at fixed sample counts, written
atomically) and ``final.json``.

Choices a reader should know about:
- The curve's x-axis is the number of training samples evaluated (Figure 2); evaluations fall on
  log-spaced sample counts (``eval_points_per_decade`` from ``eval_first_samples``) plus the end.
- The plotted bound is estimator B with L = 1 on a fixed evaluation subset: the first
  ``eval_train_points`` training points and the first ``eval_test_points`` test points.
- A run's fingerprint is its configuration, the source of every module the training stage
  imports (:mod:`pipeline.plumbing.code_dependencies`) and the sha256 of the data it trains on.
- Resuming: a run directory with checkpoints and no ``final.json`` was interrupted. The newest
  checkpoint with the same fingerprint (and the sha256 the run recorded for it) is loaded,
  including the RNG state and the curve so far, so the resumed run produces the same numbers as an
  uninterrupted one. A finished run with the same fingerprint is not trained again (``--force``
  does); one with another fingerprint is retrained beside it and replaced only when the new run
  has finished (:func:`run_training`). A folder that holds files vaebench did not write is
  refused, and a run directory is locked while a process writes it.
- A run keeps one torch thread count, recorded in config.json and its checkpoints (a resume takes
  it again): Figure 2's numbers depend on it in their last bits (:mod:`pipeline.plumbing.cpu_threads`;
  ``VAEBENCH_THREADS=adaptive`` follows the free cores instead, every ``PROGRESS_CHUNK_STEPS``
  updates).
- A NaN or inf objective (or, for MCEM, a diverging one) stops the run with an error naming the
  last good checkpoint, which is kept.
"""
from __future__ import annotations

import hashlib
import math
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

import torch
from tqdm import tqdm

from baselines import MonteCarloEM, WakeSleep
from vae_core import AEVB, NonFiniteLossError, OptimizerConfig
from vae_core.training import select_step_size, train_stacked_steps

from pipeline.data.prepared import recorded_sha256
from pipeline.plumbing.code_dependencies import source_fingerprint
from pipeline.plumbing.cpu_threads import ThreadGovernor
from pipeline.plumbing.devices import resolve_device
from pipeline.plumbing.errors import UserError
from pipeline.plumbing.files import write_json
from pipeline.plumbing.processes import run_in_processes
from pipeline.runs.config import RunConfig
from pipeline.runs.directory import (CHECKPOINTS_DIR, CONFIG_FILE, CURVE_FILE, FINAL_FILE, RETRAIN_DIR, RunData,
                                     build_model, check_run_directory, find_resumable_checkpoint,
                                     finished_fingerprint, load_run_data, locked_run_directory, remove_temporaries,
                                     replace_run, require_finished)
from pipeline.training.run_state import (RunState, capture_rng_state, evaluation_rows, generator_from_state,
                                         restore_rng_state, write_checkpoint, write_curve, write_final)
from pipeline.training.schedule import PROGRESS_CHUNK_STEPS, checkpoint_schedule, evaluation_schedule, stackable



class TrainingDivergedError(UserError, RuntimeError):
    """The objective became non-finite; the message names the last good checkpoint."""


# The module whose import closure is the training code (pipeline.plumbing.code_dependencies): dvc.yaml's
# training stages depend on it, and a checkpoint resumes only under the same code.
TRAINING_MODULES = ("pipeline.training.train",)


def build_algorithm(config: RunConfig, step_size: float, n_train: int, device: torch.device):
    """A freshly initialized algorithm for ``config`` (consumes the global RNG for the init)."""
    model = build_model(config, device)
    optimizer = OptimizerConfig(step_size, config.weight_prior_std, config.warmup_steps, config.adagrad_eps)
    if config.algorithm == "aevb":
        return AEVB(model, n_train, optimizer, config.estimator, config.samples_per_datapoint)
    if config.algorithm == "wake_sleep":
        return WakeSleep(model, n_train, optimizer)
    if config.algorithm == "mcem":
        return MonteCarloEM(model, n_train, optimizer, batch_size=config.minibatch_size, **config.algorithm_options)
    raise ValueError(f"unknown algorithm {config.algorithm!r}")


def run_fingerprint(config: RunConfig, prepared_dir: str | Path) -> str:
    """What a run is: its configuration, the training code, and the data it trains on (the
    prepared file's sha256 as ``prepare`` recorded it). A checkpoint resumes, and a finished run
    stands, only under the same fingerprint."""
    parts = (config.fingerprint(), source_fingerprint(TRAINING_MODULES),
             recorded_sha256(config.prepared_file, Path(prepared_dir)))
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()


def run_training(
    config: RunConfig,
    run_dir: str | Path,
    prepared_dir: str | Path = "data/prepared",
    resume: bool = True,
    progress: bool = True,
    stop_after_samples: int | None = None,
    force: bool = False,
    side_by_side: bool = False,
) -> dict:
    """Train one configuration and seed into ``run_dir``; returns the contents of ``final.json``
    (:func:`train_seeds` with one run). ``side_by_side``: this process is one of several training
    at once (:func:`train_seeds`), so the run is charged its CPU time, not the wall time it shared."""
    return train_seeds([config], [run_dir], prepared_dir, resume, progress, stop_after_samples, force,
                       side_by_side=side_by_side)[0]


def train_seeds(
    configs: list[RunConfig],
    run_dirs: list[str | Path],
    prepared_dir: str | Path = "data/prepared",
    resume: bool = True,
    progress: bool = True,
    stop_after_samples: int | None = None,
    force: bool = False,
    parallel: bool = True,
    side_by_side: bool = False,
) -> list[dict]:
    """Train runs (one configuration, several seeds) into their ``run_dirs``; returns each run's
    ``final.json`` contents.

    Runs of fused AEVB that start from the same point (all new, or all resuming at the same
    checkpoint) train together in this process, stacked in one
    :class:`~vae_core.fused_aevb.StackedAEVB`: each seed draws its own random numbers from its own
    generator in the order it would alone, so its numbers are those of the seed trained alone
    (bit for bit where the update's buffers are whole 16-float vectors, to rounding otherwise:
    tests/test_seeds.py, tests/test_fused_aevb.py). The seeds of other algorithms (wake-sleep,
    MCEM: no stacked engine) train at once in one worker process each (``parallel``; otherwise one
    after another here): on 2 cores two small models train about twice as fast side by side as one
    after another, since one such model gains little from a second thread (docs/speed.md); each
    process's thread count follows the cores the others leave free, and the numbers do not depend
    on it (:mod:`pipeline.plumbing.cpu_threads`). For every run:

    - ``run_dir`` must be new, empty, or a run directory of vaebench's (anything else is refused:
      training never deletes files it did not write), and is locked while this process writes it.
    - A finished run of the same fingerprint (configuration, training code, data) is left as it
      is (returned with ``already_finished``), unless ``force``. A finished run of another
      fingerprint (or with ``force``) is retrained in ``run_dir/.retrain``, which replaces it
      only once finished: a retraining killed midway loses nothing, and resumes.
    - An interrupted run resumes from its newest checkpoint of the same fingerprint (``resume``).

    ``stop_after_samples`` ends the process early after that many samples, as if killed right
    after the checkpoint at or before it (used by the resume tests).
    """
    run_dirs = [Path(d) for d in run_dirs]
    if len(configs) != len(run_dirs) or len(set(run_dirs)) != len(run_dirs):
        raise ValueError("train_seeds needs one distinct run directory per configuration")
    if parallel and len(configs) > 1 and not all(stackable(c) for c in configs):
        return run_in_processes(run_training, [
            ((config, run_dir, prepared_dir, resume, False, stop_after_samples, force, True), str(run_dir))
            for config, run_dir in zip(configs, run_dirs)], progress)
    for run_dir in run_dirs:
        check_run_directory(run_dir)
    governor = ThreadGovernor()  # watches the machine from here on (it needs a moment before its first look)
    results: list[dict | None] = [None] * len(configs)
    with ExitStack() as locks:
        for run_dir in run_dirs:
            locks.enter_context(locked_run_directory(run_dir))
        pending = []  # (index, config, directory to train in, fingerprint)
        for index, (config, run_dir) in enumerate(zip(configs, run_dirs)):
            remove_temporaries(run_dir)
            fingerprint = run_fingerprint(config, prepared_dir)
            staging = run_dir / RETRAIN_DIR
            if finished_fingerprint(staging) == fingerprint:  # a retraining killed while replacing the run
                replace_run(staging, run_dir)
            if finished_fingerprint(run_dir) == fingerprint and not force:
                results[index] = {**require_finished(run_dir), "already_finished": True}
                continue
            if finished_fingerprint(run_dir) is None:
                pending.append((index, config, run_dir, fingerprint))
                continue
            if finished_fingerprint(staging) is not None or not resume:  # a finished or unwanted staging run
                shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(exist_ok=True)
            remove_temporaries(staging)
            pending.append((index, config, staging, fingerprint))
        finals = train_pending([(c, d, f) for _, c, d, f in pending], prepared_dir, resume, progress,
                               stop_after_samples, governor, side_by_side)
        for (index, _, target, _), final in zip(pending, finals):
            if target != run_dirs[index] and "stopped_at" not in final:
                replace_run(target, run_dirs[index])
            results[index] = final
    return results


def train_pending(pending: list[tuple[RunConfig, Path, str]], prepared_dir: str | Path, resume: bool,
                  progress: bool, stop_after_samples: int | None, governor: ThreadGovernor,
                  side_by_side: bool = False) -> list[dict]:
    """Train (or resume) the runs in ``pending`` (config, directory, fingerprint), which hold no
    finished run: stacked when they are fused AEVB runs at the same starting point, otherwise one
    after another. Writes each run's ``final.json``; returns their contents in order."""
    if not pending:
        return []
    device = resolve_device(pending[0][0].device)
    data = load_run_data(pending[0][0], prepared_dir, device)
    states = [prepare_run(config, run_dir, fingerprint, data, device, resume, governor)
              for config, run_dir, fingerprint in pending]
    stack = len(states) > 1 and all(s.algorithm.stackable for s in states) \
        and len({s.samples_seen for s in states}) == 1 and len({s.config.without_seed().fingerprint() for s in states}) == 1
    if stack:
        return train_states(states, data, device, progress, stop_after_samples, governor, side_by_side)
    finals = []
    for state in states:
        # a run trained alone draws from torch's global generator, set where prepare_run left the run
        restore_rng_state(state.rng_state, device)
        finals += train_states([state], data, device, progress, stop_after_samples, governor, side_by_side)
    return finals


def prepare_run(config: RunConfig, run_dir: Path, fingerprint: str, data: RunData, device: torch.device,
                resume: bool, governor: ThreadGovernor) -> RunState:
    """Write config.json, then resume the run from its newest checkpoint or start it: the step-size
    trial (if the step size is ``auto``), then the seeded initialization. The run's random numbers
    continue from ``state.rng_state`` (torch's generator state right after the initialization, or
    the checkpoint's saved state)."""
    n_train = data.train.shape[0]
    M = config.minibatch_size
    total = math.ceil(config.samples / M) * M
    eval_points = evaluation_schedule(config.eval_first_samples, total, config.eval_points_per_decade, M)
    checkpoint_points = checkpoint_schedule(config.checkpoint_every, total, M)
    saved = find_resumable_checkpoint(run_dir, fingerprint) if resume else None
    if saved is None:
        for stale in (CHECKPOINTS_DIR, CURVE_FILE, FINAL_FILE):
            target = run_dir / stale
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    # a run keeps its thread count (its numbers depend on it: pipeline.plumbing.cpu_threads); a new run takes
    # the count this process started with
    threads = int(saved["threads"]) if saved is not None and saved.get("threads") else governor.max_threads
    write_json(
        run_dir / CONFIG_FILE,
        {**config.to_dict(), "resolved_device": str(device), "fingerprint": fingerprint,
         "n_train": n_train, "evaluation_points": eval_points, "checkpoint_points": checkpoint_points,
         "threads": threads},
    )
    governor.update()
    state = RunState(config, run_dir, fingerprint, threads=threads)
    governor.fix(threads)  # the trial (or nothing, when resuming) runs with the run's count
    if saved is None:
        state.step_size = config.step_size
        trial_start = time.perf_counter()
        if state.step_size is None:
            state.step_size, state.trial_scores = select_step_size(
                lambda s: build_algorithm(config, s, n_train, device), config.step_size_grid, data.train,
                data.eval_train, config.step_size_trial_samples // M, M, config.seed, config.binarize == "dynamic")
        state.trial_seconds = time.perf_counter() - trial_start
        torch.manual_seed(config.seed)
        state.algorithm = build_algorithm(config, state.step_size, n_train, device)
        state.rng_state = capture_rng_state(device)
    else:
        state.step_size, state.trial_scores = saved["step_size"], saved["step_size_trial_scores"]
        state.trial_seconds = saved["trial_seconds"]
        state.algorithm = build_algorithm(config, state.step_size, n_train, device)
        state.algorithm.load_state_dict(saved["algorithm"])
        state.rng_state = saved["rng"]
        state.samples_seen, state.rows = saved["samples_seen"], list(saved["curve_rows"])
        state.train_seconds, state.eval_seconds = saved["train_seconds"], saved["eval_seconds"]
        state.resumed_from = state.last_checkpoint = saved["path"]
    return state


def train_states(states: list[RunState], data: RunData, device: torch.device, progress: bool,
                 stop_after_samples: int | None, governor: ThreadGovernor, side_by_side: bool = False) -> list[dict]:
    """The training loop: chunks of updates up to each evaluation and checkpoint point. One state
    trains alone on torch's global generator (``TrainingAlgorithm.train_steps``); several train
    stacked (:func:`vae_core.training.train_stacked_steps`), each on its own generator, and each
    is charged its share of the stack's time (so samples/s is per run). A run trained
    ``side_by_side`` with others (one process each) is charged its process's CPU time per thread:
    the time it would have taken alone with its threads, not the wall time it shared."""
    governor.fix(states[0].threads)
    clock = (lambda: time.process_time() / max(1, states[0].threads)) if side_by_side else time.perf_counter
    charged = ("CPU time per thread (trained side by side)" if side_by_side
               else f"wall time / {len(states)} (stacked)" if len(states) > 1 else "wall time")
    wall_start = time.perf_counter()
    first = states[0].config
    M = first.minibatch_size
    total = math.ceil(first.samples / M) * M
    eval_points = evaluation_schedule(first.eval_first_samples, total, first.eval_points_per_decade, M)
    checkpoint_points = checkpoint_schedule(first.checkpoint_every, total, M)
    binarize = first.binarize == "dynamic"
    stacked = len(states) > 1
    engine = AEVB.stack([s.algorithm for s in states]) if stacked else None
    for state in states if stacked else []:
        state.generator = generator_from_state(state.rng_state, device)
    seeds = ",".join(str(s.config.seed) for s in states)
    bar = tqdm(
        total=total, initial=states[0].samples_seen, unit="sample", unit_scale=True, disable=not progress,
        desc=f"{first.algorithm} {first.dataset} Nz={first.z_dim} seed {seeds}", mininterval=1.0,
    )
    samples_seen = states[0].samples_seen
    events = sorted(set(eval_points) | set(checkpoint_points))
    try:
        for event in (e for e in events if e > samples_seen):
            while samples_seen < event:
                steps = min(PROGRESS_CHUNK_STEPS, (event - samples_seen) // M)
                governor.update()
                start = clock()
                try:
                    if stacked:
                        bounds = train_stacked_steps(engine, [data.train] * len(states), [s.generator for s in states],
                                                     steps, M, binarize)
                        last = float(bounds.mean())
                    else:
                        last = states[0].algorithm.train_steps(data.train, steps, M, binarize)
                except NonFiniteLossError as err:
                    where = "; ".join(f"{s.run_dir}: last good checkpoint {s.last_checkpoint or 'none yet'}"
                                      for s in states)
                    raise TrainingDivergedError(
                        f"training diverged between {samples_seen} and {samples_seen + steps * M} samples: {err} "
                        f"({where}).") from err
                share = (clock() - start) / len(states)
                samples_seen += steps * M
                for state in states:
                    state.train_seconds += share
                    state.samples_seen = samples_seen
                bar.update(steps * M)
                bar.set_postfix(bound=f"{last:.1f}", refresh=False)
            for state in states:
                if event in eval_points:
                    start = time.perf_counter()
                    state.rows += evaluation_rows(state.algorithm, data, samples_seen, round(
                        state.trial_seconds + state.train_seconds + state.eval_seconds, 3))
                    state.eval_seconds += time.perf_counter() - start
                    write_curve(state.run_dir, state.rows)
                if event in checkpoint_points:
                    write_checkpoint(state, device, stacked)
            if event in checkpoint_points and stop_after_samples is not None and samples_seen >= stop_after_samples:
                return [{"stopped_at": samples_seen} for _ in states]
    finally:
        bar.close()
    wall = time.perf_counter() - wall_start
    return [write_final(state, device, len(states), charged, wall) for state in states]


