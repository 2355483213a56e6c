"""Which code each DVC stage of dvc.yaml depends on, and the tool that keeps dvc.yaml's lists right.

A DVC stage runs a ``vaebench`` command; the command modules (``pipeline/cli.py``,
``pipeline/commands/*.py``) only parse options and call one *stage module* (:data:`STAGE_MODULES`),
whose import closure (:mod:`pipeline.plumbing.code_dependencies`) is the stage's code.
``python -m pipeline.plumbing.stage_dependencies`` prints every stage's list, ``--check`` exits 1
where dvc.yaml lists others, ``--write`` rewrites dvc.yaml's lists in place;
``tests/test_stage_dependencies.py`` runs the check. Nothing that trains imports this module, so a
new stage registered here leaves every training fingerprint as it was.
"""
from __future__ import annotations

import sys

from pipeline.plumbing.code_dependencies import PACKAGES, ROOT, as_dependency_list, import_closure

# vaebench command (as dvc.yaml's `cmd` writes it) -> the module(s) that compute its outputs.
STAGE_MODULES = {
    "data download": ("pipeline.data.download",),
    "data prepare": ("pipeline.data.prepare",),
    "train": ("pipeline.training.train",),
    "evaluate marginal-likelihood": ("pipeline.evaluation.marginal_likelihood",),
    "evaluate estimator-variance": ("pipeline.evaluation.estimator_variance",),
    "evaluate linear-reference": ("pipeline.evaluation.linear_reference",),
    "evaluate log-likelihood": ("pipeline.evaluation.log_likelihood",),
    "figures": ("pipeline.reporting.figures",),
    "report": ("pipeline.reporting.report",),
}


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
            mark = "" if listed == expected else "   # dvc.yaml differs: run `python -m pipeline.plumbing.stage_dependencies --write`"
            print(f"{name}:{mark}\n" + "".join(f"  - {dep}\n" for dep in expected))
    return 1 if differs and "--check" in argv else 0


__all__ = ["STAGE_MODULES", "command_of", "main", "rewrite_dvc_yaml", "stage_code_dependencies"]


if __name__ == "__main__":
    sys.exit(main())
