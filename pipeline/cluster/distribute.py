"""``vaebench distribute``: the pipeline's training and marginal-likelihood stages fanned out to Dask
workers, with DVC's run-cache as the ledger (docs/cluster.md).

DVC has no remote execution, and two ``dvc repro`` in one workspace collide on its lock. What it does
have for results computed elsewhere is its **run-cache**: a record, per stage, of the outputs that a
command produced from given dependencies and params, pushed to and pulled from a DVC remote
(``dvc push --run-cache``), from which ``dvc repro`` restores a stage instead of running it. So:

1. **The coordinator** (this process, in the user's workspace) refuses a dirty git tree (the workers
   check out the commit, so uncommitted code would not run there) and records the commit; with
   ``--profile`` it sets params.yaml's ``profile:`` line, as the workers do. It runs the cheap
   upstream stages (download, prepare) itself and pushes their outputs to the shared remote.
2. **One task per stage** that needs work (``dvc status``) among the training and
   marginal-likelihood stages (:data:`FANNED_OUT_COMMANDS`) goes to the Dask scheduler, a
   marginal-likelihood task after its training task. A task (:func:`run_stage_task`, on a worker)
   clones the repository at the commit into a fresh folder, takes the coordinator's dvc.lock (plus
   the lock entries its upstream tasks returned), pulls the run-cache's records and its inputs,
   runs ``dvc repro --single-item --pull <stage>`` (a mere restore when the run-cache already holds
   the stage, so a retry is free) and ``dvc push --run-cache <stage>``, and returns the stage's
   dvc.lock entry. A worker killed mid-stage: the scheduler gives the task to another worker
   (``distributed.scheduler.allowed-failures``); a stage that fails is retried ``--retries`` times
   (Dask's ``retries``); a retry starts in a new folder and resumes nothing it cannot trust.
3. **The coordinator then** pulls the run-cache's records (``dvc pull --run-cache``) and runs
   ``dvc repro --pull``: every fanned-out stage is restored from the run-cache, not re-run (checked:
   a fanned-out stage that the coordinator would run is an error), and the stages that need all
   the runs (estimator_variance, figures, report) run here. The coordinator alone writes dvc.lock
   and the report. A failed stage stops everything before that: the coordinator names the stage,
   shows its log's tail, and writes no report.

Every stage of dvc.yaml can be restored from the run-cache: none has a ``persist`` output (DVC's
run-cache skips those); training resumes from ``.vaebench/unfinished/`` instead
(:mod:`pipeline.plumbing.unfinished_outputs`). The outputs marked ``cache: false`` (the figures and the
report) belong to stages that only the coordinator runs.

**GPUs.** Workers started with ``--resources GPU=1`` take the training tasks (the scheduler gives a
task that asks for a GPU only to such a worker), which then train with ``VAEBENCH_DEVICE=cuda``: the
stage's command, and so its run-cache key, stays the same, and the run records its device
(final.json) and the report the torch build (provenance.json), so that ``vaebench compare`` reads
a device change as a change of environment. The run-cache keys a stage by its command, inputs and
params, not by the machine: whichever worker ran a stage first, its result is the one restored.

**Threads.** A run's numbers depend, in their last bits, on its torch thread count
(:mod:`pipeline.plumbing.cpu_threads`), which a task sets to its worker's share of its machine's cores
(``VAEBENCH_THREADS``) and the run records.

Each distribute writes ``.vaebench/distribute/<time>-<commit>/``: ``record.json`` (the commit, the
workers, every task with its worker, host, attempts, whether it ran or restored the stage, its wall
time; which stages the coordinator ran and which it restored) and each task's log.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from pipeline.cluster.stage_graph import Stage, ancestors, parse_repro_output, read_stages
from pipeline.cluster.workspace import (DistributeError, changed_stages, configure_checkout, default_remote,
                                        dvc_command, forget_lock_entries, git_commit, require_clean_tree,
                                        run_command, set_profile, tail)
from pipeline.reporting.provenance import torch_build

RECORDS_DIR = Path(".vaebench") / "distribute"


class StageFailedError(DistributeError):
    """A stage's command failed on a worker (its message carries the log's tail)."""


# ------------------------------------------------------------------------------ the worker task
@dataclass
class StageTask:
    """What a worker needs to run one stage: everything by value, nothing from the coordinator's disk."""

    stage: str
    commit: str
    repo_url: str
    remote_url: str
    lock_text: str
    pull_targets: list[str]  # stages whose outputs (in the lock) the stage reads
    profile: str | None = None
    device: str | None = None  # "cuda" on a GPU worker
    threads: int | None = None  # VAEBENCH_THREADS for the stage's command
    work_root: str | None = None
    record_dir: str | None = None  # where the task writes its log and markers, when the worker can see it


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


def _write_marker(task: StageTask, attempt: str, name: str, content: dict) -> None:
    """Best effort: on a cluster without a shared file system the record folder is not there."""
    if not task.record_dir:
        return
    try:
        folder = Path(task.record_dir) / "tasks"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{safe_name(task.stage)}.{attempt}.{name}.json").write_text(json.dumps(content, indent=1))
    except OSError:
        pass


def safe_name(stage: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stage)


def run_stage_task(task: StageTask, upstream_results: list[dict]) -> dict:
    """Run (or restore) one stage in a fresh clone at the commit, push it to the run-cache and
    return its dvc.lock entry with a record of where and how it ran. Runs on a Dask worker."""
    attempt = uuid.uuid4().hex[:8]
    start = time.perf_counter()
    root = Path(task.work_root or tempfile.gettempdir()) / "vaebench-distribute"
    workdir = root / f"{task.commit[:12]}-{safe_name(task.stage)}-{attempt}"
    root.mkdir(parents=True, exist_ok=True)
    log = root / f"{workdir.name}.log"
    record = {"stage": task.stage, "attempt": attempt, "host": socket.gethostname(), "worker": _worker_address(),
              "pid": os.getpid(), "threads": task.threads, "device": task.device or "auto", **torch_build()}
    _write_marker(task, attempt, "started", record)
    env = {**os.environ, "PYTHONPATH": str(workdir),  # the clone's code, not the worker's installed copy
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if task.threads:
        env["VAEBENCH_THREADS"] = str(task.threads)
    if task.device:
        env["VAEBENCH_DEVICE"] = task.device
    try:
        run_command(["git", "clone", "--quiet", "--no-checkout", task.repo_url, str(workdir)], root, log=log)
        run_command(["git", "checkout", "--quiet", "--detach", task.commit], workdir, log=log)
        if task.profile:
            set_profile(workdir / "params.yaml", task.profile)
        lock = yaml.safe_load(task.lock_text) or {"schema": "2.0", "stages": {}}
        lock.setdefault("stages", {}).pop(task.stage, None)  # restored from the run-cache or run, never pulled
        for result in upstream_results:
            lock["stages"][result["stage"]] = result["lock_entry"]
        (workdir / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
        # one DVC cache per worker machine for all its tasks (a second task pulls nothing twice)
        configure_checkout(workdir, task.remote_url, root / "dvc-cache")
        run_command(dvc_command("pull", "--run-cache", *task.pull_targets), workdir, env=env, log=log)
        repro = run_command(dvc_command("repro", "--single-item", "--pull", task.stage), workdir, env=env, log=log,
                            check=False)
        if repro.returncode != 0:
            raise StageFailedError(f"stage {task.stage} failed on {record['host']} (worker {record['worker']}): "
                                   f"`dvc repro` exited {repro.returncode}; the last lines of its log ({log}):\n"
                                   f"{tail(repro.stdout)}")
        record["outcome"] = parse_repro_output(repro.stdout).get(task.stage, "unchanged")
        run_command(dvc_command("push", "--run-cache", task.stage), workdir, env=env, log=log)
        entry = (yaml.safe_load((workdir / "dvc.lock").read_text()) or {}).get("stages", {}).get(task.stage)
        if entry is None:
            raise DistributeError(f"stage {task.stage}: dvc.lock of {workdir} has no entry for it after `dvc repro`")
    except Exception as err:
        record.update(outcome="failed", error=str(err)[-4000:], wall_seconds=round(time.perf_counter() - start, 1))
        _write_marker(task, attempt, "failed", record)
        if task.record_dir and log.exists():
            shutil.copy(log, Path(task.record_dir) / "tasks" / f"{safe_name(task.stage)}.{attempt}.log")
        raise
    record["wall_seconds"] = round(time.perf_counter() - start, 1)
    _write_marker(task, attempt, "finished", record)
    if task.record_dir:
        shutil.copy(log, Path(task.record_dir) / "tasks" / f"{safe_name(task.stage)}.{attempt}.log")
    shutil.rmtree(workdir, ignore_errors=True)
    log.unlink(missing_ok=True)
    return {**record, "lock_entry": entry}


# ------------------------------------------------------------------------------- the coordinator
@dataclass
class DistributeSettings:
    scheduler: str | None = None  # tcp://host:8786; None: an in-process LocalCluster
    workers: int = 2  # LocalCluster's worker processes (one task at a time each)
    remote: str | None = None  # the shared DVC remote's URL; default: the repo's, else a local folder
    repo_url: str | None = None  # where workers clone from; default: this repository's path
    profile: str | None = None
    retries: int = 2
    threads_per_task: int | None = None  # default: each machine's cores over its workers' task slots
    gpu: bool | None = None  # None: train on GPU workers if the scheduler has any
    work_root: str | None = None  # where workers clone (default: their temp folder)
    targets: list[str] = field(default_factory=list)  # like `dvc repro TARGETS`


def _cluster_client(settings: DistributeSettings):
    from distributed import Client, LocalCluster

    if settings.scheduler:
        return Client(settings.scheduler), None
    cluster = LocalCluster(n_workers=settings.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


def threads_per_task(client) -> int:
    """Each task's torch threads: on the most crowded machine, its cores over its workers' task
    slots (one thread per slot at least)."""
    info = client.scheduler_info()["workers"]
    cores = client.run(os.cpu_count)
    by_host: dict[str, list[int]] = {}
    for address, worker in info.items():
        by_host.setdefault(worker["host"], [0, 0])
        by_host[worker["host"]][0] = max(by_host[worker["host"]][0], cores.get(address) or 1)
        by_host[worker["host"]][1] += worker["nthreads"]
    return max(1, min(c // max(1, slots) for c, slots in by_host.values())) if by_host else 1


def has_gpu_workers(client) -> bool:
    return any("GPU" in (w.get("resources") or {}) for w in client.scheduler_info()["workers"].values())


def distribute(root: str | Path, settings: DistributeSettings, echo=print) -> dict:
    """Run the pipeline with its training and marginal-likelihood stages on Dask workers (module
    docstring); returns the record written to ``.vaebench/distribute/<time>-<commit>/record.json``."""
    root = Path(root).resolve()
    start = time.perf_counter()
    require_clean_tree(root, settings.profile)
    commit = git_commit(root)
    record_dir = root / RECORDS_DIR / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{commit[:8]}"
    (record_dir / "tasks").mkdir(parents=True, exist_ok=True)
    record = {"commit": commit, "settings": asdict(settings), "tasks": {}, "coordinator": {}, "status": "running"}
    log = record_dir / "coordinator.log"

    def save(status: str | None = None) -> None:
        if status:
            record["status"] = status
        record["wall_seconds"] = round(time.perf_counter() - start, 1)
        (record_dir / "record.json").write_text(json.dumps(record, indent=1, default=str))

    try:
        if settings.profile:
            set_profile(root / "params.yaml", settings.profile)
        remote = settings.remote or default_remote(root) or str(root / RECORDS_DIR / "remote")
        configure_checkout(root, remote)
        record["remote"] = remote
        stages = read_stages(root)
        wanted = ancestors(stages, settings.targets) if settings.targets else set(stages)
        fanned = [s for s in stages.values() if s.fanned_out and s.name in wanted]
        upstream = sorted(ancestors(stages, [s.name for s in fanned]) - {s.name for s in fanned},
                          key=list(stages).index)
        echo(f"commit {commit[:12]}; the coordinator runs {', '.join(upstream) or 'nothing'} first")
        phase = time.perf_counter()
        if upstream:
            run_command(dvc_command("repro", *upstream), root, log=log)
        todo = changed_stages(root, [s.name for s in fanned])
        todo |= {s.name for s in fanned if set(s.upstream) & todo}  # downstream of a stage that will change
        tasks = [s for s in fanned if s.name in todo]
        # what the tasks read that no task of theirs makes: pushed now (the upstream stages' outputs,
        # and unchanged fanned-out stages read by changed ones)
        pushed = sorted(set(upstream) | {u for s in tasks for u in s.upstream if u not in todo}, key=list(stages).index)
        if pushed:
            run_command(dvc_command("push", "--run-cache", *pushed), root, log=log)
        record["upstream_pushed"] = pushed
        echo(f"{len(tasks)} of {len(fanned)} fanned-out stages need work")
        record["phase_seconds"] = {"upstream": round(time.perf_counter() - phase, 1)}
        phase = time.perf_counter()
        if tasks:
            record["tasks"] = _run_tasks(root, settings, commit, remote, tasks, pushed, record_dir, echo)
        record["phase_seconds"]["tasks"] = round(time.perf_counter() - phase, 1)
        phase = time.perf_counter()
        if pushed:
            run_command(dvc_command("pull", "--run-cache", *pushed), root, log=log)
        forget_lock_entries(root / "dvc.lock", [s.name for s in tasks])
        repro = run_command(dvc_command("repro", "--pull", *settings.targets), root, log=log, check=False)
        outcome = parse_repro_output(repro.stdout)
        record["coordinator"] = outcome
        record["phase_seconds"]["restore_and_report"] = round(time.perf_counter() - phase, 1)
        if repro.returncode != 0:
            raise DistributeError(f"the coordinator's `dvc repro --pull` exited {repro.returncode}:\n{tail(repro.stdout)}")
        rerun = sorted(name for name, verdict in outcome.items() if verdict == "ran" and stages[name].fanned_out)
        if rerun:
            raise DistributeError(f"the coordinator ran {', '.join(rerun)} itself: the run-cache did not hold them "
                                  f"after their tasks (is the remote {remote} shared by every worker?)")
    except BaseException as err:
        record["error"] = str(err)
        save("failed")
        raise
    save("finished")
    echo(f"done in {record['wall_seconds']:.0f} s; record: {record_dir / 'record.json'}")
    return record


def _run_tasks(root: Path, settings: DistributeSettings, commit: str, remote: str, tasks: list[Stage],
               pushed: list[str], record_dir: Path, echo) -> dict:
    """Submit one task per stage (each after the tasks of the stages it reads) and wait for all;
    the first stage that fails for good cancels the others and raises :class:`StageFailedError`."""
    from distributed import as_completed

    client, cluster = _cluster_client(settings)
    try:
        threads = settings.threads_per_task or threads_per_task(client)
        gpu = has_gpu_workers(client) if settings.gpu is None else settings.gpu
        echo(f"{len(client.scheduler_info()['workers'])} workers, {threads} thread(s) per task"
             f"{', training on GPU workers' if gpu else ''}")
        lock_text = (root / "dvc.lock").read_text() if (root / "dvc.lock").exists() else ""
        futures, names = {}, {}
        for stage in tasks:
            task = StageTask(stage.name, commit, settings.repo_url or str(root), remote, lock_text,
                             pull_targets=[u for u in stage.upstream if u in pushed] or pushed[-1:],
                             profile=settings.profile, device="cuda" if gpu and stage.trains else None,
                             threads=threads, work_root=settings.work_root, record_dir=str(record_dir))
            upstream = [futures[u] for u in stage.upstream if u in futures]
            future = client.submit(run_stage_task, task, upstream, key=f"{stage.name}-{uuid.uuid4().hex[:8]}",
                                   retries=settings.retries, pure=False,
                                   resources={"GPU": 1} if gpu and stage.trains else None)
            futures[stage.name], names[future.key] = future, stage.name
        results = {}
        for future in as_completed(list(futures.values())):
            name = names[future.key]
            if future.status != "finished":
                err = future.exception()
                for other in futures.values():
                    other.cancel()
                raise err if isinstance(err, DistributeError) else StageFailedError(f"stage {name} failed: {err}")
            result = future.result()
            results[name] = {k: v for k, v in result.items() if k != "lock_entry"}
            echo(f"  {name}: {result['outcome']} on {result['host']} ({result['worker']}) in {result['wall_seconds']:.0f} s")
        for name, result in results.items():
            result["attempts"] = len(list((record_dir / "tasks").glob(f"{safe_name(name)}.*.started.json")))
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
