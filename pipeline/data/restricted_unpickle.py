"""Unpickle the dataset files while admitting nothing but numpy array reconstruction.

A pickle can run arbitrary code when loaded. The dataset pickles are only ever loaded after their
sha256 verified, and even then through this unpickler, which refuses every global except the
three numpy needs to rebuild an ndarray (as the two files here use, written by numpy 1.x).
"""
from __future__ import annotations

import pickle
from typing import BinaryIO
from pipeline.plumbing.errors import UserError

ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """The pickle asked for a global outside the numpy-array allow-list."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed in dataset "
                f"files (the file is not what the suite expects)"
            )
        return super().find_class(module, name)


def load_numpy_pickle(handle: BinaryIO):
    """Load a latin1 (Python 2) pickle holding numpy arrays, refusing anything else."""
    return NumpyOnlyUnpickler(handle, encoding="latin1").load()
