"""Which source files a stage's results depend on, derived from the import graph in one place.

Three things ask that question and all get the answer from here:

- ``dvc.yaml``: every stage lists the code it depends on, so DVC re-runs exactly the stages a
  change touches. DVC cannot compute that list itself, so it is written out in dvc.yaml and
  ``tests/test_stage_dependencies.py`` checks every stage against :func:`stage_code_dependencies`
  (``python -m pipeline.plumbing.code_dependencies`` prints the lists, ``--write`` puts them in dvc.yaml);
- the training checkpoints' fingerprint (:func:`pipeline.training.train.run_fingerprint`): a run resumes
  only under the same code;
- the marginal-likelihood rows' fingerprint (:mod:`pipeline.evaluation.marginal_likelihood`): a row is reused only if
  the estimators' code is unchanged.

The rules, kept simple enough to check by eye:

- A module depends on itself and, transitively, on every module of our packages (:data:`PACKAGES`)
  that it imports: ``import a.b``, ``from a.b import c`` (the module ``a/b.py``, and ``a/b/c.py``
  when ``c`` is a module), relative imports alike, at any depth in the file (imports inside
  functions count). A package's ``__init__.py`` counts when the package itself is imported
  (``import vae_core``, ``from vae_core import AEVB``), not when one of its modules is
  (``from vae_core.hmc import hmc_step`` depends on ``vae_core/hmc.py`` only: Python runs the
  package's ``__init__.py`` first, but that file only re-exports names).
- A DVC stage runs a ``vaebench`` command; the command modules (``pipeline/cli.py``,
  ``pipeline/commands/*.py``) only parse options and call one *stage module*
  (:data:`STAGE_MODULES`), whose closure is the stage's code.
- A folder all of whose ``.py`` files are in the closure is listed as the folder.
"""
from __future__ import annotations

import ast
import hashlib
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("vae_core", "baselines", "pipeline")

# vaebench command (as dvc.yaml's `cmd` writes it) -> the module(s) that compute its outputs.
STAGE_MODULES = {
    "data download": ("pipeline.data.download",),
    "data prepare": ("pipeline.data.prepare",),
    "train": ("pipeline.training.train",),
    "evaluate marginal-likelihood": ("pipeline.evaluation.marginal_likelihood",),
    "evaluate estimator-variance": ("pipeline.evaluation.estimator_variance",),
    "figures": ("pipeline.reporting.figures",),
    "report": ("pipeline.reporting.report",),
}


def module_file(dotted: str) -> Path | None:
    """The file of one of our modules or packages (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    if dotted.split(".")[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*dotted.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def imported_files(source: Path) -> frozenset[Path]:
    """The files of our packages that ``source`` imports directly."""
    name = _module_name(source)
    package = name if source.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" for alias in node.names]
            # `from a import b`: a/b.py if b is a module, else the package a itself
            modules = [module_file(c) for c in candidates]
            found.update(m for m in modules if m is not None)
            if any(m is None for m in modules) and (package_file := module_file(base)) is not None:
                found.add(package_file)
        elif isinstance(node, ast.Import):
            found.update(m for alias in node.names if (m := module_file(alias.name)) is not None)
    return frozenset(found)


def import_closure(modules: tuple[str, ...] | list[str]) -> list[Path]:
    """Every file of our packages that the given modules are or import, transitively."""
    pending = [module_file(m) for m in modules]
    if None in pending:
        raise ValueError(f"not a module of {', '.join(PACKAGES)}: {[m for m, p in zip(modules, pending) if p is None]}")
    seen: set[Path] = set()
    while pending:
        source = pending.pop()
        if source not in seen:
            seen.add(source)
            pending.extend(imported_files(source))
    return sorted(seen)


def as_dependency_list(files: list[Path]) -> list[str]:
    """Repository-relative paths, a folder in place of its files when all its ``.py`` files are in."""
    chosen = set(files)
    listed: list[str] = []
    folders = sorted({f.parent for f in files}, key=lambda p: len(p.parts))
    covered: set[Path] = set()
    for folder in folders:
        if any(parent in covered for parent in folder.parents):
            continue
        if set(folder.rglob("*.py")) <= chosen:
            listed.append(folder.relative_to(ROOT).as_posix())
            covered.add(folder)
    for path in files:
        if not any(folder in path.parents for folder in covered):
            listed.append(path.relative_to(ROOT).as_posix())
    return sorted(listed)


def stage_code_dependencies(command: str) -> list[str]:
    """The code a ``vaebench <command>`` stage depends on, as dvc.yaml lists it."""
    if command not in STAGE_MODULES:
        raise KeyError(f"no stage module is registered for `vaebench {command}`; add it to STAGE_MODULES")
    return as_dependency_list(import_closure(STAGE_MODULES[command]))


def command_of(cmd: str) -> str:
    """The vaebench command a dvc.yaml ``cmd`` runs: ``vaebench evaluate marginal-likelihood --run X``
    -> ``evaluate marginal-likelihood``."""
    words = cmd.split()
    if words[:1] != ["vaebench"]:
        raise ValueError(f"a stage's cmd must call vaebench, got {cmd!r}")
    two = " ".join(words[1:3])
    return two if two in STAGE_MODULES else words[1]


def source_fingerprint(modules: tuple[str, ...] | list[str]) -> str:
    """sha256 over the names and bytes of every file in the modules' import closure."""
    digest = hashlib.sha256()
    for path in import_closure(modules):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def rewrite_dvc_yaml(text: str) -> str:
    """dvc.yaml's text with every stage's code dependencies replaced by the derived ones (the other
    dependencies, comments and layout kept): each stage's ``deps:`` list becomes its non-code
    entries in their order, then :func:`stage_code_dependencies`."""
    import yaml

    stages = yaml.safe_load(text)["stages"]
    lines, out, stage = text.splitlines(keepends=True), [], None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            stage = line.strip()[:-1]
        out.append(line)
        i += 1
        if stage in stages and line.strip() == "deps:":
            indent = line[: len(line) - len(line.lstrip())] + "  - "
            entries = []
            while i < len(lines) and lines[i].startswith(indent):
                entries.append(lines[i][len(indent):].strip())
                i += 1
            kept = [e for e in entries if e.split("/")[0] not in PACKAGES]
            derived = stage_code_dependencies(command_of(stages[stage]["cmd"]))
            out += [f"{indent}{entry}\n" for entry in kept + derived]
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print every dvc.yaml stage's derived code dependencies; ``--check`` exits 1 where dvc.yaml
    lists others, ``--write`` rewrites dvc.yaml's lists in place."""
    import yaml

    argv = sys.argv[1:] if argv is None else argv
    path = ROOT / "dvc.yaml"
    if "--write" in argv:
        path.write_text(rewrite_dvc_yaml(path.read_text()))
    stages = yaml.safe_load(path.read_text())["stages"]
    differs = 0
    for name, stage in stages.items():
        expected = stage_code_dependencies(command_of(stage["cmd"]))
        listed = sorted(d for d in stage.get("deps", []) if d.split("/")[0] in PACKAGES)
        differs += listed != expected
        if "--check" not in argv or listed != expected:
            mark = "" if listed == expected else "   # dvc.yaml differs: run `python -m pipeline.plumbing.code_dependencies --write`"
            print(f"{name}:{mark}\n" + "".join(f"  - {dep}\n" for dep in expected))
    return 1 if differs and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main())
