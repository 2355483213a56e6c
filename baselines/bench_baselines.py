"""Training throughput of AEVB, wake-sleep and MCEM (``python -m baselines.bench_baselines``).

Samples per second at M = 100, median over repeats, on the Figure 3 model (100 hidden, Nz = 3)
and the Figure 2 MNIST model (500 hidden, Nz = 20), N = 50,000 MNIST-shaped grey levels.
"""
from __future__ import annotations

import statistics
import time

import torch

from baselines import MonteCarloEM, WakeSleep
from vae_core import AEVB, ModelConfig, OptimizerConfig, VariationalAutoEncoder
from vae_core.training import train_steps

ALGORITHMS = {"aevb": AEVB, "wake_sleep": WakeSleep, "mcem": MonteCarloEM}


def throughput(algorithm_name: str, hidden: int, z_dim: int, x: torch.Tensor, steps: int, repeats: int):
    torch.manual_seed(0)
    model = VariationalAutoEncoder(ModelConfig(x.shape[1], z_dim, hidden, "bernoulli"))
    algorithm = ALGORITHMS[algorithm_name](model, x.shape[0], OptimizerConfig(0.02, warmup_steps=0))
    train_steps(algorithm, x, 10, 100)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        train_steps(algorithm, x, steps, 100)
        rates.append(steps * 100 / (time.perf_counter() - start))
    return statistics.median(rates), getattr(algorithm, "acceptance_rate", None)


def main(steps: int = 100, repeats: int = 3) -> None:
    x = torch.rand(50_000, 784, generator=torch.Generator().manual_seed(0))
    for label, hidden, z_dim in (("fig3 h100 nz3", 100, 3), ("fig2 h500 nz20", 500, 20)):
        base = None
        for name in ALGORITHMS:
            rate, acceptance = throughput(name, hidden, z_dim, x, steps, repeats)
            base = base or rate
            extra = f", acceptance {acceptance:.2f}" if acceptance is not None else ""
            print(f"{label:15s} {name:11s} {rate:10,.0f} samples/s  cost x{base / rate:5.1f} vs AEVB{extra}")


if __name__ == "__main__":
    main()
