"""Monte Carlo EM with a Hybrid Monte Carlo E-step (Appendix E; SPEC.md sections 6 and 8).

No encoder is used: the model holds one (it is a ``VariationalAutoEncoder``) but it is never
trained, so MCEM has no SGVB bound; its metric is the marginal likelihood (Figure 3).

Per minibatch of datapoints x_i (indices i into the training set):
1. E-step: one HMC transition of 10 leapfrog steps from each datapoint's persistent chain state
   z_i (one chain per training datapoint, started from the prior), targeting p(z|x_i), with a
   per-chain step size tuned toward a 90% acceptance rate. The authors adapted one step size per
   minibatch by a factor min(1.25, 1.02^min(100, M)) up or down as the mean acceptance was above
   or below 0.9; per chain, that rule settles at the *median* acceptance (a mean of about 0.72 on
   the linear-Gaussian model of tests/test_baselines.py when we tried it), so we use log step += log(1.25) / 0.1 * (a - 0.9)
   instead, whose fixed point is a 90% *mean* acceptance and whose largest upward move per visit
   is the authors' factor 1.25. Each chain's step size carries a random sign, as the authors' code
   did; HMC's proposal is symmetric in time, so the sign changes nothing in distribution.
2. M-step: 5 Adagrad updates of the decoder on log p(x_i, z_i) at the sampled z_i, with the same
   warm-up and M/N-scaled weight prior as AEVB. The "accompanying annealing schedule" is read as
   Adagrad's own: its accumulated squared gradients shrink the effective step size over time.

A batch method: every chain is visited once per epoch, so on Ntrain = 50,000 each chain moves only
once every 500 minibatches, which is why it is slow there (Figure 3).
"""
from __future__ import annotations

import math

import torch

from vae_core.algorithm import check_finite
from vae_core.hmc import adapt_step_size_to_mean, hmc_step
from vae_core.model import VariationalAutoEncoder
from vae_core.optim import OptimizerConfig, WarmupAdagrad


class MonteCarloEM:
    name = "mcem"

    def __init__(
        self,
        model: VariationalAutoEncoder,
        n_train: int,
        optimizer: OptimizerConfig,
        n_leapfrog: int = 10,
        updates_per_batch: int = 5,
        target_accept: float = 0.9,
        initial_step_size: float = 0.05,
        batch_size: int = 100,
    ):
        self.model = model
        self.n_train = n_train
        self.n_leapfrog = n_leapfrog
        self.updates_per_batch = updates_per_batch
        self.target_accept = target_accept
        self.adapt_gain = math.log(min(1.25, 1.02 ** min(100, batch_size))) / (1.0 - target_accept)
        parameter = next(model.parameters())
        self.chains = torch.randn(n_train, model.config.z_dim, device=parameter.device, dtype=parameter.dtype)
        signs = torch.randint(0, 2, (n_train,), device=parameter.device) * 2 - 1
        self.step_sizes = initial_step_size * signs.to(parameter.dtype)
        self.decoder_optimizer = WarmupAdagrad.from_config(model.decoder, n_train, optimizer)
        self.accepted_total = 0.0
        self.proposals_total = 0
        self.recent_objectives: list[float] = []

    def step(self, x_batch: torch.Tensor, batch_indices: torch.Tensor) -> float:
        if batch_indices is None:
            raise ValueError("MCEM needs the minibatch's training-set indices (its persistent chains)")
        log_joint = lambda z: self.model.log_joint(x_batch, z)  # noqa: E731
        move = hmc_step(log_joint, self.chains[batch_indices], self.step_sizes[batch_indices], self.n_leapfrog)
        self.step_sizes[batch_indices] = adapt_step_size_to_mean(
            self.step_sizes[batch_indices], move.accept_prob, self.target_accept, self.adapt_gain
        )
        self.chains[batch_indices] = move.z
        self.accepted_total += float(move.accepted.sum())
        self.proposals_total += move.accepted.numel()
        z = move.z.detach()
        for _ in range(self.updates_per_batch):
            objective = self.model.log_joint(x_batch, z).mean()
            self.decoder_optimizer.zero_grad()
            (-objective).backward()
            value = check_finite(objective, "the MCEM objective log p(x, z)", self.decoder_optimizer.steps_taken)
            self.decoder_optimizer.step()
        self.recent_objectives = (self.recent_objectives + [value])[-50:]
        return value

    @property
    def acceptance_rate(self) -> float:
        """Fraction of HMC proposals accepted since the start (or since the run was resumed)."""
        return self.accepted_total / self.proposals_total if self.proposals_total else math.nan

    def evaluate_lower_bound(self, x: torch.Tensor) -> float | None:
        """None: MCEM trains no encoder, so it has no SGVB bound (see the module docstring)."""
        return None

    def trial_score(self, x_eval: torch.Tensor) -> float:
        """For the step-size trial: the mean log p(x, z) of the last 50 minibatches' samples."""
        return sum(self.recent_objectives) / len(self.recent_objectives) if self.recent_objectives else -math.inf

    def extra_metrics(self) -> dict[str, float]:
        return {"hmc_acceptance_rate": self.acceptance_rate,
                "hmc_median_step_size": float(self.step_sizes.abs().median())}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "decoder_optimizer": self.decoder_optimizer.state_dict(),
                "chains": self.chains.clone(), "step_sizes": self.step_sizes.clone(),
                "accepted_total": self.accepted_total, "proposals_total": self.proposals_total,
                "recent_objectives": list(self.recent_objectives)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.decoder_optimizer.load_state_dict(state["decoder_optimizer"])
        self.chains.copy_(state["chains"])
        self.step_sizes.copy_(state["step_sizes"])
        self.accepted_total = state["accepted_total"]
        self.proposals_total = state["proposals_total"]
        self.recent_objectives = list(state["recent_objectives"])
