"""``vaebench campaign``: the paper-budget campaign (:mod:`pipeline.campaign`; docs/paper-budget.md)."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.commands.options import params_option, user_errors
from pipeline.plumbing.params import load_params

PATH_OPTIONS = [
    click.option("--runs", type=click.Path(path_type=Path), default=None, help="The runs folder (default campaign.runs)."),
    click.option("--archive", type=click.Path(path_type=Path), default=None,
                 help="The archive folder (default campaign.archive)."),
    click.option("--report", type=click.Path(path_type=Path), default=None,
                 help="The report folder (default campaign.report)."),
]


def path_options(command):
    for option in reversed(PATH_OPTIONS):
        command = option(command)
    return params_option()(command)


def _setup(params_path, runs, archive, report):
    from pipeline.campaign.plan import campaign_settings
    from pipeline.campaign.runner import paths_of, write_profile_params

    params = load_params(params_path)
    settings = campaign_settings(params)
    paths = paths_of(params, settings, runs, archive, report)
    return write_profile_params(params, settings["profile"], paths.params), settings, paths


@click.group()
def campaign() -> None:
    """The paper-budget campaign: finished runs archived in the repository, restored on a fresh
    clone, checked against the current code, and the rest trained in order on the free cores."""


@campaign.command()
@path_options
@user_errors
def status(params_path, runs, archive, report) -> None:
    """What is archived (and its bytes), what runs next, what is held and why, and the hours left."""
    from pipeline.campaign.archive import archive_bytes, entries
    from pipeline.campaign.plan import plan_campaign
    from pipeline.campaign.runner import waiting_hours

    params, settings, paths = _setup(params_path, runs, archive, report)
    found = entries(paths.archive)
    plan = plan_campaign(params, paths.runs, {e.key for e in found})
    hours = waiting_hours(params, plan)
    click.echo(f"archive {paths.archive}: {len(found)} run(s), {archive_bytes(paths.archive):,} bytes")
    for entry in found:
        click.echo(f"  {entry.key}: trained at {entry.commit[:12]}, {entry.record.get('bytes', 0):,} bytes")
    click.echo(f"next ({len(plan.pending)} unit(s)):")
    for unit in plan.pending:
        click.echo(f"  {unit.label}: about {hours.get(unit.key, float('nan')):.1f} h for all the configuration's seeds")
    for key, reason in plan.held.items():
        click.echo(f"held: {key} ({reason}); about {hours.get(key, float('nan')):.1f} h")
    click.echo(f"hours still to run, predicted on this machine: {sum(hours.values()):.1f}")


@campaign.command("restore")
@click.option("--render/--no-render", default=True, show_default=True, help="Re-render the partial report after.")
@path_options
@user_errors
def restore_command(render, params_path, runs, archive, report) -> None:
    """Check every archived run against the current code (bit for bit on a retrained prefix where the
    training code changed) and restore the exact ones into the runs folder."""
    from pipeline.campaign.plan import plan_campaign
    from pipeline.campaign.runner import render_report, restore_archive, write_status
    from pipeline.runs.archive_status import EXACT

    params, settings, paths = _setup(params_path, runs, archive, report)
    statuses = restore_archive(params, paths, int(settings["prefix_samples"]), click.echo)
    plan = plan_campaign(params, paths.runs, {k for k, s in statuses.items() if s["status"] == EXACT})
    write_status(params, paths, statuses, plan, f"`vaebench campaign restore`: runs restored from the repository's "
                                                f"archive ({paths.archive}), each checked against the current code")
    if render and not render_report(paths, click.echo):
        raise click.ClickException("the partial report could not be rendered (above)")


@campaign.command("run")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Units side by side (default: the cores).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch threads per unit (default: the cores divided among the units); fewer leaves "
                   "cores for other work. A run keeps its count when it resumes.")
@click.option("--max-units", type=click.IntRange(min=1), default=None, help="Stop after this many units.")
@click.option("--render/--no-render", default=True, show_default=True, help="Re-render the partial report after.")
@path_options
@user_errors
def run_command(jobs, threads, max_units, render, params_path, runs, archive, report) -> None:
    """Restore the archive, then train the next units in campaign.order side by side, archiving each
    finished run; Ctrl-C stops at the next chunk (checkpoints kept: the next run resumes)."""
    from pipeline.campaign.runner import run_campaign
    from pipeline.plumbing.cpu_threads import available_cores

    params, settings, paths = _setup(params_path, runs, archive, report)
    results = run_campaign(params, settings, paths, jobs or available_cores(), max_units, render, click.echo,
                           threads=threads)
    failed = [r for r in results if not r.ok and "interrupted" not in r.message]
    if failed:
        raise click.ClickException(f"{len(failed)} unit(s) failed: " + "; ".join(f"{r.unit.label}: {r.message}"
                                                                              for r in failed))
