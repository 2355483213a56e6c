"""Seeds (issue 16): each seed its own run directory; fused AEVB seeds train stacked and give the
numbers they give alone; a seed's run is reproducible bit for bit; resume works stacked."""
from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

from pipeline.runs.config import build_run_config, configuration_seeds, profile_seeds
from pipeline.plumbing.params import ParamsError
from pipeline.plumbing.processes import threads_per_process
from pipeline.runs.directory import load_checkpoint, run_directories, run_identity, seed_run_dir
from pipeline.training.train import run_training, train_seeds


def _configs(params, seeds, algorithm="aevb", nz=2):
    config = build_run_config(params, "fig2", "mnist", algorithm, nz)
    return [replace(config, seed=s) for s in seeds]


def _curve(run_dir):
    return pd.read_csv(run_dir / "curve.csv").drop(columns="wall_seconds")


def _final_weights(run_dir):
    final = json.loads((run_dir / "final.json").read_text())
    path = run_dir / "checkpoints" / f"samples_{final['samples_seen']:012d}.pt"
    return load_checkpoint(path)["algorithm"]


def _assert_same_state(a, b):
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for left, right in zip(a["optimizer"]["weight_sums"] + a["optimizer"]["bias_sums"],
                           b["optimizer"]["weight_sums"] + b["optimizer"]["bias_sums"]):
        assert torch.equal(left, right)


def test_stacked_seeds_equal_each_seed_trained_alone(tiny_setup):
    """Bit for bit where every buffer of the update is a whole number of 16-float vectors (M = 100,
    Nz = 16, 16 hidden units; tests/test_fused_aevb.py explains why ragged shapes differ in the
    last bit, and bounds that)."""
    params, _, prepared, tmp = tiny_setup
    configs = _configs(params, [1, 2, 3], nz=16)
    stacked_dirs = [seed_run_dir(tmp / "stacked" / "mnist_nz2_aevb", c.seed) for c in configs]
    finals = train_seeds(configs, stacked_dirs, prepared, progress=False)
    assert all(f["stacked_runs"] == 3 for f in finals)
    alone = run_training(configs[1], tmp / "alone" / "seed2", prepared, progress=False)
    assert alone["stacked_runs"] == 1
    pd.testing.assert_frame_equal(_curve(stacked_dirs[1]), _curve(tmp / "alone" / "seed2"))
    _assert_same_state(_final_weights(stacked_dirs[1]), _final_weights(tmp / "alone" / "seed2"))
    # and the seeds are different runs
    assert not _curve(stacked_dirs[0]).equals(_curve(stacked_dirs[1]))


def test_a_seed_is_reproducible_bit_for_bit(tiny_setup):
    params, _, prepared, tmp = tiny_setup
    config = _configs(params, [2], algorithm="wake_sleep")[0]
    run_training(config, tmp / "a", prepared, progress=False)
    run_training(config, tmp / "b", prepared, progress=False)
    pd.testing.assert_frame_equal(_curve(tmp / "a"), _curve(tmp / "b"))
    a, b = _final_weights(tmp / "a"), _final_weights(tmp / "b")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key])


def test_stacked_seeds_resume_to_the_same_numbers(tiny_setup):
    params, _, prepared, tmp = tiny_setup
    configs = _configs(params, [1, 2])
    whole = [seed_run_dir(tmp / "whole", c.seed) for c in configs]
    train_seeds(configs, whole, prepared, progress=False)
    broken = [seed_run_dir(tmp / "broken", c.seed) for c in configs]
    stopped = train_seeds(configs, broken, prepared, progress=False, stop_after_samples=2000)
    assert all("stopped_at" in s for s in stopped)
    resumed = train_seeds(configs, broken, prepared, progress=False)
    assert all(r["resumed_from"] for r in resumed)
    for a, b in zip(whole, broken):
        pd.testing.assert_frame_equal(_curve(a), _curve(b))
        _assert_same_state(_final_weights(a), _final_weights(b))


def test_seed_layout_and_identity(tiny_setup):
    params, _, prepared, tmp = tiny_setup
    configs = _configs(params, [3, 1])
    root = tmp / "runs" / "fig2" / "mnist_nz2_aevb"
    train_seeds(configs, [seed_run_dir(root, c.seed) for c in configs], prepared, progress=False)
    runs = run_directories(tmp / "runs", "fig2")
    assert [r.name for r in runs] == ["seed1", "seed3"]
    identity = run_identity(runs[1])
    assert identity["run"] == "mnist_nz2_aevb" and identity["seed"] == 3
    # a finished seed is a no-op the next time; the others are not affected
    again = train_seeds(configs, [seed_run_dir(root, c.seed) for c in configs], prepared, progress=False)
    assert all(r.get("already_finished") for r in again)


def test_configuration_seeds_follow_the_profile(tiny_setup):
    params, *_ = tiny_setup
    params["profiles"]["smoke"]["seeds"] = {"list": [4, 5, 6], "several": ["fig3/*", "fig2/*_nz20_*"]}
    assert profile_seeds(params) == [4, 5, 6]
    assert configuration_seeds(params, "fig3", "mnist_ntrain1000_mcem") == [4, 5, 6]
    assert configuration_seeds(params, "fig2", "frey_face_nz20_wake_sleep") == [4, 5, 6]
    assert configuration_seeds(params, "fig2", "mnist_nz3_aevb") == [4]
    assert build_run_config(params, "fig2", "mnist", "aevb", 2).seed == 4
    params["profiles"]["smoke"]["seeds"] = {"list": [1, 1]}
    with pytest.raises(ParamsError, match="repeats a seed"):
        profile_seeds(params)
    params["profiles"]["smoke"]["seeds"] = {"list": ["x"]}
    with pytest.raises(ParamsError, match="seeds.list"):
        profile_seeds(params)


def test_seeds_of_other_algorithms_train_side_by_side_with_the_numbers_of_each_alone(tiny_setup, monkeypatch):
    """Wake-sleep has no stacked engine: its seeds train in worker processes at once, each with a
    fixed share of the cores, recorded; each gives exactly the numbers it gives trained alone in
    this process with that thread count."""
    params, _, prepared, tmp = tiny_setup
    configs = _configs(params, [1, 2], algorithm="wake_sleep")
    side_by_side = [seed_run_dir(tmp / "parallel", c.seed) for c in configs]
    monkeypatch.delenv("VAEBENCH_THREADS", raising=False)
    finals = train_seeds(configs, side_by_side, prepared, progress=False)
    assert [f["samples_seen"] for f in finals] == [4000, 4000]
    threads = threads_per_process(2)
    assert [f["threads"] for f in finals] == [threads, threads]
    assert json.loads((side_by_side[0] / "config.json").read_text())["threads"] == threads
    monkeypatch.setenv("VAEBENCH_THREADS", str(threads))
    for config, run_dir in zip(configs, side_by_side):
        alone = tmp / "alone" / run_dir.name
        run_training(config, alone, prepared, progress=False)
        pd.testing.assert_frame_equal(_curve(run_dir), _curve(alone))
        a, b = _final_weights(run_dir), _final_weights(alone)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_failing_seed_is_named_and_the_others_finish(tiny_setup):
    params, _, prepared, tmp = tiny_setup
    configs = _configs(params, [1, 2], algorithm="wake_sleep")
    dirs = [seed_run_dir(tmp / "cfg", c.seed) for c in configs]
    dirs[1].mkdir(parents=True)
    (dirs[1] / "notes.txt").write_text("not a run")  # seed 2's folder is refused
    with pytest.raises(Exception, match="seed2"):
        train_seeds(configs, dirs, prepared, progress=False)
    assert (dirs[0] / "final.json").is_file()  # seed 1 trained to its end


def test_a_resumed_run_keeps_its_thread_count(tiny_setup, monkeypatch):
    """Wake-sleep on this shape gives other last bits on one thread than on two (torch's
    elementwise kernels split by thread, pipeline/plumbing/cpu_threads.py): a run interrupted on one
    thread and resumed in a process that would use two takes its recorded count again, and ends
    where the uninterrupted one-thread run ends."""
    params, _, prepared, tmp = tiny_setup
    config = _configs(params, [1], algorithm="wake_sleep")[0]
    monkeypatch.delenv("VAEBENCH_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        run_training(config, tmp / "whole", prepared, progress=False)
        run_training(config, tmp / "broken", prepared, progress=False, stop_after_samples=2000)
        torch.set_num_threads(2)
        resumed = run_training(config, tmp / "broken", prepared, progress=False)
    finally:
        torch.set_num_threads(before)
    assert resumed["resumed_from"] and resumed["threads"] == 1
    pd.testing.assert_frame_equal(_curve(tmp / "whole"), _curve(tmp / "broken"), check_exact=True)
    a, b = _final_weights(tmp / "whole"), _final_weights(tmp / "broken")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_seed_dropped_from_params_is_dropped_from_the_configuration(tiny_setup):
    from click.testing import CliRunner

    from pipeline.cli import main

    params, params_path, prepared, tmp = tiny_setup
    import yaml
    params["profiles"]["smoke"]["seeds"] = {"list": [1, 2], "several": ["*"], "side_by_side": False}
    params_path.write_text(yaml.safe_dump(params))
    command = ["train", "--dataset", "mnist", "--nz", "2", "--params", str(params_path), "--prepared-dir",
               str(prepared), "--out", str(tmp / "cfg"), "--no-progress"]
    assert CliRunner().invoke(main, command).exit_code == 0
    assert sorted(p.name for p in (tmp / "cfg").iterdir()) == ["seed1", "seed2"]
    params["profiles"]["smoke"]["seeds"] = {"list": [1], "several": ["*"]}
    params_path.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0 and "seed2: removed" in result.output
    assert sorted(p.name for p in (tmp / "cfg").iterdir()) == ["seed1"]
    # an explicit --seed trains that seed and leaves the others alone
    assert CliRunner().invoke(main, command + ["--seed", "3"]).exit_code == 0
    assert sorted(p.name for p in (tmp / "cfg").iterdir()) == ["seed1", "seed3"]
