"""Minibatch training shared by all algorithms, and the paper's choice of Adagrad step size."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .algorithm import NonFiniteLossError, TrainingAlgorithm


def draw_minibatch_indices(n_train: int, batch_size: int, device: torch.device) -> torch.Tensor:
    """M indices drawn uniformly with replacement, as the authors' code drew minibatches."""
    return torch.randint(n_train, (batch_size,), device=device)


def train_steps(
    algorithm: TrainingAlgorithm,
    x_train: torch.Tensor,
    n_steps: int,
    batch_size: int,
    binarize: bool = False,
    on_step: Callable[[float], None] | None = None,
) -> float:
    """Run ``n_steps`` minibatch updates; returns the last minibatch objective.

    With ``binarize`` each minibatch is a fresh Bernoulli sample of the grey levels (dynamic
    binarization, SPEC.md section 8); otherwise the grey levels are the targets (the paper).
    """
    last = math.nan
    for _ in range(n_steps):
        indices = draw_minibatch_indices(x_train.shape[0], batch_size, x_train.device)
        x_batch = x_train[indices]
        if binarize:
            x_batch = torch.bernoulli(x_batch)
        last = algorithm.step(x_batch, indices)
        if on_step is not None:
            on_step(last)
    return last


def select_step_size(
    build_algorithm: Callable[[float], TrainingAlgorithm],
    candidates: Sequence[float],
    x_train: torch.Tensor,
    x_eval: torch.Tensor,
    trial_steps: int,
    batch_size: int,
    seed: int,
    binarize: bool = False,
) -> tuple[float, dict[float, float]]:
    """Choose the Adagrad global step size "by performance on the training set in the first few
    iterations" (Section 5).

    Every candidate starts from the same seed (so the same initialization and the same minibatches),
    trains ``trial_steps`` updates, and is scored by ``algorithm.trial_score(x_eval)``: the average
    lower bound on ``x_eval`` (a subset of the training set), or for MCEM, which has no bound, its
    recent objective log p(x, z) on the training minibatches. A candidate that diverges (NaN/inf) scores -inf. Returns the best step size
    and every score.
    """
    scores: dict[float, float] = {}
    for step_size in candidates:
        torch.manual_seed(seed)
        algorithm = build_algorithm(step_size)
        try:
            train_steps(algorithm, x_train, trial_steps, batch_size, binarize)
            score = algorithm.trial_score(x_eval)
        except NonFiniteLossError:
            score = -math.inf
        scores[float(step_size)] = score if math.isfinite(score) else -math.inf
    best = max(scores, key=lambda s: scores[s])
    if not math.isfinite(scores[best]):
        raise NonFiniteLossError(
            f"every Adagrad step size in {list(candidates)} diverged during the step-size trial; "
            f"add smaller values to optimizer.step_size_grid"
        )
    return best, scores
