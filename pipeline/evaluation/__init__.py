"""The evaluation stages: the marginal likelihood of every checkpoint (Figure 3), the variance of
estimators A and B (Section 2.3), a log-likelihood for every Figure 2 model, and the
linear-Gaussian floor on Frey Face.

Modules:

- :mod:`linear_reference`: The exact log-likelihood of factor analysis, probabilistic PCA and independent pixels on Frey Face
- :mod:`estimator_variance`: Measure the variance of SGVB estimators A and B on the trained Figure 2 AEVB models ...
- :mod:`log_likelihood`: A log-likelihood for every Figure 2 model (AIS, the BDMC sandwich, the ELBO and an importance-weighted bound)
- :mod:`marginal_likelihood`: The ``evaluate`` stage: the marginal likelihood of every checkpoint of a run (Figure 3)
"""

__all__ = ["estimator_variance", "linear_reference", "log_likelihood", "marginal_likelihood"]
