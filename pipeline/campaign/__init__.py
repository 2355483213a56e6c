"""The paper-budget campaign (``vaebench campaign``; docs/paper-budget.md): finished runs kept in the
repository's archive, checked against the current code, restored on a fresh clone, and the rest
trained in order on the free cores.

Modules:

- :mod:`archive`: The paper-budget campaign's archive: every finished run kept in the repository, ...
- :mod:`plan`: What the campaign trains next: the profile's configurations in the order params.yaml's ...
- :mod:`runner`: The paper-budget campaign, run: restore the archive, train the next units side by side ...
- :mod:`staleness`: Does the current code still reproduce an archived run? Bit for bit, or the run is stale
"""

__all__ = ["archive", "plan", "runner", "staleness"]
