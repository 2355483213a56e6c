"""List scheduling of a stage graph (a DAG of tasks) on W identical workers and one coordinator.

Its one job: given stages with their seconds, their dependencies and whether a worker or the
coordinator runs them, the critical path (the longest chain of dependent task times: the wall time
with unlimited workers) and the schedule on W workers, where whenever a machine is free the ready
task of its kind with the longest remaining chain starts on it (for independent tasks:
longest-processing-time-first). Every worker task pays a fixed overhead. Nothing here knows what a
stage does; :mod:`pipeline.cluster.plan` builds vaebench's stage graph and schedules it here.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One task of the graph (in the cluster plan, one DVC stage): its predicted seconds on its
    machine (without the task overhead), the stages it needs, and whether a worker (True) or the
    coordinator runs it. ``seeds`` is carried for the listing only; the scheduler ignores it."""

    name: str
    seconds: float
    after: tuple[str, ...] = ()
    on_worker: bool = True
    seeds: int = 1


@dataclass(frozen=True)
class ScheduledStage:
    """A stage as the schedule ran it: on which machine, from when to when (seconds from the start)."""

    name: str
    machine: str  # "worker <i>" or "coordinator"
    start: float
    end: float


@dataclass(frozen=True)
class CriticalPath:
    """The longest chain of dependent stages: the wall time with unlimited workers."""

    stages: tuple[str, ...]
    seconds: float

    def named(self) -> str:
        """The chain as ``a -> b -> c``."""
        return " -> ".join(self.stages)


@dataclass(frozen=True)
class Schedule:
    """Every stage scheduled on ``workers`` workers and the coordinator, by start time."""

    workers: int
    stages: tuple[ScheduledStage, ...]
    worker_busy_seconds: float  # every worker task's time, overheads included

    @property
    def wall_seconds(self) -> float:
        return max((s.end for s in self.stages), default=0.0)

    @property
    def utilisation(self) -> float:
        """Worker-seconds busy over worker-seconds held for the whole wall time."""
        return self.worker_busy_seconds / (self.workers * self.wall_seconds) if self.wall_seconds else 0.0


def task_seconds(stage: Stage, overhead: float) -> float:
    """A stage's time as a task: a worker task pays the clone + pull + push overhead."""
    return stage.seconds + (overhead if stage.on_worker else 0.0)


def check_graph(stages: list[Stage]) -> dict[str, Stage]:
    """The stages by name; unknown dependencies, duplicate names and cycles are errors."""
    by_name: dict[str, Stage] = {}
    for stage in stages:
        if stage.name in by_name:
            raise ValueError(f"stage {stage.name!r} appears twice in the stage graph")
        if stage.seconds < 0 or not math.isfinite(stage.seconds):
            raise ValueError(f"stage {stage.name!r} has a cost of {stage.seconds} s: costs must be finite and >= 0")
        by_name[stage.name] = stage
    for stage in stages:
        missing = [d for d in stage.after if d not in by_name]
        if missing:
            raise ValueError(f"stage {stage.name!r} needs {', '.join(missing)}, which is not in the stage graph")
    topological_order(by_name)
    return by_name


def topological_order(by_name: dict[str, Stage]) -> list[str]:
    """Stage names with every stage after the stages it needs; a cycle is an error naming it."""
    order, state = [], {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError(f"the stage graph has a cycle: {' -> '.join(path + (name,))}")
        state[name] = "visiting"
        for dependency in by_name[name].after:
            visit(dependency, path + (name,))
        state[name] = "done"
        order.append(name)

    for name in sorted(by_name):
        visit(name, ())
    return order


def dependents(by_name: dict[str, Stage]) -> dict[str, list[str]]:
    """Per stage, the stages that need it."""
    following: dict[str, list[str]] = {name: [] for name in by_name}
    for stage in by_name.values():
        for dependency in stage.after:
            following[dependency].append(stage.name)
    return following


def remaining_chain_seconds(stages: list[Stage], overhead: float) -> dict[str, float]:
    """Per stage, its own task time plus the longest chain of stages after it (its bottom level)."""
    by_name = check_graph(stages)
    following = dependents(by_name)
    chain: dict[str, float] = {}
    for name in reversed(topological_order(by_name)):
        chain[name] = task_seconds(by_name[name], overhead) + max((chain[n] for n in following[name]), default=0.0)
    return chain


def critical_path(stages: list[Stage], overhead: float) -> CriticalPath:
    """The longest chain of dependent task times (overheads included), and its stages in order."""
    by_name = check_graph(stages)
    finish: dict[str, float] = {}
    previous: dict[str, str | None] = {}
    for name in topological_order(by_name):
        stage = by_name[name]
        before = max(stage.after, key=lambda d: (finish[d], d), default=None)
        previous[name] = before
        finish[name] = (finish[before] if before else 0.0) + task_seconds(stage, overhead)
    if not finish:
        return CriticalPath((), 0.0)
    last = max(finish, key=lambda n: (finish[n], n))
    chain = []
    node: str | None = last
    while node is not None:
        chain.append(node)
        node = previous[node]
    return CriticalPath(tuple(reversed(chain)), finish[last])


def list_schedule(stages: list[Stage], workers: int, overhead: float) -> Schedule:
    """Simulate the stages on ``workers`` identical workers and one coordinator: whenever a machine
    is free, the ready task of its kind with the longest remaining chain starts on it (ties: name)."""
    if workers < 1:
        raise ValueError(f"the number of workers must be at least 1, got {workers}")
    by_name = check_graph(stages)
    following = dependents(by_name)
    priority = remaining_chain_seconds(stages, overhead)
    waiting_on = {name: len(stage.after) for name, stage in by_name.items()}
    ready = {name for name, count in waiting_on.items() if count == 0}
    free_workers = list(range(1, workers + 1))
    coordinator_free = True
    running: list[tuple[float, str, str]] = []  # (end, name, machine)
    done: list[ScheduledStage] = []
    now = 0.0
    while ready or running:
        for name in sorted(ready, key=lambda n: (-priority[n], n)):
            stage = by_name[name]
            if stage.on_worker and free_workers:
                machine = f"worker {free_workers.pop(0)}"
            elif not stage.on_worker and coordinator_free:
                machine, coordinator_free = "coordinator", False
            else:
                continue
            ready.discard(name)
            end = now + task_seconds(stage, overhead)
            heapq.heappush(running, (end, name, machine))
            done.append(ScheduledStage(name, machine, now, end))
        now, name, machine = heapq.heappop(running)
        finished = [(name, machine)]
        while running and running[0][0] <= now:
            _, other, other_machine = heapq.heappop(running)
            finished.append((other, other_machine))
        for name, machine in finished:
            if machine == "coordinator":
                coordinator_free = True
            else:
                free_workers.append(int(machine.split()[1]))
                free_workers.sort()
            for successor in following[name]:
                waiting_on[successor] -= 1
                if waiting_on[successor] == 0:
                    ready.add(successor)
    busy = sum(task_seconds(by_name[s.name], overhead) for s in done if by_name[s.name].on_worker)
    return Schedule(workers, tuple(sorted(done, key=lambda s: (s.start, s.name))), busy)
