"""When a run evaluates and checkpoints, and which runs stack: pure functions of the configuration
(the cluster plan and the benchmark use them without training anything)."""
from __future__ import annotations

from pipeline.runs.config import RunConfig

PROGRESS_CHUNK_STEPS = 200  # updates between two looks at the machine (thread governor, progress bar)


def evaluation_schedule(first: int, total: int, per_decade: int, batch_size: int) -> list[int]:
    """Log-spaced sample counts (multiples of M) from ``first`` up to ``total``, and ``total``."""
    points = set()
    k = 0
    while (count := first * 10 ** (k / per_decade)) < total:
        points.add(max(batch_size, int(round(count / batch_size)) * batch_size))
        k += 1
    points.add(total)
    return sorted(points)


def checkpoint_schedule(every: int, total: int, batch_size: int) -> list[int]:
    """Evenly spaced sample counts (multiples of M) at which checkpoints are written, and the end."""
    step = max(batch_size, every // batch_size * batch_size)
    return sorted(set(range(step, total, step)) | {total})


def stackable(config: RunConfig) -> bool:
    """Whether runs of ``config`` train on the fused AEVB update, which stacks (vae_core.aevb)."""
    return config.algorithm == "aevb" and config.estimator == "B" and config.samples_per_datapoint == 1
