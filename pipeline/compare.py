"""``vaebench compare BASE NEW``: what changed between two runs or revisions, metric by metric.

A side is one of
- a report directory (``reports/default``: its ``metrics.json``) or a ``metrics.json`` file;
- ``rev:REV`` -- the committed ``reports/<profile>/metrics.json`` at git revision REV (read with
  ``git show``, nothing is checked out), or ``rev:REV:PATH`` for another report directory or file;
- ``paper`` -- the paper's values (``reports/reference/``), read *at the other side's budget*:
  Figure 2 bounds interpolated on log x at that run's ``.../samples``, Figure 3 marginal
  likelihoods at that checkpoint's samples; metrics the paper does not show there are absent.

Each metric belongs to a family by its key (``metrics.json``'s naming, :mod:`pipeline.metrics`),
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

Verdicts: ``better``, ``same``, ``worse``, ``changed`` (info only), ``added`` (only in NEW),
``removed`` (only in BASE). A regression is any ``worse``, and any ``removed`` unless
``--allow-removed`` (a metric that vanished can hide one) -- except a ``*_seed_se`` or ``*/seeds``
key, which vanishes when NEW has a single seed and hides nothing.
"""
from __future__ import annotations

import fnmatch
import json
import math
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from .reference import REFERENCE_DIR, Reference

VERDICTS = ("better", "same", "worse", "changed", "added", "removed")
TOLERANCE_KEYS = ("bound_nats", "marginal_likelihood_se", "marginal_likelihood_floor_nats", "throughput_ratio",
                  "variance_ratio")
DEFAULT_SEED_SPREAD_MULTIPLIER = 2.0  # params.yaml compare.seed_spread_multiplier, when absent
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
    for key in ("throughput_ratio", "variance_ratio"):
        if not 0 < tolerances[key] <= 1:
            raise CompareInputError(f"compare.{key} must be in (0, 1] (a ratio new/base below it is worse), "
                                    f"got {tolerances[key]}")
    return tolerances


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
        path = path / "metrics.json"
    if not path.is_file():
        raise CompareInputError(
            f"{spec!r} is neither a report directory with a metrics.json, a metrics.json file, `rev:REV[:PATH]` "
            f"nor `paper`")
    return _parse_metrics(path.read_text(), str(path))


def read_revision(spec: str, repo: Path, profile: str) -> dict[str, float]:
    """``rev:REV`` or ``rev:REV:PATH`` through ``git show`` (no checkout)."""
    _, _, rest = spec.partition(":")
    revision, _, path = rest.partition(":")
    if not revision:
        raise CompareInputError(f"{spec!r}: name a revision, e.g. rev:HEAD~1 or rev:main:reports/smoke")
    path = path or f"reports/{profile}"
    candidates = [path] if path.endswith(".json") else [f"{path.rstrip('/')}/metrics.json"]
    for candidate in candidates:
        try:
            result = subprocess.run(["git", "show", f"{revision}:{candidate}"], cwd=repo, capture_output=True,
                                    text=True, timeout=60)
        except OSError as err:
            raise CompareInputError(f"{spec!r}: git is not available ({err})") from None
        if result.returncode == 0:
            return _parse_metrics(result.stdout, f"{candidate} at {revision}")
        message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "git show failed"
    raise CompareInputError(f"{spec!r}: cannot read {candidates[0]} at revision {revision!r} in {repo} ({message})")


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


def compare_one(key: str, base: float, new: float, base_all: dict, new_all: dict, tolerances: dict) -> Row:
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
        verdict = "same" if abs(difference) <= tolerance else ("better" if difference > 0 else "worse")
        rule = (f"|diff| <= {tolerances['bound_nats']:g}{seed_term} = {tolerance:.3g} nats" if seed_term
                else f"|diff| <= {tolerance:g} nats")
    elif family == "marginal_likelihood":
        stem = re.sub(r"_ml(_is|_grid)?$", "", key)
        errors = [side.get(f"{stem}_ml_se", 0.0) for side in (base_all, new_all)]
        combined = math.hypot(*errors)
        tolerance = (tolerances["marginal_likelihood_se"] * combined + tolerances["marginal_likelihood_floor_nats"]
                     + widening)
        verdict = "same" if abs(difference) <= tolerance else ("better" if difference > 0 else "worse")
        rule = (f"|diff| <= {tolerances['marginal_likelihood_se']:g} x s.e. {combined:.3g} + "
                f"{tolerances['marginal_likelihood_floor_nats']:g}{seed_term} = {tolerance:.3g} nats")
    elif family == "throughput":
        verdict = _ratio_verdict(base, new, tolerances["throughput_ratio"], higher_is_better=True)
        rule = f"new/base within [{tolerances['throughput_ratio']:g}, {1 / tolerances['throughput_ratio']:.3g}]"
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


def compare_metrics(base: dict[str, float], new: dict[str, float], tolerances: dict[str, float],
                    only: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[Row]:
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
            rows.append(compare_one(key, base[key], new[key], base_all, new_all, tolerances))
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


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------
def _cell(value: float | None) -> str:
    if value is None:
        return "–"
    if value == int(value) and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:.4g}" if abs(value) < 0.01 and value != 0 else f"{value:,.3f}"


def render(rows: list[Row], fmt: str, base_label: str, new_label: str, allow_removed: bool = False) -> str:
    bad = regressions(rows, allow_removed)
    summary = ", ".join(f"{n} {v}" for v, n in counts(rows).items() if n)
    n_widened = len(widened(rows))
    if fmt == "json":
        return json.dumps({"base": base_label, "new": new_label, "counts": counts(rows),
                           "widened_by_seed_spread": n_widened,
                           "regressions": [r.key for r in bad], "metrics": [asdict(r) for r in rows]}, indent=2)
    with_notes = any(r.note for r in rows)
    header = ["metric", base_label, new_label, "diff", "verdict"] + (["note"] if with_notes else [])
    body = [[r.key, _cell(r.base), _cell(r.new), "–" if r.difference is None else f"{r.difference:+.3g}",
             r.verdict.upper() if r in bad else r.verdict] + ([r.note] if with_notes else []) for r in rows]
    footer = (f"{len(rows)} metrics: {summary or 'none'}. "
              + (f"{n_widened} metric(s) had their tolerance widened by seed spread. " if n_widened else "")
              + (f"{len(bad)} regression(s): {', '.join(r.key for r in bad[:10])}{' ...' if len(bad) > 10 else ''}"
                 if bad else "No regression."))
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|---|" + ("---|" if with_notes else "")]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines + ["", footer])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body)] if body else [len(h) for h in header]
    line = lambda cells: "  ".join(c.ljust(w) if i in (0, 4, 5) else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(row) for row in body] + ["", footer])
