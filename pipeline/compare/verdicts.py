"""Verdicts of ``vaebench compare``: the tolerances per metric family (params.yaml ``compare:``),
a :class:`Row` with a verdict per metric, and which rows are regressions.

Each metric belongs to a family by its key (:mod:`pipeline.compare.keys`), and params.yaml
``compare:`` holds one tolerance per family:

| family | keys | "same" when | better |
|---|---|---|---|
| bound | ``*_lb`` | abs(diff) <= ``bound_nats`` + seed widening | higher |
| marginal_likelihood | ``*_ml``, ``*_ml_is``, ``*_ml_grid`` | abs(diff) <= ``marginal_likelihood_se`` x combined s.e. + ``marginal_likelihood_floor_nats`` + seed widening | higher |
| throughput | ``speed/*`` | ``throughput_ratio`` <= new / base <= 1 / ``throughput_ratio`` | higher |
| claim | ``claims/*``, ``claims_paper_at_budget/*`` | unchanged verdict (1 pass, 0.5 inconclusive, 0 fail) | pass > inconclusive > fail |
| variance | ``estimator_variance/*`` | ``variance_ratio`` bounds the ratio, as throughput | lower |
| info | ``*/samples``, ``*_ml_se``, ``*_seed_se``, ``*/seeds`` | equal | (never a regression; shown as "changed") |

Seeds. A configuration trained with several seeds has, besides its aggregate keys (the names
above, each the mean over seeds), ``K_seed_se`` (the standard error of that mean over seeds:
sample s.d. / sqrt(n); only with n >= 2 seeds), ``<configuration>/seeds`` (n) and per-seed keys
with a ``seed<S>`` element before the last one (``fig2/mnist/nz20/aevb/seed2/test_lb``), which
belong to the family of their last element. Seed-to-seed variation is not a regression, so a
bound's or marginal likelihood's tolerance above is widened by ``k`` x spread, ``k`` being
params.yaml ``compare.seed_spread_multiplier`` (2.0 when absent; 0 turns widening off):

- an aggregate key K: spread = sqrt(se_base^2 + se_new^2), se being that side's ``K_seed_se``
  (0 for a side without it; no widening when neither side has it);
- a per-seed key ``P/seed<S>/NAME``: the spread of one seed's value, each side's seed s.d.
  ``P/NAME_seed_se`` x sqrt(``P/seeds``), combined in quadrature over the sides that have both.

A widened row says so in its ``note`` ("tolerance widened by seed spread: +0.84 nats (2 x 0.42)"),
shown in a ``note`` column, and the summary line counts the widened metrics. Against ``paper``
(which has no seeds, so none of these keys) an aggregate is widened by the run side's own
``K_seed_se`` (:attr:`pipeline.compare.sides.Metrics.spreads`).

Environment. When the sides' environments differ (:func:`pipeline.compare.environment.environment_change`),
- a throughput (``speed/*``) outside its ratio is ``changed``, noted "changed by the environment",
  never a regression: a device measures a different machine, not the code;
- a bound's or marginal likelihood's tolerance (seed widening included) is multiplied by ``m``,
  params.yaml ``compare.environment_change_multiplier`` (:data:`ENVIRONMENT_CHANGE_TOLERANCE_MULTIPLIER`
  when absent; 1 turns it off), noted per metric; a change beyond it is still ``worse``.

Verdicts: ``better``, ``same``, ``worse``, ``changed`` (info only), ``added`` (only in NEW),
``removed`` (only in BASE). A regression is any ``worse``, and any ``removed`` unless
``--allow-removed`` (a metric that vanished can hide one) -- except a ``*_seed_se`` or ``*/seeds``
key, which vanishes when NEW has a single seed and hides nothing.
"""
from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass

from pipeline.compare.compare import CompareInputError
from pipeline.compare.keys import PER_SEED_KEY, family_of, is_seed_info

VERDICTS = ("better", "same", "worse", "changed", "added", "removed")
TOLERANCE_KEYS = ("bound_nats", "marginal_likelihood_se", "marginal_likelihood_floor_nats", "throughput_ratio",
                  "variance_ratio")
DEFAULT_SEED_SPREAD_MULTIPLIER = 2.0  # params.yaml compare.seed_spread_multiplier, when absent
# params.yaml compare.environment_change_multiplier, when absent: a bound's or marginal likelihood's
# tolerance is multiplied by it when the two sides trained on different devices or torch builds.
# The tolerances absorb floating-point noise between machines of one kind; another device or build
# also draws other random numbers for the same seed (torch's CUDA and CPU generators differ), so a
# run is then more like another seed than a rerun, and bound_nats alone is too tight for a single
# seed. Twice the tolerance still catches a real regression (a bug shifts bounds by nats, not tenths).
ENVIRONMENT_CHANGE_TOLERANCE_MULTIPLIER = 2.0


@dataclass
class Row:
    """One metric compared: both values, the difference, the verdict and why."""
    key: str
    family: str
    base: float | None
    new: float | None
    difference: float | None
    verdict: str
    rule: str  # the tolerance that decided, in words
    note: str = ""  # e.g. "tolerance widened by seed spread: +0.84 nats (2 x 0.42)"
    seed_widening: float = 0.0  # nats added to the tolerance by the seed spread (k x spread)
    environment_widening: float = 0.0  # nats added to the tolerance for an environment change ((m - 1) x tolerance)
    environment_changed: bool = False  # a throughput the environment change accounts for: never a regression


def tolerances_from_params(params: dict) -> dict[str, float]:
    """params.yaml ``compare:`` checked: a tolerance per family, the seed spread and environment
    change multipliers (their defaults when absent)."""
    section = params.get("compare")
    if not isinstance(section, dict):
        raise CompareInputError("params.yaml has no `compare:` section with the tolerances per metric family")
    tolerances = {}
    for key in TOLERANCE_KEYS:
        value = section.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise CompareInputError(f"compare.{key} must be a non-negative number, got {value!r}")
        tolerances[key] = float(value)
    if "seed_spread_multiplier" in section:
        value = section["seed_spread_multiplier"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise CompareInputError(f"compare.seed_spread_multiplier must be a non-negative number (the tolerance "
                                    f"of a bound or marginal likelihood widens by it x the seed spread), got {value!r}")
        tolerances["seed_spread_multiplier"] = float(value)
    else:
        tolerances["seed_spread_multiplier"] = DEFAULT_SEED_SPREAD_MULTIPLIER
    tolerances["environment_change_multiplier"] = _environment_change_multiplier(section)
    for key in ("throughput_ratio", "variance_ratio"):
        if not 0 < tolerances[key] <= 1:
            raise CompareInputError(f"compare.{key} must be in (0, 1] (a ratio new/base below it is worse), "
                                    f"got {tolerances[key]}")
    return tolerances


def _environment_change_multiplier(section: dict) -> float:
    """params.yaml ``compare.environment_change_multiplier``, or the module default when absent."""
    value = section.get("environment_change_multiplier", ENVIRONMENT_CHANGE_TOLERANCE_MULTIPLIER)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value < math.inf:
        raise CompareInputError(f"compare.environment_change_multiplier must be a number >= 1 (a bound's or marginal "
                                f"likelihood's tolerance is multiplied by it when the sides trained on different "
                                f"devices or torch builds; 1 leaves it as is), got {value!r}")
    return float(value)


def _ratio_verdict(base: float, new: float, ratio: float, higher_is_better: bool) -> str:
    """``same`` while new/base stays within [ratio, 1/ratio]; else better or worse by direction."""
    if base == 0:
        return "same" if new == 0 else "changed"
    quotient = new / base
    if ratio <= quotient <= 1 / ratio:
        return "same"
    return "better" if (quotient > 1) == higher_is_better else "worse"


def _side_seed_spread(key: str, side: dict) -> float | None:
    """One side's seed spread of ``key``: for an aggregate K its ``K_seed_se``; for a per-seed key
    ``P/seed<S>/NAME`` one seed's s.d., ``P/NAME_seed_se`` x sqrt(``P/seeds``); None without it."""
    match = PER_SEED_KEY.fullmatch(key)
    if match is None:
        return side.get(f"{key}_seed_se")
    prefix, name = match["prefix"], match["name"]
    se, n = side.get(f"{prefix}/{name}_seed_se"), side.get(f"{prefix}/seeds")
    if se is None or n is None or n < 1:
        return None
    return se * math.sqrt(n)


def seed_spread(key: str, base_all: dict, new_all: dict) -> float | None:
    """The two sides' seed spreads of ``key`` in quadrature (a side without one counts 0); None
    when neither side has one (the configuration has a single seed, or predates seeds)."""
    spreads = [_side_seed_spread(key, side) for side in (base_all, new_all)]
    if all(s is None for s in spreads):
        return None
    return math.hypot(*(s or 0.0 for s in spreads))


def compare_one(key: str, base: float, new: float, base_all: dict, new_all: dict, tolerances: dict,
                environment_change: str = "") -> Row:
    """One metric's row; ``environment_change`` (:func:`pipeline.compare.environment.environment_change`,
    empty when none) widens a bound's or marginal likelihood's tolerance and excuses a throughput's
    change."""
    family = family_of(key)
    difference = new - base
    note, widening = "", 0.0
    if family in ("bound", "marginal_likelihood"):
        k = tolerances.get("seed_spread_multiplier", DEFAULT_SEED_SPREAD_MULTIPLIER)
        spread = seed_spread(key, base_all, new_all)
        if spread is not None and k * spread > 0:
            widening = k * spread
            what = "s.d." if PER_SEED_KEY.fullmatch(key) else "s.e."
            seed_term = f" + {k:g} x seed {what} {spread:.3g}"
            note = f"tolerance widened by seed spread: +{widening:.3g} nats ({k:g} x {spread:.3g})"
        else:
            seed_term = ""
    if family == "bound":
        tolerance = tolerances["bound_nats"] + widening
        rule = (f"|diff| <= {tolerances['bound_nats']:g}{seed_term} = {tolerance:.3g} nats" if seed_term
                else f"|diff| <= {tolerance:g} nats")
    elif family == "marginal_likelihood":
        stem = re.sub(r"_ml(_is|_grid)?$", "", key)
        errors = [side.get(f"{stem}_ml_se", 0.0) for side in (base_all, new_all)]
        combined = math.hypot(*errors)
        tolerance = (tolerances["marginal_likelihood_se"] * combined + tolerances["marginal_likelihood_floor_nats"]
                     + widening)
        rule = (f"|diff| <= {tolerances['marginal_likelihood_se']:g} x s.e. {combined:.3g} + "
                f"{tolerances['marginal_likelihood_floor_nats']:g}{seed_term} = {tolerance:.3g} nats")
    if family in ("bound", "marginal_likelihood"):
        environment_widening = 0.0
        if environment_change:
            tolerance, rule, environment_note, environment_widening = _widen_for_environment(tolerance, rule,
                                                                                             tolerances)
            note = "; ".join(n for n in (note, environment_note) if n)
        verdict = "same" if abs(difference) <= tolerance else ("better" if difference > 0 else "worse")
        return Row(key, family, base, new, difference, verdict, rule, note, widening, environment_widening)
    if family == "throughput":
        verdict = _ratio_verdict(base, new, tolerances["throughput_ratio"], higher_is_better=True)
        rule = f"new/base within [{tolerances['throughput_ratio']:g}, {1 / tolerances['throughput_ratio']:.3g}]"
        if environment_change and verdict in ("better", "worse"):
            return Row(key, family, base, new, difference, "changed", rule,
                       f"changed by the environment ({verdict} by the ratio): not a regression",
                       environment_changed=True)
    elif family == "variance":
        verdict = _ratio_verdict(base, new, tolerances["variance_ratio"], higher_is_better=False)
        rule = f"new/base within [{tolerances['variance_ratio']:g}, {1 / tolerances['variance_ratio']:.3g}], lower is better"
    elif family == "claim":
        verdict = "same" if new == base else ("better" if new > base else "worse")
        rule = "1 = pass, 0.5 = inconclusive, 0 = fail"
    else:
        verdict = "same" if new == base else "changed"
        rule = "informational"
    return Row(key, family, base, new, difference, verdict, rule, note, widening)


def _widen_for_environment(tolerance: float, rule: str, tolerances: dict) -> tuple[float, str, str, float]:
    """A bound's or marginal likelihood's tolerance x m for an environment change: the widened
    tolerance, its rule, the row's note and the nats added."""
    m = tolerances.get("environment_change_multiplier", ENVIRONMENT_CHANGE_TOLERANCE_MULTIPLIER)
    widened_tolerance = m * tolerance
    added = widened_tolerance - tolerance
    if added <= 0:
        return tolerance, rule, "", 0.0
    return (widened_tolerance, f"{rule}; x {m:g} for the environment change = {widened_tolerance:.3g} nats",
            f"tolerance widened by the environment change: {tolerance:.3g} -> {widened_tolerance:.3g} nats "
            f"(x {m:g})", added)


def compare_metrics(base: dict[str, float], new: dict[str, float], tolerances: dict[str, float],
                    only: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                    environment_change: str = "") -> list[Row]:
    """A row per metric of either side (selected by ``only`` and ``exclude``); ``environment_change``
    as :func:`compare_one` reads it."""
    def selected(key: str) -> bool:
        return (not only or any(fnmatch.fnmatchcase(key, p) for p in only)) and \
            not any(fnmatch.fnmatchcase(key, p) for p in exclude)

    # what the tolerances read: every metric of a side, and seed spreads it carries uncompared
    base_all = {**getattr(base, "spreads", {}), **base}
    new_all = {**getattr(new, "spreads", {}), **new}
    rows = []
    for key in sorted(set(base) | set(new)):
        if not selected(key):
            continue
        if key not in new:
            rows.append(Row(key, family_of(key), base[key], None, None, "removed", "only in BASE"))
        elif key not in base:
            rows.append(Row(key, family_of(key), None, new[key], None, "added", "only in NEW"))
        else:
            rows.append(compare_one(key, base[key], new[key], base_all, new_all, tolerances, environment_change))
    return rows


def regressions(rows: list[Row], allow_removed: bool = False) -> list[Row]:
    """Every ``worse``, and every ``removed`` unless allowed -- but for seed spread and count keys:
    those vanish when NEW has one seed, and hide nothing (the mean over seeds is still compared)."""
    return [r for r in rows if r.verdict == "worse"
            or (r.verdict == "removed" and not allow_removed and not is_seed_info(r.key))]


def counts(rows: list[Row]) -> dict[str, int]:
    """How many rows have each verdict, in :data:`VERDICTS` order."""
    return {verdict: sum(r.verdict == verdict for r in rows) for verdict in VERDICTS}


def widened(rows: list[Row]) -> list[Row]:
    """The rows whose tolerance the seed spread widened."""
    return [r for r in rows if r.seed_widening > 0]


def widened_for_environment(rows: list[Row]) -> list[Row]:
    """The rows whose tolerance an environment change widened."""
    return [r for r in rows if r.environment_widening > 0]


def changed_by_environment(rows: list[Row]) -> list[Row]:
    """The throughputs whose change an environment change accounts for (``changed``, not regressions)."""
    return [r for r in rows if r.environment_changed]
