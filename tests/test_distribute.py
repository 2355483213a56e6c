"""`vaebench distribute` (pipeline/cluster/distribute.py): the stage graph it fans out, its guards, and --
on the smoke profile, with a Dask LocalCluster of 2 workers and a local-folder DVC remote -- a
distributed run whose coordinator trains nothing, in which a worker is killed mid-stage, and whose
metrics equal the serial run's; and a failing stage that is named, with its log, and leaves no report."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from pipeline.cluster.distribute import DistributeError
from pipeline.cluster.workspace import forget_lock_entries, require_clean_tree, set_profile
from pipeline.cluster.stage_graph import ancestors, parse_repro_output, read_stages

from .conftest import COPIED, REPO, SHARED_DATA

distributed = pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

KILLED_STAGE = "fig3_marginal_likelihood@50000-mcem"  # the smoke profile's longest stage (about 15 s)
KILLED_COMMAND = "--run runs/fig3/mnist_ntrain50000_mcem"


# ------------------------------------------------------------------------- the graph and the guards
def test_the_training_and_marginal_likelihood_stages_fan_out_after_download_and_prepare():
    stages = read_stages(REPO)
    fanned = {name for name, stage in stages.items() if stage.fanned_out}
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    fig2, fig3 = params["experiments"]["fig2"], params["experiments"]["fig3"]
    expected = ({f"fig2_{d}@{nz}-{a}" for d in ("mnist", "frey_face") for nz in fig2[d]["nz"] for a in fig2["algorithms"]}
                | {f"fig3@{n}-{a}" for n in fig3["ntrain"] for a in fig3["algorithms"]}
                | {f"fig3_marginal_likelihood@{n}-{a}" for n in fig3["ntrain"] for a in fig3["algorithms"]}
                | {f"fig2_binarization@{nz}" for nz in fig2["binarization_study"]["nz"]}
                | {"fig4_mnist"})
    assert fanned == expected and "fig4_mnist" in dvc_yaml
    assert ancestors(stages, sorted(fanned)) - fanned == {"download", "prepare"}
    assert "fig3@1000-mcem" in stages["fig3_marginal_likelihood@1000-mcem"].upstream
    assert not stages["report"].fanned_out and not stages["estimator_variance"].fanned_out


def test_the_repro_output_says_which_stages_ran_and_which_were_restored():
    text = ("Stage 'download' didn't change, skipping\nRunning stage 'fig3@1000-aevb':\n> vaebench train\n"
            "Stage 'fig3_marginal_likelihood@1000-aevb' is cached - skipping run, checking out outputs\n")
    assert parse_repro_output(text) == {"download": "unchanged", "fig3@1000-aevb": "ran",
                                        "fig3_marginal_likelihood@1000-aevb": "restored"}


def test_the_profile_is_set_without_touching_other_lines(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("# a comment\nprofile: default   # which budgets\nprofiles:\n  paper: {}\n")
    set_profile(params, "paper")
    assert params.read_text() == "# a comment\nprofile: paper\nprofiles:\n  paper: {}\n"
    (tmp_path / "none.yaml").write_text("profiles: {}\n")
    with pytest.raises(DistributeError, match="no top-level `profile:`"):
        set_profile(tmp_path / "none.yaml", "paper")


def test_a_dirty_tree_is_refused_with_the_files_named_but_not_for_the_pipelines_own_outputs(tmp_path):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "params.yaml").write_text("profile: default\nx: 1\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run(["git", "commit", "-qm", "c"], cwd=tmp_path, check=True, env=env)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # the coordinator rewrites it
    set_profile(tmp_path / "params.yaml", "paper")  # what --profile paper did before an interruption
    require_clean_tree(tmp_path, "paper")
    with pytest.raises(DistributeError, match=r"uncommitted changes \(params.yaml\)"):
        require_clean_tree(tmp_path, "smoke")
    (tmp_path / "a.py").write_text("x = 1\n")
    with pytest.raises(DistributeError, match=r"uncommitted changes \(a.py\).*Commit them"):
        require_clean_tree(tmp_path, "paper")


def test_forgotten_lock_entries_leave_the_others(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {"a": {"cmd": "x"}, "b": {"cmd": "y"}}}))
    forget_lock_entries(lock, ["a"])
    assert yaml.safe_load(lock.read_text())["stages"] == {"b": {"cmd": "y"}}


# ----------------------------------------------------------------------------- LocalCluster runs
def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


def make_git_repo(where: Path, edit_params=None) -> tuple[Path, dict]:
    """A git repository holding this suite on the smoke profile, committed (the tree is clean)."""
    repo = where / "repo"
    repo.mkdir(parents=True)
    for name in [*COPIED, ".gitignore"]:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy(source, repo / name)
    shutil.rmtree(repo / "reports" / "smoke", ignore_errors=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["data"]["mirrors"] = []
    if edit_params:
        edit_params(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "VAEBENCH_DATA_MIRRORS": str(SHARED_DATA), "PYTHONPATH": str(repo),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    git("init", "-q", cwd=repo)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, env=env, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=repo, env=env, check=True)
    git("add", "-A", cwd=repo)
    subprocess.run(["git", "commit", "-q", "-m", "smoke"], cwd=repo, env=env, check=True)
    return repo, env


def run_distribute(repo, env, *args, timeout=1500):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "distribute", "--workers", "2",
                           "--work-root", str(repo.parent / "work"), "--remote", str(repo.parent / "remote"), *args],
                          cwd=repo, env=env, text=True, capture_output=True, timeout=timeout)


def kill_a_worker_mid_stage(work_root: Path, found: dict, stop: threading.Event) -> None:
    """Watch for the stage's command in a worker's clone; once it has run 2 s, kill its worker
    process and the command's process group (as if the worker's machine died)."""
    while not stop.is_set():
        for process in psutil.process_iter(["cmdline", "cwd"]):
            try:
                cmdline = " ".join(process.info["cmdline"] or [])
                if KILLED_COMMAND in cmdline and "marginal-likelihood" in cmdline and \
                        str(work_root) in (process.info["cwd"] or ""):
                    time.sleep(2.0)
                    chain = process.parents()  # sh <- dvc <- the Dask worker <- ...
                    dvc = next(p for p in chain if "dvc" in " ".join(p.cmdline()))
                    worker = dvc.parent()
                    found.update(worker=worker.pid, command=process.pid)
                    os.kill(worker.pid, signal.SIGKILL)
                    os.killpg(os.getpgid(dvc.pid), signal.SIGKILL)
                    return
            except (psutil.NoSuchProcess, psutil.AccessDenied, StopIteration, ProcessLookupError):
                continue
        time.sleep(0.2)


@pytest.fixture(scope="module")
def distributed_smoke(tmp_path_factory):
    if not (SHARED_DATA / "mnist.pkl.gz").exists():
        pytest.skip(f"no data mirror at {SHARED_DATA}")
    repo, env = make_git_repo(tmp_path_factory.mktemp("distributed"))
    found, stop = {}, threading.Event()
    killer = threading.Thread(target=kill_a_worker_mid_stage, args=(repo.parent / "work", found, stop), daemon=True)
    killer.start()
    start = time.perf_counter()
    result = run_distribute(repo, env)
    elapsed = time.perf_counter() - start
    stop.set()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    (record,) = [json.loads(p.read_text()) for p in (repo / ".vaebench" / "distribute").glob("*/record.json")]
    (repo.parent / "distribute_wall_seconds.txt").write_text(f"{elapsed:.1f}\n")
    return repo, env, record, found, elapsed


@pytest.mark.integration
def test_the_coordinator_trains_nothing_and_every_fanned_out_stage_comes_from_the_run_cache(distributed_smoke):
    repo, _, record, _, _ = distributed_smoke
    stages = read_stages(repo)
    fanned = {name for name, stage in stages.items() if stage.fanned_out}
    assert record["status"] == "finished"
    assert set(record["tasks"]) == fanned, "one task per training and marginal-likelihood stage"
    assert all(task["outcome"] == "ran" for task in record["tasks"].values()), "a fresh remote: every task ran its stage"
    coordinator = record["coordinator"]
    assert {name for name, verdict in coordinator.items() if verdict == "ran"} == {
        "estimator_variance", "log_likelihood", "linear_reference", "figures", "report"}
    assert {name for name, verdict in coordinator.items() if verdict == "restored"} == fanned
    assert len({task["worker"] for task in record["tasks"].values()}) >= 2, "both workers took tasks"


@pytest.mark.integration
def test_a_worker_killed_mid_stage_is_retried_and_the_metrics_equal_the_serial_run(distributed_smoke, smoke_repo):
    repo, env, record, found, _ = distributed_smoke
    assert found, f"the stage {KILLED_STAGE} was never seen running in a worker's clone"
    task = record["tasks"][KILLED_STAGE]
    assert task["attempts"] >= 2 and task["outcome"] == "ran", task
    serial = smoke_repo[0] / "reports" / "smoke"
    compare = subprocess.run([sys.executable, "-m", "pipeline.cli", "compare", str(serial), str(repo / "reports" / "smoke"),
                              "--exclude", "speed/*", "--format", "json", "--params", str(REPO / "params.yaml")],
                             cwd=REPO, env=env, text=True, capture_output=True, timeout=300)
    assert compare.returncode == 0, compare.stdout[-4000:] + compare.stderr[-2000:]
    result = json.loads(compare.stdout)
    assert result["counts"]["same"] > 0 and not result["regressions"]
    assert all(result["counts"].get(verdict, 0) == 0 for verdict in ("worse", "better", "added", "removed")), result["counts"]
    # The tasks train with one thread each (two workers on 2 cores), and so does the serial run
    # (tests/conftest.py, smoke_repo): every number, the seeds' standard errors included, is the same.
    changed = [m["key"] for m in result["metrics"] if m["verdict"] == "changed"]
    assert changed == [], changed


@pytest.mark.integration
def test_a_failing_stage_is_named_with_its_log_and_no_report_is_written(tmp_path):
    """A bad value that only the training command checks (a negative sample budget for Figure 3): the
    task fails on its worker, is retried, and the coordinator stops with the stage's name and log."""
    if not (SHARED_DATA / "mnist.pkl.gz").exists():
        pytest.skip(f"no data mirror at {SHARED_DATA}")

    def break_fig3(params):
        params["profiles"]["smoke"]["fig3"]["mnist"]["samples"] = -5

    repo, env = make_git_repo(tmp_path, break_fig3)
    result = run_distribute(repo, env, "--retries", "1", "fig3@1000-aevb", timeout=600)
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-4000:]
    assert "stage fig3@1000-aevb failed" in result.stderr and "samples" in result.stderr
    assert "No report was written." in result.stderr
    assert not (repo / "reports" / "smoke").exists()
    (record,) = [json.loads(p.read_text()) for p in (repo / ".vaebench" / "distribute").glob("*/record.json")]
    assert record["status"] == "failed"
    attempts = list((Path(record_dir := next((repo / ".vaebench" / "distribute").glob("*/"))) / "tasks").glob(
        "fig3_1000-aevb.*.failed.json"))
    assert len(attempts) == 2, f"one retry of the failed stage ({record_dir})"


# ----------------------------------------------------------------------------------------- GPUs
def test_a_gpu_worker_is_seen_and_the_device_reaches_the_stage_command_through_the_environment(tiny_setup):
    """Workers started with a GPU resource make training tasks ask for it; a task sets
    VAEBENCH_DEVICE=cuda, which `vaebench train` reads as --device (here, on a machine without CUDA,
    that must fail with the device's own clear error, proving the variable was read)."""
    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.cluster.distribute import has_gpu_workers

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  resources={"GPU": 1}) as cluster, distributed.Client(cluster) as client:
        assert has_gpu_workers(client)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        assert not has_gpu_workers(client)
    params, params_path, prepared, tmp_path = tiny_setup
    result = CliRunner().invoke(main, ["train", "--dataset", "mnist", "--nz", "3", "--params", str(params_path),
                                       "--prepared-dir", str(prepared), "--out", str(tmp_path / "run"), "--no-progress"],
                                env={"VAEBENCH_DEVICE": "cuda"})
    import torch

    if torch.cuda.is_available():
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "run/seed1/final.json").read_text())["device"].startswith("cuda")
    else:
        assert result.exit_code == 1 and "--device cuda was asked for" in result.output, result.output
