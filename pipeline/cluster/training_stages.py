"""The training stages of a profile, as the cluster plan costs them.

Its one job: one :class:`Configuration` per training stage of dvc.yaml, taken from the one listing
of a profile's configurations (:func:`pipeline.runs.configurations.expected_configurations`, which
the report's table of configurations also uses), with the names the plan gives its stages, and each
configuration resolved once per params (:class:`ResolvedConfiguration`: the RunConfig ``vaebench
train`` resolves, its seeds and how they train) rather than again from the raw params wherever a
cost needs it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipeline.plumbing.params import ParamsError, lookup
from pipeline.runs.config import RunConfig, build_run_config, configuration_seeds, seeds_side_by_side
from pipeline.runs.configurations import expected_configurations
from pipeline.training.schedule import stackable


def with_profile(params: dict[str, Any], profile: str) -> dict[str, Any]:
    """A copy of ``params`` with ``profile`` selected; an unknown profile names the known ones."""
    known = sorted(params.get("profiles", {}))
    if profile not in known:
        raise ParamsError(f"profile {profile!r} is not defined in params.yaml (known profiles: {', '.join(known)})")
    chosen = copy.deepcopy(params)
    chosen["profile"] = profile
    return chosen


@dataclass(frozen=True)
class Configuration:
    """One training stage's configuration (dvc.yaml's fig2_mnist, fig2_binarization, fig2_frey_face,
    fig4_mnist, fig3). ``experiment`` is the experiment whose budgets and seed patterns it uses;
    ``binarize`` is set for the binarization study (``--binarize``, overriding training.binarize),
    whose runs use Figure 2's budgets but live in their own folder (:attr:`folder`)."""

    experiment: str
    dataset: str
    algorithm: str
    nz: int
    ntrain: int | None = None
    binarize: str | None = None

    @property
    def folder(self) -> str:
        """The folder under runs/ (and the stage-name prefix in provenance.json): ``binarization``
        for the binarization study, else the experiment."""
        return "binarization" if self.binarize is not None else self.experiment

    @property
    def run_name(self) -> str:
        """``runs/<folder>/<run_name>``, as dvc.yaml names the stage's output."""
        if self.ntrain is not None:
            return f"{self.dataset}_ntrain{self.ntrain}_{self.algorithm}"
        if self.binarize is not None:
            return f"{self.dataset}_nz{self.nz}_{self.algorithm}_{self.binarize}"
        return f"{self.dataset}_nz{self.nz}_{self.algorithm}"

    @property
    def train_stage(self) -> str:
        return f"train {self.folder}/{self.run_name}"

    @property
    def marginal_likelihood_stage(self) -> str:
        return f"marginal_likelihood {self.folder}/{self.run_name}"

    def seeds(self, params: dict[str, Any]) -> list[int]:
        """The seeds the stage trains: ``seeds.several`` is matched against the budget experiment's
        ``<experiment>/<run_name>`` (``fig2/mnist_nz20_aevb_dynamic`` for the binarization study),
        as ``vaebench train --experiment fig2`` does."""
        return configuration_seeds(params, self.experiment, self.run_name)

    def run_config(self, params: dict[str, Any]) -> RunConfig:
        """The run as ``vaebench train`` resolves it; ``--binarize`` overrides training.binarize in
        a copy of ``params`` (the caller's are left alone)."""
        if self.binarize is not None:
            params = {**params, "training": {**lookup(params, "training"), "binarize": self.binarize}}
        return build_run_config(params, self.experiment, self.dataset, self.algorithm, self.nz, self.ntrain)

    def twin(self) -> Configuration | None:
        """A binarization-study configuration's Figure 2 run with training.binarize (same model and
        budgets): its measured cost stands in where the study's own is missing. None otherwise."""
        if self.binarize is None:
            return None
        return Configuration(self.experiment, self.dataset, self.algorithm, self.nz, self.ntrain)


@dataclass(frozen=True)
class ResolvedConfiguration:
    """A configuration resolved on one params dict (one profile selected), once: the RunConfig
    ``vaebench train`` resolves, the seeds the stage trains, whether they train stacked in one
    process (fused AEVB) and whether the others train side by side (``seeds.side_by_side``)."""

    configuration: Configuration
    params: dict[str, Any] = field(repr=False, compare=False)
    run_config: RunConfig
    seeds: tuple[int, ...]
    stacked: bool
    side_by_side: bool


def resolve(params: dict[str, Any], configuration: Configuration | ResolvedConfiguration) -> ResolvedConfiguration:
    """``configuration`` resolved on ``params``; one already resolved on this very ``params`` dict
    is returned as it is (one resolved on other params is an error, never silently reused)."""
    if isinstance(configuration, ResolvedConfiguration):
        if configuration.params is not params:
            raise ValueError(f"{configuration.configuration.train_stage} was resolved on other params than the "
                             f"ones it is costed with")
        return configuration
    config = configuration.run_config(params)
    return ResolvedConfiguration(configuration, params, config, tuple(configuration.seeds(params)), stackable(config),
                                 seeds_side_by_side(params))


class Resolutions:
    """The configurations resolved on one params dict, each resolved the first time it is asked
    for (never before: a configuration whose costs come from elsewhere need not resolve) and once."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self._resolved: dict[Configuration, ResolvedConfiguration] = {}

    def __call__(self, configuration: Configuration) -> ResolvedConfiguration:
        if configuration not in self._resolved:
            self._resolved[configuration] = resolve(self.params, configuration)
        return self._resolved[configuration]


def configurations(params: dict[str, Any]) -> list[Configuration]:
    """The training stages of dvc.yaml on ``params``' profile, in the order of
    :func:`pipeline.runs.configurations.expected_configurations` (Figure 2's datasets x Nz x
    algorithms; Figures 4-5's MNIST model where Figure 2's grid does not have it; the binarization
    study, ``experiments.fig2.binarization_study``, where params.yaml has it; Figure 3's Ntrain x
    algorithms), each listed once. A listing that names a run otherwise than the plan's stage names
    is an error, not a plan of other stages."""
    try:
        expected = expected_configurations(params)
    except (KeyError, TypeError) as err:
        raise ParamsError(f"params.yaml's experiments cannot list the profile's configurations ({err!r} is "
                          f"missing or not a mapping): see experiments.fig2, fig3 and fig4 in the repository's "
                          f"params.yaml") from err
    binarize = (lookup(params, "experiments.fig2.binarization_study.binarize")
                if (expected.experiment_dir == "binarization").any() else None)
    found: list[Configuration] = []
    for row in expected.itertuples():
        configuration = Configuration(row.experiment, row.dataset, row.algorithm, int(row.nz),
                                      None if pd.isna(row.ntrain) else int(row.ntrain),
                                      binarize if row.experiment_dir == "binarization" else None)
        if (configuration.folder, configuration.run_name) != (row.experiment_dir, row.configuration):
            raise ValueError(f"the profile's configuration {row.experiment_dir}/{row.configuration} would be "
                             f"planned as {configuration.folder}/{configuration.run_name}: the two namings of "
                             f"runs disagree")
        found.append(configuration)
    return list(dict.fromkeys(found))
