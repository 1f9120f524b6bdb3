"""Realtime audio I/O: the devices, and the control side of the audio callback.

The callback is compiled code (:mod:`studiod.daemon.rtcore`): device input -> the engine
(two during a crossfade) -> device output, the two BS.1770 meters (the master bus and the
active monitor system's outputs), the reference player and the loudness log's tap. It finds
its arrays through a table of addresses that :class:`AudioCore` maintains, and touches no
lock, file, socket or Python object.

* :class:`JackDevice` and :class:`PortAudioDevice` (sounddevice: ALSA, CoreAudio, WASAPI,
  JACK…) hand the compiled callback itself to libjack and PortAudio: their audio threads
  never enter Python, so no control thread can delay them by holding the GIL (measured: the
  callback runs on time while another thread holds the GIL for a second).
* :class:`VirtualDevice` (a thread that paces blocks like a sound card with two periods of
  buffering: the demo without hardware, and tests) is compiled code too, a loop that calls
  the same entry: it never takes the GIL either.
"""

from __future__ import annotations

import ctypes
import fnmatch
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from studiod.daemon import rtcore as rt
from studiod.daemon import rtstate as rs
from studiod.daemon._unpack import (
    METER_FINGERPRINT,
    METER_WIDTH,
    PLAYER_FINGERPRINT,
    PLAYER_WIDTH,
    SHARED_FINGERPRINT,
    SHARED_WIDTH,
    SLOT_FINGERPRINT,
    SLOT_WIDTH,
    TAP_FINGERPRINT,
    TAP_WIDTH,
)
from studiod.daemon.native import Layout, libc_address
from studiod.daemon.realtime import set_fifo_priority
from studiod.dsp import loudness as ld
from studiod.dsp._jit import publish
from studiod.dsp.session import SAMPLERATES

log = logging.getLogger("studiod.audio")

HIST_US = 200_000  # callback-time histogram: 1 µs bins up to 200 ms
CROSSFADE_MS = 20.0  # engine swap crossfade (equal-gain, linear)
SWAP_SETTLE_MS = 20.0  # the new engine runs unheard this long (plus its latency) first
SETTLE_TIMEOUT_S = 1.0  # a block running longer than this is stuck: its records are kept


class DeviceError(RuntimeError):
    """An audio device that cannot be found, opened or kept running."""


class DeviceRateError(DeviceError):
    """The device runs (or, for PortAudio, prefers to run) at ``samplerate`` Hz, not at the
    rate of the engine it was opened for: the engine must be rebuilt at that rate first."""

    def __init__(self, message: str, samplerate: int):
        super().__init__(message)
        self.samplerate = int(samplerate)


def _db(linear: float) -> float:
    return 20.0 * math.log10(linear) if linear > 0.0 else -math.inf


@dataclass(frozen=True)
class Levels:
    """One meter's reading: LUFS / LU / dBTP / dBFS, ``-inf`` where there is no signal.

    true_peak_dbtp and sample_peak_dbfs are the maxima over the last reading interval;
    true_peak_max_dbtp the maximum since the meter's reset (integrated also runs since)."""

    momentary_lufs: float
    shortterm_lufs: float
    integrated_lufs: float
    loudness_range_lu: float
    true_peak_dbtp: float
    sample_peak_dbfs: float
    true_peak_max_dbtp: float


@dataclass(frozen=True)
class MeterReading:
    """What the meters said over one interval (once a second from the control loop).

    system: the exclusive monitor system in use; outputs: its 1-based engine outputs;
    source: "mix" or "ext"; master: the master bus; monitor: the system's outputs."""

    time: float  # Unix time of the reading
    system: str
    outputs: tuple[int, ...]
    source: str
    master: Levels
    monitor: Levels


class MonitorSource:
    """A stereo ring that replaces the external monitor input pair (a reference player).

    The producer (a control-side thread) calls :meth:`write`; the audio callback reads. One
    producer at a time. While ``active``, the engine's ``ext_inputs`` carry the ring (the
    monitor's ``/monitor/source = ext`` then plays it); an empty ring plays silence and the
    missing frames are counted in ``underruns``.
    """

    def __init__(self, core: AudioCore):
        self._core = core

    @property
    def _sh(self) -> rs.Shared:
        return self._core.shared

    @property
    def capacity(self) -> int:
        return self._sh.src.shape[0]

    @property
    def buffered(self) -> int:
        ctl = self._sh.src_ctl
        return int(ctl[rs.SRC_WRITTEN] - ctl[rs.SRC_READ])

    @property
    def space(self) -> int:
        return self.capacity - self.buffered

    @property
    def underruns(self) -> int:
        return int(self._sh.src_ctl[rs.SRC_UNDERRUNS])

    @property
    def active(self) -> bool:
        return bool(self._sh.src_ctl[rs.SRC_ACTIVE])

    def activate(self, on: bool = True) -> None:
        self._sh.src_ctl[rs.SRC_ACTIVE] = 1 if on else 0

    def write(self, frames: np.ndarray) -> int:
        """Queue float ``[n, 2]`` frames; returns how many fitted (never blocks)."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 2 or frames.shape[1] != 2:
            raise ValueError(f"monitor source frames must be [n, 2], got {frames.shape}")
        ctl = self._sh.src_ctl
        ring = self._sh.src
        size = ring.shape[0]
        count = min(len(frames), self.space)
        start = int(ctl[rs.SRC_WRITTEN]) % size
        first = min(count, size - start)
        ring[start : start + first] = frames[:first]
        ring[: count - first] = frames[first:count]
        publish(ctl, rs.SRC_WRITTEN, int(ctl[rs.SRC_WRITTEN]) + count)  # after the samples
        return count

    def clear(self) -> None:
        """Drop what is buffered (the audio thread may read a few frames more)."""
        ctl = self._sh.src_ctl
        ctl[rs.SRC_READ] = ctl[rs.SRC_WRITTEN]


class _Records:
    """``count`` regions of one layout in the callback's table, and the values packed there
    (kept alive while the callback may read them)."""

    def __init__(self, table: np.ndarray, start: int, count: int, layout: Layout):
        self.table, self.start, self.count, self.layout = table, start, count, layout
        self.values: list = [None] * count

    def put(self, value, busy: set[int]) -> int:
        """Pack ``value`` into a region not in ``busy`` (the ones the callback reads);
        returns its index."""
        k = next(k for k in range(self.count) if k not in busy)
        self.layout.pack(self.table, self.start + k * self.layout.width, value)
        self.values[k] = value
        return k


# portaudio.h: int PaStreamCallback(const void *input, void *output, unsigned long
# frameCount, const PaStreamCallbackTimeInfo *timeInfo, PaStreamCallbackFlags statusFlags,
# void *userData)
_PA_STREAM_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                                       ctypes.c_void_p)  # fmt: skip
_PA_OUTPUT_UNDERFLOW = 0x4


class AudioCore:
    """The callback, the engine it runs, the meters and the timing statistics.

    The callback itself is compiled (:func:`studiod.daemon.rtcore.core_block`) and finds its
    arrays through ``table``. Its one compiled entry (:func:`studiod.daemon.rtcore.pa_process`
    at ``entry_address``, with ``entry_table`` as its user data) is called natively by
    :class:`JackDevice` and :class:`PortAudioDevice`, and by the virtual device through
    :meth:`callback`. The control side changes what the callback reads by packing a new
    record into a region the callback does not read and publishing its index: :meth:`swap`
    (a new engine, crossfaded over ``CROSSFADE_MS``), :meth:`set_loop`, :meth:`set_player`,
    :meth:`set_tap`. Call those from control threads; they never wait longer than one block.
    """

    def __init__(self, engine, audio, dev_in: int, dev_out: int, max_frames: int | None = None):
        self.audio = audio
        self.block_frames = audio.block_frames
        self.samplerate = engine.samplerate
        self.max_frames = int(max_frames or max(4 * audio.block_frames, 1024))
        self.dev_in, self.dev_out = dev_in, dev_out
        self.monitor_source = MonitorSource(self)
        self.player = None  # a reference.ReferencePlayer
        self.tap = None  # a loudtap.TapState
        self._lock = threading.Lock()  # control threads only
        self._graveyard: list = []  # records of a block that never ended

        self.ctl = np.zeros(rt.CTL_SIZE, dtype=np.int64)
        self.ctl[[rt.CTL_PLAYER, rt.CTL_TAP]] = -1
        period_ns = 1e9 * self.block_frames / self.samplerate
        self.wall = _Durations(period_ns)  # the callback's duration, start to end
        self.cpu = _Durations(period_ns)  # the audio thread's own CPU time in it
        table = self.table = np.zeros(rt.TABLE_SIZE, dtype=np.int64)
        table[rt.H_CTL] = self.ctl.ctypes.data
        table[rt.H_TIMES] = self.wall.ring.ctypes.data
        table[rt.H_CPU_TIMES] = self.cpu.ring.ctypes.data
        table[rt.H_CLOCK], table[rt.H_CLOCK_ID] = _monotonic_clock()
        table[rt.H_CPU_CLOCK_ID] = getattr(time, "CLOCK_THREAD_CPUTIME_ID", 0)
        table[rt.H_GETTID] = libc_address("gettid")
        table[rt.H_MAX_FRAMES] = self.max_frames
        self.meters = (
            ld.make_state(self.samplerate, np.ones(2)),
            ld.make_state(self.samplerate, np.ones(2)),
        )
        meter = Layout("meter", METER_FINGERPRINT, METER_WIDTH)
        meter.pack(table, rt.METERS, self.meters[rs.METER_MASTER])
        meter.pack(table, rt.METERS + METER_WIDTH, self.meters[rs.METER_MONITOR])
        self._slots = _Records(table, rt.SLOTS, rt.N_SLOTS,
                               Layout("slot", SLOT_FINGERPRINT, SLOT_WIDTH))  # fmt: skip
        self._shareds = _Records(table, rt.SHAREDS, 2,
                                 Layout("shared", SHARED_FINGERPRINT, SHARED_WIDTH))  # fmt: skip
        self._players = _Records(table, rt.PLAYERS, 2,
                                 Layout("player", PLAYER_FINGERPRINT, PLAYER_WIDTH))  # fmt: skip
        self._taps = _Records(table, rt.TAPS, 2, Layout("tap", TAP_FINGERPRINT, TAP_WIDTH))
        self.shared = rs.make_shared(self.samplerate, self.max_frames, dev_out)
        self.ctl[rt.CTL_SHARED] = self._shareds.put(self.shared, set())
        self._engine = engine
        self.ctl[rt.CTL_ENGINES] = rt.engines(self._slots.put(self._slot(engine), set()))
        self.entry_table = np.zeros(rt.P_SIZE, dtype=np.int64)
        self.entry_table[[rt.P_CORE, rt.P_CORE_SIZE, rt.P_N_IN, rt.P_N_OUT]] = (
            table.ctypes.data, len(table), dev_in, dev_out)  # fmt: skip
        self.entry_address = rt.c_callback_address(rt.pa_process)
        self._entry = _PA_STREAM_CALLBACK(self.entry_address)  # ctypes releases the GIL
        self._entry_arg = self.entry_table.ctypes.data
        self._collected = 0  # blocks whose times collect() has folded in

    # -- the audio thread -------------------------------------------------------------
    def callback(self, indata, outdata, frames, time_info, status) -> None:
        """sounddevice's callback signature: one block through the compiled entry. The
        arrays are handed over as addresses, so their layout is checked first."""
        for data, channels in ((indata, self.dev_in), (outdata, self.dev_out)):
            if (data.dtype != np.float32 or data.shape != (frames, channels)
                    or not data.flags.c_contiguous):  # fmt: skip
                raise ValueError(f"the callback takes C-contiguous float32[{frames}, "
                                 f"{channels}], not {data.dtype}{list(data.shape)}")  # fmt: skip
        flags = _PA_OUTPUT_UNDERFLOW if status else 0
        self._entry(indata.ctypes.data, outdata.ctypes.data, frames, None, flags,
                    self._entry_arg)  # fmt: skip

    def new_stream(self) -> None:
        """A device is about to call the entry from a (possibly) new thread."""
        self.ctl[rt.CTL_TID] = 0

    @property
    def audio_thread_id(self) -> int:
        """The id (gettid) of the thread that ran the latest stream's first block; 0 before,
        -1 where the C library has no gettid."""
        return int(self.ctl[rt.CTL_TID])

    @property
    def callbacks(self) -> int:
        return int(self.ctl[rt.CTL_CALLBACKS])

    @property
    def xruns(self) -> int:
        return int(self.ctl[rt.CTL_XRUNS])

    # -- the control side ---------------------------------------------------------------
    @property
    def engine(self):
        return self._engine

    def _slot(self, engine):
        return rs.make_slot(engine, self.audio.input_map, self.audio.output_map, self.max_frames)

    def _engine_slots(self) -> tuple[int, int]:
        word = int(self.ctl[rt.CTL_ENGINES])
        return word % rt.N_SLOTS, word // rt.N_SLOTS - 1

    def _select(self, index: int, value: int) -> None:
        """Publish ``ctl[index] = value`` and return once no block that may have read the
        old value still runs (at most one block)."""
        ctl = self.ctl
        publish(ctl, index, value)
        if not ctl[rt.CTL_IN_BLOCK]:
            return  # a block that starts from now on reads the new value
        done = ctl[rt.CTL_CALLBACKS]
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while ctl[rt.CTL_IN_BLOCK] and ctl[rt.CTL_CALLBACKS] == done:
            if time.monotonic() > deadline:
                # a block stuck this long may still read the old records: never free them
                self._graveyard.append(
                    [r.values[:] for r in (self._slots, self._shareds, self._players, self._taps)]
                )
                log.warning("audio callback stuck for %.1f s", SETTLE_TIMEOUT_S)
                return
            time.sleep(0.0002)

    def swap(self, engine, crossfade: bool = True) -> None:
        """Run ``engine`` from the next block on: unheard until its latency and
        ``SWAP_SETTLE_MS`` have passed, then crossfading from the current one over
        ``CROSSFADE_MS`` (when the stream runs). The new engine should have settled its
        parameters (the runtime primes it)."""
        slot = self._slot(engine)
        with self._lock:
            # a crossfade in progress ends within CROSSFADE_MS while the stream runs
            deadline = time.monotonic() + 0.5
            while self._engine_slots()[1] >= 0 and time.monotonic() < deadline:
                time.sleep(0.002)
            heard, fading = self._engine_slots()
            k = self._slots.put(slot, {heard, fading})
            if crossfade:
                sh = self.shared
                sh.fade[1] = max(1, round(CROSSFADE_MS * 1e-3 * self.samplerate))
                # The new engine runs unheard until its look-ahead is full and its filters
                # have settled on the live input, then fades in: a swap is never a step.
                latency = int(getattr(engine, "latency_samples", 0))
                sh.fade[0] = -(latency + round(SWAP_SETTLE_MS * 1e-3 * self.samplerate))
                self._select(rt.CTL_ENGINES, rt.engines(k, heard))
            else:
                self._select(rt.CTL_ENGINES, rt.engines(k))
            self._engine = engine

    def set_player(self, player) -> None:
        """Mix a reference.ReferencePlayer into the external monitor inputs (None: stop);
        a track the player loads later reaches the callback the same way."""
        with self._lock:
            if self.player is not None:
                self.player.on_state = None
            if player is None:
                self._select(rt.CTL_PLAYER, -1)
            else:
                player.on_state = self._player_state
                busy = {int(self.ctl[rt.CTL_PLAYER])}
                self._select(rt.CTL_PLAYER, self._players.put(player.state, busy))
            self.player = player

    def _player_state(self, state) -> None:
        with self._lock:
            busy = {int(self.ctl[rt.CTL_PLAYER])}
            self._select(rt.CTL_PLAYER, self._players.put(state, busy))

    def set_tap(self, tap) -> None:
        """Feed a loudtap.TapState every block (None: stop)."""
        with self._lock:
            if tap is None:
                self._select(rt.CTL_TAP, -1)
            else:
                self._select(rt.CTL_TAP, self._taps.put(tap, {int(self.ctl[rt.CTL_TAP])}))
            self.tap = tap

    def set_loop(self, programme: np.ndarray | None) -> None:
        """Play float32 ``[frames, k]`` into engine inputs 1…k in a loop (None: stop)."""
        sh = self.shared
        if programme is None:
            sh.loop_ctl[0] = 0
            return
        programme = np.ascontiguousarray(programme, dtype=np.float32)
        sh.loop_ctl[0] = 0
        with self._lock:
            self.shared = sh._replace(loop=programme)
            busy = {int(self.ctl[rt.CTL_SHARED])}
            self._select(rt.CTL_SHARED, self._shareds.put(self.shared, busy))
        sh.loop_ctl[1] = 0
        publish(sh.loop_ctl, 0, 1)

    def set_monitor_meter(self, outputs: tuple[int, ...]) -> None:
        """Meter these 1-based engine outputs (the active system's) from now on, anew."""
        sh = self.shared
        cols = [o - 1 for o in outputs] or [-1]
        mono = len(cols) == 1
        sh.mon_cols[0] = -1  # off while the weights change
        self.meters[rs.METER_MONITOR].weights[1] = 0.0 if mono else 1.0
        sh.mon_cols[1] = cols[-1]
        sh.mon_cols[0] = cols[0]
        sh.meter_ctl[rs.METER_RESET_MONITOR] = 1

    def reset_meters(self) -> None:
        """Start both meters' integrated loudness, LRA and peak maxima anew."""
        self.shared.meter_ctl[rs.METER_RESET_MASTER] = 1
        self.shared.meter_ctl[rs.METER_RESET_MONITOR] = 1

    def request_interval(self) -> int:
        """Ask the callback to close the peak interval; returns the request number."""
        ctl = self.shared.meter_ctl
        ctl[rs.METER_INTERVAL_REQ] += 1
        return int(ctl[rs.METER_INTERVAL_REQ])

    def interval_done(self, request: int) -> bool:
        return int(self.shared.meter_ctl[rs.METER_INTERVAL_DONE]) >= request

    def levels(self, k: int) -> Levels:
        """The reading of meter ``k`` (rs.METER_MASTER or rs.METER_MONITOR)."""
        state = self.meters[k]
        m = state.meters
        sh = self.shared
        tp_live = float(state.tp_peak.max())
        return Levels(
            momentary_lufs=float(m[ld.MOMENTARY]),
            shortterm_lufs=float(m[ld.SHORTTERM]),
            integrated_lufs=float(m[ld.INTEGRATED]),
            loudness_range_lu=float(m[ld.LRA]),
            true_peak_dbtp=_db(float(sh.tp_last[k].max())),
            sample_peak_dbfs=_db(float(sh.sp_last[k].max())),
            true_peak_max_dbtp=_db(max(float(sh.tp_max[k].max()), tp_live)),
        )

    def collect(self) -> None:
        """Fold the callback times recorded since the last call into the histograms."""
        done = self.callbacks
        start = max(self._collected, done - rt.TIMES_RING)
        if done > start:
            idx = np.arange(start, done) % rt.TIMES_RING
            self.wall.add(idx)
            self.cpu.add(idx)
        self._collected = done

    def timing(self) -> dict:
        """Callback duration percentiles since start, in µs and % of the period: wall-clock
        (``p50_us``, ``p99_us``, ``p999_us``, ``max_us``…) and the audio thread's own CPU
        time (``cpu_p50_us``…), which excludes any time the thread was switched out."""
        self.collect()
        out = {"callbacks": self.callbacks, "xruns": self.xruns,
               "period_us": self.wall.period_ns / 1000.0}  # fmt: skip
        out.update(self.wall.summary(""))
        out.update(self.cpu.summary("cpu_"))
        return out

    def warm_up(self) -> None:
        """Run one silent block through the compiled entry (loaded when the core was built)
        so the first device block does not touch cold pages; counters and meters are reset."""
        dev_in = np.zeros((self.block_frames, self.dev_in), np.float32)
        dev_out = np.zeros((self.block_frames, self.dev_out), np.float32)
        counters = [rt.CTL_CALLBACKS, rt.CTL_XRUNS, rt.CTL_TID]
        saved = self.ctl[counters].copy()
        self.callback(dev_in, dev_out, self.block_frames, None, None)
        self.ctl[counters] = saved
        self.wall.ring[:] = 0
        self.cpu.ring[:] = 0
        self.reset_meters()


class _Durations:
    """A ring the callback writes durations into (ns), and their histogram."""

    def __init__(self, period_ns: float):
        self.period_ns = period_ns
        self.ring = np.zeros(rt.TIMES_RING, dtype=np.int64)
        self.hist = np.zeros(HIST_US + 1, dtype=np.int64)  # 1 µs bins
        self.max_ns = 0
        self.overlong = 0  # blocks longer than a period

    def add(self, idx: np.ndarray) -> None:
        ns = self.ring[idx]
        self.max_ns = max(self.max_ns, int(ns.max()))
        self.overlong += int(np.count_nonzero(ns > self.period_ns))
        self.hist += np.bincount(np.minimum(ns // 1000, HIST_US), minlength=HIST_US + 1)

    def summary(self, prefix: str) -> dict:
        period_us = self.period_ns / 1000.0
        total = int(self.hist.sum())
        cum = np.cumsum(self.hist)
        out = {f"{prefix}overlong": self.overlong}
        for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
            us = float(np.searchsorted(cum, math.ceil(q * total))) if total else 0.0
            out[f"{prefix}{name}_us"] = us
            out[f"{prefix}{name}_pct"] = 100.0 * us / period_us
        out[f"{prefix}max_us"] = self.max_ns / 1000.0
        out[f"{prefix}max_pct"] = 100.0 * out[f"{prefix}max_us"] / period_us
        return out


def _monotonic_clock() -> tuple[int, int]:
    """clock_gettime's address and CLOCK_MONOTONIC for the compiled code's timing ((0, 0)
    where the C library has none: durations then read 0)."""
    fn = libc_address("clock_gettime")
    return (fn, time.CLOCK_MONOTONIC) if fn else (0, 0)


# ----------------------------------------------------------------------------------------
# the virtual device


class VirtualDevice:
    """A sound card made of a thread: every ``block_frames`` it hands ``core``'s compiled
    entry an input block and takes an output block, on the deadlines of a duplex interface
    with two periods of buffering (:func:`studiod.daemon.rtcore.virtual_run`). The whole
    loop is compiled code that never takes the GIL, pacing itself with
    ``clock_nanosleep(TIMER_ABSTIME)``, at SCHED_FIFO ``priority`` where permitted.

    ``source`` (float32 [frames, channels]) is looped into the inputs; ``tap_frames`` keeps
    the last outputs for inspection (:meth:`tail`). realtime=False runs blocks back to back.
    ``samplerate``: the card's own rate, like a sound card locked to a clock (None: it runs
    at the core's rate); opening it for a core at another rate raises DeviceRateError.

    Lateness is counted apart: :attr:`late_wakes`, the thread woke a period or more after
    an input block was complete (the operating system did not run it: nothing the callback
    did); :attr:`late_blocks`, a block's output was ready after its deadline. Both are
    reported to the callback as PortAudio reports its xruns.
    """

    def __init__(
        self,
        core: AudioCore,
        realtime: bool = True,
        priority: int = 0,
        source: np.ndarray | None = None,
        tap_frames: int = 0,
        name: str = "virtual",
        samplerate: int | None = None,
    ):
        self.core = core
        self.samplerate = core.samplerate
        self.device_samplerate = samplerate
        self.block_frames = core.block_frames
        self.in_channels, self.out_channels = core.dev_in, core.dev_out
        self.realtime = realtime
        self.priority = priority
        self.name = name
        n = self.block_frames
        self.source = (np.zeros((0, self.in_channels), np.float32) if source is None
                       else np.ascontiguousarray(source, np.float32))  # fmt: skip
        self._indata = np.zeros((n, self.in_channels), np.float32)
        self._outdata = np.zeros((n, self.out_channels), np.float32)
        self.tap_frames = max(tap_frames, 0)
        # room for what the thread writes while tail() copies (up to tap_frames more, and
        # the block in progress): it overwrites the slack, not the frames being read
        ring = 2 * self.tap_frames + n if self.tap_frames else 0
        self._tap = np.zeros((ring, self.out_channels), np.float32)
        self._vctl = np.zeros(rt.V_SIZE, np.int64)
        clock_fn, clock_id = _monotonic_clock()
        sleep_fn = libc_address("clock_nanosleep") if realtime else 0
        if realtime and not sleep_fn:
            raise DeviceError("the virtual device needs clock_nanosleep (POSIX)")
        self._clocks = np.array([clock_fn, sleep_fn, clock_id], np.int64)
        self._thread: threading.Thread | None = None
        self._failed = False
        self.error: str | None = None
        self.priority_applied = False

    @property
    def period_s(self) -> float:
        return self.block_frames / self.samplerate

    @property
    def latency_s(self) -> tuple[float, float]:
        return self.period_s, 2 * self.period_s

    @property
    def active(self) -> bool:
        return self._thread is not None and self._vctl[rt.V_RUN] != 0 and not self._failed

    @property
    def blocks(self) -> int:
        return int(self._vctl[rt.V_BLOCKS])

    @property
    def late_wakes(self) -> int:
        return int(self._vctl[rt.V_LATE_WAKES])

    @property
    def late_blocks(self) -> int:
        return int(self._vctl[rt.V_LATE_BLOCKS])

    @property
    def xruns(self) -> int:
        return self.late_wakes + self.late_blocks

    @property
    def tapped(self) -> int:
        """Frames written to the tap so far."""
        return int(self._vctl[rt.V_TAPPED])

    def start(self) -> None:
        if self._thread is not None:
            return
        rate = self.device_samplerate
        if rate is not None and rate != self.samplerate:
            raise DeviceRateError(f"{self.name} runs at {rate} Hz", rate)
        self.core.new_stream()
        self._loop()  # V_RUN is 0: returns at once, compiled (or loaded) before it counts
        self._vctl[rt.V_RUN] = 1
        self._thread = threading.Thread(target=self._run, name="studiod-audio", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._vctl[rt.V_RUN] = 0
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        self._thread = None

    def fail(self, reason: str = "device lost") -> None:
        """Simulate a lost device: the callbacks stop and ``active`` turns False."""
        self.error = reason
        self._failed = True
        self._vctl[rt.V_RUN] = 0

    def tail(self, frames: int) -> np.ndarray:
        """The last ``frames`` output frames (at most ``tap_frames``; a copy, oldest first).
        The thread goes on writing while this copies: a copy that a newer block may have
        overwritten in part is taken again."""
        size = len(self._tap)
        while True:
            end = self.tapped
            frames = min(frames, self.tap_frames, end)
            rows = self._tap[np.arange(end - frames, end) % max(size, 1)]  # a copy
            # the block in progress may be in the ring already, before it is counted
            if self.tapped + self.block_frames - size <= end - frames:
                return rows

    def _run(self) -> None:
        # Signals belong to the main thread: none interrupts the device's sleep.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        self.priority_applied = set_fifo_priority(self.priority, "virtual device")
        self._loop()

    def _loop(self) -> None:
        core = self.core
        period_ns = round(1e9 * self.block_frames / self.samplerate)
        rt.virtual_run(self._vctl, core.entry_address, core.entry_table.ctypes.data,
                       self._indata, self._outdata, self.source, self._tap, self._clocks,
                       period_ns)  # fmt: skip


# ----------------------------------------------------------------------------------------
# PortAudio (sounddevice)

_jack_name_buffer = None  # PaJack_SetClientName keeps the pointer: keep the bytes alive


def _sounddevice():
    # JACK must never be started behind the user's back by libjack's autostart.
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    import sounddevice

    return sounddevice


def rescan(client_name: str | None = None) -> None:
    """Re-initialise PortAudio so it sees devices (and JACK servers) that appeared since;
    sets the JACK client name first. No stream may be open."""
    global _jack_name_buffer
    sd = _sounddevice()
    if client_name:
        try:
            lib = ctypes.CDLL(sd._libname)
            _jack_name_buffer = ctypes.create_string_buffer(client_name.encode())
            lib.PaJack_SetClientName(_jack_name_buffer)
        except (OSError, AttributeError):
            pass  # a PortAudio built without JACK
    _terminate_portaudio(sd)
    sd._initialize()


def _terminate_portaudio(sd) -> None:
    """While PortAudio is initialised, its JACK host API is a client of any running JACK
    server, and it cannot survive that server's death: Pa_Terminate then aborts the process
    (PortAudio 19.6). So PortAudio is terminated whenever no stream needs it."""
    while sd._initialized:
        sd._terminate()


def list_devices() -> list[dict]:
    """Every PortAudio device: index, name, hostapi, channels, default samplerate."""
    sd = _sounddevice()
    apis = sd.query_hostapis()
    out = []
    for dev in sd.query_devices():
        api = apis[dev["hostapi"]]
        out.append(
            {
                "index": dev["index"],
                "name": dev["name"],
                "hostapi": api["name"],
                "inputs": dev["max_input_channels"],
                "outputs": dev["max_output_channels"],
                "samplerate": dev["default_samplerate"],
                "default": dev["index"] in (api["default_input_device"],
                                            api["default_output_device"]),
            }
        )  # fmt: skip
    return out


def _matches(pattern: str, name: str) -> bool:
    pattern, name = pattern.casefold(), name.casefold()
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def find_device(
    devices: list[dict], device: str | None, hostapi: str | None, need_in: int, need_out: int
) -> dict:
    """The device for a config: hostapi by substring, device by exact name, then glob or
    substring (case-insensitive); None picks the host API's default. It must offer
    ``need_in`` inputs and ``need_out`` outputs (one duplex device)."""
    pool = [d for d in devices if hostapi is None or hostapi.casefold() in d["hostapi"].casefold()]
    if not pool:
        apis = sorted({d["hostapi"] for d in devices})
        raise DeviceError(f"no audio device on host API {hostapi!r} (available: {apis})")
    if device is None:
        candidates = sorted(pool, key=lambda d: not d["default"])
    else:
        exact = [d for d in pool if d["name"].casefold() == device.casefold()]
        candidates = exact or [d for d in pool if _matches(device, d["name"])]
    if not candidates:
        names = [f"{d['name']} ({d['hostapi']})" for d in pool]
        raise DeviceError(f"no audio device matches {device!r}; devices: {names}")
    for d in candidates:
        if d["inputs"] >= need_in and d["outputs"] >= need_out:
            return d
    d = candidates[0]
    raise DeviceError(
        f"{d['name']} ({d['hostapi']}) has {d['inputs']} inputs / {d['outputs']} outputs; "
        f"the config needs {need_in} / {need_out}"
    )


def choose_samplerate(
    wanted_hz: int, default_hz: float, takes: Callable[[int], bool]
) -> int | None:
    """The rate to run a PortAudio device at: the configured ``wanted_hz`` when the device
    ``takes`` it; else its default rate (``default_hz``, the rate its host API reports it
    runs at) when the engine can run there; else the engine rate nearest to ``wanted_hz``
    that it takes. None when it takes none of them (then a channel count or the device is
    the problem, and opening it says which)."""
    if takes(wanted_hz):
        return wanted_hz
    default = round(default_hz)
    fallback = [default] if default in SAMPLERATES else []
    fallback += sorted(SAMPLERATES, key=lambda hz: (abs(hz - wanted_hz), hz))
    return next((hz for hz in fallback if hz != wanted_hz and takes(hz)), None)


class PortAudioDevice:
    """A duplex PortAudio stream on the configured device (output only when there are no
    inputs) whose callback is the compiled :func:`studiod.daemon.rtcore.pa_process` on
    ``core``'s table, opened through sounddevice's stream class for C callbacks. It runs at
    the core's rate; when :func:`choose_samplerate` picks another for the device (the
    configured one it takes, or its default when it does not take the configured one),
    :meth:`start` raises DeviceRateError naming that rate."""

    def __init__(self, audio, core: AudioCore):
        self.audio = audio
        self.in_channels = core.dev_in
        self.out_channels = core.dev_out
        self.core = core
        self.samplerate = core.samplerate  # the engine's; audio.samplerate is the wanted one
        self.block_frames = audio.block_frames
        self.name = "?"
        self.error: str | None = None
        self._stream = None
        self._finished = False

    def start(self) -> None:
        sd = _sounddevice()
        rescan(self.audio.client_name)
        d = find_device(
            list_devices(), self.audio.device, self.audio.hostapi, self.in_channels,
            self.out_channels,
        )  # fmt: skip
        self.name = f"{d['name']} ({d['hostapi']})"
        latency = self.audio.latency
        latency = latency if latency in ("low", "high") else float(latency)
        duplex = self.in_channels > 0
        rate = choose_samplerate(self.audio.samplerate, d["samplerate"],
                                 lambda hz: self._takes(sd, d["index"], duplex, hz))  # fmt: skip
        if rate is not None and rate != self.samplerate:
            why = ("" if rate == self.audio.samplerate
                   else f" does not take {self.audio.samplerate} Hz;")  # fmt: skip
            _terminate_portaudio(sd)  # no stream needs it (see there: a JACK server may die)
            raise DeviceRateError(f"{self.name}{why} takes {rate} Hz", rate)
        self._finished = False
        self.core.new_stream()
        try:
            stream = sd._StreamBase(
                kind="duplex" if duplex else "output",
                device=(d["index"], d["index"]) if duplex else d["index"],
                channels=(self.in_channels, self.out_channels) if duplex else self.out_channels,
                samplerate=self.samplerate,
                blocksize=self.block_frames,
                dtype="float32",  # interleaved: the callback's arrays are PortAudio's buffers
                latency=latency,
                callback=self.core.entry_address,
                userdata=sd._ffi.cast("void *", self.core.entry_table.ctypes.data),
                wrap_callback=None,
                finished_callback=self._on_finished,
                dither_off=True,
            )
            stream.start()
        except sd.PortAudioError as exc:
            raise DeviceError(f"{self.name}: {exc}") from None
        self._stream = stream

    def _takes(self, sd, index: int, duplex: bool, samplerate: int) -> bool:
        """Whether the device opens at ``samplerate`` with our channels (Pa_IsFormatSupported)."""
        try:
            if duplex:
                sd.check_input_settings(device=index, channels=self.in_channels,
                                        dtype="float32", samplerate=samplerate)  # fmt: skip
            sd.check_output_settings(device=index, channels=self.out_channels, dtype="float32",
                                     samplerate=samplerate)  # fmt: skip
        except sd.PortAudioError:
            return False
        return True

    def _on_finished(self) -> None:
        self._finished = True

    @property
    def active(self) -> bool:
        stream = self._stream
        return stream is not None and not self._finished and stream.active

    @property
    def latency_s(self):
        return self._stream.latency if self._stream is not None else (0.0, 0.0)

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort(ignore_errors=True)
            stream.close(ignore_errors=True)
        except Exception as exc:  # a vanished JACK server can make PortAudio complain
            log.debug("closing the stream: %s", exc)
        _terminate_portaudio(_sounddevice())


# ----------------------------------------------------------------------------------------
# JACK, natively (libjack through ctypes)
#
# PortAudio's JACK host API cannot survive a server that dies: Pa_AbortStream/CloseStream
# wait forever for the dead process thread and Pa_Terminate asserts (measured with
# PortAudio 19.6 and jackd 1.9.21). libjack reports the death (jack_on_info_shutdown) and
# lets the client go, so JACK gets its own small client here.

_JACK_NO_START_SERVER = 0x01  # jack/types.h JackOptions
_JACK_PORT_IS_INPUT = 0x1  # jack/types.h JackPortFlags
_JACK_PORT_IS_OUTPUT = 0x2
_JACK_PORT_IS_PHYSICAL = 0x4
_JACK_AUDIO_TYPE = b"32 bit float mono audio"  # JACK_DEFAULT_AUDIO_TYPE
JACK_MAX_FRAMES = 8192  # the largest period JACK allows (jack2 BUFFER_SIZE_MAX)


class _Jack:
    """libjack's functions, loaded once; the compiled port copiers bound to them."""

    _instance = None

    def __init__(self):
        import ctypes.util

        name = ctypes.util.find_library("jack") or "libjack.so.0"
        lib = ctypes.CDLL(name)
        p, c = ctypes.c_void_p, ctypes.c_char_p
        sig = {
            "jack_client_open": (p, [c, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]),
            "jack_client_close": (ctypes.c_int, [p]),
            "jack_port_register": (p, [p, c, c, ctypes.c_ulong, ctypes.c_ulong]),
            "jack_port_name": (c, [p]),
            "jack_set_process_callback": (ctypes.c_int, [p, p, p]),
            "jack_on_info_shutdown": (None, [p, p, p]),
            "jack_set_xrun_callback": (ctypes.c_int, [p, p, p]),
            "jack_activate": (ctypes.c_int, [p]),
            "jack_deactivate": (ctypes.c_int, [p]),
            "jack_get_sample_rate": (ctypes.c_uint32, [p]),
            "jack_get_buffer_size": (ctypes.c_uint32, [p]),
            "jack_get_ports": (ctypes.POINTER(c), [p, c, c, ctypes.c_ulong]),
            "jack_free": (None, [p]),
            "jack_connect": (ctypes.c_int, [p, c, c]),
            "jack_set_error_function": (None, [p]),
            "jack_set_info_function": (None, [p]),
        }
        for fn, (restype, argtypes) in sig.items():
            f = getattr(lib, fn)
            f.restype, f.argtypes = restype, argtypes
        self.lib = lib
        # libjack prints every failed connection attempt; the daemon logs its own line
        silent = rt.c_callback_address(rt.jack_silent)
        lib.jack_set_error_function(silent)
        lib.jack_set_info_function(silent)
        get_buffer = lib.jack_port_get_buffer
        get_buffer.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        get_buffer.restype = ctypes.c_void_p
        self.get_buffer_address = ctypes.cast(get_buffer, ctypes.c_void_p).value

    @classmethod
    def get(cls) -> _Jack:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance


def jack_server_running(client_name: str = "studiod-probe") -> bool:
    """True when a JACK server answers (never starts one)."""
    try:
        lib = _Jack.get().lib
    except OSError:
        return False
    status = ctypes.c_int(0)
    client = lib.jack_client_open(client_name.encode(), _JACK_NO_START_SERVER, ctypes.byref(status))
    if not client:
        return False
    lib.jack_client_close(client)
    return True


class JackDevice:
    """A JACK client ``audio.client_name`` with ports in_1…, out_1… (connected to the
    server's physical ports when ``audio.autoconnect``) whose process callback is the
    compiled :func:`studiod.daemon.rtcore.jack_process` on ``core``'s table: JACK's
    process thread never enters Python. The server's rate is the rate: a core at another
    one makes :meth:`start` raise DeviceRateError naming the server's."""

    def __init__(self, audio, core: AudioCore):
        self.audio = audio
        self.in_channels = core.dev_in
        self.out_channels = core.dev_out
        self.core = core
        self.samplerate = core.samplerate  # the engine's (the device's, once it follows)
        self.block_frames = audio.block_frames
        self.name = f"JACK client {audio.client_name}"
        self._client = None
        # written by the compiled notification callbacks (rtcore.JN_*)
        self._notes = np.zeros(rt.JN_SIZE, dtype=np.int64)

    @property
    def xruns(self) -> int:
        """The xruns JACK reported to this client."""
        return int(self._notes[rt.JN_XRUNS])

    @property
    def _dead(self) -> bool:
        return bool(self._notes[rt.JN_DEAD])

    @property
    def error(self) -> str | None:
        """Why the server shut the client down, once it has."""
        if not self._dead:
            return None
        reason = self._notes[rt.JN_REASON :].tobytes().split(b"\0", 1)[0]
        return f"JACK server gone: {reason.decode(errors='replace') or self._notes[rt.JN_CODE]}"

    def start(self) -> None:
        try:
            jack = _Jack.get()
        except OSError as exc:
            raise DeviceError(f"libjack is not available: {exc}") from None
        lib = jack.lib
        status = ctypes.c_int(0)
        self.core.new_stream()
        client = lib.jack_client_open(
            self.audio.client_name.encode(), _JACK_NO_START_SERVER, ctypes.byref(status)
        )
        if not client:
            raise DeviceError(f"no JACK server (jack_client_open status 0x{status.value:x})")
        self._client = client
        try:
            self._setup(jack, client)
        except BaseException:
            self.close()
            raise

    def _setup(self, jack, client) -> None:
        lib = jack.lib
        rate = lib.jack_get_sample_rate(client)
        if rate != self.samplerate:  # JACK's rate is the server's: the engine must follow it
            raise DeviceRateError(f"the JACK server runs at {rate} Hz", rate)
        period = lib.jack_get_buffer_size(client)
        if period != self.block_frames:
            log.warning("JACK period is %d frames, the config's block_frames %d: processing "
                        "%d-frame blocks", period, self.block_frames, period)  # fmt: skip
        self.name = f"JACK client {self.audio.client_name} ({period} frames)"
        name = self.audio.client_name
        ports_in = [lib.jack_port_register(client, f"in_{k + 1}".encode(), _JACK_AUDIO_TYPE,
                                           _JACK_PORT_IS_INPUT, 0)
                    for k in range(self.in_channels)]  # fmt: skip
        ports_out = [lib.jack_port_register(client, f"out_{k + 1}".encode(), _JACK_AUDIO_TYPE,
                                            _JACK_PORT_IS_OUTPUT, 0)
                     for k in range(self.out_channels)]  # fmt: skip
        if not all(ports_in + ports_out):
            raise DeviceError("JACK refused to register the ports")
        n_in, n_out = self.in_channels, self.out_channels
        self._in = np.zeros((JACK_MAX_FRAMES, n_in), np.float32)
        self._out = np.zeros((JACK_MAX_FRAMES, n_out), np.float32)
        table = self._table = np.zeros(rt.J_PORTS + n_in + n_out, dtype=np.int64)
        table[rt.J_ENTRY] = self.core.entry_address
        table[rt.J_ENTRY_TABLE] = self.core.entry_table.ctypes.data
        table[rt.J_GET_BUFFER] = jack.get_buffer_address
        table[rt.J_IN] = self._in.ctypes.data
        table[rt.J_OUT] = self._out.ctypes.data
        table[rt.J_CAPACITY] = JACK_MAX_FRAMES
        table[rt.J_N_IN], table[rt.J_N_OUT] = n_in, n_out
        table[rt.J_PORTS :] = ports_in + ports_out

        notes = self._notes
        notes[:] = 0
        notes[rt.JN_CTL] = self.core.ctl.ctypes.data
        lib.jack_set_process_callback(client, rt.c_callback_address(rt.jack_process),
                                      table.ctypes.data)  # fmt: skip
        lib.jack_on_info_shutdown(client, rt.c_callback_address(rt.jack_shutdown),
                                  notes.ctypes.data)  # fmt: skip
        lib.jack_set_xrun_callback(client, rt.c_callback_address(rt.jack_xrun), notes.ctypes.data)
        if lib.jack_activate(client) != 0:
            raise DeviceError("jack_activate failed")
        if self.audio.autoconnect:
            self._connect(lib, client, name)

    def _physical(self, lib, client, flags) -> list[bytes]:
        ports = lib.jack_get_ports(client, None, _JACK_AUDIO_TYPE, flags | _JACK_PORT_IS_PHYSICAL)
        if not ports:
            return []
        names = []
        k = 0
        while ports[k]:
            names.append(ports[k])
            k += 1
        lib.jack_free(ports)
        return names

    def _connect(self, lib, client, name: str) -> None:
        captures = self._physical(lib, client, _JACK_PORT_IS_OUTPUT)
        playbacks = self._physical(lib, client, _JACK_PORT_IS_INPUT)
        for k, src in enumerate(captures[: self.in_channels]):
            lib.jack_connect(client, src, f"{name}:in_{k + 1}".encode())
        for k, dst in enumerate(playbacks[: self.out_channels]):
            lib.jack_connect(client, f"{name}:out_{k + 1}".encode(), dst)

    @property
    def active(self) -> bool:
        return self._client is not None and not self._dead

    @property
    def latency_s(self):
        return (self.block_frames / self.samplerate,) * 2

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        lib = _Jack.get().lib
        if not self._dead:
            lib.jack_deactivate(client)
        lib.jack_client_close(client)
