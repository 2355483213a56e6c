"""``vaebench compare`` on hand-made metric files: every verdict, every exit code, git revisions and
the paper as a side."""
import json
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.compare.compare import CompareInputError
from pipeline.compare.environment import read_environment
from pipeline.compare.keys import family_of
from pipeline.compare.sides import paper_metrics, read_side
from pipeline.compare.verdicts import compare_metrics, tolerances_from_params
from pipeline.reporting.reference import REFERENCE_DIR, Reference

from .conftest import REPO

TOLERANCES = {"bound_nats": 0.5, "marginal_likelihood_se": 3.0, "marginal_likelihood_floor_nats": 0.2,
              "throughput_ratio": 0.8, "variance_ratio": 0.5}

BASE = {
    "fig2/mnist/nz20/aevb/test_lb": -120.0,     # -> -119.8: same (within 0.5 nats)
    "fig2/mnist/nz20/aevb/train_lb": -118.0,    # -> -117.0: better
    "fig2/mnist/nz3/aevb/test_lb": -150.0,      # -> -151.0: worse
    "fig3/ntrain1000/aevb/test_ml": -150.0,     # -> -150.5: same (3 x hypot(0.1, 0.1) + 0.2 = 0.62)
    "fig3/ntrain1000/aevb/test_ml_se": 0.1,
    "fig3/ntrain1000/mcem/test_ml": -150.0,     # -> -151.0: worse
    "fig3/ntrain1000/mcem/test_ml_se": 0.1,
    "speed/fig2/mnist_nz20_aevb/samples_per_second": 20000.0,  # -> 15000: worse (ratio 0.75)
    "speed/fig3/mnist_ntrain1000_aevb/samples_per_second": 40000.0,  # -> 36000: same
    "claims/aevb_better_bound": 1,              # -> 0: worse
    "claims/estimator_b_lower_variance": 0,     # -> 1: better
    "estimator_variance/mnist/nz20/b_gradient_variance": 100.0,  # -> 40: better (lower)
    "fig2/mnist/nz20/aevb/samples": 1_000_000,  # -> 2,000,000: changed (info)
    "fig2/mnist/nz5/aevb/test_lb": -130.0,      # removed
}
NEW = {
    "fig2/mnist/nz20/aevb/test_lb": -119.8,
    "fig2/mnist/nz20/aevb/train_lb": -117.0,
    "fig2/mnist/nz3/aevb/test_lb": -151.0,
    "fig3/ntrain1000/aevb/test_ml": -150.5,
    "fig3/ntrain1000/aevb/test_ml_se": 0.1,
    "fig3/ntrain1000/mcem/test_ml": -151.0,
    "fig3/ntrain1000/mcem/test_ml_se": 0.1,
    "speed/fig2/mnist_nz20_aevb/samples_per_second": 15000.0,
    "speed/fig3/mnist_ntrain1000_aevb/samples_per_second": 36000.0,
    "claims/aevb_better_bound": 0,
    "claims/estimator_b_lower_variance": 1,
    "estimator_variance/mnist/nz20/b_gradient_variance": 40.0,
    "fig2/mnist/nz20/aevb/samples": 2_000_000,
    "fig2/frey_face/nz2/aevb/test_lb": 500.0,   # added
}
EXPECTED = {
    "fig2/mnist/nz20/aevb/test_lb": "same", "fig2/mnist/nz20/aevb/train_lb": "better",
    "fig2/mnist/nz3/aevb/test_lb": "worse", "fig3/ntrain1000/aevb/test_ml": "same",
    "fig3/ntrain1000/aevb/test_ml_se": "same", "fig3/ntrain1000/mcem/test_ml": "worse",
    "fig3/ntrain1000/mcem/test_ml_se": "same",
    "speed/fig2/mnist_nz20_aevb/samples_per_second": "worse",
    "speed/fig3/mnist_ntrain1000_aevb/samples_per_second": "same",
    "claims/aevb_better_bound": "worse", "claims/estimator_b_lower_variance": "better",
    "estimator_variance/mnist/nz20/b_gradient_variance": "better",
    "fig2/mnist/nz20/aevb/samples": "changed", "fig2/mnist/nz5/aevb/test_lb": "removed",
    "fig2/frey_face/nz2/aevb/test_lb": "added",
}


def test_every_verdict_on_hand_made_metrics():
    rows = compare_metrics(BASE, NEW, TOLERANCES)
    assert {r.key: r.verdict for r in rows} == EXPECTED


def test_families_follow_the_key_names():
    assert family_of("fig2/mnist/nz3/aevb/test_lb") == "bound"
    assert family_of("fig3/ntrain50000/mcem/train_ml_grid") == "marginal_likelihood"
    assert family_of("fig3/ntrain50000/mcem/train_ml_se") == "info"
    assert family_of("speed/fig2/x/samples_per_second") == "throughput"
    assert family_of("claims/x") == "claim"


def test_only_and_exclude_filter_by_glob():
    rows = compare_metrics(BASE, NEW, TOLERANCES, only=("fig2/*",), exclude=("*/samples",))
    assert {r.key for r in rows} == {k for k in EXPECTED if k.startswith("fig2/") and not k.endswith("/samples")}


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "metrics.json").write_text(json.dumps(BASE))
    (tmp_path / "new.json").write_text(json.dumps(NEW))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def run(*args):
    return CliRunner().invoke(main, ["compare", *map(str, args)])


def test_exit_code_1_on_a_regression_and_the_table_names_it(files):
    result = run(files / "base", files / "new.json", "--params", files / "params.yaml")
    assert result.exit_code == 1, result.output
    assert "WORSE" in result.output and "fig2/mnist/nz3/aevb/test_lb" in result.output
    assert "regression(s)" in result.output


def test_exit_code_0_when_nothing_regresses(files):
    result = run(files / "base", files / "new.json", "--params", files / "params.yaml",
                 "--only", "fig2/mnist/nz20/*", "--only", "claims/estimator*")
    assert result.exit_code == 0, result.output
    assert "No regression." in result.output
    same = run(files / "base", files / "base", "--params", files / "params.yaml")
    assert same.exit_code == 0 and "No regression." in same.output and "worse" not in same.output


def test_removed_metrics_regress_unless_allowed(files):
    args = [files / "base", files / "new.json", "--params", files / "params.yaml", "--only", "fig2/mnist/nz5/*"]
    assert run(*args).exit_code == 1
    assert run(*args, "--allow-removed").exit_code == 0


def test_json_and_markdown_formats(files):
    result = run(files / "base", files / "new.json", "--params", files / "params.yaml", "--format", "json")
    payload = json.loads(result.output)
    assert {m["key"]: m["verdict"] for m in payload["metrics"]} == EXPECTED
    assert set(payload["regressions"]) == {k for k, v in EXPECTED.items() if v in ("worse", "removed")}
    markdown = run(files / "base", files / "new.json", "--params", files / "params.yaml", "--format", "markdown")
    assert markdown.output.startswith("| metric |") and "|---|" in markdown.output


@pytest.mark.parametrize("make_bad, message", [
    (lambda d: d / "missing", "neither a report directory"),
    (lambda d: (d / "bad.json").write_text("{not json") and d / "bad.json", "not valid JSON"),
    (lambda d: (d / "nested.json").write_text('{"a": {"b": 1}}') and d / "nested.json", "not a number"),
    (lambda d: "rev:no-such-revision", "cannot read reports/"),
])
def test_exit_code_2_names_the_bad_input(files, make_bad, message):
    bad = make_bad(files)
    result = run(files / "base", bad, "--params", files / "params.yaml", "--repo", files)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_exit_code_2_on_bad_tolerances(files):
    params = yaml.safe_load((files / "params.yaml").read_text())
    params["compare"]["throughput_ratio"] = 3
    (files / "params.yaml").write_text(yaml.safe_dump(params))
    result = run(files / "base", files / "new.json", "--params", files / "params.yaml")
    assert result.exit_code == 2 and "compare.throughput_ratio" in result.output
    with pytest.raises(CompareInputError):
        tolerances_from_params({"compare": {**TOLERANCES, "bound_nats": -1}})


def committed_repo(tmp_path):
    """A git repository whose one commit holds reports/smoke/metrics.json = BASE, and its git."""
    repo = tmp_path / "repo"
    (repo / "reports" / "smoke").mkdir(parents=True)

    def git(*args):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (repo / "reports" / "smoke" / "metrics.json").write_text(json.dumps(BASE))
    git("add", ".")
    git("commit", "-q", "-m", "base")
    return repo, git


def test_reads_a_git_revision_without_checking_it_out(tmp_path, files):
    repo, git = committed_repo(tmp_path)
    (repo / "reports" / "smoke" / "metrics.json").write_text(json.dumps(NEW))
    git("commit", "-q", "-am", "new")
    params = ["--params", files / "params.yaml", "--repo", repo, "--profile", "smoke"]
    result = run("rev:HEAD~1", "rev:HEAD", *params, "--format", "json")
    assert result.exit_code == 1, result.output
    assert {m["key"]: m["verdict"] for m in json.loads(result.output)["metrics"]} == EXPECTED
    assert run("rev:HEAD~1:reports/smoke/metrics.json", "rev:HEAD~1", *params).exit_code == 0
    assert json.loads((repo / "reports" / "smoke" / "metrics.json").read_text()) == NEW  # working tree untouched


def test_an_option_like_revision_is_refused_before_git_sees_it(tmp_path, files):
    repo, git = committed_repo(tmp_path)
    trap = tmp_path / "trap"
    trap.mkdir()
    # unchecked, git would run `git show --output=<trap>/written:x.json` and write that file
    spec = f"rev:--output={trap / 'written'}:x.json"
    result = run("rev:HEAD", spec, "--params", files / "params.yaml", "--repo", repo, "--profile", "smoke")
    assert list(trap.iterdir()) == []  # no file named by --output was created
    assert result.exit_code == 2, result.output
    assert "is not a git revision" in result.output and "--output=" in result.output
    with pytest.raises(CompareInputError, match="is not a git revision"):
        read_side(spec, repo, "smoke")
    with pytest.raises(CompareInputError, match="is not a git revision"):
        read_environment(f"rev:--output={trap / 'provenance'}:metrics.json", repo, "smoke")
    assert list(trap.iterdir()) == []


def test_a_revision_where_git_cannot_run_is_an_input_error_naming_the_side(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    with pytest.raises(CompareInputError, match=r"'rev:HEAD~1': git is not available"):
        read_side("rev:HEAD~1", tmp_path, "smoke")
    with pytest.raises(CompareInputError, match=r"'rev:HEAD': git is not available"):
        read_environment("rev:HEAD", tmp_path, "smoke")


def test_the_paper_side_is_read_at_the_other_sides_budget():
    reference = Reference.load(REPO / REFERENCE_DIR)
    ours = {"fig2/mnist/nz20/aevb/test_lb": -120.0, "fig2/mnist/nz20/aevb/samples": 1_000_000,
            "fig2/mnist/nz3/aevb/test_lb": -160.0, "fig2/mnist/nz3/aevb/samples": 1_000_000,
            "fig3/ntrain1000/aevb/test_ml": -140.0, "fig3/ntrain1000/aevb/samples": 5_000_000}
    paper = paper_metrics(ours, reference)
    assert paper["fig2/mnist/nz20/aevb/test_lb"] == pytest.approx(-124.2, abs=0.3)  # docs/protocol.md, section 9
    assert "fig2/mnist/nz3/aevb/test_lb" not in paper  # off the paper's axes at 10^6
    assert paper["fig3/ntrain1000/aevb/test_ml"] == pytest.approx(-143.2, abs=0.3)


def test_compare_paper_with_a_report_exits_by_the_verdicts(files, tmp_path):
    ours = {"fig2/mnist/nz20/aevb/test_lb": -110.0, "fig2/mnist/nz20/aevb/samples": 1_000_000}
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    result = run("paper", tmp_path / "ours.json", "--params", files / "params.yaml", "--repo", REPO)
    assert result.exit_code == 0 and "better" in result.output, result.output
    (tmp_path / "ours.json").write_text(json.dumps({**ours, "fig2/mnist/nz20/aevb/test_lb": -140.0}))
    assert run("paper", tmp_path / "ours.json", "--params", files / "params.yaml", "--repo", REPO).exit_code == 1
    both = run("paper", "paper", "--params", files / "params.yaml")
    assert both.exit_code == 2 and "at most one side" in both.output
