"""The service: a small supervisor of components.

:class:`Daemon` builds its components from the config (:func:`~studiod.daemon.components.
build_components`: engine, state, audio device, loudness monitor, alerts, OSC/OSCQuery,
mDNS, MIDI), prepares them (everything that lives as long as the daemon is built before the
stream runs, then frozen out of the cyclic collector), starts them in order, tells systemd
it is ready, and stops them in reverse. A reload is a diff
(:func:`~studiod.daemon.components.config_diff`) handed to each component; a component the
new config switches on or off is built or stopped. One :class:`ControlHub` lives as long
as the daemon; engines come and go behind it. When the device runs at another rate than
the engine, the engine follows it: the audio component puts the running config with the
session at the device's rate in force (:meth:`Daemon.apply_config`, the reload's own path).
:attr:`Daemon.config` is the config in force: ``audio.samplerate`` the configured rate,
``session.samplerate`` the engine's.

The control loop runs on the main thread at ``CONTROL_HZ``: each component's tick (the
engine designs what it was asked for, the device is supervised, state is saved), the
meters' once-a-second reading to the components and listeners, the watchdog and the status
line. Signal handlers only set flags.

Hooks for code that embeds the daemon (tests, benchmarks):

* :meth:`add_meter_listener` ``(fn(MeterReading))``: once a second on the control thread;
* :meth:`set_monitor_source_provider` ``(fn(MonitorSource))``: every control tick, to top up
  the ring that replaces the external monitor input pair;
* :meth:`add_reload_listener` ``(fn(old_config, new_config))``: after a reload;
* snapshots (:meth:`save_snapshot` …), :attr:`hub`: the one way to change a parameter.
"""

from __future__ import annotations

import gc
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from studiod.controllers.hub import ControlHub
from studiod.daemon.audio import MeterReading, MonitorSource
from studiod.daemon.components import Component, build_components, config_diff
from studiod.daemon.config import Config, ConfigError, keep_samplerate, load_config
from studiod.daemon.device import DeviceFactory, apply_switch_interval, default_device_factory
from studiod.daemon.device import prime as prime  # re-exported for embedders
from studiod.daemon.notify import Notifier
from studiod.daemon.rtstate import METER_MASTER
from studiod.daemon.status import StatusLine, log_stats, status_text
from studiod.daemon.status import setup_logging as setup_logging  # re-exported
from studiod.dsp._jit import CompileProgress
from studiod.dsp.engine import Engine
from studiod.dsp.registry import ParamError

log = logging.getLogger("studiod")
compile_log = logging.getLogger("studiod.compile")  # what a first start compiles

CONTROL_HZ = 20.0
STATUS_LINE_HZ = 4.0
NOTIFY_STATUS_S = 5.0


def _start_part(part: Component) -> None:
    if part.name in ("engine", "state", "audio"):
        part.start()  # the daemon cannot run without these
        return
    try:
        part.start()
    except Exception as exc:  # an optional part that fails is logged and left off
        log.error("%s: off: %s", part.name, exc)


def _keep_systemd_waiting(notifier: Notifier, done: threading.Event) -> None:
    """While the kernels compile (minutes on a first run on a Pi), keep systemd's start
    timeout from running out."""
    while not done.wait(5.0):
        notifier.extend_timeout(15.0)


@contextmanager
def _starting(notifier: Notifier):
    """While the components are prepared (minutes when numba compiles, on a Pi's first start):
    systemd's start timeout is extended, and what is compiled is reported as it happens (the
    log and STATUS=), so that a first start never looks like a hang."""
    done = threading.Event()
    threading.Thread(target=_keep_systemd_waiting, args=(notifier, done), daemon=True).start()

    def report(text: str) -> None:
        compile_log.info("%s", text)
        notifier.status(f"starting: {text}")

    try:
        with CompileProgress(report):
            yield
    finally:
        done.set()


class _Hooks:
    """The daemon's API for code that embeds it (tests, benchmarks, the demo) and for its
    components: meter and reload listeners, the monitor-source ring, snapshots, the player
    and the log tap, events for the alerts."""

    def _init_hooks(self) -> None:
        self._tokens = itertools.count(1)
        self._meter_listeners: dict[int, Callable[[MeterReading], None]] = {}
        self._reload_listeners: dict[int, Callable[[Config, Config], None]] = {}
        self._source_provider: Callable[[MonitorSource], None] | None = None

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

    def save_snapshot(self, name: str, include_monitor: bool = False) -> Path:
        """Save every mix value under ``name`` (the monitor section only if asked)."""
        path = self.keeper.save_snapshot(name, include_monitor)
        log.info("snapshot %r saved", name)
        return path

    def recall_snapshot(self, name: str) -> list[str]:
        """Apply snapshot ``name``, crossfaded over ``/snapshot/fade`` ms; returns the
        values the current session refused."""
        fade_s = self.hub.get("/snapshot/fade") / 1000.0
        errors = self.keeper.recall_snapshot(name, fade_s)
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
        """Feed a loudtap.TapState from the audio callback, after the engine; None detaches."""
        self.core.set_tap(tap)

    def event(self, kind: str, state: str, text: str) -> None:
        """A component's event for the alerts (device lost / back)."""
        alerts = self.alerts
        if alerts is not None:
            alerts.event(kind, state, text)

    def apply_values(self, values, source: object = None) -> list[str]:
        """``hub.apply`` that waits out a full parameter queue (see StateComponent)."""
        return self.component("state").apply_values(values, source)


class Daemon(_Hooks):
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
        """``programme``: looped into the engine inputs (the demo), made at ``[audio]
        samplerate``; ``any_free_port``: when the configured OSC or OSCQuery port is in use,
        take any free one instead of leaving the server off (the demo)."""
        self.config = config
        self.device_factory = device_factory or default_device_factory
        self.notifier = notifier or Notifier()
        self.programme = programme
        self.any_free_port = any_free_port
        self.hub: ControlHub | None = None
        self.components: list[Component] = []
        self.reloads = 0
        self.reload_failures = 0
        self.ready_s: float | None = None
        self.last_reading: MeterReading | None = None
        self._status_line = StatusLine(status_out)
        self._started_at = time.monotonic()
        self._stop = threading.Event()
        self._reload_path: str | Path | None = None
        self._reload_flag = threading.Event()
        self._init_hooks()
        self._closed = False
        self._next_status_line = 0.0
        self._next_notify = 0.0
        self._next_stats = 0.0

    # ------------------------------------------------------------------------------------
    # the components

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    def _part(self, name: str, attr: str):
        part = self.component(name)
        return getattr(part, attr) if part is not None else None

    audio = property(lambda self: self.component("audio"))
    core = property(lambda self: self._part("audio", "core"))
    device = property(lambda self: self._part("audio", "device"))
    device_state = property(lambda self: self._part("audio", "device_state") or "closed")
    device_losses = property(lambda self: self._part("audio", "device_losses") or 0)
    system = property(lambda self: self._part("audio", "system"))
    keeper = property(lambda self: self._part("state", "keeper"))
    osc = property(lambda self: self._part("osc", "osc"))
    web = property(lambda self: self._part("osc", "web"))
    discovery = property(lambda self: self._part("mdns", "discovery"))
    midi = property(lambda self: self._part("midi", "midi"))
    loudness = property(lambda self: self.component("loudness"))
    alerts = property(lambda self: self.component("alerts"))

    @property
    def engine(self) -> Engine:
        return self.hub.engine

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

    def prepare(self) -> None:
        """Build the components and prepare them (the engine, its compiled code, the core):
        everything up to opening the device and the sockets."""
        self.notifier.status("starting: building the engine")
        with _starting(self.notifier):
            self.components = build_components(self, self.config)
            for part in self.components:
                part.prepare()

    def start(self) -> None:
        """Build and start the components, tell systemd we are ready."""
        cfg = self.config
        apply_switch_interval(cfg.audio.switch_interval_ms)
        if not self.components:
            self.prepare()
        # Everything built so far lives as long as the daemon: out of the cyclic collector's
        # way, so that a collection (which holds the GIL) stays short.
        gc.collect()
        gc.freeze()
        for part in self.components:
            if part.before_ready:
                _start_part(part)
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
        self.notifier.ready(self.status_text())
        for part in self.components:
            if not part.before_ready:
                _start_part(part)

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
        """Stop the components in reverse order (the state is saved last), tell systemd.
        Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self.notifier.stopping()
        for part in reversed(self.components):
            try:
                part.stop()
            except Exception:
                log.exception("%s: stop failed", part.name)
        self._status_line.end()
        gc.unfreeze()

    # ------------------------------------------------------------------------------------
    # reload

    def reload(self, path: str | Path | None = None) -> bool:
        """Re-read the config (or ``path``) and apply what changed; on any error the running
        config stays. Returns True when the new config is in force."""
        path = path or self.config.path
        if path is None:
            log.warning("reload: this daemon has no config file")
            return False
        self.notifier.reloading()
        try:
            new = keep_samplerate(self.config, load_config(path))  # a followed rate stays
        except ConfigError as exc:
            self.reload_failures += 1
            log.error("reload refused, keeping the running config: %s", exc)
            self.notifier.ready(self.status_text())
            return False
        old = self.config
        try:
            what = self.apply_config(new)
        except Exception as exc:
            self.reload_failures += 1
            log.exception("reload failed, keeping the running config: %s", exc)
            self.notifier.ready(self.status_text())
            return False
        log.info("reloaded %s: %s", new.name, ", ".join(what) or "no changes")
        self.reloads += 1
        self.notifier.ready(self.status_text())
        for listener in list(self._reload_listeners.values()):
            try:
                listener(old, new)
            except Exception:
                log.exception("reload listener failed")
        return True

    def apply_config(self, new: Config) -> list[str]:
        """Put ``new`` in force, each component taking its part; returns what changed."""
        old = self.config
        plan = config_diff(old, new)
        what = []
        wanted = build_components(self, new)
        names = {p.name for p in wanted}
        for part in [p for p in self.components if p.name not in names]:
            part.stop()
            self.components.remove(part)
            what.append(f"{part.name} off")
        for part in self.components:
            done = part.apply(plan)
            if done:
                what.append(done)
        self.config = new
        have = {p.name for p in self.components}
        for index, part in enumerate(wanted):
            if part.name not in have:
                part.prepare()
                _start_part(part)
                self.components.insert(min(index, len(self.components)), part)
                what.append(f"{part.name} on")
        if "log" in plan.changed and new.log.level != old.log.level:
            logging.getLogger("studiod").setLevel(new.log.level.upper())
        return what

    # ------------------------------------------------------------------------------------
    # the control tick

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._reload_flag.is_set():
            self._reload_flag.clear()
            self.reload(self._reload_path)
        for part in self.components:
            part.tick(now)
        if self._source_provider is not None:
            try:
                self._source_provider(self.core.monitor_source)
            except Exception:
                log.exception("monitor source provider failed; unregistered")
                self.set_monitor_source_provider(None)
        reading = self.audio.poll_reading(now)
        if reading is not None:
            self.last_reading = reading
            listeners = [p.on_reading for p in self.components]
            for listener in listeners + list(self._meter_listeners.values()):
                try:
                    listener(reading)
                except Exception:
                    log.exception("meter listener failed")
        self.notifier.watchdog(now)
        if now >= self._next_notify:
            self._next_notify = now + NOTIFY_STATUS_S
            self.notifier.status(self.status_text())
        interval = self.config.log.stats_interval_s
        if interval and now >= self._next_stats:
            if self._next_stats:
                log_stats(self.core.timing(), self.device_state)
            self._next_stats = now + interval
        if self._status_line.out is not None and now >= self._next_status_line:
            self._next_status_line = now + 1.0 / STATUS_LINE_HZ
            self._status_line.draw(
                self.device_state, self.system, self.param_text("/monitor/source"),
                self.core.levels(METER_MASTER), self.core.timing(), self._status_extra(),
            )  # fmt: skip

    # ------------------------------------------------------------------------------------
    # reporting

    def param_text(self, address: str) -> str:
        try:
            param = self.hub.registry[address]
        except ParamError:
            return ""
        return param.format(self.hub.get(address))

    def stats(self) -> dict:
        """Audio statistics (see AudioCore.timing) plus every component's status."""
        out = {}
        for part in self.components:
            out.update(part.status())
        out.update(reloads=self.reloads, reload_failures=self.reload_failures,
                   ready_s=self.ready_s)  # fmt: skip
        return out

    def _status_extra(self) -> str:
        return " ".join(filter(None, (getattr(p, "status_line", lambda: "")()
                                      for p in self.components)))  # fmt: skip

    def status_text(self) -> str:
        core = self.core
        if core is None:
            return "starting"
        return status_text(self.device_state, self.system, core.levels(METER_MASTER),
                           core.timing(), self._status_extra())  # fmt: skip
