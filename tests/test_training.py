"""The training loop: schedules, determinism, resume after a kill, NaN handling, step-size trial."""
import copy
import math
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.plumbing.params import load_params
from pipeline.runs.config import build_run_config
from pipeline.training.train import (
    TrainingDivergedError,
    checkpoint_schedule,
    evaluation_schedule,
    run_training,
)
from vae_core import NonFiniteLossError, TrainingAlgorithm
from vae_core.fused_aevb import StackedAEVB
from vae_core.training import select_step_size

from .conftest import REPO


def config_of(params, algorithm="aevb", **overrides):
    return build_run_config(params, "fig2", "mnist", algorithm, 3, **overrides)


def curve_values(run_dir):
    return pd.read_csv(Path(run_dir) / "curve.csv")[["samples_seen", "split", "value"]]


def test_evaluation_schedule_is_log_spaced_and_ends_at_the_budget():
    points = evaluation_schedule(1000, 1_000_000, 5, 100)
    assert points[0] == 1000 and points[-1] == 1_000_000
    assert all(p % 100 == 0 for p in points) and points == sorted(set(points))
    ratios = np.diff(np.log10(points[:-1]))
    assert np.allclose(ratios, 0.2, atol=0.02)
    assert checkpoint_schedule(250_000, 1_000_000, 100) == [250_000, 500_000, 750_000, 1_000_000]


def test_same_seed_gives_the_same_numbers(tiny_setup):
    params, _, prepared, tmp = tiny_setup
    first = run_training(config_of(params), tmp / "a", prepared, progress=False)
    second = run_training(config_of(params), tmp / "b", prepared, progress=False)
    pd.testing.assert_frame_equal(curve_values(tmp / "a"), curve_values(tmp / "b"))
    assert first["step_size"] == second["step_size"]
    other_seed = run_training(config_of(params, seed=2), tmp / "c", prepared, progress=False)
    assert other_seed["final_test_lower_bound"] != first["final_test_lower_bound"]


def test_training_improves_the_bound(tiny_setup):
    params, _, prepared, tmp = tiny_setup
    run_training(config_of(params), tmp / "run", prepared, progress=False)
    curve = pd.read_csv(tmp / "run" / "curve.csv")
    train = curve[curve.split == "train"].sort_values("samples_seen").value.to_numpy()
    assert np.isfinite(train).all() and train[-1] > train[0] + 5


@pytest.mark.parametrize("algorithm", ["aevb", "wake_sleep", "mcem"])
def test_resume_after_interruption_gives_the_uninterrupted_curve(tiny_setup, algorithm):
    params, _, prepared, tmp = tiny_setup
    config = config_of(params, algorithm)
    run_training(config, tmp / "whole", prepared, progress=False)
    stopped = run_training(config, tmp / "split", prepared, progress=False, stop_after_samples=2000)
    assert stopped == {"stopped_at": 2000}
    assert not (tmp / "split" / "final.json").exists()
    final = run_training(config, tmp / "split", prepared, progress=False)
    assert final["resumed_from"].endswith("samples_000000002000.pt")
    whole, split = curve_values(tmp / "whole"), curve_values(tmp / "split")
    assert len(whole) > 0
    pd.testing.assert_frame_equal(whole, split)
    last = "checkpoints/samples_000000004000.pt"
    a = torch.load(tmp / "whole" / last, weights_only=False)["algorithm"]["model"]
    b = torch.load(tmp / "split" / last, weights_only=False)["algorithm"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_sigkill_gives_the_uninterrupted_curve(tiny_setup):
    params, params_path, prepared, tmp = tiny_setup
    params = copy.deepcopy(params)
    params["profiles"]["smoke"]["fig2"]["mnist"]["samples"] = 400_000
    params["profiles"]["smoke"]["fig2"]["checkpoint_every"] = 4_000
    params_path.write_text(yaml.safe_dump(params))
    run_dir = tmp / "killed" / "seed1"  # --out is the configuration's folder; seed 1 its run
    run_dir.parent.mkdir()  # an existing --out is trained in place (a new one in .vaebench/unfinished/: pipeline/plumbing/unfinished_outputs.py)
    command = [sys.executable, "-m", "pipeline.cli", "train", "--dataset", "mnist", "--nz", "3",
               "--params", str(params_path), "--prepared-dir", str(prepared), "--out", str(run_dir.parent),
               "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((run_dir / "checkpoints").glob("*.pt"))) < 3:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "final.json").exists(), "the run finished before it could be killed"
    final = run_training(config_of(params), run_dir, prepared, progress=False)
    assert final["resumed_from"] is not None
    assert not list(run_dir.rglob(".*.tmp")), "a half-written file of the killed run was kept"
    run_training(config_of(params), tmp / "whole", prepared, progress=False)
    pd.testing.assert_frame_equal(curve_values(tmp / "whole"), curve_values(run_dir))


def test_a_changed_configuration_does_not_resume(tiny_setup):
    params, _, prepared, tmp = tiny_setup
    run_training(config_of(params), tmp / "run", prepared, progress=False, stop_after_samples=1000)
    changed = replace(config_of(params), seed=99)
    final = run_training(changed, tmp / "run", prepared, progress=False)
    assert final["resumed_from"] is None


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_setup, monkeypatch):
    params, _, prepared, tmp = tiny_setup
    calls = {"n": 0}
    original = StackedAEVB.forward_backward

    def forward_backward_that_breaks(self, x, eps, with_bound=True):
        calls["n"] += 1
        if calls["n"] == 26:  # after the 2,000-sample checkpoint (M = 100), before the 3,000 one
            with torch.no_grad():
                self.weights[0].view(-1)[0] = math.nan  # one encoder weight goes bad
        return original(self, x, eps, with_bound)

    params_fixed = copy.deepcopy(params)
    params_fixed["optimizer"]["step_size"] = 0.02
    config = config_of(params_fixed)
    monkeypatch.setattr(StackedAEVB, "forward_backward", forward_backward_that_breaks)
    with pytest.raises(TrainingDivergedError, match="samples_000000002000.pt"):
        run_training(config, tmp / "run", prepared, progress=False)
    assert (tmp / "run" / "checkpoints" / "samples_000000002000.pt").exists()
    assert not (tmp / "run" / "final.json").exists()
    state = torch.load(tmp / "run" / "checkpoints" / "samples_000000002000.pt", weights_only=False)
    assert all(torch.isfinite(t).all() for t in state["algorithm"]["model"].values())


def test_step_size_trial_picks_the_best_and_survives_divergence():
    class Scripted(TrainingAlgorithm):
        def __init__(self, step_size):
            self.step_size = step_size

        def step(self, x_batch, indices):
            if self.step_size == 0.1:
                raise NonFiniteLossError("diverged")
            return 0.0

        def trial_score(self, x):
            return {0.01: -120.0, 0.02: -110.0}[self.step_size]

    x = torch.rand(50, 4)
    best, scores = select_step_size(Scripted, [0.01, 0.02, 0.1], x, x, 3, 10, seed=0)
    assert best == 0.02 and scores[0.1] == -math.inf and scores[0.01] == -120.0


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.update(profile="huge"), "profile 'huge' is not defined"),
    (lambda p: p["profiles"]["smoke"]["fig2"]["mnist"].update(samples=-5), "samples must be a positive integer"),
    (lambda p: p["profiles"]["smoke"]["fig2"]["mnist"].update(step_size_trial_samples=100), "warm-up"),
    (lambda p: p["training"].update(estimator="C"), "training.estimator must be one of A, B"),
    (lambda p: p["optimizer"].update(step_size=-0.1), "optimizer.step_size must be a positive number"),
    (lambda p: p["profiles"]["smoke"]["fig2"]["mnist"].update(step_size="fast"),
     "profiles.smoke.fig2.mnist.step_size must be a positive number"),
])
def test_bad_params_values_are_named(tiny_setup, mutate, message):
    from pipeline.plumbing.params import ParamsError

    params = copy.deepcopy(tiny_setup[0])
    mutate(params)
    with pytest.raises(ParamsError, match=message):
        config_of(params)


def test_the_step_size_trial_length_can_be_set_per_algorithm():
    from pipeline.plumbing.params import ParamsError

    params = load_params(REPO / "params.yaml")
    params["profile"] = "paper"
    trials = {algorithm: build_run_config(params, "fig2", "mnist", algorithm, 200).step_size_trial_samples
              for algorithm in ("aevb", "wake_sleep")}
    assert trials == {"aevb": 100_000, "wake_sleep": 500_000}  # params.yaml: wake-sleep's longer trial
    params["profiles"]["paper"]["fig2"]["mnist"]["step_size_trial_samples"] = {"default": 100_000, "wakesleep": 1}
    with pytest.raises(ParamsError, match=r"step_size_trial_samples names \['wakesleep'\]"):
        build_run_config(params, "fig2", "mnist", "aevb", 200)
    params["profiles"]["paper"]["fig2"]["mnist"]["step_size_trial_samples"] = {"wake_sleep": 500_000}
    with pytest.raises(ParamsError, match=r"step_size_trial_samples.default = 0 does not reach"):
        build_run_config(params, "fig2", "mnist", "aevb", 200)


def test_unknown_dataset_is_named():
    from pipeline.plumbing.params import ParamsError

    params = load_params(REPO / "params.yaml")
    with pytest.raises(ParamsError, match="unknown dataset 'cifar'.*mnist, frey_face"):
        build_run_config(params, "fig2", "cifar", "aevb", 3)
