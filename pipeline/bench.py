"""``vaebench bench``: training throughput on this machine, medians over repeats (not a test).

Measures AEVB training samples per second at M = 100 on the Figure 2 MNIST model (500 hidden units,
Nz = 20) and the Figure 3 model (100 hidden units, Nz = 3), on real MNIST grey levels when the
prepared data exists (random grey levels otherwise; the cost does not depend on the values), plus a
float32 matrix-multiply calibration at the model's largest shape as a reference for the machine.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vae_core import AEVB, ModelConfig, OptimizerConfig, VariationalAutoEncoder
from vae_core.training import train_steps

BENCH_MODELS = {
    "fig2_mnist_h500_nz20": (500, 20),
    "fig3_mnist_h100_nz3": (100, 3),
}


def mnist_like_data(prepared_dir: str | Path, device: torch.device) -> torch.Tensor:
    path = Path(prepared_dir) / "mnist.npz"
    if path.exists():
        with np.load(path) as arrays:
            return torch.from_numpy(arrays["train_x"].astype(np.float32) / 256.0).to(device)
    generator = torch.Generator().manual_seed(0)
    return torch.rand(50_000, 784, generator=generator).to(device)


def median_rate(work, units: float, repeats: int) -> tuple[float, list[float]]:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        rates.append(units / (time.perf_counter() - start))
    return statistics.median(rates), rates


def aevb_samples_per_second(
    x: torch.Tensor, hidden: int, z_dim: int, steps: int, repeats: int, batch_size: int = 100
) -> dict:
    torch.manual_seed(0)
    model = VariationalAutoEncoder(ModelConfig(784, z_dim, hidden, "bernoulli")).to(x.device)
    algorithm = AEVB(model, x.shape[0], OptimizerConfig(0.02, warmup_steps=0))
    train_steps(algorithm, x, 20, batch_size)  # warm up allocator and kernels
    median, rates = median_rate(
        lambda: train_steps(algorithm, x, steps, batch_size), steps * batch_size, repeats
    )
    return {"samples_per_second": round(median, 1), "repeats": [round(r, 1) for r in rates]}


def matmul_gflops(repeats: int, device: torch.device) -> float:
    a, b = torch.rand(100, 784, device=device), torch.rand(784, 500, device=device)
    iterations = 2000
    median, _ = median_rate(
        lambda: [a @ b for _ in range(iterations)], 2 * 100 * 784 * 500 * iterations / 1e9, repeats
    )
    return round(median, 1)


def run_bench(prepared_dir: str | Path, device: torch.device, steps: int, repeats: int) -> dict:
    x = mnist_like_data(prepared_dir, device)
    results = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "minibatch_size": 100,
        "matmul_gflops_100x784x500": matmul_gflops(repeats, device),
        "aevb": {
            name: aevb_samples_per_second(x, hidden, z_dim, steps, repeats)
            for name, (hidden, z_dim) in BENCH_MODELS.items()
        },
    }
    return results
