"""The paper-budget campaign on a tiny profile (pipeline/campaign/): a finished run is archived in a
compact, checksummed form, restored on a fresh clone's empty runs folder and seen there as finished;
an interrupted run resumes; a pure refactor of the training code is found exact by retraining a
prefix bit for bit, a change that moves the numbers is found stale with what differs; a damaged
archive entry is refused by checksum with nothing copied; the partial report says how many claims
it judges and what the others wait for."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import pipeline.campaign.staleness as staleness
from pipeline.campaign.archive import ArchiveError, archive_run, entries, restore, verify
from pipeline.campaign.plan import plan_campaign
from pipeline.campaign.runner import paths_of, restore_archive, run_campaign
from pipeline.reporting.claims import NOT_RUN, PASS, Claim
from pipeline.reporting.report import archive_blocks, partial_headline
from pipeline.runs.archive_status import EXACT, STALE, read_archive_status
from pipeline.runs.config import build_run_config
from pipeline.runs.results import load_curves, load_final_model
from pipeline.training.train import run_training

from .conftest import make_tiny_setup

CONFIGURATION = "fig2/mnist_nz3_aevb"


def campaign_in(root: Path):
    """tiny_setup's params in ``root`` with a campaign over one configuration (relative paths: run
    from ``root``)."""
    params, params_path, prepared, _ = make_tiny_setup(root)
    params["data"]["prepared_dir"] = "prepared"
    params["campaign"] = {"profile": "smoke", "runs": "runs-campaign", "archive": "archive/smoke",
                          "report": "reports/campaign", "prefix_samples": 1000,
                          "order": [{"configurations": [CONFIGURATION], "seeds": [1]}],
                          "hold": {"fig2/mnist_nz5_*": "an open question"}}
    settings = params["campaign"]
    return params, settings, paths_of(params, settings)


@pytest.fixture(scope="module")
def archived_once(tmp_path_factory):
    """One campaign unit run and archived (the slow part), for the tests to copy."""
    root = tmp_path_factory.mktemp("campaign")
    params, settings, paths = campaign_in(root)
    before = os.getcwd()
    os.chdir(root)
    try:
        results = run_campaign(params, settings, paths, jobs=1, max_units=1, render=False, echo=lambda *_: None)
    finally:
        os.chdir(before)
    return root, results


@pytest.fixture
def campaign(tmp_path, monkeypatch):
    """A fresh tiny campaign, nothing run yet, in the test's own folder."""
    monkeypatch.chdir(tmp_path)
    params, settings, paths = campaign_in(tmp_path)
    return params, settings, paths, tmp_path


@pytest.fixture
def archived(archived_once, tmp_path, monkeypatch):
    """A copy of :func:`archived_once`'s folder, with its archived entry."""
    root, _ = archived_once
    shutil.copytree(root, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    params, settings, paths = campaign_in(tmp_path)
    (entry,) = entries(paths.archive)
    return entry, params, settings, paths, tmp_path


def test_a_finished_run_is_archived_compactly_and_restored_into_an_empty_runs_folder(archived_once, archived):
    entry, params, settings, paths, tmp_path = archived
    assert [r.ok for r in archived_once[1]] == [True], [r.message for r in archived_once[1]]
    assert entry.key == f"{CONFIGURATION}/seed1" and verify(entry) == []
    assert entry.record["training_code"] == staleness.training_code() and entry.record["trained_with_seeds"] == [1]
    # compact: the final model's weights alone, not the checkpoints' optimizer state
    files = {p.relative_to(entry.path).as_posix() for p in entry.path.rglob("*") if p.is_file()}
    assert files == {"config.json", "final.json", "curve.csv", "entry.json", "checkpoints/manifest.json",
                     "checkpoints/samples_000000004000.pt"}
    assert entry.record["bytes"] < sum(p.stat().st_size for p in (paths.runs / entry.key).rglob("*") if p.is_file())
    # a fresh clone: the archive alone, an empty runs folder
    clone = tmp_path / "clone"
    shutil.copytree(paths.archive, clone / "archive")
    fresh = paths_of(params, settings, runs=clone / "runs", archive=clone / "archive")
    statuses = restore_archive(params, fresh, 1000, echo=lambda *_: None)
    assert statuses == {entry.key: {"status": EXACT, "how": staleness.SAME_CODE,
                                    "run_fingerprint": entry.record["run_fingerprint"]}}
    restored = fresh.runs / entry.key
    original = load_curves(paths.runs, "fig2").drop(columns=["run", "wall_seconds"])
    assert load_curves(fresh.runs, "fig2").drop(columns=["run", "wall_seconds"]).equals(original)
    model = load_final_model(restored)  # Figures 4-5 and the estimator-variance claim read it
    assert sum(p.numel() for p in model.parameters()) > 0
    assert plan_campaign(params, fresh.runs, {entry.key}).pending == []


def test_an_interrupted_unit_resumes_and_a_held_configuration_never_starts(campaign):
    params, settings, paths, tmp_path = campaign
    settings["order"].append({"configurations": ["fig2/mnist_nz5_*"], "seeds": [1]})
    config = build_run_config({**params, "profile": "smoke"}, "fig2", "mnist", "aevb", 3)
    staged = tmp_path / ".vaebench" / "unfinished" / paths.runs / CONFIGURATION / "seed1"
    run_training(config, staged, params["data"]["prepared_dir"], progress=False, stop_after_samples=2000)
    assert not (staged / "final.json").exists()
    plan = plan_campaign(params, paths.runs, set())
    assert [u.label for u in plan.pending] == [f"{CONFIGURATION} seed 1"]
    assert set(plan.held) == {"fig2/mnist_nz5_aevb", "fig2/mnist_nz5_wake_sleep"}
    (result,) = run_campaign(params, settings, paths, jobs=1, max_units=None, render=False, echo=lambda *_: None)
    final = json.loads((paths.runs / CONFIGURATION / "seed1" / "final.json").read_text())
    assert result.ok and final["resumed_from"] is not None, "resumed from the checkpoint the interruption left"
    status = read_archive_status(paths.runs)
    assert status is not None and list(status[0].run) == [f"{CONFIGURATION}/seed1"]


def test_a_pure_refactor_is_exact_and_a_change_of_the_numbers_is_stale(archived, monkeypatch):
    entry, params, settings, paths, _ = archived
    point = staleness.prefix_point(entry, 1000)
    assert 0 < point <= 1000
    # another training-code fingerprint, the same numbers (a refactor): the prefix is retrained
    monkeypatch.setattr(staleness, "training_code", lambda: "refactored")
    result = staleness.check_group([entry], paths.prepared, 1000)[entry.key]
    assert result == {"status": EXACT, "how": f"a prefix of {point:,} samples retrained with the current code, "
                                              f"every value equal"}
    # a change that moves the numbers: a larger step than the trial chose
    import pipeline.training.train as train

    real = train.OptimizerConfig
    monkeypatch.setattr(train, "OptimizerConfig", lambda step, *rest: real(step * 1.5, *rest))
    result = staleness.check_group([entry], paths.prepared, 1000)[entry.key]
    assert result["status"] == STALE and "archived" in result["how"] and "with the current code" in result["how"]


def test_a_damaged_entry_is_refused_by_checksum_and_nothing_is_copied(archived):
    entry, params, settings, paths, tmp_path = archived
    curve = entry.path / "curve.csv"
    curve.write_text(curve.read_text().replace("-", "+", 1))
    assert verify(entry) == ["curve.csv has changed (its sha256 is not the one archived)"]
    with pytest.raises(ArchiveError, match="damaged.*curve.csv has changed"):
        restore(entry, tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()
    (entry.path / "stray.txt").write_text("x")
    assert "stray.txt is not part of the entry" in verify(entry)


def test_a_run_trained_by_other_code_is_not_archived_as_this_commits(archived, monkeypatch):
    entry, params, settings, paths, _ = archived
    import pipeline.campaign.archive as archive

    monkeypatch.setattr(archive, "run_fingerprint", lambda *args: "another code's")
    with pytest.raises(ArchiveError, match="trained by other code"):
        archive_run(paths.runs / entry.key, paths.runs, paths.archive, paths.prepared, False, [1])


def test_the_partial_headline_counts_the_judged_claims_and_says_what_the_others_wait_for():
    claims = [Claim("aevb_better_bound", "AEVB beats wake-sleep", PASS, "", None),
              Claim("aevb_converges_faster", "AEVB converges faster", NOT_RUN, "not run: fig2/mnist_nz3_aevb", None),
              Claim("estimator_b_lower_variance", "B beats A", NOT_RUN, "not run", None)]
    not_run = {"aevb_converges_faster": ["fig2/mnist_nz3_aevb", "fig2/mnist_nz3_wake_sleep"],
               "estimator_b_lower_variance": ["runs/estimator_variance.csv"]}
    blocks = partial_headline(claims, not_run, {"fig2/mnist_nz3_aevb": 1.25, "fig2/mnist_nz3_wake_sleep": 2.0})
    assert blocks[0].content.startswith("**Judged at this profile's budget: 1 of 3 claims.**")
    assert blocks[1].content == [
        "AEVB converges faster: waits for 2 configuration(s): fig2/mnist_nz3_aevb, fig2/mnist_nz3_wake_sleep "
        "(about 3.2 h on this machine)",
        "B beats A: waits for 1 configuration(s): runs/estimator_variance.csv"]


def test_the_report_says_which_runs_are_exact_and_which_stale():
    import pandas as pd

    rows = pd.DataFrame([{"run": "fig2/a/seed1", "commit": "0123456789abcdef", "status": EXACT, "how": "the same"},
                         {"run": "fig2/b/seed1", "commit": None, "status": STALE, "how": "the test lower_bound ..."}])
    heading, text, table = archive_blocks(rows)
    assert "1 stale run(s) are left out" in text.content
    assert list(table.content["trained at"]) == ["0123456789ab", "unknown"]
    assert list(table.content["status"]) == ["current code reproduces it exactly", "stale"]
