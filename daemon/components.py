"""The daemon's parts: one interface for each, the reload plan, and the one place that builds
them from a config.

A :class:`Component` has ``prepare()`` (build before the stream runs), ``start()``,
``stop()``, ``apply(plan)`` (its part of a reload) and ``status()``; it may also
``tick(now)`` on the control thread (20 Hz) and take the meters' once-a-second
:class:`~studiod.daemon.audio.MeterReading` in ``on_reading``. It owns its threads. The
supervisor (:class:`studiod.daemon.runtime.Daemon`) prepares and starts them in the order
:func:`build_components` gives, stops them in reverse, and hands each a reload.

A reload is a diff (after CamillaDSP's config diff): :func:`config_diff` compares two
validated configs section by section into a :class:`Plan`; each component reads the
sections it depends on (:attr:`Component.sections`) from it. Parameter changes apply live,
a session change builds a new engine that is crossfaded in, a device change (or a new
samplerate: the engine following the device's rate) reopens the stream, a changed surface
restarts; a component switched on or off in the new config is
built or stopped by the supervisor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace

from studiod.daemon.config import Config

log = logging.getLogger("studiod")


@dataclass(frozen=True)
class Plan:
    """What a reload changes: ``changed`` holds the config sections that differ; the
    derived flags say what the engine and the device must do."""

    old: Config
    new: Config
    changed: frozenset[str]
    reopen_device: bool  # the device settings, the stream's channel counts or rate changed

    def touches(self, sections: tuple[str, ...]) -> bool:
        return not self.changed.isdisjoint(sections)

    @property
    def session(self) -> bool:
        return "session" in self.changed

    @property
    def graph(self) -> bool:
        """The session changed in more than its samplerate (channels, buses, systems…).
        A samplerate alone (the engine following the device's rate) keeps every parameter
        the engine has, and the same channels and systems."""
        old, new = self.old.session, self.new.session
        return self.session and replace(old, samplerate=new.samplerate) != new


def config_diff(old: Config, new: Config) -> Plan:
    """The reload plan from ``old`` to ``new`` (both validated)."""
    names = [f.name for f in fields(Config) if f.name != "path"]
    changed = frozenset(n for n in names if getattr(old, n) != getattr(new, n))
    channels_changed = old.audio.device_inputs(old.session.n_inputs) != new.audio.device_inputs(
        new.session.n_inputs
    ) or old.audio.device_outputs(old.session.n_outputs) != new.audio.device_outputs(
        new.session.n_outputs
    )
    rate_changed = old.session.samplerate != new.session.samplerate  # the stream's rate
    return Plan(old, new, changed, "audio" in changed or channels_changed or rate_changed)


class Component:
    """One part of the running daemon (see the module docstring). ``host`` is the
    supervisor: components reach the hub, the audio core and each other through it."""

    name = "component"
    sections: tuple[str, ...] = ()  # config sections whose change concerns it
    before_ready = True  # started before READY (False: right after, e.g. mDNS, MIDI)

    def __init__(self, host):
        self.host = host

    def prepare(self) -> None:
        """Build what lives as long as the daemon, before the stream runs (imports and
        allocations hold the GIL; the supervisor then freezes it out of the collector)."""

    def start(self) -> None:
        """Start (on the control thread; may raise: the supervisor logs it and goes on for
        optional parts)."""

    def stop(self) -> None:
        """Stop and release everything (never raises)."""

    def apply(self, plan: Plan) -> str | None:
        """Take this component's part of a reload; returns what changed, for the log line."""
        return None

    def tick(self, now: float) -> None:
        """Called every control tick (keep it short)."""

    def on_reading(self, reading) -> None:
        """The meters' once-a-second reading (control thread)."""

    def status(self) -> dict:
        return {}


def build_components(host, config: Config) -> list[Component]:
    """Every component the config asks for, in start order (the one place that decides
    what runs): engine, state, audio device, loudness monitor, alerts, reference player
    (when the session has external monitor inputs), OSC (+ OSCQuery), then mDNS and MIDI
    after READY."""
    from studiod.daemon.config import ConfigError, control_surfaces
    from studiod.daemon.device import AudioComponent
    from studiod.daemon.engine_part import EngineComponent, StateComponent
    from studiod.daemon.surfaces import MdnsComponent, MidiComponent, OscComponent

    parts: list[Component] = [EngineComponent(host), StateComponent(host), AudioComponent(host)]
    parts.extend(_monitoring(host, config))
    try:
        surfaces = control_surfaces(config)
    except ConfigError as exc:  # only a config built in code gets here unvalidated
        log.error("control surfaces off: %s", exc)
        return parts
    if surfaces.osc is not None:
        parts.append(OscComponent(host, surfaces))
        if surfaces.mdns is not None:
            parts.append(MdnsComponent(host, surfaces))
    if surfaces.midi is not None:
        parts.append(MidiComponent(host, surfaces))
    return parts


def _monitoring(host, config: Config) -> list[Component]:
    """The loudness monitor and the alerts, when their sections enable them (default on)."""
    out: list[Component] = []
    loudness = getattr(config, "loudness", None)
    if loudness is not None and loudness.enabled:
        from studiod.daemon.monitor import LoudnessMonitor

        out.append(LoudnessMonitor(host))
    alerts = getattr(config, "alerts", None)
    if alerts is not None and alerts.enabled:
        from studiod.daemon.alerts import AlertsComponent

        out.append(AlertsComponent(host))
    reference = getattr(config, "reference", None)
    if reference is not None and reference.enabled and config.session.ext_inputs:
        from studiod.daemon.reference_part import ReferenceComponent

        out.append(ReferenceComponent(host))
    return out
