"""The ``prepare`` stage: verified pickles in, ``.npz`` splits out (data/prepared).

- ``mnist.npz``: the authors' split of ``mnist.pkl.gz``: 50,000 train (the first 50,000 official
  training images), 10,000 valid (the last 10,000), 10,000 test (the official test set).
- ``mnist_ntrain1000.npz``: Figure 3's Ntrain = 1,000 training set. The paper does not say which
  1,000; we take the **first** 1,000 training images (``data.mnist.subset_ntrain``), which are also
  the first 1,000 training points the paper evaluates the marginal likelihood on (Appendix E).
- ``frey_face.npz``: the paper gives no split; a seeded permutation
  (``numpy.random.default_rng(data.frey_face.split_seed)``) of the 1,965 faces, the first
  ``data.frey_face.train_size`` (1,600) for training and the other 365 for testing (the authors'
  later script split 1,600 / 365).
- ``datasets.json``: shapes, file hashes and split parameters.

Images are stored as uint8 pixels; the model sees pixel / 256 (``PIXEL_SCALE``), as the authors'
code did (``mnist.pkl.gz`` holds exactly float32(pixel) / 256).

The outputs of a stage appear together or not at all. Nothing is written until both raw files
verified and decoded; the files are then written into a staging folder beside ``prepared_dir``
(``.<name>.*.tmp``) and moved into place: in one rename when ``prepared_dir`` does not exist (as
under ``dvc repro``, which deletes a stage's outputs first), otherwise file by file with
``datasets.json`` last, leaving any other file there alone. A reader checks every file against
``datasets.json`` (:func:`pipeline.data.prepared.load_prepared`), so a run killed amid those renames
is reported, not read. A run holds a lock on its staging folder; the next run deletes staging
folders whose lock is free (their run was killed). A failure to write names the folder and the fix.
"""
from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np

from pipeline.data.sources import FREY_FACE_PKL, MNIST_PKL, ArrayExpectation, SourceFile
from pipeline.plumbing.files import sha256_of, staged_folder, write_atomically, write_json
from pipeline.data.prepared import INDEX, PIXEL_SCALE
from pipeline.data.restricted_unpickle import load_numpy_pickle
from pipeline.plumbing.errors import UserError

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: .npz bytes do not depend on the clock


class DataPrepareError(UserError, RuntimeError):
    """A raw file or a decoded array is not what the suite expects."""


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def check_array(array: np.ndarray, expected: ArrayExpectation, what: str) -> np.ndarray:
    if array.shape != expected.shape or str(array.dtype) != expected.dtype:
        raise DataPrepareError(
            f"{what}: expected {expected.dtype} {expected.shape}, got {array.dtype} {array.shape}"
        )
    actual = array_sha256(array)
    if actual != expected.sha256:
        raise DataPrepareError(f"{what}: content sha256 {actual} does not match the expected {expected.sha256}")
    return array


def verified_raw_file(raw_dir: Path, source: SourceFile) -> Path:
    path = raw_dir / source.name
    if not path.is_file():
        raise DataPrepareError(f"{path} is missing: run `vaebench data download` (or `dvc repro download`)")
    try:
        actual = sha256_of(path)
    except OSError as err:
        raise DataPrepareError(f"cannot read {path} ({err.strerror}): check its permissions") from err
    if actual != source.sha256:
        raise DataPrepareError(
            f"{path} has sha256 {actual}, expected {source.sha256}: it is not the file the suite "
            f"expects; delete it and run `vaebench data download`"
        )
    return path


def grey_levels_to_pixels(images: np.ndarray, what: str) -> np.ndarray:
    """float32 pixel / 256 back to uint8 pixels, refusing anything that is not exactly that."""
    pixels = images.astype(np.float64) * PIXEL_SCALE
    as_uint8 = pixels.astype(np.uint8)
    if not np.array_equal(as_uint8.astype(np.float64), pixels):
        raise DataPrepareError(f"{what}: values are not exact multiples of 1/256")
    return as_uint8


def load_mnist(raw_dir: Path) -> dict[str, np.ndarray]:
    path = verified_raw_file(raw_dir, MNIST_PKL)
    with gzip.open(path, "rb") as handle:
        splits = load_numpy_pickle(handle)
    arrays = {}
    for split, (images, labels) in zip(("train", "valid", "test"), splits):
        for key, value in ((f"{split}_x", grey_levels_to_pixels(images, f"mnist {split} images")),
                           (f"{split}_y", labels)):
            arrays[key] = check_array(value, MNIST_PKL.arrays[key], f"mnist {key}")
    return arrays


def load_frey_faces(raw_dir: Path) -> np.ndarray:
    path = verified_raw_file(raw_dir, FREY_FACE_PKL)
    with open(path, "rb") as handle:
        (faces,) = load_numpy_pickle(handle)
    return check_array(faces, FREY_FACE_PKL.arrays["faces"], "frey_face faces")


def frey_face_split(n_faces: int, train_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of a seeded permutation of the faces."""
    if not 0 < train_size < n_faces:
        raise DataPrepareError(f"data.frey_face.train_size must be between 1 and {n_faces - 1}, got {train_size}")
    permutation = np.random.default_rng(seed).permutation(n_faces)
    return np.sort(permutation[:train_size]), np.sort(permutation[train_size:])


def write_npz(handle, arrays: dict[str, np.ndarray]) -> None:
    """An ``np.load``-able ``.npz`` whose bytes depend only on the arrays.

    ``np.savez`` stamps each member with the current time, so its file hash (and DVC's) would change
    on every run; here every member carries the fixed :data:`ZIP_EPOCH` timestamp.
    """
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in arrays.items():
            member = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH)
            member.external_attr = 0o644 << 16
            with archive.open(member, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> dict:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            write_npz(handle, arrays)

    write_atomically(path, write)
    return {"sha256": sha256_of(path), "arrays": {k: list(v.shape) for k, v in arrays.items()}}


def prepared_datasets(raw_dir: Path, mnist_subset: int, frey_train_size: int,
                      frey_split_seed: int) -> dict[str, tuple[dict[str, np.ndarray], dict]]:
    """Each prepared file's arrays and its details for ``datasets.json``, from the verified raw files.

    Checks the parameters first and every input before returning; writes nothing.
    """
    n_train = MNIST_PKL.arrays["train_x"].shape[0]
    if not 0 < mnist_subset <= n_train:
        raise DataPrepareError(f"data.mnist.subset_ntrain must be between 1 and {n_train}, got {mnist_subset}")
    train_idx, test_idx = frey_face_split(FREY_FACE_PKL.arrays["faces"].shape[0], frey_train_size, frey_split_seed)
    mnist = load_mnist(raw_dir)
    subset = dict(mnist, train_x=mnist["train_x"][:mnist_subset], train_y=mnist["train_y"][:mnist_subset],
                  train_indices=np.arange(mnist_subset))
    faces = load_frey_faces(raw_dir)
    frey = {"train_x": faces[train_idx], "test_x": faces[test_idx],
            "train_indices": train_idx, "test_indices": test_idx}
    return {
        "mnist": (mnist, {"source": MNIST_PKL.sha256}),
        f"mnist_ntrain{mnist_subset}": (subset, {"source": MNIST_PKL.sha256,
                                                 "subset": f"first {mnist_subset} training images"}),
        "frey_face": (frey, {"source": FREY_FACE_PKL.sha256, "split_seed": frey_split_seed,
                             "train_size": frey_train_size}),
    }


def write_prepared(datasets: dict[str, tuple[dict[str, np.ndarray], dict]], prepared_dir: Path) -> dict:
    """Write every prepared file and ``datasets.json`` into a staging folder, then publish them."""
    with staged_folder(prepared_dir, last=INDEX) as staging:
        summary = {"pixel_scale": PIXEL_SCALE}
        for name, (arrays, details) in datasets.items():
            summary[name] = {**save_npz(staging / f"{name}.npz", arrays), **details}
        write_json(staging / INDEX, summary)
    return summary


def prepare_all(raw_dir: str | Path, prepared_dir: str | Path, mnist_subset: int,
                frey_train_size: int, frey_split_seed: int) -> dict:
    """Verify every input, then write every prepared file and ``datasets.json`` together.

    Returns the summary written to ``datasets.json``. A ``prepared_dir`` that cannot be written is
    a :class:`DataPrepareError` naming it.
    """
    raw_dir, prepared_dir = Path(raw_dir), Path(prepared_dir)
    datasets = prepared_datasets(raw_dir, mnist_subset, frey_train_size, frey_split_seed)
    try:
        return write_prepared(datasets, prepared_dir)
    except OSError as err:
        raise DataPrepareError(
            f"cannot write to {prepared_dir} ({err.strerror}: {err.filename2 or err.filename or prepared_dir}). "
            f"Fix: make it a writable folder (no part of the path may be a file) or pass another "
            f"with --prepared-dir (data.prepared_dir)"
        ) from err
