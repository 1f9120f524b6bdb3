"""The audio device component: the callback's core, the stream, its supervision and retry.

It owns the :class:`~studiod.daemon.audio.AudioCore` (the compiled callback, its meters and
records) and the device that calls it. While the stream runs, the control tick checks that
callbacks keep coming; a stream that stops or stalls for ``STALL_S`` is lost, closed, and
reopened with a growing back-off (``RETRY_FIRST_S`` to ``RETRY_MAX_S``), so the audio resumes
within 2 s of the device coming back. A device that runs at another rate than the engine
(a JACK server at 44.1 kHz, a sound card that does not take the configured rate) is not
retried at the wrong rate: the running config with the session at the device's rate is put
in force through the reload's own path (:meth:`~studiod.daemon.runtime.Daemon.apply_config`:
a new engine with every value carried over, meters, loudness log and reference player at
the new rate), which reopens the stream; back at the configured rate, the same way. On a
reload it reopens the stream when the device settings, the channel counts or the rate
change, and otherwise crossfades a new engine in under the running stream. It also makes
the meters' once-a-second reading (the peak interval is closed by the callback on request,
so a reading covers exactly one interval).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from studiod.daemon import realtime
from studiod.daemon.audio import (
    AudioCore,
    DeviceError,
    DeviceRateError,
    JackDevice,
    MeterReading,
    PortAudioDevice,
    VirtualDevice,
)
from studiod.daemon.components import Component, Plan
from studiod.daemon.config import Config, at_samplerate
from studiod.daemon.reference import resample
from studiod.daemon.rtstate import METER_MASTER, METER_MONITOR
from studiod.dsp.engine import Engine
from studiod.dsp.session import SAMPLERATES

log = logging.getLogger("studiod")

METER_INTERVAL_S = 1.0
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


def max_frames(cfg: Config) -> int:
    return max(4 * cfg.audio.block_frames, 1024)


def apply_switch_interval(ms: float) -> None:
    if ms > 0:
        sys.setswitchinterval(ms * 1e-3)


class AudioComponent(Component):
    """The audio device (see the module docstring). ``host``: the supervisor, which gives
    the hub, the config, the device factory, the notifier and the demo's programme."""

    name = "audio"
    sections = ("audio", "session")

    def __init__(self, host):
        super().__init__(host)
        self.core: AudioCore | None = None
        self.device = None
        self.device_state = "closed"  # running, lost, closed
        self.device_losses = 0
        self.system: str | None = None  # the exclusive monitor system in use
        self.system_outputs: tuple[int, ...] = ()
        self._interval_req = 0
        self._next_meter = 0.0
        self._retry_at = 0.0
        self._retry_wait = RETRY_FIRST_S
        self._retry_logged = -math.inf
        self._lost_at = 0.0
        self._opened_at = 0.0
        self._seen_callbacks = 0
        self._seen_at = 0.0
        self._placement = realtime.Placement()
        self._device_rate: tuple[int, str] | None = None  # (Hz, why) for the engine to follow

    # -- lifecycle ----------------------------------------------------------------------
    def prepare(self) -> None:
        """Prime the engine and build the core (the stream opens in :meth:`start`)."""
        host = self.host
        prime(host.hub.engine)
        self.core = self._make_core(host.hub.engine, host.config)
        self.core.warm_up()
        self.follow_system(force=True)

    def start(self) -> None:
        if self.core is None:
            self.prepare()
        realtime.lock_memory()
        self._open_device(first=True)

    def stop(self) -> None:
        if self.device is not None:
            self._close_device()
        self._placement.release()
        if self.core is not None and self.core.callbacks:  # not after a prepare alone
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

    def apply(self, plan: Plan) -> str | None:
        new, engine = plan.new, self.host.hub.engine
        if plan.new.audio.switch_interval_ms != plan.old.audio.switch_interval_ms:
            apply_switch_interval(new.audio.switch_interval_ms)
        if plan.session:
            prime(engine)
        if plan.reopen_device:
            if self.device is not None:
                self._close_device()
            old_core = self.core
            self.core = self._make_core(engine, new)
            self.core.warm_up()
            if old_core is not None:
                if old_core.monitor_source.active:
                    self.core.monitor_source.activate(True)
                self.core.set_player(old_core.player)
                if not plan.session:  # a new session brings its own loudness log
                    self.core.set_tap(old_core.tap)
            self.device_state = "lost"
            self._lost_at = time.monotonic()
            self._retry_wait = RETRY_FIRST_S
            self._open_device(config=new)
            if self.device is None:
                self._retry_at = time.monotonic() + self._retry_wait
            self.follow_system(force=True)
            return "device"
        if plan.session:  # the engine's crossfade under the running stream
            self.core.swap(engine, crossfade=self.device_state == "running")
            self.follow_system(force=True)
        return None

    def tick(self, now: float) -> None:
        self._supervise_device(now)
        if self._device_rate is not None:  # a device that runs at another rate
            self._follow_rate()
        self._placement.follow(self.core.audio_thread_id)
        self.follow_system()

    def status(self) -> dict:
        out = self.core.timing() if self.core else {}
        out.update(
            device=getattr(self.device, "name", None),
            device_state=self.device_state,
            device_losses=self.device_losses,
            samplerate=self.core.samplerate if self.core else None,
            configured_samplerate=self.host.config.audio.samplerate,
        )
        return out

    def status_line(self) -> str:
        """The rate, in the status texts, while it is not the configured one."""
        cfg = self.host.config
        if cfg.session.samplerate == cfg.audio.samplerate:
            return ""
        return f"{cfg.session.samplerate} Hz (configured {cfg.audio.samplerate} Hz)"

    def _follow_rate(self) -> None:
        """Rebuild the engine at the rate the device runs at, through the reload machinery
        (the stream reopens at the new rate); logged once per change of rate."""
        (rate, why), self._device_rate = self._device_rate, None
        cfg = self.host.config
        if rate == cfg.session.samplerate:
            return
        if rate == cfg.audio.samplerate:
            log.info("the device runs at the configured %d Hz again: the engine runs at %d Hz",
                     rate, rate)  # fmt: skip
        else:
            log.warning("the device runs at %d Hz, not the configured %d Hz: the engine runs "
                        "at %d Hz (%s)", rate, cfg.audio.samplerate, rate, why)  # fmt: skip
        what = self.host.apply_config(at_samplerate(cfg, rate))
        log.debug("engine rebuilt at %d Hz: %s", rate, ", ".join(what))
        self.host.notifier.status(self.host.status_text())

    # -- meters -------------------------------------------------------------------------
    def poll_reading(self, now: float) -> MeterReading | None:
        """The reading of the interval the callback closed since the last call (None when
        none closed); asks for the next interval once a second."""
        reading = None
        if self._interval_req and self.core.interval_done(self._interval_req):
            self._interval_req = 0
            reading = self.reading()
        if now >= self._next_meter:
            self._next_meter = max(self._next_meter + METER_INTERVAL_S, now - METER_INTERVAL_S)
            if self.device_state == "running":
                self._interval_req = self.core.request_interval()
        return reading

    def reading(self) -> MeterReading:
        return MeterReading(
            time=time.time(),
            system=self.system or "",
            outputs=self.system_outputs,
            source=self.host.param_text("/monitor/source"),
            master=self.core.levels(METER_MASTER),
            monitor=self.core.levels(METER_MONITOR),
        )

    def follow_system(self, force: bool = False) -> None:
        """Point the monitor meter at the outputs of the exclusive system in use."""
        name = self.host.param_text("/monitor/system")
        if name == self.system and not force:
            return
        spec = next((m for m in self.host.hub.engine.session.systems if m.name == name), None)
        self.system = name
        self.system_outputs = tuple(spec.outputs) if spec else ()
        self.core.set_monitor_meter(self.system_outputs)

    # -- the device ---------------------------------------------------------------------
    def _make_core(self, engine: Engine, cfg: Config) -> AudioCore:
        s = cfg.session
        programme = self.host.programme
        core = AudioCore(
            engine,
            cfg.audio,
            # a programme (the demo) replaces the inputs: output-only stream
            cfg.audio.device_inputs(s.n_inputs) if programme is None else 0,
            cfg.audio.device_outputs(s.n_outputs),
            max_frames(cfg),
        )
        if programme is not None:
            # made at [audio] samplerate: an engine at the device's rate plays it resampled,
            # at its pitch and tempo
            core.set_loop(resample(programme, cfg.audio.samplerate, engine.samplerate))
        return core

    def _open_device(self, first: bool = False, config: Config | None = None) -> bool:
        cfg, core = config or self.host.config, self.core
        try:
            device = self.host.device_factory(cfg.audio, core)
            device.start()
        except DeviceRateError as exc:
            if exc.samplerate in SAMPLERATES:
                # not a failure to retry: the engine follows the device (rebuilt at that
                # rate and the stream reopened at the end of this tick or the next)
                self._device_rate = (exc.samplerate, str(exc))
            else:
                now = time.monotonic()
                if first or now - self._retry_logged >= RETRY_LOG_S:
                    self._retry_logged = now
                    log.error("audio device: %s; the engine runs at %s Hz only (retrying)",
                              exc, ", ".join(map(str, SAMPLERATES)))  # fmt: skip
            if first:
                self.device_state = "lost"
                self._lost_at = time.monotonic()
            return False
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
            self.host.event("device", "back", getattr(device, "name", "?"))
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
            self.host.event("device", "lost", f"{getattr(device, 'name', '?')}: {reason}")
            self.device_losses += 1
            self.device_state = "lost"
            self._lost_at = now
            self._retry_at = now
            self._retry_wait = RETRY_FIRST_S
            self._close_device()
            self.host.notifier.status(self.host.status_text())
        if self.device_state == "lost" and now >= self._retry_at:
            if not self._open_device():
                self._retry_wait = min(self._retry_wait * 2.0, RETRY_MAX_S)
                self._retry_at = time.monotonic() + self._retry_wait
