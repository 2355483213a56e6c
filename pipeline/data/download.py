"""The ``download`` stage: fetch each source file from a mirror or its canonical URL, verified.

For each file the sources are tried in order: the mirrors in ``$VAEBENCH_DATA_MIRRORS``
(``os.pathsep``-separated), the mirrors in params.yaml ``data.mirrors``, then the file's canonical
URLs. A mirror is a local folder or a URL prefix; the file name is appended. Each candidate is
streamed into a temporary file beside the target while its sha256 is computed, and renamed into
place only when size and sha256 match the values in ``dataset_sources``. Otherwise the temporary
file is deleted and the next source is tried. If no source verifies, :class:`DataDownloadError`
names the file, the expected hash and what every source gave.

Bounded in time: one read waits at most ``data.download_timeout_seconds`` (a stalled source), and
one source gets at most ``data.download_deadline_seconds`` of wall-clock time in all (a source
that trickles a byte at a time never trips a read timeout); past it the source is abandoned.

What lands in ``raw_dir`` (the DVC output ``data/raw``) depends only on the verified files: the
files themselves and ``download_report.json`` with each file's name, size and sha256. Where a file
came from is printed, not recorded, so the folder's hash does not depend on how a mirror path was
spelled. Everything else a run may leave there is named so that ``.dvcignore`` keeps it out of the
hash: the temporaries ``.<name>.*.part`` (and ``.download_report.json.*.tmp``), and
``<name>.corrupt``, an earlier copy that failed verification, kept aside (not deleted: it is the
user's only copy) until a verified copy is in place, then removed. A run holds a lock on each of
its temporaries; the next run deletes those whose lock is free, i.e. whose run was killed.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import tempfile
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, TypeVar

from tqdm import tqdm

from pipeline.data.sources import SOURCE_FILES, SourceFile
from pipeline.plumbing.files import held, remove_abandoned, sha256_of, write_json
from pipeline.plumbing.errors import UserError

MIRRORS_ENV = "VAEBENCH_DATA_MIRRORS"
CHUNK = 1 << 20
T = TypeVar("T")


class DataDownloadError(UserError, RuntimeError):
    """No source gave a file with the expected sha256, or the files cannot be written."""


class SourceFailed(Exception):
    """One source did not deliver the file; the message says how."""


@dataclass
class Attempt:
    source: str
    outcome: str  # "verified", or what went wrong

    def __str__(self) -> str:
        return f"  - {self.source}: {self.outcome}"


URL_SCHEMES = ("http", "https", "file")


def split_mirror_list(value: str, separator: str = os.pathsep) -> list[str]:
    """Split an ``os.pathsep``-separated list of mirrors, keeping URLs whole.

    On POSIX the separator is ``:``, which URLs contain too: ``http://host:8000/data:/srv/data`` is
    the two mirrors ``http://host:8000/data`` and ``/srv/data``. A scheme name followed by ``//...``
    is rejoined with it, and so is a port number right after the host.
    """
    parts, entries, i = value.split(separator), [], 0
    while i < len(parts):
        entry = parts[i].strip()
        if (separator == ":" and entry.lower() in URL_SCHEMES
                and i + 1 < len(parts) and parts[i + 1].startswith("//")):
            i += 1
            entry = f"{entry}:{parts[i]}"
            host_only = "/" not in parts[i][2:]
            if host_only and i + 1 < len(parts) and re.match(r"\d+(/|$)", parts[i + 1]):
                i += 1
                entry = f"{entry}:{parts[i]}"
        if entry.strip():
            entries.append(entry.strip())
        i += 1
    return entries


def mirrors_from(params_mirrors: Iterable[str] | None, environ=os.environ) -> list[str]:
    """Mirrors in the order they are tried: the environment variable first, then params.yaml."""
    from_env = split_mirror_list(environ.get(MIRRORS_ENV, ""))
    return from_env + [str(m) for m in (params_mirrors or [])]


def candidate_sources(source: SourceFile, mirrors: Iterable[str]) -> list[str]:
    """Every place the file may come from: each mirror joined with the name, then canonical URLs."""
    candidates = []
    for mirror in mirrors:
        if "://" in mirror:
            candidates.append(mirror.rstrip("/") + "/" + source.name)
        else:
            candidates.append(str(Path(mirror) / source.name))
    return candidates + list(source.canonical_urls)


def open_source(location: str, timeout: float) -> tuple[BinaryIO, int | None]:
    """An open binary stream and its length (if known) for a local path or a URL."""
    if "://" in location:
        response = urllib.request.urlopen(location, timeout=timeout)  # noqa: S310 (http/https/file)
        length = response.headers.get("Content-Length")
        return response, int(length) if length else None
    path = Path(location)
    if not path.is_file():
        raise FileNotFoundError(f"no such file {path.resolve()}")
    return open(path, "rb"), path.stat().st_size


def copy_and_hash(stream: BinaryIO, target: BinaryIO, total: int | None, label: str, show: bool,
                  stop: threading.Event) -> tuple[str, int]:
    """Copy ``stream`` to ``target``, returning its sha256 and size; gives up once ``stop`` is set.

    ``read1`` returns whatever one read brings, so a trickling source is checked on every byte.
    """
    digest, size = hashlib.sha256(), 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not show, leave=False) as bar:
        for chunk in iter(lambda: stream.read1(CHUNK), b""):
            if stop.is_set():
                break
            digest.update(chunk)
            target.write(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    return digest.hexdigest(), size


def fetch(location: str, target: BinaryIO, timeout: float, label: str, stop: threading.Event) -> tuple[str, int]:
    """Stream ``location`` into ``target``: its sha256 and size, or :class:`SourceFailed`."""
    try:
        stream, length = open_source(location, timeout)
    except Exception as err:  # unreachable host, missing file, HTTP error, timeout
        raise SourceFailed(f"unavailable ({type(err).__name__}: {err})") from err
    with stream:
        try:
            return copy_and_hash(stream, target, length, label, "://" in location, stop)
        except Exception as err:  # connection dropped mid-file
            raise SourceFailed(f"failed while reading ({type(err).__name__}: {err})") from err


def within_deadline(work: Callable[[threading.Event], T], seconds: float, grace: float) -> T:
    """``work(stop)``'s result, or :class:`SourceFailed` when it runs past ``seconds`` of wall clock.

    The work runs in a daemon thread so that nothing it blocks on (a name lookup, a trickle of
    headers or bytes) can hold the download past the deadline. Once abandoned, ``stop`` is set and
    the thread gives up at its next read (clearing its progress bar); it is waited for at most
    ``grace`` seconds more (one read timeout), then left behind.
    """
    outcome: dict = {}
    stop = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = work(stop)
        except Exception as err:  # handed to the caller below
            outcome["error"] = err

    worker = threading.Thread(target=run, name="vaebench-download", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        stop.set()
        worker.join(grace)
        raise SourceFailed(f"abandoned after {seconds:g} s (raise data.download_deadline_seconds for a slow link)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def try_source(source: SourceFile, location: str, target: Path, timeout: float, deadline: float) -> Attempt:
    """Fetch ``location`` into a temporary file; rename it to ``target`` only if it verifies."""
    handle, tmp_name = tempfile.mkstemp(prefix=f".{source.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out, held(tmp):  # in use: see remove_abandoned_temporaries
            actual, size = within_deadline(
                lambda stop: fetch(location, out, timeout, source.name, stop), deadline, grace=timeout
            )
        if size != source.bytes or actual != source.sha256:
            kind = "truncated" if size < source.bytes else "checksum mismatch"
            return Attempt(
                location, f"{kind}: got {size:,} bytes with sha256 {actual}, expected {source.bytes:,} bytes"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        return Attempt(location, "verified")
    except SourceFailed as failure:
        return Attempt(location, str(failure))
    finally:
        tmp.unlink(missing_ok=True)


def quarantine_path(target: Path) -> Path:
    """Where a copy of ``target`` that failed verification is kept until a verified one lands."""
    return target.with_name(target.name + ".corrupt")


def fetch_verified(source: SourceFile, raw_dir: Path, mirrors: Iterable[str], timeout: float,
                   deadline: float) -> dict:
    """Make ``raw_dir/<name>`` a verified copy of ``source``; returns its report entry and source."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    target = raw_dir / source.name
    location = obtain(source, target, mirrors, timeout, deadline)
    quarantine_path(target).unlink(missing_ok=True)  # a verified copy is in place: the wrong bytes go
    return {**report_entry(source), "source": location}


def obtain(source: SourceFile, target: Path, mirrors: Iterable[str], timeout: float, deadline: float) -> str:
    """Where the verified ``target`` came from (``already present`` when it was there already)."""
    attempts = []
    if target.exists():
        actual = sha256_of(target)
        if actual == source.sha256:
            return "already present"
        corrupt = quarantine_path(target)
        os.replace(target, corrupt)
        attempts.append(Attempt(str(target), f"existing file had sha256 {actual}; moved to {corrupt.name}"))
    for location in candidate_sources(source, mirrors):
        attempt = try_source(source, location, target, timeout, deadline)
        attempts.append(attempt)
        if attempt.outcome == "verified":
            return location
    tried = "\n".join(str(a) for a in attempts)
    raise DataDownloadError(
        f"could not obtain a verified copy of {source.name} (expected sha256 {source.sha256}, "
        f"{source.bytes:,} bytes). Sources tried:\n{tried}\n"
        f"Fix: point {MIRRORS_ENV} (or data.mirrors in params.yaml) at a folder holding a verified "
        f"copy, e.g. export {MIRRORS_ENV}=$PWD/../shared/data"
    )


def report_entry(source: SourceFile) -> dict:
    """What ``download_report.json`` records of a verified file: nothing that depends on its source."""
    return {"file": source.name, "bytes": source.bytes, "sha256": source.sha256}


def remove_abandoned_temporaries(raw_dir: Path) -> None:
    """Delete the ``.<name>.XXXXXXXX.part`` files (``try_source``'s) that killed runs left in ``raw_dir``."""
    for name in SOURCE_FILES:
        remove_abandoned(raw_dir.glob(f".{glob.escape(name)}.{'?' * 8}.part"))


def download_all(raw_dir: str | Path, mirrors: Iterable[str], timeout_seconds: float,
                 deadline_seconds: float) -> dict:
    """Fetch every source file into ``raw_dir`` and write ``download_report.json`` there.

    First removes the temporaries that killed runs left there. Returns each file's report entry
    plus where it came from (``source``), for the caller to print. A ``raw_dir`` that cannot be a
    writable folder is a :class:`DataDownloadError` naming it.
    """
    raw_dir = Path(raw_dir)
    mirrors = list(mirrors)
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        remove_abandoned_temporaries(raw_dir)
        fetched = {name: fetch_verified(source, raw_dir, mirrors, timeout_seconds, deadline_seconds)
                   for name, source in SOURCE_FILES.items()}
        report = {name: report_entry(source) for name, source in SOURCE_FILES.items()}
        write_json(raw_dir / "download_report.json", report)
    except OSError as err:
        raise DataDownloadError(
            f"cannot write to {raw_dir} ({err.strerror}: {err.filename2 or err.filename or raw_dir}). "
            f"Fix: make it a writable folder (no part of the path may be a file) or pass another "
            f"with --raw-dir (data.raw_dir)"
        ) from err
    return fetched
