"""Live alerts: evaluated on the control side from the meters' once-a-second reading.

Each alert has a kind, a severity (``info``, ``warning``, ``critical``), a bus (``master``, a
monitor system, an input channel, ``device``) and a one-line message. A condition raises its
alert after it has held for its delay and clears it after it has been gone for
``[alerts] clear_s`` (hysteresis: a level hovering at a threshold does not flap):

``true_peak``  the true peak of the last second over the delivery target's ceiling
               (``[loudness] target``; BS.1770-4 Annex 2 true peak), at once;
``target``     the short-term loudness (EBU Tech 3341, 3 s) above the target's integrated
               loudness + tolerance for ``target_delay_s`` (a mix the platform will turn
               down; a quiet passage below the target is music, not a fault, so only a
               whole programme is held to the lower bound), and once per programme
               segment whose integrated loudness ends outside target +- tolerance;
``clip``       a channel's input at or above -0.1 dBFS (the pre-fader input meters; the bus
               is the channel's name), at once;
``mono``       the master's correlation below ``mono_correlation`` for ``mono_delay_s``
               (out-of-phase content that cancels when summed to mono);
``dose``       a calibrated system's daily noise dose passing each of ``dose_steps_percent``
               (NIOSH 1998: 85 dBA for 8 h = 100 %);
``device``     the audio device lost (critical) and back (cleared);
``xrun``       ``xrun_burst`` xruns or more within ``xrun_window_s``.

Every raise and clear goes to the journal (one line), to OSC subscribers as
``/alert ,ssss kind severity bus message`` (a clear has severity ``clear``), to the status
line (the active alerts), and into the loudness log's ``alerts`` table
(``studiod log --alerts``).
"""

from __future__ import annotations

import collections
import logging
import math
import time
from dataclasses import dataclass

from studiod.daemon.components import Component, Plan
from studiod.dsp.targets import target as find_target

log = logging.getLogger("studiod.alerts")

OSC_ADDRESS = "/alert"
SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Alert:
    """One raise or clear. ``time``: Unix seconds; ``severity``: one of SEVERITIES, or
    ``clear`` when the condition ended."""

    time: float
    kind: str
    severity: str
    bus: str
    message: str


class _Condition:
    """Hysteresis for one (kind, bus): raised once ``active`` has held ``delay_s``, cleared
    once it has been false for ``clear_s``."""

    def __init__(self, delay_s: float, clear_s: float):
        self.delay_s, self.clear_s = delay_s, clear_s
        self.since: float | None = None  # when the condition last became true
        self.gone: float | None = None  # when it last became false while raised
        self.raised = False

    def update(self, active: bool, now: float) -> str | None:
        """'raise', 'clear' or None."""
        if active:
            self.gone = None
            if self.since is None:
                self.since = now
            if not self.raised and now - self.since >= self.delay_s:
                self.raised = True
                return "raise"
            return None
        self.since = None
        if self.raised:
            if self.gone is None:
                self.gone = now
            if now - self.gone >= self.clear_s:
                self.raised = False
                self.gone = None
                return "clear"
        return None


def _fmt_db(value: float) -> str:
    return f"{value:+.1f}" if math.isfinite(value) else "-inf"


class AlertsComponent(Component):
    """Evaluates the alerts (see the module docstring); :attr:`active` holds the raised
    ones by (kind, bus), :attr:`history` the last raises and clears, :attr:`raised` how many
    of each (kind, severity) were raised since start."""

    name = "alerts"
    sections = ("alerts", "loudness")

    def __init__(self, host):
        super().__init__(host)
        self._conditions: dict[tuple[str, str], _Condition] = {}
        self.active: dict[tuple[str, str], Alert] = {}
        self.history: collections.deque[Alert] = collections.deque(maxlen=256)
        self.raised: collections.Counter[tuple[str, str]] = collections.Counter()  # kind, severity
        self._xruns: collections.deque[tuple[float, int]] = collections.deque()
        self._dose_step: dict[str, tuple[str, int]] = {}  # bus -> (day, steps passed)
        self._segment_seen = None  # the last closed segment looked at
        self.inputs: list = []  # the last second's inputs.InputLevel per channel
        self._reader = None
        self._configure(host.config)

    def _configure(self, config) -> None:
        self.cfg = config.alerts
        self.target = find_target(config.loudness.target)
        self._conditions.clear()
        from studiod.daemon.inputs import InputMeterReader

        self._reader = InputMeterReader(lambda: self.host.hub.engine, self.cfg.reference_dbfs)

    def apply(self, plan: Plan) -> str | None:
        if not plan.touches(self.sections):
            return None
        self._configure(plan.new)
        return "alerts"

    # -- conditions ---------------------------------------------------------------------
    def _condition(self, kind: str, bus: str, delay_s: float) -> _Condition:
        key = (kind, bus)
        cond = self._conditions.get(key)
        if cond is None:
            cond = self._conditions[key] = _Condition(delay_s, self.cfg.clear_s)
        return cond

    def _check(self, kind, bus, active, now, severity, message, delay_s=0.0) -> None:
        change = self._condition(kind, bus, delay_s).update(active, now)
        if change == "raise":
            self.emit(Alert(time.time(), kind, severity, bus, message))
        elif change == "clear":
            self.emit(Alert(time.time(), kind, "clear", bus, f"{kind} on {bus} back to normal"))

    def on_reading(self, reading) -> None:
        now = time.monotonic()
        t = self.target
        buses = [("master", reading.master)]
        if reading.system:
            buses.append((reading.system, reading.monitor))
        for bus, lv in buses:
            tp = lv.true_peak_dbtp
            self._check(
                "true_peak", bus, math.isfinite(tp) and tp > t.ceiling_dbtp, now, "warning",
                f"true peak {_fmt_db(tp)} dBTP over the {t.name} ceiling "
                f"{t.ceiling_dbtp:+.1f} dBTP",
            )  # fmt: skip
            st = lv.shortterm_lufs
            loud = math.isfinite(st) and st > t.integrated_lufs + t.tolerance_lu
            self._check(
                "target", bus, loud, now, "warning",
                f"short-term loudness {_fmt_db(st)} LUFS above the {t.name} target "
                f"{t.integrated_lufs:g} LUFS +{t.tolerance_lu:g} LU for "
                f"{self.cfg.target_delay_s:g} s",
                self.cfg.target_delay_s,
            )  # fmt: skip
        self._check_xruns(now)
        self._check_loudness_log(now)
        self._check_mono(now)
        self._check_inputs(now)

    def _check_inputs(self, now: float) -> None:
        self.inputs = self._reader.read()
        for level in self.inputs:
            self._check(
                "clip", level.channel, level.clips > 0, now, "warning",
                f"input {level.channel}: {level.clips} samples at or above -0.1 dBFS in the "
                "last second: lower the source or its preamp",
            )  # fmt: skip

    def _check_mono(self, now: float) -> None:
        """The master's correlation of the last second (logged by the loudness monitor)."""
        monitor = self.host.loudness
        current = monitor.log if monitor is not None else None
        if current is None:
            return
        corr = current.latest.get("master", {}).get("correlation")
        limit = self.cfg.mono_correlation
        self._check(
            "mono", "master", corr is not None and corr < limit, now, "warning",
            f"correlation {corr if corr is not None else 0.0:+.2f} below {limit:+.2f} for "
            f"{self.cfg.mono_delay_s:g} s: out-of-phase content cancels in mono",
            self.cfg.mono_delay_s,
        )  # fmt: skip

    def _check_xruns(self, now: float) -> None:
        core = self.host.core
        if core is None:
            return
        window = self.cfg.xrun_window_s
        self._xruns.append((now, core.xruns))
        while self._xruns and now - self._xruns[0][0] > window:
            self._xruns.popleft()
        burst = self._xruns[-1][1] - self._xruns[0][1]
        self._check(
            "xrun", "device", burst >= self.cfg.xrun_burst, now, "warning",
            f"{burst} xruns in the last {window:g} s",
        )  # fmt: skip

    def _check_loudness_log(self, now: float) -> None:
        monitor = self.host.loudness
        current = monitor.log if monitor is not None else None
        if current is None:
            return
        segments = list(current.recent_segments)
        t = self.target
        # the segments closed since the last look (recent_segments keeps the last 64; a
        # new log after a reload starts empty)
        seen = self._segment_seen
        start = next((k + 1 for k in range(len(segments) - 1, -1, -1) if segments[k] is seen), 0)
        for seg in segments[start:]:
            lufs = seg.integrated_lufs
            if math.isfinite(lufs) and abs(lufs - t.integrated_lufs) > t.tolerance_lu:
                self.emit(Alert(
                    time.time(), "target", "warning", seg.bus,
                    f"programme segment integrated {lufs:.1f} LUFS, outside the {t.name} "
                    f"target {t.integrated_lufs:g} LUFS +-{t.tolerance_lu:g} LU",
                ))  # fmt: skip
        if segments:
            self._segment_seen = segments[-1]
        steps = self.cfg.dose_steps_percent
        for bus in current.calibrated_buses():
            dose = current.dose(bus)
            if dose is None:
                continue
            day = time.strftime("%Y-%m-%d")
            seen_day, passed = self._dose_step.get(bus, (day, 0))
            if seen_day != day:
                passed = 0
            reached = sum(1 for s in steps if dose >= s)
            if reached > passed:
                severity = SEVERITIES[min(reached - 1, 2)] if len(steps) == 3 else "warning"
                if steps[reached - 1] >= 100.0:
                    severity = "critical"
                self.emit(Alert(
                    time.time(), "dose", severity, bus,
                    f"noise dose {dose:.0f} % of the daily 85 dBA / 8 h dose (NIOSH)",
                ))  # fmt: skip
            self._dose_step[bus] = (day, max(passed, reached))

    def event(self, kind: str, state: str, text: str) -> None:
        """A component's event: ("device", "lost" | "back", text)."""
        if kind != "device":
            return
        key = ("device", "device")
        if state == "lost" and key not in self.active:
            self.emit(
                Alert(time.time(), "device", "critical", "device", f"audio device lost: {text}")
            )
        elif state == "back" and key in self.active:
            self.emit(Alert(time.time(), "device", "clear", "device", f"audio device back: {text}"))

    # -- delivery -----------------------------------------------------------------------
    def emit(self, alert: Alert) -> None:
        """Journal, OSC subscribers, status line, loudness log."""
        key = (alert.kind, alert.bus)
        if alert.severity == "clear":
            self.active.pop(key, None)
            log.info("alert cleared: %s %s: %s", alert.kind, alert.bus, alert.message)
        else:
            self.active[key] = alert
            self.raised[(alert.kind, alert.severity)] += 1
            level = logging.ERROR if alert.severity == "critical" else logging.WARNING
            log.log(level, "alert %s %s %s: %s", alert.kind, alert.severity, alert.bus,
                    alert.message)  # fmt: skip
        self.history.append(alert)
        osc = self.host.component("osc")
        if osc is not None:  # OSC subscribers and the web's LISTENers
            osc.broadcast(OSC_ADDRESS, [alert.kind, alert.severity, alert.bus, alert.message])
        monitor = self.host.loudness
        if monitor is not None and monitor.log is not None:
            monitor.log.alert(alert.time, alert.kind, alert.severity, alert.bus, alert.message)

    def status_line(self) -> str:
        """The loudest input against the reference level, and the active alerts."""
        parts = []
        playing = [v for v in self.inputs if math.isfinite(v.rms_dbfs)]
        if playing:
            top = max(playing, key=lambda v: v.rms_dbfs)
            parts.append(f"in {top.channel} {top.re_reference_db:+.1f} dB re "
                         f"{self.cfg.reference_dbfs:g} dBFS")  # fmt: skip
        if self.active:
            parts.append("ALERT " + " ".join(sorted({f"{k}:{b}" for k, b in self.active})))
        return "  ".join(parts)

    def status(self) -> dict:
        return {"alerts_active": len(self.active), "alerts_total": len(self.history)}
