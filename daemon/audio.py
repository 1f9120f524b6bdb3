"""Realtime audio I/O: the callback, the meters it feeds, and the devices that call it.

The audio callback (:meth:`AudioCore.callback`) is the only code on the audio thread. It
makes three calls, each into compiled code, and touches no lock, file or socket:

1. ``_io_in``   (jitted, keeps the GIL, ~1 µs): device input columns -> engine inputs
   (the input channel map; the demo programme loop; the monitor-source ring on the
   external input pair);
2. ``engine.process`` (jitted, releases the GIL): the whole mix/master/monitor graph;
3. ``_io_out``  (jitted, keeps the GIL): engine outputs -> device columns (the output map),
   the crossfade after an engine swap, and two BS.1770 meters (the master bus and the
   active monitor system's outputs).

The two helpers keep the GIL on purpose: each release of the GIL is a chance for a control
thread to take it, and getting it back can take a whole switch interval
(``sys.setswitchinterval``), so the callback releases it once, around the engine.

Everything the callback uses is preallocated; the control thread swaps whole objects by
reference (a new engine after a session change) and reads the meters and timings.

Devices: :class:`PortAudioDevice` (sounddevice: JACK, ALSA, CoreAudio, WASAPI…) and
:class:`VirtualDevice`, a thread that paces blocks in real time like a sound card with two
periods of buffering (for the demo without hardware, and for tests).
"""

from __future__ import annotations

import ctypes
import fnmatch
import logging
import math
import os
import threading
import time
from collections import namedtuple
from dataclasses import dataclass

import numba
import numpy as np

from studiod.dsp import loudness as ld
from studiod.dsp._jit import FASTMATH

log = logging.getLogger("studiod.audio")

# Compiled like the DSP kernels, but holding the GIL: see the module docstring.
_gil_kernel = numba.njit(nogil=False, cache=True, fastmath=FASTMATH)

# The reference player's and the loudness log's kernels, bound when one is attached: their
# modules import scipy.signal (~60 MB, ~1 s at start), which a daemon without them need not
# pay. With None in their place the compiled helpers prune the calls.
player_fill = None  # studiod.daemon.reference.player_fill
tap_process = None  # studiod.daemon.loudlog.tap_process

TIMES_RING = 8192  # callback durations kept for the control thread (~11 s at 64 frames)
HIST_US = 200_000  # callback-time histogram: 1 µs bins up to 200 ms
CROSSFADE_MS = 20.0  # engine swap crossfade (equal-gain, linear)
SWAP_SETTLE_MS = 20.0  # the new engine runs unheard this long (plus its latency) first
SOURCE_RING_S = 1.0  # monitor-source ring length

# meter indices
METER_MASTER = 0
METER_MONITOR = 1
# meter_ctl slots
_CTL_RESET_MASTER = 0
_CTL_RESET_MONITOR = 1
_CTL_INTERVAL_REQ = 2
_CTL_INTERVAL_DONE = 3
# src_ctl slots
_SRC_ACTIVE = 0
_SRC_WRITTEN = 1
_SRC_READ = 2
_SRC_UNDERRUNS = 3


class DeviceError(RuntimeError):
    """An audio device that cannot be found, opened or kept running."""


# ----------------------------------------------------------------------------------------
# state shared with the compiled helpers

IoState = namedtuple(
    "IoState",
    [
        "in_map",  # int64[n_eng_in]: device input column of each engine input (-1: silence)
        "out_map",  # int64[n_eng_out]: device output column of each engine output (-1: none)
        "ext",  # int64[2]: engine input columns of the external monitor pair (-1: none)
        "eng_in",  # float32[max_frames, n_eng_in]
        "eng_out",  # float32[max_frames, n_eng_out]
        "master",  # float64[N, 2]: the engine's master bus after ``process`` (metered)
        "has_master",  # int64[1]
    ],
)

Shared = namedtuple(
    "Shared",
    [
        "loop",  # float32[L, k]: a programme played into engine inputs 1…k (the demo)
        "loop_ctl",  # int64[2]: on, position
        "src",  # float32[R, 2]: monitor-source ring (SPSC: control thread writes)
        "src_ctl",  # int64[4]: active, frames written, frames read, underrun frames
        "fade",  # int64[2]: crossfade position, length (frames)
        "xfade",  # float32[max_frames, dev_out]: the old engine's mapped output
        "mon_cols",  # int64[2]: engine output columns of the metered monitor system
        "mon_buf",  # float64[max_frames, 2]
        "meter_ctl",  # int64[4]: reset master, reset monitor, interval requested, done
        "tp_last",  # float64[2, 2]: true peak per meter and lane, last interval
        "sp_last",  # float64[2, 2]: sample peak, last interval
        "tp_max",  # float64[2, 2]: true peak since the meter's reset
    ],
)


@_gil_kernel
def _io_in(indata, io, sh, player):
    """Engine inputs for one block from the device input (and the loop, the source ring and
    the reference player, ``player``: a reference.PlayerState or None)."""
    n = indata.shape[0]
    n_dev = indata.shape[1]
    eng = io.eng_in
    for c in range(eng.shape[1]):
        col = io.in_map[c]
        if 0 <= col < n_dev:
            for i in range(n):
                eng[i, c] = indata[i, col]
        else:
            for i in range(n):
                eng[i, c] = 0.0
    if sh.loop_ctl[0] != 0:
        loop = sh.loop
        length = loop.shape[0]
        cols = min(loop.shape[1], eng.shape[1])
        pos = sh.loop_ctl[1]
        for i in range(n):
            for c in range(cols):
                eng[i, c] = loop[pos, c]
            pos += 1
            if pos >= length:
                pos = 0
        sh.loop_ctl[1] = pos
    if sh.src_ctl[_SRC_ACTIVE] != 0 and io.ext[0] >= 0:
        ring = sh.src
        size = ring.shape[0]
        avail = sh.src_ctl[_SRC_WRITTEN] - sh.src_ctl[_SRC_READ]
        take = min(avail, n)
        read = sh.src_ctl[_SRC_READ]
        for i in range(n):
            if i < take:
                row = (read + i) % size
                eng[i, io.ext[0]] = ring[row, 0]
                eng[i, io.ext[1]] = ring[row, 1]
            else:
                eng[i, io.ext[0]] = 0.0
                eng[i, io.ext[1]] = 0.0
        sh.src_ctl[_SRC_READ] = read + take
        sh.src_ctl[_SRC_UNDERRUNS] += n - take
    if player is not None:
        if io.ext[0] >= 0:
            player_fill(eng, n, io.ext, player)


@_gil_kernel
def _map_out(eng, out_map, n, dest):
    dest[:n] = 0.0
    n_dev = dest.shape[1]
    for c in range(out_map.shape[0]):
        col = out_map[c]
        if 0 <= col < n_dev:
            for i in range(n):
                dest[i, col] += eng[i, c]


@_gil_kernel
def _meter_interval(sh, k, state):
    for lane in range(2):
        sh.tp_last[k, lane] = state.tp_peak[lane]
        sh.sp_last[k, lane] = state.sample_peak[lane]
        sh.tp_max[k, lane] = max(sh.tp_max[k, lane], state.tp_peak[lane])
        state.tp_peak[lane] = 0.0
        state.sample_peak[lane] = 0.0


@_gil_kernel
def _meter_reset(sh, k, s):
    ld.loudness_reset(
        s.kcoefs, s.kstate, s.scratch, s.weights, s.config, s.counters, s.sub_acc, s.ring,
        s.hist_fine, s.hist_coarse, s.tp_coefs, s.tp_history, s.tp_peak, s.sample_peak, s.meters,
    )  # fmt: skip
    for lane in range(2):
        sh.tp_max[k, lane] = 0.0


@_gil_kernel
def _io_out(outdata, io, old, sh, m_master, m_monitor, tap):
    """Device output for one block (output map, crossfade from ``old`` after a swap) and
    the meters. ``old`` is ``io`` itself when no crossfade runs; ``tap``: the loudness
    log's loudlog.TapState, or None."""
    n = outdata.shape[0]
    _map_out(io.eng_out, io.out_map, n, outdata)
    pos = sh.fade[0]
    length = sh.fade[1]
    if pos < length:
        _map_out(old.eng_out, old.out_map, n, sh.xfade)
        for i in range(n):
            g = min(1.0, max(0.0, (pos + i) / length))
            for col in range(outdata.shape[1]):
                outdata[i, col] = g * outdata[i, col] + (1.0 - g) * sh.xfade[i, col]
        sh.fade[0] = pos + n
    # meters: requests from the control thread first
    if sh.meter_ctl[_CTL_RESET_MASTER] != 0:
        _meter_reset(sh, METER_MASTER, m_master)
        sh.meter_ctl[_CTL_RESET_MASTER] = 0
    if sh.meter_ctl[_CTL_RESET_MONITOR] != 0:
        _meter_reset(sh, METER_MONITOR, m_monitor)
        sh.meter_ctl[_CTL_RESET_MONITOR] = 0
    if io.has_master[0] != 0:
        ld.loudness_process_state(io.master[:n], m_master)
    c0 = sh.mon_cols[0]
    c1 = sh.mon_cols[1]
    if 0 <= c0 < io.eng_out.shape[1] and 0 <= c1 < io.eng_out.shape[1]:
        buf = sh.mon_buf[:n]
        for i in range(n):
            buf[i, 0] = io.eng_out[i, c0]
            buf[i, 1] = io.eng_out[i, c1]
        ld.loudness_process_state(buf, m_monitor)
    if sh.meter_ctl[_CTL_INTERVAL_REQ] != sh.meter_ctl[_CTL_INTERVAL_DONE]:
        _meter_interval(sh, METER_MASTER, m_master)
        _meter_interval(sh, METER_MONITOR, m_monitor)
        sh.meter_ctl[_CTL_INTERVAL_DONE] = sh.meter_ctl[_CTL_INTERVAL_REQ]
    if tap is not None:
        tap_process(io.master, io.eng_out[:n], n, tap)


# ----------------------------------------------------------------------------------------
# control-side helpers


def make_io(engine, audio, max_frames: int) -> IoState:
    """The I/O state of one engine under an [audio] config (channel maps, buffers)."""
    session = engine.session
    n_in, n_out = session.n_inputs, session.n_outputs
    in_map = np.array(
        [m - 1 for m in audio.input_map[:n_in]] if audio.input_map else range(n_in),
        dtype=np.int64,
    )
    out_map = np.array(
        [m - 1 for m in audio.output_map[:n_out]] if audio.output_map else range(n_out),
        dtype=np.int64,
    )
    ext = np.array([i - 1 for i in session.ext_inputs] or [-1, -1], dtype=np.int64)
    master = getattr(engine.state, "mst_buf", None)
    has_master = isinstance(master, np.ndarray) and master.ndim == 2 and master.shape[1] == 2
    if not has_master:
        log.warning("this engine exposes no master bus buffer: the master meter stays silent")
        master = np.zeros((max_frames, 2))
    return IoState(
        in_map=in_map,
        out_map=out_map,
        ext=ext,
        eng_in=np.zeros((max_frames, n_in), np.float32),
        eng_out=np.zeros((max_frames, n_out), np.float32),
        master=master,
        has_master=np.array([1 if has_master else 0], dtype=np.int64),
    )


def make_shared(samplerate: int, max_frames: int, dev_out: int) -> Shared:
    return Shared(
        loop=np.zeros((1, 1), np.float32),
        loop_ctl=np.zeros(2, dtype=np.int64),
        src=np.zeros((int(SOURCE_RING_S * samplerate), 2), np.float32),
        src_ctl=np.zeros(4, dtype=np.int64),
        fade=np.zeros(2, dtype=np.int64),
        xfade=np.zeros((max_frames, dev_out), np.float32),
        mon_cols=np.full(2, -1, dtype=np.int64),
        mon_buf=np.zeros((max_frames, 2)),
        meter_ctl=np.zeros(4, dtype=np.int64),
        tp_last=np.zeros((2, 2)),
        sp_last=np.zeros((2, 2)),
        tp_max=np.zeros((2, 2)),
    )


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
    def _sh(self) -> Shared:
        return self._core.shared

    @property
    def capacity(self) -> int:
        return self._sh.src.shape[0]

    @property
    def buffered(self) -> int:
        ctl = self._sh.src_ctl
        return int(ctl[_SRC_WRITTEN] - ctl[_SRC_READ])

    @property
    def space(self) -> int:
        return self.capacity - self.buffered

    @property
    def underruns(self) -> int:
        return int(self._sh.src_ctl[_SRC_UNDERRUNS])

    @property
    def active(self) -> bool:
        return bool(self._sh.src_ctl[_SRC_ACTIVE])

    def activate(self, on: bool = True) -> None:
        self._sh.src_ctl[_SRC_ACTIVE] = 1 if on else 0

    def write(self, frames: np.ndarray) -> int:
        """Queue float ``[n, 2]`` frames; returns how many fitted (never blocks)."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 2 or frames.shape[1] != 2:
            raise ValueError(f"monitor source frames must be [n, 2], got {frames.shape}")
        ctl = self._sh.src_ctl
        ring = self._sh.src
        size = ring.shape[0]
        count = min(len(frames), self.space)
        start = int(ctl[_SRC_WRITTEN]) % size
        first = min(count, size - start)
        ring[start : start + first] = frames[:first]
        ring[: count - first] = frames[first:count]
        ctl[_SRC_WRITTEN] += count  # publish after the samples are in place
        return count

    def clear(self) -> None:
        """Drop what is buffered (the audio thread may read a few frames more)."""
        ctl = self._sh.src_ctl
        ctl[_SRC_READ] = ctl[_SRC_WRITTEN]


class _Slot:
    """What the callback runs: an engine, its I/O state, and views for the usual size."""

    __slots__ = ("engine", "in_view", "io", "out_view", "process")

    def __init__(self, engine, io: IoState, frames: int):
        self.engine = engine
        self.io = io
        self.process = engine.process
        self.in_view = io.eng_in[:frames]
        self.out_view = io.eng_out[:frames]


class AudioCore:
    """The callback, the engine it runs, the meters and the timing statistics.

    ``callback(indata, outdata, frames, time_info, status)`` has sounddevice's signature;
    :class:`VirtualDevice` calls it the same way. :meth:`swap` changes the engine from a
    control thread: the callback picks up the new one at its next block and crossfades
    from the old one over ``CROSSFADE_MS``.
    """

    def __init__(self, engine, audio, dev_in: int, dev_out: int, max_frames: int | None = None):
        self.audio = audio
        self.block_frames = audio.block_frames
        self.samplerate = engine.samplerate
        self.max_frames = int(max_frames or max(4 * audio.block_frames, 1024))
        self.dev_in, self.dev_out = dev_in, dev_out
        self.shared = make_shared(self.samplerate, self.max_frames, dev_out)
        self.meters = (
            ld.make_state(self.samplerate, np.ones(2)),
            ld.make_state(self.samplerate, np.ones(2)),
        )
        self.monitor_source = MonitorSource(self)
        self.player = None  # a reference.ReferencePlayer (its .state is read every block)
        self.tap = None  # a loudlog.TapState
        self._pair: tuple[_Slot, _Slot | None] = (
            _Slot(engine, make_io(engine, audio, self.max_frames), self.block_frames),
            None,
        )
        # timing: the callback writes, the control thread reads (see collect())
        self._times = np.zeros(TIMES_RING, dtype=np.int64)
        self.callbacks = 0
        self.xruns = 0
        self.last_status = ""
        self._collected = 0
        self.hist = np.zeros(HIST_US + 1, dtype=np.int64)
        self.max_ns = 0
        self.overlong = 0  # callbacks longer than a period

    # -- the audio thread -------------------------------------------------------------
    def callback(self, indata, outdata, frames, time_info, status) -> None:
        t0 = time.perf_counter_ns()
        if status:
            self.xruns += 1
            self.last_status = str(status)
        slot, old = self._pair  # one read: the control thread replaces the whole pair
        sh = self.shared
        player = self.player
        ps = None if player is None else player.state
        tap = self.tap
        if frames == self.block_frames:
            _io_in(indata, slot.io, sh, ps)
            slot.process(slot.in_view, slot.out_view)
            if old is None:
                _io_out(outdata, slot.io, slot.io, sh, self.meters[0], self.meters[1], tap)
            else:
                _io_in(indata, old.io, sh, None)
                old.process(old.in_view, old.out_view)
                _io_out(outdata, slot.io, old.io, sh, self.meters[0], self.meters[1], tap)
                if sh.fade[0] >= sh.fade[1]:
                    self._pair = (slot, None)
        else:
            self._odd_block(indata, outdata, frames, slot, old, ps, tap)
        self._times[self.callbacks % TIMES_RING] = time.perf_counter_ns() - t0
        self.callbacks += 1

    def _odd_block(self, indata, outdata, frames, slot, old, ps, tap) -> None:
        """A block of another size (some host APIs vary it): in pieces of at most
        ``max_frames`` (allocates views; rare by construction)."""
        sh = self.shared
        for start in range(0, frames, self.max_frames):
            stop = min(frames, start + self.max_frames)
            n = stop - start
            _io_in(indata[start:stop], slot.io, sh, ps)
            slot.process(slot.io.eng_in[:n], slot.io.eng_out[:n])
            other = slot.io
            if old is not None:
                _io_in(indata[start:stop], old.io, sh, None)
                old.process(old.io.eng_in[:n], old.io.eng_out[:n])
                other = old.io
            _io_out(outdata[start:stop], slot.io, other, sh, self.meters[0], self.meters[1], tap)
        if old is not None and sh.fade[0] >= sh.fade[1]:
            self._pair = (slot, None)

    # -- the control side ---------------------------------------------------------------
    @property
    def engine(self):
        return self._pair[0].engine

    def swap(self, engine, crossfade: bool = True) -> None:
        """Run ``engine`` from the next block on: unheard until its latency and
        ``SWAP_SETTLE_MS`` have passed, then crossfading from the current one over
        ``CROSSFADE_MS`` (when the stream runs). The new engine should have settled its
        parameters (the runtime primes it). Call from one control thread."""
        slot = _Slot(engine, make_io(engine, self.audio, self.max_frames), self.block_frames)
        if not crossfade:
            self._pair = (slot, None)
            return
        # a crossfade in progress ends within CROSSFADE_MS while the stream runs
        deadline = time.monotonic() + 0.5
        while self._pair[1] is not None and time.monotonic() < deadline:
            time.sleep(0.002)
        sh = self.shared
        sh.fade[1] = max(1, round(CROSSFADE_MS * 1e-3 * self.samplerate))
        # The new engine runs unheard until its look-ahead is full and its filters have
        # settled on the live input, then fades in: a swap is never a step.
        latency = int(getattr(engine, "latency_samples", 0))
        sh.fade[0] = -(latency + round(SWAP_SETTLE_MS * 1e-3 * self.samplerate))
        self._pair = (slot, self._pair[0])

    def set_player(self, player) -> None:
        """Mix a reference.ReferencePlayer into the external monitor inputs (None: stop).
        Compiles the callback's variant for it here, off the audio thread."""
        if player is not None:
            global player_fill
            from studiod.daemon.reference import player_fill

            io = make_io(self.engine, self.audio, self.max_frames)
            sh = make_shared(self.samplerate, self.max_frames, self.dev_out)
            _io_in(np.zeros((self.block_frames, self.dev_in), np.float32), io, sh, player.state)
        self.player = player

    def set_tap(self, tap) -> None:
        """Feed a loudlog.TapState every block (None: stop); compiles its variant here."""
        if tap is not None:
            global tap_process
            from studiod.daemon.loudlog import tap_process

            io = make_io(self.engine, self.audio, self.max_frames)
            sh = make_shared(self.samplerate, self.max_frames, self.dev_out)
            scratch = [ld.make_state(self.samplerate, np.ones(2)) for _ in range(2)]
            out = np.zeros((self.block_frames, self.dev_out), np.float32)
            probe = tap._replace(**{f: getattr(tap, f).copy() for f in tap._fields})
            _io_out(out, io, io, sh, scratch[0], scratch[1], probe)
        self.tap = tap

    def set_loop(self, programme: np.ndarray | None) -> None:
        """Play float32 ``[frames, k]`` into engine inputs 1…k in a loop (None: stop)."""
        if programme is None:
            self.shared.loop_ctl[0] = 0
            return
        programme = np.ascontiguousarray(programme, dtype=np.float32)
        sh = self.shared
        sh.loop_ctl[0] = 0
        self.shared = sh._replace(loop=programme)
        self.shared.loop_ctl[1] = 0
        self.shared.loop_ctl[0] = 1

    def set_monitor_meter(self, outputs: tuple[int, ...]) -> None:
        """Meter these 1-based engine outputs (the active system's) from now on, anew."""
        sh = self.shared
        cols = [o - 1 for o in outputs] or [-1]
        mono = len(cols) == 1
        sh.mon_cols[0] = -1  # off while the weights change
        self.meters[METER_MONITOR].weights[1] = 0.0 if mono else 1.0
        sh.mon_cols[1] = cols[-1]
        sh.mon_cols[0] = cols[0]
        sh.meter_ctl[_CTL_RESET_MONITOR] = 1

    def reset_meters(self) -> None:
        """Start both meters' integrated loudness, LRA and peak maxima anew."""
        self.shared.meter_ctl[_CTL_RESET_MASTER] = 1
        self.shared.meter_ctl[_CTL_RESET_MONITOR] = 1

    def request_interval(self) -> int:
        """Ask the callback to close the peak interval; returns the request number."""
        ctl = self.shared.meter_ctl
        ctl[_CTL_INTERVAL_REQ] += 1
        return int(ctl[_CTL_INTERVAL_REQ])

    def interval_done(self, request: int) -> bool:
        return int(self.shared.meter_ctl[_CTL_INTERVAL_DONE]) >= request

    def levels(self, k: int) -> Levels:
        """The reading of meter ``k`` (METER_MASTER or METER_MONITOR)."""
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
        """Fold the callback times recorded since the last call into the histogram."""
        done = self.callbacks
        start = max(self._collected, done - TIMES_RING)
        if done <= start:
            return
        idx = np.arange(start, done) % TIMES_RING
        ns = self._times[idx]
        self.max_ns = max(self.max_ns, int(ns.max()))
        period_ns = 1e9 * self.block_frames / self.samplerate
        self.overlong += int(np.count_nonzero(ns > period_ns))
        us = np.minimum(ns // 1000, HIST_US)
        self.hist += np.bincount(us, minlength=HIST_US + 1)
        self._collected = done

    def timing(self) -> dict:
        """Callback duration percentiles (µs and % of the period) since start."""
        self.collect()
        period_us = 1e6 * self.block_frames / self.samplerate
        total = int(self.hist.sum())
        out = {"callbacks": self.callbacks, "xruns": self.xruns, "period_us": period_us,
               "overlong": self.overlong}  # fmt: skip
        cum = np.cumsum(self.hist)
        for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
            if total:
                us = float(np.searchsorted(cum, math.ceil(q * total)))
            else:
                us = 0.0
            out[f"{name}_us"] = us
            out[f"{name}_pct"] = 100.0 * us / period_us
        out["max_us"] = self.max_ns / 1000.0
        out["max_pct"] = 100.0 * out["max_us"] / period_us
        return out

    def warm_up(self) -> None:
        """Run the compiled helpers once (compiles or loads them from numba's cache)."""
        dev_in = np.zeros((self.block_frames, self.dev_in), np.float32)
        dev_out = np.zeros((self.block_frames, self.dev_out), np.float32)
        saved = (self.callbacks, self.xruns)
        self.callback(dev_in, dev_out, self.block_frames, None, None)
        if self.player is None:  # the variants used during a crossfade
            _io_in(dev_in, make_io(self.engine, self.audio, self.max_frames),
                   make_shared(self.samplerate, self.max_frames, self.dev_out), None)  # fmt: skip
        self.callbacks, self.xruns = saved
        self._times[:] = 0
        self.reset_meters()


# ----------------------------------------------------------------------------------------
# the virtual device


class VirtualStatus:
    """sounddevice.CallbackFlags' look-alike for :class:`VirtualDevice`."""

    __slots__ = ("input_overflow", "output_underflow")

    def __init__(self, input_overflow: bool = False, output_underflow: bool = False):
        self.input_overflow = input_overflow
        self.output_underflow = output_underflow

    def __bool__(self) -> bool:
        return self.input_overflow or self.output_underflow

    def __str__(self) -> str:
        names = [n for n in self.__slots__ if getattr(self, n)]
        return ", ".join(names) or "ok"


class VirtualDevice:
    """A sound card made of a thread: every ``block_frames`` it hands the callback an input
    block and takes an output block, on the same deadlines as a duplex interface with two
    periods of buffering (the block for period k is due one period after its input was
    complete). A late callback is an xrun, reported through ``status`` like PortAudio does.

    realtime=False runs blocks back to back as fast as the callback allows (tests).
    ``source`` (float32 [frames, in_channels]) is looped into the inputs; ``tap_frames``
    keeps the last outputs for inspection (:meth:`tail`).
    """

    def __init__(
        self,
        callback,
        samplerate: int,
        block_frames: int,
        in_channels: int,
        out_channels: int,
        realtime: bool = True,
        priority: int = 0,
        source: np.ndarray | None = None,
        tap_frames: int = 0,
        name: str = "virtual",
    ):
        self.callback = callback
        self.samplerate = int(samplerate)
        self.block_frames = int(block_frames)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.realtime = realtime
        self.priority = priority
        self.name = name
        self.source = None if source is None else np.ascontiguousarray(source, np.float32)
        self._indata = np.zeros((block_frames, in_channels), np.float32)
        self._outdata = np.zeros((block_frames, out_channels), np.float32)
        self._tap = np.zeros((max(tap_frames, 0), out_channels), np.float32)
        self.tapped = 0  # frames written to the tap so far
        self._tap_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = False
        self._failed = False
        self.error: str | None = None
        self.xruns = 0
        self.blocks = 0
        self.priority_applied = False

    @property
    def period_s(self) -> float:
        return self.block_frames / self.samplerate

    @property
    def latency_s(self) -> tuple[float, float]:
        return self.period_s, 2 * self.period_s

    @property
    def active(self) -> bool:
        return self._running and not self._failed

    def start(self) -> None:
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._run, name="studiod-audio", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._running = False
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        self._thread = None

    def fail(self, reason: str = "device lost") -> None:
        """Simulate a lost device: the callbacks stop and ``active`` turns False."""
        self.error = reason
        self._failed = True

    def tail(self, frames: int) -> np.ndarray:
        """The last ``frames`` output frames (a copy, oldest first)."""
        size = len(self._tap)
        frames = min(frames, size, self.tapped)
        with self._tap_lock:
            end = self.tapped % size if size else 0
            idx = (np.arange(end - frames, end)) % max(size, 1)
            return self._tap[idx].copy()

    def _set_priority(self) -> None:
        if self.priority <= 0 or not hasattr(os, "sched_setscheduler"):
            return
        try:  # Linux: pid 0 is the calling thread
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.priority))
            self.priority_applied = True
        except OSError as exc:
            log.info("virtual device: no realtime priority (%s); running unprivileged", exc)

    def _run(self) -> None:
        self._set_priority()
        n = self.block_frames
        period_ns = round(1e9 * n / self.samplerate)
        indata, outdata = self._indata, self._outdata
        src = self.source
        src_pos = 0
        status = VirtualStatus()
        clean = VirtualStatus()
        ready_ns = time.perf_counter_ns() + period_ns  # the first input block is complete
        size = len(self._tap)
        try:
            while self._running and not self._failed:
                if self.realtime:
                    now = time.perf_counter_ns()
                    if ready_ns > now:
                        time.sleep((ready_ns - now) * 1e-9)
                    elif now - ready_ns > period_ns:
                        # woke a period or more late: the input overran; resynchronise
                        status.input_overflow = True
                        self.xruns += 1
                        ready_ns = now
                if src is not None:
                    stop = src_pos + n
                    if stop <= len(src):
                        indata[:] = src[src_pos:stop, : self.in_channels]
                    else:
                        k = len(src) - src_pos
                        indata[:k] = src[src_pos:, : self.in_channels]
                        indata[k:] = src[: n - k, : self.in_channels]
                    src_pos = stop % len(src)
                self.callback(indata, outdata, n, None, status if status else clean)
                status.input_overflow = status.output_underflow = False
                if self.realtime and time.perf_counter_ns() > ready_ns + period_ns:
                    status.output_underflow = True  # reported with the next block
                    self.xruns += 1
                if size:
                    with self._tap_lock:
                        pos = self.tapped % size
                        self._tap[pos : pos + n] = outdata[: size - pos]
                        if pos + n > size:
                            self._tap[: pos + n - size] = outdata[size - pos :]
                        self.tapped += n
                self.blocks += 1
                ready_ns += period_ns
        except Exception as exc:  # the callback raised: the stream is dead, like PortAudio's
            self.error = f"{type(exc).__name__}: {exc}"
            self._failed = True
            log.error("virtual device stopped: %s", self.error)


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
    sd._terminate()
    sd._initialize()


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


class PortAudioDevice:
    """A duplex sounddevice stream on the configured device, calling ``callback``."""

    def __init__(self, audio, in_channels: int, out_channels: int, callback):
        self.audio = audio
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.callback = callback
        self.samplerate = audio.samplerate
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
        self._finished = False
        common = dict(
            samplerate=self.samplerate,
            blocksize=self.block_frames,
            dtype="float32",
            latency=latency,
            finished_callback=self._on_finished,
            dither_off=True,
        )
        try:
            if self.in_channels:
                stream = sd.Stream(
                    device=(d["index"], d["index"]),
                    channels=(self.in_channels, self.out_channels),
                    callback=self.callback,
                    **common,
                )
            else:  # output only (the demo plays its own programme)
                silence = np.zeros((self.block_frames, 0), np.float32)

                def output_only(outdata, frames, time_info, status):
                    empty = silence if frames == len(silence) else np.zeros((frames, 0), np.float32)
                    self.callback(empty, outdata, frames, time_info, status)

                stream = sd.OutputStream(
                    device=d["index"], channels=self.out_channels, callback=output_only, **common
                )
            stream.start()
        except sd.PortAudioError as exc:
            raise DeviceError(f"{self.name}: {exc}") from None
        self._stream = stream

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

_JackProcess = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p)
_JackShutdown = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_JackXrun = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_JackMessage = ctypes.CFUNCTYPE(None, ctypes.c_char_p)


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
            "jack_set_process_callback": (ctypes.c_int, [p, _JackProcess, p]),
            "jack_on_info_shutdown": (None, [p, _JackShutdown, p]),
            "jack_set_xrun_callback": (ctypes.c_int, [p, _JackXrun, p]),
            "jack_activate": (ctypes.c_int, [p]),
            "jack_deactivate": (ctypes.c_int, [p]),
            "jack_get_sample_rate": (ctypes.c_uint32, [p]),
            "jack_get_buffer_size": (ctypes.c_uint32, [p]),
            "jack_get_ports": (ctypes.POINTER(c), [p, c, c, ctypes.c_ulong]),
            "jack_free": (None, [p]),
            "jack_connect": (ctypes.c_int, [p, c, c]),
            "jack_set_error_function": (None, [_JackMessage]),
            "jack_set_info_function": (None, [_JackMessage]),
        }
        for fn, (restype, argtypes) in sig.items():
            f = getattr(lib, fn)
            f.restype, f.argtypes = restype, argtypes
        self.lib = lib
        # libjack prints every failed connection attempt; the daemon logs its own line
        self._quiet = _JackMessage(lambda message: None)
        lib.jack_set_error_function(self._quiet)
        lib.jack_set_info_function(self._quiet)
        get_buffer = lib.jack_port_get_buffer
        get_buffer.argtypes = [ctypes.c_size_t, ctypes.c_uint32]
        get_buffer.restype = ctypes.POINTER(ctypes.c_float)

        # Compiled here (a ctypes function's address cannot go into numba's disk cache):
        # the whole copy between JACK's per-port buffers and our interleaved blocks.
        @numba.njit(nogil=False, fastmath=FASTMATH)
        def read(ports, n, dest):
            for c in range(ports.shape[0]):
                buf = numba.carray(get_buffer(ports[c], n), (n,))
                for i in range(n):
                    dest[i, c] = buf[i]

        @numba.njit(nogil=False, fastmath=FASTMATH)
        def write(ports, n, src):
            for c in range(ports.shape[0]):
                buf = numba.carray(get_buffer(ports[c], n), (n,))
                for i in range(n):
                    buf[i] = src[i, c]

        self.read, self.write = read, write
        sig = "(uint64[::1], uint32, float32[:, ::1])"
        read.compile(sig)
        write.compile(sig)

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
    server's physical ports when ``audio.autoconnect``), calling ``callback`` with
    sounddevice's signature from JACK's process thread."""

    def __init__(self, audio, in_channels: int, out_channels: int, callback):
        self.audio = audio
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.callback = callback
        self.samplerate = audio.samplerate
        self.block_frames = audio.block_frames
        self.name = f"JACK client {audio.client_name}"
        self.error: str | None = None
        self.xruns = 0
        self._client = None
        self._dead = False
        self._xrun_pending = False
        self._callbacks = None

    def start(self) -> None:
        try:
            jack = _Jack.get()
        except OSError as exc:
            raise DeviceError(f"libjack is not available: {exc}") from None
        lib = jack.lib
        status = ctypes.c_int(0)
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
        if rate != self.samplerate:
            raise DeviceError(f"the JACK server runs at {rate} Hz, the config at "
                              f"{self.samplerate} Hz")  # fmt: skip
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
        self._ports_in = np.array(ports_in, dtype=np.uint64)
        self._ports_out = np.array(ports_out, dtype=np.uint64)
        frames = max(period, 1)
        indata = np.zeros((frames, self.in_channels), np.float32)
        outdata = np.zeros((frames, self.out_channels), np.float32)
        read, write, callback = jack.read, jack.write, self.callback
        p_in, p_out = self._ports_in, self._ports_out
        ok = VirtualStatus()
        flagged = VirtualStatus(output_underflow=True)

        def process(nframes, arg):
            nonlocal indata, outdata
            try:
                if nframes != len(indata):  # the server's period changed (jack_bufsize)
                    indata = np.zeros((nframes, self.in_channels), np.float32)
                    outdata = np.zeros((nframes, self.out_channels), np.float32)
                read(p_in, nframes, indata)
                status = ok
                if self._xrun_pending:
                    self._xrun_pending = False
                    status = flagged
                callback(indata, outdata, nframes, None, status)
                write(p_out, nframes, outdata)
                return 0
            except BaseException as exc:  # never let an exception into libjack
                self.error = f"{type(exc).__name__}: {exc}"
                return 1

        def shutdown(code, reason, arg):
            self.error = f"JACK server gone: {reason.decode(errors='replace') if reason else code}"
            self._dead = True

        def xrun(arg):
            self.xruns += 1
            self._xrun_pending = True
            return 0

        self._callbacks = (_JackProcess(process), _JackShutdown(shutdown), _JackXrun(xrun))
        lib.jack_set_process_callback(client, self._callbacks[0], None)
        lib.jack_on_info_shutdown(client, self._callbacks[1], None)
        lib.jack_set_xrun_callback(client, self._callbacks[2], None)
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
