"""``vaebench bench``'s contention part: AEVB's training rate quiet, beside a competing CPU-bound
process with the thread count adapted (:class:`pipeline.plumbing.cpu_threads.ThreadGovernor`), and
pinned at the starting count for contrast; medians over rounds."""
from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch


from pipeline.plumbing.cpu_threads import ThreadGovernor
from pipeline.training.schedule import PROGRESS_CHUNK_STEPS

from pipeline.bench.contenders import algorithm_loop
from pipeline.bench.harness import M, MODELS, median_ratio, summary, synchronize

WATCH_SECONDS = 0.25  # how long a fresh thread governor watches the machine before a timed chunk


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
