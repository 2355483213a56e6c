"""``reports/<profile>/provenance.json``: what made a report (docs/design.md, "File contracts").

Git commit and dirty flag (with the changed files; the pipeline's own outputs -- ``dvc.lock``,
``reports/``, ``runs/``, ``data/`` -- do not count as dirty, since ``dvc repro`` rewrites them
while it runs), the sha256 of params.yaml's content, the data files' sha256s, the versions of the
packages that compute the numbers, the device and CPU, and the wall time of every stage as its
outputs record it.

``environment`` is what ``vaebench compare`` reads to tell an environment change from a regression:
``devices`` (those the runs trained on, from their final.json, as the top-level ``devices``),
``torch`` (``torch.__version__``, e.g. ``2.13.0+cu126``), ``torch_cuda`` (``torch.version.cuda``:
the CUDA the build was made for, None on a CPU build) and ``gpu`` (the name of CUDA device 0, None
without one). The torch build and GPU are those of the process that writes the report; final.json
does not record the build its run trained with.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

from pipeline.plumbing import git

PACKAGES = ("vaebench", "torch", "numpy", "scipy", "scikit-learn", "pandas", "matplotlib", "seaborn", "click", "dvc")
GENERATED = ("dvc.lock", "reports/", "runs/", "data/")


def git_state(repo: Path) -> dict:
    commit = git.head_commit(repo)
    if commit is None:
        return {"commit": None, "dirty": None, "changed_files": [], "note": "not a git checkout"}
    status = git.output(["status", "--porcelain", "--untracked-files=no"], repo) or ""
    changed = sorted(line[3:] for line in status.splitlines()
                     if line[3:] and not line[3:].startswith(GENERATED))
    return {"commit": commit, "dirty": bool(changed), "changed_files": changed}


def params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def data_checksums(raw_dir: Path) -> dict[str, str]:
    checksums = {}
    for path in sorted(Path(raw_dir).glob("*")):
        if path.is_file() and not path.name.startswith("."):
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            checksums[path.name] = digest.hexdigest()
    return checksums


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine() -> dict:
    cpu = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available(),
            "executable": sys.executable}


def torch_build() -> dict[str, str | None]:
    """The torch build of this process and the GPU it sees: ``torch`` (version), ``torch_cuda``
    (the CUDA version it was built for; None on a CPU build) and ``gpu`` (CUDA device 0's name;
    None when CUDA is not available)."""
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def environment(devices: list[str]) -> dict:
    """What ``vaebench compare`` checks between two reports: the devices the runs trained on and
    the torch build (:func:`torch_build`)."""
    return {"devices": list(devices), **torch_build()}


def stage_wall_times(finals: pd.DataFrame, marginal_likelihoods: pd.DataFrame,
                     variance: pd.DataFrame | None, extra: dict[str, float]) -> dict[str, float]:
    """Seconds per stage as the outputs record them: a training run's step-size trial, training
    and evaluation time; the marginal-likelihood stage's estimator times; the estimator-variance
    stage; and ``extra`` (figures, report)."""
    times = {}
    for (experiment, run), group in finals.groupby(["experiment", "run"], sort=True):
        # a stage trains every seed of its configuration: stacked or side by side they overlap (the
        # longest seed's wall time is the stage's), one after another they add up
        together = ("wall_seconds" in group and group.wall_seconds.notna().all() and len(group) > 1
                    and not group.train_time_charged.eq("wall time").all())
        seconds = (group.wall_seconds.max() if together
                   else (group.trial_seconds + group.train_seconds + group.eval_seconds).sum())
        times[f"train {experiment}/{run}"] = round(float(seconds), 1)
    if not marginal_likelihoods.empty:
        # the sum of the estimators' times over seeds (the seeds run side by side: an upper bound
        # on the stage's wall time)
        for run, seconds in marginal_likelihoods.groupby("run").wall_seconds.sum().items():
            times[f"marginal_likelihood fig3/{run}"] = round(float(seconds), 1)
    if variance is not None and not variance.empty:
        times["estimator_variance"] = round(float(variance.wall_seconds.sum()), 1)
    times.update({k: round(float(v), 1) for k, v in extra.items()})
    times["total (sum of stages)"] = round(sum(times.values()), 1)
    return times


def build_provenance(repo: Path, params: dict, raw_dir: Path, finals: pd.DataFrame,
                     marginal_likelihoods: pd.DataFrame, variance: pd.DataFrame | None,
                     extra_times: dict[str, float]) -> dict:
    devices = sorted(set(finals.device)) if "device" in finals else []
    return {
        "profile": params["profile"],
        "git": git_state(repo),
        "params_sha256": params_hash(params),
        "data_sha256": data_checksums(raw_dir),
        "packages": package_versions(),
        "devices": devices,
        "machine": machine(),
        "environment": environment(devices),
        "binarize": sorted(set(finals.binarize)) if "binarize" in finals else [],
        "stage_wall_seconds": stage_wall_times(finals, marginal_likelihoods, variance, extra_times),
    }
