"""The ``download`` stage: fetch each source file from a mirror or its canonical URL, verified.

For each file the sources are tried in order: the mirrors in ``$VAEBENCH_DATA_MIRRORS``
(``os.pathsep``-separated), the mirrors in params.yaml ``data.mirrors``, then the file's canonical
URLs. A mirror is a local folder or a URL prefix; the file name is appended. Each candidate is
streamed into a temporary file beside the target while its sha256 is computed, and renamed into
place only when size and sha256 match the values in ``dataset_sources``. Otherwise the temporary
file is deleted and the next source is tried. Nothing waits on the network longer than the
timeout. If no source verifies, :class:`DataDownloadError` names the file, the expected hash and
what every source gave.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

from tqdm import tqdm

from .dataset_sources import SOURCE_FILES, SourceFile
from .files import sha256_of, write_json

MIRRORS_ENV = "VAEBENCH_DATA_MIRRORS"
CHUNK = 1 << 20


class DataDownloadError(RuntimeError):
    """No source gave a file with the expected sha256."""


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


def copy_and_hash(stream: BinaryIO, target: BinaryIO, total: int | None, label: str, show: bool) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not show, leave=False) as bar:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
            target.write(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    return digest.hexdigest(), size


def try_source(source: SourceFile, location: str, target: Path, timeout: float) -> Attempt:
    """Fetch ``location`` into a temporary file; rename it to ``target`` only if it verifies."""
    handle, tmp_name = tempfile.mkstemp(prefix=f".{source.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                stream, length = open_source(location, timeout)
            except Exception as err:  # unreachable host, missing file, HTTP error, timeout
                return Attempt(location, f"unavailable ({type(err).__name__}: {err})")
            with stream:
                try:
                    actual, size = copy_and_hash(stream, out, length, source.name, "://" in location)
                except Exception as err:  # connection dropped mid-file
                    return Attempt(location, f"failed while reading ({type(err).__name__}: {err})")
        if size != source.bytes or actual != source.sha256:
            kind = "truncated" if size < source.bytes else "checksum mismatch"
            return Attempt(
                location, f"{kind}: got {size:,} bytes with sha256 {actual}, expected {source.bytes:,} bytes"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        return Attempt(location, "verified")
    finally:
        tmp.unlink(missing_ok=True)


def fetch_verified(source: SourceFile, raw_dir: Path, mirrors: Iterable[str], timeout: float) -> dict:
    """Make ``raw_dir/<name>`` a verified copy of ``source``; returns where it came from."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    target = raw_dir / source.name
    attempts, corrupt = [], None
    if target.exists():
        actual = sha256_of(target)
        if actual == source.sha256:
            return {"file": source.name, "sha256": actual, "source": "already present"}
        corrupt = target.with_name(target.name + ".corrupt")
        os.replace(target, corrupt)
        attempts.append(Attempt(str(target), f"existing file had sha256 {actual}; moved to {corrupt.name}"))
    for location in candidate_sources(source, mirrors):
        attempt = try_source(source, location, target, timeout)
        attempts.append(attempt)
        if attempt.outcome == "verified":
            if corrupt is not None:  # a verified copy replaced it: the wrong bytes are not kept
                corrupt.unlink(missing_ok=True)
            return {"file": source.name, "sha256": source.sha256, "source": location}
    tried = "\n".join(str(a) for a in attempts)
    raise DataDownloadError(
        f"could not obtain a verified copy of {source.name} (expected sha256 {source.sha256}, "
        f"{source.bytes:,} bytes). Sources tried:\n{tried}\n"
        f"Fix: point {MIRRORS_ENV} (or data.mirrors in params.yaml) at a folder holding a verified "
        f"copy, e.g. export {MIRRORS_ENV}=$PWD/../shared/data"
    )


def download_all(raw_dir: str | Path, mirrors: Iterable[str], timeout_seconds: float) -> dict:
    """Fetch every source file into ``raw_dir`` and write ``download_report.json`` there."""
    raw_dir = Path(raw_dir)
    mirrors = list(mirrors)
    report = {name: fetch_verified(source, raw_dir, mirrors, timeout_seconds)
              for name, source in SOURCE_FILES.items()}
    write_json(raw_dir / "download_report.json", report)
    return report

