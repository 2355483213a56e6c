"""The coordinator's workspace for ``vaebench distribute``: commands run with their output logged,
git (the commit, a clean tree, params.yaml's ``profile:`` line) and DVC (the remote, dvc.lock's
entries, which stages need work)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.plumbing import git

REMOTE_NAME = "vaebench_distribute"
LOG_TAIL_LINES = 40
PROFILE_LINE = re.compile(r"^profile:[ \t]*\S+[ \t]*(#.*)?$", re.MULTILINE)


class DistributeError(RuntimeError):
    """The distribute cannot go on: a dirty tree, a failed stage, a stage the run-cache lacks."""


def run_command(args: list[str], cwd: Path, env: dict | None = None, log: Path | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; its output goes to ``log`` (appended) as well as into the result. A failure
    raises :class:`DistributeError` with the command and the output's tail."""
    result = subprocess.run(args, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    if log is not None:
        with open(log, "a") as handle:
            handle.write(f"$ {' '.join(args)}\n{result.stdout}\n[exit {result.returncode}]\n")
    if check and result.returncode != 0:
        raise DistributeError(f"`{' '.join(args)}` exited {result.returncode} in {cwd}:\n{tail(result.stdout)}")
    return result


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def dvc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def git_commit(root: Path) -> str:
    """The commit checked out in ``root``; :class:`DistributeError` outside a git checkout."""
    commit = git.head_commit(root)
    if commit is None:
        raise DistributeError(f"{root} is not a git checkout with a commit: `vaebench distribute` runs a commit "
                              f"on the workers. Fix: run it in a clone of the repository")
    return commit


# What the coordinator itself rewrites (the workers get dvc.lock by value): a re-run after an
# interrupted distribute finds them changed, and that is no reason to refuse.
PIPELINE_OUTPUTS = ("dvc.lock", "reports/")


def require_clean_tree(root: Path, profile: str | None = None) -> None:
    """Refuse uncommitted changes and untracked files: the workers check out the commit. The
    pipeline's own outputs (:data:`PIPELINE_OUTPUTS`) do not count, nor params.yaml when it differs
    from the commit's only by ``profile:`` set to ``profile`` (what ``--profile`` itself does)."""
    status = run_command(["git", "status", "--porcelain"], root).stdout.splitlines()
    changed = [line[3:] for line in status if not line[3:].startswith(PIPELINE_OUTPUTS)]
    if "params.yaml" in changed and profile and _only_the_profile_differs(root, profile):
        changed.remove("params.yaml")
    if changed:
        listed = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
        raise DistributeError(
            f"the git tree at {root} has uncommitted changes ({listed}): the workers check out the commit, so "
            f"these would not run there. Commit them (or stash them) and run `vaebench distribute` again")


def _only_the_profile_differs(root: Path, profile: str) -> bool:
    try:
        committed, _ = git.show_file("HEAD", "params.yaml", root)
    except git.GitUnavailableError:
        return False
    if committed is None or not PROFILE_LINE.search(committed):
        return False
    return PROFILE_LINE.sub(f"profile: {profile}", committed, count=1) == (root / "params.yaml").read_text()


def set_profile(params_path: Path, profile: str) -> None:
    """Set params.yaml's top-level ``profile:`` line, leaving every other line (and comment) as it is."""
    text = params_path.read_text()
    if not PROFILE_LINE.search(text):
        raise DistributeError(f"{params_path} has no top-level `profile:` line to set; add one (profile: default)")
    params_path.write_text(PROFILE_LINE.sub(f"profile: {profile}", text, count=1))


def configure_checkout(repo: Path, url: str, cache_dir: Path | None = None) -> None:
    """Make ``url`` this checkout's default DVC remote (and ``cache_dir`` its cache), in
    .dvc/config.local, which is never committed (DVC's own config API: no DVC process to start)."""
    from dvc.config import Config

    with Config(dvc_dir=str(repo / ".dvc")).edit("local") as conf:
        conf["remote"][REMOTE_NAME] = {"url": url}
        conf["core"]["remote"] = REMOTE_NAME
        if cache_dir is not None:
            conf["cache"]["dir"] = str(cache_dir)


def default_remote(root: Path) -> str | None:
    """The URL of the repository's default DVC remote, if it has one."""
    name = run_command(dvc_command("remote", "default"), root, check=False).stdout.strip()
    if not name:
        return None
    for line in run_command(dvc_command("remote", "list"), root, check=False).stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == name:
            return parts[1]
    return None


def forget_lock_entries(lock_path: Path, names: list[str]) -> None:
    """Drop these stages' entries from a dvc.lock: DVC then treats them as new and restores them from
    the run-cache (or runs them), rather than trying to pull the outputs an older run recorded."""
    if not lock_path.exists():
        return
    lock = yaml.safe_load(lock_path.read_text()) or {}
    stages = lock.get("stages") or {}
    if any(name in stages for name in names):
        for name in names:
            stages.pop(name, None)
        lock_path.write_text(yaml.safe_dump(lock, sort_keys=False))


def changed_stages(root: Path, names: list[str]) -> set[str]:
    """The stages among ``names`` that ``dvc status`` says need work (changed or missing outputs)."""
    if not names:
        return set()
    result = run_command(dvc_command("status", "--json", *names), root)
    return set(json.loads(result.stdout or "{}")) & set(names)
