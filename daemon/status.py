"""What the daemon tells people: one-line logs for journald, the terminal's status line, the
systemd status text and the periodic audio statistics line."""

from __future__ import annotations

import logging
import math
import sys

log = logging.getLogger("studiod")


class _OneLineFormatter(logging.Formatter):
    """One event per line (journald): newlines in messages and tracebacks are folded."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


class _StatusAwareHandler(logging.StreamHandler):
    """Clears the terminal's status line before a log line, so they do not mix."""

    status_line_active = False

    def emit(self, record: logging.LogRecord) -> None:
        if _StatusAwareHandler.status_line_active:
            try:
                sys.stdout.write("\r\033[K")
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
        super().emit(record)


def setup_logging(level: str = "info", stream=None) -> None:
    """Logs to stderr, one event per line; with a time stamp only on a terminal (journald
    adds its own)."""
    stream = stream or sys.stderr
    handler = _StatusAwareHandler(stream)
    tty = hasattr(stream, "isatty") and stream.isatty()
    fmt = "%(asctime)s " if tty else ""
    handler.setFormatter(_OneLineFormatter(fmt + "%(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("studiod")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def dbfs(linear: float) -> float:
    return 20.0 * math.log10(linear) if linear > 0.0 else -math.inf


def fmt(value: float, width: int = 6) -> str:
    return f"{value:{width}.1f}" if math.isfinite(value) else f"{'-inf':>{width}}"


def status_text(state: str, system: str | None, levels, timing: dict, extra: str = "") -> str:
    """The systemd STATUS= text."""
    lv = levels
    text = (
        f"{state} {system or '-'}; "
        f"M {fmt(lv.momentary_lufs, 0)} S {fmt(lv.shortterm_lufs, 0)} "
        f"I {fmt(lv.integrated_lufs, 0)} LUFS; TP {fmt(lv.true_peak_max_dbtp, 0)} dBTP; "
        f"xruns {timing['xruns']}; callback p99 {timing['p99_pct']:.0f} % of period"
    )
    return f"{text}; {extra}" if extra else text


class StatusLine:
    """The live line on a terminal (``out``), redrawn in place; None: no terminal."""

    def __init__(self, out):
        self.out = out

    def draw(self, state: str, system: str | None, source: str, levels, timing, extra="") -> None:
        if self.out is None:
            return
        lv = levels
        line = (
            f"{system or '-':<10} {source:<3}  "
            f"M {fmt(lv.momentary_lufs)}  S {fmt(lv.shortterm_lufs)}  "
            f"I {fmt(lv.integrated_lufs)} LUFS  TP {fmt(lv.true_peak_max_dbtp, 5)} dBTP  "
            f"| xruns {timing['xruns']} ({timing['cpu_overlong']} ours)  "
            f"cb p99 {timing['p99_pct']:.0f} %"
        )
        if state != "running":
            line += f"  [{state}]"
        if extra:
            line += f"  {extra}"
        try:
            self.out.write("\r\033[K" + line)
            self.out.flush()
            _StatusAwareHandler.status_line_active = True
        except (OSError, ValueError):
            self.out = None

    def end(self) -> None:
        if self.out is not None and _StatusAwareHandler.status_line_active:
            try:
                self.out.write("\n")
                self.out.flush()
            except (OSError, ValueError):
                pass
            _StatusAwareHandler.status_line_active = False


def log_stats(t: dict, device_state: str) -> None:
    log.info(
        "audio: %d callbacks, %d xruns, callback p50 %.1f %% p99 %.1f %% p99.9 %.1f %% "
        "max %.1f %% of the period, device %s",
        t["callbacks"], t["xruns"], t["p50_pct"], t["p99_pct"], t["p999_pct"],
        t["max_pct"], device_state,
    )  # fmt: skip
