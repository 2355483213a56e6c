"""The paper's MLPs (Appendix C): a Gaussian encoder and Bernoulli / Gaussian decoders.

Every network has one tanh hidden layer. Each returns a ``torch.distributions`` object, so a
caller writes ``encoder(x).rsample()`` or ``decoder(z).log_prob(x)`` and the densities are the
library's, not ours.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal


class GaussianMLPEncoder(nn.Module):
    """Recognition model q_phi(z|x) = N(z; mu, diag(sigma^2)) (Appendix C.2, docs/protocol.md, section 1).

    h = tanh(W3 x + b3), mu = W4 h + b4, log sigma^2 = W5 h + b5. The two heads W4 and W5 are
    stored as one linear layer of width 2 * Nz (one matrix multiply instead of two); the first Nz
    outputs are mu, the last Nz are log sigma^2.
    """

    def __init__(self, x_dim: int, hidden_units: int, z_dim: int):
        super().__init__()
        self.x_dim, self.hidden_units, self.z_dim = x_dim, hidden_units, z_dim
        self.hidden = nn.Linear(x_dim, hidden_units)
        self.heads = nn.Linear(hidden_units, 2 * z_dim)

    def mean_and_log_var(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma^2) of q(z|x), each of shape (..., Nz)."""
        mean, log_var = self.heads(torch.tanh(self.hidden(x))).chunk(2, dim=-1)
        return mean, log_var

    def forward(self, x: torch.Tensor) -> Independent:
        mean, log_var = self.mean_and_log_var(x)
        return diagonal_gaussian(mean, log_var)


class BernoulliMLPDecoder(nn.Module):
    """p_theta(x|z) with y = sigmoid(W2 tanh(W1 z + b1) + b2) (Appendix C.1).

    log p(x|z) = sum_i x_i log y_i + (1 - x_i) log(1 - y_i). The paper feeds MNIST grey levels in
    [0, 1] directly as targets, so the Bernoulli is evaluated at non-binary x: this is the
    cross-entropy above, computed stably from the logits (argument validation is off for that
    reason; it is not a normalized density for grey-level x).
    """

    def __init__(self, z_dim: int, hidden_units: int, x_dim: int):
        super().__init__()
        self.x_dim, self.hidden_units, self.z_dim = x_dim, hidden_units, z_dim
        self.hidden = nn.Linear(z_dim, hidden_units)
        self.output = nn.Linear(hidden_units, x_dim)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.output(torch.tanh(self.hidden(z)))

    def forward(self, z: torch.Tensor) -> Independent:
        return Independent(Bernoulli(logits=self.logits(z), validate_args=False), 1)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z] = y, the image shown in Figures 4 and 5."""
        return torch.sigmoid(self.logits(z))

    def output_biases(self) -> list[torch.Tensor]:
        return [self.output.bias]


class GaussianMLPDecoder(nn.Module):
    """p_theta(x|z) = N(x; mu, diag(sigma^2)) for continuous data (Appendix C.2, Section 5).

    h = tanh(W3 z + b3), mu = sigmoid(W4 h + b4) (means constrained to (0, 1) as the paper does
    for Frey Face), log sigma^2 = W5 h + b5. The two heads are stored as one layer of width 2 * D.
    """

    def __init__(self, z_dim: int, hidden_units: int, x_dim: int):
        super().__init__()
        self.x_dim, self.hidden_units, self.z_dim = x_dim, hidden_units, z_dim
        self.hidden = nn.Linear(z_dim, hidden_units)
        self.heads = nn.Linear(hidden_units, 2 * x_dim)

    def mean_and_log_var(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre_mean, log_var = self.heads(torch.tanh(self.hidden(z))).chunk(2, dim=-1)
        return torch.sigmoid(pre_mean), log_var

    def forward(self, z: torch.Tensor) -> Independent:
        mean, log_var = self.mean_and_log_var(z)
        return diagonal_gaussian(mean, log_var)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean_and_log_var(z)[0]

    def output_biases(self) -> list[torch.Tensor]:
        return [self.heads.bias]


def diagonal_gaussian(mean: torch.Tensor, log_var: torch.Tensor) -> Independent:
    """N(mean, diag(exp(log_var))) as one event over the last dimension."""
    return Independent(Normal(mean, torch.exp(0.5 * log_var), validate_args=False), 1)


def standard_normal_prior(z_dim: int, device=None, dtype=torch.float32) -> Independent:
    """p(z) = N(0, I), the parameter-free prior of Section 3."""
    zeros = torch.zeros(z_dim, device=device, dtype=dtype)
    return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1)


def init_paper_(encoder: GaussianMLPEncoder, decoder: nn.Module, std: float) -> None:
    """Initialize every parameter from N(0, std^2) (Section 5: "random sampling from N(0, 0.01)").

    0.01 is read as the standard deviation. As in the authors' code of the time (docs/protocol.md, section 8),
    the encoder's log-variance head and the decoder's output biases start at 0, so q(z|x) starts
    with unit variance and the decoder's output starts at the same value for every pixel.
    """
    with torch.no_grad():
        for parameter in list(encoder.parameters()) + list(decoder.parameters()):
            parameter.normal_(0.0, std)
        z_dim = encoder.z_dim
        encoder.heads.weight[z_dim:].zero_()
        encoder.heads.bias[z_dim:].zero_()
        for bias in decoder.output_biases():
            bias.zero_()

