"""Which source files a stage's results depend on, derived from the import graph in one place.

Three things ask that question and all get the answer from here:

- ``dvc.yaml``: every stage lists the code it depends on, so DVC re-runs exactly the stages a
  change touches. DVC cannot compute that list itself, so it is written out in dvc.yaml and
  ``tests/test_stage_dependencies.py`` checks every stage against
  :func:`pipeline.plumbing.stage_dependencies.stage_code_dependencies`
  (``python -m pipeline.plumbing.stage_dependencies`` prints the lists, ``--write`` puts them in dvc.yaml);
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
- A folder all of whose ``.py`` files are in the closure is listed as the folder.

Which module each DVC stage runs, and the dvc.yaml check and rewrite, live in
:mod:`pipeline.plumbing.stage_dependencies`: this module is in the training code's own closure
(the fingerprint is computed here), so registering a new stage there re-runs no training.
"""
from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("vae_core", "baselines", "pipeline")

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


def source_fingerprint(modules: tuple[str, ...] | list[str]) -> str:
    """sha256 over the names and bytes of every file in the modules' import closure."""
    digest = hashlib.sha256()
    for path in import_closure(modules):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


__all__ = ["PACKAGES", "ROOT", "as_dependency_list", "import_closure", "imported_files", "module_file",
           "source_fingerprint"]
