"""``vaebench bench``: how fast this suite trains and evaluates on this machine (a benchmark, not a test).

One run measures, each as the median of ``repeats`` timed repeats after a warm-up:

- **calibration**: the peak float32 matrix-multiply rate at the model's own shapes (the five
  products of size M x D x H of one AEVB update at M = 100, each timed alone in a tight loop as
  the training step calls it), and from it the arithmetic **limit** in training samples per second:
  rate / FLOPs per sample, FLOPs per sample = 3 x the forward pass's matrix-multiply FLOPs
  (forward + a backward of twice the forward: the convention of issue 7, 4.9 MFLOP for this
  model). Our backward needs no gradient with respect to the data, so it does about 4.1 MFLOP;
  the limit is stated in the convention's units either way.
- **tutorial**: the same model trained the way a typical tutorial does it -- an ``nn.Module``
  VAE fed by a shuffling ``DataLoader`` over a ``TensorDataset``, ``F.binary_cross_entropy`` on
  the sigmoid output, ``torch.optim.Adagrad`` (same M, same data).
- **ours**: ``AEVB`` through ``AEVB.train_steps`` (the pipeline's path: the fused
  update, vae_core.fused_aevb), and its autograd path for reference; wake-sleep and MCEM (the
  baselines) through the same loop; on the Figure 2 MNIST model (500 hidden, Nz = 20) and the
  Figure 3 model (100 hidden, Nz = 3). On N = 50,000 a timing run visits each MCEM chain less
  than once, so its acceptance there mostly reflects the population step size first visits
  start from; a separate MCEM run on 1,000 datapoints shows where the per-chain tuner settles.
- **stacked sweeps**: R runs of the Figure 3 model trained at once by one StackedAEVB, aggregate
  samples per second against one run's, and the ceiling no stack can pass: the calibrated
  matrix-multiply rate divided by the FLOPs our update does per sample, over one run's rate
  (timed in the same rounds).
- **evaluation share**: one evaluation pass (the bound on 10,000 training + 10,000 test points,
  as the default profile evaluates) against the training time between evaluations on the
  default schedule.
- **marginal likelihood** (optional): seconds per 1,000 datapoints of Appendix D, importance
  sampling (K = 5,000) and the grid on the Figure 3 model (pipeline.bench.marginal_likelihood).
- **contention** (optional, about half a minute): AEVB training samples/s of both models quiet,
  beside one competing CPU-bound process with the thread count adapted as the training loop
  adapts it (:class:`pipeline.plumbing.cpu_threads.ThreadGovernor`, updated before each chunk of 200
  updates), and for contrast beside it pinned at the starting count; medians over rounds, ratios
  to the quiet rate per round. The issue's target: beside the competitor training keeps at least
  0.3x (aim 0.5x) of its quiet rate.

Uses the prepared MNIST training split when it exists (random grey levels otherwise: the cost does
not depend on the values). Run it on a quiet machine: everything but the contention part assumes
one, and a busy neighbour shows in every number.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines import MonteCarloEM, WakeSleep
from vae_core import AEVB, ModelConfig, OptimizerConfig, VariationalAutoEncoder
from vae_core.fused_aevb import StackedAEVB
from vae_core.training import generator_like_global, train_stacked_steps

from pipeline.plumbing.cpu_threads import ThreadGovernor
from pipeline.training.train import PROGRESS_CHUNK_STEPS

M = 100
X_DIM = 784
MODELS = {"fig2_mnist_h500_nz20": (500, 20), "fig3_mnist_h100_nz3": (100, 3)}
WATCH_SECONDS = 0.25  # how long a fresh thread governor watches the machine before a timed chunk
ALGORITHMS = {"aevb": AEVB, "wake_sleep": WakeSleep, "mcem": MonteCarloEM}


def mnist_like_data(prepared_dir: str | Path, device: torch.device) -> tuple[torch.Tensor, str]:
    path = Path(prepared_dir) / "mnist.npz"
    if path.exists():
        with np.load(path) as arrays:
            x = torch.from_numpy(arrays["train_x"].astype(np.float32) / np.float32(256.0))
        return x.to(device), f"MNIST training split ({path})"
    generator = torch.Generator().manual_seed(0)
    return torch.rand(50_000, X_DIM, generator=generator).to(device), "random grey levels"


def median_rate(work: Callable[[], object], units: float, repeats: int, device: torch.device) -> dict:
    """Median (and every) rate of ``units`` per second over ``repeats`` timed calls of ``work``."""
    rates = [timed_rate(work, units, device) for _ in range(repeats)]
    return {"median": round(statistics.median(rates), 1), "repeats": [round(r, 1) for r in rates]}


def timed_rate(work: Callable[[], object], units: float, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return units / (time.perf_counter() - start)


def interleaved_rates(contenders: dict[str, tuple[Callable[[], object], float]], repeats: int,
                      device: torch.device) -> dict[str, list[float]]:
    """Rates of several contenders measured in rounds, each round timing every contender once.

    This machine's speed drifts by tens of percent over seconds (a shared host); timing the
    contenders side by side in each round lets their ratios be taken per round, where the drift
    cancels, and summarized by the median over rounds."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (work, units) in contenders.items():
            rates[name].append(timed_rate(work, units, device))
    return rates


def summary(rates: list[float]) -> dict:
    return {"median": round(statistics.median(rates), 1), "repeats": [round(r, 1) for r in rates]}


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    return round(statistics.median(a / b for a, b in zip(numerator, denominator)), 3)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


@contextmanager
def competing_process(settle_seconds: float = 0.5) -> Iterator[subprocess.Popen]:
    """A CPU-bound process (a Python busy loop: one core's worth of work) running for the block
    and killed after it, whatever happens; it runs ``settle_seconds`` before the block starts."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(settle_seconds)
        yield process
    finally:
        process.kill()
        process.wait()


def chunked_rate(train: Callable[[int], object], chunk_steps: int, seconds: float, device: torch.device,
                 governor: ThreadGovernor | None) -> tuple[float, int]:
    """(training samples/s, threads of the last chunk) over chunks of ``chunk_steps`` updates
    timed until ``seconds`` have passed, ``governor`` (if any) updated before each chunk as the
    training loop does."""
    timed, chunks = 0.0, 0
    while chunks == 0 or timed < seconds:
        threads = governor.update() if governor is not None else torch.get_num_threads()
        synchronize(device)
        start = time.perf_counter()
        train(chunk_steps)
        synchronize(device)
        timed, chunks = timed + time.perf_counter() - start, chunks + 1
    return chunks * chunk_steps * M / timed, threads


def watching_governor(threads: int, seconds: float) -> ThreadGovernor:
    """A fresh governor that starts at ``threads`` and has watched the machine for ``seconds``, as
    a training run's watches it through the run's setup (data, step-size trials): its first
    update already knows what other processes leave free. (Unwatched, the first chunk of 200
    updates would run at the full count beside a competitor: at the crawl this bench measures
    for the pinned count, tens of seconds for the Figure 2 model.)"""
    torch.set_num_threads(threads)
    governor = ThreadGovernor(threads, adaptive=True)
    time.sleep(seconds)
    return governor


def contention_round(train: Callable[[int], object], threads: int, chunk_steps: int, seconds: float,
                     settle_seconds: float, device: torch.device) -> dict[str, tuple[float, int]]:
    """(samples/s, threads) quiet through a governor, then beside a competing process through a
    governor and pinned at ``threads`` (the count the bench started with). Pinned chunks are a
    hundredth as long: without a governor only the timed span matters, and a pinned run may crawl."""
    quiet = chunked_rate(train, chunk_steps, seconds, device, watching_governor(threads, WATCH_SECONDS))
    with competing_process(settle_seconds):
        contended = chunked_rate(train, chunk_steps, seconds, device, watching_governor(threads, WATCH_SECONDS))
        torch.set_num_threads(threads)
        pinned = chunked_rate(train, max(1, chunk_steps // 100), seconds, device, None)
    return {"quiet": quiet, "contended": contended, "contended_pinned": pinned}


def model_contention(x: torch.Tensor, hidden: int, z_dim: int, device: torch.device, rounds: int,
                     chunk_steps: int, seconds: float, settle_seconds: float) -> dict:
    """AEVB training of one model in ``rounds`` rounds of :func:`contention_round`: rates (medians
    over rounds), ratios to the quiet rate (medians of the per-round ratios: the machine drifts) and
    the thread counts each round ended with. Torch's thread count is restored afterwards."""
    threads = torch.get_num_threads()
    train, _ = algorithm_loop("aevb", x, hidden, z_dim, device)
    try:
        measured = [contention_round(train, threads, chunk_steps, seconds, settle_seconds, device)
                    for _ in range(rounds)]
    finally:
        torch.set_num_threads(threads)
    rates = {name: [m[name][0] for m in measured] for name in measured[0]}
    return {"samples_per_second": {name: summary(values) for name, values in rates.items()},
            "ratios": {"contended_over_quiet": median_ratio(rates["contended"], rates["quiet"]),
                       "pinned_over_quiet": median_ratio(rates["contended_pinned"], rates["quiet"])},
            "threads": {name: [m[name][1] for m in measured] for name in measured[0]}}


def contention_bench(x: torch.Tensor, device: torch.device, rounds: int = 3, chunk_steps: int = PROGRESS_CHUNK_STEPS,
                     seconds: float = 1.0, settle_seconds: float = 0.5) -> dict:
    """Training beside one competing CPU-bound process, per model (:func:`model_contention`)."""
    return {
        "competitor": f"one CPU-bound process (python -c 'while True: pass'), started "
                      f"{settle_seconds + WATCH_SECONDS:g} s before timing",
        "rounds": rounds, "updates_per_chunk": chunk_steps, "seconds_timed": seconds,
        "governor_watch_seconds": WATCH_SECONDS, "pinned_threads": torch.get_num_threads(),
        "models": {name: model_contention(x, hidden, z_dim, device, rounds, chunk_steps, seconds, settle_seconds)
                   for name, (hidden, z_dim) in MODELS.items()},
    }


def run_bench(prepared_dir: str | Path, device: torch.device, steps: int, repeats: int,
              marginal_likelihood_points: int = 0, stacked_runs: tuple[int, ...] = (1, 2, 4, 8),
              contention: bool = True) -> dict:
    x, source = mnist_like_data(prepared_dir, device)
    results: dict = {
        "machine": {"device": str(device), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine(),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "data": source,
        "minibatch_size": M,
        "rounds": repeats,
        "steps_per_round": steps,
        "models": {},
    }
    for name, (hidden, z_dim) in MODELS.items():
        flops = 3 * forward_matmul_flops(hidden, z_dim)
        calibrate, gflop = matmul_calibration(hidden, device)
        contenders = {"matmul_gflops": (calibrate, gflop),
                      "tutorial": (lambda n=steps, t=tutorial_loop(x, hidden, z_dim, device): t(n), steps * M)}
        trained = {}
        for algorithm in ALGORITHMS:
            loop, trained[algorithm] = algorithm_loop(algorithm, x, hidden, z_dim, device)
            n = max(10, steps // 5) if algorithm == "mcem" else steps  # MCEM: 10x the work per update
            contenders[algorithm] = (lambda n=n, loop=loop: loop(n), n * M)
        autograd, _ = algorithm_loop("aevb", x, hidden, z_dim, device, fused=False)
        contenders["aevb_autograd"] = (lambda: autograd(steps), steps * M)
        rates = interleaved_rates(contenders, repeats, device)
        limits = limit_rates(rates["matmul_gflops"], flops)
        our_limits = limit_rates(rates["matmul_gflops"], our_matmul_flops(hidden, z_dim))
        ours = statistics.median(rates["aevb"])
        results["models"][name] = {
            "hidden_units": hidden, "nz": z_dim,
            "flops_per_sample": flops,
            "our_flops_per_sample": our_matmul_flops(hidden, z_dim),
            "matmul_gflops": summary(rates["matmul_gflops"]),
            "limit_samples_per_second": summary(limits),
            "our_flops_limit_samples_per_second": summary(our_limits),
            "samples_per_second": {k: summary(v) for k, v in rates.items() if k != "matmul_gflops"},
            "ratios": {  # medians over rounds of the per-round ratios
                "aevb_over_tutorial": median_ratio(rates["aevb"], rates["tutorial"]),
                "aevb_over_limit": median_ratio(rates["aevb"], limits),
                "aevb_over_our_flops_limit": median_ratio(rates["aevb"], our_limits),
                "tutorial_over_our_flops_limit": median_ratio(rates["tutorial"], our_limits),
                "tutorial_over_limit": median_ratio(rates["tutorial"], limits),
                "aevb_over_aevb_autograd": median_ratio(rates["aevb"], rates["aevb_autograd"]),
                "mcem_cost_per_sample_vs_aevb": median_ratio(rates["aevb"], rates["mcem"]),
                "wake_sleep_cost_per_sample_vs_aevb": median_ratio(rates["aevb"], rates["wake_sleep"]),
            },
            "mcem_hmc_acceptance_rate": round(trained["mcem"].acceptance_rate, 4),
            "evaluation": evaluation_share(x, hidden, z_dim, ours, repeats, device),
        }
    results["mcem_tuner"] = mcem_tuner_check(x)
    hidden, z_dim = MODELS["fig3_mnist_h100_nz3"]
    sweeps = {}
    for runs in stacked_runs:
        loop = stacked_loop(x, hidden, z_dim, runs, device)
        sweeps[f"stacked_{runs}"] = (lambda loop=loop: loop(steps), runs * steps * M)
    one_run, _ = algorithm_loop("aevb", x, hidden, z_dim, device)
    tutorial = tutorial_loop(x, hidden, z_dim, device)
    sweeps["one_run"] = (lambda: one_run(steps), steps * M)
    sweeps["tutorial"] = (lambda: tutorial(steps), steps * M)
    sweeps["matmul_gflops"] = matmul_calibration(hidden, device)  # in the same rounds: the ceiling
    rates = interleaved_rates(sweeps, repeats, device)
    our_limits = limit_rates(rates.pop("matmul_gflops"), our_matmul_flops(hidden, z_dim))
    results["stacked_fig3"] = {
        "aggregate_samples_per_second": {k: summary(v) for k, v in rates.items()},
        # No stack can beat the arithmetic of its matrix products (our FLOPs at the calibrated
        # rate, measured in the same rounds as the runs): the most stacking can give.
        "our_flops_limit_samples_per_second": summary(our_limits),
        "ceiling_over_one_run": median_ratio(our_limits, rates["one_run"]),
        "over_one_run": {str(r): median_ratio(rates[f"stacked_{r}"], rates["one_run"]) for r in stacked_runs},
        "over_tutorial_one_run": {str(r): median_ratio(rates[f"stacked_{r}"], rates["tutorial"]) for r in stacked_runs},
    }
    if marginal_likelihood_points:
        results["marginal_likelihood_fig3"] = marginal_likelihood_costs(marginal_likelihood_points, device)
    if contention:
        results["contention"] = contention_bench(x, device)
    return results


def bench_table(results: dict) -> str:
    """The headline numbers as a plain-text table (samples/s are medians over rounds; ratios are
    medians of the per-round ratios)."""
    lines = [f"{'model':22s} {'ours':>8s} {'autograd':>8s} {'tutorial':>8s} {'limit':>8s} {'GFLOP/s':>7s} "
             f"{'ours/tut':>8s} {'ours/lim':>8s} {'tut/lim':>7s} {'WS':>7s} {'MCEM':>7s} {'eval':>6s}"]
    for name, e in results["models"].items():
        s = e["samples_per_second"]
        lines.append(
            f"{name:22s} {s['aevb']['median']:8,.0f} {s['aevb_autograd']['median']:8,.0f} "
            f"{s['tutorial']['median']:8,.0f} {e['limit_samples_per_second']['median']:8,.0f} "
            f"{e['matmul_gflops']['median']:7.1f} {e['ratios']['aevb_over_tutorial']:8.2f} "
            f"{e['ratios']['aevb_over_limit']:8.2f} {e['ratios']['tutorial_over_limit']:7.2f} "
            f"{s['wake_sleep']['median']:7,.0f} {s['mcem']['median']:7,.0f} "
            f"{100 * e['evaluation']['share_of_run']:5.1f}%")
    sweep = results["stacked_fig3"]
    rates = sweep["aggregate_samples_per_second"]
    lines.append(f"stacked Figure 3 runs (aggregate samples/s; x one run, x the tutorial loop's one run): one run "
                 f"{rates['one_run']['median']:,.0f}, tutorial {rates['tutorial']['median']:,.0f}, arithmetic "
                 f"ceiling {sweep['ceiling_over_one_run']:.2f}x one run; " + ", ".join(
                     f"R={r}: {rates[f'stacked_{r}']['median']:,.0f} ({sweep['over_one_run'][r]:.2f}x, "
                     f"{sweep['over_tutorial_one_run'][r]:.2f}x)" for r in sweep["over_one_run"]))
    tuner = results["mcem_tuner"]
    lines.append(f"MCEM tuner: acceptance {tuner['acceptance_rate']:.3f} (target {tuner['target']}), {tuner['setting']}")
    for name, e in results.get("marginal_likelihood_fig3", {}).items():
        lines.append(f"marginal likelihood {name}: {e['seconds_per_1000_points']:.1f} s per 1,000 points")
    if "contention" in results:
        lines += contention_lines(results["contention"])
    return "\n".join(lines)


def contention_lines(contention: dict) -> list[str]:
    """One line per model: AEVB samples/s quiet, beside the competitor (governed, pinned), ratios."""
    lines = [f"beside {contention['competitor']} (AEVB samples/s, medians of {contention['rounds']} rounds; "
             f"threads of the last round in brackets):"]
    for name, e in contention["models"].items():
        rates, ratios, threads = e["samples_per_second"], e["ratios"], e["threads"]
        lines.append(f"  {name:22s} quiet {rates['quiet']['median']:8,.0f} [{threads['quiet'][-1]}]  contended "
                     f"{rates['contended']['median']:8,.0f} [{threads['contended'][-1]}] = "
                     f"{ratios['contended_over_quiet']:.2f}x  pinned {rates['contended_pinned']['median']:8,.0f} "
                     f"[{threads['contended_pinned'][-1]}] = {ratios['pinned_over_quiet']:.2f}x")
    return lines
