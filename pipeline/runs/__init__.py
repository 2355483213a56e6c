"""Run directories and what is in them: a run's configuration from params.yaml, the directory
(files, fingerprints, checkpoints, resume, locks), the tidy tables read from runs, and the one
listing of a profile's configurations (used by the report, the cluster plan and distribute).

Modules:

- :mod:`archive_status`: Where each run of a partial set comes from, as the report shows it: ...
- :mod:`config`: One training run = one configuration, resolved from params.yaml and the active profile
- :mod:`configurations`: Which configurations a profile asks for, and which of them a runs folder holds finished
- :mod:`directory`: One home for run directories (docs/design.md, "File contracts"): every stage reads them ...
- :mod:`results`: Read the run directories (:mod:`pipeline.runs.directory`) into tidy pandas tables for ...
"""

__all__ = ["archive_status", "config", "configurations", "directory", "results"]
