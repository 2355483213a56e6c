"""AEVB's update for R models of one architecture at once, with the gradient written out by hand.

This is Algorithm 1 with SGVB estimator B (eq. 7), L = 1, the paper's setting -- the same
mathematics as :class:`vae_core.aevb.AEVB`'s autograd path, computed faster:

- every layer of the R models is one stacked tensor with a leading run dimension, and every
  matrix product is one batched product (``torch.baddbmm`` / ``torch.bmm``) over the R runs, so a
  sweep of small models (Figure 3's 100 hidden units, Nz = 3) costs about what one run costs in
  per-operation overhead. R = 1 is the single-run fast path.
- the backward pass is derived by hand (below) instead of recorded by autograd: no graph, no
  ``torch.distributions`` objects, the elementwise work of each layer in a few in-place ops, and
  no gradient with respect to the data.
- Adagrad is the fused kernel of :func:`vae_core.optim.adagrad_update_`, per run (its step size
  and weight decay, 1 / Ntrain, may differ between runs).

The R models keep their own ``VariationalAutoEncoder`` modules: their parameters are rebound to
views of the stacked tensors, so ``model.state_dict()``, evaluation and checkpoints work as for
any model, and the stacked update changes them in place.

Per run and minibatch of M points (rows x_i), with tanh hidden layers (Appendix C):

    h1 = tanh(x W3^T + b3)                encoder hidden layer
    [mu, log s2] = h1 W45^T + b45         the two heads of q(z|x)
    z = mu + exp(log s2 / 2) * eps        reparameterization, eps ~ N(0, I) (Section 2.4)
    h2 = tanh(z W1^T + b1)                decoder hidden layer
    o = h2 W2^T + b2                      Bernoulli logits, or [pre-mean, log sigma_x^2] (Gaussian)
    bound_i = log p(x_i|z_i) + 1/2 sum_j (1 + log s2 - mu^2 - s2)      (eq. 7 with eq. 10)

and the loss is -(1/M) sum_i bound_i (the minibatch estimator, eq. 8, divided by N). Its
gradient, with d(.) = dloss/d(.):

    d o = -(1/M) d log p(x|z) / d o       (vae_core.decoder_likelihood, both decoders)
    dW2 = d o^T h2,  db2 = sum_i d o,  d h2 = d o W2,  d a2 = d h2 (1 - h2^2)
    dW1 = d a2^T z,  db1 = sum_i d a2, d z = d a2 W1
    d mu = d z + mu / M,   d log s2 = d z eps exp(log s2 / 2) / 2 + (exp(log s2) - 1) / (2M)
    dW45 = [d mu, d log s2]^T h1, db45 = sum_i [...], d h1 = [...] W45, d a1 = d h1 (1 - h1^2)
    dW3 = d a1^T x,  db3 = sum_i d a1

tests/test_fused_aevb.py checks these against autograd on both decoders, and a batched run
against the same runs trained alone.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .activations import tanh_from_sigmoid_
from .decoder_likelihood import (
    bernoulli_log_likelihood,
    bernoulli_output_gradient,
    gaussian_log_likelihood_and_output_gradient,
)
from .model import VariationalAutoEncoder
from .optim import OptimizerConfig, adagrad_update_, map_weight_decay



def _layers(model: VariationalAutoEncoder) -> list[torch.nn.Linear]:
    """The four linear layers in forward order: encoder hidden, encoder heads, decoder hidden,
    decoder output (Bernoulli logits, or the Gaussian decoder's two heads)."""
    decoder_output = getattr(model.decoder, "output", None) or model.decoder.heads
    return [model.encoder.hidden, model.encoder.heads, model.decoder.hidden, decoder_output]


class _Workspace:
    """Every intermediate of :meth:`StackedAEVB.forward_backward` for (R, M, D) minibatches, and
    the views of them it reads (the heads' mu and log s^2 halves, the transposes the weight
    gradients multiply), allocated once and reused at every step.

    Not an optimization of the arithmetic but of the allocator and of per-operation overhead: a
    (100, 784) float32 intermediate is 313 kB, above glibc's initial mmap threshold, so a loop
    that allocates its intermediates at every step is at the mercy of the allocator's state
    (docs/speed.md); making the views once saves about 20 of the update's 50 operations.
    """

    def __init__(self, x: torch.Tensor, hidden: int, z_dim: int, out: int, gaussian: bool):
        R, M, D = x.shape

        def buffer(width: int) -> torch.Tensor:
            return torch.empty((R, M, width), dtype=x.dtype, device=x.device)

        self.h1, self.heads, self.z, self.h2 = buffer(hidden), buffer(2 * z_dim), buffer(z_dim), buffer(hidden)
        self.o, self.d_o, self.d_a2, self.tanh_derivative = buffer(out), buffer(out), buffer(hidden), buffer(hidden)
        self.d_z, self.d_heads, self.d_a1 = buffer(z_dim), buffer(2 * z_dim), buffer(hidden)
        self.mu, self.log_s2 = self.heads[..., :z_dim], self.heads[..., z_dim:]
        self.d_mu, self.d_log_s2 = self.d_heads[..., :z_dim], self.d_heads[..., z_dim:]
        self.d_o_t, self.d_a2_t = self.d_o.transpose(1, 2), self.d_a2.transpose(1, 2)
        self.d_heads_t, self.d_a1_t = self.d_heads.transpose(1, 2), self.d_a1.transpose(1, 2)
        if gaussian:  # the likelihood's mean, (x - m) / sigma^2 and (x - m)^2 / sigma^2, each D wide
            self.gaussian_work = (buffer(D), buffer(D), buffer(D))


class StackedAEVB:
    """R AEVB runs of one architecture, updated in lockstep by one batched computation.

    ``models`` are R ``VariationalAutoEncoder`` of the same configuration (each initialized as
    the caller wants); ``n_train[r]`` sets run r's weight prior scale (1 / Ntrain) and
    ``optimizers[r]`` its Adagrad settings: step size and weight prior may differ between runs,
    the warm-up and epsilon may not (the runs take their steps together). An update is
    :meth:`forward_backward` on the R minibatches and R noise draws (the caller decides where the
    random numbers come from and checks the returned values), then :meth:`apply_adagrad`
    (vae_core.training.train_stacked_steps).
    """

    def __init__(
        self,
        models: Sequence[VariationalAutoEncoder],
        n_train: Sequence[int],
        optimizers: Sequence[OptimizerConfig],
    ):
        if not models:
            raise ValueError("StackedAEVB needs at least one model")
        configs = {m.config for m in models}
        if len(configs) != 1:
            raise ValueError(f"stacked runs must share one architecture, got {sorted(map(str, configs))}")
        if not (len(models) == len(n_train) == len(optimizers)):
            raise ValueError("one n_train and one optimizer configuration per model")
        if len({(o.warmup_steps, o.eps) for o in optimizers}) != 1:
            raise ValueError("stacked runs must share the Adagrad warm-up and epsilon (they step together)")
        for optimizer in optimizers:
            if optimizer.step_size <= 0:
                raise ValueError(f"Adagrad step size must be positive, got {optimizer.step_size}")
        self.models = list(models)
        self.config = models[0].config
        self.gaussian = self.config.decoder == "gaussian"
        self.step_sizes = [float(o.step_size) for o in optimizers]
        self.weight_decays = [map_weight_decay(n, o.weight_prior_std) for n, o in zip(n_train, optimizers)]
        self.warmup_steps = optimizers[0].warmup_steps
        self.eps = optimizers[0].eps
        self.steps_taken = 0
        self.active = [True] * len(self.models)  # a frozen run (False) is no longer updated
        self._workspace_key, self._workspace_cache = None, None
        # Stack each layer's weight and bias over the runs, and make every model's parameters
        # views of its slice (so the models see every update and their state_dicts stay valid).
        self.weights, self.biases = [], []
        per_model = [_layers(m) for m in self.models]
        for position in range(4):
            layers = [layers_of[position] for layers_of in per_model]
            weight = torch.stack([layer.weight.detach() for layer in layers]).contiguous()
            bias = torch.stack([layer.bias.detach() for layer in layers]).contiguous()
            for r, layer in enumerate(layers):
                layer.weight.data = weight[r]
                layer.bias.data = bias[r]
            self.weights.append(weight)
            self.biases.append(bias)
        # Views made once (the stacked tensors are never reallocated): W^T for the forward
        # products, and each bias as a (R, 1, out) row broadcast over the minibatch.
        self._weights_transposed = [w.transpose(1, 2) for w in self.weights]
        self._bias_rows = [b.unsqueeze(1) for b in self.biases]
        self.weight_grads = [torch.empty_like(w) for w in self.weights]
        self.bias_grads = [torch.empty_like(b) for b in self.biases]
        self.weight_sums = [torch.zeros_like(w) for w in self.weights]
        self.bias_sums = [torch.zeros_like(b) for b in self.biases]
        # Each run's slices, made once (the stacked tensors are never reallocated).
        self._run_slices = [
            ([w[r] for w in self.weights], [g[r] for g in self.weight_grads], [s[r] for s in self.weight_sums],
             [b[r] for b in self.biases], [g[r] for g in self.bias_grads], [s[r] for s in self.bias_sums])
            for r in range(len(self.models))
        ]

    @property
    def runs(self) -> int:
        return len(self.models)

    def current_step_size(self, r: int) -> float:
        return 0.0 if self.steps_taken < self.warmup_steps else self.step_sizes[r]

    def _workspace(self, x: torch.Tensor) -> "_Workspace":
        """The buffers of :meth:`forward_backward` for minibatches shaped like ``x``, made on
        first use and reused while the shape stays the same."""
        key = (tuple(x.shape), x.dtype, x.device)
        if self._workspace_key != key:
            self._workspace_cache = _Workspace(x, self.config.hidden_units, self.config.z_dim,
                                               self.weights[3].shape[1], self.gaussian)
            self._workspace_key = key
        return self._workspace_cache

    @torch.no_grad()
    def forward_backward(self, x: torch.Tensor, eps: torch.Tensor, with_bound: bool = True) -> torch.Tensor:
        """Estimator B (eq. 7, L = 1) per run, and its gradient written into the gradient buffers.

        ``x``: (R, M, D) minibatches; ``eps``: (R, M, Nz) standard normal noise. Returns the (R,)
        minibatch averages of the bound; with ``with_bound=False`` instead a cheaper (R,) probe
        for the training loop's NaN check at every step (it needs the bound only now and then,
        and log p(x|z) costs a softplus per pixel, the largest elementwise cost of a small model).
        The probe is the KL term plus the sum of the output gradient: a NaN anywhere in the
        encoder reaches mu and log s^2, a NaN anywhere in the decoder reaches sigmoid(o) - x, and
        an infinite mu, log s^2 or log sigma_x^2 makes the KL or the Gaussian's gradient
        infinite or NaN. (The hidden layers are bounded, so the logits cannot overflow while the
        weights are finite, and Adagrad moves a weight by at most its step size per update.) The
        formulas are in the module docstring; every intermediate lives in a buffer reused from
        step to step (:class:`_Workspace`), and the hidden layers' tanh is :func:`tanh_from_sigmoid_`.
        """
        W3, W45, W1, W2 = self.weights
        W3t, W45t, W1t, W2t = self._weights_transposed
        b3, b45, b1, b2 = self._bias_rows
        dW3, dW45, dW1, dW2 = self.weight_grads
        db3, db45, db1, db2 = self.bias_grads
        w = self._workspace(x)
        M = x.shape[1]
        inv_m = 1.0 / M

        # Forward.
        h1 = tanh_from_sigmoid_(torch.baddbmm(b3, x, W3t, out=w.h1))
        torch.baddbmm(b45, h1, W45t, out=w.heads)
        mu, log_s2 = w.mu, w.log_s2
        s = torch.exp(0.5 * log_s2)
        z = torch.addcmul(mu, s, eps, out=w.z)
        h2 = tanh_from_sigmoid_(torch.baddbmm(b1, z, W1t, out=w.h2))
        o = torch.baddbmm(b2, h2, W2t, out=w.o)
        s2 = s * s
        neg_kl = 0.5 * (1.0 + log_s2 - mu * mu - s2).sum(dim=(1, 2))  # (R,) summed over the batch

        # Output layer: log p(x|z) and d loss / d o = -(1/M) d log p(x|z) / d o (vae_core.decoder_likelihood).
        d_o = w.d_o
        if self.gaussian:
            log_px, _ = gaussian_log_likelihood_and_output_gradient(o, x, -inv_m, out=d_o, work=w.gaussian_work)
            log_px = log_px.sum(dim=1)
        else:
            log_px = bernoulli_log_likelihood(o, x).sum(dim=1) if with_bound else 0.0
            bernoulli_output_gradient(o, x, -inv_m, out=d_o)
        bound = (log_px + neg_kl) * inv_m

        # Backward, layer by layer (module docstring); d a = d h (1 - h^2) as d h - d h * h^2.
        torch.bmm(w.d_o_t, h2, out=dW2)
        torch.sum(d_o, dim=1, out=db2)
        d_a2 = torch.bmm(d_o, W2, out=w.d_a2)
        d_a2.addcmul_(d_a2, torch.mul(h2, h2, out=w.tanh_derivative), value=-1.0)
        torch.bmm(w.d_a2_t, z, out=dW1)
        torch.sum(d_a2, dim=1, out=db1)
        d_z = torch.bmm(d_a2, W1, out=w.d_z)
        torch.add(d_z, mu, alpha=inv_m, out=w.d_mu)
        torch.mul(d_z.mul_(eps).mul_(s), 0.5, out=w.d_log_s2).add_(s2.sub_(1.0), alpha=0.5 * inv_m)
        torch.bmm(w.d_heads_t, h1, out=dW45)
        torch.sum(w.d_heads, dim=1, out=db45)
        d_a1 = torch.bmm(w.d_heads, W45, out=w.d_a1)
        d_a1.addcmul_(d_a1, torch.mul(h1, h1, out=w.tanh_derivative), value=-1.0)
        torch.bmm(w.d_a1_t, x, out=dW3)
        torch.sum(d_a1, dim=1, out=db3)
        return bound if with_bound else bound + db2.sum(dim=1)

    @torch.no_grad()
    def apply_adagrad(self) -> None:
        """One Adagrad update of every active run (its own step size and weight decay; 0 in the
        warm-up)."""
        for r, (weights, weight_grads, weight_sums, biases, bias_grads, bias_sums) in enumerate(self._run_slices):
            if not self.active[r]:
                continue
            step_size = self.current_step_size(r)
            adagrad_update_(weights, weight_grads, weight_sums, step_size, self.weight_decays[r], self.eps)
            adagrad_update_(biases, bias_grads, bias_sums, step_size, 0.0, self.eps)
        self.steps_taken += 1

    def state_dict(self, r: int) -> dict:
        """Run r's Adagrad state (its parameters are in its model's state_dict)."""
        return {
            "weight_sums": [s[r].clone() for s in self.weight_sums],
            "bias_sums": [s[r].clone() for s in self.bias_sums],
            "steps_taken": self.steps_taken,
        }

    def load_state_dict(self, r: int, state: dict) -> None:
        for target, saved in zip(self.weight_sums + self.bias_sums, state["weight_sums"] + state["bias_sums"]):
            target[r].copy_(saved)
        self.steps_taken = state["steps_taken"]
