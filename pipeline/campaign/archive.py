"""The paper-budget campaign's archive: every finished run kept in the repository, compactly, so
that a fresh clone restores it (docs/paper-budget.md).

A run's checkpoints are what make it big (the optimizer state of a Figure 2 MNIST model is about
7 MB, and a paper-budget run writes ten or thirty of them), and nothing downstream of training
reads them but the final model of a few runs. So an archive entry keeps what the figures, tables,
claims and the staleness check read, and no more:

    archive/<profile>/<experiment folder>/<configuration>/seed<N>/
        config.json, final.json, curve.csv        the run as training wrote them
        marginal_likelihood.csv                   Figure 3: its Appendix D (and cross-check) rows
        checkpoints/samples_<N>.pt, manifest.json the final model's weights alone (float32), where a
                                                  figure or the estimator-variance claim needs them
        entry.json                                who trained it (commit, training-code fingerprint,
                                                  thread count, the seeds trained with it), and the
                                                  sha256 of every file above

A run is archived only if its fingerprint (configuration, training code, data) is the one the
current code and data give it: the commit the entry names is then the code that trained it. A
restored entry is checked file by file against its sha256s first; a damaged one is refused, by
name, and nothing of it is copied. An interrupted run is never archived: it resumes from its own
checkpoints on the machine that has them.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from pipeline.evaluation.marginal_likelihood import ESTIMATOR_MODULES
from pipeline.plumbing import git
from pipeline.plumbing.code_dependencies import ROOT, import_closure, source_fingerprint
from pipeline.plumbing.errors import UserError
from pipeline.plumbing.files import save_torch, sha256_of, write_json
from pipeline.runs.directory import (CHECKPOINT_MANIFEST, CONFIG_FILE, CURVE_FILE, FINAL_FILE,
                                     checkpoint_path, final_checkpoint, load_checkpoint, marginal_likelihood_path,
                                     read_run_config, require_finished)
from pipeline.training.train import TRAINING_MODULES, run_fingerprint

ENTRY_FILE = "entry.json"
MARGINAL_LIKELIHOOD_CSV = "marginal_likelihood.csv"


class ArchiveError(UserError, ValueError):
    """An archive entry that cannot be written or trusted; the message names it and the fix."""


@dataclass(frozen=True)
class Entry:
    """One archived run: its key (``<experiment folder>/<configuration>/seed<N>``), its folder and
    its entry.json."""

    key: str
    path: Path
    record: dict

    @property
    def commit(self) -> str:
        return self.record.get("commit") or "unknown"


@contextmanager
def replaced_folder(target: Path):
    """A new folder to fill; once filled without an error it replaces ``target`` whole (an older
    folder of that name goes; nothing of it is kept beside the new one's files)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)
        old = target.with_name(f".{target.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run_key(run_dir: str | Path) -> str:
    """``<experiment folder>/<configuration>/seed<N>`` of a run directory."""
    run_dir = Path(run_dir)
    return f"{run_dir.parent.parent.name}/{run_dir.parent.name}/{run_dir.name}"


def training_code() -> str:
    """The fingerprint of the training code as it is now (every file the train stage imports)."""
    return source_fingerprint(TRAINING_MODULES)


def estimator_code() -> str:
    """The fingerprint of the marginal-likelihood estimators' code as it is now."""
    return source_fingerprint(ESTIMATOR_MODULES)


def code_is_committed(repo: Path = ROOT) -> bool:
    """Whether every file of the training code is as the checked-out commit has it."""
    files = [p.relative_to(repo).as_posix() for p in import_closure(TRAINING_MODULES)]
    status = git.output(["status", "--porcelain", "--", *files], repo)
    return status is not None and status.strip() == ""


def archive_run(run_dir: str | Path, runs_root: str | Path, archive_root: str | Path, prepared_dir: str | Path,
                keep_model: bool, trained_with_seeds: list[int]) -> Entry:
    """Archive a finished run (replacing an earlier entry of the same key). ``keep_model``: keep its
    final model's weights (Figures 4-5, the estimator-variance claim). ``trained_with_seeds``: the
    seeds trained in the same process (stacked AEVB seeds are bit-identical only as a stack)."""
    run_dir = Path(run_dir)
    final = require_finished(run_dir)
    stored = json.loads((run_dir / CONFIG_FILE).read_text())
    config = read_run_config(run_dir)
    if stored.get("fingerprint") != run_fingerprint(config, prepared_dir):
        raise ArchiveError(f"{run_dir} was trained by other code or on other data than this checkout's (its fingerprint "
                           f"differs): it cannot be archived as this commit's. Fix: retrain it here (`vaebench train` "
                           f"retrains it), or archive it from the checkout that trained it")
    key = run_key(run_dir)
    target = Path(archive_root) / key
    with replaced_folder(target) as staging:
        for name in (CONFIG_FILE, FINAL_FILE, CURVE_FILE):
            shutil.copy2(run_dir / name, staging / name)
        ml = marginal_likelihood_path(run_dir, runs_root)
        if ml.is_file():
            shutil.copy2(ml, staging / MARGINAL_LIKELIHOOD_CSV)
        if keep_model:
            state = load_checkpoint(final_checkpoint(run_dir))
            slim = checkpoint_path(staging, int(final["samples_seen"]))
            slim.parent.mkdir(parents=True, exist_ok=True)
            save_torch(slim, {"fingerprint": state["fingerprint"], "samples_seen": state["samples_seen"],
                              "algorithm": {"model": {k: v.detach().to(torch.float32).clone()
                                                      for k, v in state["algorithm"]["model"].items()}}})
            write_json(slim.parent / CHECKPOINT_MANIFEST, {slim.name: sha256_of(slim)})
        files = {p.relative_to(staging).as_posix(): sha256_of(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        record = {
            "run": key, "archived_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": git.head_commit(ROOT), "code_committed": code_is_committed(),
            "training_code": training_code(),
            "estimator_code": estimator_code() if ml.is_file() else None,
            "run_fingerprint": stored["fingerprint"], "threads": int(stored.get("threads") or final.get("threads") or 1),
            "trained_with_seeds": sorted(int(s) for s in trained_with_seeds),
            "samples_seen": int(final["samples_seen"]),
            "files": files, "bytes": sum((staging / name).stat().st_size for name in files),
        }
        write_json(staging / ENTRY_FILE, record)
    return Entry(key, target, record)


def entries(archive_root: str | Path) -> list[Entry]:
    """Every entry of an archive, by key."""
    root = Path(archive_root)
    found = []
    for path in sorted(root.glob(f"*/*/seed*/{ENTRY_FILE}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ArchiveError(f"{path} cannot be read ({err}): the entry is damaged; restore it from git "
                               f"(`git checkout -- {path.parent}`) or remove it and train the run again") from None
        found.append(Entry(run_key(path.parent), path.parent, record))
    return found


def verify(entry: Entry) -> list[str]:
    """What is wrong with an entry's files (missing, changed, unlisted); empty when every file's
    sha256 is the one entry.json records."""
    listed = entry.record.get("files")
    if not isinstance(listed, dict) or not listed:
        return [f"{entry.path / ENTRY_FILE} lists no files"]
    problems = []
    for name, digest in sorted(listed.items()):
        path = entry.path / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_of(path) != digest:
            problems.append(f"{name} has changed (its sha256 is not the one archived)")
    present = {p.relative_to(entry.path).as_posix() for p in entry.path.rglob("*") if p.is_file()}
    problems += [f"{name} is not part of the entry" for name in sorted(present - set(listed) - {ENTRY_FILE})]
    return problems


def restore(entry: Entry, runs_root: str | Path) -> Path:
    """Copy a verified entry into ``runs_root`` as a finished run directory (and its
    marginal-likelihood CSV where the report reads it); returns the run directory. A damaged
    entry is refused (ArchiveError naming it and what is wrong) and nothing of it is copied."""
    problems = verify(entry)
    if problems:
        raise ArchiveError(f"archive entry {entry.path} is damaged ({'; '.join(problems)}): it was not restored. Fix: "
                           f"`git checkout -- {entry.path}` if git has it whole, else remove it and train the run again")
    run_dir = Path(runs_root) / entry.key
    if (run_dir / FINAL_FILE).is_file() and (run_dir / CONFIG_FILE).is_file() and json.loads(
            (run_dir / CONFIG_FILE).read_text()).get("fingerprint") == entry.record.get("run_fingerprint"):
        return run_dir  # this machine finished the same run itself: it stays (checkpoints and all)
    if run_dir.exists():
        raise ArchiveError(f"{run_dir} exists and is not the archived run {entry.key} (another or an unfinished "
                           f"run): it was left alone and the entry not restored. Fix: move it away, or restore into "
                           f"another runs folder")
    with replaced_folder(run_dir) as staging:
        for name in entry.record["files"]:
            if name == MARGINAL_LIKELIHOOD_CSV:
                continue
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(entry.path / name, staging / name)
    if MARGINAL_LIKELIHOOD_CSV in entry.record["files"]:
        ml = marginal_likelihood_path(run_dir, runs_root)
        ml.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(entry.path / MARGINAL_LIKELIHOOD_CSV, ml)
    return run_dir


def archive_bytes(archive_root: str | Path) -> int:
    """The bytes of every file of the archive."""
    return sum(p.stat().st_size for p in Path(archive_root).rglob("*") if p.is_file())


__all__ = ["ArchiveError", "Entry", "archive_bytes", "archive_run", "code_is_committed", "entries", "estimator_code",
           "restore", "run_key", "training_code", "verify"]
