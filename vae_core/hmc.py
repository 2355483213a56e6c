"""Batched Hybrid (Hamiltonian) Monte Carlo over many independent chains (Appendices D and E).

One chain per datapoint, all advanced at once: z has shape (C, D) and every operation is a tensor
operation over the C chains, with no Python loop over datapoints. The target is an unnormalized
log density ``log_prob_fn(z) -> (C,)``, for a decoder ``log p(z) + log p(x_c | z_c)`` (the
posterior p(z|x) up to its normalizer; grad_z log p(z|x) = grad_z log p(z) + grad_z log p(x|z),
Appendix D). HMC as in Neal (2011), "MCMC using Hamiltonian dynamics": momentum ~ N(0, I),
leapfrog integration, Metropolis correction on the change of the Hamiltonian.

Step sizes are per chain, shape (C,). Adaptation rules:
- ``adapt_step_size``: the authors' MCEM rule (SPEC.md section 8): multiply a chain's step size by
  ``factor`` when its acceptance probability is above the target, divide otherwise.
- ``adapt_step_size_to_mean``: log step += gain * (acceptance - target), which targets the mean
  acceptance rate (used by MCEM, see baselines/mcem.py).
- ``hmc_sample`` adapts during burn-in only, by stochastic approximation on the log step size,
  log eps += 2 (a_t - target) / (t + 1)^0.6, which drives each chain's *mean* acceptance probability
  to the target; the kept samples use fixed step sizes, so they form a valid Markov chain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

LogProb = Callable[[torch.Tensor], torch.Tensor]


def log_prob_and_grad(log_prob_fn: LogProb, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log_prob_fn(z) (C,) and its gradient in z (C, D); no graph is kept and no parameter's
    ``.grad`` is touched."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        log_prob = log_prob_fn(z)
        (grad,) = torch.autograd.grad(log_prob.sum(), z)
    return log_prob.detach(), grad.detach()


def _as_column(step_size, z: torch.Tensor) -> torch.Tensor:
    step = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    return step.unsqueeze(-1) if step.dim() == 1 else step


def _integrate(log_prob_fn: LogProb, z, momentum, step, n_steps, grad):
    """Leapfrog (Neal 2011, eq. 5.18-5.20) returning the end point's log density and gradient."""
    momentum = momentum + 0.5 * step * grad
    for i in range(n_steps):
        z = z + step * momentum
        log_prob, grad = log_prob_and_grad(log_prob_fn, z)
        momentum = momentum + (step if i < n_steps - 1 else 0.5 * step) * grad
    return z, momentum, log_prob, grad


def leapfrog(z, momentum, grad_log_prob: Callable[[torch.Tensor], torch.Tensor], step_size, n_steps: int):
    """``n_steps`` leapfrog steps of size ``step_size`` ((C,), (C, 1) or a scalar) on the
    Hamiltonian H = -log p(z) + |momentum|^2 / 2. Returns (z, momentum)."""
    step = _as_column(step_size, z)
    momentum = momentum + 0.5 * step * grad_log_prob(z)
    for i in range(n_steps):
        z = z + step * momentum
        momentum = momentum + (step if i < n_steps - 1 else 0.5 * step) * grad_log_prob(z)
    return z, momentum


@dataclass
class HMCStep:
    z: torch.Tensor  # (C, D) the chains after the Metropolis decision
    log_prob: torch.Tensor  # (C,)
    grad: torch.Tensor  # (C, D)
    accepted: torch.Tensor  # (C,) bool
    accept_prob: torch.Tensor  # (C,) min(1, exp(-dH)); 0 for a non-finite proposal


def hmc_step(log_prob_fn: LogProb, z, step_size, n_leapfrog: int, log_prob=None, grad=None) -> HMCStep:
    """One HMC transition of every chain: fresh momentum, leapfrog, Metropolis correction."""
    if log_prob is None or grad is None:
        log_prob, grad = log_prob_and_grad(log_prob_fn, z)
    momentum = torch.randn_like(z)
    step = _as_column(step_size, z)
    z_new, momentum_new, log_prob_new, grad_new = _integrate(log_prob_fn, z, momentum, step, n_leapfrog, grad)
    energy_old = -log_prob + 0.5 * momentum.pow(2).sum(-1)
    energy_new = -log_prob_new + 0.5 * momentum_new.pow(2).sum(-1)
    log_accept = (energy_old - energy_new).clamp(max=0.0)
    log_accept = torch.where(torch.isfinite(log_accept), log_accept, torch.full_like(log_accept, -torch.inf))
    accept_prob = log_accept.exp()
    accepted = torch.rand_like(accept_prob) < accept_prob
    keep = accepted.unsqueeze(-1)
    return HMCStep(
        z=torch.where(keep, z_new, z),
        log_prob=torch.where(accepted, log_prob_new, log_prob),
        grad=torch.where(keep, grad_new, grad),
        accepted=accepted,
        accept_prob=accept_prob,
    )


def adapt_step_size(step_size: torch.Tensor, accept_prob: torch.Tensor, target: float, factor: float) -> torch.Tensor:
    """The authors' rule: per chain, step * factor if acceptance > target, else step / factor.

    Applied per chain, it settles where the acceptance probability exceeds the target half the
    time (the median), which for HMC's skewed acceptance distribution is a lower *mean* rate.
    """
    return torch.where(accept_prob > target, step_size * factor, step_size / factor)


def adapt_step_size_to_mean(step_size: torch.Tensor, accept_prob: torch.Tensor, target: float, gain: float) -> torch.Tensor:
    """Per chain, log step += gain * (acceptance probability - target).

    A stochastic-approximation step whose fixed point is a mean acceptance rate equal to the
    target; the constant gain lets it follow a target density that moves (MCEM's decoder learns).
    """
    return step_size * torch.exp(gain * (accept_prob - target))


@dataclass
class HMCResult:
    samples: torch.Tensor  # (n_samples, C, D)
    log_prob: torch.Tensor  # (n_samples, C)
    accept_rate: torch.Tensor  # (C,) fraction accepted among the kept transitions
    step_size: torch.Tensor  # (C,) the (adapted) step sizes used for the kept samples
    burn_in_accept_rate: torch.Tensor  # (C,)


def hmc_sample(
    log_prob_fn: LogProb,
    z_init: torch.Tensor,
    n_samples: int,
    n_leapfrog: int,
    step_size=0.1,
    burn_in: int = 0,
    adapt_during_burn_in: bool = True,
    target_accept: float = 0.9,
    adapt_factor: float | None = None,
) -> HMCResult:
    """Run every chain for ``burn_in`` adapted transitions, then keep ``n_samples`` transitions.

    With ``adapt_factor`` given, burn-in uses the authors' multiplicative rule instead of the
    stochastic approximation described in the module docstring.
    """
    z = z_init.detach()
    step = torch.as_tensor(step_size, dtype=z.dtype, device=z.device).expand(z.shape[0]).clone()
    log_prob, grad = log_prob_and_grad(log_prob_fn, z)
    burn_accepts = torch.zeros(z.shape[0], device=z.device)
    for t in range(burn_in):
        move = hmc_step(log_prob_fn, z, step, n_leapfrog, log_prob, grad)
        z, log_prob, grad = move.z, move.log_prob, move.grad
        burn_accepts += move.accepted
        if adapt_during_burn_in:
            if adapt_factor is not None:
                step = adapt_step_size(step, move.accept_prob, target_accept, adapt_factor)
            else:
                step = step * torch.exp(2.0 * (move.accept_prob - target_accept) / (t + 1) ** 0.6)
    samples, log_probs = [], []
    accepts = torch.zeros(z.shape[0], device=z.device)
    for _ in range(n_samples):
        move = hmc_step(log_prob_fn, z, step, n_leapfrog, log_prob, grad)
        z, log_prob, grad = move.z, move.log_prob, move.grad
        accepts += move.accepted
        samples.append(z)
        log_probs.append(log_prob)
    return HMCResult(
        samples=torch.stack(samples) if samples else z.new_zeros((0,) + z.shape),
        log_prob=torch.stack(log_probs) if log_probs else z.new_zeros((0, z.shape[0])),
        accept_rate=accepts / max(n_samples, 1),
        step_size=step,
        burn_in_accept_rate=burn_accepts / max(burn_in, 1),
    )
