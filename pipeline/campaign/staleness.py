"""Does the current code still reproduce an archived run? Bit for bit, or the run is stale.

A change to the training code changes every archived run's fingerprint. Keeping such a run
silently would judge the paper with numbers today's code does not make; retraining every one
silently would cost the whole campaign again. So each archived run is checked, and the answer
is said per run (the report's "Where these runs come from"):

- **the same training code**: the fingerprint of every file the train stage imports is the one
  the run was trained with. Nothing to retrain.
- **a prefix retrained**: otherwise the run's configuration is trained again with the current
  code up to ``prefix_samples`` (the last of the run's own evaluation points at or below it: the
  step-size trial, the initialisation and the first updates), with the run's thread count and the
  seeds it was trained with (stacked AEVB seeds are bit-identical only as the same stack), and
  every value of the new curve (each evaluation of the lower bound, on both splits, and every
  algorithm-specific metric), the step size and the trial's scores are compared, bit for bit,
  with the archived run's own. Equal: the current code reproduces it exactly (a pure refactor).
  Any difference: stale, and the first difference is named.
- **marginal likelihoods** (Figure 3) are computed from checkpoints that the archive does not
  keep: an archived run whose estimator code has changed since is stale too.

A prefix's answer is kept in ``checks.json`` beside the archive's entries, keyed by the current
code's fingerprints, so a check runs once per code version.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pandas as pd

from pipeline.campaign.archive import Entry, estimator_code, training_code
from pipeline.plumbing.cpu_threads import THREADS_ENV
from pipeline.plumbing.files import write_json
from pipeline.runs.archive_status import EXACT, STALE
from pipeline.runs.directory import CONFIG_FILE, CURVE_FILE, FINAL_FILE, read_run_config, seed_run_dir
from pipeline.training.train import train_seeds

CHECKS_FILE = "checks.json"
SAME_CODE = "the same training code"


@contextmanager
def threads(count: int):
    """Train with ``count`` torch threads (the archived run's), as ``VAEBENCH_THREADS`` does."""
    before = os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = str(int(count))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = before


def prefix_point(entry: Entry, prefix_samples: int) -> int:
    """The last of the run's own evaluation points at or below ``prefix_samples`` (at least its first)."""
    points = [int(p) for p in json.loads((entry.path / CONFIG_FILE).read_text())["evaluation_points"]]
    return max([p for p in points if p <= prefix_samples] or [min(points)])


def _curve(path: Path, up_to: int) -> pd.DataFrame:
    frame = pd.read_csv(path).drop(columns="wall_seconds")
    frame = frame[frame.samples_seen <= up_to]
    return frame.sort_values(["samples_seen", "split", "metric"]).reset_index(drop=True)


def first_difference(archived: Path, retrained: Path, up_to: int) -> str:
    """The first value that differs between an archived run and its retrained prefix (empty when none)."""
    old, new = _curve(archived / CURVE_FILE, up_to), _curve(retrained / CURVE_FILE, up_to)
    if len(old) != len(new) or not old[["samples_seen", "split", "metric"]].equals(new[["samples_seen", "split", "metric"]]):
        return f"the curve's evaluations up to {up_to:,} samples differ ({len(old)} archived, {len(new)} now)"
    for a, b in zip(old.itertuples(), new.itertuples()):
        if a.value != b.value:
            return (f"the {a.split} {a.metric} at {a.samples_seen:,} samples: {a.value!r} archived, {b.value!r} "
                    f"with the current code")
    old_final, new_final = (json.loads((d / FINAL_FILE).read_text()) for d in (archived, retrained))
    for key in ("step_size", "step_size_trial_scores"):
        if old_final.get(key) != new_final.get(key):
            return f"{key}: {old_final.get(key)!r} archived, {new_final.get(key)!r} with the current code"
    return ""


def check_group(group: list[Entry], prepared_dir: str | Path, prefix_samples: int) -> dict[str, dict]:
    """Check archived runs of one configuration trained in one process (the same seeds stacked):
    per key, ``{"status": exact|stale, "how": ...}``."""
    results: dict[str, dict] = {}
    current = training_code()
    for entry in group:
        if entry.record.get("estimator_code") not in (None, estimator_code()):
            results[entry.key] = {"status": STALE, "how": "the marginal-likelihood estimators' code changed since it "
                                                          "was evaluated (its checkpoints are not archived)"}
    pending = [e for e in group if e.key not in results]
    if all(e.record.get("training_code") == current for e in pending):
        results.update({e.key: {"status": EXACT, "how": SAME_CODE} for e in pending})
        return results
    if not pending:
        return results
    first = pending[0]
    seeds = first.record.get("trained_with_seeds") or [read_run_config(first.path).seed]
    point = prefix_point(first, prefix_samples)
    base = replace(read_run_config(first.path), samples=point)
    with tempfile.TemporaryDirectory(prefix="vaebench-prefix-") as work, threads(first.record.get("threads", 1)):
        dirs = [seed_run_dir(Path(work), seed) for seed in seeds]
        train_seeds([replace(base, seed=seed) for seed in seeds], dirs, prepared_dir, resume=False, progress=False,
                    parallel=False)
        for entry in pending:
            seed = read_run_config(entry.path).seed
            differs = first_difference(entry.path, seed_run_dir(Path(work), seed), point)
            results[entry.key] = (
                {"status": EXACT, "how": f"a prefix of {point:,} samples retrained with the current code, every "
                                         f"value equal"} if not differs else
                {"status": STALE, "how": f"the current code trains it otherwise: {differs}"})
    return results


def check_entries(all_entries: list[Entry], archive_root: str | Path, prepared_dir: str | Path,
                  prefix_samples: int) -> dict[str, dict]:
    """Every entry's status under the current code (from ``checks.json`` where this code version
    was checked before); the new answers are added to ``checks.json``."""
    path = Path(archive_root) / CHECKS_FILE
    version = f"training {training_code()[:16]}, estimators {estimator_code()[:16]}"
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    known = recorded.get(version, {})
    groups: dict[tuple, list[Entry]] = {}
    for entry in all_entries:
        if entry.key in known and known[entry.key].get("run_fingerprint") == entry.record.get("run_fingerprint"):
            continue
        configuration = entry.key.rsplit("/", 1)[0]
        groups.setdefault((configuration, tuple(entry.record.get("trained_with_seeds") or [])), []).append(entry)
    for group in groups.values():
        for key, result in check_group(group, prepared_dir, prefix_samples).items():
            entry = next(e for e in group if e.key == key)
            known[key] = {**result, "run_fingerprint": entry.record.get("run_fingerprint")}
    if groups:
        write_json(path, {version: known})  # answers for older code versions no longer matter
    return {e.key: known[e.key] for e in all_entries}


__all__ = ["CHECKS_FILE", "SAME_CODE", "check_entries", "check_group", "first_difference", "prefix_point"]
