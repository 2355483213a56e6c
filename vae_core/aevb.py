"""Auto-Encoding Variational Bayes (Algorithm 1 of the paper).

repeat: draw a minibatch of M datapoints, draw eps ~ p(eps), compute the gradient of the minibatch
estimator (eq. 8) of the SGVB bound, update theta and phi with Adagrad (Section 5). The encoder and
decoder are trained jointly by back-propagating through the reparameterized sample.
"""
from __future__ import annotations

import torch

from .algorithm import EncoderBoundMixin, check_finite
from .estimators import sgvb_estimator
from .model import VariationalAutoEncoder
from .optim import OptimizerConfig, WarmupAdagrad


class AEVB(EncoderBoundMixin):
    """Algorithm 1 with SGVB estimator A (eq. 6) or B (eq. 7) and L samples per datapoint."""

    name = "aevb"

    def __init__(
        self,
        model: VariationalAutoEncoder,
        n_train: int,
        optimizer: OptimizerConfig,
        estimator: str = "B",
        samples_per_datapoint: int = 1,
    ):
        self.model = model
        self.n_train = n_train
        self.estimator = sgvb_estimator(estimator)
        self.samples_per_datapoint = samples_per_datapoint
        self.optimizer = WarmupAdagrad.from_config(model, n_train, optimizer)

    def step(self, x_batch: torch.Tensor, batch_indices: torch.Tensor | None = None) -> float:
        """One AEVB update: ascend the minibatch bound (eq. 8) plus the scaled log prior.

        The gradient of (N/M) sum_i L~(x_i) + log p(theta) is, up to the factor N, that of the mean
        per-datapoint bound plus log p(theta) / N, which is what is descended here (negated).
        """
        bound = self.estimator(self.model, x_batch, self.samples_per_datapoint).mean()
        self.optimizer.zero_grad()
        (-bound).backward()
        value = check_finite(bound, "the minibatch lower bound", self.optimizer.steps_taken)
        self.optimizer.step()
        return value

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
