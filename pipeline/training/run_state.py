"""A run being trained (:class:`RunState`) and what it writes: its random-number state, curve
rows, checkpoints and ``final.json``. A checkpoint carries everything a resume needs to go on to
the same numbers as an uninterrupted run (pipeline/training/train.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from pipeline.plumbing.files import save_torch, write_atomically, write_json
from pipeline.runs.config import RunConfig
from pipeline.runs.directory import CURVE_FILE, FINAL_FILE, RunData, checkpoint_path, record_checkpoint

CURVE_COLUMNS = ["samples_seen", "wall_seconds", "split", "metric", "value"]


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


@dataclass
class RunState:
    """One run being trained: where it writes, and everything its checkpoints carry."""

    config: RunConfig
    run_dir: Path
    fingerprint: str
    algorithm: object = None
    step_size: float = 0.0
    trial_scores: dict = field(default_factory=dict)
    trial_seconds: float = 0.0
    samples_seen: int = 0
    rows: list = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    resumed_from: str | None = None
    last_checkpoint: str | Path | None = None
    threads: int = 1  # the run's fixed torch thread count (recorded; pipeline.plumbing.cpu_threads)
    rng_state: dict | None = None  # the run's random numbers where training continues (capture_rng_state)
    generator: torch.Generator | None = None  # stacked runs: the run's own generator, from rng_state


def generator_from_state(rng: dict, device: torch.device) -> torch.Generator:
    """A generator on ``device`` in a checkpoint's saved state (:func:`capture_rng_state`)."""
    generator = torch.Generator(device=device)
    generator.set_state(rng["cuda"] if device.type == "cuda" else rng["cpu"])
    return generator


def generator_rng_state(generator: torch.Generator, device: torch.device) -> dict:
    """A stacked run's random-number state in the format of :func:`capture_rng_state` (so a
    checkpoint resumes the same whether its run was stacked or not)."""
    state = {"cpu": generator.get_state() if device.type != "cuda" else torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = generator.get_state()
    return state


def write_checkpoint(state: RunState, device: torch.device, stacked: bool) -> None:
    state.last_checkpoint = checkpoint_path(state.run_dir, state.samples_seen)
    rng = generator_rng_state(state.generator, device) if stacked else capture_rng_state(device)
    save_torch(
        state.last_checkpoint,
        {"fingerprint": state.fingerprint, "samples_seen": state.samples_seen,
         "algorithm": state.algorithm.state_dict(), "rng": rng,
         "curve_rows": state.rows, "step_size": state.step_size,
         "step_size_trial_scores": state.trial_scores, "trial_seconds": state.trial_seconds,
         "train_seconds": state.train_seconds, "eval_seconds": state.eval_seconds,
         "threads": state.threads},
    )
    record_checkpoint(state.last_checkpoint)


def write_final(state: RunState, device: torch.device, stacked_runs: int, charged: str = "wall time",
                wall_seconds: float | None = None) -> dict:
    final_rows = {row["split"]: row["value"] for row in state.rows
                  if row["samples_seen"] == state.samples_seen and row["metric"] == "lower_bound"}
    final = {
        "samples_seen": state.samples_seen,
        "step_size": state.step_size,
        "step_size_trial_scores": {str(k): v for k, v in state.trial_scores.items()},
        "final_train_lower_bound": final_rows.get("train"),
        "final_test_lower_bound": final_rows.get("test"),
        "trial_seconds": round(state.trial_seconds, 3),
        "train_seconds": round(state.train_seconds, 3),
        "eval_seconds": round(state.eval_seconds, 3),
        "training_samples_per_second": round(state.samples_seen / state.train_seconds, 1)
        if state.train_seconds else None,
        "stacked_runs": stacked_runs,
        "train_time_charged": charged,  # what train_seconds (and samples/s) measure
        "wall_seconds": round((wall_seconds or 0.0) + state.trial_seconds, 3),  # this process, start to end
        "threads": torch.get_num_threads(),
        "device": str(device),
        "resumed_from": state.resumed_from,
        "final_metrics": state.algorithm.extra_metrics(),
    }
    write_json(state.run_dir / FINAL_FILE, final)
    return final

