"""The device-specific paths, run on the device ``pytest --device cuda`` names (the CPU by default,
so CI covers every line of them; scripts/gpu_check.sh runs them on a GPU).

Each test is the CPU test of the same property, on ``device``: the fused AEVB update equals
autograd's; stacked runs equal runs alone; a whole run trains, checkpoints, resumes to the
uninterrupted curve, and its checkpoints load on the CPU; the baselines and HMC run; the
marginal-likelihood estimators give the CPU's numbers on the same model; the bench runs.
Tolerances are those of float32 on a device whose kernels round differently from the CPU's.
"""
import copy
import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from baselines import MonteCarloEM, WakeSleep
from pipeline.cli import main
from pipeline.runs.config import build_run_config
from pipeline.runs.directory import final_checkpoint, load_checkpoint, model_from_checkpoint, read_run_config
from pipeline.training.train import run_training
from vae_core import AEVB, ModelConfig, OptimizerConfig, VariationalAutoEncoder
from vae_core.fused_aevb import StackedAEVB
from vae_core.marginal_likelihood import appendix_d_estimator, grid_estimator, importance_sampling_estimator
from vae_core.training import generator_like_global, train_stacked_steps


def model_on(device, decoder="bernoulli", x_dim=784, z_dim=3, hidden=32, init_std=0.3, dtype=torch.float32):
    return VariationalAutoEncoder(ModelConfig(x_dim, z_dim, hidden, decoder, init_std)).to(device=device, dtype=dtype)


@pytest.mark.parametrize("decoder,x_dim", [("bernoulli", 784), ("gaussian", 560)])
def test_the_fused_update_follows_autograd_on_the_device(device, decoder, x_dim):
    torch.manual_seed(0)
    x = torch.rand(300, x_dim, dtype=torch.float64, device=device)
    trained = []
    for fused in (True, False):
        torch.manual_seed(1)
        algorithm = AEVB(model_on(device, decoder, x_dim, dtype=torch.float64), 300,
                         OptimizerConfig(0.05, warmup_steps=5), fused=fused)
        algorithm.train_steps(x, 40, 20)
        trained.append(algorithm.model.state_dict())
    for key in trained[0]:
        scale = float(trained[1][key].abs().max()) + 1e-12
        assert float((trained[0][key] - trained[1][key]).abs().max()) <= 1e-5 * scale, key


def test_stacked_runs_give_the_numbers_of_the_runs_alone_on_the_device(device):
    data = torch.rand(200, 784, device=device, generator=torch.Generator(device).manual_seed(3))
    alone = []
    for seed in (11, 12):
        torch.manual_seed(seed)
        algorithm = AEVB(model_on(device, init_std=0.01), 200, OptimizerConfig(0.02, warmup_steps=4))
        algorithm.train_steps(data, 30, 32)
        alone.append(algorithm.model.state_dict())
    models, generators = [], []
    for seed in (11, 12):
        torch.manual_seed(seed)
        models.append(model_on(device, init_std=0.01))
        generators.append(generator_like_global(device))
    engine = StackedAEVB(models, [200, 200], [OptimizerConfig(0.02, warmup_steps=4)] * 2)
    train_stacked_steps(engine, [data, data], generators, 30, 32)
    for model, state in zip(models, alone):
        for key, value in model.state_dict().items():
            scale = float(state[key].abs().max()) + 1e-12
            assert float((value - state[key]).abs().max()) <= 1e-4 * scale, key


@pytest.mark.parametrize("algorithm", [WakeSleep, MonteCarloEM])
def test_the_baselines_train_on_the_device_with_their_hand_gradients(device, algorithm):
    torch.manual_seed(0)
    x = torch.rand(200, 784, device=device).round()
    trained = algorithm(model_on(device), 200, OptimizerConfig(0.05, warmup_steps=5))
    assert trained.hand_gradients
    trained.train_steps(x, 30, 20)
    assert all(torch.isfinite(p).all() for p in trained.model.parameters())
    assert all(p.device.type == device.type for p in trained.model.parameters())


def test_the_marginal_likelihood_estimators_give_the_cpus_numbers(device):
    torch.manual_seed(0)
    cpu_model = model_on("cpu", z_dim=2, hidden=16, init_std=0.3, dtype=torch.float64)
    x = torch.rand(12, 784, dtype=torch.float64).round()
    device_model = copy.deepcopy(cpu_model).to(device)
    grids = [grid_estimator(m, x.to(m.encoder.hidden.weight.device)) for m in (cpu_model, device_model)]
    assert abs(grids[0].mean() - grids[1].mean()) < 1e-6
    exact = grids[0].mean()
    for estimate in (appendix_d_estimator(device_model, x.to(device)),
                     importance_sampling_estimator(device_model, x.to(device), n_samples=2000)):
        assert abs(estimate.mean() - exact) < 0.3, (estimate.estimator, estimate.mean(), exact)


@pytest.fixture
def device_setup(tiny_setup, device):
    params, params_path, prepared, tmp = tiny_setup
    params = copy.deepcopy(params)
    params["training"]["device"] = device.type
    return params, prepared, tmp


def test_a_run_trains_checkpoints_and_resumes_on_the_device(device_setup, device):
    params, prepared, tmp = device_setup
    config = build_run_config(params, "fig2", "mnist", "aevb", 3)
    whole = run_training(config, tmp / "whole", prepared, progress=False)
    assert whole["device"].startswith(device.type)
    run_training(config, tmp / "split", prepared, progress=False, stop_after_samples=2000)
    resumed = run_training(config, tmp / "split", prepared, progress=False)
    assert resumed["resumed_from"].endswith("samples_000000002000.pt")
    curves = [pd.read_csv(tmp / name / "curve.csv").drop(columns="wall_seconds") for name in ("whole", "split")]
    pd.testing.assert_frame_equal(*curves)
    # a run trained on the device is read on the CPU (a report or figure stage anywhere)
    state = load_checkpoint(final_checkpoint(tmp / "whole"), "cpu")
    model = model_from_checkpoint(read_run_config(tmp / "whole"), state, "cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_the_marginal_likelihood_stage_runs_on_the_device(device_setup, device):
    params, prepared, tmp = device_setup
    params["experiments"]["fig3"]["mnist"]["hidden_units"] = 16
    params["profiles"]["smoke"]["fig3"].update(
        mnist={"samples": 2000, "step_size": 0.05}, eval_first_samples=1000, eval_train_points=50,
        eval_test_points=50, checkpoint_every=1000,
        marginal_likelihood={"train_points": 20, "test_points": 20, "cross_checks": "final",
                             "importance_samples": 200})
    (tmp / "prepared" / "mnist_ntrain400.npz").symlink_to(tmp / "prepared" / "mnist.npz")
    index = json.loads((tmp / "prepared" / "datasets.json").read_text())
    index["mnist_ntrain400"] = index["mnist"]
    (tmp / "prepared" / "datasets.json").write_text(json.dumps(index))
    params_path = tmp / "device_params.yaml"
    import yaml

    params_path.write_text(yaml.safe_dump(params))
    for algorithm in ("aevb", "mcem"):
        config = build_run_config(params, "fig3", "mnist", algorithm, 3, ntrain=400)
        run_training(config, tmp / algorithm / "seed1", prepared, progress=False)
        result = CliRunner().invoke(main, ["evaluate", "marginal-likelihood", "--run", str(tmp / algorithm),
                                           "--out", str(tmp / "ml" / algorithm),
                                           "--params", str(params_path), "--prepared-dir", str(prepared),
                                           "--device", device.type, "--no-progress"])
        assert result.exit_code == 0, result.output
        frame = pd.read_csv(tmp / "ml" / algorithm / "seed1.csv")
        assert set(frame.estimator) == {"appendix_d", "importance_sampling", "grid"}
        final = frame[frame.samples_seen == 2000].set_index(["split", "estimator"]).value
        for split in ("train", "test"):
            assert abs(final[(split, "appendix_d")] - final[(split, "grid")]) < 1.0
