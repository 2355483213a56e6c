"""``vaebench distribute``: the pipeline on Dask workers, DVC's run-cache as the ledger
(:mod:`pipeline.cluster.distribute`; docs/cluster.md)."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cluster.distribute import DistributeError, DistributeSettings, distribute as run_distribute


@click.command("distribute")
@click.argument("targets", nargs=-1)
@click.option("--scheduler", default=None, metavar="tcp://HOST:8786",
              help="A running Dask scheduler (`dask scheduler`); default: an in-process LocalCluster.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="The LocalCluster's worker processes (without --scheduler), one task at a time each.")
@click.option("--remote", default=None, metavar="URL",
              help="The DVC remote every worker shares (s3://..., ssh://..., or a folder on a shared file system); "
                   "default: the repository's default remote, else .vaebench/distribute/remote (one machine only).")
@click.option("--repo-url", default=None, help="Where workers clone the repository from (default: this checkout's path, "
                                               "for a shared file system; a git URL otherwise).")
@click.option("--profile", default=None, help="Set params.yaml's `profile:` here and on the workers (e.g. paper).")
@click.option("--retries", type=int, default=2, show_default=True, help="Retries of a stage whose command fails.")
@click.option("--threads-per-task", type=int, default=None,
              help="Torch threads of each stage's command (default: a machine's cores over its workers' task slots).")
@click.option("--gpu/--no-gpu", default=None,
              help="Train on GPU workers (`dask worker --resources GPU=1`) with --device cuda; default: if the "
                   "scheduler has any.")
@click.option("--work-root", default=None, help="Where workers clone (default: their temporary folder).")
@click.option("--repo", "root", type=click.Path(path_type=Path, file_okay=False), default=Path("."), show_default=True,
              help="The repository (the coordinator's workspace).")
def distribute(targets, scheduler, workers, remote, repo_url, profile, retries, threads_per_task, gpu, work_root,
               root) -> None:
    """Run the pipeline (or TARGETS, as `dvc repro TARGETS`) with its training and marginal-likelihood
    stages on Dask workers; the coordinator runs the rest and writes dvc.lock and the report."""
    if workers < 1 or retries < 0 or (threads_per_task is not None and threads_per_task < 1):
        raise click.BadParameter("--workers and --threads-per-task must be at least 1, --retries at least 0")
    settings = DistributeSettings(scheduler=scheduler, workers=workers, remote=remote, repo_url=repo_url,
                                  profile=profile, retries=retries, threads_per_task=threads_per_task, gpu=gpu,
                                  work_root=work_root, targets=list(targets))
    try:
        run_distribute(root, settings, echo=click.echo)
    except DistributeError as err:
        raise click.ClickException(f"{err}\nNo report was written.") from err
