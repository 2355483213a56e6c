"""Monte Carlo EM with a Hybrid Monte Carlo E-step (Appendix E; docs/protocol.md, sections 6 and 8).

The paper's third algorithm in Figure 3 (Appendix E): for each datapoint of a minibatch, sample z
from the posterior p(z|x) with HMC -- 10 leapfrog steps, step size tuned automatically to about
90% acceptance -- then take 5 Adagrad weight-update steps of the decoder on that sample.

**No encoder is used.** The model is a ``VariationalAutoEncoder`` so it shares the decoder,
initialization and checkpoint format with AEVB and wake-sleep, but its encoder is never trained
(its parameters never receive a gradient). MCEM therefore has no SGVB bound:
:meth:`MonteCarloEM.evaluate_lower_bound` returns ``None`` (the ``TrainingAlgorithm`` protocol's
"no bound"; the training loop then logs no bound row), and its metric is the marginal likelihood
(vae_core.marginal_likelihood, Figure 3).

One update on a minibatch of datapoints x_i with training-set indices i:

1. **E-step.** One HMC transition (``n_leapfrog`` = 10 leapfrog steps, vae_core.hmc.hmc_step)
   targeting p(z|x_i) ∝ p(z) p(x_i|z), started from datapoint i's *persistent chain state* z_i:
   one chain per training datapoint, (N, Nz), initialized from the prior p(z) = N(0, I) and kept
   across epochs (docs/protocol.md, section 6, "the natural reading"). All minibatch chains move at once.
2. **Step-size tuning.** Every chain has its own step size (datapoints' posteriors differ in
   width), persisted with the chain and adapted after each of its transitions toward ``target_accept`` = 0.9 with the authors' factor
   f = min(1.25, 1.02^min(100, M)) (docs/protocol.md, section 8; vae_core.hmc.StepSizeAdaptation):
   - ``step_size_rule="mean"`` (default): log step += log(f) / (1 - target) * (a - target), a the
     transition's acceptance probability. Its fixed point is a 90% *mean* acceptance (what the
     paper asks for), and its largest upward move, at a = 1, is the authors' factor f.
   - ``step_size_rule="authors"``: multiply by f if a > 0.9, divide otherwise
     (the ``"authors"`` rule). The authors applied it to one shared step size with the
     minibatch's mean acceptance; applied per chain it settles at a 90% *median* acceptance
     probability, which for HMC is a lower mean acceptance (0.70 on the Figure 3 MNIST model,
     Ntrain = 1,000, against 0.90 for the default rule).
   A chain visited for the first time starts from the population's current typical step size,
   exp(running mean of log step size), updated after every minibatch with weight 0.1 from the
   minibatch's adapted step sizes and started at ``initial_step_size`` (0.05): on Ntrain = 50,000 a
   chain is first drawn after hundreds of minibatches, when the posteriors have long narrowed.
   (The authors' single shared step size did this implicitly; per chain it must be explicit.)
   The authors' code also gave each chain's step a random sign, drawn afresh every transition.
   Leapfrog with step -eps from (z, r) is leapfrog with +eps from (z, -r) with the end momentum
   negated, and r ~ N(0, I) is symmetric, so the sign changes nothing in distribution: it is
   omitted and the step sizes are stored as positive magnitudes.
3. **M-step.** ``updates_per_batch`` = 5 Adagrad updates of the decoder parameters theta on
   (1/M) sum_i log p(x_i, z_i) at the sampled z_i (fixed during the 5 updates), with the same
   warm-up and M/N-scaled N(0, I) weight prior as AEVB (vae_core.optim.WarmupAdagrad; the warm-up
   counts updates, so 100 warm-up steps last 20 minibatches). The paper's "accompanying annealing
   schedule" is read as Adagrad's own: the accumulated squared gradients in its denominator shrink
   every parameter's effective step size over time (docs/protocol.md, section 8).

Minibatches are drawn with replacement, so a datapoint can appear twice in one minibatch: both
copies advance its chain independently (both samples serve the M-step) and the first copy's state
and step size are written back. MCEM is a batch method: each chain moves only when its datapoint
is drawn, once per epoch on average, so on Ntrain = 50,000 a chain moves once every 500
minibatches of 100 -- why MCEM learns slowly there (Figure 3).
"""
from __future__ import annotations

import math

import torch

from vae_core.algorithm import DivergenceError, TrainingAlgorithm, check_finite
from vae_core.hmc import StepSizeAdaptation, hmc_step
from vae_core.model import VariationalAutoEncoder
from vae_core.hand_gradients import DecoderLogJoint, has_hand_gradients
from vae_core.optim import OptimizerConfig, WarmupAdagrad

STEP_SIZE_RULES = ("mean", "authors")
RECENT_MINIBATCHES = 50  # the window of trial_score and of the divergence guard


def first_occurrences(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unique indices, position of each one's first occurrence in ``indices``)."""
    unique, inverse = torch.unique(indices, return_inverse=True)
    positions = torch.arange(indices.shape[0], device=indices.device)
    first = torch.full_like(unique, indices.shape[0]).scatter_reduce(0, inverse, positions, "amin")
    return unique, first


class MonteCarloEM(TrainingAlgorithm):
    """Monte Carlo EM of Appendix E; see the module docstring for every choice."""

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
        step_size_rule: str = "mean",
        hand_gradients: bool | None = None,
        divergence_factor: float = 2.0,
    ):
        if step_size_rule not in STEP_SIZE_RULES:
            raise ValueError(f"unknown step_size_rule {step_size_rule!r}; choose one of {STEP_SIZE_RULES}")
        if not 0.0 < target_accept < 1.0:
            raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
        if initial_step_size <= 0:
            raise ValueError(f"initial_step_size must be positive, got {initial_step_size}")
        self.model = model
        # vae_core.hand_gradients for the HMC target's gradient in z and the M-step's gradient in
        # the decoder (None: whenever they apply to the model); False forces autograd.
        self.hand_gradients = has_hand_gradients(model) if hand_gradients is None else hand_gradients
        self.n_train = n_train
        self.n_leapfrog = n_leapfrog
        self.updates_per_batch = updates_per_batch
        self.adaptation = StepSizeAdaptation.for_minibatches(step_size_rule, target_accept, batch_size)
        parameter = next(model.parameters())
        device, dtype = parameter.device, parameter.dtype
        # One persistent chain per training datapoint, started from the prior p(z) = N(0, I).
        self.chains = model.prior().sample((n_train,)).to(device=device, dtype=dtype)
        self.step_sizes = torch.full((n_train,), float(initial_step_size), device=device, dtype=dtype)
        self.visits = torch.zeros(n_train, device=device, dtype=torch.int32)
        self.population_log_step = math.log(initial_step_size)  # for chains visited the first time
        self.decoder_optimizer = WarmupAdagrad(model.decoder, n_train, optimizer)
        self.accepted_total = 0.0
        self.proposals_total = 0
        self.recent_acceptance = math.nan  # exponential moving average over ~100 minibatches
        self.recent_objectives: list[float] = []
        # Divergence guard: the untrained decoder's objective, and how many times worse the recent
        # mean objective may get (see _check_divergence).
        self.initial_objective = math.nan
        self.divergence_factor = divergence_factor

    # ------------------------------------------------------------------ the update
    def step(self, x_batch: torch.Tensor, batch_indices: torch.Tensor) -> float:
        """One E-step (an HMC transition of the minibatch's chains) and ``updates_per_batch``
        decoder updates. Returns the minibatch mean of log p(x_i, z_i) at the E-step's samples
        under the decoder before this minibatch's updates (it comes free with HMC)."""
        if batch_indices is None:
            raise ValueError("MCEM needs the minibatch's training-set indices (its persistent chains)")
        indices = torch.as_tensor(batch_indices, device=self.chains.device).long()
        if indices.shape != (x_batch.shape[0],):
            raise ValueError(
                f"batch_indices must hold one training-set index per datapoint of the minibatch: "
                f"got shape {tuple(indices.shape)} for {x_batch.shape[0]} datapoints"
            )
        update = self.decoder_optimizer.steps_taken

        # E-step: z_i ~ p(z | x_i) by one HMC transition from the persistent state.
        step_sizes = torch.where(self.visits[indices] == 0,
                                 torch.full_like(self.step_sizes[indices], math.exp(self.population_log_step)),
                                 self.step_sizes[indices])
        target = DecoderLogJoint(self.model, x_batch) if self.hand_gradients else lambda z: self.model.log_joint(x_batch, z)
        move = hmc_step(target, self.chains[indices], step_sizes, self.n_leapfrog)
        value = check_finite(move.logp.mean(), "the MCEM objective log p(x, z) at the HMC samples", update)
        new_step_sizes = self.adaptation.update(step_sizes, move.accept_prob)
        self.population_log_step = 0.9 * self.population_log_step + 0.1 * float(new_step_sizes.log().mean())
        unique, first = first_occurrences(indices)
        self.chains[unique] = move.z[first]
        self.step_sizes[unique] = new_step_sizes[first]
        self.visits[unique] += 1
        rate = float(move.accepted.float().mean())
        self.accepted_total += float(move.accepted.sum())
        self.proposals_total += move.accepted.numel()
        self.recent_acceptance = rate if math.isnan(self.recent_acceptance) else 0.99 * self.recent_acceptance + 0.01 * rate

        # M-step: Adagrad ascent of (1/M) sum_i log p(x_i, z_i) + log p(theta) / N in theta.
        z = move.z.detach()
        for _ in range(self.updates_per_batch):
            self.decoder_optimizer.zero_grad()
            if self.hand_gradients:  # the gradient written out by hand
                objective = (target.decoder_gradient_(z) + target.log_prior(z)).mean()
            else:
                objective = self.model.log_joint(x_batch, z).mean()
                (-objective).backward()
            check_finite(objective, "the MCEM objective log p(x, z)", self.decoder_optimizer.steps_taken)
            self.decoder_optimizer.step()
        self.recent_objectives = (self.recent_objectives + [value])[-RECENT_MINIBATCHES:]
        self._check_divergence(update)
        return value

    def _check_divergence(self, update: int) -> None:
        """Stop when the decoder has diverged though every number stays finite.

        A too-large Adagrad step drives the decoder's logits to hundreds of thousands: its
        objective log p(x, z) falls a thousandfold while HMC, retuning its step sizes, still
        reports a healthy acceptance. The guard compares the mean objective of the last
        ``RECENT_MINIBATCHES`` minibatches with the untrained decoder's (the first minibatch's):
        once it is ``divergence_factor`` (2) times worse, training has gone backwards past any
        transient, and DivergenceError stops it like a NaN would. (A working run improves on the
        untrained decoder: about -548 to -150 nats on MNIST.)
        """
        if math.isnan(self.initial_objective):
            self.initial_objective = self.recent_objectives[0]
        if len(self.recent_objectives) < RECENT_MINIBATCHES:
            return
        recent = sum(self.recent_objectives) / len(self.recent_objectives)
        if self.initial_objective < 0 and recent < self.divergence_factor * self.initial_objective:
            raise DivergenceError(
                f"the MCEM objective log p(x, z) averaged {recent:.4g} over the last {RECENT_MINIBATCHES} minibatches "
                f"at update {update}, {recent / self.initial_objective:.3g} times the untrained decoder's "
                f"{self.initial_objective:.4g}: the decoder has diverged. Try a smaller Adagrad step size "
                f"(optimizer.step_size or optimizer.step_size_grid).")

    # ------------------------------------------------------------------ reporting
    @property
    def acceptance_rate(self) -> float:
        """Fraction of all HMC proposals accepted since training started (persisted in the
        state dict, so it survives a resume); NaN before the first update."""
        return self.accepted_total / self.proposals_total if self.proposals_total else math.nan

    def evaluate_lower_bound(self, x: torch.Tensor) -> float | None:
        """None: MCEM trains no encoder, so there is no SGVB bound (the protocol's "no bound";
        NaN would be written into the curve). Its metric is the marginal likelihood."""
        return None

    def trial_score(self, x_eval: torch.Tensor) -> float:
        """For the Adagrad step-size trial (Section 5): the mean log p(x, z) of the last 50
        minibatches' E-step samples (there is no bound to score)."""
        return sum(self.recent_objectives) / len(self.recent_objectives) if self.recent_objectives else -math.inf

    def extra_metrics(self) -> dict[str, float]:
        """The HMC tuner's state for the training curve (only once there is something to show)."""
        if not self.proposals_total:
            return {}
        visited = self.visits > 0
        return {
            "hmc_acceptance_rate": self.acceptance_rate,
            "hmc_recent_acceptance_rate": self.recent_acceptance,
            "hmc_median_step_size": float(self.step_sizes[visited].median()),
        }

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "decoder_optimizer": self.decoder_optimizer.state_dict(),
            "chains": self.chains.clone(),
            "step_sizes": self.step_sizes.clone(),
            "visits": self.visits.clone(),
            "population_log_step": self.population_log_step,
            "accepted_total": self.accepted_total,
            "proposals_total": self.proposals_total,
            "recent_acceptance": self.recent_acceptance,
            "recent_objectives": list(self.recent_objectives),
            "initial_objective": self.initial_objective,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.decoder_optimizer.load_state_dict(state["decoder_optimizer"])
        if state["chains"].shape != self.chains.shape:
            raise ValueError(
                f"the checkpoint holds {tuple(state['chains'].shape)} chain states, this MCEM "
                f"{tuple(self.chains.shape)} (n_train, Nz) -- a different training set or model"
            )
        self.chains.copy_(state["chains"])
        self.step_sizes.copy_(state["step_sizes"])
        self.visits.copy_(state["visits"])
        self.population_log_step = state["population_log_step"]
        self.accepted_total = state["accepted_total"]
        self.proposals_total = state["proposals_total"]
        self.recent_acceptance = state["recent_acceptance"]
        self.recent_objectives = list(state["recent_objectives"])
        self.initial_objective = state["initial_objective"]
