"""log p(x|z) of the paper's two decoders, written once, from the decoder's output layer o.

The ``nn.Module`` decoders of :mod:`vae_core.networks` return ``torch.distributions`` objects: the
reference, differentiated by autograd. The paths that skip autograd -- the fused AEVB update
(:mod:`vae_core.fused_aevb`), the hand-derived gradients of the baselines and of the HMC target
(:mod:`vae_core.hand_gradients`) and the marginal-likelihood estimators
(:mod:`vae_core.marginal_likelihood`) -- take the same densities from here, so each formula and
its gradient exists once (tests/test_hand_gradients.py checks them against the reference).

**Bernoulli MLP decoder** (Appendix C.1), o = logits, y = sigmoid(o):

    log p(x|z) = sum_i x_i log y_i + (1 - x_i) log(1 - y_i) = sum_i x_i o_i - softplus(o_i)
    d log p(x|z) / d o = x - sigmoid(o)

(with MNIST grey levels as targets, docs/protocol.md section 1, this is the cross-entropy).

**Gaussian MLP decoder** (Appendix C.2), o = [u, v], mean m = sigmoid(u), log sigma^2 = v:

    log p(x|z) = -1/2 sum_i [log 2 pi + v_i + (x_i - m_i)^2 e^{-v_i}]
    d log p(x|z) / d u = (x - m) e^{-v} m (1 - m),   d log p(x|z) / d v = ((x - m)^2 e^{-v} - 1) / 2

The gradients take a ``scale`` (the training losses want -1/M times the gradient, HMC the
gradient itself) and optional ``out`` and ``work`` buffers (the fused update reuses its own at
every step); the order of the floating-point operations does not depend on either.

The *pairwise* forms give log p(x_c|z_g) for every datapoint c and every one of G latent points
z_g at once (a grid shared by all datapoints): the sum over pixels becomes a matrix product,
and the decoder runs once per latent point instead of once per pair.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) per row (summed over the last axis), from the logits o."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def bernoulli_output_gradient(logits: torch.Tensor, x: torch.Tensor, scale: float = 1.0,
                              out: torch.Tensor | None = None) -> torch.Tensor:
    """``scale`` x d log p(x|z) / d o = ``scale`` (x - sigmoid(o)), computed as (sigmoid(o) - x)(-scale)."""
    return torch.sigmoid(logits, out=out).sub_(x).mul_(-scale)


def bernoulli_pairwise_log_likelihood(x: torch.Tensor, logits: torch.Tensor,
                                      offset: torch.Tensor | float = 0.0) -> torch.Tensor:
    """log p(x_c|z_g) + offset_g for data x (C, D) and the logits of G latent points (G, D): (C, G).

    x_c . o_g - sum_i softplus(o_gi): one matrix product with the per-point terms (and ``offset``,
    e.g. log p(z_g)) as its bias.
    """
    per_point = offset - F.softplus(logits).sum(-1)  # (G,)
    return torch.addmm(per_point[None], x.to(logits.dtype), logits.T)


def bernoulli_samplewise_log_likelihood(x: torch.Tensor, logits: torch.Tensor,
                                        offset: torch.Tensor | float = 0.0) -> torch.Tensor:
    """offset_sc + log p(x_c|z_sc) for data x (C, D) and S latent samples per datapoint, logits
    (S, C, D): (S, C).

    x_c . o_sc as one batched product over the datapoints, minus sum_i softplus(o_sci).
    """
    dot = torch.bmm(logits.transpose(0, 1), x.to(logits.dtype).unsqueeze(-1)).squeeze(-1).T  # (S, C)
    return offset + dot - F.softplus(logits).sum(-1)


def gaussian_log_likelihood_and_output_gradient(
    output: torch.Tensor,
    x: torch.Tensor,
    scale: float = 1.0,
    need_value: bool = True,
    out: torch.Tensor | None = None,
    work: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(log p(x|z) per row, or None without ``need_value``; ``scale`` x d log p(x|z) / d o).

    ``output`` = [u, v] (..., 2D), ``x`` (..., D). ``out`` (..., 2D) receives the gradient (its
    halves are d/du and d/dv); ``work`` is three (..., D) buffers for the mean, (x - m) e^{-v}
    and (x - m)^2 e^{-v}.
    """
    D = x.shape[-1]
    u, v = output[..., :D], output[..., D:]
    if out is None:
        out = torch.empty_like(output)
    mean_buffer, diff_buffer, square_buffer = work if work is not None else (None, None, None)
    mean = torch.sigmoid(u, out=mean_buffer)
    diff = torch.sub(x, mean, out=diff_buffer)              # x - m
    square = torch.mul(diff, diff, out=square_buffer)       # (x - m)^2
    precision = torch.exp(-v)
    diff.mul_(precision)                                    # (x - m) / sigma^2
    square.mul_(precision)                                  # (x - m)^2 / sigma^2
    log_px = -0.5 * (D * LOG_2PI + (v.sum(-1) + square.sum(-1))) if need_value else None
    torch.mul(diff.mul_(mean), mean - 1.0, out=out[..., :D]).mul_(-scale)   # scale (x-m)/s^2 m (1-m)
    torch.mul(square, 0.5 * scale, out=out[..., D:]).sub_(0.5 * scale)     # scale ((x-m)^2/s^2 - 1) / 2
    return log_px, out


def gaussian_pairwise_log_likelihood(x: torch.Tensor, mean: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log N(x_c; mean_g, diag sigma_g^2) for data x (C, D) and G latent points' means and standard
    deviations (G, D): (C, G), in float64 (its terms cancel).

    -1/2 [x^2 . s - 2 x . (mean s) + mean^2 . s + sum log sigma^2 + D log 2 pi], s = 1 / sigma^2:
    three matrix products over pixels.
    """
    mean, sigma = mean.double(), sigma.double()
    s = sigma.pow(-2)
    xd = x.double()
    quad = xd.pow(2) @ s.T - 2 * xd @ (mean * s).T + (mean.pow(2) * s).sum(-1)[None]
    return -0.5 * (quad + (2 * torch.log(sigma)).sum(-1)[None] + x.shape[-1] * LOG_2PI)
