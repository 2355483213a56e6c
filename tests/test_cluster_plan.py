"""``vaebench cluster-plan`` (pipeline/cluster/plan.py and the modules it puts together): list
scheduling on hand-made stage graphs whose answers are worked out by hand, the scaling of measured
costs from one profile's budgets to another's, and the command on the committed
reports/default/provenance.json."""
from __future__ import annotations

import ast
import collections
import copy
import json

import pytest
from click.testing import CliRunner

from pipeline.cluster import measured_costs, training_stages
from pipeline.cluster.cost_model import (
    marginal_likelihood_seed_work,
    marginal_likelihood_stage_seconds,
    seeds_wall_factor,
    training_work,
)
from pipeline.cluster.measured_costs import (
    CostsError,
    MeasuredCosts,
    configuration_rates,
    params_at_commit,
    resolve_costs_params,
)
from pipeline.cluster.plan import plan_cluster, scaled_stages
from pipeline.cluster.scheduling import Stage, critical_path, list_schedule
from pipeline.cluster.training_stages import configurations, with_profile
from pipeline.commands.cluster_plan import cluster_plan
from pipeline.evaluation.marginal_likelihood import settings_from_params
from pipeline.plumbing.git import GitUnavailableError, head_commit
from pipeline.plumbing.params import load_params
from pipeline.runs.config import configuration_seeds
from pipeline.runs.configurations import expected_configurations

from .conftest import REPO


# --- scheduling on hand-made graphs -----------------------------------------------------------

def _independent():
    return [Stage("a", 3.0), Stage("b", 2.0), Stage("c", 2.0)]


def test_independent_tasks_on_one_worker_take_their_sum():
    assert list_schedule(_independent(), 1, overhead=0.0).wall_seconds == pytest.approx(7.0)


def test_independent_tasks_on_two_workers_longest_first():
    # LPT: a (3) on one worker, b (2) on the other, then c (2) after b: ends at 4 (the optimum)
    schedule = list_schedule(_independent(), 2, overhead=0.0)
    assert schedule.wall_seconds == pytest.approx(4.0)
    starts = {s.name: s.start for s in schedule.stages}
    assert starts == {"a": 0.0, "b": 0.0, "c": 2.0}
    assert schedule.utilisation == pytest.approx(7.0 / (2 * 4.0))


def test_unlimited_workers_give_the_longest_task():
    assert list_schedule(_independent(), 10, overhead=0.0).wall_seconds == pytest.approx(3.0)


def _pipeline_graph():
    """download -> prepare -> t1, t2, t3 (workers); t1 -> m1 (worker); all -> figures -> report."""
    return [
        Stage("download", 1.0, (), on_worker=False),
        Stage("prepare", 1.0, ("download",), on_worker=False),
        Stage("t1", 5.0, ("prepare",)),
        Stage("t2", 3.0, ("prepare",)),
        Stage("t3", 1.0, ("prepare",)),
        Stage("m1", 2.0, ("t1",)),
        Stage("figures", 1.0, ("t1", "t2", "t3", "m1"), on_worker=False),
        Stage("report", 1.0, ("figures",), on_worker=False),
    ]


def test_critical_path_of_a_pipeline_graph():
    path = critical_path(_pipeline_graph(), overhead=0.0)
    assert path.stages == ("download", "prepare", "t1", "m1", "figures", "report")
    assert path.seconds == pytest.approx(11.0)
    # a worker task pays the overhead, a coordinator stage does not: 11 + 2 tasks x 1
    assert critical_path(_pipeline_graph(), overhead=1.0).seconds == pytest.approx(13.0)


def test_pipeline_graph_on_one_and_two_workers():
    # one worker: coordinator 2 + worker tasks 5 + 3 + 1 + 2 + coordinator 2
    assert list_schedule(_pipeline_graph(), 1, overhead=0.0).wall_seconds == pytest.approx(15.0)
    # two workers: t1 2-7 and t2 2-5, t3 5-6, m1 7-9, figures 9-10, report 10-11: the critical path
    two = list_schedule(_pipeline_graph(), 2, overhead=0.0)
    assert two.wall_seconds == pytest.approx(11.0)
    ends = {s.name: s.end for s in two.stages}
    assert ends == pytest.approx({"download": 1, "prepare": 2, "t1": 7, "t2": 5, "t3": 6, "m1": 9, "figures": 10,
                                  "report": 11})
    assert two.worker_busy_seconds == pytest.approx(11.0)
    # with a 1 s overhead per worker task: 19 on one worker, the critical path (13) on two
    assert list_schedule(_pipeline_graph(), 1, overhead=1.0).wall_seconds == pytest.approx(19.0)
    assert list_schedule(_pipeline_graph(), 2, overhead=1.0).wall_seconds == pytest.approx(13.0)


def test_a_short_task_that_unlocks_a_long_chain_starts_first():
    stages = [Stage("long", 5.0), Stage("short", 1.0), Stage("after_short", 10.0, ("short",))]
    schedule = list_schedule(stages, 1, overhead=0.0)
    assert [s.name for s in schedule.stages] == ["short", "after_short", "long"]
    assert list_schedule(stages, 2, overhead=0.0).wall_seconds == pytest.approx(11.0)


def test_coordinator_stages_run_one_at_a_time():
    stages = [Stage("x", 2.0, on_worker=False), Stage("y", 3.0, on_worker=False)]
    assert list_schedule(stages, 8, overhead=5.0).wall_seconds == pytest.approx(5.0)


def test_plan_rows_speed_up_and_bounds():
    plan = plan_cluster(_pipeline_graph(), [2, 1, 4], overhead=0.0)
    assert [r.workers for r in plan.rows] == [1, 2, 4]
    assert [r.wall_seconds for r in plan.rows] == pytest.approx([15.0, 11.0, 11.0])
    assert plan.rows[1].speed_up == pytest.approx(15.0 / 11.0)
    assert [r.limited_by for r in plan.rows] == ["workers", "critical path", "critical path"]
    assert all(r.wall_seconds >= r.lower_bound_seconds - 1e-9 for r in plan.rows)
    assert list(plan.table().columns) == ["workers", "wall_hours", "speed_up", "utilisation", "lower_bound_hours",
                                          "limited_by"]


@pytest.mark.parametrize("stages, message", [
    ([Stage("a", 1.0, ("b",)), Stage("b", 1.0, ("a",))], "cycle"),
    ([Stage("a", 1.0, ("nowhere",))], "nowhere"),
    ([Stage("a", 1.0), Stage("a", 2.0)], "twice"),
    ([Stage("a", -1.0)], "cost"),
])
def test_bad_graphs_are_named(stages, message):
    with pytest.raises(ValueError, match=message):
        list_schedule(stages, 1, overhead=0.0)


def test_zero_workers_is_an_error():
    with pytest.raises(ValueError, match="at least 1"):
        list_schedule(_independent(), 0, overhead=0.0)


# --- the cost model ---------------------------------------------------------------------------

def test_seed_factors():
    assert seeds_wall_factor(3, stacked=True, side_by_side=True, cores=2) == 3
    assert seeds_wall_factor(3, stacked=False, side_by_side=True, cores=2) == 2
    assert seeds_wall_factor(3, stacked=False, side_by_side=True, cores=4) == 1
    assert seeds_wall_factor(1, stacked=False, side_by_side=True, cores=2) == 1
    assert seeds_wall_factor(3, stacked=False, side_by_side=False, cores=2) == 3


def test_marginal_likelihood_stage_takes_the_longest_seed_or_the_shared_cores():
    assert marginal_likelihood_stage_seconds([10.0, 2.0, 2.0], cores=2) == pytest.approx(10.0)
    assert marginal_likelihood_stage_seconds([4.0, 4.0, 4.0], cores=2) == pytest.approx(6.0)
    assert marginal_likelihood_stage_seconds([4.0, 4.0, 4.0], cores=8) == pytest.approx(4.0)


@pytest.fixture
def params():
    """params.yaml with the budgets the hand calculations below use written out."""
    params = copy.deepcopy(load_params(REPO / "params.yaml"))
    params["optimizer"].update(step_size="auto", step_size_grid=[0.01, 0.02, 0.1])
    params["training"]["minibatch_size"] = 100
    params["evaluation"]["marginal_likelihood"].update(hmc_samples=50, burn_in=50, leapfrog_steps=4,
                                                       importance_samples=5000)
    default, paper = params["profiles"]["default"], params["profiles"]["paper"]
    default["seeds"] = {"list": [1, 2, 3], "several": ["fig2/*_nz20_aevb", "fig3/*"]}
    paper["seeds"] = {"list": [1, 2, 3], "several": ["*"]}
    default["fig2"].update(mnist={"samples": 1_000_000, "step_size_trial_samples": 50_000},
                           eval_points_per_decade=5, eval_first_samples=10_000, eval_train_points=10_000,
                           eval_test_points=10_000, checkpoint_every=500_000)
    paper["fig2"].update(mnist={"samples": 100_000_000, "step_size_trial_samples": 100_000},
                         eval_points_per_decade=5, eval_first_samples=10_000, eval_train_points=50_000,
                         eval_test_points=10_000, checkpoint_every=10_000_000)
    default["fig3"].update(mnist={"samples": 1_000_000, "step_size_trial_samples": 30_000}, checkpoint_every=125_000)
    default["fig3"]["marginal_likelihood"] = {
        "train_points": 1000, "test_points": 1000, "cross_checks": "final", "importance_samples": 2000,
        "cross_check_splits": ["test"], "other_seeds": {"splits": ["test"], "cross_checks": "none"}}
    paper["fig3"].update(mnist={"samples": 60_000_000, "step_size_trial_samples": 100_000}, checkpoint_every=2_000_000)
    paper["fig3"]["marginal_likelihood"] = {
        "train_points": 1000, "test_points": 1000, "cross_checks": "all",
        "other_seeds": {"splits": ["train", "test"], "cross_checks": "final"}}
    return params


def _measured(params, seconds=100.0, **overrides):
    """A provenance's stage costs: every stage of the default profile ``seconds``."""
    default = with_profile(params, "default")
    stages = {c.train_stage: seconds for c in configurations(default)}
    stages.update({c.marginal_likelihood_stage: seconds for c in configurations(default) if c.experiment == "fig3"})
    stages.update(estimator_variance=seconds, figures=5.0, report=2.0)
    stages.update(overrides)
    return MeasuredCosts(stages, "default", cores=2)


def _stage(scaled, name):
    return next(s for s in scaled.stages if s.name == name)


def test_a_profile_scaled_to_itself_keeps_the_measured_training_costs(params):
    default = with_profile(params, "default")
    measured = _measured(params, 100.0, **{"train fig2/mnist_nz20_aevb": 180.0, "train fig3/mnist_ntrain1000_mcem": 240.0})
    scaled = scaled_stages(default, default, measured, cores_per_worker=2)
    for configuration in configurations(default):
        assert _stage(scaled, configuration.train_stage).seconds == pytest.approx(
            measured.stage_seconds[configuration.train_stage])
    assert _stage(scaled, "estimator_variance").seconds == pytest.approx(100.0)


def test_one_seed_training_scaled_from_default_to_paper_by_hand(params):
    # default: one seed of MNIST Nz = 3 wake-sleep measured 100 s; 10% evaluation (docs/speed.md), 90% for
    # 10^6 samples + a 3 x 50,000-sample trial; 11 evaluations (10^4 .. 10^6, 5 per decade) x 20,000 points
    seconds_per_sample = 90.0 / (1_000_000 + 3 * 50_000)
    seconds_per_point = 10.0 / (11 * 20_000)
    # paper: 10^8 samples + 3 x 100,000 trial; 21 evaluations (10^4 .. 10^8) x 60,000 points; three
    # seeds side by side on 2 cores take twice one seed
    one_seed = seconds_per_sample * (100_000_000 + 300_000) + seconds_per_point * 21 * 60_000
    scaled = scaled_stages(with_profile(params, "paper"), with_profile(params, "default"), _measured(params),
                           cores_per_worker=2)
    stage = _stage(scaled, "train fig2/mnist_nz3_wake_sleep")
    assert stage.seeds == 3
    assert stage.seconds == pytest.approx(2 * one_seed)
    # with 4 cores the three seeds train at once
    wide = scaled_stages(with_profile(params, "paper"), with_profile(params, "default"), _measured(params),
                         cores_per_worker=4)
    assert _stage(wide, "train fig2/mnist_nz3_wake_sleep").seconds == pytest.approx(one_seed)


def test_stacked_seeds_are_per_seed_costs_times_seeds(params):
    # default: 3 stacked seeds of MNIST Nz = 20 AEVB took 300 s, so one seed 100 s; the paper's
    # three stacked seeds cost three paper seeds whatever the cores
    seconds_per_sample = 90.0 / (1_000_000 + 3 * 50_000)
    seconds_per_point = 10.0 / (11 * 20_000)
    one_seed = seconds_per_sample * (100_000_000 + 300_000) + seconds_per_point * 21 * 60_000
    measured = _measured(params, **{"train fig2/mnist_nz20_aevb": 300.0})
    for cores in (2, 8):
        scaled = scaled_stages(with_profile(params, "paper"), with_profile(params, "default"), measured, cores)
        assert _stage(scaled, "train fig2/mnist_nz20_aevb").seconds == pytest.approx(3 * one_seed)


def test_marginal_likelihood_work_of_one_seed_by_hand(params):
    default = with_profile(params, "default")
    fig3 = next(c for c in configurations(default) if c.experiment == "fig3")
    work = marginal_likelihood_seed_work(default, fig3, settings_from_params(default))
    # 8 checkpoints (10^6 / 125,000) x 2,000 points x (50 + 50) x 4 leapfrog steps; the cross-checks
    # on the final checkpoint's 1,000 test points, importance sampling with K = 2,000
    assert work.appendix_d == pytest.approx(8 * 2000 * 400)
    assert work.importance_sampling == pytest.approx(1000 * 2000)
    assert work.grid == pytest.approx(1000)
    paper = with_profile(params, "paper")
    work = marginal_likelihood_seed_work(paper, fig3, settings_from_params(paper))
    # 30 checkpoints, both splits everywhere, K = 5,000 (evaluation.marginal_likelihood)
    assert work.appendix_d == pytest.approx(30 * 2000 * 400)
    assert work.importance_sampling == pytest.approx(30 * 2000 * 5000)
    assert work.grid == pytest.approx(30 * 2000)


def test_marginal_likelihood_stage_keeps_its_measured_work_on_its_own_profile(params):
    # the measured seconds are the sum over seeds; with 3 seeds on many cores the stage is its longest seed
    default = with_profile(params, "default")
    scaled = scaled_stages(default, default, _measured(params, 300.0), cores_per_worker=64)
    stage = _stage(scaled, "marginal_likelihood fig3/mnist_ntrain1000_aevb")
    assert 100.0 < stage.seconds < 300.0
    paper = scaled_stages(with_profile(params, "paper"), default, _measured(params, 300.0), cores_per_worker=64)
    assert _stage(paper, "marginal_likelihood fig3/mnist_ntrain1000_aevb").seconds > 10 * stage.seconds


def test_runs_give_the_training_rates(params, tmp_path):
    seed_dir = tmp_path / "runs" / "fig2" / "mnist_nz3_wake_sleep" / "seed1"
    seed_dir.mkdir(parents=True)
    (seed_dir / "config.json").write_text(json.dumps({
        "dataset": "mnist", "algorithm": "wake_sleep", "n_train": 50_000, "step_size": None,
        "step_size_trial_samples": 50_000, "step_size_grid": [0.01, 0.02, 0.1], "eval_train_points": 10_000,
        "eval_test_points": 10_000, "evaluation_points": list(range(11)), "samples": 1_000_000}))
    (seed_dir / "final.json").write_text(json.dumps({
        "samples_seen": 1_000_000, "train_seconds": 10.0, "trial_seconds": 1.5, "eval_seconds": 2.2}))
    scaled = scaled_stages(with_profile(params, "paper"), with_profile(params, "default"), _measured(params),
                           cores_per_worker=2, runs_root=tmp_path / "runs")
    # 1e-5 s per sample, per trial sample and per evaluated point
    one_seed = 1e-5 * (100_000_000 + 300_000 + 21 * 60_000)
    assert _stage(scaled, "train fig2/mnist_nz3_wake_sleep").seconds == pytest.approx(2 * one_seed)
    assert any("for 1 of" in note for note in scaled.notes)


def test_a_stage_missing_from_the_costs_is_named_with_the_fix(params):
    measured = _measured(params)
    del measured.stage_seconds["train fig2/mnist_nz200_wake_sleep"]
    with pytest.raises(CostsError, match=r"train fig2/mnist_nz200_wake_sleep.*Fix: run the default profile"):
        scaled_stages(with_profile(params, "paper"), with_profile(params, "default"), measured)


STUDY_STAGES = [f"train binarization/mnist_nz{nz}_aevb_dynamic" for nz in (3, 5, 10, 20, 200)]


def test_binarization_study_stages_use_figure_2_mnist_budgets_and_seeds(params):
    default, paper = with_profile(params, "default"), with_profile(params, "paper")
    study = [c for c in configurations(default) if c.binarize is not None]
    assert [c.train_stage for c in study] == STUDY_STAGES
    nz3 = study[0]
    assert nz3.run_config(default).binarize == "dynamic" and params["training"]["binarize"] == "none"
    # Figure 2's MNIST samples (rounded up to minibatches), per profile
    assert training_work(default, nz3).samples == 1_000_000
    assert training_work(paper, nz3).samples == 100_000_000
    scaled = scaled_stages(paper, default, _measured(params), cores_per_worker=2)
    for name, configuration in zip(STUDY_STAGES, study):
        # seeds: fig2/<run name> against seeds.several ("*" on the paper profile: all three)
        assert _stage(scaled, name).seeds == len(configuration_seeds(paper, "fig2", configuration.run_name)) == 3
        assert _stage(scaled, name).after == ("prepare",)
    # default: one seed of 100 s measured, as Figure 2's MNIST Nz = 3 wake-sleep by hand above; the
    # paper's three stacked AEVB seeds take three paper seeds
    seconds_per_sample = 90.0 / (1_000_000 + 3 * 50_000)
    seconds_per_point = 10.0 / (11 * 20_000)
    one_seed = seconds_per_sample * (100_000_000 + 300_000) + seconds_per_point * 21 * 60_000
    assert _stage(scaled, STUDY_STAGES[0]).seconds == pytest.approx(3 * one_seed)
    # dvc.yaml: the report reads runs/binarization, figures and estimator_variance do not
    assert set(STUDY_STAGES) <= set(_stage(scaled, "report").after)
    assert not set(STUDY_STAGES) & set(_stage(scaled, "figures").after + _stage(scaled, "estimator_variance").after)


def test_binarization_study_without_its_own_costs_takes_its_figure_2_twins(params):
    default = with_profile(params, "default")
    measured = _measured(params, 100.0, **{"train fig2/mnist_nz20_aevb": 300.0})  # 3 stacked seeds: 100 s each
    for name in STUDY_STAGES:
        del measured.stage_seconds[name]
    scaled = scaled_stages(default, default, measured, cores_per_worker=2)
    for name in STUDY_STAGES:
        assert _stage(scaled, name).seconds == pytest.approx(100.0)  # one seed of its twin's
    assert any("train fig2/mnist_nz20_aevb" in note and STUDY_STAGES[3] in note for note in scaled.notes)
    # neither its own cost nor its twin's: the error names the study's stage
    del measured.stage_seconds["train fig2/mnist_nz5_aevb"]
    nz5 = next(c for c in configurations(default) if c.train_stage == STUDY_STAGES[1])
    with pytest.raises(CostsError, match=r"train binarization/mnist_nz5_aevb_dynamic.*Fix"):
        configuration_rates(nz5, default, measured, "default", runs_root=None)


def test_params_without_a_binarization_study_plan_without_it(params):
    del params["experiments"]["fig2"]["binarization_study"]
    default = with_profile(params, "default")
    assert all(c.binarize is None for c in configurations(default))
    scaled = scaled_stages(with_profile(params, "paper"), default, _measured(params), cores_per_worker=2)
    assert not any(s.name.startswith("train binarization/") for s in scaled.stages)
    assert _stage(scaled, "report").after == ("figures", "estimator_variance")


def test_costs_params_of_another_sha256_are_an_assumption_stated(params):
    measured = MeasuredCosts({}, "default", 2, params_sha256="not-these-params", commit=None)
    chosen, note = resolve_costs_params(measured, params, "params.yaml")
    assert chosen["profile"] == "default"
    assert note.startswith("assumption") and "--costs-params" in note


# --- the command on the committed provenance --------------------------------------------------

def _invoke(*args, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    return CliRunner().invoke(cluster_plan, ["--runs", str(tmp_path / "no_runs"), *args])


def test_command_on_committed_provenance(monkeypatch, tmp_path):
    result = _invoke("--json", monkeypatch=monkeypatch, tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    rows = plan["rows"]
    assert [r["workers"] for r in rows] == [1, 4, 16, 64]
    walls = [r["wall_hours"] for r in rows]
    assert walls == sorted(walls, reverse=True)
    assert all(w >= plan["critical_path"]["hours"] - 0.005 for w in walls)
    assert walls[0] == pytest.approx(plan["worker_hours"], rel=0.01)  # one worker runs every task in turn
    assert plan["critical_path"]["stages"][0] == "download" and plan["critical_path"]["stages"][-1] == "report"
    stage_names = {s["name"] for s in plan["stages"]}
    assert "marginal_likelihood fig3/mnist_ntrain50000_mcem" in stage_names


def test_command_prints_a_row_per_worker_count(monkeypatch, tmp_path):
    result = _invoke("--workers", "1", "--workers", "3", monkeypatch=monkeypatch, tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["workers", "wall_hours"])
    assert [line.split()[0] for line in lines[header + 1:header + 3]] == ["1", "3"]
    assert "Critical path" in result.output and "->" in result.output


def test_command_names_a_missing_costs_file(monkeypatch, tmp_path):
    result = _invoke("--costs", str(tmp_path / "nothing.json"), monkeypatch=monkeypatch, tmp_path=tmp_path)
    assert result.exit_code == 1
    assert "not found" in result.output and "--costs" in result.output


# --- one listing of configurations, each resolved once; git through pipeline/plumbing/git.py ----

PLAN_MODULES = ("scheduling", "training_stages", "cost_model", "measured_costs", "plan")  # bottom to top


def test_the_plan_modules_import_only_downward_and_stay_short():
    for level, name in enumerate(PLAN_MODULES):
        text = (REPO / "pipeline" / "cluster" / f"{name}.py").read_text()
        tree = ast.parse(text)
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        cluster = {module.rsplit(".", 1)[1] for module in imported if module.startswith("pipeline.cluster.")}
        assert cluster <= set(PLAN_MODULES[:level]), f"pipeline/cluster/{name}.py imports {cluster}"
        if name == "scheduling":
            assert not {m for m in imported if m.split(".")[0] in ("pipeline", "vae_core", "baselines")}
        assert len(text.splitlines()) <= 450, f"pipeline/cluster/{name}.py has {len(text.splitlines())} lines"


def test_the_plan_lists_the_configurations_the_report_lists(params):
    for profile in ("default", "paper", "smoke"):
        chosen = with_profile(params, profile)
        expected = expected_configurations(chosen)
        planned = configurations(chosen)
        assert [(c.folder, c.run_name) for c in planned] == list(zip(expected.experiment_dir, expected.configuration))
        assert [c.seeds(chosen) for c in planned] == list(expected.seeds)
        assert all(type(c.nz) is int and (c.ntrain is None or type(c.ntrain) is int) for c in planned)


@pytest.mark.parametrize("without_study_costs", [False, True])
def test_each_configuration_is_resolved_once_per_params(params, monkeypatch, without_study_costs):
    calls = collections.Counter()
    real = training_stages.build_run_config

    def counting(chosen, experiment, dataset, algorithm, z_dim, ntrain=None, *args, **kwargs):
        calls[(chosen["profile"], chosen["training"]["binarize"], experiment, dataset, algorithm, z_dim, ntrain)] += 1
        return real(chosen, experiment, dataset, algorithm, z_dim, ntrain, *args, **kwargs)

    monkeypatch.setattr(training_stages, "build_run_config", counting)
    measured = _measured(params)
    if without_study_costs:  # the study takes its Figure 2 twins' rates: the twins are not resolved again
        for name in STUDY_STAGES:
            del measured.stage_seconds[name]
    scaled = scaled_stages(with_profile(params, "paper"), with_profile(params, "default"), measured, cores_per_worker=2)
    assert calls and max(calls.values()) == 1, [key for key, n in calls.items() if n > 1]
    assert any("costed as" in note for note in scaled.notes) == without_study_costs


def test_params_at_commit_reads_params_yaml_through_the_git_helper():
    if head_commit(REPO) is None:
        pytest.skip("not a git checkout")
    at_head = params_at_commit("HEAD", REPO)
    assert isinstance(at_head, dict) and "profiles" in at_head


@pytest.mark.parametrize("answer", [
    GitUnavailableError("git is not available"),  # git cannot run
    (None, "fatal: invalid object name"),  # git cannot show it
    ("- a list, not a mapping\n", ""),
    ("profiles: {default: [unclosed\n", ""),  # not YAML
])
def test_params_at_commit_is_none_where_git_cannot_give_a_params_mapping(monkeypatch, answer):
    def show_file(revision, path, repo, timeout=60):
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(measured_costs, "show_file", show_file)
    assert params_at_commit("6e3e834", REPO) is None


def test_params_at_commit_is_none_for_an_option_or_a_folder_without_git(tmp_path):
    assert params_at_commit("--output=/tmp/x", REPO) is None
    assert params_at_commit("0" * 40, tmp_path) is None
