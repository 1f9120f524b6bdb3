"""What the machine did that is no code's doing: the time a hypervisor gave this machine's
CPUs to other machines (steal, proc(5)). On a VM it comes in bursts of tens of milliseconds
under load, during which no thread of ours runs, whatever its priority; a test that counts
blocks on time does not count that time as time the thread had."""

from __future__ import annotations

import os

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def steal_s(cpus: set[int] | None = None) -> float:
    """Seconds of steal so far, summed over ``cpus`` (None: all): the 8th value of each
    cpuN line of /proc/stat, in ticks."""
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                if cpus is None or int(name[3:]) in cpus:
                    total += int(values[7])
    return total * TICK_S


class Stolen:
    """Steal over a ``with`` block: :attr:`upper_s` is at most the steal there was, counting
    a tick per CPU more than the difference (/proc/stat counts whole ticks)."""

    def __init__(self, cpus: set[int] | None = None):
        self.cpus = cpus
        self.upper_s = 0.0

    def __enter__(self) -> Stolen:
        self._before = steal_s(self.cpus)
        return self

    def __exit__(self, *exc) -> None:
        n = len(self.cpus) if self.cpus is not None else os.cpu_count() or 1
        self.upper_s = steal_s(self.cpus) - self._before + n * TICK_S
