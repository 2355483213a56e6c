"""Wall time of the marginal-likelihood estimators (``python -m pipeline.bench.marginal_likelihood``).

The Figure 3 model (MNIST, x of dimension 784, 100 hidden units, Nz = 3, Bernoulli decoder): with
``--run runs/fig3/<run>`` the final checkpoint of a pipeline run (AEVB or wake-sleep, which have an
encoder), otherwise one briefly trained here with AEVB so the posteriors have a realistic width;
evaluated on the first
``--points`` (default 1,000) test images with the paper's settings: Appendix D with 50 HMC samples
of 4 leapfrog steps (docs/protocol.md, section 5), importance sampling with K = 5,000 encoder samples, and
the grid at its default resolution. Prints seconds per 1,000 datapoints and the three estimates
side by side. Uses the prepared MNIST (data/prepared/mnist.npz, uint8 / 256) when it exists,
random grey levels otherwise; it only reads that one file and writes nothing.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from vae_core import AEVB, ModelConfig, OptimizerConfig, VariationalAutoEncoder, average_lower_bound
from vae_core.marginal_likelihood import appendix_d_estimator, grid_estimator, importance_sampling_estimator

MNIST = Path(__file__).resolve().parents[2] / "data" / "prepared" / "mnist.npz"


def load_data(n_train: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    if MNIST.exists():
        with np.load(MNIST) as data:
            train = torch.from_numpy(data["train_x"][:n_train].astype(np.float32) / 256.0)
            test = torch.from_numpy(data["test_x"][:n_test].astype(np.float32) / 256.0)
        return train, test, f"MNIST ({MNIST})"
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n_train, 784, generator=generator), torch.rand(n_test, 784, generator=generator), "random grey levels"


def load_run(run_dir: Path, prepared_dir: Path, n_test: int):
    """The model of a run's final checkpoint and the first ``n_test`` test points of its data."""
    from pipeline.runs.directory import (final_checkpoint, load_checkpoint, load_run_data, model_from_checkpoint,
                                        read_run_config)

    config = read_run_config(run_dir)
    if not config.trains_encoder:
        raise SystemExit(f"{run_dir} is an MCEM run, which has no encoder for the importance-sampling "
                         "proposal; pick an aevb or wake_sleep run")
    path = final_checkpoint(run_dir)
    data = load_run_data(config, prepared_dir, "cpu", eval_test_points=n_test)
    return model_from_checkpoint(config, load_checkpoint(path)), data.eval_test, f"{path}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000, help="test datapoints evaluated")
    parser.add_argument("--train-steps", type=int, default=2000, help="AEVB minibatches of 100 before timing")
    parser.add_argument("--is-samples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", type=Path, default=None,
                        help="a trained Figure 3 run directory (its final checkpoint is evaluated)")
    parser.add_argument("--prepared-dir", type=Path, default=MNIST.parent)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.run is not None:
        model, test, source = load_run(args.run, args.prepared_dir, args.points)
    else:
        train, test, source = load_data(50_000, args.points)
        model = VariationalAutoEncoder(ModelConfig(784, 3, 100, "bernoulli"))
        start = time.perf_counter()
        AEVB(model, train.shape[0], OptimizerConfig(0.02, warmup_steps=100)).train_steps(train, args.train_steps, 100)
        source += f"; Figure 3 model trained here, {args.train_steps} x 100 samples in {time.perf_counter() - start:.0f} s"
    torch.manual_seed(args.seed)
    bound = average_lower_bound(model, test)
    print(f"data: {source}; test lower bound {bound:.2f}; torch threads {torch.get_num_threads()}", flush=True)

    runs = [
        ("appendix D", "50 HMC samples, 4 leapfrog, burn-in 50", lambda: appendix_d_estimator(model, test)),
        ("appendix D x4", "200 HMC samples, 4 leapfrog, burn-in 50",
         lambda: appendix_d_estimator(model, test, n_samples=200)),
        ("importance sampling", f"K = {args.is_samples:,}, encoder proposal",
         lambda: importance_sampling_estimator(model, test, n_samples=args.is_samples)),
        ("grid", "default (65^3 shared; 25^3 boxes if err > 0.01)", lambda: grid_estimator(model, test)),
    ]
    results = []
    for name, settings, run in runs:
        start = time.perf_counter()
        estimate = run()
        seconds = time.perf_counter() - start
        results.append((name, settings, seconds * 1000 / args.points, estimate))
        print(f"  {name}: {seconds:.1f} s", flush=True)

    print(f"\n{'estimator':20s} {'settings':45s} {'s / 1000 pts':>12s} {'mean log p(x)':>14s} {'+- (noise)':>10s}")
    for name, settings, per_1000, estimate in results:
        print(f"{name:20s} {settings:45s} {per_1000:12.1f} {estimate.mean():14.3f} {estimate.mean_standard_error():10.3f}")
    grid = results[-1][3]
    print("\nper-datapoint differences from the grid (mean, mean |.|):")
    for name, _, _, estimate in results[:-1]:
        diff = (estimate.log_px.double() - grid.log_px.double())
        print(f"  {name:20s} {float(diff.mean()):+.3f}  {float(diff.abs().mean()):.3f}")
    print(f"grid: max discretization error {float(grid.details['discretization_error'].max()):.2e}, "
          f"max truncation error {float(grid.details['truncation_error'].max()):.1e}, "
          f"{int(grid.details['adaptive'].sum())} of {len(grid)} points in their own box")
    d = results[0][3].details
    print(f"appendix D: acceptance {float(d['accept_rate'].mean()):.2f}, KDE multipliers median "
          f"{float(d['bandwidth_multiplier'].median()):.2f}, ratio autocorrelation {float(d['autocorrelation']):.2f}")


if __name__ == "__main__":
    main()
