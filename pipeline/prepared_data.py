"""Reading the prepared datasets (``data/prepared/*.npz``, written by :mod:`pipeline.prepare`).

Kept apart from the ``prepare`` stage so that the stages which only *read* the data (training,
evaluation) do not depend on the code that downloads and converts it.

Images are stored as uint8 pixels; the model sees pixel / 256 (:data:`PIXEL_SCALE`), as the
authors' code did (``mnist.pkl.gz`` holds exactly float32(pixel) / 256).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

PIXEL_SCALE = 256.0
PREPARED_NAMES = ("mnist", "mnist_ntrain1000", "frey_face")


class UnknownDatasetError(ValueError):
    """A dataset name the suite does not know."""


def load_prepared(name: str, prepared_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of one prepared file (``mnist``, ``mnist_ntrain1000`` or ``frey_face``)."""
    path = Path(prepared_dir) / f"{name}.npz"
    if not path.is_file():
        if name.startswith("mnist_ntrain") or name in PREPARED_NAMES:
            raise FileNotFoundError(f"{path} not found: run `vaebench data prepare` (or `dvc repro prepare`)")
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: {', '.join(PREPARED_NAMES)}")
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}
