"""Stage outputs written aside until finished (pipeline/plumbing/unfinished_outputs.py): DVC's run-cache
can hold every stage (no `persist` output), and an interrupted stage still resumes."""
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.runs.config import build_run_config
from pipeline.training.train import run_training
from pipeline.plumbing.unfinished_outputs import (UNFINISHED_ROOT, OutputExistsError, publish, unfinished_directory,
                                         written_then_published)

from .conftest import REPO


def train_args(params_path, prepared, out):
    return ["train", "--dataset", "mnist", "--nz", "3", "--params", str(params_path), "--prepared-dir", str(prepared),
            "--out", str(out), "--no-progress"]


def curve_without_time(run_dir):
    return pd.read_csv(run_dir / "curve.csv").drop(columns="wall_seconds")


def test_no_stage_has_a_persist_output_so_the_run_cache_can_hold_every_stage():
    """DVC's run-cache skips a stage with a `persist` output (dvc/stage/cache.py, _can_hash):
    `vaebench distribute` brings results back through it, so no stage may have one."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    persisted = [name for name, stage in stages.items() for out in stage.get("outs", [])
                 if isinstance(out, dict) and any(flags.get("persist") for flags in out.values())]
    assert persisted == []


def test_a_new_output_is_written_aside_and_moved_in_whole(tiny_setup, monkeypatch):
    params, params_path, prepared, tmp_path = tiny_setup
    monkeypatch.chdir(tmp_path)
    seen = {}

    def spy(configs, run_dirs, *args, **kwargs):
        seen["run_dirs"] = list(run_dirs)
        return real(configs, run_dirs, *args, **kwargs)

    import pipeline.training.train as training  # `vaebench train` imports train_seeds when it runs
    real = training.train_seeds
    monkeypatch.setattr(training, "train_seeds", spy)
    result = CliRunner().invoke(main, train_args(params_path, prepared, "runs/fig2/mnist_nz3_aevb"))
    assert result.exit_code == 0, result.output
    assert seen["run_dirs"][0] == tmp_path / UNFINISHED_ROOT / "runs/fig2/mnist_nz3_aevb/seed1"
    assert (tmp_path / "runs/fig2/mnist_nz3_aevb/seed1/final.json").is_file()
    assert not (tmp_path / ".vaebench").exists(), "the unfinished folder is removed once moved"


def test_an_interrupted_training_stage_resumes_from_its_unfinished_folder(tiny_setup, monkeypatch):
    """DVC removes a stage's (non-persist) output before running it: the checkpoints of a killed
    stage live in .vaebench/unfinished/ and the next run resumes from them, to the same numbers."""
    params, params_path, prepared, tmp_path = tiny_setup
    monkeypatch.chdir(tmp_path)
    config = build_run_config(params, "fig2", "mnist", "aevb", 3)
    out = "runs/fig2/mnist_nz3_aevb"
    killed = run_training(config, unfinished_directory(out) / "seed1", prepared, progress=False, stop_after_samples=2000)
    assert "stopped_at" in killed and not (tmp_path / out).exists()
    result = CliRunner().invoke(main, train_args(params_path, prepared, out))
    assert result.exit_code == 0, result.output
    import json
    final = json.loads((tmp_path / out / "seed1/final.json").read_text())
    assert final["resumed_from"] is not None, "the run resumed rather than starting again"
    uninterrupted = tmp_path / "uninterrupted"
    run_training(config, uninterrupted, prepared, progress=False)
    pd.testing.assert_frame_equal(curve_without_time(tmp_path / out / "seed1"), curve_without_time(uninterrupted))


def test_an_error_leaves_the_unfinished_folder_and_an_existing_output_is_written_in_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError):
        with written_then_published("runs/x") as work:
            (work / "partial.csv").write_text("1\n")
            raise RuntimeError("killed")
    assert not (tmp_path / "runs/x").exists()
    assert (tmp_path / UNFINISHED_ROOT / "runs/x/partial.csv").read_text() == "1\n"
    with written_then_published("runs/x") as work:  # the next run finds the work and finishes it
        assert (work / "partial.csv").is_file()
    assert (tmp_path / "runs/x/partial.csv").is_file() and not (tmp_path / ".vaebench").exists()
    with written_then_published("runs/x") as work:
        assert work.resolve() == (tmp_path / "runs/x").resolve()


def test_an_output_that_appeared_meanwhile_is_not_overwritten(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (out / "theirs.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="nothing was overwritten"):
        publish(work, out)
    assert (out / "theirs.txt").read_text() == "keep" and work.is_dir()


def test_an_output_outside_the_working_directory_is_written_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-other" / "runs" / "x"
    assert unfinished_directory(elsewhere) == elsewhere.parent / ".x.unfinished"
