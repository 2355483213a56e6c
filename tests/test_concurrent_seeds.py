"""Two ``vaebench train`` processes of different seeds into one new ``--out`` (two terminals, a
natural way to use two cores): each seed is staged and published on its own, so both finish whole
and nothing is left stranded; a process asking for a seed that another is writing is refused at
once, with the other process named; a killed one resumes (pipeline/plumbing/unfinished_outputs.py).

Real processes, not threads: the staging folder, the run locks and the moves are what is tested.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.plumbing.unfinished_outputs import UNFINISHED_ROOT
from pipeline.runs.directory import read_checkpoint_manifest

OUT = "runs/x"


@pytest.fixture
def slow_setup(tiny_setup):
    """tiny_setup's model with a budget long enough (a few seconds) for two processes to overlap."""
    params, params_path, prepared, tmp_path = tiny_setup
    params["profiles"]["smoke"]["fig2"]["mnist"]["samples"] = 1_000_000
    params["profiles"]["smoke"]["fig2"]["checkpoint_every"] = 25_000
    params_path.write_text(yaml.safe_dump(params))
    return params_path, prepared, tmp_path


def start(params_path: Path, prepared: Path, cwd: Path, seed: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipeline.cli", "train", "--dataset", "mnist", "--nz", "3", "--params",
               str(params_path), "--prepared-dir", str(prepared), "--out", OUT, "--no-progress", "--seed", str(seed)]
    env = {**os.environ, "VAEBENCH_THREADS": "1"}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(cwd: Path, seed: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until the seed's staged run has written a checkpoint (it is mid-run)."""
    staged = cwd / UNFINISHED_ROOT / OUT / f"seed{seed}" / "checkpoints"
    deadline = time.monotonic() + timeout
    while not (staged.is_dir() and any(staged.glob("samples_*.pt"))):
        assert process.poll() is None, f"seed {seed} ended before its first checkpoint:\n{process.stdout.read()}"
        assert time.monotonic() < deadline, f"seed {seed} wrote no checkpoint in {timeout} s"
        time.sleep(0.05)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def assert_whole_run(run_dir: Path, seed: int) -> dict:
    """config, checkpoint manifest, checkpoints, curve and final.json present and of this seed."""
    config = json.loads((run_dir / "config.json").read_text())
    assert config["seed"] == seed
    final = json.loads((run_dir / "final.json").read_text())
    manifest = read_checkpoint_manifest(run_dir)
    assert manifest, f"{run_dir}: empty checkpoint manifest"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("samples_*.pt"))
    assert sorted(Path(name).name for name in manifest) == checkpoints
    assert max(int(name.split("_")[1].split(".")[0]) for name in checkpoints) == final["samples_seen"]
    curve = pd.read_csv(run_dir / "curve.csv")
    assert curve.samples_seen.max() == final["samples_seen"] == config["checkpoint_points"][-1]
    return final


def test_two_processes_of_different_seeds_into_one_new_out_both_finish_whole(slow_setup):
    params_path, prepared, cwd = slow_setup
    first = start(params_path, prepared, cwd, seed=1)
    wait_for_checkpoint(cwd, 1, first)
    second = start(params_path, prepared, cwd, seed=2)
    wait_for_checkpoint(cwd, 2, second)
    # a third process asking for a seed that the first is writing: refused at once, the first named
    third = start(params_path, prepared, cwd, seed=1)
    output, _ = third.communicate(timeout=120)
    assert third.returncode == 1, output
    assert output.strip().splitlines()[-1].startswith("Error: process ")
    assert f"process {first.pid} " in output and "Traceback" not in output
    finish(first), finish(second)
    for seed in (1, 2):
        final = assert_whole_run(cwd / OUT / f"seed{seed}", seed)
        assert final["resumed_from"] is None
    assert not (cwd / ".vaebench").exists(), "nothing is left stranded in the staging folder"


def test_a_killed_process_leaves_the_other_whole_and_resumes_into_the_same_out(slow_setup):
    params_path, prepared, cwd = slow_setup
    first = start(params_path, prepared, cwd, seed=1)
    second = start(params_path, prepared, cwd, seed=2)
    wait_for_checkpoint(cwd, 1, first)
    wait_for_checkpoint(cwd, 2, second)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    finish(second)
    assert_whole_run(cwd / OUT / "seed2", 2)
    assert not (cwd / OUT / "seed1").exists(), "the killed seed is not published half-written"
    staged = cwd / UNFINISHED_ROOT / OUT / "seed1"
    assert not (staged / "final.json").exists() and any((staged / "checkpoints").glob("samples_*.pt"))
    finish(start(params_path, prepared, cwd, seed=1))  # the killed seed again: resumes, then joins --out
    final = assert_whole_run(cwd / OUT / "seed1", 1)
    assert final["resumed_from"] is not None
    assert not (cwd / ".vaebench").exists()
