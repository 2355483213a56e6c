"""vaebench pipeline: everything that touches files, params and the command line.

Importing it (the ``vaebench`` command does, before torch) sets ``MKL_CBWR=AUTO,STRICT`` unless the
environment already sets it: MKL's strict conditional-numerical-reproducibility mode, in which a
matrix product's result does not depend on how many threads compute it. Every stage adapts its
thread count to the cores other processes leave free (:mod:`pipeline.plumbing.cpu_threads`), and this is
what keeps the numbers of a run the same whatever the load on the machine.
"""
import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
