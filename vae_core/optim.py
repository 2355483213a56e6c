"""Adagrad as the paper trains with it (Section 5), with the MAP weight prior and a warm-up.

Section 5: "Stepsizes were adapted with Adagrad; the Adagrad global stepsize parameters were
chosen from {0.01, 0.02, 0.1} ... Parameters were updated using ... a small weight decay term
corresponding to a prior p(theta) = N(0, I)."

How the open points are filled (SPEC.md sections 2 and 8), following the authors' code:
- the prior log N(w; 0, sigma_w^2 I) applies to weight matrices only, and per minibatch the
  objective is sum_i L(x_i) + (M / N) log p(theta). We minimize that divided by M, i.e. the mean
  negative bound plus ||W||^2 / (2 N sigma_w^2): torch's Adagrad ``weight_decay`` = 1 / (N
  sigma_w^2) on the weight group, 0 on the biases. (Adagrad is invariant to a constant rescaling
  of the objective up to its epsilon, so sum-vs-mean does not change the trajectory.)
- the first ``warmup_steps`` steps only accumulate squared gradients (the learning rate is held at
  0), so the first real update is not taken with a one-sample denominator.
- the update is torch's: w -= step * g / (sqrt(sum g^2) + eps); the authors' code put eps inside
  the square root, which differs only while sum g^2 is of order eps.
"""
from __future__ import annotations

from dataclasses import dataclass

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


class WarmupAdagrad:
    """torch.optim.Adagrad over (weights with prior, biases without), with a warm-up of no updates."""

    def __init__(
        self,
        module: nn.Module,
        step_size: float,
        n_train: int,
        weight_prior_std: float = 1.0,
        warmup_steps: int = 100,
        eps: float = 1e-8,
    ):
        if step_size <= 0:
            raise ValueError(f"Adagrad step size must be positive, got {step_size}")
        self.step_size = step_size
        self.warmup_steps = warmup_steps
        self.steps_taken = 0
        weight_decay = 1.0 / (n_train * weight_prior_std**2)
        self.optimizer = torch.optim.Adagrad(
            [
                {"params": weight_matrices(module), "weight_decay": weight_decay},
                {"params": biases(module), "weight_decay": 0.0},
            ],
            lr=step_size,
            eps=eps,
            fused=True,
        )

    @classmethod
    def from_config(cls, module: nn.Module, n_train: int, config: OptimizerConfig) -> "WarmupAdagrad":
        return cls(module, config.step_size, n_train, config.weight_prior_std, config.warmup_steps, config.eps)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        learning_rate = 0.0 if self.steps_taken < self.warmup_steps else self.step_size
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.optimizer.step()
        self.steps_taken += 1

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps_taken = state["steps_taken"]
