"""The download and prepare stages against good, corrupt, truncated and missing sources."""
import gzip
import hashlib
import io
import os
import pickle
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.data.sources import SourceFile
from pipeline.data.download import DataDownloadError, download_all, fetch_verified, mirrors_from, split_mirror_list
from pipeline.data.prepare import DataPrepareError, frey_face_split, prepare_all
from pipeline.data.prepared import UnknownDatasetError, load_prepared
from pipeline.data.restricted_unpickle import UnsafePickleError, load_numpy_pickle

from .conftest import SHARED_DATA

PAYLOAD = b"the expected bytes of a small dataset file\n" * 100


def fake_source(payload=PAYLOAD, name="tiny.bin", urls=()):
    return SourceFile(name=name, dataset="tiny", bytes=len(payload),
                      sha256=hashlib.sha256(payload).hexdigest(), canonical_urls=tuple(urls))


def mirror_with(tmp_path, folder, content, name="tiny.bin"):
    mirror = tmp_path / folder
    mirror.mkdir()
    (mirror / name).write_bytes(content)
    return str(mirror)


def leftovers(raw_dir):
    return sorted(p.name for p in Path(raw_dir).iterdir()) if Path(raw_dir).exists() else []


def test_a_good_mirror_verifies_and_lands(tmp_path):
    source = fake_source()
    good = mirror_with(tmp_path, "good", PAYLOAD)
    result = fetch_verified(source, tmp_path / "raw", [good], timeout=1, deadline=10)
    assert (tmp_path / "raw" / "tiny.bin").read_bytes() == PAYLOAD
    assert result["source"].startswith(good) and leftovers(tmp_path / "raw") == ["tiny.bin"]
    again = fetch_verified(source, tmp_path / "raw", [], timeout=1, deadline=10)
    assert again["source"] == "already present"


@pytest.mark.parametrize("content, kind", [
    (PAYLOAD[:-1] + b"X", "checksum mismatch"),
    (PAYLOAD[: len(PAYLOAD) // 2], "truncated"),
])
def test_a_bad_file_is_refused_with_a_clear_message_and_nothing_left(tmp_path, content, kind):
    source = fake_source()
    bad = mirror_with(tmp_path, "bad", content)
    with pytest.raises(DataDownloadError) as info:
        fetch_verified(source, tmp_path / "raw", [bad], timeout=1, deadline=10)
    message = str(info.value)
    assert "tiny.bin" in message and source.sha256 in message
    assert hashlib.sha256(content).hexdigest() in message and kind in message
    assert bad in message and "VAEBENCH_DATA_MIRRORS" in message
    assert leftovers(tmp_path / "raw") == []


def test_no_source_at_all_fails_fast_naming_every_source(tmp_path):
    source = fake_source(urls=("http://127.0.0.1:9/tiny.bin",))
    start = time.perf_counter()
    with pytest.raises(DataDownloadError) as info:
        fetch_verified(source, tmp_path / "raw", [str(tmp_path / "nowhere")], timeout=2, deadline=10)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "http://127.0.0.1:9/tiny.bin" in message
    assert leftovers(tmp_path / "raw") == []


def test_first_source_bad_second_good(tmp_path):
    source = fake_source()
    bad = mirror_with(tmp_path, "bad", b"nonsense")
    good = mirror_with(tmp_path, "good", PAYLOAD)
    result = fetch_verified(source, tmp_path / "raw", [bad, good], timeout=1, deadline=10)
    assert result["source"].startswith(good)
    assert leftovers(tmp_path / "raw") == ["tiny.bin"]


def test_a_corrupt_existing_file_is_replaced(tmp_path):
    source = fake_source()
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "tiny.bin").write_bytes(b"corrupted earlier")
    fetch_verified(source, raw, [mirror_with(tmp_path, "good", PAYLOAD)], timeout=1, deadline=10)
    assert (raw / "tiny.bin").read_bytes() == PAYLOAD and leftovers(raw) == ["tiny.bin"]


def test_a_corrupt_existing_file_is_kept_aside_when_nothing_verifies(tmp_path):
    source = fake_source()
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "tiny.bin").write_bytes(b"corrupted earlier")
    with pytest.raises(DataDownloadError, match="moved to tiny.bin.corrupt"):
        fetch_verified(source, raw, [], timeout=1, deadline=10)
    assert leftovers(raw) == ["tiny.bin.corrupt"]


def test_mirrors_from_environment_come_first():
    env = {"VAEBENCH_DATA_MIRRORS": os.pathsep.join(["/a", "/b"])}
    assert mirrors_from(["../shared/data"], env) == ["/a", "/b", "../shared/data"]


def test_a_mirror_list_keeps_urls_with_ports_whole():
    value = "http://host:8000/data:/srv/data:https://example.org/mnist:file:///tmp/m:http://h:81"
    assert split_mirror_list(value, ":") == [
        "http://host:8000/data", "/srv/data", "https://example.org/mnist", "file:///tmp/m", "http://h:81"]


def test_file_url_mirror(tmp_path):
    source = fake_source()
    folder = mirror_with(tmp_path, "m", PAYLOAD)
    fetch_verified(source, tmp_path / "raw", [Path(folder).as_uri()], timeout=1, deadline=10)
    assert (tmp_path / "raw" / "tiny.bin").read_bytes() == PAYLOAD


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_the_restricted_unpickler_refuses_code_and_admits_arrays(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match="posix.system|os.system|nt.system"):
        load_numpy_pickle(io.BytesIO(pickle.dumps([Exploit(marker)], protocol=2)))
    assert not marker.exists()
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(load_numpy_pickle(io.BytesIO(pickle.dumps(array, protocol=3))), array)


def test_prepare_refuses_a_raw_file_with_the_wrong_hash(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "mnist.pkl.gz").write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(DataPrepareError, match="vaebench data download"):
        prepare_all(raw, tmp_path / "prepared", 1000, 1600, 1)


def test_prepare_refuses_an_unsafe_pickle_even_with_a_matching_hash(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    marker = tmp_path / "pwned"
    payload = gzip.compress(pickle.dumps(Exploit(marker), protocol=2))
    (raw / "mnist.pkl.gz").write_bytes(payload)
    from pipeline.data import prepare as prepare_module
    forged = replace(prepare_module.MNIST_PKL, sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload))
    monkeypatch.setattr(prepare_module, "MNIST_PKL", forged)
    with pytest.raises(UnsafePickleError):
        prepare_all(raw, tmp_path / "prepared", 1000, 1600, 1)
    assert not marker.exists()


def test_frey_face_split_is_seeded_disjoint_and_complete():
    train, test = frey_face_split(1965, 1600, 7)
    again_train, _ = frey_face_split(1965, 1600, 7)
    other_train, _ = frey_face_split(1965, 1600, 8)
    assert np.array_equal(train, again_train) and not np.array_equal(train, other_train)
    assert len(train) == 1600 and len(test) == 365
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1965))


def test_load_prepared_names_the_known_datasets(tmp_path):
    with pytest.raises(UnknownDatasetError, match="mnist, mnist_ntrain1000, frey_face"):
        load_prepared("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match="vaebench data prepare"):
        load_prepared("mnist", tmp_path)


@pytest.fixture(scope="module")
def real_prepared(tmp_path_factory):
    if not (SHARED_DATA / "mnist.pkl.gz").exists():
        pytest.skip(f"no data mirror at {SHARED_DATA}")
    root = tmp_path_factory.mktemp("real")
    download_all(root / "raw", [str(SHARED_DATA)], timeout_seconds=2, deadline_seconds=60)
    prepare_all(root / "raw", root / "prepared", 1000, 1600, 20131220)
    return root


def test_prepare_on_the_real_files(real_prepared):
    prepared = real_prepared / "prepared"
    mnist = load_prepared("mnist", prepared)
    assert mnist["train_x"].shape == (50_000, 784) and mnist["valid_x"].shape == (10_000, 784)
    assert mnist["test_x"].shape == (10_000, 784) and mnist["train_x"].dtype == np.uint8
    subset = load_prepared("mnist_ntrain1000", prepared)
    assert np.array_equal(subset["train_x"], mnist["train_x"][:1000])
    frey = load_prepared("frey_face", prepared)
    assert frey["train_x"].shape == (1600, 560) and frey["test_x"].shape == (365, 560)
    with gzip.open(SHARED_DATA / "mnist.pkl.gz", "rb") as handle:
        (train_x, _), _, _ = load_numpy_pickle(handle)
    np.testing.assert_array_equal(mnist["train_x"][:100] / np.float32(256), train_x[:100])


def test_prepare_writes_the_same_bytes_every_time(real_prepared, tmp_path):
    time.sleep(2.1)  # zip timestamps have a 2-second resolution: a clock-stamped archive would differ
    (tmp_path / "notes.txt").write_text("not prepare's\n")  # into an existing folder: others' files stay
    prepare_all(real_prepared / "raw", tmp_path, 1000, 1600, 20131220)
    for name in ("mnist.npz", "mnist_ntrain1000.npz", "frey_face.npz", "datasets.json"):
        assert (tmp_path / name).read_bytes() == (real_prepared / "prepared" / name).read_bytes(), name
    assert (tmp_path / "notes.txt").read_text() == "not prepare's\n"


# The training results depend on these bytes (and dvc.lock records them): a change is deliberate.
PREPARED_SHA256 = {
    "mnist.npz": "9c1b92d1ec4c73b608debfbe9eb82fe3007b4073ac6417a8e7edcaf6a3146edd",
    "mnist_ntrain1000.npz": "00d4ee7c1965986b6bd82b3db5cafda460ad0851058599e50a3bc4ad158ac5a9",
    "frey_face.npz": "45ea615baf28ee8076e581359cc91f8e1e081d564c04618eeaa274c4893e59ac",
}


def test_the_prepared_files_keep_their_bytes(real_prepared):
    for name, expected in PREPARED_SHA256.items():
        assert hashlib.sha256((real_prepared / "prepared" / name).read_bytes()).hexdigest() == expected, name


def test_cli_download_reports_a_clear_error_without_traceback(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data: {raw_dir: %s, mirrors: [%s], download_timeout_seconds: 1,"
                      " download_deadline_seconds: 5}\n" % (tmp_path / "raw", tmp_path / "empty"))
    result = CliRunner(env={"VAEBENCH_DATA_MIRRORS": ""}).invoke(
        main, ["data", "download", "--params", str(params)])
    assert result.exit_code == 1 and "could not obtain a verified copy" in result.output
    assert "Traceback" not in result.output
