import os
import sys
from pathlib import Path

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # as pipeline/__init__.py, before torch starts MKL

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(1234)
    yield


def write_prepared(prepared_dir, name, **arrays):
    """A prepared ``<name>.npz`` of the given arrays, recorded in ``datasets.json`` beside it as
    ``vaebench data prepare`` records its outputs (the readers check the file against it)."""
    import json

    import numpy as np

    from pipeline.files import sha256_of

    prepared_dir = Path(prepared_dir)
    prepared_dir.mkdir(parents=True, exist_ok=True)
    path = prepared_dir / f"{name}.npz"
    np.savez(path, **arrays)
    index_path = prepared_dir / "datasets.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    index[name] = {"sha256": sha256_of(path)}
    index_path.write_text(json.dumps(index))
    return path
