"""Where each run of a partial set comes from, as the report shows it: ``<runs>/archive_status.json``.

The paper-budget campaign (:mod:`pipeline.campaign`) restores finished runs from the repository's
archive into a runs folder; before a run is restored it is checked against the current training
code (:mod:`pipeline.campaign.staleness`). What it found is written here, one row per archived
run, and read by the report (a partial report's section "Where these runs come from"):

- ``run``: ``<experiment folder>/<configuration>/seed<N>``;
- ``commit``: the commit whose code trained it;
- ``status``: ``exact`` (restored, and judged) or ``stale`` (not restored, not judged);
- ``how``: for an exact run, how the current code was shown to reproduce it ("the same training
  code", or "a prefix of N samples retrained, every value equal"); for a stale one, what differs.

Beside it the campaign writes ``waiting``: per configuration of the profile that has not run, the
hours it is predicted to take on this machine (:mod:`pipeline.cluster.plan`'s cost model), so that
the report can say what each claim still waits for.

This module only reads and writes the file; it knows nothing of how the rows were found.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.plumbing.files import write_json

STATUS_FILE = "archive_status.json"
COLUMNS = ["run", "commit", "status", "how"]
EXACT, STALE = "exact", "stale"


def write_archive_status(runs_root: str | Path, rows: list[dict], waiting_hours: dict[str, float],
                         made_by: str) -> Path:
    """Write the file: the rows (:data:`COLUMNS`), the predicted hours of every configuration
    still to run (``experiment folder/configuration`` -> hours), and one line on how the runs
    folder was made."""
    for row in rows:
        if row.get("status") not in (EXACT, STALE):
            raise ValueError(f"an archive status row's status must be {EXACT!r} or {STALE!r}, got {row!r}")
    return write_json(Path(runs_root) / STATUS_FILE, {
        "made_by": made_by, "runs": [{k: row.get(k) for k in COLUMNS} for row in rows],
        "waiting_hours": {k: float(v) for k, v in sorted(waiting_hours.items())}})


def read_archive_status(runs_root: str | Path) -> tuple[pd.DataFrame, dict[str, float], str] | None:
    """(the rows, the waiting hours, how the folder was made), or None where the runs folder has no
    such file (runs trained in place, `dvc repro`)."""
    path = Path(runs_root) / STATUS_FILE
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
        rows = pd.DataFrame(recorded["runs"], columns=COLUMNS)
        waiting = {str(k): float(v) for k, v in recorded.get("waiting_hours", {}).items()}
        return rows, waiting, str(recorded.get("made_by", ""))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} cannot be read ({err}): run `vaebench campaign restore` again to rewrite it") from None


__all__ = ["COLUMNS", "EXACT", "STALE", "STATUS_FILE", "read_archive_status", "write_archive_status"]
