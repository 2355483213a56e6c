"""Writing outputs safely: a reader (or a killed run) never sees a half-written file or a mixed set.

- :func:`write_atomically` (and :func:`write_json`, :func:`save_torch`): one file, written to a
  temporary beside it and renamed into place.
- :func:`staged_folder`: several files that must appear together (a stage's outputs), written
  into a staging folder beside their destination and moved there only once all are written.
- :func:`held` / :func:`abandoned`: a process holds a shared ``flock`` on the temporaries it is
  writing; the lock dies with the process, so a later run can tell a killed run's leftovers
  (free lock: delete them) from another run's work in progress (held: leave it). Where the
  filesystem cannot tell (some network filesystems), a leftover counts as in use.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator



class DiskFullError(OSError):
    """No space was left on the device while an output was written; nothing was replaced."""


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    A full disk raises :class:`DiskFullError` naming the file and the free space: the temporary is
    removed and the previous ``path``, if any, is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; outputs are ordinary readable files
        os.replace(tmp_path, path)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        free = shutil.disk_usage(path.parent).free
        raise DiskFullError(errno.ENOSPC, f"no space left on the device while writing {path} ({free:,} bytes free): "
                                          f"free some space and run the same command again (it resumes; the previous "
                                          f"{path.name}, if any, is intact)") from None
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, payload: Any) -> Path:
    return write_atomically(
        path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    )


def save_torch(path: str | Path, payload: Any) -> Path:
    """``torch.save`` atomically. The payload is serialized in memory first, so a full disk
    surfaces as an OSError of the write (torch's own writer reports it as a RuntimeError about
    stream positions)."""
    buffer = io.BytesIO()
    import torch  # here, not at the top: the data commands and compare use this module without torch

    torch.save(payload, buffer)
    return write_atomically(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def sha256_of(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def held(path: str | Path) -> Iterator[None]:
    """Hold a shared lock on ``path`` (a file or a folder) while this run uses it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def abandoned(path: str | Path) -> bool:
    """Whether no running process holds ``path`` (see :func:`held`): its run was killed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def remove_abandoned(paths: Iterable[Path]) -> None:
    """Delete the files and folders among ``paths`` that no running process holds."""
    for path in paths:
        if abandoned(path):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def staging_pattern(target: Path) -> str:
    """The glob of :func:`staged_folder`'s staging folders for ``target``."""
    return f".{glob.escape(target.name)}.{'?' * 8}.tmp"


@contextmanager
def staged_folder(target: str | Path, last: str | None = None) -> Iterator[Path]:
    """A folder to write a set of outputs into; on success they are moved into ``target`` together.

    The staging folder ``.<target name>.XXXXXXXX.tmp`` lies beside ``target`` (so the moves are
    renames on one filesystem) and is held (:func:`held`) while in use; staging folders of killed
    runs are deleted first. On success its contents move into ``target``: in one rename when
    ``target`` does not exist yet, otherwise entry by entry (``last`` -- e.g. the file that
    vouches for the others -- last), leaving anything else in ``target`` alone. On an error
    nothing is moved and the staging folder is deleted.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(p for p in target.parent.glob(staging_pattern(target)) if p.is_dir())
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with held(staging):
            yield staging
            os.chmod(staging, 0o755)  # mkdtemp makes it 0700; an output folder is ordinary
            if not os.path.lexists(target):
                os.rename(staging, target)
                return
            for path in sorted(staging.iterdir(), key=lambda p: p.name == last):
                destination = target / path.name
                if path.is_dir() and destination.is_dir():
                    shutil.rmtree(destination)
                os.replace(path, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once published whole
