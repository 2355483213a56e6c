"""The training stage: one run directory per configuration (:mod:`pipeline.run_directory`).

A run writes ``config.json`` (the resolved configuration), ``curve.csv`` (tidy: samples_seen,
wall_seconds, split, metric, value), ``checkpoints/`` (at fixed sample counts, written
atomically) and ``final.json``.

Choices a reader should know about:
- The curve's x-axis is the number of training samples evaluated (Figure 2); evaluations fall on
  log-spaced sample counts (``eval_points_per_decade`` from ``eval_first_samples``) plus the end.
- The plotted bound is estimator B with L = 1 on a fixed evaluation subset: the first
  ``eval_train_points`` training points and the first ``eval_test_points`` test points.
- A run's fingerprint is its configuration, the source of every module the training stage
  imports (:mod:`pipeline.code_dependencies`) and the sha256 of the data it trains on.
- Resuming: a run directory with checkpoints and no ``final.json`` was interrupted. The newest
  checkpoint with the same fingerprint (and the sha256 the run recorded for it) is loaded,
  including the RNG state and the curve so far, so the resumed run produces the same numbers as an
  uninterrupted one. A finished run with the same fingerprint is not trained again (``--force``
  does); one with another fingerprint is retrained beside it and replaced only when the new run
  has finished (:func:`run_training`). A folder that holds files vaebench did not write is
  refused, and a run directory is locked while a process writes it.
- Torch's thread count follows the cores other processes leave free (:mod:`pipeline.cpu_threads`),
  re-checked every ``PROGRESS_CHUNK_STEPS`` updates; the numbers do not depend on it.
- A NaN or inf objective (or, for MCEM, a diverging one) stops the run with an error naming the
  last good checkpoint, which is kept.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from baselines import MonteCarloEM, WakeSleep
from vae_core import AEVB, NonFiniteLossError, OptimizerConfig
from vae_core.training import select_step_size

from .code_dependencies import source_fingerprint
from .cpu_threads import ThreadGovernor
from .devices import resolve_device
from .files import save_torch, write_atomically, write_json
from .prepared_data import recorded_sha256
from .run_config import RunConfig
from .run_directory import (CHECKPOINTS_DIR, CONFIG_FILE, CURVE_FILE, FINAL_FILE, RETRAIN_DIR, CorruptRunError,
                            RunData, build_model, check_run_directory, checkpoint_path, load_checkpoint, load_run_data,
                            locked_run_directory, record_checkpoint, remove_temporaries, replace_run,
                            require_finished)

CURVE_COLUMNS = ["samples_seen", "wall_seconds", "split", "metric", "value"]
PROGRESS_CHUNK_STEPS = 200


class TrainingDivergedError(RuntimeError):
    """The objective became non-finite; the message names the last good checkpoint."""


def evaluation_schedule(first: int, total: int, per_decade: int, batch_size: int) -> list[int]:
    """Log-spaced sample counts (multiples of M) from ``first`` up to ``total``, and ``total``."""
    points = set()
    k = 0
    while (count := first * 10 ** (k / per_decade)) < total:
        points.add(max(batch_size, int(round(count / batch_size)) * batch_size))
        k += 1
    points.add(total)
    return sorted(points)


def checkpoint_schedule(every: int, total: int, batch_size: int) -> list[int]:
    """Evenly spaced sample counts (multiples of M) at which checkpoints are written, and the end."""
    step = max(batch_size, every // batch_size * batch_size)
    return sorted(set(range(step, total, step)) | {total})


# The module whose import closure is the training code (pipeline.code_dependencies): dvc.yaml's
# training stages depend on it, and a checkpoint resumes only under the same code.
TRAINING_MODULES = ("pipeline.train",)


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


def find_resumable_checkpoint(run_dir: Path, fingerprint: str) -> dict | None:
    """The newest readable checkpoint of an interrupted run with the same fingerprint, or None."""
    if (run_dir / FINAL_FILE).exists() or not (run_dir / CHECKPOINTS_DIR).is_dir():
        return None
    for path in sorted((run_dir / CHECKPOINTS_DIR).glob("samples_*.pt"), reverse=True):
        try:
            state = load_checkpoint(path)
        except CorruptRunError:  # an unreadable checkpoint is skipped, not trusted
            continue
        if state.get("fingerprint") == fingerprint:
            state["path"] = str(path)
            return state
    return None


def capture_rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def evaluation_rows(algorithm, data: RunData, samples_seen: int, wall_seconds: float) -> list[dict]:
    """The curve rows of one evaluation: the lower bound on train and test (for algorithms that
    have one) and any algorithm-specific metrics (e.g. MCEM's acceptance rate), split "train"."""
    rows = []
    for split, x in (("train", data.eval_train), ("test", data.eval_test)):
        value = algorithm.evaluate_lower_bound(x)
        if value is not None:
            rows.append({"samples_seen": samples_seen, "wall_seconds": wall_seconds, "split": split,
                         "metric": "lower_bound", "value": value})
    for metric, value in algorithm.extra_metrics().items():
        rows.append({"samples_seen": samples_seen, "wall_seconds": wall_seconds, "split": "train",
                     "metric": metric, "value": value})
    return rows


def write_curve(run_dir: Path, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    write_atomically(run_dir / CURVE_FILE, lambda tmp: frame.to_csv(tmp, index=False))


def run_training(
    config: RunConfig,
    run_dir: str | Path,
    prepared_dir: str | Path = "data/prepared",
    resume: bool = True,
    progress: bool = True,
    stop_after_samples: int | None = None,
    force: bool = False,
) -> dict:
    """Train one configuration into ``run_dir``; returns the contents of ``final.json``.

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
    run_dir = Path(run_dir)
    check_run_directory(run_dir)
    governor = ThreadGovernor()  # watches the machine from here on (it needs a moment before its first look)
    with locked_run_directory(run_dir):
        remove_temporaries(run_dir)
        fingerprint = run_fingerprint(config, prepared_dir)
        staging = run_dir / RETRAIN_DIR
        if finished_fingerprint(staging) == fingerprint:  # a retraining killed while replacing the run
            replace_run(staging, run_dir)
        if finished_fingerprint(run_dir) == fingerprint and not force:
            return {**require_finished(run_dir), "already_finished": True}
        if finished_fingerprint(run_dir) is None:
            return train_run(config, run_dir, prepared_dir, fingerprint, resume, progress, stop_after_samples, governor)
        if finished_fingerprint(staging) is not None or not resume:  # a finished or unwanted staging run
            shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(exist_ok=True)
        remove_temporaries(staging)
        final = train_run(config, staging, prepared_dir, fingerprint, resume, progress, stop_after_samples, governor)
        if "stopped_at" not in final:
            replace_run(staging, run_dir)
        return final


def finished_fingerprint(run_dir: Path) -> str | None:
    """The fingerprint of the finished run in ``run_dir`` (None if there is none)."""
    if not (run_dir / FINAL_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        return None
    try:
        return json.loads((run_dir / CONFIG_FILE).read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


def train_run(config: RunConfig, run_dir: Path, prepared_dir: str | Path, fingerprint: str, resume: bool,
              progress: bool, stop_after_samples: int | None, governor: ThreadGovernor) -> dict:
    """Train (or resume) the run in ``run_dir``, which holds no finished run; write ``final.json``.
    ``governor`` sets the thread count before the step-size trial and every chunk of updates."""
    device = resolve_device(config.device)
    data = load_run_data(config, prepared_dir, device)
    n_train = data.train.shape[0]
    M = config.minibatch_size
    total = math.ceil(config.samples / M) * M
    eval_points = evaluation_schedule(config.eval_first_samples, total, config.eval_points_per_decade, M)
    checkpoint_points = checkpoint_schedule(config.checkpoint_every, total, M)

    state = find_resumable_checkpoint(run_dir, fingerprint) if resume else None
    if state is None:
        for stale in (CHECKPOINTS_DIR, CURVE_FILE, FINAL_FILE):
            target = run_dir / stale
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    write_json(
        run_dir / CONFIG_FILE,
        {**config.to_dict(), "resolved_device": str(device), "fingerprint": fingerprint,
         "n_train": n_train, "evaluation_points": eval_points, "checkpoint_points": checkpoint_points},
    )
    governor.update()

    binarize = config.binarize == "dynamic"
    if state is None:
        trial_scores: dict[float, float] = {}
        step_size = config.step_size
        trial_start = time.perf_counter()
        if step_size is None:
            step_size, trial_scores = select_step_size(
                lambda s: build_algorithm(config, s, n_train, device),
                config.step_size_grid,
                data.train,
                data.eval_train,
                config.step_size_trial_samples // M,
                M,
                config.seed,
                binarize,
            )
        trial_seconds = time.perf_counter() - trial_start
        torch.manual_seed(config.seed)
        algorithm = build_algorithm(config, step_size, n_train, device)
        samples_seen, rows = 0, []
        train_seconds = eval_seconds = 0.0
        resumed_from = None
    else:
        step_size, trial_scores = state["step_size"], state["step_size_trial_scores"]
        trial_seconds = state["trial_seconds"]
        algorithm = build_algorithm(config, step_size, n_train, device)
        algorithm.load_state_dict(state["algorithm"])
        restore_rng_state(state["rng"], device)
        samples_seen, rows = state["samples_seen"], list(state["curve_rows"])
        train_seconds, eval_seconds = state["train_seconds"], state["eval_seconds"]
        resumed_from = state["path"]

    last_checkpoint = resumed_from
    bar = tqdm(
        total=total, initial=samples_seen, unit="sample", unit_scale=True, disable=not progress,
        desc=f"{config.algorithm} {config.dataset} Nz={config.z_dim}", mininterval=1.0,
    )
    events = sorted(set(eval_points) | set(checkpoint_points))
    try:
        for event in (e for e in events if e > samples_seen):
            while samples_seen < event:
                steps = min(PROGRESS_CHUNK_STEPS, (event - samples_seen) // M)
                governor.update()
                start = time.perf_counter()
                try:
                    last = algorithm.train_steps(data.train, steps, M, binarize)
                except NonFiniteLossError as err:
                    raise TrainingDivergedError(
                        f"run {run_dir} diverged between {samples_seen} and {samples_seen + steps * M} "
                        f"samples: {err} Last good checkpoint: {last_checkpoint or 'none yet'}."
                    ) from err
                train_seconds += time.perf_counter() - start
                samples_seen += steps * M
                bar.update(steps * M)
                bar.set_postfix(bound=f"{last:.1f}", refresh=False)
            if event in eval_points:
                start = time.perf_counter()
                rows += evaluation_rows(algorithm, data, samples_seen,
                                        round(trial_seconds + train_seconds + eval_seconds, 3))
                eval_seconds += time.perf_counter() - start
                write_curve(run_dir, rows)
            if event in checkpoint_points:
                last_checkpoint = checkpoint_path(run_dir, samples_seen)
                save_torch(
                    last_checkpoint,
                    {"fingerprint": fingerprint, "samples_seen": samples_seen,
                     "algorithm": algorithm.state_dict(), "rng": capture_rng_state(device),
                     "curve_rows": rows, "step_size": step_size,
                     "step_size_trial_scores": trial_scores, "trial_seconds": trial_seconds,
                     "train_seconds": train_seconds, "eval_seconds": eval_seconds},
                )
                record_checkpoint(last_checkpoint)
                if stop_after_samples is not None and samples_seen >= stop_after_samples:
                    return {"stopped_at": samples_seen}
    finally:
        bar.close()

    final_rows = {row["split"]: row["value"] for row in rows
                  if row["samples_seen"] == samples_seen and row["metric"] == "lower_bound"}
    final = {
        "samples_seen": samples_seen,
        "step_size": step_size,
        "step_size_trial_scores": {str(k): v for k, v in trial_scores.items()},
        "final_train_lower_bound": final_rows.get("train"),
        "final_test_lower_bound": final_rows.get("test"),
        "trial_seconds": round(trial_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "training_samples_per_second": round(samples_seen / train_seconds, 1) if train_seconds else None,
        "device": str(device),
        "resumed_from": resumed_from,
        "final_metrics": algorithm.extra_metrics(),
    }
    write_json(run_dir / FINAL_FILE, final)
    return final
