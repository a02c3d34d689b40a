"""`FairShare`: torch's CPU threads follow the cores that other processes leave idle.

On a CPU, torch's OpenMP threads spin while they wait for each other. Beside another job that
does the same, every small operator then waits for a thread the other job holds: measured on a
2-core machine, two training runs side by side each ran 5x slower than alone, where a fair
share is 2x. A run that gives up the cores others use avoids that, and takes them back when
they are idle again. The measure is the machine's busy time (`/proc/stat`) less this process's
own, over the last few seconds of training.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from onnxmtl.runtime import usable_cores

CHECK_SECONDS = 2.0  # how often the share is re-measured
SLACK = 0.3  # cores of others' use that still count as idle (a shell, a browser tab)
PROC_STAT = Path("/proc/stat")


def _busy_seconds(cores: int) -> float | None:
    """CPU seconds the machine has spent busy since boot; None where `/proc/stat` cannot be
    read (not Linux) or counts other CPUs than the `cores` this process may use (a container
    that sees its host's)."""
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    fields = lines[0].split() if lines else []
    cpus = sum(line.startswith("cpu") and line[3:4].isdigit() for line in lines)
    if not fields or fields[0] != "cpu" or cpus != cores:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class FairShare:
    """Between training steps (`step`), every CHECK_SECONDS, set torch's threads to the cores
    other processes left idle over that time, at least 1 and at most the threads torch had
    when the share began (what the caller chose). Does nothing where the machine's busy time
    cannot be read."""

    def __init__(self, every: float = CHECK_SECONDS) -> None:
        self.every = every
        self.most = torch.get_num_threads()
        self.cores = usable_cores()
        self._since: tuple[float, float, float] | None = None
        self.changes: list[int] = []  # the thread counts it set, in order

    def step(self) -> None:
        """Re-measure the share if CHECK_SECONDS have passed since the last measure (the
        machine's busy time is read only then)."""
        wall_now = time.monotonic()
        if self._since is not None and wall_now - self._since[0] < self.every:
            return
        busy = _busy_seconds(self.cores)
        if busy is None:
            return
        now = (wall_now, busy, time.process_time())
        if self._since is None:
            self._since = now
            return
        wall = now[0] - self._since[0]
        others = max(0.0, (now[1] - self._since[1]) - (now[2] - self._since[2])) / wall
        self._since = now
        threads = max(1, min(self.most, int(self.cores - others + SLACK)))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            self.changes.append(threads)

    def close(self) -> None:
        """Give torch back the threads it had when the share began."""
        if torch.get_num_threads() != self.most:
            torch.set_num_threads(self.most)
