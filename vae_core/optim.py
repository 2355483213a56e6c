"""Adagrad as the paper trains with it (Section 5), with the MAP weight prior and a warm-up.

Section 5: "Stepsizes were adapted with Adagrad; the Adagrad global stepsize parameters were
chosen from {0.01, 0.02, 0.1} ... Parameters were updated using ... a small weight decay term
corresponding to a prior p(theta) = N(0, I)."

How the open points are filled (docs/protocol.md, sections 2 and 8), following the authors' code:
- the prior log N(w; 0, sigma_w^2 I) applies to weight matrices only, and per minibatch the
  objective is sum_i L(x_i) + (M / N) log p(theta). We minimize that divided by M, i.e. the mean
  negative bound plus ||W||^2 / (2 N sigma_w^2): a weight decay of 1 / (N sigma_w^2) on the
  weight matrices, 0 on the biases. (Adagrad is invariant to a constant rescaling of the
  objective up to its epsilon, so sum-vs-mean does not change the trajectory.)
- the first ``warmup_steps`` steps only accumulate squared gradients (the step size is held at
  0), so the first real update is not taken with a one-sample denominator.
- the update is w -= step * g / (sqrt(sum g^2) + eps) with g the gradient plus the weight decay
  term; the authors' code put eps inside the square root, which differs only while sum g^2 is of
  order eps.

The update is :func:`adagrad_update_`: torch's own fused Adagrad kernel (``torch._fused_adagrad_``,
the kernel behind ``torch.optim.Adagrad(fused=True)``: one pass over parameter, gradient and
accumulator) called directly, not through ``torch.optim``: constructing a ``torch.optim``
optimizer imports TorchDynamo, seconds of start-up per process (docs/method.md), and its
per-group learning rate cannot vary along a stacked run dimension (vae_core.fused_aevb). Where
the fused kernel is missing, torch's ``_foreach`` ops compute the same update.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .model import biases, weight_matrices


@dataclass(frozen=True)
class OptimizerConfig:
    """Adagrad settings of Section 5 (see the module docstring for how the open points are filled)."""

    step_size: float
    weight_prior_std: float = 1.0
    warmup_steps: int = 100
    eps: float = 1e-8


def map_weight_decay(n_train: int, weight_prior_std: float) -> float:
    """The weight decay of the N(0, sigma_w^2 I) weight prior scaled M/N per minibatch: 1/(N sigma_w^2)."""
    return 1.0 / (n_train * weight_prior_std**2)


_ZERO_STEP = {}


def adagrad_update_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    sums: Sequence[torch.Tensor],
    step_size: float,
    weight_decay: float,
    eps: float,
) -> None:
    """One Adagrad update in place: g += wd * p; sum += g^2; p -= step * g / (sqrt(sum) + eps).

    ``grads`` may be modified. A ``step_size`` of 0 only accumulates (the warm-up).
    """
    if not params:
        return
    fused = getattr(torch, "_fused_adagrad_", None)
    if fused is not None and params[0].device.type in ("cpu", "cuda"):
        device = params[0].device
        if device not in _ZERO_STEP:  # the kernel's step counter only matters with lr_decay != 0
            _ZERO_STEP[device] = torch.zeros((), device=device)
        fused(list(params), list(grads), list(sums), [_ZERO_STEP[device]] * len(params),
              lr=step_size, lr_decay=0.0, weight_decay=weight_decay, eps=eps, maximize=False)
        return
    grads = list(grads)
    if weight_decay:
        grads = torch._foreach_add(grads, list(params), alpha=weight_decay)
    torch._foreach_addcmul_(list(sums), grads, grads)
    denominators = torch._foreach_sqrt(list(sums))
    torch._foreach_add_(denominators, eps)
    torch._foreach_addcdiv_(list(params), grads, denominators, value=-step_size)


class WarmupAdagrad:
    """Adagrad over a module's weight matrices (with the MAP prior) and biases (without), with a
    warm-up of ``config.warmup_steps`` updates that only accumulate squared gradients.

    Reads the gradients autograd (or a hand-derived gradient) left in ``parameter.grad``.
    """

    def __init__(self, module: nn.Module, n_train: int, config: OptimizerConfig):
        if config.step_size <= 0:
            raise ValueError(f"Adagrad step size must be positive, got {config.step_size}")
        self.step_size = config.step_size
        self.warmup_steps = config.warmup_steps
        self.eps = config.eps
        self.steps_taken = 0
        self.groups = [
            (weight_matrices(module), map_weight_decay(n_train, config.weight_prior_std)),
            (biases(module), 0.0),
        ]
        self.sums = [[torch.zeros_like(p) for p in params] for params, _ in self.groups]

    @property
    def current_step_size(self) -> float:
        return 0.0 if self.steps_taken < self.warmup_steps else self.step_size

    def zero_grad(self) -> None:
        for params, _ in self.groups:
            for p in params:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        step_size = self.current_step_size
        for (params, weight_decay), sums in zip(self.groups, self.sums):
            with_grad = [(p, p.grad, s) for p, s in zip(params, sums) if p.grad is not None]
            if with_grad:
                p, g, s = zip(*with_grad)
                adagrad_update_(p, g, s, step_size, weight_decay, self.eps)
        self.steps_taken += 1

    def state_dict(self) -> dict:
        return {"sums": [[s.clone() for s in group] for group in self.sums], "steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict) -> None:
        for group, saved in zip(self.sums, state["sums"]):
            for s, value in zip(group, saved):
                s.copy_(value)
        self.steps_taken = state["steps_taken"]
