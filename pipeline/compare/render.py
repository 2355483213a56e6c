"""Writing ``vaebench compare``'s rows: a table, markdown or JSON, with a summary line (the counts
per verdict, the widened tolerances, the regressions) and, when the sides' environments differ,
the environment change first."""
from __future__ import annotations

import json
from dataclasses import asdict

from pipeline.compare.verdicts import (Row, changed_by_environment, counts, regressions, widened,
                                       widened_for_environment)


def _environment_footer(rows: list[Row]) -> str:
    """The summary line's words on the environment change: tolerances widened, speeds excused."""
    n_widened, n_changed = len(widened_for_environment(rows)), len(changed_by_environment(rows))
    parts = ([f"{n_widened} metric(s) had their tolerance widened by the environment change"] if n_widened else []) \
        + ([f"{n_changed} speed metric(s) changed with the environment (not regressions)"] if n_changed else [])
    return "; ".join(parts) + ". " if parts else ""


def _cell(value: float | None) -> str:
    """A value for the table: "–" when absent, thousands separated, small values in 4 significant digits."""
    if value is None:
        return "–"
    if value == int(value) and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:.4g}" if abs(value) < 0.01 and value != 0 else f"{value:,.3f}"


def render(rows: list[Row], fmt: str, base_label: str, new_label: str, allow_removed: bool = False,
           environment_change: str = "") -> str:
    """The rows as a table, markdown or JSON; ``environment_change`` (empty when none) opens the
    table and markdown, and is the JSON's ``environment_change`` (null when none)."""
    bad = regressions(rows, allow_removed)
    summary = ", ".join(f"{n} {v}" for v, n in counts(rows).items() if n)
    n_widened = len(widened(rows))
    if fmt == "json":
        return json.dumps({"base": base_label, "new": new_label, "environment_change": environment_change or None,
                           "counts": counts(rows), "widened_by_seed_spread": n_widened,
                           "widened_by_environment_change": len(widened_for_environment(rows)),
                           "changed_by_environment": [r.key for r in changed_by_environment(rows)],
                           "regressions": [r.key for r in bad], "metrics": [asdict(r) for r in rows]}, indent=2)
    opening = [environment_change, ""] if environment_change else []
    with_notes = any(r.note for r in rows)
    header = ["metric", base_label, new_label, "diff", "verdict"] + (["note"] if with_notes else [])
    body = [[r.key, _cell(r.base), _cell(r.new), "–" if r.difference is None else f"{r.difference:+.3g}",
             r.verdict.upper() if r in bad else r.verdict] + ([r.note] if with_notes else []) for r in rows]
    footer = (f"{len(rows)} metrics: {summary or 'none'}. "
              + (f"{n_widened} metric(s) had their tolerance widened by seed spread. " if n_widened else "")
              + _environment_footer(rows)
              + (f"{len(bad)} regression(s): {', '.join(r.key for r in bad[:10])}{' ...' if len(bad) > 10 else ''}"
                 if bad else "No regression."))
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|---|" + ("---|" if with_notes else "")]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(opening + lines + ["", footer])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body)] if body else [len(h) for h in header]
    line = lambda cells: "  ".join(c.ljust(w) if i in (0, 4, 5) else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join(opening + [line(header), line(["-" * w for w in widths])] + [line(row) for row in body]
                     + ["", footer])
