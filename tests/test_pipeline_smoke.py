"""Integration: the whole DVC pipeline on the smoke profile, in a copy of the repository."""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.reporting.render import markdown_links
from pipeline.runs.config import configuration_seeds

from .conftest import REPO, dvc  # smoke_repo: a session fixture in conftest.py

pytestmark = pytest.mark.integration
SMOKE_BUDGET_SECONDS = 300


def expected_configurations(params):
    """(configuration folder, budget, algorithm) of every training stage in dvc.yaml."""
    smoke = params["profiles"]["smoke"]
    fig2, fig3 = params["experiments"]["fig2"], params["experiments"]["fig3"]
    runs = [(f"fig2/{d}_nz{nz}_{a}", smoke["fig2"][d]["samples"], a)
            for d in ("mnist", "frey_face") for nz in fig2[d]["nz"] for a in fig2["algorithms"]]
    runs += [(f"fig3/mnist_ntrain{n}_{a}", smoke["fig3"]["mnist"]["samples"], a)
             for n in fig3["ntrain"] for a in fig3["algorithms"]]
    nz = params["experiments"]["fig4"]["mnist"]["nz"]  # Figures 4 and 5's extra MNIST model
    runs.append((f"fig2/mnist_nz{nz}_aevb", smoke["fig2"]["mnist"]["samples"], "aevb"))
    study = fig2["binarization_study"]  # the binarization study: Figure 2's budgets and seed patterns
    runs += [(f"binarization/mnist_nz{nz}_aevb_{study['binarize']}", smoke["fig2"]["mnist"]["samples"], "aevb")
             for nz in study["nz"]]
    return runs


def expected_runs(params):
    """(run directory, budget, algorithm, seed) of every seed of every configuration."""
    def seeds(name):
        folder, run = name.split("/")
        return configuration_seeds(params, "fig2" if folder == "binarization" else folder, run)

    return [(f"{name}/seed{seed}", budget, algorithm, seed)
            for name, budget, algorithm in expected_configurations(params) for seed in seeds(name)]


def test_smoke_pipeline_trains_every_configuration(smoke_repo):
    repo, _, params, elapsed = smoke_repo
    runs = expected_runs(params)
    assert {a for _, _, a, _ in runs} == {"aevb", "wake_sleep", "mcem"}
    assert {s for _, _, _, s in runs} == {1, 2}, "the smoke profile trains some configurations with two seeds"
    curves = {}
    for name, budget, algorithm, seed in runs:
        run_dir = repo / "runs" / name
        curve = pd.read_csv(run_dir / "curve.csv")
        curves[name] = curve.drop(columns="wall_seconds")
        assert json.loads((run_dir / "config.json").read_text())["seed"] == seed
        assert list(curve.columns) == ["samples_seen", "wall_seconds", "split", "metric", "value"]
        assert np.isfinite(curve.value).all() and curve.samples_seen.max() == budget
        final = json.loads((run_dir / "final.json").read_text())
        assert final["step_size"] in params["optimizer"]["step_size_grid"]
        assert (run_dir / "checkpoints" / f"samples_{budget:012d}.pt").exists()
        if algorithm == "mcem":  # no encoder, no bound: the curve carries the HMC tuner's state
            acceptance = curve[curve.metric == "hmc_acceptance_rate"].value
            assert len(acceptance) > 0 and ((acceptance > 0) & (acceptance <= 1)).all()
            continue
        bound = curve[(curve.metric == "lower_bound") & (curve.split == "train")].value
        assert set(curve[curve.metric == "lower_bound"].split) == {"train", "test"}
        assert bound.iloc[-1] > bound.iloc[0], f"{name}: the bound did not improve"
    for name in curves:  # a second seed is another run, not a copy of the first
        if name.endswith("seed2"):
            assert not curves[name].equals(curves[name.replace("seed2", "seed1")]), name
    # The smoke profile's budget is 5 minutes on 2 cores; it takes about 3 on a quiet machine here
    # (docs/compare.md, "The CI gate"). Wall time on a shared CI machine varies far more than that margin (the same commit
    # took 180 s and 313 s), so this guard fails only on a real regression -- past twice the
    # budget -- and the fixture writes the time beside the smoke report, where .ci/run prints it.
    assert elapsed < 2 * SMOKE_BUDGET_SECONDS, (
        f"the smoke profile took {elapsed:.0f} s, more than twice its {SMOKE_BUDGET_SECONDS} s budget")


def test_smoke_pipeline_estimates_figure_3s_marginal_likelihood(smoke_repo):
    repo, _, params, _ = smoke_repo
    fig3 = params["experiments"]["fig3"]
    budget = params["profiles"]["smoke"]["fig3"]
    checkpoints = list(range(budget["checkpoint_every"], budget["mnist"]["samples"] + 1, budget["checkpoint_every"]))
    for ntrain in fig3["ntrain"]:
        for algorithm in fig3["algorithms"]:
            name = f"mnist_ntrain{ntrain}_{algorithm}"
            seeds = configuration_seeds(params, "fig3", name)
            folder = repo / "runs" / "marginal_likelihood" / "fig3" / name
            for seed in seeds[1:]:  # the other seeds: Appendix D on the test points (params.yaml other_seeds)
                other = pd.read_csv(folder / f"seed{seed}.csv")
                assert set(other.estimator) == {"appendix_d"} and set(other.split) == {"test"}
                assert sorted(other.samples_seen.unique()) == checkpoints
            frame = pd.read_csv(folder / f"seed{seeds[0]}.csv")
            appendix_d = frame[frame.estimator == "appendix_d"]
            assert sorted(appendix_d.samples_seen.unique()) == checkpoints
            assert (appendix_d.groupby("samples_seen").split.nunique() == 2).all()
            final = frame[frame.samples_seen == checkpoints[-1]].set_index(["split", "estimator"]).value
            assert np.isfinite(frame.value).all()
            for split in ("train", "test"):  # the paper's estimator against the exact integral
                assert abs(final[(split, "appendix_d")] - final[(split, "grid")]) < 1.0, (ntrain, algorithm, split)


def test_smoke_pipeline_is_up_to_date_after_repro(smoke_repo):
    repo, env, _, _ = smoke_repo
    status = dvc("status", cwd=repo, env=env)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout


def test_smoke_pipeline_draws_every_figure_and_writes_the_report(smoke_repo):
    repo, env, params, _ = smoke_repo
    report_dir = repo / "reports" / "smoke"
    for name in ("fig2", "fig3", "fig4", "fig5"):
        for suffix in ("png", "svg"):
            assert (report_dir / "figures" / f"{name}.{suffix}").stat().st_size > 1000, (name, suffix)
    text = (report_dir / "report.md").read_text()
    links = markdown_links(text)
    assert {f"figures/fig{k}.png" for k in (2, 3, 4, 5)} <= set(links)
    missing = [link for link in links if not (report_dir / link).exists()]
    assert not missing, f"report.md links to missing files: {missing}"
    # the fidelity tables: Appendix D's bias against the grid, and the linear-Gaussian floor. On the
    # training faces (maximum likelihood) the nesting must show: independent pixels is FA with W = 0,
    # PPCA is FA with an isotropic Psi, and FA with more latents contains FA with fewer
    assert "App. D - grid" in text and "Appendix D's standard error" in text
    assert "Frey Face: the linear-Gaussian floor" in text
    linear = pd.read_csv(repo / "runs" / "linear_reference.csv")
    train = linear[linear.split == "train"].set_index(["model", "nz"]).log_likelihood
    latent_sizes = sorted(params["experiments"]["fig2"]["frey_face"]["nz"])
    for nz in latent_sizes:
        assert train[("factor_analysis", nz)] > train[("independent_pixels", 0)]
        assert train[("factor_analysis", nz)] >= train[("probabilistic_pca", nz)] - 0.5
    assert all(train[("factor_analysis", a)] < train[("factor_analysis", b)]
               for a, b in zip(latent_sizes, latent_sizes[1:]))
    # a log-likelihood for every Figure 2 model: the sandwich closes from both sides (reverse AIS
    # above forward AIS), AIS sits against the grid on every Figure 3 model
    assert "How loose is the bound" in text
    estimates = pd.read_csv(repo / "runs" / "log_likelihood.csv")
    fig2 = estimates[estimates.experiment == "fig2"]
    # every Figure 2 configuration (the grid, and Figure 4's MNIST Nz = 2 model, which lives there too)
    assert set(fig2.run) == {path.name for path in (repo / "runs" / "fig2").iterdir() if path.is_dir()}
    gaps = []
    for _, group in fig2.groupby("run"):
        value, error = group.set_index("estimator").value, group.set_index("estimator").standard_error
        assert set(value.index) == {"elbo", "importance_weighted", "ais", "bdmc_lower", "bdmc_upper"}
        # where the chains mix, the two sides meet to within their noise; never upper far under lower
        noise = 3 * (error["bdmc_lower"] ** 2 + error["bdmc_upper"] ** 2) ** 0.5
        assert value["bdmc_upper"] > value["bdmc_lower"] - noise - 0.05, group
        gaps.append(value["bdmc_upper"] - value["bdmc_lower"])
    assert sum(gaps) / len(gaps) > 0
    fig3 = estimates[estimates.experiment == "fig3"].pivot_table(index="run", columns="estimator", values="value")
    assert len(fig3) == len(params["experiments"]["fig3"]["algorithms"]) * len(params["experiments"]["fig3"]["ntrain"])
    assert (fig3.ais - fig3.grid).abs().max() < 10.0  # 2 chains, 20 steps: close, not exact
    page = (report_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # self-contained: the figures are embedded
    hrefs = re.findall(r'href="([^"]+)"', page)
    assert hrefs and all((report_dir / h).exists() for h in hrefs), hrefs
    metrics = json.loads((report_dir / "metrics.json").read_text())
    for claim in ("aevb_better_bound", "aevb_converges_faster", "no_overfitting_with_more_latents",
                  "aevb_fastest_marginal_likelihood", "mcem_impractical_on_full_set", "estimator_b_lower_variance"):
        assert metrics[f"claims/{claim}"] in (0, 0.5, 1)  # every claim judged from the smoke run's data
    for name, _, algorithm in expected_configurations(params):
        experiment, run = name.split("/")
        assert f"speed/{experiment}/{run}/samples_per_second" in metrics
    assert "fig2/mnist/nz20/aevb/test_lb" in metrics and "fig3/ntrain50000/mcem/test_ml" in metrics
    # two seeds: the mean, its seed spread, the count and each seed's value
    per_seed = [metrics[f"fig2/mnist/nz20/aevb/seed{s}/test_lb"] for s in (1, 2)]
    assert metrics["fig2/mnist/nz20/aevb/seeds"] == 2
    assert metrics["fig2/mnist/nz20/aevb/test_lb"] == pytest.approx(np.mean(per_seed), abs=1e-5)
    assert metrics["fig2/mnist/nz20/aevb/test_lb_seed_se"] == pytest.approx(np.std(per_seed, ddof=1) / np.sqrt(2), abs=1e-5)
    assert "fig3/ntrain1000/aevb/test_ml_seed_se" in metrics and metrics["fig2/mnist/nz3/aevb/seeds"] == 1
    assert "the paper's curves at this budget" in text and "agreement" in text
    provenance = json.loads((report_dir / "provenance.json").read_text())
    assert provenance["profile"] == "smoke" and len(provenance["data_sha256"]) >= 2
    assert provenance["stage_wall_seconds"]["figures"] > 0
    shown = dvc("metrics", "show", "--json", cwd=repo, env=env)
    assert shown.returncode == 0 and "fig2/mnist/nz20/aevb/test_lb" in shown.stdout, shown.stderr
    plots = dvc("plots", "show", "--json", cwd=repo, env=env)
    assert plots.returncode == 0 and "plots/fig3.csv" in plots.stdout, plots.stderr[-2000:]


def vaebench_compare(*args, cwd, env):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "compare", *map(str, args)], cwd=cwd, env=env,
                          text=True, capture_output=True, timeout=300)


def test_the_smoke_report_matches_the_committed_one(smoke_repo):
    """The CI gate on unmodified code: the fresh smoke metrics against reports/smoke/metrics.json
    as committed (throughput over a 20,000-sample run is not a speed benchmark: `vaebench bench`)."""
    repo, env, _, _ = smoke_repo
    committed = REPO / "reports" / "smoke"
    assert (committed / "metrics.json").is_file(), "commit the smoke report (see docs/compare.md: the CI gate)"
    result = vaebench_compare(committed, repo / "reports" / "smoke", "--exclude", "speed/*",
                              "--params", REPO / "params.yaml", cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_the_gate_fails_on_an_injected_regression(smoke_repo, tmp_path):
    """A halved Adagrad step size for the MNIST runs of Figure 2, applied in a copy of the smoke
    repository: DVC re-runs only the stages it touches, and compare must call it a regression."""
    repo, env, _, _ = smoke_repo
    copy = tmp_path / "regressed"
    shutil.copytree(repo, copy, symlinks=True)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    mnist = params["profiles"]["smoke"]["fig2"]["mnist"]
    mnist["step_size"] = mnist["step_size"] / 2
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    regressed_env = {**env, "PYTHONPATH": str(copy)}
    result = dvc("repro", cwd=copy, env=regressed_env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Running stage 'fig3" not in result.stdout  # only the stages the change touches
    gate = vaebench_compare(repo / "reports" / "smoke", copy / "reports" / "smoke", "--exclude", "speed/*",
                            "--format", "json", "--params", REPO / "params.yaml", cwd=REPO, env=env)
    assert gate.returncode == 1, gate.stdout[-4000:] + gate.stderr[-2000:]
    worse = set(json.loads(gate.stdout)["regressions"])
    assert any(key.startswith("fig2/mnist/") and key.endswith("_lb") for key in worse), worse
    assert not any(key.startswith("fig3/") for key in worse), worse
