"""The train stage: trains a configuration's seeds into run directories, stacked or side by side,
checkpointed and resumable.

Modules:

- :mod:`run_state`: A run being trained (:class:`RunState`) and what it writes: its random-number state, ...
- :mod:`schedule`: When a run evaluates and checkpoints, and which runs stack: pure functions of the ...
- :mod:`train`: The training stage: one run directory per configuration (:mod:`pipeline.runs.directory`)
"""

__all__ = ["run_state", "schedule", "train"]
