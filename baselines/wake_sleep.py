"""The wake-sleep algorithm (Hinton, Dayan, Frey & Neal, 1995), the paper's baseline in Figures 2-3.

Section 5: "we compared performance with the wake-sleep algorithm [HDFN95]. We employed the same
encoder (also called recognition model) for the wake-sleep algorithm and the variational
auto-encoder." So the model is vae_core's ``VariationalAutoEncoder`` -- the same Gaussian MLP
encoder q_phi(z|x), the same Bernoulli or Gaussian MLP decoder p_theta(x|z), the same N(0, 0.01)
initialization -- and both parameter sets are trained with vae_core.optim.WarmupAdagrad: one
optimizer for the decoder (theta), one for the encoder (phi), each with the warm-up and the
M/N-scaled N(0, I) prior on its weight matrices, as the authors' code did (docs/protocol.md, section 8).

One update on a minibatch of M datapoints:

- **Wake phase** (theta): z_i ~ q_phi(z|x_i), one sample per datapoint, drawn without a gradient
  path (the sample is a constant for theta; wake-sleep has no reparameterization); ascend
  (1/M) sum_i [log p(z_i) + log p_theta(x_i|z_i)] + log p(theta) / N.
- **Sleep phase** (phi): M ancestral "dreams" z_j ~ p(z), x_j ~ p_theta(x|z_j) from the decoder
  just updated; ascend (1/M) sum_j log q_phi(z_j|x_j) + log p(phi) / N. x_j is a *sample* of the
  decoder distribution, not its mean: a binary image (Bernoulli sample) for the Bernoulli decoder,
  mean + sigma * noise (Gaussian sample, not clipped to [0, 1]) for the Gaussian decoder. So with
  grey-level MNIST targets the encoder is trained on binary dreams and applied to grey levels.

The value ``step`` returns -- and so the training curve -- is the SGVB lower bound of the
minibatch by estimator B (eq. 7), -KL(q(z|x_i) || p(z)) + log p(x_i|z_i), evaluated at the wake
phase's z_i with the decoder before its update: the same quantity AEVB returns, at no extra cost.
``evaluate_lower_bound`` is vae_core.estimators.average_lower_bound (estimator B), as for AEVB, so
Figure 2 compares the two algorithms on one scale. Wake-sleep does not optimize this bound (the
sleep phase minimizes KL(p || q), not KL(q || p)), which is the point of the comparison.
"""
from __future__ import annotations

import torch

from vae_core.algorithm import EncoderBoundMixin, TrainingAlgorithm, check_finite
from vae_core.estimators import kl_diagonal_gaussian_to_standard_normal
from vae_core.hand_gradients import DecoderLogJoint, encoder_log_density_gradient_, has_hand_gradients
from vae_core.model import VariationalAutoEncoder
from vae_core.networks import diagonal_gaussian
from vae_core.optim import OptimizerConfig, WarmupAdagrad


class WakeSleep(EncoderBoundMixin, TrainingAlgorithm):
    """Wake-sleep with the paper's encoder and decoder; the interface of vae_core.aevb.AEVB."""

    name = "wake_sleep"

    def __init__(
        self,
        model: VariationalAutoEncoder,
        n_train: int,
        optimizer: OptimizerConfig,
        sleep_batch_size: int | None = None,
        hand_gradients: bool | None = None,
    ):
        self.model = model
        # vae_core.hand_gradients for vae_core's own MLPs (None: whenever they apply); False
        # forces autograd, the reference they are tested against.
        self.hand_gradients = has_hand_gradients(model) if hand_gradients is None else hand_gradients
        self.n_train = n_train
        self.sleep_batch_size = sleep_batch_size  # None: as many dreams as datapoints (M)
        self.decoder_optimizer = WarmupAdagrad(model.decoder, n_train, optimizer)
        self.encoder_optimizer = WarmupAdagrad(model.encoder, n_train, optimizer)

    def wake(self, x_batch: torch.Tensor) -> float:
        """Decoder update at z ~ q(z|x); returns the minibatch's SGVB bound (estimator B, L = 1)
        at that z, under the decoder before the update."""
        update = self.decoder_optimizer.steps_taken
        with torch.no_grad():
            mean, log_var = self.model.encoder.mean_and_log_var(x_batch)
            check_finite(mean.sum() + log_var.sum(), "the recognition model's output q(z|x)", update)
            z = diagonal_gaussian(mean, log_var).sample()
            kl = kl_diagonal_gaussian_to_standard_normal(mean, log_var)
        self.decoder_optimizer.zero_grad()
        if self.hand_gradients:  # vae_core.hand_gradients: the same gradient without autograd
            target = DecoderLogJoint(self.model, x_batch)
            reconstruction = target.decoder_gradient_(z)
            log_joint = (target.log_prior(z) + reconstruction).mean()
        else:
            reconstruction = self.model.decoder(z).log_prob(x_batch)
            log_joint = (self.model.prior().log_prob(z) + reconstruction).mean()
            (-log_joint).backward()
        bound = check_finite((reconstruction.detach() - kl).mean(), "the wake-phase lower bound", update)
        check_finite(log_joint, "the wake-phase objective log p(x, z)", update)
        self.decoder_optimizer.step()
        return bound

    def sleep(self, batch_size: int) -> float:
        """Encoder update on dreamed pairs (z, x) ~ p(z) p(x|z); returns the mean log q(z|x)."""
        with torch.no_grad():
            z = self.model.prior().sample((batch_size,))
            x = self.model.decoder(z).sample()
        self.encoder_optimizer.zero_grad()
        if self.hand_gradients:
            log_q = encoder_log_density_gradient_(self.model.encoder, x, z)
        else:
            log_q = self.model.encoder(x).log_prob(z).mean()
            (-log_q).backward()
        value = check_finite(log_q, "the sleep-phase objective log q(z|x)", self.encoder_optimizer.steps_taken)
        self.encoder_optimizer.step()
        return value

    def step(self, x_batch: torch.Tensor, batch_indices: torch.Tensor | None = None) -> float:
        """A wake phase on the minibatch, then a sleep phase on as many dreams (``batch_indices`` is
        not needed). Returns the minibatch SGVB bound (estimator B) before the update."""
        bound = self.wake(x_batch)
        self.sleep(self.sleep_batch_size or x_batch.shape[0])
        return bound

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "decoder_optimizer": self.decoder_optimizer.state_dict(),
                "encoder_optimizer": self.encoder_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.decoder_optimizer.load_state_dict(state["decoder_optimizer"])
        self.encoder_optimizer.load_state_dict(state["encoder_optimizer"])
