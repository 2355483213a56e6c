"""dvc.yaml: the training and marginal-likelihood stages depend on every vae_core module that the
vae_core modules they list import.

A module missing from a stage's deps means DVC would keep that stage's outputs after the module
changed (vae_core/activations.py, imported by the fused update and the hand-derived gradients,
was once missing this way). The check follows imports within vae_core from each vae_core file
or directory a stage lists and requires every module reached to be listed too (or to lie in a
listed directory). The pipeline/ and baselines/ files a stage lists are chosen by hand (the
command modules import more than the computation uses), and the estimator-variance, figure and
report stages, which import vae_core as a package but compute with a few of its modules, are
not held to the closure.
"""
import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vae_core",)
CHECKED_COMMANDS = ("vaebench train", "vaebench evaluate marginal-likelihood")


def module_file(dotted: str) -> Path | None:
    path = ROOT.joinpath(*dotted.split("."))
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return None


def imported_files(source: Path) -> set[Path]:
    """Files of our packages that ``source`` imports (relative or absolute, module or package)."""
    package = ".".join(source.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(source.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES and (path := module_file(name)) is not None:
                found.add(path)
    return found


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


def checked_stages():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return [(name, stage) for name, stage in stages.items() if stage["cmd"].startswith(CHECKED_COMMANDS)]


@pytest.mark.parametrize("name,stage", checked_stages(), ids=[name for name, _ in checked_stages()])
def test_a_stage_depends_on_everything_its_code_imports(name, stage):
    deps = [dep for dep in stage["deps"] if "${" not in dep]
    sources = [ROOT / dep for dep in deps if dep.endswith(".py") and dep.split("/")[0] in PACKAGES]
    for dep in deps:
        if (ROOT / dep).is_dir() and dep.split("/")[0] in PACKAGES:
            sources += sorted((ROOT / dep).rglob("*.py"))
    seen, missing = set(), set()
    while sources:
        source = sources.pop()
        if source in seen:
            continue
        seen.add(source)
        for imported in imported_files(source):
            if not covered(imported, deps):
                missing.add(imported.relative_to(ROOT).as_posix())
            sources.append(imported)
    assert not missing, f"stage {name} imports {sorted(missing)} but does not list them in deps"


def test_the_check_sees_a_missing_module():
    deps = ["vae_core/fused_aevb.py"]
    imported = imported_files(ROOT / "vae_core" / "fused_aevb.py")
    assert ROOT / "vae_core" / "activations.py" in imported
    assert not covered(ROOT / "vae_core" / "activations.py", deps)
