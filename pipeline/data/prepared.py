"""Reading the prepared datasets (``data/prepared/*.npz``, written by :mod:`pipeline.data.prepare`).

Kept apart from the ``prepare`` stage so that the stages which only *read* the data (training,
evaluation) do not depend on the code that downloads and converts it.

A prepared file is read only after its sha256 matches the one ``prepare`` recorded in
``datasets.json`` beside it, so a truncated, edited or stale file (or one left by a ``prepare``
killed while moving its outputs into place) is reported, never trained on: a
:class:`PreparedDataError` (a ``ValueError``, which the commands print as a one-line ``Error:``)
names the file and says to re-run ``prepare``. Hashing ``mnist.npz`` (about 50 MB) takes about a
tenth of a second.

Images are stored as uint8 pixels; the model sees pixel / 256 (:data:`PIXEL_SCALE`), as the
authors' code did (``mnist.pkl.gz`` holds exactly float32(pixel) / 256).
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

PIXEL_SCALE = 256.0
PREPARED_NAMES = ("mnist", "mnist_ntrain1000", "frey_face")
INDEX = "datasets.json"
RERUN = "re-run `vaebench data prepare` (or `dvc repro prepare`)"


class UnknownDatasetError(ValueError):
    """A dataset name the suite does not know."""


class PreparedDataError(ValueError):
    """A prepared file is damaged, stale or cannot be checked."""


def recorded_sha256(name: str, prepared_dir: Path) -> str:
    """The sha256 of ``<name>.npz`` as recorded in ``datasets.json`` by the ``prepare`` that wrote it."""
    index = prepared_dir / INDEX
    try:
        entries = json.loads(index.read_text())
    except FileNotFoundError:
        raise PreparedDataError(f"{index} is missing, so {name}.npz cannot be checked: {RERUN}") from None
    except (OSError, ValueError) as err:
        raise PreparedDataError(f"{index} cannot be read ({err}): {RERUN}") from err
    entry = entries.get(name) if isinstance(entries, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise PreparedDataError(f"{index} does not list {name}.npz (stale or edited): {RERUN}")
    return entry["sha256"]


def verified_bytes(path: Path) -> bytes:
    """The bytes of a prepared file, after checking them against ``datasets.json`` beside it."""
    expected = recorded_sha256(path.stem, path.parent)
    try:
        content = path.read_bytes()
    except OSError as err:
        raise PreparedDataError(f"{path} cannot be read ({err.strerror}): {RERUN}") from err
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise PreparedDataError(
            f"{path} has sha256 {actual}, but {path.parent / INDEX} records {expected}: the file is "
            f"damaged or stale; {RERUN}"
        )
    return content


def load_prepared(name: str, prepared_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of one prepared file (``mnist``, ``mnist_ntrain1000`` or ``frey_face``), verified."""
    path = Path(prepared_dir) / f"{name}.npz"
    if not path.is_file():
        if name.startswith("mnist_ntrain") or name in PREPARED_NAMES:
            raise FileNotFoundError(f"{path} not found: run `vaebench data prepare` (or `dvc repro prepare`)")
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: {', '.join(PREPARED_NAMES)}")
    content = verified_bytes(path)
    try:
        with np.load(io.BytesIO(content)) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise PreparedDataError(f"{path} cannot be decoded ({type(err).__name__}: {err}): {RERUN}") from err
