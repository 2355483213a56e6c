"""The suite as a user installs it without ``-e``: a wheel built from this checkout, installed into a
fresh virtual environment, runs ``vaebench`` and imports every sub-package from the wheel (not
from this checkout).

A hand-written package list in pyproject.toml once shipped a wheel without
``vae_core/marginal_likelihood/``; this test would have failed on it. The fresh environment gets
the suite's dependencies by reading this environment's site-packages (a path in a ``.pth`` file:
the editable install's own hooks there are not run), so nothing is downloaded.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.wheel


def every_package(root: Path) -> list[str]:
    """The dotted names of every package (a folder with __init__.py) of the suite in ``root``."""
    names = []
    for top in ("vae_core", "baselines", "pipeline"):
        for init in sorted((root / top).rglob("__init__.py")):
            names.append(".".join(init.parent.relative_to(root).parts))
    return names


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel built from this checkout installed (no -e)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy of the checkout's files: setuptools would reuse a build/ folder left in it
    source = tmp / "source"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(tmp / "dist"), "--quiet", "--disable-pip-version-check"],
                           capture_output=True, text=True, cwd=tmp)
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = next((tmp / "dist").glob("vaebench-*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies: this environment's site-packages, read as a plain path
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "--quiet", "--disable-pip-version-check", str(wheel)],
                             capture_output=True, text=True, cwd=tmp)
    assert install.returncode == 0, install.stdout + install.stderr
    return env_dir


def run(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_the_wheel_holds_every_package_of_the_checkout(installed):
    packages = every_package(REPO)
    assert "vae_core.marginal_likelihood" in packages
    purelib = Path(run(installed, installed / "bin" / "python", "-c",
                       "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=installed).stdout.strip())
    missing = [name for name in packages if not (purelib.joinpath(*name.split(".")) / "__init__.py").is_file()]
    assert not missing, f"the wheel lacks {missing}: pyproject.toml's package discovery misses them"


def test_every_sub_package_imports_from_the_installed_wheel(installed, tmp_path):
    code = ("import importlib, sys\n"
            f"for name in {every_package(REPO)!r}:\n"
            "    module = importlib.import_module(name)\n"
            f"    assert not module.__file__.startswith({str(REPO) + os.sep!r}), (name, module.__file__)\n"
            "print('imported', len(sys.modules))\n")
    result = run(installed, installed / "bin" / "python", "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("imported")


def test_the_installed_command_runs_help_and_compare(installed, tmp_path):
    result = run(installed, installed / "bin" / "vaebench", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "compare" in result.stdout and "train" in result.stdout
    result = run(installed, installed / "bin" / "vaebench", "compare", REPO / "reports" / "smoke",
                 REPO / "reports" / "smoke", "--params", REPO / "params.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "same" in result.stdout
