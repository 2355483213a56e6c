"""``vaebench data download`` and ``vaebench data prepare`` (the DVC stages of the same names)."""
from __future__ import annotations

import math
from pathlib import Path

import click

from pipeline.commands.options import params_option, user_errors
from pipeline.data.download import download_all, mirrors_from
from pipeline.plumbing.params import ParamsError, load_params, lookup, require_int, require_positive_float, require_positive_int
from pipeline.data.prepare import prepare_all


@click.group()
def data() -> None:
    """Fetch and prepare the datasets (MNIST, Frey Face)."""


def seconds(params: dict, key: str) -> float:
    """A positive, finite number of seconds from params.yaml; a ParamsError naming the key otherwise."""
    value = require_positive_float(lookup(params, key), key)
    if not math.isfinite(value):
        raise ParamsError(f"{key} must be a finite number of seconds, got {value!r}")
    return value


@data.command()
@params_option()
@click.option("--raw-dir", type=click.Path(path_type=Path), default=None, help="Override data.raw_dir.")
@click.option("--mirror", "extra_mirrors", multiple=True, help="A mirror folder or URL prefix to try first (repeatable).")
@user_errors
def download(params_path, raw_dir, extra_mirrors) -> None:
    """Fetch every dataset file from a mirror or its canonical URL, verifying its sha256."""
    params = load_params(params_path)
    mirrors = list(extra_mirrors) + mirrors_from(lookup(params, "data.mirrors"))
    report = download_all(raw_dir or lookup(params, "data.raw_dir"), mirrors,
                          timeout_seconds=seconds(params, "data.download_timeout_seconds"),
                          deadline_seconds=seconds(params, "data.download_deadline_seconds"))
    for name, entry in report.items():
        click.echo(f"{name}: verified sha256 {entry['sha256'][:16]}... from {entry['source']}")


@data.command()
@params_option()
@click.option("--raw-dir", type=click.Path(path_type=Path), default=None, help="Override data.raw_dir.")
@click.option("--prepared-dir", type=click.Path(path_type=Path), default=None, help="Override data.prepared_dir.")
@user_errors
def prepare(params_path, raw_dir, prepared_dir) -> None:
    """Check the raw files and write the .npz splits used for training."""
    params = load_params(params_path)
    summary = prepare_all(
        raw_dir or lookup(params, "data.raw_dir"),
        prepared_dir or lookup(params, "data.prepared_dir"),
        require_positive_int(lookup(params, "data.mnist.subset_ntrain"), "data.mnist.subset_ntrain"),
        require_positive_int(lookup(params, "data.frey_face.train_size"), "data.frey_face.train_size"),
        require_int(lookup(params, "data.frey_face.split_seed"), "data.frey_face.split_seed"),
    )
    for name, entry in summary.items():
        if isinstance(entry, dict):
            click.echo(f"{name}: {entry['arrays']}")
