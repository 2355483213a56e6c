"""The one interface every training algorithm (AEVB, wake-sleep, MCEM) shares.

The training loop in ``pipeline/`` treats all algorithms alike: it calls ``train_steps`` (by
default minibatches drawn with replacement, one ``step`` each), at evaluation points
``evaluate_lower_bound`` and ``extra_metrics``, and checkpoints the ``state_dict``.
"""
from __future__ import annotations

import math

import torch

from .estimators import average_lower_bound


class NonFiniteLossError(FloatingPointError):
    """The objective became NaN or infinite; training must stop and keep its last good checkpoint."""


class DivergenceError(NonFiniteLossError):
    """The objective, though finite, left every plausible range: training diverged and must stop."""


def draw_minibatch_indices(n_train: int, batch_size: int, device: torch.device) -> torch.Tensor:
    """M indices drawn uniformly with replacement, as the authors' code drew minibatches."""
    return torch.randint(n_train, (batch_size,), device=device)


class TrainingAlgorithm:
    """Base class of the training algorithms: what the training loop calls."""

    name: str
    # Whether runs of this algorithm can train together in one vae_core.fused_aevb.StackedAEVB
    # (fused AEVB): the step-size trial then trains its candidates at once.
    stackable: bool = False

    def step(self, x_batch: torch.Tensor, batch_indices: torch.Tensor) -> float:
        """One update on a minibatch; returns the minibatch's average objective per datapoint."""
        raise NotImplementedError

    def train_steps(self, x_train: torch.Tensor, n_steps: int, batch_size: int, binarize: bool = False) -> float:
        """``n_steps`` minibatch updates; returns the last minibatch objective.

        Each minibatch is M indices drawn with replacement from torch's global generator; with
        ``binarize`` it is then a fresh Bernoulli sample of the grey levels (dynamic binarization,
        docs/protocol.md section 8), otherwise the grey levels are the targets (the paper).
        """
        last = math.nan
        for _ in range(n_steps):
            indices = draw_minibatch_indices(x_train.shape[0], batch_size, x_train.device)
            x_batch = x_train[indices]
            if binarize:
                x_batch = torch.bernoulli(x_batch)
            last = self.step(x_batch, indices)
        return last

    def evaluate_lower_bound(self, x: torch.Tensor) -> float | None:
        """Average SGVB lower bound per datapoint on a dataset (no parameter change); None for an
        algorithm without an encoder (MCEM)."""
        return None

    def trial_score(self, x_eval: torch.Tensor) -> float:
        """How well the first iterations went, to choose the Adagrad step size (Section 5)."""
        raise NotImplementedError

    def extra_metrics(self) -> dict[str, float]:
        """Algorithm-specific numbers for the training curve (e.g. MCEM's HMC acceptance)."""
        return {}

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


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
