import os
import sys
from pathlib import Path

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # as pipeline/__init__.py, before torch starts MKL

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", choices=("cpu", "cuda"),
                     help="where tests/test_devices.py runs its computations (scripts/gpu_check.sh passes cuda)")


@pytest.fixture(scope="session")
def device(request):
    """The device of tests/test_devices.py: the CPU unless ``--device cuda``, which must then work."""
    name = request.config.getoption("--device")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.exit("--device cuda was asked for but torch sees no CUDA device", returncode=2)
    return torch.device(name)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(1234)
    yield


def write_prepared(prepared_dir, name, **arrays):
    """A prepared ``<name>.npz`` of the given arrays, recorded in ``datasets.json`` beside it as
    ``vaebench data prepare`` records its outputs (the readers check the file against it)."""
    import json

    import numpy as np

    from pipeline.plumbing.files import sha256_of

    prepared_dir = Path(prepared_dir)
    prepared_dir.mkdir(parents=True, exist_ok=True)
    path = prepared_dir / f"{name}.npz"
    np.savez(path, **arrays)
    index_path = prepared_dir / "datasets.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    index[name] = {"sha256": sha256_of(path)}
    index_path.write_text(json.dumps(index))
    return path


@pytest.fixture
def tiny_setup(tmp_path):
    """A params file and prepared MNIST-shaped data small enough to train in about a second."""
    return make_tiny_setup(tmp_path)


def make_tiny_setup(tmp_path):
    """:func:`tiny_setup`'s params file and data in ``tmp_path`` (for fixtures of other scopes)."""
    import numpy as np
    import yaml

    from pipeline.plumbing.params import load_params

    rng = np.random.default_rng(0)
    prepared = tmp_path / "prepared"
    images = (rng.random((600, 784)) < 0.2) * rng.integers(0, 256, (600, 784))
    write_prepared(prepared, "mnist", train_x=images[:400].astype(np.uint8), test_x=images[400:].astype(np.uint8))
    params = load_params(REPO / "params.yaml")
    params["profile"] = "smoke"
    params["experiments"]["fig2"]["mnist"]["hidden_units"] = 16
    params["optimizer"]["warmup_steps"] = 5
    params["profiles"]["smoke"]["fig2"] = {
        "mnist": {"samples": 4000, "step_size_trial_samples": 1000},
        "eval_points_per_decade": 4, "eval_first_samples": 200, "eval_train_points": 200,
        "eval_test_points": 100, "checkpoint_every": 1000,
    }
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    return params, params_path, prepared, tmp_path


COPIED = ["pipeline", "vae_core", "baselines", "reports", "dvc.yaml", "params.yaml", ".dvcignore", "pyproject.toml"]


def dvc(*args, cwd, env):
    import subprocess

    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=900)


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory):
    """The whole pipeline on the smoke profile by `dvc repro`, in a copy of the repository (no git):
    the integration tests of test_pipeline_smoke.py, and the serial run test_distribute.py compares with."""
    import shutil
    import subprocess
    import time

    import yaml

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
    shutil.rmtree(repo / "reports" / "smoke", ignore_errors=True)  # the committed one is the gate's base
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["data"]["mirrors"] = []  # the mirror comes from the environment variable instead
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # One torch thread per run, as `vaebench distribute` gives each task of its 2-worker test
    # (tests/test_distribute.py compares the two bit for bit): Figure 2's numbers depend on the
    # thread count in their last bits, which 20,000 samples of training amplify to nats on some
    # CPUs (pipeline/plumbing/cpu_threads.py; the binarization study's Nz = 200 run moved 12.8 nats
    # between one thread and two on an Intel Xeon).
    env = {**os.environ, "VAEBENCH_DATA_MIRRORS": str(SHARED_DATA),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(repo), "VAEBENCH_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=repo, env=env, check=True)
    dvc("config", "core.analytics", "false", cwd=repo, env=env)
    start = time.perf_counter()
    result = dvc("repro", cwd=repo, env=env)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    if os.environ.get("VAEBENCH_SMOKE_REPORT_OUT"):  # .ci/run's gate compares this report with the committed one
        out = Path(os.environ["VAEBENCH_SMOKE_REPORT_OUT"])
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(repo / "reports" / "smoke", out)
        (out / "dvc_repro_wall_seconds.txt").write_text(f"{elapsed:.1f}\n")
    return repo, env, params, elapsed


