"""``vaebench train``: train one configuration, each seed into its own run directory (the DVC
stages of Figures 2 and 3 and the binarization study call it); the work is
:mod:`pipeline.training.train`'s."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import click

from pipeline.commands.options import params_option, user_errors
from pipeline.plumbing.devices import DEVICE_CHOICES
from pipeline.plumbing.params import load_params, lookup
from pipeline.plumbing.unfinished_outputs import entries_written_then_published, unfinished_directory
from pipeline.runs.config import ALGORITHMS, BINARIZATIONS, DATASETS, build_run_config, configuration_seeds, seeds_side_by_side
from pipeline.runs.directory import (check_configuration_directory, read_run_config, run_directory_in_use,
                                     seed_directories, seed_run_dir)


@click.command()
@click.option("--experiment", default="fig2", show_default=True, help="Experiment in params.yaml (fig2, ...).")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), required=True)
@click.option("--nz", type=int, required=True, help="Latent dimensionality Nz.")
@click.option("--algorithm", type=click.Choice(ALGORITHMS), default="aevb", show_default=True)
@click.option("--ntrain", type=int, default=None, help="Train on this training-set subset (Figure 3).")
@click.option("--binarize", type=click.Choice(BINARIZATIONS), default=None,
              help="Override training.binarize: MNIST targets as grey levels (none) or resampled "
                   "Bernoulli at every minibatch (dynamic); the binarization study's stages set it.")
@click.option("--seed", "seeds", type=int, multiple=True,
              help="Train this seed (repeatable); default: the seeds params.yaml gives this configuration "
                   "(profiles.<profile>.seeds).")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default=None, envvar="VAEBENCH_DEVICE",
              help="Override training.device (auto uses a GPU when present); also from VAEBENCH_DEVICE (a GPU "
                   "worker of `vaebench distribute` sets it: the stage's command, and so its run-cache key, stay the same).")
@click.option("--out", "configuration_dir", type=click.Path(path_type=Path), default=None,
              help="The configuration's folder; each seed's run directory is <out>/seed<N> "
                   "(default runs/<experiment>/<configuration>).")
@params_option()
@click.option("--prepared-dir", type=click.Path(path_type=Path), default=None, help="Override data.prepared_dir.")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Resume an interrupted run from its last checkpoint.")
@click.option("--force", is_flag=True, help="Retrain runs that have already finished with this configuration and code.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@user_errors
def train(experiment, dataset, nz, algorithm, ntrain, binarize, seeds, device, configuration_dir, params_path,
          prepared_dir, resume, force, progress) -> None:
    """Train one configuration, each of its seeds into its own run directory (config, curve,
    checkpoints); fused AEVB seeds train together, stacked."""
    from pipeline.training.train import train_seeds

    params = load_params(params_path)
    if binarize is not None:
        params["training"]["binarize"] = binarize
    config = build_run_config(params, experiment, dataset, algorithm, nz, ntrain, None, device)
    configuration_dir = Path(configuration_dir or config.default_configuration_dir())
    explicit = bool(seeds)
    seeds = list(seeds) or configuration_seeds(params, experiment, configuration_dir.name)
    staging = unfinished_directory(configuration_dir)
    for folder in (configuration_dir, staging):
        check_configuration_directory(folder)
    if not explicit:  # the configuration's seeds are params.yaml's: a seed dropped from it is dropped here
        for folder in (configuration_dir, staging):
            for stale in seed_directories(folder):
                if read_run_config(stale).seed not in seeds and not run_directory_in_use(stale):
                    shutil.rmtree(stale)
                    click.echo(f"{stale}: removed (seed no longer in profiles.{params['profile']}.seeds)")
    # a seed new to --out is written in .vaebench/unfinished/ and moved to --out/seed<N> once finished
    # (DVC's run-cache keeps only stages without `persist` outputs), each seed on its own, so that
    # two processes training other seeds of one new --out never move each other's runs
    # (pipeline.plumbing.unfinished_outputs)
    names = [seed_run_dir(configuration_dir, seed).name for seed in seeds]
    with entries_written_then_published(configuration_dir, names) as places:
        configs = [replace(config, seed=seed) for seed in seeds]
        finals = train_seeds(configs, [places[name] for name in names],
                             prepared_dir or lookup(params, "data.prepared_dir"), resume, progress,
                             force=force, parallel=seeds_side_by_side(params))
    run_dirs = [seed_run_dir(configuration_dir, seed) for seed in seeds]
    for run_dir, final in zip(run_dirs, finals):
        if final.get("already_finished"):
            click.echo(f"{run_dir}: already finished with this configuration, code and data; nothing to do "
                       f"(--force retrains it)")
        bounds = "".join(
            f", {split} bound {final[f'final_{split}_lower_bound']:.2f}" for split in ("train", "test")
            if final[f"final_{split}_lower_bound"] is not None
        )
        click.echo(
            f"{run_dir}: {final['samples_seen']:,} samples, step size {final['step_size']}{bounds}, "
            f"{final['training_samples_per_second']:,.0f} samples/s"
        )

