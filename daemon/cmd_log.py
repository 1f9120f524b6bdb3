"""``studiod log``: query the loudness log, export CSV, draw a PNG plot.

Times (``--from``, ``--to``) are ISO 8601 local time ("2024-05-01", "2024-05-01T14:30"),
a time today ("14:30"), Unix seconds ("1714570000"), "now", or relative to now ("-2h",
"-30m", "-90s", "-7d"; written as a separate argument, ``--from -2h``, or ``--from=-2h``).

The daemon writes the log while it runs (SQLite in WAL mode): this command reads it at any
time, also while ``studiod run`` or ``studiod demo`` is running.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
import sys
import time
from pathlib import Path

from studiod.daemon import logdb
from studiod.daemon.config import default_state_dir
from studiod.dsp.targets import TARGETS
from studiod.dsp.targets import target as find_target

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_time(text: str, now: float | None = None) -> float:
    """Unix time for the forms in the module docstring; ValueError otherwise."""
    now = time.time() if now is None else now
    s = text.strip()
    if s == "now":
        return now
    m = _RELATIVE.match(s)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    if re.fullmatch(r"\d{9,11}(\.\d*)?", s):
        return float(s)
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", s):
        today = dt.datetime.fromtimestamp(now).date().isoformat()
        s = f"{today}T{s}"
    try:
        stamp = dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use ISO 8601 (2024-05-01T14:30), HH:MM, "
            "Unix seconds, now, or -30m / -2h / -7d"
        ) from None
    return stamp.timestamp()


def join_relative_times(argv: list[str]) -> list[str]:
    """``--from -2h`` as ``--from=-2h``: argparse takes a value that starts with "-" (and is
    not a plain negative number) for an option, so the relative times are joined to their
    option before parsing."""
    out: list[str] = []
    skip = False
    for k, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        nxt = argv[k + 1] if k + 1 < len(argv) else None
        if arg in ("--from", "--to") and nxt is not None and _RELATIVE.match(nxt.strip()):
            out.append(f"{arg}={nxt}")
            skip = True
        else:
            out.append(arg)
    return out


def register(commands) -> None:
    p = commands.add_parser(
        "log",
        help="query the loudness log (table, CSV, PNG plot)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--db", help="the log database file")
    where.add_argument(
        "--state-dir",
        help=f"the daemon's state directory (the log is {logdb.LOG_FILENAME} in it; "
        "default $STATE_DIRECTORY, else $XDG_STATE_HOME/studiod or ~/.local/state/studiod)",
    )
    p.add_argument("--from", dest="t_from", default="-1d", help="start (default -1d)")
    p.add_argument("--to", dest="t_to", default="now", help="end (default now)")
    p.add_argument("--bus", action="append", help="only this bus (repeatable; default all)")
    p.add_argument("--segments", action="store_true", help="list programme segments")
    p.add_argument("--alerts", action="store_true", help="list the live alerts (raised and "
                   "cleared) in the time range")  # fmt: skip
    p.add_argument("--csv", help="write the per-second rows (or, with --segments / --alerts, "
                   "the segments / alerts) to this CSV file ('-': standard output)")  # fmt: skip
    p.add_argument("--plot", help="draw loudness, true peak (and listening level) to a PNG")
    p.add_argument(
        "--target",
        default="spotify",
        help=f"target drawn in the plot: one of {', '.join(TARGETS)}",
    )
    p.set_defaults(func=main)


def _db_path(args) -> Path:
    if args.db:
        return Path(args.db)
    state = Path(args.state_dir) if args.state_dir else default_state_dir()
    return state / logdb.LOG_FILENAME


def _fmt(v, spec=".1f", none="-") -> str:
    return none if v is None else format(v, spec)


def _summary(rows: list[dict]) -> list[str]:
    lines = [f"{'bus':<12} {'rows':>6} {'first':<19} {'last':<19} {'M max':>7} {'S max':>7} "
             f"{'TP max':>7} {'LAeq':>6} {'dose %':>7}"]  # fmt: skip
    for bus in dict.fromkeys(r["bus"] for r in rows):
        mine = [r for r in rows if r["bus"] == bus]

        def top(key, mine=mine):
            vals = [r[key] for r in mine if r[key] is not None]
            return max(vals) if vals else None

        energy = [10 ** (r["laeq_dba"] / 10) for r in mine if r["laeq_dba"] is not None]
        laeq = None
        if energy:
            laeq = 10 * math.log10(sum(energy) / len(mine))
        doses = [r["dose_percent"] for r in mine if r["dose_percent"] is not None]
        lines.append(
            f"{bus:<12} {len(mine):>6} {_when(mine[0]['t']):<19} {_when(mine[-1]['t']):<19} "
            f"{_fmt(top('momentary_max_lufs')):>7} {_fmt(top('shortterm_lufs')):>7} "
            f"{_fmt(top('true_peak_dbtp')):>7} {_fmt(laeq):>6} "
            f"{_fmt(doses[-1] if doses else None, '.2f'):>7}"
        )
    return lines


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _segment_lines(segments: list[dict]) -> list[str]:
    lines = [f"{'id':>4} {'bus':<10} {'start':<19} {'length':>8} {'I LUFS':>7} {'LRA':>5} "
             f"{'TP':>6} {'target':<9} {'dev LU':>7} {'ok':<3} {'status':<11} systems"]  # fmt: skip
    for s in segments:
        ok = {None: "-", 0: "no", 1: "yes"}[s["compliant"]]
        length = "-" if s["duration_s"] is None else f"{s['duration_s']:.1f}s"
        lines.append(
            f"{s['id']:>4} {s['bus']:<10} {_when(s['start_t']):<19} {length:>8} "
            f"{_fmt(s['integrated_lufs']):>7} {_fmt(s['loudness_range_lu']):>5} "
            f"{_fmt(s['true_peak_dbtp']):>6} {s['target'] or '-':<9} "
            f"{_fmt(s['deviation_lu'], '+.1f'):>7} {ok:<3} {s['status']:<11} {s['systems'] or ''}"
        )
    return lines


def _alert_lines(alerts: list[dict]) -> list[str]:
    lines = [f"{'time':<19} {'kind':<9} {'severity':<8} {'bus':<10} message"]
    for a in alerts:
        lines.append(f"{_when(a['t']):<19} {a['kind']:<9} {a['severity']:<8} "
                     f"{a['bus'] or '-':<10} {a['message']}")  # fmt: skip
    return lines


def main(args) -> int:
    try:
        t_from = parse_time(args.t_from)
        t_to = parse_time(args.t_to)
        target = find_target(args.target)
    except ValueError as exc:
        print(f"studiod log: {exc}", file=sys.stderr)
        return 2
    if t_to < t_from:
        print("studiod log: --to is before --from", file=sys.stderr)
        return 2
    path = _db_path(args)
    try:
        readings = logdb.query_readings(path, t_from, t_to, args.bus)
        segments = logdb.query_segments(path, t_from, t_to, args.bus)
        alerts = logdb.query_alerts(path, t_from, t_to) if args.alerts else []
    except FileNotFoundError as exc:
        print(f"studiod log: {exc}", file=sys.stderr)
        return 1
    except logdb.sqlite3.Error as exc:
        print(f"studiod log: {path}: {exc}", file=sys.stderr)
        return 1
    to_stdout = args.csv == "-"
    if not to_stdout:
        print(f"loudness log {path}: {_when(t_from)} .. {_when(t_to)}")
        if readings:
            print("\n".join(_summary(readings)))
        else:
            print("no readings in this time range")
        if args.segments:
            print()
            print("\n".join(_segment_lines(segments)) if segments else "no segments")
        if args.alerts:
            print()
            print("\n".join(_alert_lines(alerts)) if alerts else "no alerts")
    if args.csv:
        rows = alerts if args.alerts else segments if args.segments else readings
        try:
            if to_stdout:
                logdb.write_csv(rows, sys.stdout)
            else:
                with open(args.csv, "w", newline="", encoding="utf-8") as out:
                    logdb.write_csv(rows, out)
                print(f"wrote {len(rows)} rows to {args.csv}")
        except OSError as exc:
            print(f"studiod log: {args.csv}: {exc}", file=sys.stderr)
            return 1
    if args.plot:
        if not readings:
            print("studiod log: nothing to plot in this time range", file=sys.stderr)
            return 1
        try:
            from studiod.daemon.plot import plot_log

            plot_log(args.plot, readings, segments, target,
                     title=f"studiod loudness log, {path.name}")  # fmt: skip
        except (OSError, RuntimeError) as exc:  # plot.PlotError is a RuntimeError
            print(f"studiod log: {args.plot}: {exc}", file=sys.stderr)
            return 1
        if not to_stdout:
            print(f"wrote {args.plot}")
    return 0
