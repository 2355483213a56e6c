"""The paper-budget campaign, run: restore the archive, train the next units side by side on the
cores, archive each as it finishes, and re-render the partial report (docs/paper-budget.md).

Every unit runs the pipeline's own commands in a process of its own (``vaebench train``, then
``vaebench evaluate marginal-likelihood`` for Figure 3), with the profile's params written to
``<runs>/params.yaml`` and ``VAEBENCH_THREADS`` set to its share of the cores; its output goes to
``<runs>/logs/``. A unit interrupted (the machine stopped, Ctrl-C) resumes from its last checkpoint
the next time the campaign runs on the same machine (the training stage resumes by itself); on
another machine it starts again. Only finished runs are archived.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from pipeline.campaign.archive import ArchiveError, archive_run, entries, restore
from pipeline.campaign.plan import CampaignPlan, Unit, plan_campaign
from pipeline.campaign.staleness import check_entries
from pipeline.cluster.measured_costs import load_measured_costs, resolve_costs_params
from pipeline.cluster.plan import scaled_stages
from pipeline.cluster.training_stages import configurations, with_profile
from pipeline.plumbing.cpu_threads import available_cores
from pipeline.plumbing.params import lookup
from pipeline.runs.archive_status import EXACT, write_archive_status
from pipeline.runs.directory import MARGINAL_LIKELIHOOD_ROOT, seed_run_dir

COSTS = Path("reports/default/provenance.json")  # the measured stage costs the hours are predicted from


@dataclass
class CampaignPaths:
    runs: Path
    archive: Path
    report: Path
    params: Path  # <runs>/params.yaml: the repository's params with the campaign's profile selected
    prepared: Path


def paths_of(params: dict, settings: dict, runs: str | Path | None = None, archive: str | Path | None = None,
             report: str | Path | None = None) -> CampaignPaths:
    runs_path = Path(runs or settings["runs"])
    return CampaignPaths(runs_path, Path(archive or settings["archive"]), Path(report or settings["report"]),
                         runs_path / "params.yaml", Path(lookup(params, "data.prepared_dir")))


def write_profile_params(params: dict, profile: str, path: Path) -> dict:
    """``params`` with ``profile`` selected, written to ``path`` for the units' commands."""
    chosen = with_profile(params, profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(chosen, sort_keys=False))
    return chosen


def waiting_hours(params: dict, plan: CampaignPlan, costs: Path = COSTS) -> dict[str, float]:
    """Per configuration still to run (pending or held), its predicted hours on this machine (all
    its seeds: the cluster plan's cost model scaled from ``costs``); empty where no costs exist."""
    if not costs.is_file():
        return {}
    measured = load_measured_costs(costs)
    costs_params, _ = resolve_costs_params(measured, params, "params.yaml")
    stages = {stage.name: stage.seconds for stage in
              scaled_stages(params, costs_params, measured, available_cores()).stages}
    wanted = {unit.key for unit in plan.pending} | set(plan.held)
    hours = {}
    for configuration in configurations(params):
        key = f"{configuration.folder}/{configuration.run_name}"
        if key in wanted:
            seconds = stages.get(configuration.train_stage, 0.0) + stages.get(configuration.marginal_likelihood_stage, 0.0)
            hours[key] = round(seconds / 3600, 2)
    return hours


def restore_archive(params: dict, paths: CampaignPaths, prefix_samples: int, echo: Callable = print) -> dict[str, dict]:
    """Check every archive entry against the current code and restore the exact ones into the runs
    folder; returns each entry's status. A damaged entry is refused by name (ArchiveError)."""
    found = entries(paths.archive)
    statuses = check_entries(found, paths.archive, paths.prepared, prefix_samples)
    for entry in found:
        status = statuses[entry.key]
        if status["status"] == EXACT:
            restore(entry, paths.runs)
        echo(f"{entry.key}: trained at {entry.commit[:12]}; "
             + (f"current code reproduces it exactly ({status['how']}): restored" if status["status"] == EXACT
                else f"stale ({status['how']}): not restored, not judged"))
    return statuses


def write_status(params: dict, paths: CampaignPaths, statuses: dict[str, dict], plan: CampaignPlan, made_by: str) -> None:
    commits = {entry.key: entry.commit for entry in entries(paths.archive)}
    rows = [{"run": key, "commit": commits.get(key), "status": status["status"], "how": status["how"]}
            for key, status in sorted(statuses.items())]
    write_archive_status(paths.runs, rows, waiting_hours(params, plan), made_by)


def unit_commands(unit: Unit, paths: CampaignPaths) -> list[list[str]]:
    """The pipeline commands of one unit: train its seeds; evaluate each (Figure 3)."""
    c = unit.configuration
    out = paths.runs / c.folder / c.run_name
    base = [sys.executable, "-m", "pipeline.cli"]
    train = [*base, "train", "--params", str(paths.params), "--prepared-dir", str(paths.prepared), "--no-progress",
             "--experiment", c.experiment, "--dataset", c.dataset, "--nz", str(c.nz), "--algorithm", c.algorithm,
             "--out", str(out), *(["--ntrain", str(c.ntrain)] if c.ntrain is not None else []),
             *(["--binarize", c.binarize] if c.binarize is not None else []),
             *[arg for seed in unit.seeds for arg in ("--seed", str(seed))]]
    commands = [train]
    if c.experiment == "fig3":
        for seed in unit.seeds:
            commands.append([*base, "evaluate", "marginal-likelihood", "--params", str(paths.params), "--prepared-dir",
                             str(paths.prepared), "--no-progress", "--experiment", c.experiment,
                             "--run", str(seed_run_dir(out, seed)),
                             "--out", str(paths.runs / MARGINAL_LIKELIHOOD_ROOT / c.folder / c.run_name)])
    return commands


def keeps_model(unit: Unit, seed: int, params: dict) -> bool:
    """Whether the archive keeps a run's final model: Figure 2's AEVB runs' first seed (Figures 4-5
    draw them; the estimator-variance claim measures them)."""
    c = unit.configuration
    return c.folder == "fig2" and c.algorithm == "aevb" and seed == min(c.seeds(params))


@dataclass
class UnitResult:
    unit: Unit
    ok: bool
    seconds: float
    message: str = ""
    archived: dict[str, int] = field(default_factory=dict)  # run key -> the entry's bytes


def run_unit(unit: Unit, paths: CampaignPaths, params: dict, threads: int, stop: threading.Event) -> UnitResult:
    """Run a unit's commands (each to its end unless ``stop`` is set: then it is interrupted and
    resumes next time), then archive its finished runs."""
    log = paths.runs / "logs" / f"{unit.key.replace('/', '__')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VAEBENCH_THREADS": str(threads)}
    start = time.perf_counter()
    with open(log, "a") as handle:
        for command in unit_commands(unit, paths):
            if stop.is_set():  # stopped before this command began: nothing of it to resume
                return UnitResult(unit, False, time.perf_counter() - start, f"interrupted; resumes next time ({log})")
            handle.write(f"$ {' '.join(command)}\n")
            handle.flush()
            # SIGINT back to its default in the child: a campaign started in the background by a script
            # inherits SIGINT ignored, and the training run would then never stop at its next chunk
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            while process.poll() is None:
                if stop.wait(1.0):
                    process.send_signal(2)  # SIGINT: the run stops after its current chunk, checkpoints kept
                    process.wait()
                    return UnitResult(unit, False, time.perf_counter() - start, f"interrupted; resumes next time ({log})")
            if process.returncode != 0:
                return UnitResult(unit, False, time.perf_counter() - start,
                                  f"`{' '.join(command[2:5])} ...` exited {process.returncode}: see {log}")
    archived: dict[str, int] = {}
    for seed in unit.seeds:
        run_dir = seed_run_dir(paths.runs / unit.configuration.folder / unit.configuration.run_name, seed)
        try:
            entry = archive_run(run_dir, paths.runs, paths.archive, paths.prepared, keeps_model(unit, seed, params),
                                list(unit.seeds))
        except ArchiveError as err:
            return UnitResult(unit, False, time.perf_counter() - start, f"trained, not archived: {err}", archived)
        archived[entry.key] = int(entry.record["bytes"])
    return UnitResult(unit, True, time.perf_counter() - start, archived=archived)


def render_report(paths: CampaignPaths, echo: Callable = print) -> bool:
    """``vaebench figures --partial`` and ``vaebench report --partial`` of the runs folder into the
    campaign's report folder; False (and the log's tail) where one fails."""
    base = [sys.executable, "-m", "pipeline.cli"]
    for command in ([*base, "figures", "--params", str(paths.params), "--runs", str(paths.runs), "--out",
                     str(paths.report / "figures"), "--partial"],
                    [*base, "report", "--params", str(paths.params), "--runs", str(paths.runs), "--figures",
                     str(paths.report / "figures"), "--out", str(paths.report), "--partial"]):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            echo(f"`vaebench {command[3]}` failed:\n" + "\n".join((result.stdout + result.stderr).splitlines()[-20:]))
            return False
    return True


def run_campaign(params: dict, settings: dict, paths: CampaignPaths, jobs: int, max_units: int | None,
                 render: bool = True, echo: Callable = print,
                 threads: int | None = None) -> list[UnitResult]:
    """Restore, then train up to ``max_units`` pending units (all by default), ``jobs`` at a time,
    archiving each finished run (``threads`` torch threads each, default the cores shared out among
    them); write the status file and re-render the report. Ctrl-C stops the
    running units at their next chunk (their checkpoints kept) and still archives what finished."""
    # Ctrl-C and SIGTERM both stop the campaign at its units' next chunk, also where it was started
    # in the background (which leaves SIGINT ignored): `kill <pid>` is the way to stop it there
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    chosen = write_profile_params(params, settings["profile"], paths.params)
    statuses = restore_archive(chosen, paths, int(settings["prefix_samples"]), echo)
    plan = plan_campaign(chosen, paths.runs, {k for k, s in statuses.items() if s["status"] == EXACT})
    for key, reason in plan.held.items():
        echo(f"{key}: held ({reason})")
    units = plan.pending[:max_units] if max_units is not None else plan.pending
    threads = threads or max(1, available_cores() // max(1, jobs))
    echo(f"{len(units)} unit(s) to run, {jobs} at a time, {threads} thread(s) each: "
         + "; ".join(u.label for u in units) if units else "nothing to run")
    stop = threading.Event()
    results: list[UnitResult] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_unit, unit, paths, chosen, threads, stop) for unit in units]
        try:
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                echo(f"{result.unit.label}: " + (f"finished in {result.seconds / 3600:.2f} h, archived "
                                                 + ", ".join(f"{key} ({size:,} bytes)" for key, size in result.archived.items())
                                                 if result.ok else result.message))
        except KeyboardInterrupt:
            stop.set()  # the running units stop at their next chunk; the queued ones never start
            echo("interrupted: the running units stop at their next chunk and resume next time")
            for future in futures:
                future.cancel()
            results = [f.result() for f in futures if not f.cancelled()]
    for result in results:
        for key in result.archived:
            statuses[key] = {"status": EXACT, "how": "trained by this checkout's code"}
    plan = plan_campaign(chosen, paths.runs, {k for k, s in statuses.items() if s["status"] == EXACT})
    write_status(chosen, paths, statuses, plan,
                 f"`vaebench campaign run`: runs restored from the repository's archive ({paths.archive}) and "
                 f"trained here, each checked against the current code")
    if render:
        render_report(paths, echo)
    return results


__all__ = ["CampaignPaths", "UnitResult", "paths_of", "render_report", "restore_archive", "run_campaign", "run_unit",
           "unit_commands", "waiting_hours", "write_profile_params", "write_status"]
