"""Stacked AEVB training, and the paper's choice of the Adagrad step size (Section 5)."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .algorithm import NonFiniteLossError, TrainingAlgorithm, check_finite
from .fused_aevb import StackedAEVB


def default_generator(device: torch.device) -> torch.Generator:
    """torch's global generator of ``device`` (the one torch.manual_seed seeds)."""
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


def train_stacked_steps(
    engine: StackedAEVB,
    x_train: Sequence[torch.Tensor],
    generators: Sequence[torch.Generator],
    n_steps: int,
    batch_size: int,
    binarize: bool = False,
    on_nonfinite: str = "raise",
) -> torch.Tensor:
    """``TrainingAlgorithm.train_steps`` for R AEVB runs stacked in one :class:`StackedAEVB`.

    Run r draws from ``generators[r]`` exactly what a run trained alone by the generic
    ``train_steps`` loop and the fused ``AEVB.step`` draws from the global generator, in the same order -- its
    minibatch indices into ``x_train[r]``, the binarization if any, then eps -- so a run started
    from the same generator state gives the same numbers stacked or alone. Returns the (R,)
    minibatch bounds of the last step (the other steps only check that every value is finite). A non-finite bound of an active run, before that step's update, either
    raises NonFiniteLossError naming the run (``on_nonfinite="raise"``) or freezes that run
    (``"freeze"``: no more updates, ``engine.active[r]`` False) while the others go on.
    """
    if on_nonfinite not in ("raise", "freeze"):
        raise ValueError(f"on_nonfinite must be raise or freeze, got {on_nonfinite!r}")
    R = engine.runs
    if not (len(x_train) == len(generators) == R):
        raise ValueError(f"{R} stacked runs need {R} training sets and {R} generators")
    first = x_train[0]
    x_batch = torch.empty((R, batch_size, first.shape[1]), device=first.device, dtype=first.dtype)
    eps = torch.empty((R, batch_size, engine.config.z_dim), device=first.device, dtype=first.dtype)
    last = torch.full((R,), math.nan)
    for step in range(n_steps):
        for r in range(R):
            indices = torch.randint(x_train[r].shape[0], (batch_size,), device=first.device,
                                    generator=generators[r])
            torch.index_select(x_train[r], 0, indices, out=x_batch[r])
            if binarize:
                x_batch[r] = torch.bernoulli(x_batch[r], generator=generators[r])
            torch.randn((batch_size, engine.config.z_dim), device=first.device, dtype=first.dtype,
                        generator=generators[r], out=eps[r])
        last = engine.forward_backward(x_batch, eps, with_bound=step == n_steps - 1)
        for r, value in enumerate(last.tolist()):
            if engine.active[r] and not math.isfinite(value):
                if on_nonfinite == "raise":
                    check_finite(value, f"the minibatch lower bound of stacked run {r}", engine.steps_taken)
                engine.active[r] = False
        engine.apply_adagrad()
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
    recent objective log p(x, z) on the training minibatches. A candidate that diverges (NaN/inf)
    scores -inf. Candidates of a ``stackable`` algorithm (fused AEVB) train at once, stacked
    (the same numbers, in less time). Returns the best step size and every score.
    """
    torch.manual_seed(seed)
    first = build_algorithm(float(candidates[0]))
    if first.stackable and len(candidates) > 1:
        scores = _select_step_size_stacked(first, build_algorithm, candidates, x_train, x_eval, trial_steps,
                                           batch_size, seed, binarize)
    else:
        scores = {}
        for index, step_size in enumerate(candidates):
            if index:
                torch.manual_seed(seed)
            algorithm = build_algorithm(float(step_size)) if index else first
            try:
                algorithm.train_steps(x_train, trial_steps, batch_size, binarize)
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


def _select_step_size_stacked(first, build_algorithm, candidates, x_train, x_eval, trial_steps, batch_size,
                              seed, binarize):
    """The trial of :func:`select_step_size` for fused AEVB: every candidate from the same seed
    (same initialization, same minibatches, same eps), trained at once by one StackedAEVB -- the
    same numbers as the candidates trained one after another (tests/test_fused_aevb.py), in a
    fraction of the time for small models. A candidate whose bound turns non-finite is frozen
    (score -inf) while the others go on. ``first`` is the first candidate, built just after
    seeding."""
    algorithms, generators = [first], [generator_like_global(x_train.device)]
    for step_size in candidates[1:]:
        torch.manual_seed(seed)
        algorithms.append(build_algorithm(float(step_size)))
        generators.append(generator_like_global(x_train.device))
    engine = StackedAEVB([a.model for a in algorithms], [a.n_train for a in algorithms],
                         [a.optimizer_config for a in algorithms])
    train_stacked_steps(engine, [x_train] * len(algorithms), generators, trial_steps, batch_size,
                        binarize, on_nonfinite="freeze")
    scores = {}
    for step_size, algorithm, active in zip(candidates, algorithms, engine.active):
        score = algorithm.trial_score(x_eval) if active else -math.inf
        scores[float(step_size)] = score if math.isfinite(score) else -math.inf
    return scores


def generator_like_global(device: torch.device) -> torch.Generator:
    """A torch.Generator on ``device`` in the current state of torch's global generator there."""
    generator = torch.Generator(device=device)
    if device.type == "cuda":
        generator.set_state(torch.cuda.get_rng_state(device))
    else:
        generator.set_state(torch.get_rng_state())
    return generator
