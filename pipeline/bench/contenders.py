"""What ``vaebench bench`` times: the matrix-multiply calibration and the arithmetic limit, the
tutorial-style VAE, our algorithms' training loops, stacked sweeps, the evaluation share and the
marginal-likelihood estimators' costs."""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from baselines import MonteCarloEM, WakeSleep
from vae_core import AEVB, ModelConfig, OptimizerConfig, VariationalAutoEncoder
from vae_core.fused_aevb import StackedAEVB
from vae_core.training import generator_like_global, train_stacked_steps


from pipeline.bench.harness import M, X_DIM, median_rate

ALGORITHMS = {"aevb": AEVB, "wake_sleep": WakeSleep, "mcem": MonteCarloEM}


def forward_matmul_flops(hidden: int, z_dim: int, x_dim: int = X_DIM) -> int:
    """Matrix-multiply FLOPs of one datapoint's forward pass (encoder, both heads, decoder)."""
    return 2 * (x_dim * hidden + hidden * 2 * z_dim + z_dim * hidden + hidden * x_dim)


def our_matmul_flops(hidden: int, z_dim: int, x_dim: int = X_DIM) -> int:
    """Matrix-multiply FLOPs of one datapoint's training step as vae_core.fused_aevb does it:
    the forward pass, and a backward pass of twice the forward less the gradient with respect
    to the data (which nothing needs)."""
    return 3 * forward_matmul_flops(hidden, z_dim, x_dim) - 2 * x_dim * hidden


def limit_rates(gflops: list[float], flops_per_sample: int) -> list[float]:
    """Training samples per second the calibrated matrix-multiply rates allow, one per round."""
    return [g * 1e9 / flops_per_sample for g in gflops]


def matmul_calibration(hidden: int, device: torch.device) -> tuple[Callable[[], object], float]:
    """Peak float32 matrix-multiply work at the model's shapes, as (work, GFLOP of one call).

    The five large products of one update at M = 100, as the update calls them (batched over a
    run dimension of 1, transposed operands where it has them), each repeated in a tight loop
    with its operands hot in cache. A training step cannot beat this rate: between its products
    the operands cycle through the cache and elementwise work runs."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, M, X_DIM, generator=g).to(device)
    w = torch.rand(1, hidden, X_DIM, generator=g).to(device)
    h = torch.rand(1, M, hidden, generator=g).to(device)
    d_o = torch.rand(1, M, X_DIM, generator=g).to(device)
    bias = torch.rand(1, 1, hidden, generator=g).to(device)
    bias_out = torch.rand(1, 1, X_DIM, generator=g).to(device)
    products = [
        lambda: torch.baddbmm(bias, x, w.transpose(1, 2)),   # encoder hidden layer
        lambda: torch.baddbmm(bias_out, h, w),                # decoder output layer
        lambda: torch.bmm(d_o.transpose(1, 2), h),            # its weight gradient
        lambda: torch.bmm(d_o, w.transpose(1, 2)),            # the decoder hidden layer's gradient
        lambda: torch.bmm(h.transpose(1, 2), x),              # the encoder weight gradient
    ]
    iterations = 40

    def work():
        for product in products:
            for _ in range(iterations):
                product()

    work()
    return work, len(products) * iterations * 2 * M * X_DIM * hidden / 1e9


class TutorialVAE(nn.Module):
    """The VAE of a typical PyTorch tutorial, with the paper's architecture (one tanh layer)."""

    def __init__(self, hidden: int, z_dim: int):
        super().__init__()
        self.enc = nn.Linear(X_DIM, hidden)
        self.mu = nn.Linear(hidden, z_dim)
        self.logvar = nn.Linear(hidden, z_dim)
        self.dec = nn.Linear(z_dim, hidden)
        self.out = nn.Linear(hidden, X_DIM)

    def forward(self, x):
        h = torch.tanh(self.enc(x))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return torch.sigmoid(self.out(torch.tanh(self.dec(z)))), mu, logvar


def tutorial_loop(x: torch.Tensor, hidden: int, z_dim: int, device: torch.device) -> Callable[[int], None]:
    """n steps of the typical tutorial training loop on the model (the reference of issue 7)."""
    torch.manual_seed(0)
    model = TutorialVAE(hidden, z_dim).to(device)
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.02)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=M, shuffle=True)
    batches = iter(loader)

    def next_batch():
        nonlocal batches
        try:
            return next(batches)[0]
        except StopIteration:
            batches = iter(loader)
            return next(batches)[0]

    def train(n):
        for _ in range(n):
            batch = next_batch()
            recon, mu, logvar = model(batch)
            loss = (F.binary_cross_entropy(recon, batch, reduction="sum")
                    - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())) / batch.shape[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    train(20)
    return train


def algorithm_loop(name: str, x: torch.Tensor, hidden: int, z_dim: int, device: torch.device,
                   **options) -> tuple[Callable[[int], None], object]:
    """n steps of one of our algorithms through ``train_steps`` (the pipeline's path)."""
    torch.manual_seed(0)
    model = VariationalAutoEncoder(ModelConfig(X_DIM, z_dim, hidden, "bernoulli")).to(device)
    algorithm = ALGORITHMS[name](model, x.shape[0], OptimizerConfig(0.02), **options)
    algorithm.train_steps(x, 20, M)
    return (lambda n: algorithm.train_steps(x, n, M)), algorithm


def mcem_tuner_check(x: torch.Tensor, updates: int = 300) -> dict:
    """MCEM on the Figure 3 model and the first 1,000 datapoints (each chain visited ~updates/10
    times): the acceptance rate its per-chain step-size tuner reaches over the last third."""
    torch.manual_seed(0)
    model = VariationalAutoEncoder(ModelConfig(X_DIM, 3, 100, "bernoulli")).to(x.device)
    algorithm = MonteCarloEM(model, 1000, OptimizerConfig(0.02))
    algorithm.train_steps(x[:1000], updates - updates // 3, M)
    algorithm.accepted_total, algorithm.proposals_total = 0.0, 0
    algorithm.train_steps(x[:1000], updates // 3, M)
    return {"acceptance_rate": round(algorithm.acceptance_rate, 4), "target": algorithm.adaptation.target,
            "median_step_size": round(float(algorithm.step_sizes.median()), 4),
            "setting": f"Figure 3 model, Ntrain = 1,000, {updates} updates, acceptance over the last {updates // 3}"}


def stacked_loop(x: torch.Tensor, hidden: int, z_dim: int, runs: int, device: torch.device) -> Callable[[int], object]:
    """n steps of ``runs`` stacked AEVB runs (different seeds) of one architecture."""
    models, generators = [], []
    for seed in range(runs):
        torch.manual_seed(seed)
        models.append(VariationalAutoEncoder(ModelConfig(X_DIM, z_dim, hidden, "bernoulli")).to(device))
        generators.append(generator_like_global(device))
    engine = StackedAEVB(models, [x.shape[0]] * runs, [OptimizerConfig(0.02)] * runs)
    data = [x] * runs
    train_stacked_steps(engine, data, generators, 20, M)
    return lambda n: train_stacked_steps(engine, data, generators, n, M)


def evaluation_share(x: torch.Tensor, hidden: int, z_dim: int, samples_per_second: float, repeats: int,
                     device: torch.device, points: int = 10_000, total: int = 1_000_000,
                     first: int = 10_000, per_decade: int = 5) -> dict:
    """Share of a default-profile run's time spent on evaluating the curve (pipeline/training/train.py)."""
    from pipeline.training.train import evaluation_schedule

    torch.manual_seed(0)
    model = VariationalAutoEncoder(ModelConfig(X_DIM, z_dim, hidden, "bernoulli")).to(device)
    algorithm = AEVB(model, x.shape[0], OptimizerConfig(0.02))
    train_x, test_x = x[:points], x[-points:]
    passes = median_rate(lambda: (algorithm.evaluate_lower_bound(train_x), algorithm.evaluate_lower_bound(test_x)),
                         1.0, repeats, device)
    seconds_per_pass = 1.0 / passes["median"]
    evaluations = len(evaluation_schedule(first, total, per_decade, M))
    training_seconds = total / samples_per_second
    evaluating_seconds = evaluations * seconds_per_pass
    return {
        "seconds_per_evaluation": round(seconds_per_pass, 3),
        "evaluations_per_run": evaluations,
        "training_seconds_per_run": round(training_seconds, 1),
        "share_of_run": round(evaluating_seconds / (evaluating_seconds + training_seconds), 4),
        "schedule": f"{per_decade} per decade from {first:,} to {total:,} samples, "
                    f"{points:,} train + {points:,} test points each",
    }


def marginal_likelihood_costs(points: int, device: torch.device) -> dict:
    """Seconds per 1,000 datapoints of each estimator on a briefly trained Figure 3 model."""
    from vae_core.marginal_likelihood import appendix_d_estimator, grid_estimator, importance_sampling_estimator

    from pipeline.bench.bench.marginal_likelihood import load_data

    train, test, _ = load_data(50_000, points)
    train, test = train.to(device), test.to(device)
    torch.manual_seed(0)
    model = VariationalAutoEncoder(ModelConfig(X_DIM, 3, 100, "bernoulli")).to(device)
    AEVB(model, train.shape[0], OptimizerConfig(0.02)).train_steps(train, 2000, M)
    results = {}
    for name, run in (("appendix_d", lambda: appendix_d_estimator(model, test)),
                      ("importance_sampling_k5000", lambda: importance_sampling_estimator(model, test, n_samples=5000)),
                      ("grid", lambda: grid_estimator(model, test))):
        torch.manual_seed(1)
        start = time.perf_counter()
        estimate = run()
        seconds = time.perf_counter() - start
        results[name] = {"seconds_per_1000_points": round(seconds * 1000 / points, 2),
                         "mean_log_px": round(float(estimate.mean()), 3)}
    return results
