"""The one place vaebench asks git something: a file at a revision, the commit checked out, the
working tree's status. Every caller gets ``None`` (or git's own last word) where git cannot answer,
never a traceback; a revision that looks like an option is refused before git sees it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

# A revision as a user types it (HEAD~2, main, a sha, v1.0^, stash@{0}); never an option of git's.
REVISION = re.compile(r"^[A-Za-z0-9_./~^@{}:+-]+$")


class GitUnavailableError(OSError):
    """git itself could not be run (not installed, or the folder is unreadable)."""


def check_revision(revision: str) -> str:
    """``revision`` unchanged, or ValueError where git would read it as an option or it holds
    characters no revision has."""
    if not revision or revision.startswith("-") or not REVISION.match(revision):
        raise ValueError(f"{revision!r} is not a git revision. Fix: name a commit, branch or tag (HEAD~1, main, "
                         f"a sha)")
    return revision


def run_git(args: list[str], repo: str | Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """``git ARGS`` in ``repo``; :class:`GitUnavailableError` where git cannot be started or hangs."""
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as err:
        raise GitUnavailableError(f"git is not available in {repo} ({err})") from None


def show_file(revision: str, path: str, repo: str | Path, timeout: float = 60) -> tuple[str | None, str]:
    """The text of ``path`` at ``revision`` (``None`` when git cannot show it) and git's last word."""
    result = run_git(["show", f"{check_revision(revision)}:{path}"], repo, timeout)
    if result.returncode == 0:
        return result.stdout, ""
    return None, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "git show failed"


def output(args: list[str], repo: str | Path, timeout: float = 30) -> str | None:
    """git's standard output, or ``None`` where git failed or could not run."""
    try:
        result = run_git(args, repo, timeout)
    except GitUnavailableError:
        return None
    return result.stdout if result.returncode == 0 else None


def head_commit(repo: str | Path) -> str | None:
    """The commit checked out in ``repo``, or ``None`` outside a git checkout."""
    commit = output(["rev-parse", "HEAD"], repo)
    return commit.strip() if commit else None
