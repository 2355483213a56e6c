"""``vaebench evaluate marginal-likelihood`` (the DVC stage ``fig3_marginal_likelihood``) and
``vaebench evaluate estimator-variance`` (the stage ``estimator_variance``)."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from pipeline.commands.options import params_option, user_errors
from pipeline.plumbing.devices import DEVICE_CHOICES
from pipeline.evaluation.estimator_variance import measure_estimator_variance
from pipeline.evaluation.estimator_variance import settings_from_params as variance_settings
from pipeline.evaluation.marginal_likelihood import evaluate_configuration, other_seed_settings, settings_from_params
from pipeline.plumbing.params import load_params, lookup
from pipeline.runs.config import seeds_side_by_side
from pipeline.runs.directory import CONFIG_FILE, MARGINAL_LIKELIHOOD_ROOT, seed_directories
from pipeline.plumbing.unfinished_outputs import written_then_published


@click.group()
def evaluate() -> None:
    """Evaluate trained runs (the marginal likelihood of Figure 3, the variance of estimators A and B)."""


@evaluate.command("marginal-likelihood")
@click.option("--run", "configuration_dir", type=click.Path(path_type=Path), required=True,
              help="A trained configuration's folder (its seeds in seed<N>/), or one run directory.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where each seed's CSV goes (default runs/marginal_likelihood/<experiment>/<configuration>).")
@click.option("--experiment", default="fig3", show_default=True, help="Whose profile budgets (points, cross-checks) apply.")
@params_option()
@click.option("--prepared-dir", type=click.Path(path_type=Path), default=None, help="Override data.prepared_dir.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default=None, envvar="VAEBENCH_DEVICE",
              help="Override training.device; also from VAEBENCH_DEVICE.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@user_errors
def marginal_likelihood(configuration_dir, out_dir, experiment, params_path, prepared_dir, device, progress) -> None:
    """Estimate log p(x) at every checkpoint of every seed of a configuration: Appendix D,
    importance sampling and the grid."""
    params = load_params(params_path)
    settings = settings_from_params(params, experiment)
    if out_dir is None:  # runs/<experiment>/<configuration>[/seed<N>] -> runs/marginal_likelihood/<experiment>/<configuration>
        folder = configuration_dir.parent if (configuration_dir / CONFIG_FILE).is_file() else configuration_dir
        out_dir = folder.parent.parent / MARGINAL_LIKELIHOOD_ROOT / folder.parent.name / folder.name
    # written in .vaebench/unfinished/ and moved to --out when every seed's rows are in
    # (DVC's run-cache keeps only stages without `persist` outputs: pipeline.plumbing.unfinished_outputs)
    # each seed's CSV is published on its own: two processes evaluating other seeds of one
    # configuration into one new --out never move each other's rows (pipeline.plumbing.unfinished_outputs)
    runs = [configuration_dir] if (configuration_dir / CONFIG_FILE).is_file() else seed_directories(configuration_dir)
    with written_then_published(out_dir, [f"{run.name}.csv" for run in runs]) as writing_dir:
        frame = evaluate_configuration(configuration_dir, writing_dir, prepared_dir or lookup(params, "data.prepared_dir"),
                                       settings, other_seed_settings(params, settings, experiment),
                                       device or lookup(params, "training.device"), progress,
                                       parallel=seeds_side_by_side(params))
    last = frame[frame["samples_seen"] == frame.groupby("seed")["samples_seen"].transform("max")]
    run_dir = configuration_dir
    for row in last.itertuples():
        click.echo(f"{run_dir}/seed{row.seed} @ {row.samples_seen:,} samples, {row.split:5s} {row.estimator:20s} "
                   f"{row.value:9.3f} +- {row.standard_error:.3f} ({row.points} points, {row.wall_seconds:.1f} s)")
    for row in frame[~np.isfinite(frame.standard_error.astype(float))].itertuples():
        click.echo(f"warning: {run_dir}/seed{row.seed} @ {row.samples_seen:,} samples, {row.split} {row.estimator}: its standard "
                   f"error is not finite (a chain that never moved, or posterior mass beyond the grid); the report "
                   f"shows it and metrics.json leaves it out", err=True)


@evaluate.command("estimator-variance")
@click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/estimator_variance.csv"), show_default=True)
@params_option()
@click.option("--prepared-dir", type=click.Path(path_type=Path), default=None, help="Override data.prepared_dir.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default=None, help="Override training.device.")
@user_errors
def estimator_variance(runs_root, out, params_path, prepared_dir, device) -> None:
    """Variance of SGVB estimators A (eq. 6) and B (eq. 7) on every Figure 2 AEVB model."""
    params = load_params(params_path)
    frame = measure_estimator_variance(runs_root, prepared_dir or lookup(params, "data.prepared_dir"),
                                       variance_settings(params), device or lookup(params, "training.device"), out)
    wide = frame.pivot_table(index=["dataset", "nz"], columns="estimator", values=["value_variance", "gradient_variance"])
    click.echo(wide.to_string(float_format=lambda v: f"{v:.4g}"))


@evaluate.command("linear-reference")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/linear_reference.csv"), show_default=True)
@params_option()
@click.option("--prepared-dir", type=click.Path(path_type=Path), default=None, help="Override data.prepared_dir.")
@user_errors
def linear_reference(out, params_path, prepared_dir) -> None:
    """Exact log-likelihoods of factor analysis, probabilistic PCA and independent pixels on Frey
    Face at Figure 2's latent sizes: the linear-Gaussian floor."""
    from pipeline.evaluation.linear_reference import linear_reference as measure

    params = load_params(params_path)
    frame = measure(prepared_dir or lookup(params, "data.prepared_dir"),
                    list(lookup(params, "experiments.fig2.frey_face.nz")), out=out)
    wide = frame.pivot_table(index=["model", "nz"], columns="split", values="log_likelihood")
    click.echo(wide.to_string(float_format=lambda v: f"{v:,.2f}"))


@evaluate.command("log-likelihood")
@click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/log_likelihood.csv"), show_default=True)
@params_option()
@click.option("--prepared-dir", type=click.Path(path_type=Path), default=None, help="Override data.prepared_dir.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default=None, envvar="VAEBENCH_DEVICE",
              help="Override training.device; also from VAEBENCH_DEVICE.")
@user_errors
def log_likelihood(runs_root, out, params_path, prepared_dir, device) -> None:
    """log p(x) of every Figure 2 model by annealed importance sampling, with its ELBO, an
    importance-weighted bound and the BDMC sandwich; AIS against the grid on Figure 3's models."""
    from pipeline.evaluation.log_likelihood import measure_log_likelihoods, settings_from_params as ll_settings

    params = load_params(params_path)
    measure_log_likelihoods(runs_root, prepared_dir or lookup(params, "data.prepared_dir"), ll_settings(params),
                            device or lookup(params, "training.device"), out, echo=click.echo)
