"""The output stages and commands against a careless or hostile user: every fault ends in a one-line
``Error:`` that names the problem and the fix, or in a clean recovery, with nothing lost.

The numbered sections follow the faults: (1) a report or figures stage failing midway, which must
leave the previous outputs as they were; (2) a non-finite or non-numeric metric in compare's input;
(3) bench options that cannot work (a GPU that is not there, counts of zero or below); (4) bench's
contention measurement, which must never leave its competing process behind.
"""
import json
import math
import subprocess
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pipeline.bench import bench as bench_module
from pipeline.bench import contention as contention_module
from pipeline.reporting import figures as figures_module
from pipeline.reporting import report as report_module
from pipeline.cli import main
from pipeline.plumbing.files import staging_pattern
from pipeline.plumbing.params import load_params
from pipeline.reporting.reference import REFERENCE_DIR
from vae_core import ModelConfig, VariationalAutoEncoder

from .conftest import REPO
from .test_report import SETTINGS, make_curves, make_finals, make_marginal_likelihoods


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def staging_leftovers(target: Path) -> list[Path]:
    return list(target.parent.glob(staging_pattern(target)))


def one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    return lines[0]


# --------------------------------------------------------------------------------------------------
# 1. A stage's outputs appear together or not at all
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def report_inputs(tmp_path, monkeypatch):
    """make_report on constructed runs: (out, figures dir, params); reports/t already holds figures."""
    monkeypatch.setattr(report_module, "load_curves",
                        lambda root, experiment, **_: make_curves() if experiment == "fig2" else make_curves().iloc[:0])
    monkeypatch.setattr(report_module, "load_finals",
                        lambda root, experiment, **_: make_finals() if experiment == "fig3" else make_finals().iloc[:0])
    monkeypatch.setattr(report_module, "load_marginal_likelihoods",
                        lambda root, experiment, **_: make_marginal_likelihoods())
    monkeypatch.setattr(report_module, "build_provenance", lambda *args: {
        "git": {"commit": "abc"}, "binarize": ["stochastic"], "params_sha256": "0" * 64, "data_sha256": {},
        "packages": {}, "devices": ["cpu"], "machine": {}, "stage_wall_seconds": {}})
    out = tmp_path / "reports" / "t"
    figures = out / "figures"
    figures.mkdir(parents=True)
    (figures / "fig2.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (figures / "fig2.svg").write_text("<svg/>")
    (figures / "figures.json").write_text(json.dumps({"figures": {"fig2": ["fig2.png", "fig2.svg"]},
                                                      "wall_seconds": 1.0}))
    (tmp_path / "runs").mkdir()
    params = {"profile": "t", "report": SETTINGS, "data": {"raw_dir": str(tmp_path / "raw")}}
    return out, figures, params


def call_make_report(tmp_path, out, figures, params):
    return report_module.make_report(tmp_path / "runs", figures, out, params, REPO / "params.yaml",
                                     REPO / REFERENCE_DIR)


def test_1_report_publishes_its_outputs_beside_the_figures(tmp_path, report_inputs):
    out, figures, params = report_inputs
    before = snapshot(figures)
    call_make_report(tmp_path, out, figures, params)
    assert {"report.md", "report.html", "metrics.json", "provenance.json", "plots", "figures"} == \
        {p.name for p in out.iterdir()}
    assert snapshot(figures) == before
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert staging_leftovers(out) == []


def test_1_report_failing_midway_leaves_the_previous_outputs_as_they_were(tmp_path, report_inputs, monkeypatch):
    out, figures, params = report_inputs
    for name in ("report.md", "report.html", "metrics.json", "provenance.json", "plots/fig3.csv"):
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text(f"the previous {name}\n")
    before = snapshot(out)

    def broken_render_html(*args):
        raise OSError("disk full while rendering report.html")

    monkeypatch.setattr(report_module, "render_html", broken_render_html)
    with pytest.raises(OSError, match="disk full"):
        call_make_report(tmp_path, out, figures, params)
    assert snapshot(out) == before
    assert staging_leftovers(out) == []


@pytest.fixture
def figure_inputs(tmp_path, monkeypatch):
    """make_figures on constructed curves: (runs root, out, params file); no run for Figures 4-5."""
    monkeypatch.setattr(figures_module, "load_curves", lambda root, experiment, **_: make_curves())
    monkeypatch.setattr(figures_module, "load_marginal_likelihoods",
                        lambda root, experiment, **_: make_marginal_likelihoods())
    (tmp_path / "runs").mkdir()
    return tmp_path / "runs", tmp_path / "reports" / "t" / "figures", REPO / "params.yaml"


def tiny_final_model(run_dir):
    """Stands in for a trained run's model (find_run is stubbed to return the configuration)."""
    dataset, nz = run_dir
    torch.manual_seed(0)
    if dataset == "frey_face":
        return VariationalAutoEncoder(ModelConfig(560, nz, 8, "gaussian")).double()
    return VariationalAutoEncoder(ModelConfig(784, nz, 8, "bernoulli")).double()


@pytest.fixture
def figure_models(figure_inputs, monkeypatch):
    """Figures 4 and 5 from tiny untrained models, and fewer panels (a faster test): the params."""
    monkeypatch.setattr(figures_module, "find_run", lambda root, experiment, dataset, nz: (dataset, nz))
    monkeypatch.setattr(figures_module, "load_final_model", tiny_final_model)
    params = load_params(figure_inputs[2])
    experiments = params["experiments"]
    experiments["fig2"]["mnist"]["nz"], experiments["fig2"]["frey_face"]["nz"] = [3], [2]
    experiments["fig4"]["samples_nz"] = [2]
    return params


def test_1_figures_publish_together_and_keep_unrelated_files(figure_inputs, figure_models):
    runs, out, _ = figure_inputs
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("not the stage's\n")
    (out / "fig2.png").write_bytes(b"an old figure")
    index = figures_module.make_figures(runs, out, figure_models, REPO / REFERENCE_DIR)
    names = {f for files in index["figures"].values() for f in files}
    assert {p.name for p in out.iterdir()} == names | {"figures.json", "notes.txt"}
    assert (out / "fig2.png").read_bytes() != b"an old figure"
    assert staging_leftovers(out) == []


def test_1_figures_failing_while_drawing_leave_the_previous_figures(figure_inputs, figure_models, monkeypatch):
    runs, out, _ = figure_inputs
    out.mkdir(parents=True)
    for name in ("fig2.png", "fig3.png", "figures.json"):
        (out / name).write_text(f"the previous {name}\n")
    before = snapshot(out)

    def broken_figure_5(*args):
        raise MemoryError("out of memory drawing Figure 5")

    monkeypatch.setattr(figures_module, "figure_5", broken_figure_5)
    with pytest.raises(MemoryError):
        figures_module.make_figures(runs, out, figure_models, REPO / REFERENCE_DIR)
    assert snapshot(out) == before
    assert staging_leftovers(out) == []


def test_1_figures_failing_on_a_missing_run_leave_the_previous_figures(figure_inputs):
    runs, out, params_path = figure_inputs
    out.mkdir(parents=True)
    for name in ("fig2.png", "fig2.svg", "fig3.png", "fig3.svg", "fig4.png", "fig5.png"):
        (out / name).write_text(f"the previous {name}\n")
    (out / "figures.json").write_text('{"figures": {}, "wall_seconds": 1.0}\n')
    before = snapshot(out)
    result = CliRunner().invoke(main, ["figures", "--runs", str(runs), "--out", str(out), "--params", str(params_path)])
    assert result.exit_code == 1
    line = one_error_line(result.output)
    assert "no aevb run of frey_face with Nz = 2" in line and "dvc repro" in line
    assert snapshot(out) == before
    assert staging_leftovers(out) == []


# --------------------------------------------------------------------------------------------------
# 2. compare rejects a metric that is not a finite number
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, problem", [
    ("NaN", "not a finite number"), ("Infinity", "not a finite number"), ("-Infinity", "not a finite number"),
    ("1e999", "not a finite number"), ("1" + "0" * 400, "not a finite number"),
    ("true", "not a number"), ('"fast"', "not a number"), ("[1]", "not a number"),
])
def test_2_compare_rejects_a_metric_that_is_not_a_finite_number(tmp_path, text, problem):
    base, new = tmp_path / "base.json", tmp_path / "new.json"
    base.write_text('{"fig2/mnist/nz20/aevb/test_lb": -100.0, "speed/fig2/x/samples_per_second": %s}' % text)
    new.write_text(json.dumps({"fig2/mnist/nz20/aevb/test_lb": -100.0, "speed/fig2/x/samples_per_second": 1.0}))
    result = CliRunner().invoke(main, ["compare", str(base), str(new), "--params", str(REPO / "params.yaml")])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert str(base) in line and "'speed/fig2/x/samples_per_second'" in line and problem in line


# --------------------------------------------------------------------------------------------------
# 3. bench refuses options that cannot work, before measuring anything
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def bench_not_run(monkeypatch):
    """run_bench fails the test if it is reached: every case here must stop before measuring."""
    def run_bench(*args, **kwargs):
        raise AssertionError("bench started measuring despite a bad option")

    monkeypatch.setattr(bench_module, "run_bench", run_bench)


def test_3_bench_on_cuda_without_a_gpu_is_a_one_line_error(tmp_path, bench_not_run, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--device", "cuda", "--out", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    line = one_error_line(result.output)
    assert "no CUDA device" in line and "auto or cpu" in line
    assert not out.exists()


@pytest.mark.parametrize("option, value", [("--steps", "0"), ("--repeats", "0"), ("--steps", "-5"),
                                           ("--marginal-likelihood-points", "-1"), ("--threads", "-2")])
def test_3_bench_refuses_counts_out_of_range(tmp_path, bench_not_run, option, value):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", option, value, "--out", str(out)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    line = one_error_line(result.output.splitlines()[-1])
    assert option in line and "range" in line
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# 4. bench's contention measurement never leaves its competitor running
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def competitors(monkeypatch):
    """The competing processes bench starts, recorded."""
    started = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(contention_module.subprocess, "Popen", popen)
    monkeypatch.setattr(contention_module, "WATCH_SECONDS", 0.0)
    return started


def test_4_a_failing_measurement_still_kills_the_competitor_and_restores_the_thread_count(competitors, monkeypatch):
    threads = torch.get_num_threads()

    def train(steps):
        if competitors:
            assert competitors[0].poll() is None  # running while measured
            raise RuntimeError("measurement failed")

    monkeypatch.setattr(contention_module, "algorithm_loop", lambda *args: (train, None))
    with pytest.raises(RuntimeError, match="measurement failed"):
        contention_module.contention_bench(torch.zeros(1, 784), torch.device("cpu"), chunk_steps=2, seconds=0,
                                      settle_seconds=0)
    assert len(competitors) == 1 and competitors[0].poll() is not None
    assert torch.get_num_threads() == threads


def test_4_contention_reports_every_rate_and_restores_the_thread_count(competitors, monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr(contention_module, "algorithm_loop", lambda *args: (lambda n: time.sleep(1e-3 * n), None))
    result = contention_module.contention_bench(torch.zeros(1, 784), torch.device("cpu"), rounds=2, chunk_steps=2,
                                           seconds=0, settle_seconds=0)
    assert torch.get_num_threads() == threads
    assert len(competitors) == 2 * len(contention_module.MODELS)  # one a round
    assert all(process.poll() is not None for process in competitors)
    assert set(result["models"]) == set(contention_module.MODELS)
    for entry in result["models"].values():
        assert set(entry["samples_per_second"]) == set(entry["threads"]) == {"quiet", "contended", "contended_pinned"}
        assert set(entry["ratios"]) == {"contended_over_quiet", "pinned_over_quiet"}
        assert all(len(rates["repeats"]) == 2 for rates in entry["samples_per_second"].values())
        numbers = [rates["median"] for rates in entry["samples_per_second"].values()] + [*entry["ratios"].values()]
        assert all(math.isfinite(v) and v > 0 for v in numbers)
    lines = contention_module.contention_lines(result)
    assert len(lines) == 1 + len(contention_module.MODELS) and all("pinned" in line for line in lines[1:])
