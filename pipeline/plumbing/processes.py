"""Calls that run side by side, each in its own worker process (the seeds of one configuration)."""
from __future__ import annotations

import concurrent.futures
import multiprocessing

import torch
from tqdm import tqdm

from pipeline.plumbing.cpu_threads import available_cores


def _call(function, arguments):
    return function(*arguments)


def threads_per_process(processes: int) -> int:
    """Each worker's fixed torch thread count: its share of this process's cores (at least one)."""
    return max(1, available_cores() // processes)


def run_in_processes(function, calls: list[tuple[tuple, str]], progress: bool = True) -> list:
    """``function(*arguments)`` for each ``(arguments, label)`` of ``calls``, each in its own
    worker process (spawned: a clean interpreter, so no thread pool is inherited mid-state), all at
    once, each with a fixed share of the cores as its torch thread count; returns the results in
    order. Every call runs to its end even if another fails; then the
    first failure is raised (a one-line error naming its label). Used for the seeds of one
    configuration (training, and the marginal-likelihood stage)."""
    results: list = [None] * len(calls)
    failures = []
    context = multiprocessing.get_context("spawn")
    threads = threads_per_process(len(calls))  # fixed for each run's life (pipeline.plumbing.cpu_threads)
    with concurrent.futures.ProcessPoolExecutor(max_workers=len(calls), mp_context=context,
                                                initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        futures = {pool.submit(_call, function, arguments): (index, label)
                   for index, (arguments, label) in enumerate(calls)}
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures), disable=not progress,
                           desc=f"{len(calls)} seeds in {len(calls)} processes", unit="run"):
            index, label = futures[future]
            try:
                results[index] = future.result()
            except Exception as err:  # noqa: BLE001 -- reported below, after the others finish
                failures.append((label, err))
    if failures:
        label, err = failures[0]
        if label in str(err):
            raise err
        try:
            named = type(err)(f"{label}: {err}")
        except Exception:  # noqa: BLE001 -- an exception type that takes other arguments
            raise err from None
        raise named from err
    return results
