"""The data stages against a careless or hostile user: every fault ends in a one-line ``Error:``
that names the problem and the fix, or in a clean recovery, with nothing lost.

The numbered sections follow the faults: (1) leftovers of a killed download, (2) a trickling
mirror, (3) data/raw depending on how the mirror was spelled, (4) prepare writing before its
inputs verified, (5) a data folder that cannot be written, (6) a damaged prepared file, (7) the
faults handled before (unknown name, missing raw file, corrupt download, wrong checksum).
"""
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.data import download as download_module
from pipeline.data import prepare as prepare_module
from pipeline.cli import main
from pipeline.data.sources import SourceFile
from pipeline.data.download import DataDownloadError, download_all, fetch_verified
from pipeline.data.prepare import DataPrepareError, prepare_all
from pipeline.data.prepared import UnknownDatasetError, load_prepared

from .conftest import REPO

PAYLOAD = b"the expected bytes of a small dataset file\n" * 100
TINY = SourceFile(name="tiny.bin", dataset="tiny", bytes=len(PAYLOAD),
                  sha256=hashlib.sha256(PAYLOAD).hexdigest(), canonical_urls=())
RERUN = "re-run `vaebench data prepare` (or `dvc repro prepare`)"


@pytest.fixture
def tiny_sources(monkeypatch):
    """The download stage fetches one small file instead of the real datasets."""
    monkeypatch.setattr(download_module, "SOURCE_FILES", {TINY.name: TINY})


@pytest.fixture
def mirror(tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / TINY.name).write_bytes(PAYLOAD)
    return folder


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def write_params(tmp_path, **data) -> Path:
    settings = {"raw_dir": str(tmp_path / "raw"), "prepared_dir": str(tmp_path / "prepared"), "mirrors": [],
                "download_timeout_seconds": 5, "download_deadline_seconds": 60,
                "mnist": {"subset_ntrain": 10}, "frey_face": {"train_size": 1600, "split_seed": 1}}
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps({"data": {**settings, **data}}))  # JSON is YAML
    return path


def run_cli(*args):
    return CliRunner(env={"VAEBENCH_DATA_MIRRORS": ""}).invoke(main, [str(a) for a in args])


def in_order(*fragments) -> str:
    """A regular expression matching the fragments in this order."""
    return ".*".join(re.escape(str(f)) for f in fragments)


def assert_one_line_error(result, *fragments):
    """Exit 1 with click's ``Error:`` (no traceback), the message containing every fragment."""
    shown = result.output.rsplit("\r", 1)[-1]  # what a terminal shows once a progress bar is done
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert shown.startswith("Error: ") and "Traceback" not in shown, result.output
    for fragment in fragments:
        assert str(fragment) in shown, (fragment, result.output)


# (1) leftovers of a killed download ---------------------------------------------------------------

def test_1_download_removes_a_killed_runs_temporary_but_not_a_running_ones(tmp_path, tiny_sources, mirror):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / ".tiny.bin.killed01.part").write_bytes(PAYLOAD[:100])
    running = raw / ".tiny.bin.running0.part"
    running.write_bytes(PAYLOAD[:50])
    with open(running, "rb") as held:  # another download still writing it holds a lock on it
        fcntl.flock(held, fcntl.LOCK_SH)
        download_all(raw, [str(mirror)], timeout_seconds=1, deadline_seconds=10)
        assert names_in(raw) == [".tiny.bin.running0.part", "download_report.json", "tiny.bin"]
    download_all(raw, [], timeout_seconds=1, deadline_seconds=10)
    assert names_in(raw) == ["download_report.json", "tiny.bin"]


def test_1_a_quarantined_copy_goes_once_a_verified_copy_is_in_place(tmp_path, tiny_sources, mirror):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "tiny.bin").write_bytes(b"corrupted earlier")
    with pytest.raises(DataDownloadError, match="moved to tiny.bin.corrupt"):
        download_all(raw, [], timeout_seconds=1, deadline_seconds=10)
    shutil.copy(mirror / "tiny.bin", raw / "tiny.bin")  # the user puts a good copy in place by hand
    download_all(raw, [], timeout_seconds=1, deadline_seconds=10)
    assert names_in(raw) == ["download_report.json", "tiny.bin"]


def test_1_leftovers_do_not_change_the_dvc_hash_of_data_raw(tmp_path):
    from dvc.repo import Repo

    shutil.copy(REPO / ".dvcignore", tmp_path / ".dvcignore")
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "mnist.pkl.gz").write_bytes(PAYLOAD)
    (raw / "download_report.json").write_text("{}\n")
    Repo.init(str(tmp_path), no_scm=True).add(str(raw))
    for leftover in (".mnist.pkl.gz.k1ll3d_x.part", "mnist.pkl.gz.corrupt", ".download_report.json.k1ll3d.tmp"):
        (raw / leftover).write_bytes(b"junk")
    assert Repo(str(tmp_path)).status() == {}


# (2) a trickling mirror ---------------------------------------------------------------------------

class Trickle(BaseHTTPRequestHandler):
    """Announces the whole file, then sends a byte every 50 ms (and gives up after 6 s)."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        give_up = time.monotonic() + 6
        try:
            for byte in PAYLOAD:
                if time.monotonic() > give_up:
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:  # the client abandoned the download
            return

    def log_message(self, *args):
        pass


@pytest.fixture
def trickling_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_2_a_trickling_source_is_abandoned_at_the_deadline_and_the_next_tried(tmp_path, trickling_url, mirror):
    start = time.monotonic()
    result = fetch_verified(TINY, tmp_path / "raw", [trickling_url, str(mirror)], timeout=5, deadline=1)
    assert time.monotonic() - start < 4
    assert result["source"] == str(mirror / "tiny.bin")
    assert names_in(tmp_path / "raw") == ["tiny.bin"]


def test_2_cli_names_the_abandoned_source(tmp_path, tiny_sources, trickling_url):
    params = write_params(tmp_path, mirrors=[trickling_url], download_deadline_seconds=1)
    start = time.monotonic()
    result = run_cli("data", "download", "--params", params)
    assert time.monotonic() - start < 4
    assert_one_line_error(result, f"{trickling_url}/tiny.bin: abandoned after 1 s", "download_deadline_seconds")
    assert names_in(tmp_path / "raw") == []


@pytest.mark.parametrize("value, problem", [
    (0, "must be a positive number"), (-1, "must be a positive number"), ("soon", "must be a positive number"),
    (True, "must be a positive number"), (".inf", "must be a finite number of seconds"),
])
def test_2_cli_refuses_a_deadline_that_is_not_a_positive_number(tmp_path, tiny_sources, mirror, value, problem):
    params = write_params(tmp_path, mirrors=[str(mirror)], download_deadline_seconds=value)
    params.write_text(params.read_text().replace('".inf"', ".inf"))  # YAML's infinity
    assert_one_line_error(run_cli("data", "download", "--params", params), f"data.download_deadline_seconds {problem}")


# (3) data/raw must not depend on where a verified file came from ----------------------------------

def test_3_raw_bytes_do_not_depend_on_how_the_mirror_was_spelled(tmp_path, tiny_sources, mirror, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    spellings = {"absolute": str(mirror), "relative": "../mirror", "url": mirror.as_uri() + "/"}
    for label, spelling in spellings.items():
        download_all(tmp_path / label, [spelling], timeout_seconds=1, deadline_seconds=10)
    contents = [{p.name: p.read_bytes() for p in (tmp_path / label).iterdir()} for label in spellings]
    assert contents[0] == contents[1] == contents[2]
    assert json.loads(contents[0]["download_report.json"]) == {
        "tiny.bin": {"file": "tiny.bin", "bytes": TINY.bytes, "sha256": TINY.sha256}}


def test_3_cli_still_says_where_each_file_came_from(tmp_path, tiny_sources, mirror):
    result = run_cli("data", "download", "--params", write_params(tmp_path, mirrors=[str(mirror)]))
    assert result.exit_code == 0 and f"from {mirror / 'tiny.bin'}" in result.output, result.output
    assert str(mirror) not in (tmp_path / "raw" / "download_report.json").read_text()


# (4) prepare verifies every input before it writes, and its outputs appear together -----------------

@pytest.fixture
def fake_raw(monkeypatch):
    """prepare's inputs as small verified arrays (the real ones take seconds to decode)."""
    rng = np.random.default_rng(0)
    mnist = {f"{split}_{kind}": (rng.integers(0, 256, (n, 784), dtype=np.uint8) if kind == "x"
                                 else rng.integers(0, 10, n))
             for split, n in (("train", 50), ("valid", 10), ("test", 10)) for kind in ("x", "y")}
    faces = rng.integers(0, 256, (1965, 560), dtype=np.uint8)
    monkeypatch.setattr(prepare_module, "load_mnist", lambda raw_dir: dict(mnist))
    monkeypatch.setattr(prepare_module, "load_frey_faces", lambda raw_dir: faces)


def test_4_prepare_with_a_missing_input_creates_nothing(tmp_path):
    params = write_params(tmp_path, prepared_dir=str(tmp_path / "data" / "prepared"))
    assert_one_line_error(run_cli("data", "prepare", "--params", params),
                          tmp_path / "raw" / "mnist.pkl.gz", "vaebench data download")
    assert not (tmp_path / "data").exists()


def test_4_prepare_interrupted_while_writing_leaves_no_output(tmp_path, fake_raw, monkeypatch):
    calls = []

    def full_disk_on_second_file(handle, arrays):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_npz(handle, arrays)

    real_write_npz = prepare_module.write_npz
    monkeypatch.setattr(prepare_module, "write_npz", full_disk_on_second_file)
    with pytest.raises(DataPrepareError, match="no space left on the device"):
        prepare_all(tmp_path / "raw", tmp_path / "prepared", 10, 1600, 1)
    assert names_in(tmp_path) == []


def test_4_prepare_removes_a_killed_runs_staging_folder_but_not_a_running_ones(tmp_path, fake_raw):
    killed, running = tmp_path / ".prepared.k1ll3d_x.tmp", tmp_path / ".prepared.running0.tmp"
    for staging in (killed, running):
        staging.mkdir()
        (staging / "mnist.npz").write_bytes(b"half written")
    held = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_SH)
        prepare_all(tmp_path / "raw", tmp_path / "prepared", 10, 1600, 1)
    finally:
        os.close(held)
    assert names_in(tmp_path) == [".prepared.running0.tmp", "prepared"]
    assert names_in(tmp_path / "prepared") == ["datasets.json", "frey_face.npz", "mnist.npz", "mnist_ntrain10.npz"]


# (5) a data folder that cannot be written -------------------------------------------------------

@pytest.fixture(params=["under a file", "is a file"])
def unwritable(request, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where a folder should be\n")
    return blocker / "data" if request.param == "under a file" else blocker


def test_5_download_into_a_path_that_cannot_be_a_folder(tmp_path, tiny_sources, mirror, unwritable):
    params = write_params(tmp_path, mirrors=[str(mirror)])
    result = run_cli("data", "download", "--params", params, "--raw-dir", unwritable)
    assert_one_line_error(result, f"cannot write to {unwritable}", "--raw-dir")
    assert (tmp_path / "blocker").is_file()


def test_5_prepare_into_a_path_that_cannot_be_a_folder(tmp_path, fake_raw, unwritable):
    result = run_cli("data", "prepare", "--params", write_params(tmp_path), "--prepared-dir", unwritable)
    assert_one_line_error(result, f"cannot write to {unwritable}", "--prepared-dir")
    assert names_in(tmp_path) == ["blocker", "params.yaml"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder; the tests above cover it")
@pytest.mark.parametrize("stage", ["download", "prepare"])
def test_5_a_read_only_folder(tmp_path, tiny_sources, mirror, fake_raw, stage):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        option = "--raw-dir" if stage == "download" else "--prepared-dir"
        params = write_params(tmp_path, mirrors=[str(mirror)])
        result = run_cli("data", stage, "--params", params, option, folder / "data")
        assert_one_line_error(result, f"cannot write to {folder / 'data'}", "Permission denied", option)
    finally:
        folder.chmod(0o755)


# (6) a damaged prepared file -------------------------------------------------------------------

@pytest.fixture
def prepared(tmp_path):
    """A prepared folder holding a small frey_face.npz and the datasets.json that lists it."""
    folder = tmp_path / "prepared"
    folder.mkdir()
    np.savez(folder / "frey_face.npz", train_x=np.zeros((20, 560), np.uint8), test_x=np.ones((5, 560), np.uint8))
    digest = hashlib.sha256((folder / "frey_face.npz").read_bytes()).hexdigest()
    (folder / "datasets.json").write_text(json.dumps({"frey_face": {"sha256": digest}}))
    assert load_prepared("frey_face", folder)["test_x"].shape == (5, 560)
    return folder


def test_6_a_truncated_npz_is_a_clear_error(prepared):
    npz = prepared / "frey_face.npz"
    npz.write_bytes(npz.read_bytes()[:1000])
    with pytest.raises(ValueError, match=in_order(npz, "sha256", RERUN)) as info:
        load_prepared("frey_face", prepared)
    assert type(info.value).__name__ == "PreparedDataError"


def test_6_an_npz_that_does_not_decode_is_a_clear_error(prepared):
    npz = prepared / "frey_face.npz"
    npz.write_bytes(npz.read_bytes()[:1000])
    (prepared / "datasets.json").write_text(
        json.dumps({"frey_face": {"sha256": hashlib.sha256(npz.read_bytes()).hexdigest()}}))
    with pytest.raises(ValueError, match=in_order(f"{npz} cannot be decoded", RERUN)):
        load_prepared("frey_face", prepared)


@pytest.mark.parametrize("index, problem", [
    (None, "is missing"),
    ("{not json", "cannot be read"),
    ('{"mnist": {"sha256": "0"}}', "does not list frey_face"),
])
def test_6_an_npz_without_a_readable_hash_is_a_clear_error(prepared, index, problem):
    if index is None:
        (prepared / "datasets.json").unlink()
    else:
        (prepared / "datasets.json").write_text(index)
    with pytest.raises(ValueError, match=in_order(problem, RERUN)):
        load_prepared("frey_face", prepared)


def test_6_train_reports_a_damaged_prepared_file_in_one_line(prepared, tmp_path):
    npz = prepared / "frey_face.npz"
    npz.write_bytes(npz.read_bytes()[:1000])
    result = run_cli("train", "--dataset", "frey_face", "--nz", 2, "--prepared-dir", prepared,
                     "--out", tmp_path / "run", "--params", REPO / "params.yaml", "--no-progress")
    assert_one_line_error(result, npz, RERUN)


# (7) faults handled before: keep them handled ----------------------------------------------------

def test_7_an_unknown_dataset_name(tmp_path):
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'cifar10'; known: mnist"):
        load_prepared("cifar10", tmp_path)


def test_7_prepare_with_a_missing_raw_file(tmp_path):
    assert_one_line_error(run_cli("data", "prepare", "--params", write_params(tmp_path)),
                          f"{tmp_path / 'raw' / 'mnist.pkl.gz'} is missing", "vaebench data download")


@pytest.mark.parametrize("content, kind", [
    (PAYLOAD[:-1] + b"X", "checksum mismatch"),
    (PAYLOAD[:10], "truncated"),
])
def test_7_a_corrupted_download(tmp_path, tiny_sources, mirror, content, kind):
    (mirror / "tiny.bin").write_bytes(content)
    result = run_cli("data", "download", "--params", write_params(tmp_path, mirrors=[str(mirror)]))
    assert_one_line_error(result, "could not obtain a verified copy of tiny.bin", kind, "VAEBENCH_DATA_MIRRORS")
    assert names_in(tmp_path / "raw") == []


def test_7_prepare_refuses_a_raw_file_with_the_wrong_checksum(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "mnist.pkl.gz").write_bytes(b"not mnist")
    assert_one_line_error(run_cli("data", "prepare", "--params", write_params(tmp_path)),
                          "mnist.pkl.gz has sha256", "delete it and run `vaebench data download`")
    assert not (tmp_path / "prepared").exists()
