"""What the campaign trains next: the profile's configurations in the order params.yaml's
``campaign.order`` gives, less what is archived, finished here or held.

``campaign.order`` is a list of steps, each a list of configuration patterns (``<experiment
folder>/<configuration>``, shell-style, e.g. ``fig2/mnist_nz3_*``) and the seeds to train at that
step; a configuration's seeds train at the first step whose patterns match it and whose seeds it
still lacks. ``campaign.hold`` maps patterns to the reason they must not start yet (an open
question that would change their protocol): held configurations are listed, never started.

A :class:`Unit` is one process's work: one configuration and the seeds it trains together
(AEVB's seeds stack in one process and are bit-identical only as that stack; the other
algorithms' seeds are units of their own, so that they train side by side on the cores).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cluster.training_stages import Configuration, configurations
from pipeline.plumbing.params import ParamsError, lookup
from pipeline.runs.directory import CONFIG_FILE, FINAL_FILE, marginal_likelihood_path, seed_run_dir
from pipeline.training.schedule import stackable


@dataclass(frozen=True)
class Unit:
    """One process's work: a configuration and the seeds it trains (then evaluates, for Figure 3)."""

    configuration: Configuration
    seeds: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"{self.configuration.folder}/{self.configuration.run_name}"

    @property
    def label(self) -> str:
        return f"{self.key} seed{'s' if len(self.seeds) > 1 else ''} {', '.join(map(str, self.seeds))}"


@dataclass
class CampaignPlan:
    """The next units in order, the held configurations with their reasons, and what is done."""

    pending: list[Unit] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)  # configuration key -> reason
    done: list[str] = field(default_factory=list)  # run keys archived or finished here


def campaign_settings(params: dict[str, Any]) -> dict[str, Any]:
    """params.yaml's ``campaign`` section, checked."""
    settings = lookup(params, "campaign")
    for key in ("profile", "runs", "archive", "report", "prefix_samples", "order"):
        if key not in settings:
            raise ParamsError(f"params.yaml campaign.{key} is missing: see the repository's params.yaml")
    for index, step in enumerate(settings["order"]):
        if not isinstance(step, dict) or not step.get("configurations") or not step.get("seeds"):
            raise ParamsError(f"params.yaml campaign.order[{index}] must give `configurations` (patterns) and `seeds`, "
                              f"got {step!r}")
    return settings


def run_is_finished(runs_root: Path, configuration: Configuration, seed: int) -> bool:
    """Whether ``runs_root`` holds this seed finished (for Figure 3, with its marginal likelihoods)."""
    run_dir = seed_run_dir(runs_root / configuration.folder / configuration.run_name, seed)
    if not ((run_dir / FINAL_FILE).is_file() and (run_dir / CONFIG_FILE).is_file()):
        return False
    return configuration.experiment != "fig3" or marginal_likelihood_path(run_dir, runs_root).is_file()


def plan_campaign(params: dict[str, Any], runs_root: str | Path, archived: set[str]) -> CampaignPlan:
    """The campaign's next units on ``params`` (its profile selected), given the run keys
    ``archived`` and what ``runs_root`` holds finished."""
    settings = campaign_settings(params)
    runs_root = Path(runs_root)
    holds = settings.get("hold") or {}
    plan = CampaignPlan()
    claimed: set[tuple[str, int]] = set()
    for step in settings["order"]:
        patterns, seeds = list(step["configurations"]), [int(s) for s in step["seeds"]]
        for configuration in configurations(params):
            key = f"{configuration.folder}/{configuration.run_name}"
            if not any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
                continue
            reason = next((why for pattern, why in holds.items() if fnmatch.fnmatchcase(key, pattern)), None)
            wanted = [s for s in seeds if s in configuration.seeds(params) and (key, s) not in claimed]
            claimed.update((key, s) for s in wanted)
            todo = []
            for seed in wanted:
                if f"{key}/seed{seed}" in archived or run_is_finished(runs_root, configuration, seed):
                    plan.done.append(f"{key}/seed{seed}")
                else:
                    todo.append(seed)
            if not todo:
                continue
            if reason is not None:
                plan.held[key] = str(reason)
                continue
            if stackable(configuration.run_config(params)):
                plan.pending.append(Unit(configuration, tuple(todo)))
            else:
                plan.pending += [Unit(configuration, (seed,)) for seed in todo]
    return plan


__all__ = ["CampaignPlan", "Unit", "campaign_settings", "plan_campaign", "run_is_finished"]
