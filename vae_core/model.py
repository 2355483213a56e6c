"""The variational auto-encoder: an encoder, a decoder and the prior, built as the paper does."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .networks import (
    BernoulliMLPDecoder,
    GaussianMLPDecoder,
    GaussianMLPEncoder,
    init_paper_,
    standard_normal_prior,
)

DECODERS = {"bernoulli": BernoulliMLPDecoder, "gaussian": GaussianMLPDecoder}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one run: data dimension, latent size, hidden units, decoder family."""

    x_dim: int
    z_dim: int
    hidden_units: int
    decoder: str  # "bernoulli" (MNIST) or "gaussian" (Frey Face)
    init_std: float = 0.01

    def __post_init__(self):
        if self.decoder not in DECODERS:
            raise ValueError(
                f"unknown decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}"
            )


class VariationalAutoEncoder(nn.Module):
    """q_phi(z|x) and p_theta(x|z) with p(z) = N(0, I); initialized as in Section 5."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = GaussianMLPEncoder(config.x_dim, config.hidden_units, config.z_dim)
        self.decoder = DECODERS[config.decoder](config.z_dim, config.hidden_units, config.x_dim)
        init_paper_(self.encoder, self.decoder, config.init_std)

    def prior(self):
        parameter = next(self.parameters())
        return standard_normal_prior(self.config.z_dim, parameter.device, parameter.dtype)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log p(z) + log p(x|z), broadcasting z's leading sample dimensions."""
        return self.prior().log_prob(z) + self.decoder(z).log_prob(x)


def weight_matrices(module: nn.Module) -> list[torch.Tensor]:
    """The parameters the N(0, I) weight prior applies to: every matrix, no bias (docs/protocol.md, section 8)."""
    return [p for p in module.parameters() if p.dim() >= 2]


def biases(module: nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.dim() < 2]
