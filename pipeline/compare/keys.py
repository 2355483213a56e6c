"""What a metric's key says about it, for ``vaebench compare``: its family (which tolerance judges
it), and whether it is a per-seed key or a seed spread or count.

Keys follow ``metrics.json``'s naming (:mod:`pipeline.reporting.metrics`):

| family | keys |
|---|---|
| bound | ``*_lb`` |
| marginal_likelihood | ``*_ml``, ``*_ml_is``, ``*_ml_grid`` |
| throughput | ``speed/*`` |
| claim | ``claims/*``, ``claims_paper_at_budget/*`` |
| variance | ``estimator_variance/*`` |
| info | ``*/samples``, ``*_ml_se``, ``*_seed_se``, ``*/seeds`` (and anything else) |

A configuration trained with several seeds also has per-seed keys, with a ``seed<S>`` element
before the last one (``fig2/mnist/nz20/aevb/seed2/test_lb``), which belong to the family of their
last element; ``K_seed_se`` (the standard error over seeds of the mean K) and
``<configuration>/seeds`` (n) are its seed spread and count.
"""
from __future__ import annotations

import re

PER_SEED_KEY = re.compile(r"(?P<prefix>.+)/seed(?P<seed>\d+)/(?P<name>[^/]+)")  # P/seed<S>/NAME


def is_seed_info(key: str) -> bool:
    """A seed spread (``*_seed_se``) or seed count (``*/seeds``) key."""
    return key.endswith("_seed_se") or key.endswith("/seeds")


def family_of(key: str) -> str:
    """The family of ``key``: bound, marginal_likelihood, throughput, claim, variance or info."""
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
