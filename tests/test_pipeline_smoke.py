"""Integration: the whole DVC pipeline on the smoke profile, in a copy of the repository."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import REPO, SHARED_DATA

pytestmark = pytest.mark.integration
COPIED = ["pipeline", "vae_core", "baselines", "reports", "dvc.yaml", "params.yaml", ".dvcignore", "pyproject.toml"]


def dvc(*args, cwd, env):
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=900)


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory):
    if not (SHARED_DATA / "mnist.pkl.gz").exists():
        pytest.skip(f"no data mirror at {SHARED_DATA}")
    repo = tmp_path_factory.mktemp("smoke") / "repo"
    repo.mkdir()
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy(source, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["data"]["mirrors"] = []  # the mirror comes from the environment variable instead
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "VAEBENCH_DATA_MIRRORS": str(SHARED_DATA),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(repo)}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=repo, env=env, check=True)
    dvc("config", "core.analytics", "false", cwd=repo, env=env)
    start = time.perf_counter()
    result = dvc("repro", cwd=repo, env=env)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return repo, env, params, elapsed


def expected_runs(params):
    """(run directory, budget, algorithm) of every training stage in dvc.yaml."""
    smoke = params["profiles"]["smoke"]
    fig2, fig3 = params["experiments"]["fig2"], params["experiments"]["fig3"]
    runs = [(f"fig2/{d}_nz{nz}_{a}", smoke["fig2"][d]["samples"], a)
            for d in ("mnist", "frey_face") for nz in fig2[d]["nz"] for a in fig2["algorithms"]]
    runs += [(f"fig3/mnist_ntrain{n}_{a}", smoke["fig3"]["mnist"]["samples"], a)
             for n in fig3["ntrain"] for a in fig3["algorithms"]]
    return runs


def test_smoke_pipeline_trains_every_configuration(smoke_repo):
    repo, _, params, elapsed = smoke_repo
    runs = expected_runs(params)
    assert {a for _, _, a in runs} == {"aevb", "wake_sleep", "mcem"}
    for name, budget, algorithm in runs:
        run_dir = repo / "runs" / name
        curve = pd.read_csv(run_dir / "curve.csv")
        assert list(curve.columns) == ["samples_seen", "wall_seconds", "split", "metric", "value"]
        assert np.isfinite(curve.value).all() and curve.samples_seen.max() == budget
        final = json.loads((run_dir / "final.json").read_text())
        assert final["step_size"] in params["optimizer"]["step_size_grid"]
        assert (run_dir / "checkpoints" / f"samples_{budget:012d}.pt").exists()
        if algorithm == "mcem":  # no encoder, no bound: the curve carries the HMC tuner's state
            acceptance = curve[curve.metric == "hmc_acceptance_rate"].value
            assert len(acceptance) > 0 and ((acceptance > 0) & (acceptance <= 1)).all()
            continue
        bound = curve[(curve.metric == "lower_bound") & (curve.split == "train")].value
        assert set(curve[curve.metric == "lower_bound"].split) == {"train", "test"}
        assert bound.iloc[-1] > bound.iloc[0], f"{name}: the bound did not improve"
    assert elapsed < 300, f"the smoke profile took {elapsed:.0f} s, more than 5 minutes"


def test_smoke_pipeline_is_up_to_date_after_repro(smoke_repo):
    repo, env, _, _ = smoke_repo
    status = dvc("status", cwd=repo, env=env)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
