"""``vaebench compare BASE NEW`` (see :mod:`pipeline.compare.compare`, the package's overview). Exit
status: 0 nothing regressed, 1 something did, 2 a usage or input error (the message names the bad
input)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.commands.options import params_option
from pipeline.compare.compare import CompareInputError
from pipeline.compare.environment import resolve_environment_change
from pipeline.compare.render import render
from pipeline.compare.sides import resolve_sides
from pipeline.compare.verdicts import compare_metrics, regressions, tolerances_from_params
from pipeline.plumbing.params import ParamsError, load_params


class _UsageErrorExit2(click.ClickException):
    exit_code = 2


@click.command()
@click.argument("base")
@click.argument("new")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "json"]), default="table", show_default=True)
@click.option("--only", multiple=True, help="Only metrics whose key matches this glob (repeatable), e.g. 'fig2/*'.")
@click.option("--exclude", multiple=True, help="Leave out metrics whose key matches this glob (repeatable).")
@click.option("--allow-removed", is_flag=True, help="A metric missing from NEW is not a regression.")
@params_option("Where the tolerances (compare:) and the profile (for rev:REV) come from.")
@click.option("--profile", default=None, help="Profile whose report rev:REV reads (default: params.yaml's).")
@click.option("--repo", type=click.Path(path_type=Path, file_okay=False), default=Path("."), show_default=True,
              help="The git repository for rev:REV sides and reports/reference.")
def compare(base, new, fmt, only, exclude, allow_removed, params_path, profile, repo) -> None:
    """Compare metrics of BASE and NEW: a report directory, a metrics.json, rev:REV[:PATH], or paper.

    Prints per metric both values, the difference and a verdict against the tolerances in
    params.yaml (compare:). Exits 1 when anything regresses, 2 on bad input. When the two reports'
    provenance.json differ in device or torch build, says so first: speed changes are then no
    regression, and bounds and marginal likelihoods get wider tolerances.
    """
    try:
        params = load_params(params_path)
        tolerances = tolerances_from_params(params)
        profile = profile or params["profile"]
        base_metrics, new_metrics = resolve_sides(base, new, repo, profile)
        environment_change = resolve_environment_change(base, new, repo, profile)
        rows = compare_metrics(base_metrics, new_metrics, tolerances, only, exclude, environment_change)
    except (CompareInputError, ParamsError, FileNotFoundError) as err:
        raise _UsageErrorExit2(str(err)) from err
    if not rows:
        hint = (" with these --only/--exclude patterns" if only or exclude else
                ": the paper's figures show no values at this run's budgets (the smoke profile's 20,000 "
                "samples lie left of the paper's axes); compare a default or paper profile report"
                if "paper" in (base, new) else "")
        raise _UsageErrorExit2(f"no metrics to compare between {base!r} and {new!r}{hint}")
    click.echo(render(rows, fmt, base, new, allow_removed, environment_change))
    sys.exit(1 if regressions(rows, allow_removed) else 0)
