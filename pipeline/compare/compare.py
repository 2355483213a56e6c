"""``vaebench compare BASE NEW``: what changed between two runs or revisions, metric by metric --
the package's overview and the one error its modules share.

Each module has one job:

- :mod:`pipeline.compare.sides` reads a side: a report directory or ``metrics.json``, ``rev:REV[:PATH]``
  (through git, nothing checked out) or ``paper`` (the paper's values at the other side's budget);
- :mod:`pipeline.compare.environment` reads a side's environment from the ``provenance.json`` beside
  its ``metrics.json`` and says what changed between the two;
- :mod:`pipeline.compare.keys` tells a metric's family (which tolerance judges it) from its key;
- :mod:`pipeline.compare.verdicts` holds the tolerances (params.yaml ``compare:``) and draws a verdict
  per metric -- ``better``, ``same``, ``worse``, ``changed`` (info only), ``added`` (only in NEW),
  ``removed`` (only in BASE) -- and the regressions among them;
- :mod:`pipeline.compare.render` writes the rows as a table, markdown or JSON.

Every input that cannot be read (a side, a revision, a provenance.json, a tolerance) raises
:class:`CompareInputError`, whose message names it and says what would work; ``vaebench compare``
exits 2 on it.
"""
from __future__ import annotations


class CompareInputError(ValueError):
    """A side or an option that cannot be read; the message names it and says what would work."""
