"""The control-surface components: OSC (+ OSCQuery/HTTP), mDNS, MIDI, all through the hub.

OSC and OSCQuery are up before READY; mDNS (on the OSC server's interface) and MIDI start
right after it, since neither is needed to call the daemon ready and both take time (mDNS
probing, MIDI port scans). A reload restarts a surface whose section changed (mDNS also when
OSC moved or the session's channels or systems changed, for its TXT records) and retries one
that could not start. A surface that fails (a port in use, no MIDI system) is logged and
left off; the audio never depends on it.
"""

from __future__ import annotations

import errno
import logging
import math
import threading
from dataclasses import replace

from studiod.daemon.components import Component, Plan
from studiod.daemon.config import ConfigError, ControlSurfaces, control_surfaces
from studiod.daemon.rtstate import METER_MONITOR
from studiod.daemon.status import dbfs

log = logging.getLogger("studiod")


def _surfaces(plan: Plan) -> ControlSurfaces | None:
    try:
        return control_surfaces(plan.new)
    except ConfigError as exc:  # only a config built in code gets here unvalidated
        log.error("control surfaces off: %s", exc)
        return None


class OscComponent(Component):
    """The OSC server (:attr:`osc`) and the HTTP server (:attr:`web`: OSCQuery and its
    WebSocket, the dashboard, /metrics)."""

    name = "osc"
    sections = ("osc", "mdns")

    def __init__(self, host, surfaces: ControlSurfaces):
        super().__init__(host)
        self.surfaces = surfaces
        self.osc = None  # controllers.osc.OscServer while OSC runs
        self.web = None  # controllers.web.WebServer
        self._inputs = None  # inputs.InputMeterReader (the meter stream's interval)
        self._inputs_lock = threading.Lock()  # the sender thread and queries read it

    def prepare(self) -> None:
        # imported while the daemon starts (before the stream runs: an import holds the GIL)
        import studiod.controllers.osc
        import studiod.controllers.web
        import studiod.daemon.metrics  # noqa: F401

    def start(self) -> None:
        from studiod.controllers.discovery import instance_name
        from studiod.controllers.osc import OscServer
        from studiod.controllers.web import Providers, WebServer
        from studiod.daemon import __version__
        from studiod.daemon.metrics import exposition

        s, host = self.surfaces, self.host
        cfg = s.osc
        try:
            self.osc = self._bind(
                lambda port: OscServer(
                    host.hub, replace(cfg, port=port), meters_provider=self.meters
                ).start(),
                cfg.port,
                f"osc: udp {cfg.host}:{cfg.port}",
            )
        except Exception as exc:
            log.error("osc: cannot listen on %s:%d (%s); OSC is off until a reload",
                      cfg.host, cfg.port, exc)  # fmt: skip
            return
        if cfg.oscquery_port:
            name = instance_name(name=s.mdns.name if s.mdns is not None else "")
            providers = Providers(
                meters=self.meters, dashboard=self.dashboard, history=self.history,
                metrics=exposition(host, __version__),
            )  # fmt: skip
            try:
                self.web = self._bind(
                    lambda port: WebServer(
                        host.hub, cfg, self.osc, name, providers, port=port
                    ).start(),
                    cfg.oscquery_port,
                    f"http: tcp {cfg.host}:{cfg.oscquery_port}",
                )  # fmt: skip
            except Exception as exc:
                log.error("http: cannot listen on %s:%d (%s); off until a reload",
                          cfg.host, cfg.oscquery_port, exc)  # fmt: skip

    def _bind(self, make, port: int, what: str):
        """``make(port)``; with ``any_free_port``, ``make(0)`` when the port is in use."""
        try:
            return make(port)
        except OSError as exc:
            if not self.host.any_free_port or exc.errno != errno.EADDRINUSE or port == 0:
                raise
            log.warning("%s is in use; taking a free port instead", what)
            return make(0)

    def stop(self) -> None:
        for name in ("web", "osc"):
            server = getattr(self, name)
            setattr(self, name, None)
            if server is not None:
                try:
                    server.close()
                except Exception:
                    log.exception("%s: close failed", name)

    def apply(self, plan: Plan) -> str | None:
        surfaces = _surfaces(plan)
        if surfaces is None or surfaces.osc is None:
            return None  # the supervisor stops a component the new config drops
        if plan.new.osc != plan.old.osc or surfaces != self.surfaces or self.osc is None:
            self.surfaces = surfaces
            self.stop()
            self.start()
            return "osc"
        return None

    def broadcast(self, address: str, args) -> None:
        """Send one message now (an alert) to every OSC subscriber and to the WebSocket
        clients LISTENing to its address."""
        for server in (self.osc, self.web):
            if server is not None:
                server.broadcast(address, args)

    def _input_levels(self) -> list[tuple]:
        """(peak dBFS, RMS dBFS, RMS re the reference, clips since start) per channel."""
        from studiod.daemon.inputs import InputMeterReader

        with self._inputs_lock:
            if self._inputs is None:
                reference = self.host.config.alerts.reference_dbfs
                self._inputs = InputMeterReader(lambda: self.host.hub.engine, reference)
            levels = self._inputs.read()
        return [(v.peak_dbfs, v.rms_dbfs, v.re_reference_db, v.clips_total) for v in levels]

    def meters(self) -> dict:
        """The OSC meter streams (any thread): loudness and true peak of what is heard (the
        monitor outputs' meter: momentary and short-term live, integrated since the reset,
        true peak of the last one-second reading) and each channel strip's post-fader peak
        in dBFS (the engine's block peak, the louder lane of a stereo strip)."""
        core, hub = self.host.core, self.host.hub
        if core is None or hub is None:
            return {}
        lv = core.levels(METER_MONITOR)
        channels = [dbfs(float(p)) for p in hub.engine.channel_peaks()]
        return {
            "momentary_lufs": lv.momentary_lufs,
            "shortterm_lufs": lv.shortterm_lufs,
            "integrated_lufs": lv.integrated_lufs,
            "loudness_range_lu": lv.loudness_range_lu,
            "true_peak_dbtp": lv.true_peak_dbtp,
            "channel_peak_dbfs": channels,
            "correlation": self._correlation(),
            "inputs": self._input_levels(),
            **self._loudness_log(),
        }

    def _loudness_log(self) -> dict:
        """Each loudness-log bus's reading of the last second, and today's noise dose of
        each calibrated one."""
        from studiod.controllers.osc import LOUDNESS_KEYS

        monitor = self.host.loudness
        current = monitor.log if monitor is not None else None
        if current is None:
            return {}
        latest = dict(current.latest)  # the same columns as the live meter's
        buses = {bus: tuple(row.get(k) for k in LOUDNESS_KEYS) for bus, row in latest.items()}
        dose = {}
        for bus in current.calibrated_buses():
            percent = current.dose(bus)
            if percent is not None:
                dose[bus] = percent
        return {"buses": buses, "dose": dose}

    def _correlation(self) -> float | None:
        """The heard system's correlation over the last second (the loudness log's tap)."""
        monitor = self.host.loudness
        current = monitor.log if monitor is not None else None
        system = self.host.system
        if current is None or not system:
            return None
        return current.latest.get(system, {}).get("correlation")

    def dashboard(self) -> dict:
        """The dashboard's start-up state (the web server's thread): the delivery target the
        meters are held to, the channels, the loudness log's buses and which are calibrated,
        the gain-staging reference, the active alerts and the last ones raised or cleared."""
        from dataclasses import asdict

        from studiod.daemon.logdb import platform_target
        from studiod.dsp.loudtap import buses_for_session

        host = self.host
        config = host.config
        monitor = host.loudness
        current = monitor.log if monitor is not None else None
        alerts = host.alerts
        calibration = dict(config.loudness.spl_at_minus20dbfs)
        return {
            "target": asdict(platform_target(config.loudness.target)),
            "channels": [c.name for c in host.hub.engine.session.channels],
            "buses": [b.name for b in buses_for_session(config.session, calibration)]
            if current is not None
            else [],
            "calibrated": current.calibrated_buses() if current is not None else [],
            "reference_dbfs": config.alerts.reference_dbfs,
            "alerts": [asdict(a) for a in alerts.active.values()] if alerts else [],
            "recent_alerts": [asdict(a) for a in list(alerts.history)[-20:]] if alerts else [],
        }

    def history(self, t_from: float, t_to: float, bus: str | None) -> dict:
        """The loudness log between two times (the web server's executor): one bus's
        readings, at most HISTORY_POINTS of them (longer ranges in buckets: loudness as
        the energy mean, true peak as the maximum), and the alerts raised and cleared."""
        from studiod.daemon.logdb import query_alerts, query_readings

        monitor = self.host.loudness
        current = monitor.log if monitor is not None else None
        if current is None:
            return {"bus": bus, "readings": [], "alerts": []}
        bus = bus or "master"
        current.flush(timeout=1.0)  # the last seconds too
        rows = query_readings(current.path, t_from, t_to, [bus])
        return {
            "bus": bus,
            "readings": _buckets(rows, t_from, t_to, HISTORY_POINTS),
            "alerts": query_alerts(current.path, t_from, t_to),
        }

    def status(self) -> dict:
        osc = self.osc
        return {"osc_udp_port": osc.udp_port if osc is not None else None}


HISTORY_POINTS = 1800  # a phone's chart has no more pixels than that across
_HISTORY_COLS = ("momentary_lufs", "shortterm_lufs", "integrated_lufs", "true_peak_dbtp")


def _buckets(rows: list[dict], t_from: float, t_to: float, points: int) -> list[dict]:
    """At most ``points`` readings: rows as they are, or per time bucket the energy mean of
    each loudness (BS.1770 sums power, not dB), the last integrated and the highest peak."""
    if len(rows) <= points:
        return [{"t": r["t"], **{k: r[k] for k in _HISTORY_COLS}} for r in rows]
    width = (t_to - t_from) / points
    out: list[dict] = []
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(min(int((r["t"] - t_from) / width), points - 1), []).append(r)
    for _, group in sorted(groups.items()):
        row = {"t": group[-1]["t"]}
        for k in ("momentary_lufs", "shortterm_lufs"):
            powers = [10 ** (r[k] / 10) for r in group if r[k] is not None]
            row[k] = 10 * math.log10(sum(powers) / len(powers)) if powers else None
        row["integrated_lufs"] = group[-1]["integrated_lufs"]
        peaks = [r["true_peak_dbtp"] for r in group if r["true_peak_dbtp"] is not None]
        row["true_peak_dbtp"] = max(peaks) if peaks else None
        out.append(row)
    return out


class MdnsComponent(Component):
    """Advertises the OSC server (zeroconf probes in its own thread: start returns at once)."""

    name = "mdns"
    sections = ("mdns", "osc", "session")
    before_ready = False

    def __init__(self, host, surfaces: ControlSurfaces):
        super().__init__(host)
        self.surfaces = surfaces
        self.discovery = None  # controllers.discovery.Discovery
        self._lock = threading.Lock()  # restarts run off the control thread
        self._worker: threading.Thread | None = None

    def prepare(self) -> None:
        import zeroconf  # noqa: F401

        import studiod.controllers.discovery  # noqa: F401

    def start(self) -> None:
        from studiod.controllers.discovery import Discovery

        osc_part = self.host.component("osc")
        osc = osc_part.osc if osc_part is not None else None
        if osc is None:
            return
        session = self.host.hub.engine.session
        try:
            self.discovery = Discovery(
                osc.config.host,
                osc.udp_port,
                tcp_port=osc.tcp_port or None,
                oscquery_port=osc_part.web.port if osc_part.web is not None else None,
                channels=len(session.channels),
                systems=[m.name for m in session.systems],
                name=self.surfaces.mdns.name,
            ).start()
        except Exception as exc:  # mDNS is a convenience: the daemon runs without it
            log.warning("mdns: not advertising: %s", exc)

    def stop(self) -> None:
        worker = self._worker
        if worker is not None:
            worker.join(timeout=15.0)
        with self._lock:
            self._close_discovery()

    def _close_discovery(self) -> None:
        """Withdraw the mDNS records (under ``_lock``)."""
        discovery, self.discovery = self.discovery, None
        if discovery is not None:
            try:
                discovery.close()
            except Exception:
                log.exception("mdns: close failed")

    def apply(self, plan: Plan) -> str | None:
        surfaces = _surfaces(plan)
        if surfaces is None or surfaces.mdns is None:
            return None
        self.surfaces = surfaces
        # the TXT records name the channels and systems: a new samplerate leaves them be
        if plan.touches(("mdns", "osc")) or plan.graph or self.discovery is None:
            self._restart()
            return "mdns"
        return None

    def _restart(self) -> None:
        """Re-advertise in the background: withdrawing the old records and probing the new
        names takes a second or more, which the control loop must not wait for."""

        def work():
            with self._lock:
                self._close_discovery()
                self.start()

        previous = self._worker
        if previous is not None:
            previous.join(timeout=15.0)
        self._worker = threading.Thread(target=work, name="mdns-restart", daemon=True)
        self._worker.start()


class MidiComponent(Component):
    """MIDI control surfaces (:class:`studiod.controllers.midi.MidiManager`)."""

    name = "midi"
    sections = ("midi",)
    before_ready = False

    def __init__(self, host, surfaces: ControlSurfaces):
        super().__init__(host)
        self.surfaces = surfaces
        self.midi = None

    def prepare(self) -> None:
        import studiod.controllers.midi  # noqa: F401

    def start(self) -> None:
        from studiod.controllers.midi import manager_from_config

        midi = self.surfaces.midi
        try:
            manager = manager_from_config(self.host.hub, midi)
        except Exception as exc:  # no ALSA sequencer, no JACK server, a bad profile
            log.warning("midi: off: %s", exc)
            return
        manager.start()
        self.midi = manager
        log.info(
            "midi: %s MIDI, %d profiles, ports polled every %.1f s",
            midi.get("api") or "default", len(manager.profiles), manager.poll_interval_s,
        )  # fmt: skip

    def stop(self) -> None:
        manager, self.midi = self.midi, None
        if manager is None:
            return
        try:
            manager.stop()
            close = getattr(manager.backend, "close", None)
            if close is not None:
                close()
        except Exception:
            log.exception("midi: stop failed")

    def apply(self, plan: Plan) -> str | None:
        surfaces = _surfaces(plan)
        if surfaces is None or surfaces.midi is None:
            return None
        if plan.new.midi != plan.old.midi or self.midi is None:
            self.surfaces = surfaces
            self.stop()
            self.start()
            return "midi"
        return None
