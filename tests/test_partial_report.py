"""A partial set of runs (docs/paper-budget.md), the binarization study, and the
configurations a profile asks for: constructed data, then the smoke profile's real runs."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.reporting.binarization_study import binarization_table, closer_setting, gap_to_paper, study_summary, mean_test_curve
from pipeline.reporting.claims import NOT_RUN, PASS, evaluate_claims
from pipeline.reporting.paper_claims import agreement
from pipeline.runs.configurations import claims_not_run, configuration_status, expected_configurations
from pipeline.plumbing.params import load_params
from pipeline.reporting.reference import REFERENCE_DIR, Reference

from .conftest import REPO
from .test_report import SETTINGS, make_curves, make_finals, make_marginal_likelihoods, make_variance


@pytest.fixture(scope="module")
def reference():
    return Reference.load(REPO / REFERENCE_DIR)


def paper_shaped_curve(reference, nz, offset, binarize, seeds=(1,)):
    """MNIST AEVB test rows that follow the paper's test curve at Nz, shifted by ``offset`` nats."""
    rows = []
    for seed in seeds:
        for samples in (10_000, 400_000, 631_000, 1_000_000):
            paper = reference.fig2_at("mnist", nz, "aevb", "test", samples)
            value = (paper if paper is not None else -200.0) + offset + 0.1 * (seed - 1)
            rows.append({"samples_seen": samples, "split": "test", "metric": "lower_bound", "value": value,
                         "seed": seed, "dataset": "mnist", "algorithm": "aevb", "nz": nz, "binarize": binarize,
                         "experiment": "fig2"})
    return pd.DataFrame(rows)


def test_the_gap_to_the_paper_is_measured_where_the_paper_shows_its_curve(reference):
    curve = mean_test_curve(paper_shaped_curve(reference, 20, 2.0, "none", seeds=(1, 2, 3)))
    gap = gap_to_paper(curve, reference, 20)
    # the mean over seeds is 0.1 nat above the +2 shift; 10,000 samples lie left of the paper's axes
    assert gap["mean_abs_gap"] == pytest.approx(2.1, abs=1e-9)
    assert gap["mean_signed_gap"] == pytest.approx(2.1, abs=1e-9)
    assert gap["points"] == 3 and gap["from_samples"] == 400_000 and gap["to_samples"] == 1_000_000
    below = gap_to_paper(mean_test_curve(paper_shaped_curve(reference, 20, -3.0, "none")), reference, 20)
    assert below["mean_abs_gap"] == pytest.approx(3.0) and below["mean_signed_gap"] == pytest.approx(-3.0)


def test_the_binarization_table_names_the_setting_that_tracks_the_paper(reference):
    none = pd.concat([paper_shaped_curve(reference, nz, 0.5, "none") for nz in (5, 20)])
    dynamic = pd.concat([paper_shaped_curve(reference, nz, 8.0, "dynamic") for nz in (5,)])
    table = binarization_table(none, dynamic, reference, [5, 20])
    assert set(zip(table.binarize, table.Nz, table.status)) == {
        ("none", 5, "ran"), ("none", 20, "ran"), ("dynamic", 5, "ran"), ("dynamic", 20, "not run")}
    verdicts = closer_setting(table)
    assert verdicts.to_dict("records") == [{"Nz": 5, "closer to the paper": "none", "mean abs gap (closer)": pytest.approx(0.5),
                                            "mean abs gap (other)": pytest.approx(8.0), "difference": pytest.approx(7.5)}]
    assert study_summary(table, verdicts).startswith("`none` tracks the paper's test curves more closely on 1 of 1")
    # the other way round when dynamic is the closer one
    swapped = binarization_table(paper_shaped_curve(reference, 5, 8.0, "none"),
                                 paper_shaped_curve(reference, 5, -0.2, "dynamic"), reference, [5])
    assert closer_setting(swapped)["closer to the paper"].tolist() == ["dynamic"]


def test_a_claim_comparing_a_configuration_that_did_not_run_is_not_judged():
    ml = make_marginal_likelihoods()
    ml = ml[ml.algorithm != "mcem"]  # MCEM did not run
    missing = {"aevb_fastest_marginal_likelihood": ["fig3/mnist_ntrain1000_mcem", "fig3/mnist_ntrain50000_mcem"],
               "mcem_impractical_on_full_set": ["fig3/mnist_ntrain50000_mcem"]}
    claims = {c.key: c for c in evaluate_claims(make_curves(), ml, make_finals(), make_variance(), SETTINGS, missing)}
    fastest = claims["aevb_fastest_marginal_likelihood"]
    assert fastest.verdict == NOT_RUN and "fig3/mnist_ntrain1000_mcem" in fastest.summary
    assert "would read pass" in fastest.summary  # the part that ran, as information only
    assert claims["mcem_impractical_on_full_set"].verdict == NOT_RUN
    assert claims["aevb_better_bound"].verdict == PASS  # what ran in full is judged as always
    assert agreement(NOT_RUN, "pass") == "cannot tell (not run)"


def test_the_profile_lists_every_configuration_and_what_a_partial_folder_holds(tmp_path):
    params = load_params(REPO / "params.yaml")
    expected = expected_configurations(params)
    fig2 = params["experiments"]["fig2"]
    n_fig2 = (len(fig2["mnist"]["nz"]) + len(fig2["frey_face"]["nz"])) * len(fig2["algorithms"])
    assert (expected.role == "fig2").sum() == n_fig2
    assert (expected.role == "binarization study").sum() == len(fig2["binarization_study"]["nz"])
    assert set(expected[expected.role == "fig3"].configuration) == {
        f"mnist_ntrain{n}_{a}" for n in params["experiments"]["fig3"]["ntrain"]
        for a in params["experiments"]["fig3"]["algorithms"]}
    # a folder with one finished Figure 3 configuration, one whose training finished but whose
    # marginal likelihood did not, and one still training
    for name, final, ml in (("mnist_ntrain1000_aevb", True, True), ("mnist_ntrain1000_wake_sleep", True, False),
                            ("mnist_ntrain50000_aevb", False, False)):
        run = tmp_path / "fig3" / name / "seed1"
        run.mkdir(parents=True)
        (run / "config.json").write_text("{}")
        if final:
            (run / "final.json").write_text("{}")
        if ml:
            (tmp_path / "marginal_likelihood" / "fig3" / name).mkdir(parents=True)
            (tmp_path / "marginal_likelihood" / "fig3" / name / "seed1.csv").write_text("x\n")
    status = configuration_status(tmp_path, expected).set_index("configuration")
    assert status.loc["mnist_ntrain1000_aevb", "status"] == "ran (1 of 3 seeds)"
    # trained, but Appendix D has not run on it: Figure 3 cannot show it
    assert status.loc["mnist_ntrain1000_wake_sleep", "status"] == "not run"
    assert status.loc["mnist_ntrain50000_aevb", "status"] == "not run"
    not_run = claims_not_run(status.reset_index(), variance_present=False)
    assert "fig3/mnist_ntrain1000_wake_sleep" in not_run["aevb_fastest_marginal_likelihood"]
    assert "fig3/mnist_ntrain1000_aevb" not in not_run["aevb_fastest_marginal_likelihood"]
    assert "fig3/mnist_ntrain50000_aevb" in not_run["mcem_impractical_on_full_set"]
    assert "runs/estimator_variance.csv" in not_run["estimator_b_lower_variance"]
    assert "fig2/mnist_nz2_aevb" not in not_run["aevb_better_bound"]  # Figures 4-5's run is not a panel
    assert "fig2/frey_face_nz2_aevb" in not_run["aevb_better_bound"]


def vaebench(*args, cwd, env):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=600)


@pytest.mark.integration
def test_the_smoke_report_answers_the_binarization_question(smoke_repo):
    repo, _, params, _ = smoke_repo
    text = (repo / "reports" / "smoke" / "report.md").read_text()
    section = text[text.index("## Binarization study"):]
    assert "| none |" in section and "| dynamic |" in section
    metrics = json.loads((repo / "reports" / "smoke" / "metrics.json").read_text())
    for nz in params["experiments"]["fig2"]["binarization_study"]["nz"]:
        assert f"binarization/dynamic/mnist/nz{nz}/test_lb" in metrics
        assert f"binarization/none/mnist/nz{nz}/test_lb" in metrics


@pytest.mark.integration
def test_figures_and_report_work_on_a_partial_set_and_mark_what_did_not_run(smoke_repo, tmp_path):
    repo, env, _, _ = smoke_repo
    runs = tmp_path / "runs"
    for name in ("mnist_ntrain1000_aevb", "mnist_ntrain50000_wake_sleep"):
        shutil.copytree(repo / "runs" / "fig3" / name, runs / "fig3" / name)
        shutil.copytree(repo / "runs" / "marginal_likelihood" / "fig3" / name,
                        runs / "marginal_likelihood" / "fig3" / name)
    unfinished = runs / "fig3" / "mnist_ntrain1000_mcem"  # a run still training: its curve must not be read
    shutil.copytree(repo / "runs" / "fig3" / "mnist_ntrain1000_mcem", unfinished)
    for final in unfinished.glob("seed*/final.json"):
        final.unlink()
    out = tmp_path / "report"
    strict = vaebench("figures", "--runs", str(runs), "--out", str(out / "figures"), cwd=repo, env=env)
    assert strict.returncode != 0 and "no trained runs under" in strict.stderr + strict.stdout
    drawn = vaebench("figures", "--runs", str(runs), "--out", str(out / "figures"), "--partial", cwd=repo, env=env)
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    index = json.loads((out / "figures" / "figures.json").read_text())
    assert set(index["figures"]) == {"fig3"} and set(index["not_drawn"]) == {"fig2", "fig4", "fig5"}
    report = vaebench("report", "--runs", str(runs), "--figures", str(out / "figures"), "--out", str(out), "--partial",
                      cwd=repo, env=env)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (out / "report.md").read_text()
    assert "## Configurations: what ran" in text
    assert "| fig3 | fig3/mnist_ntrain1000_mcem | 1, 2 | – | not run |" in text
    assert "| fig3 | fig3/mnist_ntrain1000_aevb | 1, 2 | 1, 2 | ran |" in text
    # every claim compares a configuration that did not run: ours and the paper's column say so
    assert text.count("| NOT RUN | – | – | NOT RUN | cannot tell (not run) |") == 6
    assert "Figure 2: not drawn" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert not any(key.startswith("claims/") for key in metrics)  # no verdict is recorded for a claim not judged
    assert any(key.startswith("fig3/ntrain1000/aevb/") for key in metrics)
    assert not any(key.startswith("fig3/ntrain1000/mcem/") for key in metrics)  # the unfinished run is not read
    assert np.isfinite(list(metrics.values())).all()
