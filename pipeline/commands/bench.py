"""``vaebench bench``: training and evaluation throughput against a tutorial loop and the
arithmetic limit (:mod:`pipeline.bench.bench`); a benchmark, not a DVC stage."""
from __future__ import annotations

from pathlib import Path

import click
import torch

from pipeline.plumbing.devices import DEVICE_CHOICES, resolve_device
from pipeline.plumbing.files import write_json


@click.command()
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="Updates per timed repeat.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0,
              help="torch threads (0: torch's default, one per core).")
@click.option("--marginal-likelihood-points", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Datapoints for timing the marginal-likelihood estimators (0 skips them).")
@click.option("--contention/--no-contention", default=True, show_default=True,
              help="Also time AEVB training beside a competing CPU-bound process (about half a minute).")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@click.option("--prepared-dir", type=click.Path(path_type=Path), default=Path("data/prepared"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/bench.json"), show_default=True)
def bench(steps, repeats, threads, marginal_likelihood_points, contention, device, prepared_dir, out) -> None:
    """Measure training and evaluation throughput against a tutorial loop and the arithmetic
    limit (medians over repeats), and training beside a competing process; write a JSON report.
    A benchmark: run it on a quiet machine."""
    from pipeline.bench.bench import bench_table, run_bench

    try:
        resolved = resolve_device(device)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    if threads:
        torch.set_num_threads(threads)
    results = run_bench(prepared_dir, resolved, steps, repeats, marginal_likelihood_points, contention=contention)
    write_json(out, results)
    click.echo(bench_table(results))
    click.echo(f"written to {out}")
