"""The timing harness of ``vaebench bench``: medians of timed repeats after a warm-up, contenders
timed in interleaved rounds (so a machine's swings fall on all alike), and the data they train on."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch



M = 100
X_DIM = 784
MODELS = {"fig2_mnist_h500_nz20": (500, 20), "fig3_mnist_h100_nz3": (100, 3)}


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
