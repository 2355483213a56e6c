"""Annealed importance sampling (AIS) of log p(x) for a decoder, and the bidirectional Monte Carlo
(BDMC) sandwich that bounds its error on simulated data.

AIS (Neal 2001, "Annealed importance sampling") moves K chains per datapoint from the prior
p(z) to the posterior p(z|x) through the tempered densities f_t(z) = p(z) p(x|z)^beta_t,
0 = beta_0 < ... < beta_T = 1, with one HMC transition leaving f_t invariant at each step
(vae_core.hmc), and accumulates the log weight

    log w = sum_{t=1..T} (beta_t - beta_{t-1}) log p(x | z_{t-1}),

whose mean over the chains is an unbiased estimate of p(x): log of the mean is a stochastic *lower*
bound on log p(x) (Jensen), tight as T grows. This is the estimator Wu, Burda, Salakhutdinov &
Grosse (2017, "On the quantitative analysis of decoder-based generative models") use for VAEs.

**Reverse AIS and the sandwich** (Grosse, Ghahramani & Adams 2015, "Sandwiching the marginal
likelihood using bidirectional Monte Carlo"). For data simulated from the model itself,
z* ~ p(z), x ~ p(x|z*), z* is an exact sample of p(z|x); running the same chain backwards from it
(beta from 1 to 0) gives weights whose mean estimates 1 / p(x), so minus the log of their mean is
a stochastic *upper* bound. The true log p(x) lies between the two, and their gap bounds the error
of forward AIS with the same schedule (on data like the model's own).

Choices, as in Wu et al.: a sigmoidal schedule (Grosse et al. 2015, section 5:
beta_t proportional to sigmoid(delta (2t/T - 1)), rescaled to [0, 1], delta = 4), HMC with a few
leapfrog steps, and each datapoint's step size adapted after every transition toward a 65% mean
acceptance over its chains (vae_core.hmc.StepSizeAdaptation's constant-gain "mean" rule,
eps <- eps exp(3 (a - 0.65))), which makes the kernels depend slightly on the
chains' past (the usual compromise; the sandwich measures whatever error it costs). Every
quantity is batched: the K chains of the C datapoints are one (K * C, D) tensor.
"""
from __future__ import annotations


import torch

from ..hmc import StepSizeAdaptation, hmc_step
from .estimate import MarginalLikelihoodEstimate, log_mean_weight

ADAPTATION_GAIN = 3.0

__all__ = ["ais_estimator", "bdmc_sandwich", "sigmoid_schedule", "simulate_from_model"]


def sigmoid_schedule(n_steps: int, delta: float = 4.0, dtype=torch.float64) -> torch.Tensor:
    """beta_0 = 0, ..., beta_T = 1 (T = ``n_steps``): the sigmoidal schedule of Grosse et al. (2015),
    dense near both ends where the tempered densities change fastest."""
    if n_steps < 1:
        raise ValueError(f"AIS needs at least one intermediate step, got {n_steps}")
    s = torch.sigmoid(delta * (2.0 * torch.arange(n_steps + 1, dtype=dtype) / n_steps - 1.0))
    return (s - s[0]) / (s[-1] - s[0])


class _TemperedPosterior:
    """log f_beta(z) = log p(z) + beta log p(x|z) over the chains, with its gradient; remembers
    log p(x|z) and its gradient at the last point evaluated with its value (a leapfrog
    trajectory's end point), so the annealing step after an accepted move needs no extra pass."""

    def __init__(self, model, x: torch.Tensor):
        self.model, self.x, self.beta = model, x, 0.0
        self.last_log_likelihood = self.last_grad = None

    def likelihood_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_likelihood = self.model.decoder(z).log_prob(self.x)
            (grad,) = torch.autograd.grad(log_likelihood.sum(), z)
        return log_likelihood.detach(), grad.detach()

    def value_and_grad(self, z: torch.Tensor, need_value: bool = True):
        log_likelihood, grad = self.likelihood_and_grad(z)
        if need_value:
            self.last_log_likelihood, self.last_grad = log_likelihood, grad
        return self.model.prior().log_prob(z) + self.beta * log_likelihood, -z + self.beta * grad  # p(z) = N(0, I)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.value_and_grad(z)[0]


def _anneal(model, x: torch.Tensor, z: torch.Tensor, betas: torch.Tensor, n_leapfrog: int, step_size: float,
            target_accept: float, n_chains: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the chains z (K * C, D) through the tempered densities at ``betas`` (in the order given:
    increasing for forward AIS, decreasing for reverse) and return the log weights (K * C,) in
    float64 and the mean acceptance rate per datapoint (C,)."""
    target = _TemperedPosterior(model, x)
    log_likelihood, grad_likelihood = target.likelihood_and_grad(z)
    log_weight = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    datapoints = z.shape[0] // n_chains
    steps = torch.full((datapoints,), float(step_size), dtype=z.dtype, device=z.device)
    adaptation = StepSizeAdaptation("mean", target_accept, gain=ADAPTATION_GAIN)
    accepted = torch.zeros(datapoints, dtype=torch.float64, device=z.device)
    for previous, beta in zip(betas[:-1].tolist(), betas[1:].tolist()):
        log_weight += (beta - previous) * log_likelihood.double()
        target.beta = beta
        logp = model.prior().log_prob(z) + beta * log_likelihood
        step = hmc_step(target, z, steps.repeat(n_chains), n_leapfrog, logp=logp, grad=-z + beta * grad_likelihood)
        keep = step.accepted.unsqueeze(-1)
        z = step.z
        log_likelihood = torch.where(step.accepted, target.last_log_likelihood, log_likelihood)
        grad_likelihood = torch.where(keep, target.last_grad, grad_likelihood)
        rate = step.accept_prob.reshape(n_chains, datapoints).mean(0)
        steps = adaptation.update(steps, rate)
        accepted += rate.double()
    return log_weight, accepted / max(1, len(betas) - 1)


def _log_mean_exp(log_weight: torch.Tensor, n_chains: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per datapoint: log (1/K) sum_k w_k over the chains and its delta-method standard error."""
    w = log_weight.reshape(n_chains, -1)
    log_mean, se, _ = log_mean_weight(torch.logsumexp(w, 0), torch.logsumexp(2 * w, 0), n_chains)
    return log_mean, se


@torch.no_grad()
def ais_estimator(model, x: torch.Tensor, n_chains: int = 16, n_steps: int = 500, n_leapfrog: int = 5,
                  step_size: float = 0.05, target_accept: float = 0.65) -> MarginalLikelihoodEstimate:
    """Forward AIS from the prior: per datapoint, log (1/K) sum_k w_k over ``n_chains`` chains and
    ``n_steps`` tempered distributions (a stochastic lower bound on log p(x)). The standard error
    is the delta method's over the chains (the estimate's noise, not its downward bias: that is
    what :func:`bdmc_sandwich` bounds). ``details``: ``accept_rate`` (C,)."""
    betas = sigmoid_schedule(n_steps)
    z = torch.randn(n_chains * x.shape[0], model.config.z_dim, device=x.device, dtype=x.dtype)  # z ~ p(z)
    log_weight, accept = _anneal(model, x.repeat(n_chains, 1), z, betas, n_leapfrog, step_size, target_accept,
                                 n_chains)
    log_px, se = _log_mean_exp(log_weight, n_chains)
    return MarginalLikelihoodEstimate(log_px, se, "ais", details={"accept_rate": accept})


@torch.no_grad()
def simulate_from_model(model, n_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, z*): z* ~ p(z), x ~ p(x|z*): data whose exact posterior sample is known."""
    z = model.prior().sample((n_points,))
    return model.decoder(z).sample(), z


@torch.no_grad()
def bdmc_sandwich(model, x: torch.Tensor, z_exact: torch.Tensor, n_chains: int = 16, n_steps: int = 500,
                  n_leapfrog: int = 5, step_size: float = 0.05, target_accept: float = 0.65
                  ) -> tuple[MarginalLikelihoodEstimate, MarginalLikelihoodEstimate]:
    """Forward AIS (a stochastic lower bound) and reverse AIS from the exact posterior samples
    ``z_exact`` (a stochastic upper bound) on simulated data (:func:`simulate_from_model`), with
    the same schedule: log p(x) lies between them, and their gap bounds forward AIS's error."""
    lower = ais_estimator(model, x, n_chains, n_steps, n_leapfrog, step_size, target_accept)
    betas = sigmoid_schedule(n_steps).flip(0)
    log_weight, accept = _anneal(model, x.repeat(n_chains, 1), z_exact.repeat(n_chains, 1), betas, n_leapfrog,
                                 step_size, target_accept, n_chains)
    log_inverse, se = _log_mean_exp(log_weight, n_chains)  # estimates log (1 / p(x))
    upper = MarginalLikelihoodEstimate(-log_inverse, se, "reverse_ais", details={"accept_rate": accept})
    return lower, upper
