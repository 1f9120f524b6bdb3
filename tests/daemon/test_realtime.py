"""The realtime plumbing: the C structs compiled code reads, the clocks, the virtual device
in compiled code (it keeps time while the GIL is held), the audio thread's counters and its
CPU placement."""

import ctypes
import os
import resource
import threading
import time

import numba
import numpy as np
import pytest
from numba.core.registry import cpu_target

from studiod.daemon import native
from studiod.daemon.audio import AudioCore, VirtualDevice
from studiod.daemon.config import AudioConfig, load_config
from studiod.daemon.notify import Notifier
from studiod.daemon.realtime import PAGE_BYTES, Placement, populate, thread_counters
from studiod.daemon.runtime import Daemon
from studiod.dsp.engine import Engine
from studiod.dsp.session import ChannelSpec, MonitorSystemSpec, Session
from tests.machine import Stolen

FS = 48000
BLOCK = 64


def test_timespec_layout_is_the_platforms():
    """The LLVM struct the intrinsics pass to clock_gettime and clock_nanosleep has the size
    and field offsets of ctypes' own ``struct timespec`` on this platform."""
    target = cpu_target.target_context.target_data
    llvm = native.llvm_struct(native.Timespec)
    assert llvm.get_abi_size(target) == ctypes.sizeof(native.Timespec)
    for k, (name, _) in enumerate(native.Timespec._fields_):
        assert llvm.get_element_offset(target, k) == getattr(native.Timespec, name).offset


@numba.njit
def _read_clocks(fn, mono, cpu):
    return native.clock_ns(fn, mono), native.clock_ns(fn, cpu)


@numba.njit
def _sleep_until(fn, clock_id, deadline_ns):
    return native.sleep_until_ns(fn, clock_id, deadline_ns)


@numba.njit
def _call(fn):
    return native.call_int(fn)


def test_clocks_sleep_and_thread_id_through_libc_addresses():
    clock = native.libc_address("clock_gettime")
    before_ns = time.monotonic_ns()
    mono_ns, cpu_ns = _read_clocks(clock, time.CLOCK_MONOTONIC, time.CLOCK_THREAD_CPUTIME_ID)
    assert before_ns <= mono_ns <= time.monotonic_ns()
    assert 0 < cpu_ns <= time.thread_time_ns()
    # an absolute deadline: it returns at it, not a relative interval after the call
    deadline_ns = time.monotonic_ns() + 20_000_000
    sleep = native.libc_address("clock_nanosleep")
    assert _sleep_until(sleep, time.CLOCK_MONOTONIC, deadline_ns) == 0
    assert time.monotonic_ns() >= deadline_ns
    assert _sleep_until(sleep, time.CLOCK_MONOTONIC, deadline_ns - 10**9) == 0  # past: at once
    assert _call(native.libc_address("gettid")) == threading.get_native_id()


def _core() -> AudioCore:
    session = Session(samplerate=FS, channels=(ChannelSpec("tone", (1,)),),
                      systems=(MonitorSystemSpec("studio", (1, 2)),))  # fmt: skip
    core = AudioCore(Engine(session), AudioConfig(block_frames=BLOCK), 1, 2)
    core.warm_up()
    return core


def test_virtual_device_keeps_time_while_the_gil_is_held():
    """The virtual device is compiled code end to end: while this thread holds the GIL for
    half a second (usleep through ctypes.PyDLL), it runs every block on time, the signal
    passes (fader 0 dB, pan law -3.01 dB), and the audio thread is identified.

    The thread runs at the daemon's SCHED_FIFO priority, as it does in service: at the
    default policy any other process on the machine may delay a wake past the 1.3 ms period
    (measured here: up to 3 late wakes in half a second, none at SCHED_FIFO), which says
    nothing about the GIL. Pinned to one CPU, the time a hypervisor gave that CPU to
    another machine (steal, proc(5)) is not counted as time it had: on this VM under load,
    0 to 4 ticks of 10 ms in half a second, and the only lost wakes were in those windows."""
    core = _core()
    t = np.arange(FS) / FS
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[:, None]
    priority = AudioConfig().realtime_priority
    device = VirtualDevice(core, priority=priority, source=tone, tap_frames=FS // 4)
    device.start()
    try:
        deadline = time.monotonic() + 5.0
        while core.audio_thread_id == 0:
            assert time.monotonic() < deadline, "no block ran"
            time.sleep(0.01)
        assert core.audio_thread_id == device._thread.native_id
        assert device.priority_applied, "SCHED_FIFO needs root or RLIMIT_RTPRIO (LimitRTPRIO)"
        cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(device._thread.native_id, {cpu})
        time.sleep(0.05)  # on its CPU
        with Stolen({cpu}) as stolen:
            start = time.monotonic()
            before = device.blocks
            ctypes.PyDLL(None).usleep(500_000)
            elapsed_s = time.monotonic() - start
            blocks = device.blocks - before
        assert blocks >= 0.95 * (elapsed_s - stolen.upper_s) * FS / BLOCK, (blocks, stolen.upper_s)
        y = device.tail(FS // 8)[:, 0].astype(np.float64)
        assert 20 * np.log10(np.sqrt(np.mean(y**2)) / (0.5 / np.sqrt(2))) == pytest.approx(
            -3.0103, abs=0.05
        )
    finally:
        device.close()
    assert not device.active
    timing = core.timing()
    assert timing["callbacks"] == device.blocks
    assert 0 < timing["cpu_p50_us"] <= timing["p50_us"] + 1  # own CPU time within wall time


def test_tail_is_one_stretch_of_output_while_the_device_writes():
    """``tail`` copies while the device thread writes: every copy is one stretch of output,
    never a ring torn by a newer block. The source loops every 47000 frames (475 periods of
    485.1 Hz, seamlessly), so output a ring's length apart differs in phase and a torn copy
    steps by far more than the sine's own largest step."""
    core = _core()
    loop, periods = 47000, 475
    tone = 0.5 * np.sin(2 * np.pi * periods * np.arange(loop) / loop)
    priority = AudioConfig().realtime_priority
    device = VirtualDevice(core, priority=priority, source=tone.astype(np.float32)[:, None],
                           tap_frames=FS // 4)  # fmt: skip
    device.start()
    try:
        deadline = time.monotonic() + 5.0
        while device.tapped < FS // 2:
            assert time.monotonic() < deadline, "the device did not run"
            time.sleep(0.01)
        largest = 0.0
        for _ in range(300):
            y = device.tail(FS // 4)[:, 0].astype(np.float64)
            assert len(y) == FS // 4
            largest = max(largest, float(np.max(np.abs(np.diff(y)))))
    finally:
        device.close()
    # the pan law's -3.01 dB on the sine's step 2 pi f / fs, and float32 rounding
    assert largest <= 0.5 * 10 ** (-3.0103 / 20) * 2 * np.pi * periods / loop + 1e-6


def test_populate_maps_every_page_before_the_first_touch():
    """A fresh 64 MB array is untouched memory: writing one byte per page faults hundreds of
    times on the writing thread, and not once after ``populate`` (what every array handed to
    the audio callback goes through)."""

    def faults_of_first_touch(populated: bool) -> int:
        array = np.zeros(64 << 20, np.uint8)
        if populated:
            assert populate(array)
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        array[::PAGE_BYTES] = 1
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    assert faults_of_first_touch(False) >= 32  # 2 MB transparent huge pages at the fewest
    assert faults_of_first_touch(True) == 0
    assert populate(np.zeros(0))


def test_thread_counters_read_procfs():
    tid = threading.get_native_id()
    before = thread_counters(tid)
    assert before.policy == os.SCHED_OTHER and before.rt_priority == 0
    assert before.cpu in os.sched_getaffinity(0)
    time.sleep(0.01)  # one voluntary switch at least
    np.ones(1 << 22).sum()  # 32 MB fresh pages: minor faults
    delta = thread_counters(tid) - before
    assert delta.voluntary_switches >= 1
    assert delta.minor_faults > 0 and delta.major_faults == 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing to place")
def test_placement_puts_the_audio_thread_alone_on_a_cpu():
    cpus = os.sched_getaffinity(0)
    stop = threading.Event()
    audio = threading.Thread(target=stop.wait)
    audio.start()
    saved = {int(t): os.sched_getaffinity(int(t)) for t in os.listdir("/proc/self/task")}
    try:
        placement = Placement()
        placement.follow(audio.native_id)
        assert os.sched_getaffinity(audio.native_id) == {max(cpus)}
        assert os.sched_getaffinity(0) == cpus - {max(cpus)}
        later = []
        thread = threading.Thread(target=lambda: later.append(os.sched_getaffinity(0)))
        thread.start()
        thread.join()
        assert later == [cpus - {max(cpus)}]  # a new thread inherits its creator's CPUs
        placement.release()
        assert os.sched_getaffinity(0) == os.sched_getaffinity(audio.native_id) == cpus
    finally:
        stop.set()
        audio.join()
        for tid, mask in saved.items():
            try:
                os.sched_setaffinity(tid, mask)
            except OSError:
                pass


def test_a_stopped_daemon_gives_its_process_every_cpu_back(tmp_path):
    """An in-process daemon (tests, benchmarks, the demo's embedding) pins its threads while
    it runs and releases them when it stops."""
    cpus = os.sched_getaffinity(0)
    config = tmp_path / "studiod.toml"
    config.write_text('[audio]\nbackend = "virtual"\n[session]\n[[session.channel]]\n'
                      'name = "a"\ninputs = 1\n[[session.monitor.system]]\nname = "s"\n'
                      f'outputs = [1, 2]\n[state]\ndir = "{tmp_path}"\n[osc]\nenabled = false\n'
                      '[mdns]\nenabled = false\n[midi]\nenabled = false\n')  # fmt: skip
    daemon = Daemon(load_config(config), notifier=Notifier({}))
    daemon.start()
    try:
        daemon.run(0.3)
        if len(cpus) >= 2:
            assert os.sched_getaffinity(0) == cpus - {max(cpus)}
    finally:
        daemon.close()
    assert os.sched_getaffinity(0) == cpus
