"""The marginal-likelihood evaluation stage on small trained runs."""
import copy

import numpy as np
import torch
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from pipeline.evaluation import marginal_likelihood as evaluate_module
from pipeline.cli import main
from pipeline.evaluation.marginal_likelihood import COLUMNS, evaluate_run, settings_from_params
from pipeline.plumbing.params import ParamsError, load_params
from pipeline.runs.directory import MissingRunError
from pipeline.runs.config import build_run_config
from pipeline.training.train import run_training

from .conftest import REPO, write_prepared


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """An AEVB and an MCEM run of a small Nz = 3 model, with three checkpoints each."""
    tmp = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    prepared = tmp / "prepared"
    images = (rng.random((500, 784)) < 0.15) * rng.integers(0, 256, (500, 784))
    write_prepared(prepared, "mnist_ntrain300", train_x=images[:300].astype(np.uint8),
                   test_x=images[300:].astype(np.uint8))
    params = load_params(REPO / "params.yaml")
    params["profile"] = "smoke"
    params["experiments"]["fig3"]["mnist"]["hidden_units"] = 16
    params["optimizer"]["warmup_steps"] = 5
    params["optimizer"]["step_size"] = 0.05
    params["profiles"]["smoke"]["fig3"] = {
        "mnist": {"samples": 3000, "step_size_trial_samples": 1000},
        "eval_points_per_decade": 2, "eval_first_samples": 1000, "eval_train_points": 100,
        "eval_test_points": 100, "checkpoint_every": 1000,
        "marginal_likelihood": {"train_points": 40, "test_points": 30, "cross_checks": "final"},
    }
    params["evaluation"]["marginal_likelihood"].update(hmc_samples=50, burn_in=50, importance_samples=300)
    params_path = tmp / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    runs = {}
    for algorithm in ("aevb", "mcem"):
        config = build_run_config(params, "fig3", "mnist", algorithm, 3, ntrain=300)
        runs[algorithm] = tmp / algorithm
        run_training(config, runs[algorithm], prepared, progress=False)
    return params, params_path, prepared, runs


@pytest.mark.parametrize("algorithm", ["aevb", "mcem"])
def test_every_checkpoint_gets_appendix_d_and_the_final_one_the_cross_checks(trained_runs, algorithm):
    params, _, prepared, runs = trained_runs
    frame = evaluate_run(runs[algorithm], prepared, settings_from_params(params), "cpu", progress=False)
    assert list(frame.columns) == COLUMNS
    assert sorted(frame.samples_seen.unique()) == [1000, 2000, 3000]
    appendix_d = frame[frame.estimator == "appendix_d"]
    assert len(appendix_d) == 3 * 2 and set(appendix_d.split) == {"train", "test"}
    assert set(frame[frame.samples_seen < 3000].estimator) == {"appendix_d"}
    final = frame[frame.samples_seen == 3000].set_index(["split", "estimator"])
    assert set(final.index.get_level_values("estimator")) == {"appendix_d", "importance_sampling", "grid"}
    assert (final.points.xs("train", level="split") == 40).all() and (final.points.xs("test", level="split") == 30).all()
    assert np.isfinite(frame.value).all() and (frame.value < 0).all() and (frame.standard_error >= 0).all()
    for split in ("train", "test"):
        grid = final.loc[(split, "grid")]
        assert grid.diagnostic_value < 0.05, "the grid's error bound is too loose to check against"
        # Appendix D and the exact integral agree; importance sampling is a bound from below.
        assert abs(final.loc[(split, "appendix_d")].value - grid.value) < 0.5
        assert final.loc[(split, "importance_sampling")].value < grid.value + 0.05
        assert final.loc[(split, "importance_sampling")].value > grid.value - 1.0
    acceptance = appendix_d.diagnostic_value
    assert ((acceptance > 0.5) & (acceptance <= 1)).all()


def test_a_rerun_reuses_the_rows_and_changed_settings_recompute(trained_runs, monkeypatch):
    params, _, prepared, runs = trained_runs
    settings = settings_from_params(params)
    first = evaluate_run(runs["aevb"], prepared, settings, "cpu", progress=False)

    def must_not_run(*args, **kwargs):
        raise AssertionError("an up-to-date checkpoint was evaluated again")

    monkeypatch.setattr(evaluate_module, "estimate_split", must_not_run)
    monkeypatch.setattr(evaluate_module, "grid_by_split", must_not_run)
    again = evaluate_run(runs["aevb"], prepared, settings, "cpu", progress=False)
    pd.testing.assert_frame_equal(first, again, check_dtype=False)
    monkeypatch.undo()

    from dataclasses import replace
    changed = evaluate_run(runs["aevb"], prepared, replace(settings, burn_in=21), "cpu", progress=False)
    assert not set(changed.fingerprint) & set(first.fingerprint)
    same_numbers = evaluate_run(runs["aevb"], prepared, settings, "cpu", progress=False)
    pd.testing.assert_frame_equal(first.drop(columns="wall_seconds"), same_numbers.drop(columns="wall_seconds"),
                                  check_dtype=False)


def test_bad_settings_and_missing_runs_are_clear_errors(trained_runs, tmp_path):
    params, params_path, prepared, _ = trained_runs
    bad = yaml.safe_load(params_path.read_text())
    bad["profiles"]["smoke"]["fig3"]["marginal_likelihood"]["cross_checks"] = "sometimes"
    with pytest.raises(ParamsError, match="cross_checks"):
        settings_from_params(bad)
    with pytest.raises(MissingRunError, match="not a trained run directory"):
        evaluate_run(tmp_path, prepared, settings_from_params(params), "cpu", progress=False)
    result = CliRunner().invoke(main, ["evaluate", "marginal-likelihood", "--run", str(tmp_path),
                                       "--params", str(params_path), "--prepared-dir", str(prepared)])
    assert result.exit_code == 1 and "not a trained run directory" in result.output
    assert "Traceback" not in result.output


def test_the_grid_on_all_splits_at_once_equals_one_grid_per_split():
    from vae_core import ModelConfig, VariationalAutoEncoder
    from vae_core.marginal_likelihood import grid_estimator

    torch.manual_seed(0)
    model = VariationalAutoEncoder(ModelConfig(784, 2, 20, "bernoulli", init_std=0.3))
    splits = {"train": torch.rand(7, 784).round(), "test": torch.rand(5, 784).round()}
    together = evaluate_module.grid_by_split(model, splits)
    for split, x in splits.items():
        alone = grid_estimator(model, x)
        estimate, seconds = together[split]
        assert len(estimate) == x.shape[0] and seconds >= 0
        # equal up to float32 rounding in the likelihood's matrix product (its shape differs)
        assert torch.allclose(estimate.log_px, alone.log_px, rtol=0, atol=1e-5)
        assert torch.allclose(estimate.standard_error, alone.standard_error, rtol=0, atol=1e-5)
        assert estimate.details["box_low"].shape == alone.details["box_low"].shape


def test_a_profile_may_set_its_own_importance_sample_count(trained_runs):
    params = copy.deepcopy(trained_runs[0])
    assert settings_from_params(params).importance_samples == params["evaluation"]["marginal_likelihood"]["importance_samples"]
    params["profiles"]["smoke"]["fig3"]["marginal_likelihood"]["importance_samples"] = 123
    assert settings_from_params(params).importance_samples == 123
    params["profiles"]["smoke"]["fig3"]["marginal_likelihood"]["importance_samples"] = 0
    with pytest.raises(ParamsError, match=r"profiles\.smoke\.fig3\.marginal_likelihood\.importance_samples"):
        settings_from_params(params)


def test_cross_checks_only_where_the_settings_ask(trained_runs, tmp_path):
    params, _, prepared, runs = trained_runs
    from dataclasses import replace
    settings = replace(settings_from_params(params), cross_check_splits=("test",))
    frame = evaluate_run(runs["aevb"], prepared, settings, "cpu", progress=False, out=tmp_path / "ml.csv")
    final = frame[frame.samples_seen == frame.samples_seen.max()]
    assert set(final[final.split == "train"].estimator) == {"appendix_d"}
    assert set(final[final.split == "test"].estimator) == {"appendix_d", "importance_sampling", "grid"}
    other = replace(settings, splits=("test",), cross_checks="none")
    frame = evaluate_run(runs["aevb"], prepared, other, "cpu", progress=False, out=tmp_path / "other.csv")
    assert set(frame.split) == {"test"} and set(frame.estimator) == {"appendix_d"}


def test_the_estimators_do_not_depend_on_the_thread_count_on_figure_3s_model():
    """Why the evaluation stage may follow the free cores (pipeline/evaluation/marginal_likelihood.py): on the Figure 3
    architecture (100 hidden units, Nz = 3, 784 pixels) Appendix D, importance sampling and the grid
    give the same numbers on one thread and on two."""
    from vae_core import ModelConfig, VariationalAutoEncoder
    from vae_core.marginal_likelihood import appendix_d_estimator, grid_estimator, importance_sampling_estimator

    torch.manual_seed(0)
    model = VariationalAutoEncoder(ModelConfig(784, 3, 100, "bernoulli"))
    x = torch.bernoulli(torch.full((200, 784), 0.2), generator=torch.Generator().manual_seed(1))
    before, results = torch.get_num_threads(), {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(3)
            appendix_d = appendix_d_estimator(model, x, n_samples=10, burn_in=10).mean()
            torch.manual_seed(3)
            sampled = importance_sampling_estimator(model, x, n_samples=300).mean()
            results[threads] = (appendix_d, sampled, grid_estimator(model, x[:50]).mean())
    finally:
        torch.set_num_threads(before)
    assert results[1] == results[2]
