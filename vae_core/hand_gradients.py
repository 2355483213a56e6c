"""Hand-derived gradients of the densities the baselines and HMC differentiate, without autograd.

Autograd records a graph of the networks and the ``torch.distributions`` densities at every
evaluation; at the baselines' minibatch of 100 that bookkeeping costs as much as the arithmetic.
This module computes the same values and gradients directly (tested against autograd on both
decoders in tests/test_hand_gradients.py):

- :class:`DecoderLogJoint`: log p(x_c, z_c) = log p(z_c) + log p(x_c|z_c) per row c for fixed
  data x, with its gradient in z -- the HMC target of Monte Carlo EM's E-step (Appendix E) and
  of the marginal-likelihood estimator (Appendix D), which needs
  grad_z log p(z|x) = grad_z log p(z) + grad_z log p(x|z) at every leapfrog step -- and its
  gradient in the decoder's parameters at fixed z: MCEM's M-step and the wake phase of
  wake-sleep (no gradient through z in either).
- :func:`encoder_log_density_gradient_`: the gradient of the mean log q(z|x) in the encoder's
  parameters, the sleep phase of wake-sleep.

With the decoder's tanh hidden layer (Appendix C) h = tanh(W1 z + b1), its output layer
o = W2 h + b2 and g = d log p(x|z) / d o (the decoder's likelihood and its gradient in o,
:mod:`vae_core.decoder_likelihood`): log p(z) = -|z|^2 / 2 - Nz/2 log 2 pi with gradient -z, and
back through the layers: d/dW2 = g^T h, d/db2 = sum_c g, d/dh = g W2, d/da = d/dh (1 - h^2),
d/dW1 = (d/da)^T z, d/db1 = sum_c d/da, d/dz = (d/da) W1 - z.

The encoder, h = tanh(W3 x + b3), [mu, log s^2] = W45 h + b45 (Appendix C.2), and
log q(z|x) = -1/2 sum_j [log 2 pi + log s_j^2 + (z_j - mu_j)^2 / s_j^2]:
d/dmu = (z - mu) / s^2, d/dlog s^2 = ((z - mu)^2 / s^2 - 1) / 2, then back through the heads,
the tanh and W3 as above (no gradient with respect to x).
"""
from __future__ import annotations

import torch

from .activations import tanh_from_sigmoid_
from .decoder_likelihood import (
    LOG_2PI,
    bernoulli_log_likelihood,
    bernoulli_output_gradient,
    gaussian_log_likelihood_and_output_gradient,
)
from .model import VariationalAutoEncoder
from .networks import BernoulliMLPDecoder, GaussianMLPDecoder, GaussianMLPEncoder


def _linear_backward_(layer: torch.nn.Linear, grad_output: torch.Tensor, layer_input: torch.Tensor) -> None:
    """Set ``layer``'s weight and bias gradients for d(loss)/d(output) ``grad_output`` (C, out)."""
    layer.weight.grad = torch.mm(grad_output.T, layer_input)
    layer.bias.grad = grad_output.sum(0)


class DecoderLogJoint:
    """log p(x_c, z_c) per row c of a decoder for fixed data ``x`` (C, D), with hand gradients.

    Callable like any HMC target (``target(z)`` -> (C,)); vae_core.hmc uses
    :meth:`value_and_grad` instead of autograd when the target has it.
    """

    def __init__(self, model: VariationalAutoEncoder, x: torch.Tensor):
        self.gaussian = model.config.decoder == "gaussian"
        self.z_dim = model.config.z_dim
        self.x = x
        self.hidden = model.decoder.hidden
        self.output = model.decoder.heads if self.gaussian else model.decoder.output

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.value_and_grad(z)[0]

    def _forward(self, z: torch.Tensor, need_value: bool):
        """(h, log p(x|z) (C,) or None, g = d log p(x|z) / d o (C, out))."""
        h = tanh_from_sigmoid_(torch.addmm(self.hidden.bias, z, self.hidden.weight.T))
        o = torch.addmm(self.output.bias, h, self.output.weight.T)
        if self.gaussian:
            log_px, g = gaussian_log_likelihood_and_output_gradient(o, self.x, need_value=need_value)
            return h, log_px, g
        log_px = bernoulli_log_likelihood(o, self.x) if need_value else None
        return h, log_px, bernoulli_output_gradient(o, self.x)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) = log N(z; 0, I) per row."""
        return -0.5 * (z * z).sum(-1) - 0.5 * self.z_dim * LOG_2PI

    @torch.no_grad()
    def value_and_grad(self, z: torch.Tensor, need_value: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(log p(x, z) (C,), or None when ``need_value`` is False; its gradient in z (C, Nz))."""
        h, log_px, g = self._forward(z, need_value)
        grad = torch.mm(torch.mm(g, self.output.weight).mul_(1.0 - h * h), self.hidden.weight).sub_(z)
        value = log_px + self.log_prior(z) if need_value else None
        return value, grad

    @torch.no_grad()
    def decoder_gradient_(self, z: torch.Tensor) -> torch.Tensor:
        """Set the decoder parameters' ``.grad`` to the gradient of -mean_c log p(x_c, z_c) at
        fixed z (the M-step's and the wake phase's loss; log p(z) has no parameters, so it is
        also that of -mean_c log p(x_c|z_c)); returns log p(x_c|z_c) per row (C,)."""
        h, log_px, g = self._forward(z, need_value=True)
        d_o = g.mul_(-1.0 / z.shape[0])
        d_a = torch.mm(d_o, self.output.weight).mul_(1.0 - h * h)
        _linear_backward_(self.output, d_o, h)
        _linear_backward_(self.hidden, d_a, z)
        return log_px


@torch.no_grad()
def encoder_log_density_gradient_(encoder: GaussianMLPEncoder, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Set the encoder parameters' ``.grad`` to the gradient of -mean_c log q(z_c|x_c) (the sleep
    phase's loss); returns mean_c log q(z_c|x_c)."""
    h = tanh_from_sigmoid_(torch.addmm(encoder.hidden.bias, x, encoder.hidden.weight.T))
    heads = torch.addmm(encoder.heads.bias, h, encoder.heads.weight.T)
    Z = encoder.z_dim
    mu, log_var = heads[:, :Z], heads[:, Z:]
    diff = z - mu
    weighted = diff * torch.exp(-log_var)  # (z - mu) / s^2
    sq = diff * weighted
    log_q = -0.5 * (Z * LOG_2PI + (log_var + sq).sum(-1))
    scale = -1.0 / x.shape[0]
    d_heads = torch.cat([weighted.mul(scale), (sq - 1.0).mul_(0.5 * scale)], dim=-1)
    d_a = torch.mm(d_heads, encoder.heads.weight).mul_(1.0 - h * h)
    _linear_backward_(encoder.heads, d_heads, h)
    _linear_backward_(encoder.hidden, d_a, x)
    return log_q.mean()


def has_hand_gradients(model) -> bool:
    """Whether ``model`` is a VariationalAutoEncoder with vae_core's own MLPs (what this module's
    formulas describe)."""
    return (isinstance(model, VariationalAutoEncoder) and type(model.encoder) is GaussianMLPEncoder
            and type(model.decoder) in (BernoulliMLPDecoder, GaussianMLPDecoder))


def posterior_target(model, x: torch.Tensor):
    """The HMC target log p(x, z) for ``model`` and data ``x``: a :class:`DecoderLogJoint` when the
    model has hand gradients, otherwise ``model.log_joint`` under autograd (any model with that
    method, e.g. the tests' linear-Gaussian decoders)."""
    if has_hand_gradients(model):
        return DecoderLogJoint(model, x)
    return lambda z: model.log_joint(x, z)
