"""The pipeline's stages as DVC's own index reads them (matrix entries resolved), which stage reads
which one's outputs, which of them ``vaebench distribute`` fans out to workers, and what a
``dvc repro`` log says it did with each."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

FANNED_OUT_COMMANDS = ("vaebench train", "vaebench evaluate marginal-likelihood")
RUNNING = re.compile(r"Running stage '([^']+)'")
RESTORED = re.compile(r"Stage '([^']+)' is cached - skipping run")
UNCHANGED = re.compile(r"Stage '([^']+)' didn't change, skipping")


@dataclass
class Stage:
    """One stage of dvc.yaml (matrix entries resolved), as DVC's own index reads it."""

    name: str
    cmd: str
    deps: list[str]
    outs: list[str]
    upstream: list[str] = field(default_factory=list)  # the stages whose outputs it reads

    @property
    def fanned_out(self) -> bool:
        return self.cmd.startswith(FANNED_OUT_COMMANDS)

    @property
    def trains(self) -> bool:
        return self.cmd.startswith("vaebench train")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def read_stages(root: Path) -> dict[str, Stage]:
    """The pipeline's stages in dvc.yaml order, each with the stages it reads from (a dependency
    equal to, inside, or containing another stage's output)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = {s.name: Stage(s.name, s.cmd if isinstance(s.cmd, str) else " && ".join(s.cmd),
                                      [d.def_path for d in s.deps], [o.def_path for o in s.outs])
                  for s in repo.index.stages if getattr(s, "cmd", None)}
    for stage in stages.values():
        stage.upstream = [other.name for other in stages.values() if other is not stage and any(
            _inside(dep, out) or _inside(out, dep) for dep in stage.deps for out in other.outs)]
    return stages


def ancestors(stages: dict[str, Stage], names: list[str]) -> set[str]:
    """``names`` and every stage they read from, transitively."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += stages[name].upstream
    return seen


def parse_repro_output(text: str) -> dict[str, str]:
    """Which stages a ``dvc repro`` ran, restored from the run-cache, or found unchanged."""
    result = {}
    for pattern, verdict in ((UNCHANGED, "unchanged"), (RESTORED, "restored"), (RUNNING, "ran")):
        for name in pattern.findall(text):
            result[name] = verdict
    return result
