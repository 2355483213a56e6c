"""vaebench pipeline: everything that touches files, params and the command line.

Importing it (the ``vaebench`` command does, before torch) sets ``OMP_WAIT_POLICY=ACTIVE`` unless
the environment already sets it. A training step is a sequence of short parallel regions (a
matrix product, then elementwise work, then another product); with the default policy OpenMP's
worker threads go to sleep in between and each region waits for them to wake. Keeping them
spinning made the fused AEVB step on the Figure 2 MNIST model about a quarter faster on this
2-core machine (`vaebench bench`). The cost is a busy core while the process is otherwise idle:
when running several stages at once (``dvc queue start --jobs N``), give each process its own
cores with ``OMP_NUM_THREADS`` (then no thread spins on another's core), or set
``OMP_WAIT_POLICY=PASSIVE``.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")
