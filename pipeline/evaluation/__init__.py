"""The evaluation stages on trained runs: the marginal likelihood of every checkpoint (Figure 3)
and the variance of estimators A and B (Section 2.3).

Modules:

- :mod:`estimator_variance`: Measure the variance of SGVB estimators A and B on the trained Figure 2 AEVB models ...
- :mod:`marginal_likelihood`: The ``evaluate`` stage: the marginal likelihood of every checkpoint of a run (Figure 3)
"""

__all__ = ["estimator_variance", "marginal_likelihood"]
