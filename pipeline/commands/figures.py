"""``vaebench figures`` and ``vaebench report`` (the DVC stages ``figures`` and ``report``): they
parse options and call :mod:`pipeline.reporting.figures` and :mod:`pipeline.reporting.report`.

The stage modules are imported inside the commands: matplotlib and seaborn would otherwise cost
every other ``vaebench`` command (one process per DVC stage) their import time.
"""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.commands.options import params_option, user_errors
from pipeline.plumbing.params import load_params, lookup
from pipeline.reporting.reference import REFERENCE_DIR


@click.command()
@click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output directory (default reports/<profile>/figures).")
@click.option("--reference", "reference_dir", type=click.Path(path_type=Path), default=REFERENCE_DIR, show_default=True)
@click.option("--partial", is_flag=True,
              help="A partial set of runs (a subset of the profile's configurations, e.g. the paper "
                   "profile's part this machine ran): what did not run is marked, not an error.")
@params_option()
@user_errors
def figures(runs_root, out, reference_dir, partial, params_path) -> None:
    """Draw the paper's Figures 2-5 (PNG and SVG) from the runs."""
    params = load_params(params_path)
    out = out or Path("reports") / lookup(params, "profile") / "figures"
    from pipeline.reporting.figures import make_figures

    index = make_figures(runs_root, out, params, reference_dir, partial=partial)
    click.echo(f"{out}: {', '.join(f for names in index['figures'].values() for f in names)} "
               f"({index['wall_seconds']:.1f} s)")


@click.command()
@click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--figures", "figures_dir", type=click.Path(path_type=Path), default=None,
              help="The figures directory (default reports/<profile>/figures).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output directory (default reports/<profile>).")
@click.option("--reference", "reference_dir", type=click.Path(path_type=Path), default=REFERENCE_DIR, show_default=True)
@click.option("--partial", is_flag=True,
              help="A partial set of runs (a subset of the profile's configurations, e.g. the paper "
                   "profile's part this machine ran): what did not run is marked, not an error.")
@params_option()
@user_errors
def report(runs_root, figures_dir, out, reference_dir, partial, params_path) -> None:
    """Write the report (report.md, report.html), metrics.json and provenance.json."""
    params = load_params(params_path)
    out = out or Path("reports") / lookup(params, "profile")
    from pipeline.reporting.report import make_report

    result = make_report(runs_root, figures_dir or out / "figures", out, params, params_path, reference_dir,
                         partial=partial)
    for claim in result["claims"]:
        click.echo(f"{claim.verdict.upper():8s} {claim.key}: {claim.summary}")
    click.echo(f"{out}: report.md, report.html, metrics.json ({len(result['metrics'])} metrics), provenance.json")


__all__ = ["figures", "report"]
