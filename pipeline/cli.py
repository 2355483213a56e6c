"""``vaebench``: the one command-line entry; DVC stages only call it."""
from __future__ import annotations

from pathlib import Path

import click

from .cli_options import params_option, user_errors
from .bench_commands import bench
from .compare_commands import compare
from .data_commands import data
from .evaluate_commands import evaluate
from .figure_commands import figures, report
from .devices import DEVICE_CHOICES
from .params import load_params, lookup
from .run_config import ALGORITHMS, DATASETS, build_run_config
from .train import run_training


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vaebench")
def main() -> None:
    """vaebench: regenerate the figures of Auto-Encoding Variational Bayes (Kingma & Welling)."""


main.add_command(data)
main.add_command(evaluate)
main.add_command(figures)
main.add_command(report)
main.add_command(compare)
main.add_command(bench)


@main.command()
@click.option("--experiment", default="fig2", show_default=True, help="Experiment in params.yaml (fig2, ...).")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), required=True)
@click.option("--nz", type=int, required=True, help="Latent dimensionality Nz.")
@click.option("--algorithm", type=click.Choice(ALGORITHMS), default="aevb", show_default=True)
@click.option("--ntrain", type=int, default=None, help="Train on this training-set subset (Figure 3).")
@click.option("--seed", type=int, default=None, help="Override training.seed.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default=None, help="Override training.device (auto uses a GPU when present).")
@click.option("--out", "run_dir", type=click.Path(path_type=Path), default=None, help="Run directory (default runs/<experiment>/<run-id>).")
@params_option()
@click.option("--prepared-dir", type=click.Path(path_type=Path), default=None, help="Override data.prepared_dir.")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Resume an interrupted run from its last checkpoint.")
@click.option("--force", is_flag=True, help="Retrain a run that has already finished with this configuration and code.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@user_errors
def train(experiment, dataset, nz, algorithm, ntrain, seed, device, run_dir, params_path,
          prepared_dir, resume, force, progress) -> None:
    """Train one configuration and write its run directory (config, curve, checkpoints)."""
    params = load_params(params_path)
    config = build_run_config(params, experiment, dataset, algorithm, nz, ntrain, seed, device)
    run_dir = run_dir or config.default_run_dir()
    final = run_training(config, run_dir, prepared_dir or lookup(params, "data.prepared_dir"), resume, progress,
                         force=force)
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


if __name__ == "__main__":
    main()
