"""Reading one side of ``vaebench compare``: its metrics, as :class:`Metrics`.

A side is one of
- a report directory (``reports/default``: its ``metrics.json``) or a ``metrics.json`` file;
- ``rev:REV`` -- the committed ``reports/<profile>/metrics.json`` at git revision REV (read with
  ``git show`` through :mod:`pipeline.plumbing.git`, nothing is checked out), or ``rev:REV:PATH`` for
  another report directory or file; a REV git would read as an option (``rev:--output=FILE``) is
  refused before git sees it;
- ``paper`` -- the paper's values (``reports/reference/``), read *at the other side's budget*:
  Figure 2 bounds interpolated on log x at that run's ``.../samples``, Figure 3 marginal
  likelihoods at that checkpoint's samples; metrics the paper does not show there are absent.
  The paper has no seeds, so per-seed, ``_seed_se`` and ``seeds`` keys are not compared with it;
  the run side keeps its seed spreads (uncompared, :attr:`Metrics.spreads`) for the tolerances.
"""
from __future__ import annotations

import json
import math
import posixpath
import re
from pathlib import Path

from pipeline.compare.compare import CompareInputError
from pipeline.compare.keys import PER_SEED_KEY, is_seed_info
from pipeline.plumbing.git import GitUnavailableError, show_file
from pipeline.reporting.reference import REFERENCE_DIR, Reference

METRICS_FILE = "metrics.json"  # a report directory's metrics


class Metrics(dict):
    """A side's metrics to compare, with ``spreads``: seed-spread metrics (``*_seed_se``,
    ``*/seeds``) the tolerances read though they are not compared -- a run's, when the other side
    is the paper (which has none, so only the keys the paper shows are compared)."""

    def __init__(self, metrics: dict[str, float], spreads: dict[str, float] | None = None) -> None:
        super().__init__(metrics)
        self.spreads = dict(spreads or {})


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
    """A report directory's ``metrics.json``, or a metrics file."""
    path = Path(spec)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise CompareInputError(
            f"{spec!r} is neither a report directory with a metrics.json, a metrics.json file, `rev:REV[:PATH]` "
            f"nor `paper`")
    return _parse_metrics(path.read_text(), str(path))


def revision_and_path(spec: str, profile: str) -> tuple[str, str]:
    """``rev:REV[:PATH]`` as (REV, PATH), PATH ``reports/<profile>`` when not given."""
    _, _, rest = spec.partition(":")
    revision, _, path = rest.partition(":")
    if not revision:
        raise CompareInputError(f"{spec!r}: name a revision, e.g. rev:HEAD~1 or rev:main:reports/smoke")
    return revision, path or f"reports/{profile}"


def show_at_revision(spec: str, repo: Path, revision: str, path: str) -> tuple[str | None, str]:
    """The text of ``path`` at ``revision`` (None when git cannot show it) and git's last word, by
    :func:`pipeline.plumbing.git.show_file`; :class:`CompareInputError` naming ``spec`` where git
    cannot run or ``revision`` is no revision (one git would read as an option, say)."""
    try:
        return show_file(revision, path, repo)
    except (GitUnavailableError, ValueError) as err:  # git cannot run; check_revision refused the revision
        raise CompareInputError(f"{spec!r}: {err}") from None


def read_revision(spec: str, repo: Path, profile: str) -> dict[str, float]:
    """``rev:REV`` or ``rev:REV:PATH`` through ``git show`` (no checkout)."""
    revision, path = revision_and_path(spec, profile)
    candidate = path if path.endswith(".json") else posixpath.join(path.rstrip("/"), METRICS_FILE)
    text, message = show_at_revision(spec, repo, revision, candidate)
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


def resolve_sides(base_spec: str, new_spec: str, repo: Path, profile: str,
                  reference_dir: Path = REFERENCE_DIR) -> tuple[dict, dict]:
    """Both sides' metrics; a ``paper`` side is read at the other side's budgets, and the other side
    then keeps only the keys the paper shows (its seed spreads as :attr:`Metrics.spreads`)."""
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
