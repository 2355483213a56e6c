"""Training throughput of AEVB, wake-sleep and MCEM: ``python -m baselines.bench_baselines``.

A benchmark note, not a test. For each model it prints training samples per second (the x-axis
unit of Figures 2 and 3: M = 100 datapoints per minibatch update), the median over ``--repeats``
timed runs of ``--steps`` updates through vae_core.training.train_steps, and each algorithm's cost
per sample relative to AEVB:

- the Figure 3 model: 100 hidden units, Nz = 3;
- the Figure 2 MNIST model at Nz = 20: 500 hidden units.

Both on N = 50,000 MNIST-shaped datapoints: the prepared MNIST training split
(data/prepared/mnist.npz, pixel / 256) when it exists, random grey levels otherwise (the timing
does not depend on the values). For MCEM it also reports the acceptance rate its step-size tuner
reached: on N = 50,000 a timing run visits each chain less than once, so that number mostly
reflects the population step size that first visits start from (baselines/mcem.py), still settling;
a separate run on the first 1,000 datapoints (every chain visited ~``--tuner-steps`` / 10 times)
shows where the per-chain tuner settles. On a machine shared with other jobs, pass --threads 1:
these small matrices gain little from a second thread and lose a lot when it has to wait.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from baselines import MonteCarloEM, WakeSleep
from vae_core import AEVB, ModelConfig, OptimizerConfig, VariationalAutoEncoder
from vae_core.training import train_steps

ALGORITHMS = {"aevb": AEVB, "wake_sleep": WakeSleep, "mcem": MonteCarloEM}
MODELS = (("fig3: 100 hidden, Nz=3", 100, 3), ("fig2: 500 hidden, Nz=20", 500, 20))
MNIST = Path(__file__).resolve().parents[1] / "data" / "prepared" / "mnist.npz"
BATCH_SIZE = 100


def load_training_data(n_train: int = 50_000) -> tuple[torch.Tensor, str]:
    if MNIST.exists():
        x = np.load(MNIST)["train_x"][:n_train]
        return torch.from_numpy(x).float() / 256.0, f"MNIST train ({MNIST})"
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n_train, 784, generator=generator), "random grey levels"


def build(name: str, hidden: int, z_dim: int, n_train: int):
    torch.manual_seed(0)
    model = VariationalAutoEncoder(ModelConfig(784, z_dim, hidden, "bernoulli"))
    return ALGORITHMS[name](model, n_train, OptimizerConfig(0.02))


def throughput(name: str, hidden: int, z_dim: int, x: torch.Tensor, steps: int, repeats: int):
    algorithm = build(name, hidden, z_dim, x.shape[0])
    train_steps(algorithm, x, 5, BATCH_SIZE)  # warm up allocators and code paths
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        train_steps(algorithm, x, steps, BATCH_SIZE)
        rates.append(steps * BATCH_SIZE / (time.perf_counter() - start))
    return statistics.median(rates), algorithm


def tuner_check(x: torch.Tensor, steps: int) -> MonteCarloEM:
    """MCEM on the Figure 3 model and 1,000 datapoints; acceptance over the last third of ``steps``."""
    algorithm = build("mcem", 100, 3, x.shape[0])
    train_steps(algorithm, x, steps - steps // 3, BATCH_SIZE)
    algorithm.accepted_total, algorithm.proposals_total = 0.0, 0
    train_steps(algorithm, x, steps // 3, BATCH_SIZE)
    return algorithm


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="minibatch updates per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--tuner-steps", type=int, default=300, help="MCEM updates on 1,000 datapoints")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x, source = load_training_data()
    print(f"data: {source}, N = {x.shape[0]}, M = {BATCH_SIZE}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); median of {args.repeats} x {args.steps} updates")
    print(f"{'model':25s} {'algorithm':11s} {'samples/s':>10s} {'ms/update':>10s} {'cost vs AEVB':>13s}")
    for label, hidden, z_dim in MODELS:
        base = None
        for name in ALGORITHMS:
            rate, algorithm = throughput(name, hidden, z_dim, x, args.steps, args.repeats)
            base = base or rate
            line = f"{label:25s} {name:11s} {rate:10,.0f} {1000 * BATCH_SIZE / rate:10.1f} {base / rate:12.1f}x"
            if isinstance(algorithm, MonteCarloEM):
                line += (f"   HMC acceptance {algorithm.acceptance_rate:.3f} (chains visited "
                         f"{float(algorithm.visits.float().mean()):.2f} times on average)")
            print(line, flush=True)
    if args.tuner_steps > 0:
        tuned = tuner_check(x[:1000], args.tuner_steps)
        print(f"MCEM tuner, fig3 model, N = 1,000, {args.tuner_steps} updates (~{args.tuner_steps // 10} visits "
              f"per chain): acceptance over the last {args.tuner_steps // 3} updates {tuned.acceptance_rate:.3f} "
              f"(target {tuned.target_accept}); median step size {float(tuned.step_sizes.median()):.3f}")


if __name__ == "__main__":
    main()
