"""Where the audio thread runs, and how to prove what happened to it.

The audio callback is compiled code that never takes the GIL (:mod:`studiod.daemon.rtcore`),
so what can still make it late is the operating system: another thread of higher priority
on its CPU, a page fault, a wait. This module holds the policy the daemon applies and the
counters the tests and the soak benchmark read.

* :func:`set_fifo_priority`: SCHED_FIFO for the calling thread (the virtual device's), where
  permitted. JACK and PortAudio set their own callback threads' priority.
* :class:`Placement`: once the audio thread is known (its first block writes its id), pin it
  to one CPU and every other thread of the daemon to the others, where there are two or
  more. The daemon's control threads (OSC, MIDI, HTTP, the control loop, numba's design
  work) then never compete with the callback for its CPU, and a thread created later
  inherits the others' CPUs from its creator. Threads of other processes (jackd's) keep
  the kernel's placement: a higher-priority jackd thread that wakes goes to the CPU running
  the least important work, which is never the audio thread's.
* :func:`lock_memory`: ``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)``: pages once
  touched are never paged out, so the callback cannot take a major fault on a busy machine
  (``MCL_ONFAULT`` locks without populating, so start-up costs nothing). It needs
  CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK (the unit's ``LimitMEMLOCK=infinity``).
* :func:`populate`: maps every page of an array the callback will use before it is handed
  over, so that its first touch on the audio thread is not a page fault. A fresh NumPy array
  of more than a few pages is untouched memory (``np.zeros`` takes zeroed pages from the
  kernel lazily), and which arrays are fresh depends on what the process allocated before.
* :func:`thread_counters`: a thread's own page faults, context switches and CPU from
  ``/proc/self/task/TID/`` (proc(5)).
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass

log = logging.getLogger("studiod.realtime")

# <sys/mman.h>, Linux
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
MADV_POPULATE_WRITE = 23  # Linux 5.14
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def set_fifo_priority(priority: int, what: str) -> bool:
    """SCHED_FIFO at ``priority`` for the calling thread; False (logged) when not permitted
    or ``priority`` is 0."""
    if priority <= 0 or not hasattr(os, "sched_setscheduler"):
        return False
    try:  # Linux: pid 0 is the calling thread
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except OSError as exc:
        log.info("%s: no realtime priority (%s); running unprivileged", what, exc)
        return False


def lock_memory() -> bool:
    """Lock the daemon's pages in memory as they are touched (see the module docstring);
    False (logged) where the limits do not allow it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0:
        return True
    err = ctypes.get_errno()
    log.info("memory not locked (mlockall: %s); raise LimitMEMLOCK to lock it",
             os.strerror(err))  # fmt: skip
    return False


def _libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    for name in ("madvise", "mlock"):
        if not hasattr(libc, name):
            return None
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    libc.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    return libc


_LIBC = _libc()


def populate(array) -> bool:
    """Map every page of ``array`` (a NumPy array) writable now, from the calling control
    thread, without changing its contents: ``madvise(MADV_POPULATE_WRITE)``, or on a kernel
    before 5.14 ``mlock``, which populates a private writable range the same way (and keeps
    it, as :func:`lock_memory` would). Safe while another thread uses the array. False where
    neither is available or permitted: the first touch then faults as before."""
    if array.nbytes == 0:
        return True
    if _LIBC is None:
        return False
    start = array.ctypes.data & ~(PAGE_BYTES - 1)
    length = array.ctypes.data + array.nbytes - start
    return _LIBC.madvise(start, length, MADV_POPULATE_WRITE) == 0 or _LIBC.mlock(start, length) == 0


@dataclass(frozen=True)
class ThreadCounters:
    """A thread's own counters (proc(5): /proc/PID/task/TID/stat and status)."""

    minor_faults: int
    major_faults: int
    voluntary_switches: int
    involuntary_switches: int
    cpu: int  # the CPU it last ran on
    policy: int  # os.SCHED_OTHER, os.SCHED_FIFO…
    rt_priority: int

    def __sub__(self, before: ThreadCounters) -> ThreadCounters:
        """The counts between two readings (cpu, policy and priority of the later one)."""
        return ThreadCounters(
            self.minor_faults - before.minor_faults,
            self.major_faults - before.major_faults,
            self.voluntary_switches - before.voluntary_switches,
            self.involuntary_switches - before.involuntary_switches,
            self.cpu, self.policy, self.rt_priority,
        )  # fmt: skip


def thread_counters(tid: int, pid: int | str = "self") -> ThreadCounters:
    """The counters of thread ``tid`` of process ``pid`` (OSError when it has gone)."""
    base = f"/proc/{pid}/task/{tid}"
    with open(f"{base}/stat", "rb") as f:
        stat = f.read()
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    fields = stat[stat.rindex(b")") + 2 :].split()
    switches = {}
    with open(f"{base}/status", "rb") as f:
        for line in f:
            key, _, value = line.partition(b":")
            if key in (b"voluntary_ctxt_switches", b"nonvoluntary_ctxt_switches"):
                switches[key] = int(value)
    # fields[k] is field k + 3 of proc(5): minflt 10, majflt 12, processor 39,
    # rt_priority 40, policy 41
    return ThreadCounters(
        minor_faults=int(fields[7]),
        major_faults=int(fields[9]),
        voluntary_switches=switches[b"voluntary_ctxt_switches"],
        involuntary_switches=switches[b"nonvoluntary_ctxt_switches"],
        cpu=int(fields[36]),
        policy=int(fields[38]),
        rt_priority=int(fields[37]),
    )


class Placement:
    """Keeps the audio thread alone on its CPU (see the module docstring). :meth:`follow`
    is called from the control loop; it acts when the audio thread changes (a device opened
    anew) and costs one comparison otherwise."""

    def __init__(self, cpus: set[int] | None = None):
        self.cpus = set(cpus if cpus is not None else os.sched_getaffinity(0))
        self.audio_tid = 0
        self.audio_cpu: int | None = None

    def follow(self, audio_tid: int) -> None:
        if audio_tid == self.audio_tid or audio_tid <= 0:
            return
        self.audio_tid = audio_tid
        log.info("audio thread %d%s", audio_tid, self._pin(audio_tid))

    def release(self) -> None:
        """Every thread of the process back on all the CPUs it had (the daemon stopped;
        an embedding process, a test or a benchmark, goes on)."""
        if self.audio_cpu is None:
            return
        self.audio_cpu = None
        self.audio_tid = 0
        self._set_all(self.cpus)

    @staticmethod
    def _set_all(cpus: set[int], but: int = 0) -> None:
        for name in os.listdir("/proc/self/task"):
            if int(name) != but:
                try:
                    os.sched_setaffinity(int(name), cpus)
                except OSError:
                    pass  # a thread that has just ended

    def _pin(self, audio_tid: int) -> str:
        """Pin the threads; returns what was done, for the log."""
        self.audio_cpu = None
        if len(self.cpus) < 2:
            return ""
        # the last CPU: the kernel's interrupts and housekeeping favour CPU 0
        cpu = max(self.cpus)
        others = self.cpus - {cpu}
        try:
            os.sched_setaffinity(audio_tid, {cpu})
        except OSError as exc:
            return f" (not pinned: {exc})"
        self.audio_cpu = cpu
        self._set_all(others, but=audio_tid)
        return f" on CPU {cpu}, the daemon's other threads on {','.join(map(str, sorted(others)))}"
