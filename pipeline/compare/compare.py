"""``vaebench compare BASE NEW``: what changed between two runs or revisions, metric by metric.

A side is one of
- a report directory (``reports/default``: its ``metrics.json``) or a ``metrics.json`` file;
- ``rev:REV`` -- the committed ``reports/<profile>/metrics.json`` at git revision REV (read with
  ``git show``, nothing is checked out), or ``rev:REV:PATH`` for another report directory or file;
- ``paper`` -- the paper's values (``reports/reference/``), read *at the other side's budget*:
  Figure 2 bounds interpolated on log x at that run's ``.../samples``, Figure 3 marginal
  likelihoods at that checkpoint's samples; metrics the paper does not show there are absent.

Each metric belongs to a family by its key (``metrics.json``'s naming, :mod:`pipeline.reporting.metrics`),
and params.yaml ``compare:`` holds one tolerance per family:

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
``K_seed_se``; per-seed, ``_seed_se`` and ``seeds`` keys are not compared with the paper.

Environment. Each report directory holds a ``provenance.json`` beside its ``metrics.json``
(:mod:`pipeline.reporting.provenance`; read from git for ``rev:REV``; the ``paper`` side has none). When both
sides have one and they differ in the kinds of device the runs trained on (``cpu``, ``cuda``), the
torch build (``torch.__version__``, and ``torch.version.cuda`` where both record it) or the GPU
(where both name one), the output opens with "environment changed: devices cpu -> cuda (torch
2.13.0+cpu -> 2.13.0+cu126)", and
- a throughput (``speed/*``) outside its ratio is ``changed``, noted "changed by the environment",
  never a regression: a device measures a different machine, not the code;
- a bound's or marginal likelihood's tolerance (seed widening included) is multiplied by ``m``,
  params.yaml ``compare.environment_change_multiplier`` (:data:`ENVIRONMENT_CHANGE_TOLERANCE_MULTIPLIER`
  when absent; 1 turns it off), noted per metric; a change beyond it is still ``worse``.
A side without provenance.json (a metrics.json alone, an older revision, a file not named
metrics.json) is not checked; an older provenance.json without ``environment`` is read from its
``devices`` and ``packages.torch``.

Verdicts: ``better``, ``same``, ``worse``, ``changed`` (info only), ``added`` (only in NEW),
``removed`` (only in BASE). A regression is any ``worse``, and any ``removed`` unless
``--allow-removed`` (a metric that vanished can hide one) -- except a ``*_seed_se`` or ``*/seeds``
key, which vanishes when NEW has a single seed and hides nothing.
"""
from __future__ import annotations

import fnmatch
import json
import math
import posixpath
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.reporting.reference import REFERENCE_DIR, Reference

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
METRICS_FILE = "metrics.json"  # a report directory's metrics
PROVENANCE_FILE = "provenance.json"  # beside metrics.json in a report directory
PER_SEED_KEY = re.compile(r"(?P<prefix>.+)/seed(?P<seed>\d+)/(?P<name>[^/]+)")  # P/seed<S>/NAME


class CompareInputError(ValueError):
    """A side or an option that cannot be read; the message names it and says what would work."""


@dataclass
class Row:
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


class Metrics(dict):
    """A side's metrics to compare, with ``spreads``: seed-spread metrics (``*_seed_se``,
    ``*/seeds``) the tolerances read though they are not compared -- a run's, when the other side
    is the paper (which has none, so only the keys the paper shows are compared)."""

    def __init__(self, metrics: dict[str, float], spreads: dict[str, float] | None = None):
        super().__init__(metrics)
        self.spreads = dict(spreads or {})


def is_seed_info(key: str) -> bool:
    """A seed spread (``*_seed_se``) or seed count (``*/seeds``) key."""
    return key.endswith("_seed_se") or key.endswith("/seeds")


def family_of(key: str) -> str:
    if key.startswith("claims/") or key.startswith("claims_paper_at_budget/"):
        return "claim"
    if is_seed_info(key):
        return "info"
    if key.startswith("speed/"):
        return "throughput"
    if key.startswith("estimator_variance/"):
        return "variance"
    if key.endswith("/samples") or key.endswith("_ml_se"):
        return "info"
    if key.endswith("_lb"):
        return "bound"
    if re.search(r"_ml(_is|_grid)?$", key):
        return "marginal_likelihood"
    return "info"


def tolerances_from_params(params: dict) -> dict[str, float]:
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


# --------------------------------------------------------------------------------------------------
# Reading a side
# --------------------------------------------------------------------------------------------------
def _parse_metrics(text: str, origin: str) -> dict[str, float]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CompareInputError(f"{origin} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise CompareInputError(f"{origin} must hold a flat JSON object of metric: number")
    return {key: _metric_value(value, key, origin) for key, value in data.items()}


def _metric_value(value: object, key: str, origin: str) -> float:
    """One metric as a float; anything but a finite number is an input error naming ``key``.

    ``vaebench report`` never writes NaN or infinity into metrics.json (a metric without data is
    left out), but Python's JSON reader accepts them (and numbers too large for a float), and no
    verdict can be drawn from one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CompareInputError(f"{origin}: metric {key!r} is {value!r}, not a number (metrics.json is flat)")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a float's range: infinite as a float
        number = math.inf
    if not math.isfinite(number):
        raise CompareInputError(f"{origin}: metric {key!r} is {number}, not a finite number; metrics.json "
                                f"holds finite numbers only: regenerate it with `vaebench report`")
    return number


def read_path(spec: str) -> dict[str, float]:
    path = Path(spec)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise CompareInputError(
            f"{spec!r} is neither a report directory with a metrics.json, a metrics.json file, `rev:REV[:PATH]` "
            f"nor `paper`")
    return _parse_metrics(path.read_text(), str(path))


def _revision_and_path(spec: str, profile: str) -> tuple[str, str]:
    """``rev:REV[:PATH]`` as (REV, PATH), PATH ``reports/<profile>`` when not given."""
    _, _, rest = spec.partition(":")
    revision, _, path = rest.partition(":")
    if not revision:
        raise CompareInputError(f"{spec!r}: name a revision, e.g. rev:HEAD~1 or rev:main:reports/smoke")
    return revision, path or f"reports/{profile}"


def _git_show(spec: str, repo: Path, revision: str, path: str) -> tuple[str | None, str]:
    """The text of ``path`` at ``revision`` (None when git cannot show it) and git's last word."""
    try:
        result = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=repo, capture_output=True,
                                text=True, timeout=60)
    except OSError as err:
        raise CompareInputError(f"{spec!r}: git is not available ({err})") from None
    if result.returncode == 0:
        return result.stdout, ""
    return None, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "git show failed"


def read_revision(spec: str, repo: Path, profile: str) -> dict[str, float]:
    """``rev:REV`` or ``rev:REV:PATH`` through ``git show`` (no checkout)."""
    revision, path = _revision_and_path(spec, profile)
    candidate = path if path.endswith(".json") else posixpath.join(path.rstrip("/"), METRICS_FILE)
    text, message = _git_show(spec, repo, revision, candidate)
    if text is None:
        raise CompareInputError(f"{spec!r}: cannot read {candidate} at revision {revision!r} in {repo} ({message})")
    return _parse_metrics(text, f"{candidate} at {revision}")


def paper_metrics(like: dict[str, float], reference: Reference) -> dict[str, float]:
    """The paper's values for the bound and marginal-likelihood keys of ``like``, at its budgets.

    Only aggregate keys (means over seeds): the paper has no seeds, so per-seed keys and the seed
    spread and count keys of ``like`` have no counterpart here."""
    metrics = {}
    for key in like:
        if PER_SEED_KEY.fullmatch(key) or is_seed_info(key):
            continue
        match = re.fullmatch(r"fig2/(\w+)/nz(\d+)/(\w+)/(train|test)_lb", key)
        if match:
            dataset, nz, algorithm, split = match.groups()
            samples = like.get(f"fig2/{dataset}/nz{nz}/{algorithm}/samples")
            value = reference.fig2_at(dataset, int(nz), algorithm, split, samples) if samples else None
            if value is not None:
                metrics[key] = value
            continue
        match = re.fullmatch(r"fig3/ntrain(\d+)/(\w+)/(train|test)_ml", key)
        if match:
            ntrain, algorithm, split = match.groups()
            samples = like.get(f"fig3/ntrain{ntrain}/{algorithm}/samples")
            value = reference.fig3_at(int(ntrain), algorithm, split, samples) if samples else None
            if value is not None:
                metrics[key] = value
    return metrics


def read_side(spec: str, repo: Path, profile: str) -> dict[str, float] | None:
    """The metrics of one side; None for ``paper`` (resolved against the other side)."""
    if spec == "paper":
        return None
    if spec.startswith("rev:"):
        return read_revision(spec, repo, profile)
    return read_path(spec)


# --------------------------------------------------------------------------------------------------
# A side's environment: provenance.json beside its metrics.json
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Environment:
    """What a report's runs trained on and with, from its provenance.json (None: not recorded)."""
    devices: tuple[str, ...]  # the kinds of device the runs trained on ("cpu", "cuda"), sorted
    torch: str | None  # torch.__version__, e.g. "2.13.0+cu126"
    torch_cuda: str | None = None  # torch.version.cuda: None on a CPU build
    gpu: str | None = None  # CUDA device 0's name
    build_recorded: bool = False  # whether torch_cuda was recorded (an older provenance.json lacks it)


def _device_kind(device: str) -> str:
    """``cuda:1`` -> ``cuda``: which of several GPUs of a machine a run used is no environment change."""
    return str(device).split(":", 1)[0]


def environment_of(provenance: dict, origin: str) -> Environment:
    """A provenance.json's ``environment``; for an older one without it, its ``devices`` and
    ``packages.torch``."""
    if not isinstance(provenance, dict):
        raise CompareInputError(f"{origin} must hold a JSON object (provenance.json): regenerate it with "
                                f"`vaebench report`, or remove it to compare without an environment check")
    recorded = provenance.get("environment")
    recorded = recorded if isinstance(recorded, dict) else {}
    devices = recorded.get("devices", provenance.get("devices")) or []
    packages = provenance.get("packages") if isinstance(provenance.get("packages"), dict) else {}
    if not isinstance(devices, list):
        raise CompareInputError(f"{origin}: `devices` is {devices!r}, not a list of device names: regenerate it "
                                f"with `vaebench report`, or remove it to compare without an environment check")
    return Environment(devices=tuple(sorted({_device_kind(d) for d in devices})),
                       torch=recorded.get("torch", packages.get("torch")), torch_cuda=recorded.get("torch_cuda"),
                       gpu=recorded.get("gpu"), build_recorded="torch_cuda" in recorded)


def _parse_environment(text: str, origin: str) -> Environment:
    try:
        provenance = json.loads(text)
    except json.JSONDecodeError as err:
        raise CompareInputError(f"{origin} is not valid JSON ({err.msg} at line {err.lineno}): regenerate it with "
                                f"`vaebench report`, or remove it to compare without an environment check") from None
    return environment_of(provenance, origin)


def read_environment(spec: str, repo: Path, profile: str) -> Environment | None:
    """The environment of one side, from the provenance.json beside its metrics.json (at REV for
    ``rev:REV``); None for ``paper``, for a side without one (nothing to check) and for a file not
    named metrics.json (a copy elsewhere: a provenance.json beside it need not be its report's)."""
    if spec == "paper":
        return None
    if spec.startswith("rev:"):
        revision, path = _revision_and_path(spec, profile)
        if path.endswith(".json") and posixpath.basename(path) != METRICS_FILE:
            return None
        folder = posixpath.dirname(path) if path.endswith(".json") else path.rstrip("/")
        candidate = posixpath.join(folder, PROVENANCE_FILE)
        text, _ = _git_show(spec, repo, revision, candidate)
        return None if text is None else _parse_environment(text, f"{candidate} at {revision}")
    path = Path(spec)
    if not path.is_dir() and path.name != METRICS_FILE:
        return None
    provenance = (path if path.is_dir() else path.parent) / PROVENANCE_FILE
    return _parse_environment(provenance.read_text(), str(provenance)) if provenance.is_file() else None


def _devices_text(devices: tuple[str, ...]) -> str:
    return ",".join(devices)


def environment_change(base: Environment | None, new: Environment | None) -> str:
    """What differs between the two sides' environments, in words ("environment changed: devices
    cpu -> cuda (torch 2.13.0+cpu -> 2.13.0+cu126)"); empty when nothing does or a side has none.

    Only what both sides record counts: devices when both name some, torch when both know it, the
    CUDA version only when the torch versions read alike (a build's tag, +cu126, usually shows it),
    the GPU when both name one."""
    if base is None or new is None:
        return ""
    changes = []
    if base.devices and new.devices and base.devices != new.devices:
        changes.append(f"devices {_devices_text(base.devices)} -> {_devices_text(new.devices)}")
    if base.torch and new.torch and base.torch != new.torch:
        changes.append(f"torch {base.torch} -> {new.torch}")
    elif base.build_recorded and new.build_recorded and base.torch_cuda != new.torch_cuda:
        changes.append(f"torch CUDA {base.torch_cuda or 'none'} -> {new.torch_cuda or 'none'}")
    if base.gpu and new.gpu and base.gpu != new.gpu:
        changes.append(f"GPU {base.gpu} -> {new.gpu}")
    if not changes:
        return ""
    first, rest = changes[0], changes[1:]
    return f"environment changed: {first}" + (f" ({', '.join(rest)})" if rest else "")


def resolve_environment_change(base_spec: str, new_spec: str, repo: Path, profile: str) -> str:
    """:func:`environment_change` between the two sides' provenance.json files."""
    return environment_change(read_environment(base_spec, repo, profile), read_environment(new_spec, repo, profile))


# --------------------------------------------------------------------------------------------------
# Comparing
# --------------------------------------------------------------------------------------------------
def _ratio_verdict(base: float, new: float, ratio: float, higher_is_better: bool) -> str:
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
    """One metric's row; ``environment_change`` (:func:`environment_change`, empty when none)
    widens a bound's or marginal likelihood's tolerance and excuses a throughput's change."""
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


def resolve_sides(base_spec: str, new_spec: str, repo: Path, profile: str,
                  reference_dir: Path = REFERENCE_DIR) -> tuple[dict, dict]:
    base, new = read_side(base_spec, repo, profile), read_side(new_spec, repo, profile)
    if base is None and new is None:
        raise CompareInputError("compare `paper` with a run: at most one side may be `paper`")
    if base is None or new is None:
        try:
            reference = Reference.load(repo / reference_dir if not Path(reference_dir).is_absolute() else reference_dir)
        except FileNotFoundError as err:
            raise CompareInputError(str(err)) from None
        # only what the paper shows is compared; the run keeps its seed spreads for the tolerances
        if base is None:
            base = paper_metrics(new, reference)
            new = Metrics({k: v for k, v in new.items() if k in base}, _seed_info(new))
        else:
            new = paper_metrics(base, reference)
            base = Metrics({k: v for k, v in base.items() if k in new}, _seed_info(base))
    return base, new


def _seed_info(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if is_seed_info(k)}


def regressions(rows: list[Row], allow_removed: bool = False) -> list[Row]:
    """Every ``worse``, and every ``removed`` unless allowed -- but for seed spread and count keys:
    those vanish when NEW has one seed, and hide nothing (the mean over seeds is still compared)."""
    return [r for r in rows if r.verdict == "worse"
            or (r.verdict == "removed" and not allow_removed and not is_seed_info(r.key))]


def counts(rows: list[Row]) -> dict[str, int]:
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


def _environment_footer(rows: list[Row]) -> str:
    n_widened, n_changed = len(widened_for_environment(rows)), len(changed_by_environment(rows))
    parts = ([f"{n_widened} metric(s) had their tolerance widened by the environment change"] if n_widened else []) \
        + ([f"{n_changed} speed metric(s) changed with the environment (not regressions)"] if n_changed else [])
    return "; ".join(parts) + ". " if parts else ""


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------
def _cell(value: float | None) -> str:
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
