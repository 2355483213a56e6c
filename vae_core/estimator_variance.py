"""The variance of SGVB estimators A and B on a fixed model (Section 2.3's claim about eq. 7).

The paper introduces estimator B (eq. 7) because, with the KL term in closed form, it "typically
has less variance than the generic estimator" A (eq. 6). Both are unbiased for the same bound, so
the claim is about their spread over the noise eps alone, on the same model and the same data.
Two measures, both over ``repeats`` independent draws of eps:

- **value variance**: per datapoint, the variance of the single-sample (L) estimate of its bound;
  averaged over the datapoints;
- **gradient variance**: the variance of the minibatch gradient (eq. 8 divided by N, i.e. the mean
  over the minibatch of the per-datapoint estimates) with respect to all parameters theta and
  phi, summed over parameters (the trace of the covariance). This is what drives AEVB's updates.
"""
from __future__ import annotations

import torch

from .estimators import sgvb_estimator


def estimator_value_variance(model, x: torch.Tensor, estimator: str, repeats: int = 100, L: int = 1) -> dict:
    """Mean over datapoints of the variance over eps of the estimator's value, and its mean."""
    function = sgvb_estimator(estimator)
    with torch.no_grad():
        draws = torch.stack([function(model, x, L).double() for _ in range(repeats)])  # (R, M)
    return {"value_mean": float(draws.mean()), "value_variance": float(draws.var(dim=0).mean())}


def estimator_gradient_variance(model, x: torch.Tensor, estimator: str, repeats: int = 50, L: int = 1) -> dict:
    """Trace of the covariance over eps of the minibatch gradient of the bound, all parameters;
    also split into encoder (phi) and decoder (theta) parts."""
    function = sgvb_estimator(estimator)
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    names = list(parameters)
    draws = []
    for _ in range(repeats):
        gradients = torch.autograd.grad(function(model, x, L).mean(), [parameters[n] for n in names])
        draws.append(torch.cat([g.reshape(-1).double() for g in gradients]))
    stacked = torch.stack(draws)  # (R, P)
    variance = stacked.var(dim=0)
    sizes = [parameters[n].numel() for n in names]
    parts = torch.split(variance, sizes)
    encoder = sum(float(v.sum()) for n, v in zip(names, parts) if n.startswith("encoder."))
    decoder = sum(float(v.sum()) for n, v in zip(names, parts) if n.startswith("decoder."))
    return {"gradient_variance": float(variance.sum()), "gradient_variance_encoder": encoder,
            "gradient_variance_decoder": decoder, "gradient_norm": float(stacked.mean(0).norm())}
