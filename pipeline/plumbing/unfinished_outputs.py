"""Where a stage writes its output folder until it has finished, so that DVC's run-cache can hold it
and an interrupted stage still resumes.

DVC removes a stage's outputs before it runs the stage's command, unless they are marked
``persist``; and its run-cache (``dvc push --run-cache``, ``dvc repro --pull``: how results computed
on other machines come back, ``vaebench distribute``) never records a stage with a ``persist``
output. Training and the marginal-likelihood stage therefore have ordinary outputs, and keep what
must survive an interruption (checkpoints, finished seeds, finished rows) outside them: they write
into ``.vaebench/unfinished/<out>`` and move that folder to ``<out>`` in one rename once all of it
has finished. A killed stage leaves its work there; the next ``dvc repro`` (which first removes
``<out>``, if anything was there) resumes from it.

The price: a change of a stage's params or code retrains all of its seeds (DVC removes the finished
folder), where a ``persist`` output kept the seeds whose fingerprint still matched. The gain: any
earlier result comes back from the run-cache without training (``dvc repro`` after reverting a
change, or on a machine that pulled the run-cache).

Several processes may write one ``<out>`` at once (``vaebench train --seed 1`` and ``--seed 2``
into one new ``--out``, in two terminals): each seed's run directory is then staged and published on
its own (:func:`entries_written_then_published`), so that neither process moves the other's
half-written run, and a second process asking for a seed that another is writing is refused at once
by that run's lock (:func:`pipeline.runs.directory.locked_run_directory`), with the other process
named.

This is where the command writes, not what it computes: the stage modules (:mod:`pipeline.training.train`,
:mod:`pipeline.evaluation.marginal_likelihood`) are unchanged by it, and it is not among the stages' code dependencies
(:mod:`pipeline.plumbing.code_dependencies`).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.plumbing.errors import UserError

UNFINISHED_ROOT = Path(".vaebench") / "unfinished"


class OutputExistsError(UserError, RuntimeError):
    """The output appeared while the stage was writing it elsewhere."""


def unfinished_directory(out: str | Path, root: str | Path | None = None) -> Path:
    """Where ``out`` is written until it has finished: ``<root>/.vaebench/unfinished/<out>`` for an
    ``out`` inside ``root`` (the working directory, where DVC runs stages), otherwise a hidden
    sibling ``<out's parent>/.<name>.unfinished``."""
    root = Path.cwd() if root is None else Path(root)
    out = Path(out)
    absolute = out if out.is_absolute() else root / out
    try:
        relative = absolute.resolve().relative_to(root.resolve())
    except ValueError:
        return absolute.parent / f".{absolute.name}.unfinished"
    return root / UNFINISHED_ROOT / relative


def _move(source: Path, target: Path) -> None:
    """One rename; a copy then a removal across file systems."""
    try:
        os.replace(source, target)
    except OSError:  # another file system: copy, then remove
        shutil.copytree(source, target)
        shutil.rmtree(source)


def publish(work: Path, out: Path) -> None:
    """Move the finished folder ``work`` to ``out`` (one rename; a copy across file systems), then
    remove the empty folders left above ``work``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"{out} appeared while this stage wrote {work}: nothing was overwritten; "
                                f"remove one of them and run the stage again")
    if out.exists():
        out.rmdir()
    _move(work, out)
    _remove_empty_parents(work)


def publish_entry(work: Path, out: Path, name: str) -> None:
    """Move the finished entry ``work/<name>`` to ``out/<name>`` (creating ``out``), leaving whatever
    else ``work`` holds (another process's entries) where it is; ``work`` goes once empty."""
    source, target = work / name, out / name
    if not source.exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise OutputExistsError(f"{target} appeared while this process wrote {source}: nothing was overwritten; "
                                f"remove one of them and run the command again")
    _move(source, target)
    try:
        work.rmdir()  # only while empty
    except OSError:
        return
    _remove_empty_parents(work)


def _remove_empty_parents(work: Path) -> None:
    parent = work.parent
    while parent.name and parent != parent.parent:
        try:
            parent.rmdir()  # only while empty
        except OSError:
            break
        if parent.name == UNFINISHED_ROOT.parts[0]:
            break
        parent = parent.parent


@contextmanager
def written_then_published(out: str | Path, entries: list[str] | None = None) -> Iterator[Path]:
    """The folder a stage writes ``out`` in: ``out`` itself if it already exists (an earlier
    ``vaebench train`` into it, run by hand: it is completed in place, as before), otherwise
    :func:`unfinished_directory`, moved to ``out`` when the block ends without an error -- whole,
    or, given ``entries`` (the files this process writes there: one seed's marginal likelihoods),
    entry by entry, leaving other processes' entries staged beside them alone. An error leaves the
    unfinished folder where it is, for the next run to resume."""
    out = Path(out)
    if out.exists():
        yield out
        return
    work = unfinished_directory(out)
    work.mkdir(parents=True, exist_ok=True)
    yield work
    if entries is None:
        publish(work, out)
        return
    for name in entries:
        publish_entry(work, out, name)


@contextmanager
def entries_written_then_published(out: str | Path, names: list[str]) -> Iterator[dict[str, Path]]:
    """Where each entry ``out/<name>`` (a seed's run directory) is written: in the unfinished
    folder's ``<name>`` where an interrupted process left it there (it resumes); else in place where
    ``out`` already exists (an earlier ``vaebench train`` into it, run by hand: completed in place,
    as before); else in the unfinished folder, moved to ``out/<name>`` when the block ends without
    an error, one entry at a time. The entries of other processes staged beside them are neither
    moved nor touched. An error leaves every staged entry where it is, for the next run to resume."""
    out = Path(out)
    work = unfinished_directory(out)
    places = {name: work / name if (work / name).exists() or not out.exists() else out / name for name in names}
    yield places
    for name, place in places.items():
        if place == work / name:
            publish_entry(work, out, name)
