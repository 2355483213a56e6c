"""Auto-Encoding Variational Bayes (Algorithm 1 of the paper).

repeat: draw a minibatch of M datapoints, draw eps ~ p(eps), compute the gradient of the minibatch
estimator (eq. 8) of the SGVB bound, update theta and phi with Adagrad (Section 5). The encoder and
decoder are trained jointly by back-propagating through the reparameterized sample.

Two implementations of the same update:
- the **fused path** (estimator B, L = 1, the paper's setting and the default, on vae_core's own
  MLPs): vae_core.fused_aevb.StackedAEVB with one run, the gradient written out by hand;
- the **autograd path** (estimator A, L > 1, or another model): the estimator of
  vae_core.estimators differentiated by autograd -- the reference the fused path is tested
  against -- updated by vae_core.optim.WarmupAdagrad.
Both draw eps from torch's global generator, once per step, after the minibatch.
"""
from __future__ import annotations

import torch

from .algorithm import EncoderBoundMixin, TrainingAlgorithm, check_finite
from .estimators import sgvb_estimator
from .fused_aevb import StackedAEVB
from .hand_gradients import has_hand_gradients
from .model import VariationalAutoEncoder
from .optim import OptimizerConfig, WarmupAdagrad
from .training import default_generator, train_stacked_steps


class AEVB(EncoderBoundMixin, TrainingAlgorithm):
    """Algorithm 1 with SGVB estimator A (eq. 6) or B (eq. 7) and L samples per datapoint.

    ``fused=None`` picks the fused path whenever it applies (estimator B, L = 1, a model of
    vae_core's own MLPs); ``False`` forces autograd (the reference the fused path is tested against).
    """

    name = "aevb"

    def __init__(
        self,
        model: VariationalAutoEncoder,
        n_train: int,
        optimizer: OptimizerConfig,
        estimator: str = "B",
        samples_per_datapoint: int = 1,
        fused: bool | None = None,
    ):
        self.model = model
        self.n_train = n_train
        self.estimator = sgvb_estimator(estimator)
        self.samples_per_datapoint = samples_per_datapoint
        self.optimizer_config = optimizer
        fusable = estimator == "B" and samples_per_datapoint == 1 and has_hand_gradients(model)
        if fused and not fusable:
            raise ValueError("the fused AEVB path implements estimator B with L = 1 on vae_core's own MLPs only")
        self.fused = fusable if fused is None else fused
        self.stackable = self.fused
        self.engine_index = 0  # this run's index in self.engine (AEVB.stack)
        if self.fused:
            self.engine = StackedAEVB([model], [n_train], [optimizer])
        else:
            self.optimizer = WarmupAdagrad(model, n_train, optimizer)

    def train_steps(self, x_train: torch.Tensor, n_steps: int, batch_size: int, binarize: bool = False) -> float:
        """``n_steps`` updates (TrainingAlgorithm.train_steps); the fused path runs as a stack of
        one on torch's global generator: the same random numbers in the same order as the
        generic loop and :meth:`step`, less overhead per step."""
        if not self.fused:
            return super().train_steps(x_train, n_steps, batch_size, binarize)
        generator = default_generator(x_train.device)
        return float(train_stacked_steps(self.engine, [x_train], [generator], n_steps, batch_size, binarize)[0])

    def step(self, x_batch: torch.Tensor, batch_indices: torch.Tensor | None = None) -> float:
        """One AEVB update: ascend the minibatch bound (eq. 8) plus the scaled log prior.

        The gradient of (N/M) sum_i L~(x_i) + log p(theta) is, up to the factor N, that of the mean
        per-datapoint bound plus log p(theta) / N, which is what is descended here (negated).
        A non-finite bound raises before the parameters are updated.
        """
        if self.fused:
            eps = torch.randn((1, x_batch.shape[0], self.model.config.z_dim),
                              device=x_batch.device, dtype=x_batch.dtype)
            bound = self.engine.forward_backward(x_batch.unsqueeze(0), eps)[0]
            value = check_finite(bound, "the minibatch lower bound", self.engine.steps_taken)
            self.engine.apply_adagrad()
            return value
        bound = self.estimator(self.model, x_batch, self.samples_per_datapoint).mean()
        self.optimizer.zero_grad()
        (-bound).backward()
        value = check_finite(bound, "the minibatch lower bound", self.optimizer.steps_taken)
        self.optimizer.step()
        return value

    @staticmethod
    def stack(runs: list["AEVB"]) -> StackedAEVB:
        """One StackedAEVB for several fused runs of one architecture (seeds of a configuration),
        carrying over each run's parameters and Adagrad state; each run's ``engine`` becomes it,
        so ``state_dict`` and ``evaluate_lower_bound`` keep working per run. Train the stack with
        :func:`vae_core.training.train_stacked_steps`, one generator per run."""
        if not all(run.fused for run in runs):
            raise ValueError("only fused AEVB runs (estimator B, L = 1) can train stacked")
        engine = StackedAEVB([run.model for run in runs], [run.n_train for run in runs],
                             [run.optimizer_config for run in runs])
        for index, run in enumerate(runs):
            engine.load_state_dict(index, run.engine.state_dict(run.engine_index))
            run.engine, run.engine_index = engine, index
        return engine

    def state_dict(self) -> dict:
        optimizer = self.engine.state_dict(self.engine_index) if self.fused else self.optimizer.state_dict()
        return {"model": self.model.state_dict(), "optimizer": optimizer}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.fused:
            self.engine.load_state_dict(self.engine_index, state["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
