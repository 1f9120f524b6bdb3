"""The loudness log: what was heard, once a second, in SQLite; programme segments; noise
dose; alerts.

The maths (the audio-thread tap, its hop records, segments, A-weighting and the noise dose)
is :mod:`studiod.dsp.loudtap`. Here, on the control side: :meth:`LoudnessLog.update`
(about once a second) drains the taps' rings and derives the per-second row of each bus,
programme segments and their summaries, listening level and noise dose; rows go to a
bounded queue and one writer thread owns the SQLite connection (WAL: ``studiod log`` reads
while the daemon writes). The live alerts are logged here too.

The dose restarts at local midnight and survives a restart of the daemon (table ``dose``).
"""

from __future__ import annotations

import collections
import math
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from studiod.daemon.logdb import (
    READING_COLS,
    LogConfig,
    Writer,
    init_db,
    local_day,
    platform_target,
)
from studiod.dsp import loudness as ld
from studiod.dsp.loudtap import (
    HOP_A_MS,
    HOP_M,
    HOP_PEAK,
    HOP_S,
    HOP_TP,
    BusSpec,
    Segment,
    SegmentDetector,
    TapReader,
    calibration_mean_square,
    correlation,
    db_or_none,
    dose_percent,
    make_tap_state,
)

# =============================================================================================
# The log
# =============================================================================================


class _BusLog:
    """Control-side state of one bus."""

    def __init__(self, index, spec: BusSpec, tap, config, hop_s, samplerate, dose_rows):
        self.index = index
        self.spec = spec
        self.reader = TapReader(tap, index)
        self.detector = SegmentDetector(spec.name, config, hop_s) if spec.segments else None
        self.cal_offset_db = None
        if spec.spl_at_minus20dbfs is not None:
            cal = calibration_mean_square(samplerate)
            self.cal_offset_db = spec.spl_at_minus20dbfs - 10.0 * math.log10(cal)
        self.day = None
        self.dose_seconds = 0.0
        self.dose_energy = 0.0
        self.dose = 0.0
        self._dose_rows = dose_rows

    def level_dba(self, a_ms: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return self.cal_offset_db + 10.0 * np.log10(a_ms)

    def add_dose(self, day: str, levels: np.ndarray, hop_s: float, threshold) -> None:
        if day != self.day:  # first second, or local midnight: continue today's dose
            self.day = day
            saved_day, rows = self._dose_rows
            seconds, energy, percent = (0.0, 0.0, 0.0)
            if saved_day == day:
                seconds, energy, percent = rows.get(self.spec.name, (0.0, 0.0, 0.0))
            self.dose_seconds, self.dose_energy, self.dose = seconds, energy, percent
        finite = np.isfinite(levels)
        self.dose_seconds += hop_s * len(levels)
        self.dose_energy += float(np.sum(10.0 ** (levels[finite] / 10.0)) * hop_s)
        self.dose += dose_percent(levels, hop_s, threshold)

    @property
    def laeq_day_dba(self) -> float | None:
        if self.dose_seconds <= 0 or self.dose_energy <= 0:
            return None
        return 10.0 * math.log10(self.dose_energy / self.dose_seconds)


class LoudnessLog:
    """The loudness log of one engine (see the module docstring).

    >>> log = LoudnessLog(state_dir / LOG_FILENAME, 48000, buses_for_session(session))
    >>> tap_process(engine.state.mst_buf, outdata, frames, log.tap)   # audio callback
    >>> log.update(system="studio")                                   # control, 1 Hz
    >>> log.close()

    ``update`` never blocks on the disk: rows go to a bounded queue (``dropped`` counts
    what did not fit) and one writer thread commits them.
    """

    def __init__(
        self,
        path: str | Path,
        samplerate: float,
        buses: Sequence[BusSpec],
        config: LogConfig | None = None,
        now: float | None = None,
    ):
        self.path = Path(path)
        self.config = config or LogConfig()
        self.target = platform_target(self.config.target)
        self.samplerate = float(samplerate)
        self.buses = tuple(buses)
        self.tap = make_tap_state(self.samplerate, self.buses, self.config.ring_hops)
        sub_frames, per_hop = ld.block_geometry(self.samplerate)
        self.hop_frames = sub_frames * per_hop
        self.hop_s = self.hop_frames / self.samplerate
        now = time.time() if now is None else now
        dose_rows, self.interrupted_segments = init_db(self.path, now)
        self._bus = [
            _BusLog(i, spec, self.tap, self.config, self.hop_s, self.samplerate, dose_rows)
            for i, spec in enumerate(self.buses)
        ]
        self._anchor: float | None = None  # wall time of hop 0
        self._lock = threading.Lock()
        self.dropped = 0
        self.recent_segments: collections.deque = collections.deque(maxlen=64)
        self.latest: dict[str, dict] = {}
        self._writer = Writer(self.path, self.config)
        self._writer.start()
        self._closed = False

    # -- control side ---------------------------------------------------------------------
    def hop_time(self, hop: float) -> float:
        """Wall time (Unix s) of the start of hop ``hop`` (end of hop ``hop - 1``)."""
        return (self._anchor or 0.0) + hop * self.hop_s

    def update(self, system: str | None = None, now: float | None = None) -> None:
        """Drain the taps and log one row per bus; call about once a second from a control
        thread. ``system``: the monitor system in use; ``now``: Unix time (default: now)."""
        now = time.time() if now is None else now
        with self._lock:
            if self._closed:
                return
            rows = []
            for bus in self._bus:
                recs = bus.reader.drain()
                if not len(recs):
                    continue
                # hop times follow the audio clock, anchored once to the wall clock: the
                # producer's newest hop ended about now
                if self._anchor is None:
                    self._anchor = now - bus.reader.head_seen * self.hop_s
                rows.append(self._bus_second(bus, recs, system or "", now))
            if rows:
                self._put(("readings", rows))

    def _bus_second(self, bus: _BusLog, recs: np.ndarray, system: str, now: float):
        segment = None
        if bus.detector is not None:
            detector = bus.detector
            for rec in recs:
                for kind, seg in detector.feed(rec, system, self.hop_time):
                    self._segment_event(kind, seg)
            segment = detector.segment
            if segment is not None:
                self._put(("segment", (id(segment), segment.summary(self.target, self.hop_s))))
        m = recs[:, HOP_M]
        laeq = dose = None
        if bus.cal_offset_db is not None:
            levels = bus.level_dba(recs[:, HOP_A_MS])
            bus.add_dose(local_day(now), levels, self.hop_s, self.config.dose_threshold_dba)
            mean_ms = float(np.mean(recs[:, HOP_A_MS]))
            laeq = ld.finite_or_none(float(bus.level_dba(np.array([mean_ms]))[0]))
            dose = bus.dose
            self._put(
                (
                    "dose",
                    (bus.day, bus.spec.name, bus.dose_seconds, bus.dose_energy, bus.dose,
                     bus.laeq_day_dba),
                )
            )  # fmt: skip
        row = (
            round(now, 3),
            bus.spec.name,
            system or None,
            ld.finite_or_none(float(m[-1])),
            ld.finite_or_none(float(np.max(m))),
            ld.finite_or_none(float(recs[-1, HOP_S])),
            ld.finite_or_none(segment.integrated_lufs) if segment is not None else None,
            db_or_none(float(np.max(recs[:, HOP_TP]))),
            db_or_none(float(np.max(recs[:, HOP_PEAK]))),
            laeq,
            dose,
            id(segment) if segment is not None else None,
            correlation(recs),
        )
        self.latest[bus.spec.name] = dict(zip(READING_COLS, row, strict=True))
        return row

    def _segment_event(self, kind: str, seg: Segment) -> None:
        if kind == "start":
            self._put(("segment", (id(seg), seg.summary(self.target, self.hop_s))))
        elif kind == "end":
            self._put(("segment", (id(seg), seg.summary(self.target, self.hop_s))))
            self.recent_segments.append(seg)
        else:
            self._put(("discard", id(seg)))

    def _put(self, item) -> None:
        try:
            self._writer.q.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def alert(self, t: float, kind: str, severity: str, bus: str, message: str) -> None:
        """Log an alert's raise or clear (``studiod log --alerts``)."""
        self._put(("alert", (round(t, 3), kind, severity, bus, message)))

    def calibrated_buses(self) -> list[str]:
        """The buses with an SPL calibration (listening level and dose)."""
        return [b.spec.name for b in self._bus if b.cal_offset_db is not None]

    def dose(self, bus: str) -> float | None:
        """Today's noise dose (%) of a calibrated bus so far."""
        for b in self._bus:
            if b.spec.name == bus and b.cal_offset_db is not None:
                return b.dose
        return None

    @property
    def lost_hops(self) -> int:
        """Hop records overwritten before the control thread read them (it stalled)."""
        return sum(b.reader.lost for b in self._bus)

    @property
    def write_errors(self) -> int:
        return self._writer.errors

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed (and retention applied)."""
        event = threading.Event()
        try:
            self._writer.q.put(("flush", event), timeout=timeout)
        except queue.Full:
            return False
        return event.wait(timeout)

    def close(self, now: float | None = None) -> None:
        """Log what is left, close open segments, stop the writer thread."""
        with self._lock:
            if self._closed:
                return
        self.update(now=now)
        with self._lock:
            self._closed = True
            for bus in self._bus:
                if bus.detector is not None:
                    for kind, seg in bus.detector.flush(self.hop_time):
                        self._segment_event(kind, seg)
        self._writer.q.put(("stop", None))
        self._writer.join(timeout=30.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
