"""The loudness log's database: schema, the one writer thread, queries, CSV and the plot.

SQLite in WAL mode: one writer (the daemon's :class:`Writer` thread), any number of
readers (``studiod log`` while the daemon runs). Tables: ``readings`` (one row per bus and
second), ``segments`` (programme segments and their verdicts), ``dose`` (the daily noise
dose per calibrated bus), ``alerts`` (every raise and clear of the live alerts). No numba
here: ``studiod log`` imports only this module.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from studiod.dsp.targets import Target
from studiod.dsp.targets import target as find_target

LOG_FILENAME = "loudness.sqlite3"
ABSOLUTE_GATE_LUFS = -70.0  # BS.1770-4 section 2.8: no programme is quieter than this
SCHEMA_VERSION = 2  # 2: the alerts table and the correlation column


@dataclass(frozen=True)
class LogConfig:
    """What the log keeps and how it finds programme segments (levels in LUFS, times in s).

    retention_days / max_rows bound the per-second table (both apply); segments and dose
    rows follow retention_days.
    """

    retention_days: float = 31.0
    max_rows: int = 4_000_000
    target: str | Target = "spotify"
    start_lufs: float = -50.0
    stop_lufs: float = -60.0
    start_hold_s: float = 1.0
    stop_hold_s: float = 3.0
    min_segment_s: float = 5.0
    dose_threshold_dba: float | None = None
    prune_interval_s: float = 60.0
    ring_hops: int = 1200  # dsp.loudtap.DEFAULT_RING_HOPS: 2 minutes of hop records

    def __post_init__(self) -> None:
        platform_target(self.target)
        for name in ("retention_days", "start_hold_s", "min_segment_s", "prune_interval_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"loudness log: {name} must be a positive number, got {v!r}")
        if not (math.isfinite(self.stop_hold_s) and self.stop_hold_s >= 0.5):
            # >= 0.4 s keeps consecutive segments' 400 ms blocks apart
            raise ValueError("loudness log: stop_hold_s must be >= 0.5")
        if not (isinstance(self.max_rows, int) and self.max_rows >= 1):
            raise ValueError("loudness log: max_rows must be a positive integer")
        for name in ("start_lufs", "stop_lufs"):
            v = getattr(self, name)
            if not (math.isfinite(v) and ABSOLUTE_GATE_LUFS <= v <= 0.0):
                raise ValueError(f"loudness log: {name} must be from -70 to 0 LUFS, got {v!r}")
        if self.stop_lufs > self.start_lufs:
            raise ValueError("loudness log: stop_lufs must not be above start_lufs")
        if not (isinstance(self.ring_hops, int) and self.ring_hops >= 20):
            raise ValueError("loudness log: ring_hops must be an integer >= 20")


def platform_target(target: str | Target) -> Target:
    """A target of the one table (:mod:`studiod.dsp.targets`) by name, or ``target``."""
    return target if isinstance(target, Target) else find_target(target)


# =============================================================================================
# SQLite
# =============================================================================================

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,                -- Unix time (s) at the end of the second
    bus TEXT NOT NULL,              -- "master" or a monitor system
    system TEXT,                    -- monitor system in use
    momentary_lufs REAL,            -- latest 400 ms loudness (NULL: no signal)
    momentary_max_lufs REAL,        -- highest of the second's ten momentary values
    shortterm_lufs REAL,            -- latest 3 s loudness
    integrated_lufs REAL,           -- of the open programme segment so far (NULL: none)
    true_peak_dbtp REAL,            -- highest true peak in the second
    sample_peak_dbfs REAL,
    laeq_dba REAL,                  -- listening level, A-weighted Leq of the second
    dose_percent REAL,              -- daily noise dose so far
    segment_id INTEGER,
    correlation REAL                -- L/R correlation of the second (-1..1; NULL: silence)
);
CREATE INDEX IF NOT EXISTS readings_t ON readings (t);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    bus TEXT NOT NULL,
    start_t REAL NOT NULL,
    end_t REAL,
    duration_s REAL,
    integrated_lufs REAL,
    loudness_range_lu REAL,
    true_peak_dbtp REAL,
    momentary_max_lufs REAL,
    shortterm_max_lufs REAL,
    target TEXT,
    target_lufs REAL,
    target_true_peak_dbtp REAL,
    deviation_lu REAL,
    compliant INTEGER,
    systems TEXT,
    status TEXT NOT NULL            -- open, closed, interrupted (daemon stopped hard)
);
CREATE INDEX IF NOT EXISTS segments_start ON segments (start_t);
CREATE TABLE IF NOT EXISTS dose (
    day TEXT NOT NULL,              -- local date, YYYY-MM-DD
    bus TEXT NOT NULL,
    seconds REAL NOT NULL,          -- time metered
    energy REAL NOT NULL,           -- sum of 10^(L_A/10) * seconds
    dose_percent REAL NOT NULL,
    laeq_dba REAL,                  -- A-weighted Leq over the metered time
    PRIMARY KEY (day, bus)
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,                -- Unix time of the raise or clear
    kind TEXT NOT NULL,             -- true_peak, clip, target, mono, dose, device, xrun
    severity TEXT NOT NULL,         -- info, warning, critical; clear when it ended
    bus TEXT,
    message TEXT
);
CREATE INDEX IF NOT EXISTS alerts_t ON alerts (t);
"""

READING_COLS = (
    "t",
    "bus",
    "system",
    "momentary_lufs",
    "momentary_max_lufs",
    "shortterm_lufs",
    "integrated_lufs",
    "true_peak_dbtp",
    "sample_peak_dbfs",
    "laeq_dba",
    "dose_percent",
    "segment_id",
    "correlation",
)
_SEGMENT_ID = READING_COLS.index("segment_id")
ALERT_COLS = ("t", "kind", "severity", "bus", "message")
SEGMENT_COLS = (
    "bus",
    "start_t",
    "end_t",
    "duration_s",
    "integrated_lufs",
    "loudness_range_lu",
    "true_peak_dbtp",
    "momentary_max_lufs",
    "shortterm_max_lufs",
    "target",
    "target_lufs",
    "target_true_peak_dbtp",
    "deviation_lu",
    "compliant",
    "systems",
    "status",
)


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: never corrupt; a power cut may lose the last second(s) of log
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a version 1 log up to date (its rows stay)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(readings)")}
    if "correlation" not in columns:
        conn.execute("ALTER TABLE readings ADD COLUMN correlation REAL")
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)",
                 (str(SCHEMA_VERSION),))  # fmt: skip


def init_db(path: Path, now: float) -> tuple[tuple[str, dict], int]:
    """Create the schema; mark segments left open by a hard stop as interrupted; return
    (today, today's dose rows: bus -> (seconds, energy, dose)) and the number of such
    segments."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    try:
        conn.executescript(_SCHEMA)
        _migrate(conn)
        cur = conn.execute("UPDATE segments SET status = 'interrupted' WHERE status = 'open'")
        interrupted = cur.rowcount
        day = local_day(now)
        dose = {
            bus: (seconds, energy, percent)
            for bus, seconds, energy, percent in conn.execute(
                "SELECT bus, seconds, energy, dose_percent FROM dose WHERE day = ?", (day,)
            )
        }
    finally:
        conn.close()
    return (day, dose), interrupted


def local_day(t: float) -> str:
    return dt.datetime.fromtimestamp(t).date().isoformat()


class Writer(threading.Thread):
    """The one thread that writes the database: batches whatever is queued per transaction.
    ``config``: retention_days, max_rows, prune_interval_s (a ``loudlog.LogConfig``)."""

    def __init__(self, path: Path, config):
        super().__init__(name="studiod-loudlog", daemon=True)
        self.path = path
        self.cfg = config
        self.q: queue.Queue = queue.Queue(maxsize=20000)
        self.errors = 0
        self.last_error: str | None = None
        self._last_prune = 0.0
        self._segment_ids: dict[int, int] = {}  # id(Segment) -> rowid

    def run(self) -> None:
        conn = connect(self.path)
        try:
            while True:
                items = [self.q.get()]
                while True:
                    try:
                        items.append(self.q.get_nowait())
                    except queue.Empty:
                        break
                stop = False
                events = []
                try:
                    conn.execute("BEGIN")
                    for kind, payload in items:
                        if kind == "stop":
                            stop = True
                        elif kind == "flush":
                            events.append(payload)
                        else:
                            self._apply(conn, kind, payload)
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self.errors += 1
                    self.last_error = str(exc)
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                now = time.time()
                if events or stop or now - self._last_prune >= self.cfg.prune_interval_s:
                    self._prune(conn, now)
                for event in events:
                    event.set()
                if stop:
                    return
        finally:
            conn.close()

    def _apply(self, conn, kind, payload) -> None:
        if kind == "readings":
            k = _SEGMENT_ID  # the in-memory segment's key becomes its row id
            rows = [
                (*row[:k], self._segment_ids.get(row[k]) if row[k] else None, *row[k + 1 :])
                for row in payload
            ]
            conn.executemany(
                f"INSERT INTO readings ({', '.join(READING_COLS)}) "
                f"VALUES ({', '.join('?' * len(READING_COLS))})",
                rows,
            )
        elif kind == "segment":
            key, summary = payload
            values = [summary[c] for c in SEGMENT_COLS]
            rowid = self._segment_ids.get(key)
            if rowid is None:
                cur = conn.execute(
                    f"INSERT INTO segments ({', '.join(SEGMENT_COLS)}) "
                    f"VALUES ({', '.join('?' * len(SEGMENT_COLS))})",
                    values,
                )
                self._segment_ids[key] = cur.lastrowid
            else:
                conn.execute(
                    f"UPDATE segments SET {', '.join(c + ' = ?' for c in SEGMENT_COLS)} "
                    "WHERE id = ?",
                    [*values, rowid],
                )
                if summary["status"] != "open":
                    del self._segment_ids[key]
        elif kind == "discard":
            rowid = self._segment_ids.pop(payload, None)
            if rowid is not None:
                conn.execute("DELETE FROM segments WHERE id = ?", (rowid,))
                conn.execute("UPDATE readings SET segment_id = NULL WHERE segment_id = ?", (rowid,))
        elif kind == "alert":
            conn.execute(
                f"INSERT INTO alerts ({', '.join(ALERT_COLS)}) VALUES (?, ?, ?, ?, ?)", payload
            )
        elif kind == "dose":
            conn.execute(
                "INSERT INTO dose (day, bus, seconds, energy, dose_percent, laeq_dba) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, bus) DO UPDATE SET "
                "seconds = excluded.seconds, energy = excluded.energy, "
                "dose_percent = excluded.dose_percent, laeq_dba = excluded.laeq_dba",
                payload,
            )

    def _prune(self, conn, now: float) -> None:
        self._last_prune = now
        horizon = now - self.cfg.retention_days * 86400.0
        try:
            conn.execute("BEGIN")
            conn.execute("DELETE FROM readings WHERE t < ?", (horizon,))
            conn.execute(
                "DELETE FROM readings WHERE id <= (SELECT MAX(id) FROM readings) - ?",
                (self.cfg.max_rows,),
            )
            conn.execute("DELETE FROM segments WHERE status != 'open' AND start_t < ?", (horizon,))
            conn.execute("DELETE FROM dose WHERE day < ?", (local_day(horizon),))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self.errors += 1
            self.last_error = str(exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")


# =============================================================================================
# Queries, CSV, plot (for ``studiod log`` and tests)
# =============================================================================================


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection (the daemon may be writing at the same time: WAL)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no loudness log here")
    conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=10.0)
    conn.row_factory = sqlite3.Row
    return conn


def _bus_filter(buses: Iterable[str] | None) -> tuple[str, list]:
    buses = list(buses or [])
    if not buses:
        return "", []
    return f" AND bus IN ({', '.join('?' * len(buses))})", buses


def query_readings(
    path, t_from: float, t_to: float, buses: Iterable[str] | None = None
) -> list[dict]:
    """Per-second rows with t_from <= t <= t_to, oldest first."""
    where, args = _bus_filter(buses)
    with open_readonly(path) as conn:
        cur = conn.execute(
            f"SELECT {', '.join(READING_COLS)} FROM readings WHERE t >= ? AND t <= ?{where} "
            "ORDER BY t, id",
            [t_from, t_to, *args],
        )
        return [dict(r) for r in cur]


def query_segments(
    path, t_from: float, t_to: float, buses: Iterable[str] | None = None
) -> list[dict]:
    """Segments that overlap [t_from, t_to], oldest first."""
    where, args = _bus_filter(buses)
    with open_readonly(path) as conn:
        cur = conn.execute(
            f"SELECT id, {', '.join(SEGMENT_COLS)} FROM segments "
            f"WHERE start_t <= ? AND (end_t IS NULL OR end_t >= ? OR status = 'open'){where} "
            "ORDER BY start_t, id",
            [t_to, t_from, *args],
        )
        return [dict(r) for r in cur]


def query_dose(path, t_from: float, t_to: float) -> list[dict]:
    """Daily dose rows for the days from t_from to t_to."""
    with open_readonly(path) as conn:
        cur = conn.execute(
            "SELECT day, bus, seconds, dose_percent, laeq_dba FROM dose "
            "WHERE day >= ? AND day <= ? ORDER BY day, bus",
            (local_day(t_from), local_day(t_to)),
        )
        return [dict(r) for r in cur]


def query_alerts(path, t_from: float, t_to: float) -> list[dict]:
    """Alert raises and clears with t_from <= t <= t_to, oldest first."""
    with open_readonly(path) as conn:
        cur = conn.execute(
            f"SELECT {', '.join(ALERT_COLS)} FROM alerts WHERE t >= ? AND t <= ? ORDER BY t, id",
            (t_from, t_to),
        )
        return [dict(r) for r in cur]


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


def write_csv(rows: Sequence[dict], out, time_columns=("t", "start_t", "end_t")) -> None:
    """Write rows (dicts with the same keys) as CSV to a text stream; time columns get an
    extra ISO-8601 local-time column next to them; NULL is an empty field."""
    if not rows:
        out.write("")
        return
    keys = list(rows[0].keys())
    header = []
    for k in keys:
        header.append(k)
        if k in time_columns:
            header.append(f"{k}_iso")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        line = []
        for k in keys:
            v = row[k]
            line.append("" if v is None else v)
            if k in time_columns:
                line.append(_iso(v))
        writer.writerow(line)
