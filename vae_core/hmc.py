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
different widths. How they follow the acceptance is one object, :class:`StepSizeAdaptation`,
with three rules: a Robbins-Monro recursion with a decreasing gain (the burn-in of
:func:`hmc_sample`, which then freezes the step sizes so the kept samples form a proper Markov
chain), the same with a constant gain (Monte Carlo EM, whose target moves as the decoder learns),
and the authors' multiplicative up/down rule (docs/protocol.md, section 8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

LogProb = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "HMCResult",
    "HMCStep",
    "StepSizeAdaptation",
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
    log_prob_fn: LogProb,
    z: torch.Tensor,
    momentum: torch.Tensor,
    step_size,
    n_steps: int,
    grad: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n_steps`` leapfrog steps (Neal 2011, eqs. 5.18-5.20) for H = -log p(z) + |momentum|^2 / 2.

    r <- r + (eps/2) grad log p(z); then n_steps times z <- z + eps r and a full momentum step
    r <- r + eps grad log p(z), the last one a half step. ``step_size`` is a scalar, (C,) or (C, 1).
    ``grad``, the gradient of log p at z when the caller has it (the previous transition's end
    point), saves one gradient evaluation, as Pyro's ``velocity_verlet`` reuses its cached
    gradient; the intermediate steps evaluate the gradient only (a target with
    ``value_and_grad`` skips its value there) and the end point both. Returns (z, momentum,
    log p(z), grad log p(z)) at the end of the trajectory, so a chain costs one gradient
    evaluation per leapfrog step. The map is volume-preserving and time-reversible: running it
    again from (z, -momentum) returns to the start.
    """
    _check_n_steps(n_steps)
    step = _as_column(step_size, z)
    if grad is None:
        grad = _grad_only(log_prob_fn, z)
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
    z_new, momentum_new, logp_new, grad_new = leapfrog(log_prob_fn, z, momentum, step, n_leapfrog, grad)
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
    (docs/protocol.md, section 8; their code multiplied or divided by 1.02^M)."""
    return min(1.25, 1.02 ** min(100, batch_size))


ADAPTATION_RULES = ("robbins_monro", "mean", "authors")


@dataclass(frozen=True)
class StepSizeAdaptation:
    """How per-chain step sizes follow each transition's acceptance probability a toward ``target``.

    - ``"robbins_monro"``: log eps += gain (a_t - target) / (t + 1)^decay, t the transition's
      index: a stochastic approximation whose decreasing gain converges to a *mean* acceptance
      equal to the target. The burn-in of :func:`hmc_sample` (Appendix D's chains).
    - ``"mean"``: log eps += gain (a - target) with a constant gain: the same fixed point, but it
      keeps following a target density that moves (Monte Carlo EM's decoder learns between a
      chain's visits); the step size then fluctuates around its fixed point, which also
      randomizes the trajectory length a little (Neal 2011, section 5.4.2.2).
    - ``"authors"``: eps * factor where a > target, eps / factor elsewhere (docs/protocol.md,
      section 8). Fed single-transition probabilities it settles where P(a > target) = 1/2: a
      *median* acceptance equal to the target, and HMC's skewed acceptance distribution (many 1s)
      then has a lower mean. The authors applied it to one step size per sampler with the
      minibatch's mean acceptance.
    """

    rule: str = "robbins_monro"
    target: float = 0.9
    gain: float = 2.0
    decay: float = 0.6
    factor: float = 1.25

    def __post_init__(self):
        if self.rule not in ADAPTATION_RULES:
            raise ValueError(f"unknown step-size adaptation rule {self.rule!r}; choose one of {ADAPTATION_RULES}")
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"target acceptance must be in (0, 1), got {self.target}")

    @classmethod
    def for_minibatches(cls, rule: str, target: float, batch_size: int) -> "StepSizeAdaptation":
        """Monte Carlo EM's tuner for minibatches of ``batch_size`` chains: the authors' factor
        f = :func:`authors_adapt_factor`, and for ``"mean"`` the gain log(f) / (1 - target), so
        that its largest upward move (at a = 1) is the authors' factor."""
        factor = authors_adapt_factor(batch_size)
        if rule == "mean":
            return cls("mean", target, gain=math.log(factor) / (1.0 - target))
        return cls(rule, target, factor=factor)

    def update(self, step_size: torch.Tensor, accept_prob: torch.Tensor, t: int = 0) -> torch.Tensor:
        """The adapted step sizes after a transition with acceptance probabilities ``accept_prob``
        (``t``: the transition's index, for the Robbins-Monro gain)."""
        if self.rule == "robbins_monro":
            return step_size * torch.exp(self.gain * (accept_prob - self.target) / (t + 1) ** self.decay)
        if self.rule == "mean":
            return step_size * torch.exp(self.gain * (accept_prob - self.target))
        return torch.where(accept_prob > self.target, step_size * self.factor, step_size / self.factor)


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
    adaptation: StepSizeAdaptation | None = StepSizeAdaptation(),
    step_size_jitter: float = 0.0,
) -> HMCResult:
    """Run every chain for ``burn_in`` transitions, then keep the states of ``n_samples`` more.

    Burn-in tunes each chain's step size by ``adaptation`` (default: the Robbins-Monro rule
    toward a mean acceptance of 0.9; None keeps the step sizes as given). The step sizes are
    frozen after burn-in, so the kept samples are a time-homogeneous Markov chain with the target
    as stationary distribution (adapting during sampling would break that).

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
        if adaptation is not None:
            step = adaptation.update(step, move.accept_prob, t)
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
