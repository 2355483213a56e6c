"""How many CPU threads a stage uses: a fixed count by default; optionally the cores that other
processes leave free, re-checked as it runs.

**Fixed (the default).** A run keeps one thread count from start to end: torch's default (one per
core, or ``OMP_NUM_THREADS``), ``VAEBENCH_THREADS=N``, or the share of the cores its process gets
when several seeds train side by side (:mod:`pipeline.plumbing.processes`). The run records it in
config.json, final.json and its checkpoints, and a resumed run takes the recorded count again.
That is what keeps a run bit-for-bit reproducible: MKL's matrix products are in strict
conditional-numerical-reproducibility mode (``MKL_CBWR=AUTO,STRICT``, ``pipeline/__init__.py``)
and give the same result on one thread or two, but torch's own elementwise kernels split a large
tensor into one chunk per thread, and each chunk's last few elements take a scalar code path that
rounds differently from the vectorized one. For Figure 3's small model (100 hidden units) no
buffer is large enough to be split, and the numbers do not depend on the count; for Figure 2's
(500 hidden units: 100 x 500 hidden activations) they do, in the last bits, which training then
amplifies (measured once, by a one-off script: AEVB Nz = 200 differs by 3e-3 in a weight after 150
updates on one thread against two; the guard that a resumed run keeps its recorded count is
tests/test_seeds.py::test_a_resumed_run_keeps_its_thread_count).

**Adaptive (``VAEBENCH_THREADS=adaptive``).** A training step is a chain of short parallel
regions, each ending at a barrier where each of torch's threads must arrive. With another busy
process on the same cores a thread is descheduled for a whole time slice and every barrier waits
for it: on a 2-core machine the Figure 2 MNIST update fell to about a quarter of its quiet rate
with two threads and kept about three quarters with one (docs/speed.md, "Beside a busy process"). So
:class:`ThreadGovernor` can set torch's thread count to the cores that other processes leave
free: from ``/proc/stat`` it takes the busy time of all CPUs (steal time included) since its last
look, subtracts this process's own CPU time, and rounds the cores left; at least one, at most the
count it started with. The training loop asks it again every few hundred updates. Faster beside
a busy neighbour -- at the price of Figure 2's numbers depending, in their last bits, on the load.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

THREADS_ENV = "VAEBENCH_THREADS"
ADAPTIVE = "adaptive"
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


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ThreadGovernor:
    """Keeps torch's thread count at the cores other processes leave free (module docstring)."""

    def __init__(self, max_threads: int | None = None, adaptive: bool | None = None):
        setting = os.environ.get(THREADS_ENV, "")
        if setting and setting != ADAPTIVE and (not setting.isdigit() or int(setting) < 1):
            raise ValueError(f"{THREADS_ENV} must be a positive whole number of threads or {ADAPTIVE!r}, "
                             f"got {setting!r}")
        if setting.isdigit():
            torch.set_num_threads(int(setting))
        elif max_threads:
            torch.set_num_threads(max_threads)
        self.max_threads = torch.get_num_threads()
        wanted = (setting == ADAPTIVE) if adaptive is None else adaptive
        self.adaptive = wanted and not setting.isdigit() and _cpu_busy_seconds() is not None
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

    def fix(self, threads: int) -> None:
        """Use ``threads`` from now on (a resumed run's recorded count), unless the count is
        adaptive or fixed by ``VAEBENCH_THREADS``."""
        if not self.adaptive and not os.environ.get(THREADS_ENV, "").isdigit():
            torch.set_num_threads(int(threads))
            self.max_threads = int(threads)

    def update(self) -> int:
        """Set and return the thread count for the work until the next call."""
        if self.adaptive:
            others = self.others_busy_cores()
            if others is not None:
                threads = max(1, min(self.max_threads, round(self.max_threads - others)))
                if threads != torch.get_num_threads():
                    torch.set_num_threads(threads)
        return torch.get_num_threads()
