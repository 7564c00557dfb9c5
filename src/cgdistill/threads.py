"""How many threads CPU work runs on: the cores this process may use, less those others keep busy.

torch's CPU kernels run on an OpenMP pool of one thread per core whose threads spin while they wait
for each other. Two such processes on one machine take turns at every barrier, and each runs about
ten times slower than alone (issue 21). So a command takes the cores that are free when it starts
(the CPUs it may run on and its cgroup quota, less the busy time of everything else on those CPUs)
and, where it runs a loop (training steps, translation batches), checks again every few seconds:
another job starting or ending changes the count at the next check. ``--threads N`` or
``OMP_NUM_THREADS`` fixes the count instead.

No torch at import: the CLI takes the first load sample here before the library (and torch) loads,
so the first decision has a window of a few seconds without waiting for one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ENV = "OMP_NUM_THREADS"
# Disables adapting, for measuring the old behaviour (one thread per core, whatever the load).
OFF_ENV = "CGDISTILL_ADAPT_THREADS"
CHECK_EVERY_S = 2.0  # a job that starts beside us waits at most this long for us to make room
MIN_WINDOW_S = 0.25  # /proc/stat counts in 10 ms ticks: shorter windows are too coarse
PROC_STAT = Path("/proc/stat")
CGROUP_ROOT = Path("/sys/fs/cgroup")


# -- What this process may use ---------------------------------------------------------------


def parse_cpu_max(text: str) -> float | None:
    """Cores allowed by a cgroup v2 ``cpu.max`` (``"150000 100000"`` is 1.5; ``"max ..."`` is no limit)."""
    quota, _, period = text.strip().partition(" ")
    if quota == "max" or not period:
        return None
    return int(quota) / int(period)


def parse_cfs(quota_us: str, period_us: str) -> float | None:
    """Cores allowed by cgroup v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 is no limit)."""
    quota = int(quota_us)
    return None if quota < 0 else quota / int(period_us)


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, own: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest CPU quota on this process's cgroup and its ancestors (v2, else v1), or None."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            folders, read = [root], lambda d: parse_cpu_max((d / "cpu.max").read_text())
        elif "cpu" in controllers.split(","):
            folders = [root / name for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu")]
            read = lambda d: parse_cfs((d / "cpu.cfs_quota_us").read_text(), (d / "cpu.cfs_period_us").read_text())  # noqa: E731
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for base in folders:
            for depth in range(len(parts), -1, -1):  # a limit on any ancestor applies too
                try:
                    limit = read(base.joinpath(*parts[:depth]))
                except (OSError, ValueError):
                    continue
                if limit is not None:
                    limits.append(limit)
    return min(limits) if limits else None


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity; every CPU where the OS cannot say)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def usable_cores(cpus: int, limit: float | None) -> int:
    """Threads that can run at once: the CPUs allowed, fewer under a quota (1.5 cores rounds to 2)."""
    if limit is None:
        return max(1, cpus)
    return max(1, min(cpus, math.floor(limit + 0.5)))


def choose_threads(cpus: int, limit: float | None, others_busy: float) -> int:
    """The thread count for CPU work: the cores free of other processes' load, rounded, within [1, usable].

    ``others_busy`` is how many of our CPUs other processes kept busy (2.0: two whole cores). A quota
    caps what we may take, whatever is free.
    """
    free = cpus - max(0.0, others_busy)
    if limit is not None:
        free = min(free, limit)
    return max(1, min(usable_cores(cpus, limit), math.floor(free + 0.5)))


# -- The load others put on them -------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """Busy CPU seconds on our CPUs (all processes), our own CPU seconds, and when (monotonic)."""

    busy: float
    own: float
    at: float


def read_busy(cpus: set[int], stat: Path = PROC_STAT) -> float | None:
    """Seconds the CPUs ``cpus`` have been busy since boot (user, nice, system, irq, softirq, steal:
    everything but idle and I/O wait), from ``/proc/stat``; None where it cannot be read."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        values = [int(v) for v in fields[:8]] + [0] * (8 - len(fields[:8]))
        user, nice, system, _idle, _iowait, irq, softirq, steal = values
        ticks += user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK")


def others_busy(before: Sample, after: Sample) -> float:
    """Cores that other processes kept busy between two samples: all busy time less our own."""
    elapsed = after.at - before.at
    if elapsed <= 0:
        return 0.0
    return max(0.0, (after.busy - before.busy) - (after.own - before.own)) / elapsed


# -- The policy of one process ---------------------------------------------------------------


class Governor:
    """Chooses and re-chooses this process's thread count (see the module docstring).

    Fewer threads take effect at once (the fight costs ~10x); more only when two checks in a row
    agree, so a neighbour's pause for a checkpoint does not make us grab its cores and hand them back.
    """

    def __init__(
        self,
        *,
        fixed: int | None,
        follow_load: bool,
        cpus: set[int],
        limit: float | None,
        set_threads: Callable[[int], None],
        sample: Callable[[], Sample | None],
        first: Sample | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.fixed, self.follow_load, self.cpus, self.limit = fixed, follow_load, cpus, limit
        self._set, self._sample, self._sleep = set_threads, sample, sleep
        self._last = first if first is not None else sample()
        self._wants_more = False
        self.threads = fixed if fixed is not None else usable_cores(len(cpus), limit)

    @property
    def adapting(self) -> bool:
        return self.fixed is None and self.follow_load and self._last is not None

    def start(self) -> int:
        """Set the first count (waiting out the rest of a short first window); returns it."""
        if self.adapting:
            waited = self._sample()
            if waited is not None and waited.at - self._last.at < MIN_WINDOW_S:
                self._sleep(MIN_WINDOW_S - (waited.at - self._last.at))
            self._decide(force=True)
        self._set(self.threads)
        return self.threads

    def tick(self, now: float) -> None:
        """Re-decide if the last check is ``CHECK_EVERY_S`` old (``now`` is ``time.monotonic()``)."""
        if self.adapting and now - self._last.at >= CHECK_EVERY_S:
            before = self.threads
            self._decide(force=False)
            if self.threads != before:
                self._set(self.threads)

    def _decide(self, *, force: bool) -> None:
        current = self._sample()
        if current is None:
            return
        wanted = choose_threads(len(self.cpus), self.limit, others_busy(self._last, current))
        self._last = current
        if force or wanted < self.threads or (wanted > self.threads and self._wants_more):
            self.threads = wanted
        self._wants_more = wanted > self.threads


def _sampler(cpus: set[int]) -> Callable[[], Sample | None]:
    def sample() -> Sample | None:
        busy = read_busy(cpus)
        return None if busy is None else Sample(busy, time.process_time(), time.monotonic())

    return sample


def _torch_set_threads(count: int) -> None:
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


_state: dict[str, object] = {"first": None, "governor": None}


def _last_sample() -> Sample | None:
    """Where the next decision's window starts: the CLI's first sample, else the last check."""
    previous = _state["governor"]
    return _state["first"] or (previous._last if isinstance(previous, Governor) else None)


def begin() -> None:
    """Take the first load sample (the CLI does for each command, before torch loads), so that the
    first decision has a window of seconds without waiting for one."""
    _state["first"] = _sampler(allowed_cpus())()


def configure(threads: int | None = None, *, follow_load: bool = True) -> int:
    """Set this process's CPU thread count for the work that follows; returns it.

    ``threads`` fixes it (``--threads``), as does ``OMP_NUM_THREADS`` in the environment (torch has
    read it; it is left alone). Otherwise: the free cores now, and again at each :func:`tick`.
    ``follow_load=False`` takes every usable core and keeps it (a run that must repeat bit for bit:
    float sums change in the last bit with the thread count).
    """
    cpus = allowed_cpus()
    if threads is None and os.environ.get(ENV):
        _state["governor"] = None
        import torch

        return torch.get_num_threads()
    sample = _sampler(cpus)
    adapt = follow_load and os.environ.get(OFF_ENV, "1") != "0"
    governor = Governor(
        fixed=threads,
        follow_load=adapt,
        cpus=cpus,
        limit=cgroup_cpu_limit(),
        set_threads=_torch_set_threads,
        sample=sample,
        first=_last_sample() if adapt else None,
    )
    _state["first"] = None
    _state["governor"] = governor
    return governor.start()


def tick() -> None:
    """Cheap (a clock read) except every ``CHECK_EVERY_S``, when it reads ``/proc/stat`` and may change
    the count. Call it between units of work on the thread that runs torch (the count is per thread)."""
    governor = _state["governor"]
    if governor is not None:
        governor.tick(time.monotonic())


def adapting() -> bool:
    """Whether this process re-chooses its thread count as the load changes."""
    governor = _state["governor"]
    return isinstance(governor, Governor) and governor.adapting
