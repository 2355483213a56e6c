"""The wake-sleep algorithm (Hinton, Dayan, Frey & Neal, 1995), the paper's Figure 2 baseline.

Built from the same parts as AEVB (Section 5: "the wake-sleep algorithm ... employing the same
encoder (recognition model)"): the same Gaussian MLP encoder, the same decoder, the same
initialization, Adagrad with warm-up and the M/N-scaled N(0, I) weight prior (``vae_core.optim``).

- Wake phase: z ~ q(z|x) for each datapoint of the minibatch (no gradient through the sample);
  ascend log p(x, z) = log p(z) + log p(x|z) in the decoder's parameters theta.
- Sleep phase: M ancestral samples z ~ p(z), x ~ p(x|z); ascend log q(z|x) in the encoder's
  parameters phi. x is a *sample* of the decoder distribution, as the authors' code did: a binary
  image (Bernoulli sample) for MNIST, a Gaussian sample for Frey Face.

The curve it logs is the SGVB lower bound (estimator B), the same quantity AEVB logs, so the two
algorithms are compared on one scale (Figure 2).
"""
from __future__ import annotations

import torch

from vae_core.algorithm import EncoderBoundMixin, check_finite
from vae_core.estimators import kl_diagonal_gaussian_to_standard_normal
from vae_core.model import VariationalAutoEncoder
from vae_core.networks import diagonal_gaussian
from vae_core.optim import OptimizerConfig, WarmupAdagrad


class WakeSleep(EncoderBoundMixin):
    name = "wake_sleep"

    def __init__(self, model: VariationalAutoEncoder, n_train: int, optimizer: OptimizerConfig):
        self.model = model
        self.n_train = n_train
        self.decoder_optimizer = WarmupAdagrad.from_config(model.decoder, n_train, optimizer)
        self.encoder_optimizer = WarmupAdagrad.from_config(model.encoder, n_train, optimizer)

    def wake(self, x_batch: torch.Tensor) -> torch.Tensor:
        """Decoder update at z ~ q(z|x); returns the minibatch's SGVB bound (estimator B)."""
        with torch.no_grad():
            mean, log_var = self.model.encoder.mean_and_log_var(x_batch)
            check_finite(mean.sum() + log_var.sum(), "the recognition model's output",
                         self.encoder_optimizer.steps_taken)
            z = diagonal_gaussian(mean, log_var).sample()
            kl = kl_diagonal_gaussian_to_standard_normal(mean, log_var)
        reconstruction = self.model.decoder(z).log_prob(x_batch)
        log_joint = self.model.prior().log_prob(z) + reconstruction
        self.decoder_optimizer.zero_grad()
        (-log_joint.mean()).backward()
        self.decoder_optimizer.step()
        return (reconstruction.detach() - kl).mean()

    def sleep(self, batch_size: int) -> None:
        """Encoder update on dreamed pairs (z, x) ~ p(z) p(x|z)."""
        with torch.no_grad():
            z = self.model.prior().sample((batch_size,))
            x = self.model.decoder(z).sample()
        log_q = self.model.encoder(x).log_prob(z)
        self.encoder_optimizer.zero_grad()
        (-log_q.mean()).backward()
        self.encoder_optimizer.step()

    def step(self, x_batch: torch.Tensor, batch_indices: torch.Tensor | None = None) -> float:
        bound = self.wake(x_batch)
        value = check_finite(bound, "the wake-phase lower bound", self.decoder_optimizer.steps_taken)
        self.sleep(x_batch.shape[0])
        return value

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "decoder_optimizer": self.decoder_optimizer.state_dict(),
                "encoder_optimizer": self.encoder_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.decoder_optimizer.load_state_dict(state["decoder_optimizer"])
        self.encoder_optimizer.load_state_dict(state["encoder_optimizer"])
