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
from pathlib import Path

import torch


from pipeline.bench.contenders import (ALGORITHMS, algorithm_loop, evaluation_share, forward_matmul_flops, limit_rates,
                                       marginal_likelihood_costs, matmul_calibration, mcem_tuner_check,
                                       our_matmul_flops, stacked_loop, tutorial_loop)
from pipeline.bench.contention import contention_bench, contention_lines
from pipeline.bench.harness import M, MODELS, interleaved_rates, median_ratio, mnist_like_data, summary



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


