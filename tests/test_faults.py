"""Faults of the training and evaluation stages, tried as a careless or hostile user would (issue
15): each ends in a one-line error that names the problem and the fix, or in a clean recovery,
and loses nothing. The data stages' faults are in test_faults_data.py, the report's, figures',
compare's and bench's in test_faults_outputs.py."""
import copy
import errno
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.plumbing.cpu_threads import ThreadGovernor
from pipeline.plumbing.params import ParamsError
from pipeline.runs.config import build_run_config
from pipeline.runs.directory import (CorruptRunError, NotARunDirectoryError, RunLockedError,
                                    locked_run_directory, record_checkpoint)
from pipeline.training.train import TrainingDivergedError, run_training

from .conftest import REPO, write_prepared


def config_of(params, algorithm="aevb", **overrides):
    return build_run_config(params, "fig2", "mnist", algorithm, 3, **overrides)


def curve_values(run_dir: Path) -> list:
    """A run's curve without its wall-clock column."""
    return pd.read_csv(run_dir / "curve.csv").drop(columns="wall_seconds").values.tolist()


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(result) -> str:
    """The CLI failed with exit status 1 and a one-line ``Error:``, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: "), result.output
    return lines[-1]


class WritesAMarkerWhenUnpickled:
    """A pickled object that runs code (here: creates a file) when a checkpoint is unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_code_in_checkpoint(path: Path, marker: Path) -> None:
    """Rewrite a checkpoint so that loading it with pickle runs code, and record it in the run's
    manifest as a colleague's or a remote's run directory would have it."""
    state = torch.load(path, weights_only=True)
    state["curve_rows"] = [WritesAMarkerWhenUnpickled(marker)]
    torch.save(state, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    record_checkpoint(path)


# ---------------------------------------------------------------------------- 1. foreign code
def test_1_a_checkpoint_that_carries_code_never_runs_it(tiny_setup):
    params, params_path, prepared, tmp = tiny_setup
    run_dir = tmp / "run"
    run_training(config_of(params), run_dir, prepared, progress=False)
    marker = tmp / "pwned"
    plant_code_in_checkpoint(run_dir / "checkpoints" / "samples_000000004000.pt", marker)
    (tmp / "runs-root" / "fig2" / "run").mkdir(parents=True)
    os.symlink(run_dir, tmp / "runs-root" / "fig2" / "run" / "seed1")
    result = CliRunner().invoke(main, ["evaluate", "estimator-variance", "--runs", str(tmp / "runs-root"),
                                       "--params", str(params_path), "--prepared-dir", str(prepared),
                                       "--out", str(tmp / "variance.csv")])
    assert "cannot be read" in one_line_error(result)
    assert not marker.exists(), "loading the checkpoint ran its code"


def test_1_resuming_skips_a_checkpoint_that_carries_code(tiny_setup):
    params, _, prepared, tmp = tiny_setup
    run_dir = tmp / "run"
    run_training(config_of(params), run_dir, prepared, progress=False, stop_after_samples=2000)
    marker = tmp / "pwned"
    plant_code_in_checkpoint(run_dir / "checkpoints" / "samples_000000002000.pt", marker)
    final = run_training(config_of(params), run_dir, prepared, progress=False)
    assert not marker.exists(), "resuming ran the checkpoint's code"
    assert final["resumed_from"].endswith("samples_000000001000.pt")  # the last checkpoint it could trust


# ---------------------------------------------------------------------------- 2. one writer at a time
def test_2_a_second_training_into_the_same_out_is_refused_while_the_first_writes(tiny_setup):
    params, params_path, prepared, tmp = tiny_setup
    run_dir = tmp / "run" / "seed1"  # the CLI's --out is the configuration's folder, seed 1 its run
    with locked_run_directory(run_dir):  # as a first process holds it while it trains
        # the refusal names the process holding the lock (here this one)
        with pytest.raises(RunLockedError, match=rf"^process {os.getpid()} \(.*\) is writing "):
            run_training(config_of(params, seed=2), run_dir, prepared, progress=False)
        result = CliRunner().invoke(main, ["train", "--dataset", "mnist", "--nz", "3", "--params", str(params_path),
                                           "--prepared-dir", str(prepared), "--out", str(run_dir.parent),
                                           "--no-progress"])
        assert f"process {os.getpid()} (" in one_line_error(result) and " is writing " in one_line_error(result)
    assert not (run_dir / "config.json").exists()  # the refused run wrote nothing
    run_training(config_of(params), run_dir, prepared, progress=False)  # the lock is gone with its holder


def test_2_two_real_processes_into_one_out_leave_one_consistent_run(tiny_setup):
    params, params_path, prepared, tmp = tiny_setup
    bigger = copy.deepcopy(params)
    bigger["profiles"]["smoke"]["fig2"]["mnist"]["samples"] = 5_000_000  # long enough to be running still
    params_path.write_text(yaml.safe_dump(bigger))
    run_dir = tmp / "run" / "seed1"
    run_dir.parent.mkdir()  # an existing --out is trained in place (a new one in .vaebench/unfinished/: pipeline/plumbing/unfinished_outputs.py)
    command = [sys.executable, "-m", "pipeline.cli", "train", "--dataset", "mnist", "--nz", "3", "--params",
               str(params_path), "--prepared-dir", str(prepared), "--out", str(run_dir.parent), "--no-progress",
               "--seed", "1"]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "curve.csv").exists():  # polled, not spun; bounded
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, f"the first run wrote no {run_dir / 'curve.csv'} in 120 s"
            time.sleep(0.05)
        second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run finished before the second started: raise its budget"
    finally:
        first.kill()
        first.communicate()
    assert second.returncode == 1 and f"Error: process {first.pid} (" in second.stderr and " is writing " in second.stderr
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 1  # the second wrote nothing


# ---------------------------------------------------------------------------- 3. finished runs
def test_3_rerunning_a_finished_run_changes_nothing_and_a_forced_retrain_loses_nothing(tiny_setup):
    params, _, prepared, tmp = tiny_setup
    run_dir = tmp / "run"
    run_training(config_of(params), run_dir, prepared, progress=False)
    finished = file_bytes(run_dir)
    shutil.copytree(run_dir, tmp / "run-before")
    again = run_training(config_of(params), run_dir, prepared, progress=False)
    assert again["already_finished"] and file_bytes(run_dir) == finished
    # --force retrains, beside the finished run; killed midway, the finished run is still whole
    stopped = run_training(config_of(params), run_dir, prepared, progress=False, stop_after_samples=2000, force=True)
    assert stopped == {"stopped_at": 2000}
    assert {k: v for k, v in file_bytes(run_dir).items() if not k.startswith(".retrain")} == finished
    final = run_training(config_of(params), run_dir, prepared, progress=False, force=True)  # resumes the retrain
    assert final["resumed_from"].endswith("samples_000000002000.pt") and not (run_dir / ".retrain").exists()
    assert curve_values(run_dir) == curve_values(tmp / "run-before")  # same seed, same numbers


def test_3_a_changed_configuration_replaces_a_finished_run_only_once_it_has_finished(tiny_setup):
    params, _, prepared, tmp = tiny_setup
    run_dir = tmp / "run"
    run_training(config_of(params), run_dir, prepared, progress=False)
    finished = file_bytes(run_dir)
    changed = copy.deepcopy(params)
    changed["optimizer"]["adagrad_eps"] = 1e-6
    run_training(config_of(changed), run_dir, prepared, progress=False, stop_after_samples=2000)
    assert {k: v for k, v in file_bytes(run_dir).items() if not k.startswith(".retrain")} == finished
    run_training(config_of(changed), run_dir, prepared, progress=False)
    assert json.loads((run_dir / "config.json").read_text())["adagrad_eps"] == 1e-6
    assert (run_dir / "final.json").exists() and not (run_dir / ".retrain").exists()


# ---------------------------------------------------------------------------- 4. not a run
@pytest.mark.parametrize("files", [
    {"notes.txt": "my notes"},
    {"checkpoints/my_model.pt": "weights"},
    {"curve.csv": "a,b\n1,2\n", "checkpoints/samples_000000001000.pt": "not ours"},  # ours by name, no config.json
    {"config.json": "{\"learning_rate\": 3}"},
])
def test_4_training_refuses_an_out_that_holds_files_it_did_not_write(tiny_setup, files):
    params, params_path, prepared, tmp = tiny_setup
    folder = tmp / "mine"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / ".cache.tmp").write_text("a hidden file of mine")
    before = file_bytes(folder)
    with pytest.raises((NotARunDirectoryError, CorruptRunError)):
        run_training(config_of(params), folder, prepared, progress=False)
    for out in (folder, folder / "seed1"):  # as a configuration's folder, and as the run of its seed
        if out.name == "seed1":
            shutil.move(folder, tmp / "moved")
            folder.mkdir()
            shutil.move(tmp / "moved", out)
            before = file_bytes(folder)
        result = CliRunner().invoke(main, ["train", "--dataset", "mnist", "--nz", "3", "--params", str(params_path),
                                           "--prepared-dir", str(prepared), "--out", str(folder), "--no-progress"])
        one_line_error(result)
        assert file_bytes(folder) == before


# ---------------------------------------------------------------------------- 5. MCEM diverges
def test_5_a_diverging_mcem_stops_like_the_others(tiny_setup):
    params, params_path, prepared, tmp = tiny_setup
    params = copy.deepcopy(params)
    params["optimizer"]["step_size"] = 1e6
    params["profiles"]["smoke"]["fig2"]["mnist"]["samples"] = 20_000
    with pytest.raises(TrainingDivergedError, match="diverged"):
        run_training(config_of(params, "mcem"), tmp / "run", prepared, progress=False)
    assert not (tmp / "run" / "final.json").exists()
    params_path.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["train", "--dataset", "mnist", "--nz", "3", "--algorithm", "mcem",
                                       "--params", str(params_path), "--prepared-dir", str(prepared),
                                       "--out", str(tmp / "cli"), "--no-progress"])
    assert "diverged" in one_line_error(result) and "step size" in result.output


# ---------------------------------------------------------------------------- params
@pytest.mark.parametrize("section, key, value, message", [
    ("training", "minibatch_size", None, "training.minibatch_size"),
    ("optimizer", "adagrad_eps", None, "optimizer.adagrad_eps"),
    ("training", "minibatch_size", "abc", "training.minibatch_size must be a positive integer"),
    ("training", "device", "tpu", "training.device must be one of"),
])
def test_a_missing_or_bad_params_value_is_named(tiny_setup, section, key, value, message):
    params, params_path, prepared, tmp = tiny_setup
    params = copy.deepcopy(params)
    if value is None:
        del params[section][key]
    else:
        params[section][key] = value
    with pytest.raises(ParamsError, match=message):
        config_of(params)
    params_path.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["train", "--dataset", "mnist", "--nz", "3", "--params", str(params_path),
                                       "--prepared-dir", str(prepared), "--out", str(tmp / "run")])
    assert message.split(" ")[0] in one_line_error(result)


# ---------------------------------------------------------------------------- damaged checkpoints
@pytest.mark.parametrize("damage", ["truncate", "flip a bit"])
def test_a_damaged_checkpoint_is_refused_not_evaluated(tiny_setup, damage):
    params, params_path, prepared, tmp = tiny_setup
    run_dir = tmp / "runs" / "fig2" / "run" / "seed1"
    run_training(config_of(params), run_dir, prepared, progress=False)
    path = run_dir / "checkpoints" / "samples_000000004000.pt"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # inside a tensor's storage: the file still loads, with a wrong number
        data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["evaluate", "estimator-variance", "--runs", str(tmp / "runs"), "--params",
                                       str(params_path), "--prepared-dir", str(prepared),
                                       "--out", str(tmp / "variance.csv")])
    line = one_line_error(result)
    assert str(path) in line and "changed since it was written" in line
    assert not (tmp / "variance.csv").exists()


def test_an_unfinished_run_is_not_evaluated_as_if_it_were_finished(tiny_setup):
    params, params_path, prepared, tmp = tiny_setup
    params = copy.deepcopy(params)
    params["experiments"]["fig3"]["mnist"]["hidden_units"] = 16
    params["profiles"]["smoke"]["fig3"].update(mnist={"samples": 3000, "step_size": 0.02}, eval_first_samples=200,
                                               eval_train_points=100, eval_test_points=100, checkpoint_every=1000)
    params_path.write_text(yaml.safe_dump(params))
    config = build_run_config(params, "fig3", "mnist", "aevb", 3)
    run_training(config, tmp / "run", prepared, progress=False, stop_after_samples=2000)
    result = CliRunner().invoke(main, ["evaluate", "marginal-likelihood", "--run", str(tmp / "run"), "--params",
                                       str(params_path), "--prepared-dir", str(prepared)])
    assert "has not finished training" in one_line_error(result)
    assert not [p for p in tmp.rglob("*.csv") if p.name != "curve.csv"]  # no marginal likelihoods written


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"experiment": "fig2", "dataset": "mnist"}), "lacks algorithm, z_dim"),
])
def test_a_malformed_or_older_config_json_is_named(tiny_setup, content, message):
    params, params_path, prepared, tmp = tiny_setup
    run_dir = tmp / "run"
    run_training(config_of(params), run_dir, prepared, progress=False)
    (run_dir / "config.json").write_text(content)
    result = CliRunner().invoke(main, ["evaluate", "marginal-likelihood", "--run", str(run_dir), "--params",
                                       str(params_path), "--prepared-dir", str(prepared)])
    line = one_line_error(result)
    assert str(run_dir / "config.json") in line and message in line


# ---------------------------------------------------------------------------- writing
def test_a_full_disk_while_checkpointing_is_named_and_the_run_resumes(tiny_setup, monkeypatch):
    params, params_path, prepared, tmp = tiny_setup
    run_training(config_of(params), tmp / "whole", prepared, progress=False)
    original = Path.write_bytes
    writes = {"checkpoints": 0}

    def disk_fills_at_the_third_checkpoint(self, data):
        if self.name.startswith(".samples_"):
            writes["checkpoints"] += 1
            if writes["checkpoints"] == 3:
                original(self, bytes(data)[:100])
                raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_fills_at_the_third_checkpoint)
    (tmp / "run").mkdir()  # an existing --out is trained in place (a new one in .vaebench/unfinished/: pipeline/plumbing/unfinished_outputs.py)
    result = CliRunner().invoke(main, ["train", "--dataset", "mnist", "--nz", "3", "--params", str(params_path),
                                       "--prepared-dir", str(prepared), "--out", str(tmp / "run"), "--no-progress"])
    line = one_line_error(result)
    assert "no space left on the device" in line and "samples_000000003000.pt" in line
    monkeypatch.setattr(Path, "write_bytes", original)
    run_dir = tmp / "run" / "seed1"
    assert not list(run_dir.rglob(".*.tmp")) and not (run_dir / "checkpoints" / "samples_000000003000.pt").exists()
    final = run_training(config_of(params), run_dir, prepared, progress=False)  # space freed: it resumes
    assert final["resumed_from"].endswith("samples_000000002000.pt")
    assert curve_values(run_dir) == curve_values(tmp / "whole")


@pytest.mark.parametrize("out", ["a_file/run", "a_file"])
def test_an_out_that_cannot_be_a_folder_is_named(tiny_setup, out):
    params, params_path, prepared, tmp = tiny_setup
    (tmp / "a_file").write_text("a regular file")
    result = CliRunner().invoke(main, ["train", "--dataset", "mnist", "--nz", "3", "--params", str(params_path),
                                       "--prepared-dir", str(prepared), "--out", str(tmp / out), "--no-progress"])
    line = one_line_error(result)
    assert "a_file" in line and "--out" in line
    assert (tmp / "a_file").read_text() == "a regular file"


def test_a_non_finite_standard_error_is_flagged(tiny_setup, monkeypatch):
    params, params_path, prepared, tmp = tiny_setup
    import pipeline.commands.evaluate as commands

    frame = pd.DataFrame([{"samples_seen": 1000, "split": "test", "estimator": "appendix_d", "value": -150.0,
                           "standard_error": float("inf"), "points": 10, "wall_seconds": 0.1, "seed": 1}])
    monkeypatch.setattr(commands, "evaluate_configuration", lambda *args, **kwargs: frame)
    monkeypatch.setattr(commands, "other_seed_settings", lambda *args, **kwargs: None)
    monkeypatch.setattr(commands, "settings_from_params", lambda *args, **kwargs: None)
    result = CliRunner().invoke(main, ["evaluate", "marginal-likelihood", "--run", str(tmp), "--params", str(params_path)])
    assert result.exit_code == 0 and "standard error is not finite" in result.stderr


# ---------------------------------------------------------------------------- contention
def test_the_thread_count_follows_the_cores_other_processes_leave_free(monkeypatch):
    import pipeline.plumbing.cpu_threads as cpu_threads

    clock = {"wall": 100.0, "busy": 1000.0, "own": 10.0}
    monkeypatch.setattr(cpu_threads, "_cpu_busy_seconds", lambda: (clock["busy"], 2))
    monkeypatch.setattr(cpu_threads.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(cpu_threads.time, "process_time", lambda: clock["own"])
    monkeypatch.delenv(cpu_threads.THREADS_ENV, raising=False)
    threads = torch.get_num_threads()
    try:
        governor = ThreadGovernor(max_threads=2, adaptive=True)

        def one_second(busy_total, own):
            clock["wall"] += 1.0
            clock["busy"] += busy_total
            clock["own"] += own
            return governor.update()

        assert one_second(busy_total=2.0, own=1.9) == 2   # we use both cores; nobody else does
        assert one_second(busy_total=2.0, own=1.0) == 1   # another process keeps a core busy
        assert one_second(busy_total=1.1, own=1.0) == 2   # it stopped
        monkeypatch.setenv(cpu_threads.THREADS_ENV, "1")
        assert ThreadGovernor().update() == 1 and not ThreadGovernor().adaptive
    finally:
        torch.set_num_threads(threads)


def test_a_run_gives_the_same_numbers_with_one_thread_or_two(tmp_path):
    """MKL's strict reproducibility mode: a Frey-Face-shaped run with Nz = 5, whose narrow matrix
    products (the encoder heads' gradient, 10 x 50) MKL splits differently with two threads than
    with one unless it is in strict mode, gives the same numbers on both. (Its buffers are too small
    for torch's elementwise kernels to split; Figure 2's are not, which is why a run keeps a fixed
    thread count: pipeline/plumbing/cpu_threads.py, tests/test_seeds.py.)"""
    rng = np.random.default_rng(0)
    prepared = tmp_path / "prepared"
    faces = rng.integers(0, 256, (300, 560)).astype(np.uint8)
    write_prepared(prepared, "frey_face", train_x=faces[:250], test_x=faces[250:])
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["optimizer"]["warmup_steps"] = 5
    params["experiments"]["fig2"]["frey_face"]["hidden_units"] = 50
    params["profiles"]["smoke"]["fig2"].update(frey_face={"samples": 3000, "step_size": 0.02}, eval_first_samples=1000,
                                               eval_train_points=100, eval_test_points=50, checkpoint_every=3000)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    digests = {}
    for threads in ("1", "2"):
        run_dir = tmp_path / f"threads{threads}"
        env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "VAEBENCH_THREADS")}
        env["OMP_NUM_THREADS"] = threads
        subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "--dataset", "frey_face", "--nz", "5",
                        "--params", str(params_path), "--prepared-dir", str(prepared), "--out", str(run_dir),
                        "--no-progress"], cwd=REPO, env=env, check=True, capture_output=True)
        state = torch.load(run_dir / "seed1" / "checkpoints" / "samples_000000003000.pt", weights_only=True)
        digests[threads] = hashlib.sha256(b"".join(
            t.numpy().tobytes() for t in state["algorithm"]["model"].values())).hexdigest()
    assert digests["1"] == digests["2"]
