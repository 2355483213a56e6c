"""``vaebench compare`` across a device or torch build change (issue 18): the reports' provenance.json
tell an environment change from a regression -- speed may change without failing, bounds and marginal
likelihoods get a wider tolerance -- and provenance records the torch build."""
import json
import subprocess

import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.compare.compare import CompareInputError
from pipeline.compare.environment import Environment, environment_change, environment_of, read_environment
from pipeline.compare.verdicts import (ENVIRONMENT_CHANGE_TOLERANCE_MULTIPLIER, compare_metrics, regressions,
                                       tolerances_from_params)
from pipeline.reporting import provenance as provenance_module

from .conftest import REPO

TOLERANCES = {"bound_nats": 0.5, "marginal_likelihood_se": 3.0, "marginal_likelihood_floor_nats": 0.2,
              "throughput_ratio": 0.8, "variance_ratio": 0.5, "seed_spread_multiplier": 2.0,
              "environment_change_multiplier": 2.0}
SPEED = "speed/fig2/mnist_nz20_aevb/samples_per_second"
LB = "fig2/mnist/nz20/aevb/test_lb"
ML = "fig3/ntrain1000/aevb/test_ml"
BASE = {SPEED: 20000.0, LB: -120.0}
SPEED_DROP = {SPEED: 10000.0, LB: -120.0}  # ratio 0.5 < 0.8: worse on one device
CPU = {"devices": ["cpu"], "torch": "2.13.0+cpu", "torch_cuda": None, "gpu": None}
CUDA = {"devices": ["cuda"], "torch": "2.13.0+cu126", "torch_cuda": "12.6", "gpu": "NVIDIA H200"}
NOTE = "environment changed: devices cpu -> cuda (torch 2.13.0+cpu -> 2.13.0+cu126)"


def provenance(environment: dict) -> dict:
    """A provenance.json as pipeline.reporting.provenance writes it, with the keys compare reads."""
    return {"profile": "smoke", "devices": environment["devices"],
            "packages": {"torch": environment["torch"]}, "machine": {"cpu": "AMD EPYC"}, "environment": environment}


def report(folder, metrics: dict, environment: dict | None):
    """A report directory: metrics.json, and provenance.json unless ``environment`` is None."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if environment is not None:
        (folder / "provenance.json").write_text(json.dumps(provenance(environment)))
    return folder


@pytest.fixture()
def params_path(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["compare"].update({k: v for k, v in TOLERANCES.items() if k != "environment_change_multiplier"})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run(*args):
    return CliRunner().invoke(main, ["compare", *map(str, args)])


def verdicts(base, new, change=""):
    return {r.key: r.verdict for r in compare_metrics(base, new, TOLERANCES, environment_change=change)}


# a speed drop across a device change is no regression; on one device it is
def test_a_speed_drop_across_a_device_change_is_no_regression(tmp_path, params_path):
    base = report(tmp_path / "cpu", BASE, CPU)
    new = report(tmp_path / "cuda", SPEED_DROP, CUDA)
    result = run(base, new, "--params", params_path)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == NOTE
    speed_line = next(line for line in result.output.splitlines() if line.startswith(SPEED))
    assert " changed " in speed_line
    assert "changed by the environment (worse by the ratio): not a regression" in speed_line
    assert "1 speed metric(s) changed with the environment (not regressions)" in result.output
    assert "No regression." in result.output


def test_the_same_speed_drop_on_the_same_device_is_a_regression(tmp_path, params_path):
    base = report(tmp_path / "cpu", BASE, CPU)
    new = report(tmp_path / "cpu_again", SPEED_DROP, CPU)
    result = run(base, new, "--params", params_path)
    assert result.exit_code == 1, result.output
    assert "environment changed" not in result.output
    assert "WORSE" in next(line for line in result.output.splitlines() if line.startswith(SPEED))


def test_a_speed_rise_across_a_device_change_is_changed_not_better():
    rows = compare_metrics(BASE, {**BASE, SPEED: 80000.0}, TOLERANCES, environment_change=NOTE)
    speed = next(r for r in rows if r.key == SPEED)
    assert speed.verdict == "changed" and speed.environment_changed
    assert verdicts(BASE, {**BASE, SPEED: 19000.0}, NOTE)[SPEED] == "same"  # inside the ratio: same as ever


# a bound or marginal likelihood shift inside the widened tolerance is "same" only across the change
def test_a_bound_shift_inside_the_widened_tolerance_is_same_only_with_the_device_change():
    new = {LB: -120.8}  # |diff| 0.8: > bound_nats 0.5, <= 2 x 0.5
    assert verdicts({LB: -120.0}, new)[LB] == "worse"
    row = compare_metrics({LB: -120.0}, new, TOLERANCES, environment_change=NOTE)[0]
    assert row.verdict == "same" and row.environment_widening == pytest.approx(0.5)
    assert row.note == "tolerance widened by the environment change: 0.5 -> 1 nats (x 2)"
    assert "x 2 for the environment change = 1 nats" in row.rule
    # beyond the widened tolerance: still worse, still a regression
    beyond = compare_metrics({LB: -120.0}, {LB: -121.2}, TOLERANCES, environment_change=NOTE)
    assert [r.verdict for r in beyond] == ["worse"] and len(regressions(beyond)) == 1


def test_the_cli_widens_a_bound_for_a_device_change_only(tmp_path, params_path):
    shifted = {**BASE, LB: -120.8}
    base = report(tmp_path / "cpu", BASE, CPU)
    assert run(base, report(tmp_path / "cuda", shifted, CUDA), "--params", params_path).exit_code == 0
    assert run(base, report(tmp_path / "cpu_again", shifted, CPU), "--params", params_path).exit_code == 1
    far = run(base, report(tmp_path / "cuda_far", {**BASE, LB: -121.2}, CUDA), "--params", params_path)
    assert far.exit_code == 1 and "WORSE" in far.output, far.output


def test_the_seed_widening_is_multiplied_too_and_both_notes_show():
    base, new = {ML: -150.0, f"{ML}_se": 0.1, f"{ML}_seed_se": 0.2}, {ML: -151.9, f"{ML}_se": 0.1}
    # 3 x 0.141 + 0.2 + 2 x 0.2 = 1.02 < 1.9 <= 2 x 1.02
    assert verdicts(base, new)[ML] == "worse"
    row = next(r for r in compare_metrics(base, new, TOLERANCES, environment_change=NOTE) if r.key == ML)
    assert row.verdict == "same" and row.seed_widening == pytest.approx(0.4)
    assert row.note.startswith("tolerance widened by seed spread: +0.4 nats (2 x 0.2); "
                               "tolerance widened by the environment change: 1.02 -> 2.05 nats (x 2)")


def test_claims_and_variances_are_not_excused_by_an_environment_change():
    claim, variance = "claims/aevb_better_bound", "estimator_variance/mnist/nz20/b_gradient_variance"
    rows = compare_metrics({claim: 1, variance: 10.0}, {claim: 0, variance: 100.0}, TOLERANCES, environment_change=NOTE)
    assert {r.key: r.verdict for r in rows} == {claim: "worse", variance: "worse"}


# the multiplier: params.yaml compare.environment_change_multiplier, the module constant when absent
def test_the_multiplier_comes_from_params_and_defaults_to_the_constant(tmp_path, params_path):
    params = yaml.safe_load(params_path.read_text())
    params["compare"].pop("environment_change_multiplier", None)
    assert tolerances_from_params(params)["environment_change_multiplier"] == ENVIRONMENT_CHANGE_TOLERANCE_MULTIPLIER
    params["compare"]["environment_change_multiplier"] = 1
    (tmp_path / "off.yaml").write_text(yaml.safe_dump(params))
    base = report(tmp_path / "cpu", BASE, CPU)
    new = report(tmp_path / "cuda", {**BASE, LB: -120.8}, CUDA)
    off = run(base, new, "--params", tmp_path / "off.yaml")
    assert off.exit_code == 1 and NOTE in off.output, off.output  # 1: no widening (speed still excused)
    for bad in (0.5, -1, "2", True, None):
        with pytest.raises(CompareInputError, match="compare.environment_change_multiplier"):
            tolerances_from_params({"compare": {**TOLERANCES, "environment_change_multiplier": bad}})


# reading the environments
def test_json_output_names_the_change(tmp_path, params_path):
    base, new = report(tmp_path / "cpu", BASE, CPU), report(tmp_path / "cuda", SPEED_DROP, CUDA)
    payload = json.loads(run(base, new, "--params", params_path, "--format", "json").output)
    assert payload["environment_change"] == NOTE and payload["changed_by_environment"] == [SPEED]
    assert payload["regressions"] == []
    same = json.loads(run(base, base, "--params", params_path, "--format", "json").output)
    assert same["environment_change"] is None
    markdown = run(base, new, "--params", params_path, "--format", "markdown").output
    assert markdown.startswith(NOTE + "\n\n| metric |")


def test_no_check_without_provenance_on_both_sides(tmp_path, params_path):
    base = report(tmp_path / "cpu", BASE, CPU)
    bare = report(tmp_path / "bare", SPEED_DROP, None)
    assert read_environment(str(bare), tmp_path, "smoke") is None and read_environment("paper", tmp_path, "x") is None
    result = run(base, bare / "metrics.json", "--params", params_path)
    assert result.exit_code == 1 and "environment changed" not in result.output
    # a metrics file under another name: a provenance.json beside it need not be its report's
    (tmp_path / "cuda").mkdir()
    (tmp_path / "cuda" / "copy.json").write_text(json.dumps(SPEED_DROP))
    (tmp_path / "cuda" / "provenance.json").write_text(json.dumps(provenance(CUDA)))
    assert read_environment(str(tmp_path / "cuda" / "copy.json"), tmp_path, "smoke") is None


def test_what_counts_as_a_change():
    cpu, cuda = environment_of(provenance(CPU), "a"), environment_of(provenance(CUDA), "b")
    assert environment_change(cpu, cuda) == NOTE
    assert environment_change(cpu, cpu) == "" and environment_change(cpu, None) == ""
    # which GPU of a machine is no change; another GPU model or torch build is
    assert environment_change(cuda, environment_of(provenance({**CUDA, "devices": ["cuda:1"]}), "c")) == ""
    assert environment_change(cuda, environment_of(provenance({**CUDA, "gpu": "NVIDIA A100"}), "c")) == \
        "environment changed: GPU NVIDIA H200 -> NVIDIA A100"
    assert environment_change(cpu, environment_of(provenance({**CPU, "torch": "2.12.0+cpu"}), "c")) == \
        "environment changed: torch 2.13.0+cpu -> 2.12.0+cpu"
    untagged = Environment(("cpu",), "2.13.0", None, None, True), Environment(("cpu",), "2.13.0", "12.6", None, True)
    assert environment_change(*untagged) == "environment changed: torch CUDA none -> 12.6"


def test_another_cpu_model_is_an_environment_change():
    """The committed smoke report was made on an AMD EPYC and rerun here on an Intel Xeon: Frey
    Face's Nz = 10 bound moved 23 nats at 20,000 samples on the same code (last bits of other
    kernels, amplified by training); compare names the change instead of leaving it unexplained."""
    amd = environment_of(provenance(CPU), "a")
    intel = environment_of({**provenance(CPU), "machine": {"cpu": "Intel(R) Xeon(R) Processor"}}, "b")
    assert environment_change(amd, intel) == "environment changed: CPU AMD EPYC -> Intel(R) Xeon(R) Processor"
    unnamed = environment_of({**provenance(CPU), "machine": {}}, "c")
    assert environment_change(amd, unnamed) == "", "a side that does not name its CPU is no change"


def test_an_older_provenance_is_read_from_its_devices_and_packages():
    older = {"devices": ["cuda"], "packages": {"torch": "2.13.0+cu126"}}
    assert environment_of(older, "old") == Environment(("cuda",), "2.13.0+cu126")
    assert environment_change(environment_of(provenance(CPU), "a"), environment_of(older, "old")) == NOTE


def test_a_broken_provenance_is_an_input_error_that_names_it(tmp_path, params_path):
    base = report(tmp_path / "cpu", BASE, CPU)
    broken = report(tmp_path / "broken", BASE, None)
    (broken / "provenance.json").write_text("{not json")
    result = run(base, broken, "--params", params_path)
    assert result.exit_code == 2, result.output
    assert "provenance.json is not valid JSON" in result.output and "vaebench report" in result.output


def test_revisions_read_their_provenance_from_git(tmp_path, params_path):
    repo = tmp_path / "repo"
    folder = report(repo / "reports" / "smoke", BASE, CPU)

    def git(*args):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    git("add", ".")
    git("commit", "-q", "-m", "cpu")
    report(folder, SPEED_DROP, CUDA)
    git("commit", "-q", "-am", "cuda")
    args = ["--params", params_path, "--repo", repo, "--profile", "smoke"]
    result = run("rev:HEAD~1", "rev:HEAD", *args)
    assert result.exit_code == 0 and result.output.startswith(NOTE), result.output
    assert run("rev:HEAD~1:reports/smoke/metrics.json", "rev:HEAD", *args).output.startswith(NOTE)
    (folder / "provenance.json").write_text(json.dumps(provenance(CPU)))
    git("commit", "-q", "-am", "cpu again")
    assert run("rev:HEAD~2", "rev:HEAD", *args).exit_code == 1  # same device, the speed drop regresses


# provenance records the torch build
def test_provenance_records_the_torch_build(tmp_path, monkeypatch):
    finals = pd.DataFrame([{"experiment": "fig2", "run": "mnist_nz20_aevb", "seed": 1, "device": "cuda",
                            "binarize": "none", "trial_seconds": 1.0, "train_seconds": 2.0, "eval_seconds": 3.0}])
    params = {"profile": "smoke"}
    recorded = provenance_module.build_provenance(tmp_path, params, tmp_path, finals, pd.DataFrame(), None, {})
    assert recorded["environment"] == {"devices": ["cuda"], "torch": torch.__version__,
                                       "torch_cuda": torch.version.cuda,
                                       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    assert recorded["devices"] == ["cuda"] and recorded["packages"]["torch"]  # the existing keys stay
    assert {"machine", "git", "stage_wall_seconds"} <= set(recorded)
    # with a GPU: its name, and the CUDA version of the build
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H200")
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    assert provenance_module.environment(["cuda"]) == {"devices": ["cuda"], "torch": torch.__version__,
                                                       "torch_cuda": "12.6", "gpu": "NVIDIA H200"}
    # what compare reads back from it
    assert environment_of(json.loads(json.dumps(recorded)), "p").devices == ("cuda",)
