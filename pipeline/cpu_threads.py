"""How many CPU threads a stage uses: the cores that other processes leave free, re-checked as it runs.

A training step is a chain of short parallel regions (a matrix product, elementwise work, another
product); every region ends at a barrier where each of torch's threads must arrive. With one
thread per core on an idle machine that is the fastest way to run. With another busy process on
the same cores (a second stage, a browser, a CI neighbour, or a host that takes a core of a
virtual machine) a thread is descheduled for a whole time slice and every barrier waits for it:
on a 2-core machine the Figure 2 MNIST update fell to about a quarter of its quiet rate with two
threads and kept about three quarters with one (README, "Speed").

So :class:`ThreadGovernor` sets torch's thread count to the cores that other processes leave free:
from ``/proc/stat`` it takes the busy time of all CPUs (steal time included: a host's use of a
virtual core counts as busy) since its last look, subtracts this process's own CPU time, and
rounds the cores left; at least one, at most the count it started with (one per core, or
``OMP_NUM_THREADS``). The training loop asks it again every few hundred updates, so a run adapts
when a competitor starts or stops. ``VAEBENCH_THREADS=N`` fixes the count instead; on a system
without ``/proc/stat`` the count is left as torch set it.

This changes no number: ``pipeline/__init__.py`` puts MKL's matrix products in strict
conditional-numerical-reproducibility mode (``MKL_CBWR=AUTO,STRICT``), in which their results do not
depend on the thread count, and the training step's other operations are elementwise or split
across threads by rows, so a run gives the same numbers with one thread or two
(tests/test_faults.py checks it).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

THREADS_ENV = "VAEBENCH_THREADS"
PROC_STAT = Path("/proc/stat")
# Of /proc/stat's cpu line (user nice system idle iowait irq softirq steal ...): the busy fields.
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def _cpu_busy_seconds() -> tuple[float, int] | None:
    """(seconds all CPUs spent busy since boot, number of CPUs), or None where unknown."""
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    values = [int(v) for v in lines[0].split()[1:]]
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return sum(values[i] for i in BUSY_FIELDS if i < len(values)) / os.sysconf("SC_CLK_TCK"), cpus


class ThreadGovernor:
    """Keeps torch's thread count at the cores other processes leave free (module docstring)."""

    def __init__(self, max_threads: int | None = None):
        fixed = os.environ.get(THREADS_ENV)
        if fixed:
            if not fixed.isdigit() or int(fixed) < 1:
                raise ValueError(f"{THREADS_ENV} must be a positive whole number of threads, got {fixed!r}")
            torch.set_num_threads(int(fixed))
        self.max_threads = max_threads or torch.get_num_threads()
        self.adaptive = not fixed and _cpu_busy_seconds() is not None
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        busy = _cpu_busy_seconds()
        return None if busy is None else (time.monotonic(), busy[0], time.process_time())

    def others_busy_cores(self) -> float | None:
        """Cores other processes kept busy since the last call (None where unknown)."""
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None or now[0] - last[0] < 0.05:
            return None
        wall = now[0] - last[0]
        return max(0.0, (now[1] - last[1]) - (now[2] - last[2])) / wall

    def update(self) -> int:
        """Set and return the thread count for the work until the next call."""
        if self.adaptive:
            others = self.others_busy_cores()
            if others is not None:
                threads = max(1, min(self.max_threads, round(self.max_threads - others)))
                if threads != torch.get_num_threads():
                    torch.set_num_threads(threads)
        return torch.get_num_threads()
