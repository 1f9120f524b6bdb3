"""The service: start-up, the control loop, reload, device supervision, stop.

One :class:`Daemon` owns one :class:`~studiod.controllers.hub.ControlHub` for its whole
life; engines come and go behind it (a session change in a reloaded config builds a new
engine, primes it and swaps it under the running stream). The control loop runs on the
main thread at ``CONTROL_HZ``: it designs what the engine asks for (``engine.service``),
saves state, supervises the audio device, reads the meters, pings the watchdog and draws
the status line. Signal handlers only set flags.

Hooks for the rest of the daemon (loudness log, reference player, control surfaces):

* :meth:`Daemon.add_meter_listener` ``(fn(MeterReading))``: called once a second on the
  control thread with the master and monitor meters and the monitor system in use;
* :meth:`Daemon.set_monitor_source_provider` ``(fn(MonitorSource))``: called every control
  tick to top up the ring that replaces the external monitor input pair (and
  :attr:`Daemon.monitor_source` for a producer with its own thread);
* :meth:`Daemon.add_reload_listener` ``(fn(old_config, new_config))``: after a reload;
* :meth:`Daemon.save_snapshot` / :meth:`recall_snapshot` / :meth:`list_snapshots`;
* :attr:`Daemon.hub`: the one way to change a parameter.

Control surfaces (``[osc]``, ``[mdns]``, ``[midi]``; see
:func:`~studiod.daemon.config.control_surfaces`) run in the daemon, all through the hub:
the OSC server (:attr:`Daemon.osc`, with :meth:`Daemon.osc_meters` as its meter source)
and the OSCQuery server (:attr:`Daemon.oscquery`) are up before READY; mDNS
(:attr:`Daemon.discovery`, on the OSC server's interface) and MIDI (:attr:`Daemon.midi`)
start right after it, since neither is needed to call the daemon ready and both take time
(mDNS probing, MIDI port scans). A reload restarts a surface whose section changed (mDNS
also when the session's channels or systems did, for its TXT records) and retries one that
could not start. A surface that fails (a port in use, no MIDI system) is logged and left
off; the audio never depends on it.
"""

from __future__ import annotations

import errno
import gc
import itertools
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from studiod.controllers.hub import ControlHub
from studiod.daemon import realtime
from studiod.daemon.audio import (
    AudioCore,
    DeviceError,
    JackDevice,
    MeterReading,
    MonitorSource,
    PortAudioDevice,
    VirtualDevice,
)
from studiod.daemon.config import (
    Config,
    ConfigError,
    ControlSurfaces,
    control_surfaces,
    load_config,
)
from studiod.daemon.notify import Notifier
from studiod.daemon.rtstate import METER_MASTER, METER_MONITOR
from studiod.daemon.state import StateError, StateKeeper, StateStore
from studiod.dsp.engine import Engine, QueueFull
from studiod.dsp.registry import ParamError

log = logging.getLogger("studiod")

CONTROL_HZ = 20.0
METER_INTERVAL_S = 1.0
STATUS_LINE_HZ = 4.0
NOTIFY_STATUS_S = 5.0
STALL_S = 1.0  # no callback for this long on an open stream: the device is gone
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 0.5  # keeps "resume within 2 s of the device coming back" with margin
RETRY_LOG_S = 30.0
PRIME_S = 0.5  # parameter smoothing (20 ms one-pole to 1e-6) settles well within this

DeviceFactory = Callable[..., object]


def default_device_factory(audio, core: AudioCore):
    """A :class:`PortAudioDevice`, :class:`JackDevice` or :class:`VirtualDevice` for
    ``core`` (its device channels ``dev_in``/``dev_out``), by ``audio.backend``."""
    if audio.backend == "virtual":
        return VirtualDevice(core, priority=audio.realtime_priority)
    if audio.backend == "jack":
        return JackDevice(audio, core)
    return PortAudioDevice(audio, core)


def prime(engine: Engine, seconds: float = PRIME_S) -> None:
    """Run silence through an engine that is not live yet, so that every queued parameter
    value has arrived (no glide from the defaults when it goes live)."""
    frames = min(engine.max_block_frames, 4096)
    inp = np.zeros((frames, engine.session.n_inputs), np.float32)
    out = np.zeros((frames, engine.session.n_outputs), np.float32)
    for _ in range(max(1, math.ceil(seconds * engine.samplerate / frames))):
        engine.service()
        engine.process(inp, out)


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


def _dbfs(linear: float) -> float:
    return 20.0 * math.log10(linear) if linear > 0.0 else -math.inf


def _fmt(value: float, width: int = 6) -> str:
    return f"{value:{width}.1f}" if math.isfinite(value) else f"{'-inf':>{width}}"


class Daemon:
    """The running service. ``start()``, then ``run()`` until ``stop()`` (or a signal),
    then ``close()``; :meth:`serve` does all of it with signal handlers."""

    def __init__(
        self,
        config: Config,
        *,
        device_factory: DeviceFactory | None = None,
        notifier: Notifier | None = None,
        status_out=None,
        programme: np.ndarray | None = None,
        any_free_port: bool = False,
    ):
        """``any_free_port``: when the configured OSC or OSCQuery port is in use, take any
        free one instead of leaving the server off (the demo; see :attr:`osc`'s ports)."""
        self.config = config
        self.device_factory = device_factory or default_device_factory
        self.notifier = notifier or Notifier()
        self.status_out = status_out
        self.programme = programme  # looped into the engine inputs (the demo)
        self.hub: ControlHub | None = None
        self.core: AudioCore | None = None
        self.keeper: StateKeeper | None = None
        self.device = None
        self.device_state = "closed"  # running, lost, closed
        self.device_losses = 0
        self.reloads = 0
        self.reload_failures = 0
        self.ready_s: float | None = None
        self._started_at = time.monotonic()
        self._stop = threading.Event()
        self._reload_path: str | Path | None = None
        self._reload_flag = threading.Event()
        self._tokens = itertools.count(1)
        self._meter_listeners: dict[int, Callable[[MeterReading], None]] = {}
        self._reload_listeners: dict[int, Callable[[Config, Config], None]] = {}
        self._source_provider: Callable[[MonitorSource], None] | None = None
        self._system: str | None = None
        self._system_outputs: tuple[int, ...] = ()
        self._interval_req = 0
        self._next_meter = 0.0
        self._next_status_line = 0.0
        self._next_notify = 0.0
        self._next_stats = 0.0
        self._retry_at = 0.0
        self._retry_wait = RETRY_FIRST_S
        self._retry_logged = -math.inf
        self._lost_at = 0.0
        self._opened_at = 0.0
        self._seen_callbacks = 0
        self._seen_at = 0.0
        self.last_reading: MeterReading | None = None
        self.any_free_port = any_free_port
        self.osc = None  # controllers.osc.OscServer while OSC runs
        self.oscquery = None  # controllers.oscquery.OscQueryServer
        self.discovery = None  # controllers.discovery.Discovery
        self.midi = None  # controllers.midi.MidiManager
        self._surfaces: ControlSurfaces | None = None
        self._mdns_lock = threading.Lock()  # mDNS restarts run off the control thread
        self._mdns_worker: threading.Thread | None = None
        self._placement = realtime.Placement()

    # ------------------------------------------------------------------------------------
    # hooks

    def add_meter_listener(self, listener: Callable[[MeterReading], None]) -> int:
        """Call ``listener(reading)`` once a second on the control thread (keep it short:
        record or hand off). Returns a token for :meth:`remove_meter_listener`."""
        token = next(self._tokens)
        self._meter_listeners[token] = listener
        return token

    def remove_meter_listener(self, token: int) -> None:
        self._meter_listeners.pop(token, None)

    def add_reload_listener(self, listener: Callable[[Config, Config], None]) -> int:
        """Call ``listener(old, new)`` after a successful reload (control thread)."""
        token = next(self._tokens)
        self._reload_listeners[token] = listener
        return token

    def remove_reload_listener(self, token: int) -> None:
        self._reload_listeners.pop(token, None)

    def set_monitor_source_provider(self, provider: Callable[[MonitorSource], None] | None):
        """Register ``provider(source)``, called every control tick (20 Hz) to top up
        :attr:`monitor_source` (1 s ring); None unregisters it and deactivates the ring."""
        self._source_provider = provider
        if provider is None and self.core is not None:
            self.core.monitor_source.activate(False)

    @property
    def monitor_source(self) -> MonitorSource:
        return self.core.monitor_source

    @property
    def engine(self) -> Engine:
        return self.hub.engine

    def save_snapshot(self, name: str, include_monitor: bool = False) -> Path:
        """Save every mix value under ``name`` (the monitor section only if asked)."""
        path = self.keeper.save_snapshot(name, include_monitor)
        log.info("snapshot %r saved", name)
        return path

    def recall_snapshot(self, name: str) -> list[str]:
        """Apply snapshot ``name``; returns the values the current session refused."""
        errors = self.keeper.recall_snapshot(name)
        log.info("snapshot %r recalled%s", name, f" ({len(errors)} refused)" if errors else "")
        for line in errors:
            log.warning("snapshot %r: %s", name, line)
        return errors

    def list_snapshots(self) -> list[str]:
        return self.keeper.store.list_snapshots()

    def delete_snapshot(self, name: str) -> bool:
        return self.keeper.store.delete_snapshot(name)

    def reset_meters(self) -> None:
        self.core.reset_meters()

    def attach_reference_player(self, player) -> None:
        """Run a reference.ReferencePlayer in the audio callback (into the external monitor
        inputs, before the engine); None detaches it. Survives device reopens."""
        self.core.set_player(player)

    def attach_loudness_log_tap(self, tap) -> None:
        """Feed a loudlog.TapState (``LoudnessLog.tap``) from the audio callback, after the
        engine; None detaches it. After a session change, attach the new log's tap."""
        self.core.set_tap(tap)

    # ------------------------------------------------------------------------------------
    # lifecycle

    def serve(self) -> int:
        """start, run until SIGINT/SIGTERM, close; SIGHUP reloads. Returns an exit code."""
        self.install_signal_handlers()
        try:
            self.start()
            self.run()
        finally:
            self.close()
        return 0

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def start(self) -> None:
        """Build the engine, restore state, open the device, tell systemd we are ready."""
        cfg = self.config
        self._apply_switch_interval(cfg.audio.switch_interval_ms)
        warm = threading.Event()
        keepalive = threading.Thread(target=self._starting, args=(warm,), daemon=True)
        keepalive.start()
        try:
            self.notifier.status("starting: building the engine (first run compiles kernels)")
            engine = Engine(cfg.session, max_block_frames=self._max_frames(cfg))
            self.hub = ControlHub(engine)
            self._open_state(cfg)
            self._apply_params(cfg.params, initial=True)
            prime(engine)
            self.core = self._make_core(engine, cfg)
            self.core.warm_up()
            self._surfaces = self._surfaces_of(cfg)
            self._import_surfaces()
        finally:
            warm.set()
        self._follow_system(force=True)
        # Everything built so far lives as long as the daemon: out of the cyclic collector's
        # way, so that a collection (which holds the GIL) stays short.
        gc.collect()
        gc.freeze()
        realtime.lock_memory()
        self._open_device(first=True)
        self._start_osc()
        self.add_reload_listener(self._reload_surfaces)
        self.ready_s = time.monotonic() - self._started_at
        log.info(
            "ready in %.2f s: %d channels, %d inputs -> %d outputs, %d Hz, %d frames (%.2f ms)",
            self.ready_s,
            len(cfg.session.channels),
            cfg.session.n_inputs,
            cfg.session.n_outputs,
            cfg.audio.samplerate,
            cfg.audio.block_frames,
            1e3 * cfg.audio.block_frames / cfg.audio.samplerate,
        )
        self.notifier.ready(self._status_text())
        self._start_mdns()
        self._start_midi()

    def _starting(self, done: threading.Event) -> None:
        """While the kernels compile (minutes on a first run on a Pi), keep systemd's start
        timeout from running out."""
        while not done.wait(5.0):
            self.notifier.extend_timeout(15.0)

    def stop(self) -> None:
        """Ask the control loop to end (safe from signal handlers and other threads)."""
        self._stop.set()

    def request_reload(self, path: str | Path | None = None) -> None:
        """Reload at the next control tick (safe from signal handlers)."""
        self._reload_path = path
        self._reload_flag.set()

    def run(self, seconds: float | None = None) -> None:
        """The control loop, on the calling thread, until :meth:`stop` (or ``seconds``)."""
        period = 1.0 / CONTROL_HZ
        end = None if seconds is None else time.monotonic() + seconds
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if end is not None and now >= end:
                break
            try:
                self.tick(now)
            except Exception:  # the loop must survive anything a hook does
                log.exception("control loop error")
            next_tick += period
            wait = next_tick - time.monotonic()
            if wait < -1.0:
                next_tick = time.monotonic()
            self._stop.wait(max(wait, 0.0))

    def close(self) -> None:
        """Stop the control surfaces and the stream, save the state, tell systemd."""
        self.notifier.stopping()
        self._stop_midi()
        self._stop_mdns()
        self._stop_osc()
        if self.device is not None:
            self._close_device()
        self._placement.release()
        if self.core is not None:
            t = self.core.timing()
            log.info(
                "stopped: %d callbacks, %d xruns, callback p50 %.0f µs, p99 %.0f µs, "
                "p99.9 %.0f µs, max %.0f µs (%.1f %% of the %.0f µs period); own CPU time "
                "p50 %.0f µs, p99.9 %.0f µs, max %.0f µs, %d blocks over the period; "
                "device losses %d",
                t["callbacks"], t["xruns"], t["p50_us"], t["p99_us"], t["p999_us"],
                t["max_us"], t["max_pct"], t["period_us"], t["cpu_p50_us"], t["cpu_p999_us"],
                t["cpu_max_us"], t["cpu_overlong"], self.device_losses,
            )  # fmt: skip
        if self.keeper is not None:
            self.keeper.close()
        self._status_line_end()
        gc.unfreeze()

    # ------------------------------------------------------------------------------------
    # control surfaces

    def osc_meters(self) -> dict:
        """The OSC meter streams (any thread): loudness and true peak of what is heard (the
        monitor outputs' meter: momentary and short-term live, integrated since the reset,
        true peak of the last one-second reading) and each channel strip's post-fader peak
        in dBFS (the engine's block peak, the louder lane of a stereo strip)."""
        core, hub = self.core, self.hub
        if core is None or hub is None:
            return {}
        lv = core.levels(METER_MONITOR)
        state = hub.engine.state
        peaks = state.ch_peak
        channels = [
            _dbfs(float(peaks[first : first + count].max()))
            for first, count in zip(state.ch_lane0, state.ch_lanes, strict=True)
        ]
        return {
            "momentary_lufs": lv.momentary_lufs,
            "shortterm_lufs": lv.shortterm_lufs,
            "integrated_lufs": lv.integrated_lufs,
            "true_peak_dbtp": lv.true_peak_dbtp,
            "channel_peak_dbfs": channels,
        }

    @staticmethod
    def _surfaces_of(cfg: Config) -> ControlSurfaces | None:
        try:
            return control_surfaces(cfg)
        except ConfigError as exc:  # only a config built in code gets here unvalidated
            log.error("control surfaces off: %s", exc)
            return None

    def _import_surfaces(self) -> None:
        """Import what the surfaces need while the daemon is starting (before gc.freeze and
        before the stream runs: an import holds the GIL for long stretches)."""
        s = self._surfaces
        if s is None:
            return
        if s.osc is not None:
            import studiod.controllers.osc
            import studiod.controllers.oscquery
        if s.mdns is not None:
            import zeroconf  # noqa: F401

            import studiod.controllers.discovery
        if s.midi is not None:
            import studiod.controllers.midi  # noqa: F401

    def _start_osc(self) -> None:
        from studiod.controllers.discovery import instance_name
        from studiod.controllers.osc import OscServer
        from studiod.controllers.oscquery import OscQueryServer

        s = self._surfaces
        if s is None or s.osc is None:
            return
        cfg = s.osc
        try:
            self.osc = self._bind(
                lambda port: OscServer(
                    self.hub, replace(cfg, port=port), meters_provider=self.osc_meters
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
            try:
                self.oscquery = self._bind(
                    lambda port: OscQueryServer(
                        self.hub, cfg.host, port, osc_port=self.osc.udp_port, name=name,
                        meters_provider=self.osc_meters,
                    ).start(),
                    cfg.oscquery_port,
                    f"oscquery: tcp {cfg.host}:{cfg.oscquery_port}",
                )  # fmt: skip
            except Exception as exc:
                log.error("oscquery: cannot listen on %s:%d (%s); off until a reload",
                          cfg.host, cfg.oscquery_port, exc)  # fmt: skip

    def _bind(self, make, port: int, what: str):
        """``make(port)``; with ``any_free_port``, ``make(0)`` when the port is in use."""
        try:
            return make(port)
        except OSError as exc:
            if not self.any_free_port or exc.errno != errno.EADDRINUSE or port == 0:
                raise
            log.warning("%s is in use; taking a free port instead", what)
            return make(0)

    def _stop_osc(self) -> None:
        for name in ("oscquery", "osc"):
            server = getattr(self, name)
            setattr(self, name, None)
            if server is not None:
                try:
                    server.close()
                except Exception:
                    log.exception("%s: close failed", name)

    def _start_mdns(self) -> None:
        """Advertise the OSC server (zeroconf probes in its own thread: returns at once)."""
        from studiod.controllers.discovery import Discovery

        s, osc = self._surfaces, self.osc
        if s is None or s.mdns is None or osc is None:
            return
        session = self.hub.engine.session
        try:
            self.discovery = Discovery(
                osc.config.host,
                osc.udp_port,
                tcp_port=osc.tcp_port or None,
                oscquery_port=self.oscquery.port if self.oscquery is not None else None,
                channels=len(session.channels),
                systems=[m.name for m in session.systems],
                name=s.mdns.name,
            ).start()
        except Exception as exc:  # mDNS is a convenience: the daemon runs without it
            log.warning("mdns: not advertising: %s", exc)

    def _stop_mdns(self) -> None:
        worker = self._mdns_worker
        if worker is not None:
            worker.join(timeout=15.0)
        with self._mdns_lock:
            self._close_discovery()

    def _close_discovery(self) -> None:
        """Withdraw the mDNS records (under ``_mdns_lock``)."""
        discovery, self.discovery = self.discovery, None
        if discovery is not None:
            try:
                discovery.close()
            except Exception:
                log.exception("mdns: close failed")

    def _restart_mdns(self) -> None:
        """Re-advertise in the background: withdrawing the old records and probing the new
        names takes a second or more, which the control loop must not wait for."""

        def work():
            with self._mdns_lock:
                self._close_discovery()
                self._start_mdns()

        previous = self._mdns_worker
        if previous is not None:
            previous.join(timeout=15.0)
        self._mdns_worker = threading.Thread(target=work, name="mdns-restart", daemon=True)
        self._mdns_worker.start()

    def _start_midi(self) -> None:
        from studiod.controllers.midi import manager_from_config

        s = self._surfaces
        if s is None or s.midi is None:
            return
        try:
            manager = manager_from_config(self.hub, s.midi)
        except Exception as exc:  # no ALSA sequencer, no JACK server, a bad profile
            log.warning("midi: off: %s", exc)
            return
        manager.start()
        self.midi = manager
        log.info(
            "midi: %s MIDI, %d profiles, ports polled every %.1f s",
            s.midi.get("api") or "default", len(manager.profiles), manager.poll_interval_s,
        )  # fmt: skip

    def _stop_midi(self) -> None:
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

    def _reload_surfaces(self, old: Config, new: Config) -> None:
        """Reload listener: restart the surfaces whose section changed; retry the ones that
        are configured but not running."""
        surfaces = self._surfaces_of(new)
        was, self._surfaces = self._surfaces, surfaces
        want_osc = surfaces is not None and surfaces.osc is not None
        osc_restart = new.osc != old.osc or was is None or (want_osc and self.osc is None)
        if osc_restart:  # mDNS may name the old port for the second its restart takes
            self._stop_osc()
            self._start_osc()
        want_mdns = surfaces is not None and surfaces.mdns is not None
        if (
            osc_restart
            or new.mdns != old.mdns
            or new.session != old.session
            or (want_mdns and self.discovery is None)
        ):
            self._restart_mdns()
        want_midi = surfaces is not None and surfaces.midi is not None
        if new.midi != old.midi or was is None or (want_midi and self.midi is None):
            self._stop_midi()
            self._start_midi()

    # ------------------------------------------------------------------------------------
    # the control tick

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._reload_flag.is_set():
            self._reload_flag.clear()
            self.reload(self._reload_path)
        self.hub.engine.service()
        self._supervise_device(now)
        self._placement.follow(self.core.audio_thread_id)
        self._follow_system()
        if self._source_provider is not None:
            try:
                self._source_provider(self.core.monitor_source)
            except Exception:
                log.exception("monitor source provider failed; unregistered")
                self.set_monitor_source_provider(None)
        self._meters(now)
        self.keeper.service()
        self.notifier.watchdog(now)
        if now >= self._next_notify:
            self._next_notify = now + NOTIFY_STATUS_S
            self.notifier.status(self._status_text())
        interval = self.config.log.stats_interval_s
        if interval and now >= self._next_stats:
            if self._next_stats:
                self._log_stats()
            self._next_stats = now + interval
        if self.status_out is not None and now >= self._next_status_line:
            self._next_status_line = now + 1.0 / STATUS_LINE_HZ
            self._status_line()

    def _meters(self, now: float) -> None:
        if self._interval_req and self.core.interval_done(self._interval_req):
            self._interval_req = 0
            reading = self._reading()
            self.last_reading = reading
            for listener in list(self._meter_listeners.values()):
                try:
                    listener(reading)
                except Exception:
                    log.exception("meter listener failed")
        if now >= self._next_meter:
            self._next_meter = max(self._next_meter + METER_INTERVAL_S, now - METER_INTERVAL_S)
            if self.device_state == "running":
                self._interval_req = self.core.request_interval()

    def _reading(self) -> MeterReading:
        return MeterReading(
            time=time.time(),
            system=self._system or "",
            outputs=self._system_outputs,
            source=self._param_text("/monitor/source"),
            master=self.core.levels(METER_MASTER),
            monitor=self.core.levels(METER_MONITOR),
        )

    def _param_text(self, address: str) -> str:
        try:
            param = self.hub.registry[address]
        except ParamError:
            return ""
        return param.format(self.hub.get(address))

    def _follow_system(self, force: bool = False) -> None:
        """Point the monitor meter at the outputs of the exclusive system in use."""
        name = self._param_text("/monitor/system")
        if name == self._system and not force:
            return
        spec = next((m for m in self.hub.engine.session.systems if m.name == name), None)
        self._system = name
        self._system_outputs = tuple(spec.outputs) if spec else ()
        self.core.set_monitor_meter(self._system_outputs)

    # ------------------------------------------------------------------------------------
    # the device

    def _max_frames(self, cfg: Config) -> int:
        return max(4 * cfg.audio.block_frames, 1024)

    def _make_core(self, engine: Engine, cfg: Config) -> AudioCore:
        s = cfg.session
        core = AudioCore(
            engine,
            cfg.audio,
            # a programme (the demo) replaces the inputs: output-only stream
            cfg.audio.device_inputs(s.n_inputs) if self.programme is None else 0,
            cfg.audio.device_outputs(s.n_outputs),
            self._max_frames(cfg),
        )
        if self.programme is not None:
            core.set_loop(self.programme)
        return core

    def _open_device(self, first: bool = False) -> bool:
        cfg, core = self.config, self.core
        try:
            device = self.device_factory(cfg.audio, core)
            device.start()
        except (DeviceError, OSError) as exc:
            now = time.monotonic()
            if first or now - self._retry_logged >= RETRY_LOG_S:
                self._retry_logged = now
                log.error("audio device: %s (retrying)", exc)
            if first:
                self.device_state = "lost"
                self._lost_at = now
            return False
        except Exception as exc:  # PortAudio errors of every kind: keep the daemon up
            now = time.monotonic()
            if first or now - self._retry_logged >= RETRY_LOG_S:
                self._retry_logged = now
                log.error("audio device: %s: %s (retrying)", type(exc).__name__, exc)
            if first:
                self.device_state = "lost"
                self._lost_at = now
            return False
        self.device = device
        now = time.monotonic()
        if self.device_state == "lost" and not first:
            log.info(
                "audio device %s back after %.1f s", getattr(device, "name", "?"),
                now - self._lost_at,
            )  # fmt: skip
        else:
            log.info("audio device %s open", getattr(device, "name", "?"))
        self.device_state = "running"
        self._retry_wait = RETRY_FIRST_S
        self._retry_logged = -math.inf
        self._opened_at = now
        self._seen_callbacks = core.callbacks
        self._seen_at = now
        return True

    def _close_device(self) -> None:
        device, self.device = self.device, None
        if device is None:
            return
        # A stream on a vanished server can hang in close: never let it take the loop.
        closer = threading.Thread(target=device.close, name="studiod-close", daemon=True)
        closer.start()
        closer.join(timeout=2.0)
        if closer.is_alive():
            log.warning("the old audio stream did not close within 2 s; abandoned")

    def _supervise_device(self, now: float) -> None:
        if self.device_state == "running":
            device = self.device
            alive = device is not None and device.active
            count = self.core.callbacks
            if count != self._seen_callbacks:
                self._seen_callbacks = count
                self._seen_at = now
            stalled = now - max(self._seen_at, self._opened_at) > STALL_S
            if alive and not stalled:
                return
            reason = getattr(device, "error", None) or ("no callbacks" if stalled else "stopped")
            log.warning("audio device %s lost (%s); retrying", getattr(device, "name", "?"), reason)
            self.device_losses += 1
            self.device_state = "lost"
            self._lost_at = now
            self._retry_at = now
            self._retry_wait = RETRY_FIRST_S
            self._close_device()
            self.notifier.status(self._status_text())
        if self.device_state == "lost" and now >= self._retry_at:
            if not self._open_device():
                self._retry_wait = min(self._retry_wait * 2.0, RETRY_MAX_S)
                self._retry_at = time.monotonic() + self._retry_wait

    # ------------------------------------------------------------------------------------
    # config and state

    def _open_state(self, cfg: Config) -> None:
        store = StateStore(cfg.state.dir)
        store.remove_stale_temp_files()
        self.keeper = StateKeeper(
            self.hub, store, cfg.state.save_delay_s, cfg.state.max_delay_s, apply=self.apply_values
        )
        try:
            applied, errors = self.keeper.restore()
        except StateError as exc:
            log.error("state: %s; starting from defaults", exc)
            return
        if applied or errors:
            log.info("restored %d parameter values from %s", applied, store.params_path)
        for line in errors:
            log.warning("state: %s", line)

    def apply_values(self, values, source: object = None) -> list[str]:
        """``hub.apply`` that waits out a full parameter queue (a snapshot larger than the
        queue): while the engine is live the audio thread drains it within a block; before
        that, a silent block drains it here. Returns the refused values' messages."""
        errors = []
        for address, value in values.items():
            deadline = time.monotonic() + 1.0
            while True:
                try:
                    self.hub.set(address, value, source)
                    break
                except ParamError as exc:
                    errors.append(str(exc))
                    break
                except QueueFull:
                    if time.monotonic() > deadline:
                        errors.append(f"{address}: the engine is not draining its queue")
                        break
                    live = self.core is not None and self.core.engine is self.hub.engine
                    if live and self.device_state == "running":
                        time.sleep(0.002)
                    else:
                        prime(self.hub.engine, seconds=0.0)
        return errors

    def _apply_params(self, params, initial: bool = False, old=()) -> None:
        """[params] values through the hub (all at start; what changed on reload)."""
        before = dict(old)
        for address, value in params:
            if not initial and address in before and before[address] == value:
                continue
            for line in self.apply_values({address: value}, "config"):
                log.error("config [params] %s", line)

    def reload(self, path: str | Path | None = None) -> bool:
        """Re-read the config (or ``path``) and apply what changed; on any error the running
        config stays. Returns True when the new config is in force."""
        path = path or self.config.path
        if path is None:
            log.warning("reload: this daemon has no config file")
            return False
        self.notifier.reloading()
        try:
            new = load_config(path)
        except ConfigError as exc:
            self.reload_failures += 1
            log.error("reload refused, keeping the running config: %s", exc)
            self.notifier.ready(self._status_text())
            return False
        old = self.config
        try:
            self._apply_reload(old, new)
        except Exception as exc:
            self.reload_failures += 1
            log.exception("reload failed, keeping the running config: %s", exc)
            self.notifier.ready(self._status_text())
            return False
        self.reloads += 1
        self.notifier.ready(self._status_text())
        for listener in list(self._reload_listeners.values()):
            try:
                listener(old, new)
            except Exception:
                log.exception("reload listener failed")
        return True

    def _apply_reload(self, old: Config, new: Config) -> None:
        what = []
        session_changed = new.session != old.session
        device_changed = new.audio != old.audio
        if new.audio.switch_interval_ms != old.audio.switch_interval_ms:
            self._apply_switch_interval(new.audio.switch_interval_ms)
        if session_changed:
            engine = Engine(new.session, max_block_frames=self._max_frames(new))
            refused = self.hub.swap_engine(engine)
            for line in refused:
                log.warning("reload: %s", line)
            self._apply_params(new.params, initial=True)
            prime(engine)
            what.append(f"session ({len(new.session.channels)} channels)")
        else:
            self._apply_params(new.params, old=old.params)
            if dict(new.params) != dict(old.params):
                what.append("params")
        if device_changed or (session_changed and self._needs_new_core(old, new)):
            self.config = new
            if self.device is not None:
                self._close_device()
            old_core = self.core
            self.core = self._make_core(self.hub.engine, new)
            self.core.warm_up()
            if old_core is not None:
                if old_core.monitor_source.active:
                    self.core.monitor_source.activate(True)
                self.core.set_player(old_core.player)
                if not session_changed:
                    self.core.set_tap(old_core.tap)
            self.device_state = "lost"
            self._lost_at = time.monotonic()
            self._retry_wait = RETRY_FIRST_S
            self._open_device()
            if self.device is None:
                self._retry_at = time.monotonic() + self._retry_wait
            what.append("device")
        elif session_changed:
            self.core.swap(self.hub.engine, crossfade=self.device_state == "running")
        if new.state != old.state:
            self.keeper.close()
            self.keeper = StateKeeper(
                self.hub,
                StateStore(new.state.dir),
                new.state.save_delay_s,
                new.state.max_delay_s,
                apply=self.apply_values,
            )
            self.keeper.flush()
            what.append("state")
        if new.log.level != old.log.level:
            logging.getLogger("studiod").setLevel(new.log.level.upper())
        for section in ("osc", "midi", "mdns"):
            if getattr(new, section) != getattr(old, section):
                what.append(section)
        self.config = new
        self._follow_system(force=session_changed)
        log.info("reloaded %s: %s", new.name, ", ".join(what) or "no changes")

    @staticmethod
    def _needs_new_core(old: Config, new: Config) -> bool:
        """A session change that changes the device's channel counts reopens the stream."""
        return old.audio.device_inputs(old.session.n_inputs) != new.audio.device_inputs(
            new.session.n_inputs
        ) or old.audio.device_outputs(old.session.n_outputs) != new.audio.device_outputs(
            new.session.n_outputs
        )

    @staticmethod
    def _apply_switch_interval(ms: float) -> None:
        if ms > 0:
            sys.setswitchinterval(ms * 1e-3)

    # ------------------------------------------------------------------------------------
    # reporting

    def stats(self) -> dict:
        """Audio statistics (see AudioCore.timing) plus the daemon's own counters."""
        out = self.core.timing() if self.core else {}
        out.update(
            device=getattr(self.device, "name", None),
            device_state=self.device_state,
            device_losses=self.device_losses,
            reloads=self.reloads,
            reload_failures=self.reload_failures,
            ready_s=self.ready_s,
            nan_events=self.hub.engine.nan_events if self.hub else 0,
        )
        return out

    def _log_stats(self) -> None:
        t = self.core.timing()
        log.info(
            "audio: %d callbacks, %d xruns, callback p50 %.1f %% p99 %.1f %% p99.9 %.1f %% "
            "max %.1f %% of the period, device %s",
            t["callbacks"], t["xruns"], t["p50_pct"], t["p99_pct"], t["p999_pct"],
            t["max_pct"], self.device_state,
        )  # fmt: skip

    def _status_text(self) -> str:
        if self.core is None:
            return "starting"
        t = self.core.timing()
        lv = self.core.levels(METER_MASTER)
        return (
            f"{self.device_state} {self._system or '-'}; "
            f"M {_fmt(lv.momentary_lufs, 0)} S {_fmt(lv.shortterm_lufs, 0)} "
            f"I {_fmt(lv.integrated_lufs, 0)} LUFS; TP {_fmt(lv.true_peak_max_dbtp, 0)} dBTP; "
            f"xruns {t['xruns']}; callback p99 {t['p99_pct']:.0f} % of period"
        )

    def _status_line(self) -> None:
        lv = self.core.levels(METER_MASTER)
        t = self.core.timing()
        line = (
            f"{self._system or '-':<10} {self._param_text('/monitor/source'):<3}  "
            f"M {_fmt(lv.momentary_lufs)}  S {_fmt(lv.shortterm_lufs)}  "
            f"I {_fmt(lv.integrated_lufs)} LUFS  TP {_fmt(lv.true_peak_max_dbtp, 5)} dBTP  "
            f"| xruns {t['xruns']} ({t['cpu_overlong']} ours)  cb p99 {t['p99_pct']:.0f} %"
        )
        if self.device_state != "running":
            line += f"  [{self.device_state}]"
        try:
            self.status_out.write("\r\033[K" + line)
            self.status_out.flush()
            _StatusAwareHandler.status_line_active = True
        except (OSError, ValueError):
            self.status_out = None

    def _status_line_end(self) -> None:
        if self.status_out is not None and _StatusAwareHandler.status_line_active:
            try:
                self.status_out.write("\n")
                self.status_out.flush()
            except (OSError, ValueError):
                pass
            _StatusAwareHandler.status_line_active = False
