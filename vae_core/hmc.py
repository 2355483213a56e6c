"""Batched Hybrid (Hamiltonian) Monte Carlo over many independent chains (Appendices D and E).

The paper samples the posterior p(z|x) with Hybrid Monte Carlo twice: to estimate the marginal
likelihood (Appendix D: "gradient-based MCMC ... grad_z log p(z|x) = grad_z log p(z) +
grad_z log p(x|z)"; end of Appendix E: 4 leapfrog steps) and as the E-step of Monte Carlo EM
(Appendix E: 10 leapfrog steps, step size tuned to about 90% acceptance). Both run one chain per
datapoint, so this module advances C chains at once: z has shape (C, D) and every operation is a
tensor operation over the chains -- there is no Python loop over datapoints, only over leapfrog
steps and transitions.

The target is an unnormalized log density ``log_prob_fn(z) -> (C,)``, row c a function of z[c]
only; for a decoder it is ``lambda z: model.log_joint(x, z)`` = log p(z) + log p(x_c|z_c), the
posterior up to its normalizer p(x_c). Its gradient comes from autograd, unless the target has a
``value_and_grad(z, need_value=True)`` method (vae_core.hand_gradients.DecoderLogJoint, the
decoder's gradient written out by hand), which is then used -- without the value at the
intermediate leapfrog steps, where only the gradient is needed.

HMC is as in Neal (2011), "MCMC using Hamiltonian dynamics" (Handbook of MCMC, ch. 5): the
Hamiltonian H(z, r) = -log p(z) + |r|^2 / 2 (identity mass matrix), momentum r ~ N(0, I), leapfrog
integration (Neal's eqs. 5.18-5.20), and a Metropolis accept/reject on exp(H_old - H_new), which
corrects the integrator's energy error exactly. A proposal that is not finite (NaN or infinite
density, position, momentum or gradient) is rejected.

Step sizes are per chain ((C,) tensors; a scalar is broadcast): datapoints have posteriors of very
different widths. Two tuning rules are offered:

- :func:`adapt_step_size`, the authors' rule (SPEC.md section 8): multiply the step size by a
  factor when the acceptance is above the target, divide when below. Used on one chain's
  single-transition acceptance probability it settles where that probability exceeds the target
  half the time -- the *median* acceptance probability equals the target, and the mean (HMC's
  acceptance distribution is skewed, with many 1s) is lower.
- :func:`adapt_step_size_to_mean`: log step += gain * (accept_prob - target), a stochastic
  approximation whose fixed point is a *mean* acceptance probability equal to the target.

:func:`hmc_sample` adapts only during burn-in (by default with a decreasing gain,
log eps += 2 (a_t - target) / (t + 1)^0.6, a Robbins-Monro recursion) and keeps the step sizes
fixed for the kept samples, so those form a proper Markov chain that leaves the target invariant.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

LogProb = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "HMCResult",
    "HMCStep",
    "adapt_step_size",
    "adapt_step_size_to_mean",
    "authors_adapt_factor",
    "hmc_sample",
    "hmc_step",
    "leapfrog",
    "log_prob_and_grad",
]


def log_prob_and_grad(log_prob_fn: LogProb, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_prob_fn(z)`` (C,) and its gradient with respect to z (C, D).

    Differentiates a detached copy of z with ``torch.autograd.grad`` (gradients are enabled locally,
    so it works inside ``torch.no_grad()``): no graph is kept, and parameters of a model inside
    ``log_prob_fn`` that require grad get nothing accumulated into their ``.grad``. Rows are
    independent (row c of the output depends on z[c] only), so the gradient of the sum is the
    per-chain gradient.
    """
    value_and_grad = getattr(log_prob_fn, "value_and_grad", None)
    if value_and_grad is not None:  # a target with its own gradient (vae_core.hand_gradients)
        return value_and_grad(z)
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        log_prob = log_prob_fn(z)
        (grad,) = torch.autograd.grad(log_prob.sum(), z)
    return log_prob.detach(), grad.detach()


def _grad_only(log_prob_fn: LogProb, z: torch.Tensor) -> torch.Tensor:
    """The gradient alone: a target with ``value_and_grad`` skips computing its value."""
    value_and_grad = getattr(log_prob_fn, "value_and_grad", None)
    if value_and_grad is not None:
        return value_and_grad(z, need_value=False)[1]
    return log_prob_and_grad(log_prob_fn, z)[1]


def _as_column(step_size, z: torch.Tensor) -> torch.Tensor:
    """A step size as a tensor that broadcasts against (C, D): scalar, (C,) -> (C, 1), or (C, 1)."""
    step = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    return step.unsqueeze(-1) if step.dim() == 1 else step


def _check_n_steps(n_steps: int) -> None:
    if n_steps < 1:
        raise ValueError(f"the number of leapfrog steps must be at least 1, got {n_steps}")


def leapfrog(
    z: torch.Tensor,
    momentum: torch.Tensor,
    grad_log_prob: Callable[[torch.Tensor], torch.Tensor],
    step_size,
    n_steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_steps`` leapfrog steps (Neal 2011, eqs. 5.18-5.20) for H = -log p(z) + |momentum|^2 / 2.

    r <- r + (eps/2) grad log p(z); then n_steps times z <- z + eps r and a full momentum step
    r <- r + eps grad log p(z), the last one a half step. ``step_size`` is a scalar, (C,) or (C, 1);
    ``grad_log_prob(z)`` returns the gradient of the log target, (C, D). Returns (z, momentum) at
    the end of the trajectory. The map is volume-preserving and time-reversible: running it again
    from (z, -momentum) returns to the start.
    """
    _check_n_steps(n_steps)
    step = _as_column(step_size, z)
    momentum = momentum + 0.5 * step * grad_log_prob(z)
    for i in range(n_steps):
        z = z + step * momentum
        momentum = momentum + (step if i < n_steps - 1 else 0.5 * step) * grad_log_prob(z)
    return z, momentum


def _integrate(log_prob_fn: LogProb, z, momentum, step, n_steps: int, grad):
    """:func:`leapfrog` from a known gradient, also returning log p and its gradient at the end
    point, so a chain costs one gradient evaluation per leapfrog step."""
    momentum = momentum + 0.5 * step * grad
    log_prob = None
    for i in range(n_steps):
        z = z + step * momentum
        if i < n_steps - 1:
            grad = _grad_only(log_prob_fn, z)  # the value is needed at the end point only
        else:
            log_prob, grad = log_prob_and_grad(log_prob_fn, z)
        momentum = momentum + (step if i < n_steps - 1 else 0.5 * step) * grad
    return z, momentum, log_prob, grad


@dataclass
class HMCStep:
    """One HMC transition of every chain."""

    z: torch.Tensor  # (C, D) the chains after the Metropolis decision
    logp: torch.Tensor  # (C,) log_prob_fn at z
    grad: torch.Tensor  # (C, D) its gradient at z
    accepted: torch.Tensor  # (C,) bool: the proposal was accepted
    accept_prob: torch.Tensor  # (C,) min(1, exp(H_old - H_new)); 0 for a non-finite proposal

    @property
    def log_prob(self) -> torch.Tensor:
        """Alias of ``logp``."""
        return self.logp


def hmc_step(
    log_prob_fn: LogProb,
    z: torch.Tensor,
    step_size,
    n_leapfrog: int,
    logp: torch.Tensor | None = None,
    grad: torch.Tensor | None = None,
) -> HMCStep:
    """One HMC transition of every chain (Neal 2011, section 5.3.2): momentum r ~ N(0, I),
    ``n_leapfrog`` leapfrog steps of size ``step_size`` (scalar, (C,) or (C, 1)), then accept the
    end point with probability min(1, exp(H(z, r) - H(z', r'))).

    ``logp`` and ``grad`` at z, when the caller has them (the previous transition returns them),
    save one gradient evaluation. The log acceptance ratio is computed as a difference of
    differences, (log p' - log p) - (|r'|^2 - |r|^2) / 2, never by exponentiating a Hamiltonian,
    and the uniform is compared in the probability domain with the ratio capped at 1. A proposal
    whose density, position, momentum or gradient is not finite has acceptance probability 0.
    """
    _check_n_steps(n_leapfrog)
    if logp is None or grad is None:
        logp, grad = log_prob_and_grad(log_prob_fn, z)
    momentum = torch.randn_like(z)
    step = _as_column(step_size, z)
    z_new, momentum_new, logp_new, grad_new = _integrate(log_prob_fn, z, momentum, step, n_leapfrog, grad)
    log_ratio = (logp_new - logp) - 0.5 * (momentum_new.pow(2).sum(-1) - momentum.pow(2).sum(-1))
    finite = (
        torch.isfinite(log_ratio)
        & torch.isfinite(logp_new)
        & torch.isfinite(z_new).all(-1)
        & torch.isfinite(grad_new).all(-1)
    )
    log_accept = torch.where(finite, log_ratio.clamp(max=0.0), torch.full_like(log_ratio, -torch.inf))
    accept_prob = log_accept.exp()
    accepted = torch.rand_like(accept_prob) < accept_prob  # u in [0, 1): prob 1 always, 0 never
    keep = accepted.unsqueeze(-1)
    return HMCStep(
        z=torch.where(keep, z_new, z),
        logp=torch.where(accepted, logp_new, logp),
        grad=torch.where(keep, grad_new, grad),
        accepted=accepted,
        accept_prob=accept_prob,
    )


def authors_adapt_factor(batch_size: int) -> float:
    """The authors' adaptation factor min(1.25, 1.02^min(100, M)) for M chains per update
    (SPEC.md section 8; their code multiplied or divided by 1.02^M)."""
    return min(1.25, 1.02 ** min(100, batch_size))


def adapt_step_size(step_size: torch.Tensor, accept_prob: torch.Tensor, target: float, factor: float) -> torch.Tensor:
    """The authors' multiplicative rule, per chain: step * factor where the chain's acceptance is
    above ``target``, step / factor where it is not (SPEC.md section 8; for MCEM the factor is
    :func:`authors_adapt_factor` and the target 0.9).

    ``accept_prob`` is whatever acceptance the caller measures per chain: a single transition's
    acceptance probability, or an average. Fed single-transition probabilities, a chain's step size
    settles where P(accept_prob > target) = 1/2, i.e. at a *median* acceptance probability equal to
    the target; HMC's mean acceptance is then lower (see :func:`adapt_step_size_to_mean`). The
    authors applied it to one step size per sampler with the minibatch's mean acceptance.
    """
    return torch.where(accept_prob > target, step_size * factor, step_size / factor)


def adapt_step_size_to_mean(step_size: torch.Tensor, accept_prob: torch.Tensor, target: float, gain: float) -> torch.Tensor:
    """Per chain, log step += gain * (accept_prob - target).

    A stochastic-approximation (Robbins-Monro) step whose fixed point is a *mean* acceptance
    probability equal to the target. With a constant gain it keeps following a target density that
    moves (MCEM's decoder learns between visits); the step size then fluctuates around its fixed
    point, which also randomizes the trajectory length a little (Neal 2011, section 5.4.2.2).
    """
    return step_size * torch.exp(gain * (accept_prob - target))


@dataclass
class HMCResult:
    samples: torch.Tensor  # (n_samples, C, D)
    log_prob: torch.Tensor  # (n_samples, C) log_prob_fn at every kept sample
    accept_rate: torch.Tensor  # (C,) fraction accepted among the kept transitions
    step_size: torch.Tensor  # (C,) the (adapted) step sizes used for the kept samples
    burn_in_accept_rate: torch.Tensor  # (C,) fraction accepted during burn-in


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
    step_size_jitter: float = 0.0,
) -> HMCResult:
    """Run every chain for ``burn_in`` transitions, then keep the states of ``n_samples`` more.

    Burn-in tunes each chain's step size toward ``target_accept`` (when ``adapt_during_burn_in``):
    by default with the Robbins-Monro recursion log eps += 2 (a_t - target) / (t + 1)^0.6 on the
    transition's acceptance probability a_t, whose decreasing gain makes it converge to a mean
    acceptance equal to the target; with ``adapt_factor`` given, with the authors' multiplicative
    rule (:func:`adapt_step_size`; note its median fixed point). The step sizes are frozen after
    burn-in, so the kept samples are a time-homogeneous Markov chain with the target as stationary
    distribution (adapting during sampling would break that).

    ``step_size_jitter`` = j > 0 multiplies every transition's step size by u ~ U(1 - j, 1 + j),
    drawn per chain and per transition independently of the state (so each transition still
    leaves the target invariant); it breaks the resonances a fixed trajectory length can fall into
    on near-Gaussian targets (Neal 2011, section 5.4.2.2). ``step_size`` is a scalar or (C,).
    """
    if not 0.0 <= step_size_jitter < 1.0:
        raise ValueError(f"step_size_jitter must be in [0, 1), got {step_size_jitter}")
    z = z_init.detach()
    n_chains = z.shape[0]
    step = torch.as_tensor(step_size, dtype=z.dtype, device=z.device).expand(n_chains).clone()
    logp, grad = log_prob_and_grad(log_prob_fn, z)

    def transition(base_step):
        if step_size_jitter > 0:
            base_step = base_step * (1.0 + step_size_jitter * (2.0 * torch.rand_like(base_step) - 1.0))
        return hmc_step(log_prob_fn, z, base_step, n_leapfrog, logp, grad)

    burn_accepts = torch.zeros(n_chains, device=z.device, dtype=z.dtype)
    for t in range(burn_in):
        move = transition(step)
        z, logp, grad = move.z, move.logp, move.grad
        burn_accepts += move.accepted
        if adapt_during_burn_in:
            if adapt_factor is not None:
                step = adapt_step_size(step, move.accept_prob, target_accept, adapt_factor)
            else:
                step = step * torch.exp(2.0 * (move.accept_prob - target_accept) / (t + 1) ** 0.6)
    samples, log_probs = [], []
    accepts = torch.zeros(n_chains, device=z.device, dtype=z.dtype)
    for _ in range(n_samples):
        move = transition(step)
        z, logp, grad = move.z, move.logp, move.grad
        accepts += move.accepted
        samples.append(z)
        log_probs.append(logp)
    return HMCResult(
        samples=torch.stack(samples) if samples else z.new_zeros((0,) + tuple(z.shape)),
        log_prob=torch.stack(log_probs) if log_probs else z.new_zeros((0, n_chains)),
        accept_rate=accepts / max(n_samples, 1),
        step_size=step,
        burn_in_accept_rate=burn_accepts / max(burn_in, 1),
    )
