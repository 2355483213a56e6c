"""dvc.yaml's code dependencies and the result fingerprints come from one import graph
(pipeline/plumbing/code_dependencies.py; the stages' registry in stage_dependencies.py), and every
stage of dvc.yaml lists exactly what it derives.

A module missing from a stage's deps means DVC keeps that stage's outputs after the module changed
(vae_core/activations.py was once missing this way); a module listed but not imported re-runs a
stage for nothing (the figures stage once re-drew on every edit to the training loop).
"""
from pathlib import Path

import pytest
import yaml

from pipeline.plumbing.code_dependencies import (
    PACKAGES,
    ROOT,
    as_dependency_list,
    import_closure,
    imported_files,
    source_fingerprint,
)
from pipeline.plumbing.stage_dependencies import STAGE_MODULES, command_of, rewrite_dvc_yaml, stage_code_dependencies
from pipeline.evaluation.marginal_likelihood import ESTIMATOR_MODULES
from pipeline.training.train import TRAINING_MODULES

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def relative(paths):
    return {Path(p).relative_to(ROOT).as_posix() for p in paths}


@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_lists_exactly_the_code_it_imports(name):
    stage = STAGES[name]
    listed = sorted(dep for dep in stage["deps"] if dep.split("/")[0] in PACKAGES)
    expected = stage_code_dependencies(command_of(stage["cmd"]))
    assert listed == expected, (
        f"stage {name}: dvc.yaml lists {sorted(set(listed) - set(expected))} that it does not import and misses "
        f"{sorted(set(expected) - set(listed))}; run `python -m pipeline.plumbing.stage_dependencies --write`")


def test_rewriting_dvc_yaml_restores_a_removed_dependency_and_keeps_the_rest():
    text = (ROOT / "dvc.yaml").read_text()
    broken = text.replace("      - vae_core/activations.py\n", "", 1)
    assert broken != text
    assert rewrite_dvc_yaml(broken) == text
    assert rewrite_dvc_yaml(text) == text


def test_the_closure_follows_imports_across_packages_and_levels():
    # fused_aevb imports activations relatively; MCEM imports vae_core.hmc absolutely
    assert ROOT / "vae_core" / "activations.py" in imported_files(ROOT / "vae_core" / "fused_aevb.py")
    training = relative(import_closure(TRAINING_MODULES))
    assert {"vae_core/activations.py", "vae_core/hmc.py", "baselines/mcem.py", "pipeline/runs/directory.py"} <= training
    # a module's own package __init__ is not pulled in by `from vae_core.hmc import ...`
    assert "vae_core/__init__.py" not in relative(import_closure(("vae_core.hmc",)))


def test_stage_modules_do_not_import_each_other():
    stage_files = {module: ROOT.joinpath(*module.split(".")).with_suffix(".py")
                   for modules in STAGE_MODULES.values() for module in modules}
    for module in stage_files:
        others = {path for name, path in stage_files.items() if name != module}
        assert not others & set(import_closure((module,))), f"{module} imports another stage's module"


def test_the_marginal_likelihood_fingerprint_covers_method_code_only():
    closure = relative(import_closure(ESTIMATOR_MODULES))
    assert {"vae_core/marginal_likelihood/protocol.py", "vae_core/hmc.py", "vae_core/hand_gradients.py",
            "vae_core/decoder_likelihood.py", "vae_core/activations.py"} <= closure
    assert not any(path.startswith("pipeline/") for path in closure)
    assert "vae_core/fused_aevb.py" not in closure  # training code does not decide an estimate


def test_a_fingerprint_changes_with_any_file_in_its_closure(tmp_path, monkeypatch):
    import pipeline.plumbing.code_dependencies as code_dependencies

    copy = tmp_path / "repo"
    for package in PACKAGES:
        (copy / package).mkdir(parents=True)
    for path in import_closure(ESTIMATOR_MODULES):
        target = copy / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    monkeypatch.setattr(code_dependencies, "ROOT", copy)
    imported_files.cache_clear()
    before = source_fingerprint(ESTIMATOR_MODULES)
    hmc = copy / "vae_core" / "hmc.py"
    hmc.write_text(hmc.read_text() + "\n# an edit\n")
    imported_files.cache_clear()
    assert source_fingerprint(ESTIMATOR_MODULES) != before
    imported_files.cache_clear()


def test_a_folder_is_listed_whole_only_when_all_its_files_are_in():
    baselines = sorted((ROOT / "baselines").glob("*.py"))
    assert as_dependency_list(baselines) == ["baselines"]
    assert as_dependency_list(baselines[:1]) == [baselines[0].relative_to(ROOT).as_posix()]


def test_every_stage_command_has_a_stage_module():
    for name, stage in STAGES.items():
        assert command_of(stage["cmd"]) in STAGE_MODULES, name


def test_registering_a_stage_changes_no_training_fingerprint():
    """The stage registry (and the dvc.yaml tool) sits outside the training code's closure: adding
    a stage must not re-run every training stage nor stale the paper-budget archive."""
    closure = {path.relative_to(ROOT).as_posix() for path in import_closure(TRAINING_MODULES)}
    assert "pipeline/plumbing/code_dependencies.py" in closure  # the fingerprint is computed there
    assert "pipeline/plumbing/stage_dependencies.py" not in closure
