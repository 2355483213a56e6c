"""The one interface every training algorithm (AEVB, wake-sleep, MCEM) shares.

The training loop in ``pipeline/`` treats all algorithms alike: it draws minibatches, calls
``step``, and at evaluation points calls ``evaluate_lower_bound``. Checkpoints are the
algorithm's ``state_dict``.
"""
from __future__ import annotations

from typing import Protocol

import torch

from .estimators import average_lower_bound


class NonFiniteLossError(FloatingPointError):
    """The objective became NaN or infinite; training must stop and keep its last good checkpoint."""


class TrainingAlgorithm(Protocol):
    name: str

    def step(self, x_batch: torch.Tensor, batch_indices: torch.Tensor) -> float:
        """One update on a minibatch; returns the minibatch's average objective per datapoint."""

    def evaluate_lower_bound(self, x: torch.Tensor) -> float | None:
        """Average SGVB lower bound per datapoint on a dataset (no parameter change); None for an
        algorithm without an encoder (MCEM)."""

    def trial_score(self, x_eval: torch.Tensor) -> float:
        """How well the first iterations went, to choose the Adagrad step size (Section 5)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def check_finite(value: torch.Tensor, what: str, step: int) -> float:
    """Return ``value`` as a float, or raise NonFiniteLossError naming the quantity and the step."""
    number = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise NonFiniteLossError(
            f"{what} became {number} at update {step}; the parameters after this step are not "
            f"usable. Try a smaller Adagrad step size (optimizer.step_size) or check the data."
        )
    return number


EVALUATION_SEED = 20131220


class EncoderBoundMixin:
    """For algorithms with a trained encoder (AEVB, wake-sleep): the curve and the step-size trial
    use the SGVB lower bound (estimator B) of ``self.model``.

    The evaluation draws its eps from its own generator seeded with ``EVALUATION_SEED`` every
    time, and leaves torch's global generator as it found it: evaluating does not change the
    training run's random numbers (a run evaluated more or less often, or stacked with others,
    trains the same), and every evaluation of a curve sees the same noise (common random numbers).
    """

    def evaluate_lower_bound(self, x: torch.Tensor) -> float:
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(EVALUATION_SEED)
            return average_lower_bound(self.model, x)

    def trial_score(self, x_eval: torch.Tensor) -> float:
        return self.evaluate_lower_bound(x_eval)
