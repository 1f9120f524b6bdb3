"""``GET /metrics``: the daemon in the Prometheus exposition format, for a facility that
watches every room's studiod in the monitoring stack it already runs (docs/metrics.md has a
scrape configuration and a Grafana dashboard).

Read at scrape time from the live meters and the components (prometheus_client's custom
collector), so nothing is updated on the audio thread or the control loop for it. Loudness
is in LUFS, true peak in dBTP, the loudness range in LU (the units in the names, as the
Prometheus naming guide asks for the base unit where there is one; loudness has none
better). A meter with no signal reads ``-Inf``.

``bus``: ``master`` (the master bus) and ``monitor`` (what is heard: the monitor system in
use) from the live meters, updated continuously; every other bus (each monitor system of
the loudness log) from the loudness log's reading of the last second.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    StateSetMetricFamily,
)

from studiod.daemon.rtstate import METER_MASTER, METER_MONITOR

DEVICE_STATES = ("running", "lost", "closed")
WINDOWS = ("momentary", "shortterm", "integrated")
QUANTILES = (("0.5", "p50_us"), ("0.99", "p99_us"), ("0.999", "p999_us"), ("1", "max_us"))


def _value(x) -> float:
    """A reading for the exposition (None: no reading -> -Inf, as a silent meter)."""
    return -math.inf if x is None else float(x)


class DaemonCollector:
    """A prometheus_client collector over a running :class:`~studiod.daemon.runtime.Daemon`."""

    def __init__(self, host, version: str):
        self.host = host
        self.version = version

    def collect(self):
        host = self.host
        info = InfoMetricFamily("studiod", "this studiod")
        core = host.core
        info.add_metric([], {
            "version": self.version,
            "samplerate": str(core.samplerate if core is not None else ""),
            "system": host.system or "",
        })  # fmt: skip
        yield info

        loudness = GaugeMetricFamily(
            "studiod_loudness_lufs", "loudness (BS.1770-4): momentary 400 ms, short-term 3 s, "
            "integrated since the reset (live buses) or of the open programme segment",
            labels=["bus", "window"],
        )  # fmt: skip
        peak = GaugeMetricFamily(
            "studiod_true_peak_dbtp", "true peak of the last second (BS.1770-4 Annex 2)",
            labels=["bus"],
        )  # fmt: skip
        lra = GaugeMetricFamily(
            "studiod_loudness_range_lu", "loudness range since the reset (EBU Tech 3342)",
            labels=["bus"],
        )  # fmt: skip
        if core is not None:
            for bus, k in (("master", METER_MASTER), ("monitor", METER_MONITOR)):
                lv = core.levels(k)
                for window in WINDOWS:
                    loudness.add_metric([bus, window], getattr(lv, f"{window}_lufs"))
                peak.add_metric([bus], lv.true_peak_dbtp)
                lra.add_metric([bus], lv.loudness_range_lu)
        monitor = host.loudness
        current = monitor.log if monitor is not None else None
        dose = GaugeMetricFamily(
            "studiod_noise_dose_percent", "today's noise dose of a calibrated bus (NIOSH: "
            "85 dBA for 8 h = 100 %)", labels=["bus"],
        )  # fmt: skip
        if current is not None:
            for bus, row in dict(current.latest).items():
                if bus == "master":
                    continue  # the live meter's
                for window in WINDOWS:
                    loudness.add_metric([bus, window], _value(row.get(f"{window}_lufs")))
                peak.add_metric([bus], _value(row.get("true_peak_dbtp")))
            for bus in current.calibrated_buses():
                percent = current.dose(bus)
                if percent is not None:
                    dose.add_metric([bus], percent)
        yield from (loudness, peak, lra, dose)

        stats = host.stats()
        state = stats.get("device_state", "closed")
        device = StateSetMetricFamily("studiod_device_state", "the audio device's state",
                                      labels=[])  # fmt: skip
        device.add_metric([], {s: s == state for s in DEVICE_STATES})
        yield device
        losses = CounterMetricFamily("studiod_device_losses", "times the device was lost")
        losses.add_metric([], stats.get("device_losses", 0))
        yield losses
        if "callbacks" in stats:
            callbacks = CounterMetricFamily("studiod_callbacks", "audio callbacks run")
            callbacks.add_metric([], stats["callbacks"])
            xruns = CounterMetricFamily("studiod_xruns", "xruns the audio system reported")
            xruns.add_metric([], stats["xruns"])
            duration = GaugeMetricFamily(
                "studiod_callback_duration_seconds", "audio callback duration (wall clock) "
                "since start, by quantile (1: the longest)", labels=["quantile"],
            )  # fmt: skip
            for quantile, key in QUANTILES:
                duration.add_metric([quantile], stats[key] / 1e6)
            period = GaugeMetricFamily(
                "studiod_callback_period_seconds", "the period a callback must finish within"
            )
            period.add_metric([], stats["period_us"] / 1e6)
            yield from (callbacks, xruns, duration, period)

        alerts = host.alerts
        if alerts is not None:
            raised = CounterMetricFamily("studiod_alerts", "alerts raised since start",
                                         labels=["kind", "severity"])  # fmt: skip
            for (kind, severity), n in sorted(alerts.raised.items()):
                raised.add_metric([kind, severity], n)
            active = GaugeMetricFamily("studiod_alerts_active", "alerts active now",
                                       labels=["kind", "bus", "severity"])  # fmt: skip
            for (kind, bus), alert in sorted(dict(alerts.active).items()):
                active.add_metric([kind, bus, alert.severity], 1)
            yield from (raised, active)


def exposition(host, version: str):
    """A callable that renders the daemon's metrics (for :class:`~studiod.controllers.web.
    Providers`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(host, version))
    return lambda: generate_latest(registry)
