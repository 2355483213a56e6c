"""``vaebench cluster-plan``: the predicted wall time of a profile on N workers (see
:mod:`pipeline.cluster.plan` for the model and its assumptions)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cluster.cost_model import DEFAULT_CORES_PER_WORKER, TASK_OVERHEAD_SECONDS
from pipeline.cluster.measured_costs import load_measured_costs, resolve_costs_params
from pipeline.cluster.plan import DEFAULT_WORKERS, ClusterPlan, plan_cluster, scaled_stages
from pipeline.cluster.training_stages import with_profile
from pipeline.commands.options import params_option, user_errors
from pipeline.plumbing.params import load_params

DEFAULT_COSTS = Path("reports/default/provenance.json")
DEFAULT_RUNS = Path("runs")
DEFAULT_PROFILE = "paper"


def render_plan(plan: ClusterPlan, profile: str, costs: Path) -> str:
    """The table, the critical path and the notes, as text."""
    lines = [
        f"Profile {profile}: predicted wall time on N workers, costs from {costs}, "
        f"{plan.task_overhead_seconds:g} s overhead per worker task; {plan.worker_seconds / 3600:.2f} worker-hours "
        f"of tasks in all.",
        "",
        plan.table().to_string(index=False),
        "",
        f"Critical path ({plan.critical_path.seconds / 3600:.2f} h, the wall time with unlimited workers): "
        f"{plan.critical_path.named()}",
    ]
    lines += [f"Note: {note}" for note in plan.notes]
    return "\n".join(lines)


@click.command("cluster-plan")
@click.option("--profile", default=DEFAULT_PROFILE, show_default=True,
              help="The profile whose wall time to predict (params.yaml profiles).")
@click.option("--costs", type=click.Path(path_type=Path), default=DEFAULT_COSTS, show_default=True,
              help="A measured provenance.json (its stage_wall_seconds and profile).")
@click.option("--costs-params", type=click.Path(path_type=Path), default=None,
              help="The params.yaml the costs were measured under (its seed counts); default: params.yaml of "
                   "the provenance's git commit if its sha256 matches, else --params.")
@click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=DEFAULT_RUNS, show_default=True,
              help="Run directories whose final.json (and marginal-likelihood CSVs) give finer rates, where present.")
@click.option("--workers", type=click.IntRange(min=1), multiple=True, default=DEFAULT_WORKERS, show_default=True,
              help="A number of workers (repeatable).")
@click.option("--cores-per-worker", type=click.IntRange(min=1), default=DEFAULT_CORES_PER_WORKER, show_default=True)
@click.option("--task-overhead-seconds", type=click.FloatRange(min=0), default=TASK_OVERHEAD_SECONDS,
              show_default=True, help="Per worker task: clone + dvc pull + dvc push.")
@params_option()
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@user_errors
def cluster_plan(profile, costs, costs_params, runs_root, workers, cores_per_worker, task_overhead_seconds,
                 params_path, as_json) -> None:
    """Predict the wall time of PROFILE's pipeline with its training and marginal-likelihood stages
    fanned out to N workers: list scheduling of the measured stage costs scaled to the profile's
    budgets, with the critical path (the bound with unlimited workers)."""
    params = load_params(params_path)
    measured = load_measured_costs(costs)
    chosen_costs_params, seeds_note = resolve_costs_params(
        measured, params, str(params_path), load_params(costs_params) if costs_params else None)
    runs = runs_root if runs_root is not None and Path(runs_root).is_dir() else None
    scaled = scaled_stages(with_profile(params, profile), chosen_costs_params, measured, cores_per_worker, runs)
    plan = plan_cluster(scaled.stages, list(workers), task_overhead_seconds, tuple([seeds_note] + scaled.notes))
    if as_json:
        click.echo(json.dumps({"profile": profile, "costs": str(costs), "costs_profile": measured.profile,
                               "cores_per_worker": cores_per_worker, **plan.to_dict()}, indent=2))
    else:
        click.echo(render_plan(plan, profile, costs))
