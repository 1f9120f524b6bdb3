"""The daemon's TOML config, validated into frozen dataclasses.

Every error names the file, the key and the reason, e.g.
``studio.toml: [audio] block_frames: must be a power of two from 16 to 8192, got 100``.

Sections (see examples/studio.toml and docs/configuration.md):

* ``[audio]``    the device (PortAudio name/pattern and host API, or the virtual device),
  samplerate, block size, input and output channel maps, realtime knobs;
* ``[session]``  the engine graph: channels, groups, FX buses, monitor systems
  (:meth:`studiod.dsp.session.Session.from_dict`);
* ``[params]``   parameter values by registry address (calibration trims, system delays…):
  applied at start after the state file, and live on reload;
* ``[state]``    where parameter values and snapshots are kept;
* ``[log]``      log level and how often audio statistics are logged;
* ``[loudness]`` the live loudness log (on by default): delivery target, retention,
  per-system SPL calibration, programme segment thresholds;
* ``[alerts]``   live alerts (on by default): delays, thresholds, the reference level;
* ``[reference]`` the reference-track player (a track to A/B against the mix);
* ``[osc]``, ``[midi]``, ``[mdns]``: the control surfaces (OSC + OSCQuery, MIDI, discovery).
  Kept as read-only mappings in :class:`Config`; validated at load by
  :func:`control_surfaces`, which turns them into the controllers' own config objects (each
  also takes ``enabled = false`` to switch it off).
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from studiod.daemon.logdb import LogConfig as LoudnessLogConfig
from studiod.dsp.layout import build_layout, describe_renames, migrate_values
from studiod.dsp.registry import ParamError
from studiod.dsp.session import (
    MAX_BLOCK_FRAMES,
    SAMPLERATES,
    Session,
    SessionError,
    unknown_keys,
)

log = logging.getLogger("studiod.config")

BACKENDS = ("portaudio", "jack", "virtual")
LOG_LEVELS = ("debug", "info", "warning", "error")
PASS_THROUGH = ("osc", "midi", "mdns")
SECTIONS = (
    "audio", "session", "params", "state", "log", *PASS_THROUGH, "loudness", "alerts", "reference",
)  # fmt: skip
MIN_BLOCK_FRAMES = 16
MIDI_KEYS = ("enabled", "api", "profile_dir", "profiles", "poll_s")
MIDI_APIS = ("alsa", "jack")
# The default GIL switch interval, chosen by measurement (docs/realtime.md,
# benchmarks/bench_soak.py): CPython's 5 ms default lets a busy control thread hold the GIL
# for several 1.3 ms periods; 0.5 ms kept a 64-frame stream free of xruns under control
# floods. 0 leaves Python's default alone.
DEFAULT_SWITCH_INTERVAL_MS = 0.5
# Tables and arrays nested deeper than this are no config of ours (the deepest we read is
# [session] monitor.system[i], four levels); tomllib recurses per level and would raise
# RecursionError at about a thousand.
MAX_TOML_DEPTH = 16
# Linux: PATH_MAX 4096 bytes for a path, NAME_MAX 255 bytes for one of its components.
PATH_MAX_BYTES = 4096
NAME_MAX_BYTES = 255


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, key and reason."""


@dataclass(frozen=True)
class AudioConfig:
    """How the engine meets the audio hardware.

    device: PortAudio device name, case-insensitive substring or glob pattern (None: the host
    API's default device). hostapi: substring of the PortAudio host API name ("JACK",
    "ALSA", "CoreAudio", "WASAPI"; None: any). input_map[k]: 1-based device channel feeding
    engine input k + 1 (0: silence); output_map[k]: 1-based device channel that engine
    output k + 1 goes to (0: nowhere). Empty maps mean identity.
    """

    backend: str = "portaudio"
    device: str | None = None
    hostapi: str | None = None
    samplerate: int = 48000
    block_frames: int = 64
    input_map: tuple[int, ...] = ()
    output_map: tuple[int, ...] = ()
    client_name: str = "studiod"  # the JACK client name
    autoconnect: bool = True  # JACK: connect our ports to the server's physical ports
    latency: str = "low"  # PortAudio suggested latency: "low", "high" or seconds as text
    realtime_priority: int = 70  # SCHED_FIFO priority of the virtual device's thread (0: off)
    switch_interval_ms: float = DEFAULT_SWITCH_INTERVAL_MS

    def device_inputs(self, n_inputs: int) -> int:
        """Device input channels the stream opens for an engine with ``n_inputs`` inputs."""
        return max(self.input_map) if self.input_map else n_inputs

    def device_outputs(self, n_outputs: int) -> int:
        return max(self.output_map) if self.output_map else n_outputs


@dataclass(frozen=True)
class StateConfig:
    dir: Path
    save_delay_s: float = 1.0  # debounce: save this long after the last change
    max_delay_s: float = 5.0  # … but at least this often while values keep moving


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    stats_interval_s: float = 60.0  # audio statistics line (0: only at stop)


@dataclass(frozen=True)
class LoudnessConfig(LoudnessLogConfig):
    """[loudness]: the live loudness log of the master and every monitor system: the log's
    own settings (:class:`studiod.daemon.logdb.LogConfig`: target, retention, segment
    thresholds, dose threshold; see :mod:`studiod.dsp.loudtap` for the definitions) and:

    spl_at_minus20dbfs: monitor system name -> its SPL calibration (dB SPL, A-weighted, of
    -20 dBFS RMS pink noise on one channel); a calibrated system gets listening level and
    noise dose."""

    enabled: bool = True
    spl_at_minus20dbfs: Mapping = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class AlertsConfig:
    """[alerts]: what the alerts watch and how long a condition must last (seconds).

    The delivery target (its true-peak ceiling and loudness tolerance) is [loudness]
    target. mono_correlation: the master's correlation below this is a mono-compatibility
    problem; xrun_burst: this many
    xruns within xrun_window_s; clear_s: how long a condition must be gone before its
    alert clears (hysteresis); reference_dbfs: the gain-staging reference (RMS)."""

    enabled: bool = True
    target_delay_s: float = 10.0
    mono_correlation: float = -0.3
    mono_delay_s: float = 3.0
    xrun_burst: int = 3
    xrun_window_s: float = 10.0
    dose_steps_percent: tuple[float, ...] = (50.0, 80.0, 100.0)
    clear_s: float = 5.0
    reference_dbfs: float = -18.0


@dataclass(frozen=True)
class ReferenceConfig:
    """[reference]: the reference-track player in the audio callback. tracks: the
    references of the session (``/player/track N`` loads the N-th), the first loaded at
    start; it plays into the session's external monitor inputs while ``/monitor/source`` is
    "ref", loudness-matched to the mix, and pauses on "mix"."""

    enabled: bool = True
    tracks: tuple[Path, ...] = ()
    loop: bool = True


@dataclass(frozen=True)
class Config:
    """A validated config; ``params`` are (address, value) pairs in file order.

    ``audio.samplerate`` is the rate asked of the device; ``session.samplerate`` the rate
    the engine runs at. A loaded config has them equal; the running daemon's config has the
    device's rate in the session when the device runs at another (:func:`at_samplerate`)."""

    path: Path | None
    audio: AudioConfig
    session: Session
    params: tuple[tuple[str, object], ...]
    state: StateConfig
    log: LogConfig
    osc: Mapping = field(default_factory=lambda: MappingProxyType({}))
    midi: Mapping = field(default_factory=lambda: MappingProxyType({}))
    mdns: Mapping = field(default_factory=lambda: MappingProxyType({}))
    loudness: LoudnessConfig = field(default_factory=LoudnessConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)

    @property
    def name(self) -> str:
        return str(self.path) if self.path else "<built-in>"


def at_samplerate(config: Config, samplerate: int) -> Config:
    """``config`` with its engine (the session) at ``samplerate``: the device's rate, when
    the device runs at another than ``[audio] samplerate`` (which stays the wanted rate)."""
    return replace(config, session=replace(config.session, samplerate=samplerate))


def keep_samplerate(running: Config, new: Config) -> Config:
    """``new`` (a reloaded file) with the running engine's rate when it asks the device for
    the same rate as ``running``: a device rate the engine follows stays (a device that is
    reopened for other reasons says so if it now runs at another)."""
    if new.audio.samplerate != running.audio.samplerate:
        return new
    return at_samplerate(new, running.session.samplerate)


def default_state_dir() -> Path:
    """systemd's StateDirectory= ($STATE_DIRECTORY), else $XDG_STATE_HOME/studiod, else
    ~/.local/state/studiod."""
    systemd = os.environ.get("STATE_DIRECTORY")
    if systemd:
        return Path(systemd.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "studiod"


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"{path}: values nested too deeply (at most {MAX_TOML_DEPTH} levels)"
        ) from None
    return parse_config(data, path)


def _depth(value: object) -> int:
    """How deeply tables and arrays nest in a parsed TOML value (without recursion)."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, Mapping):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_TOML_DEPTH:
            break
        todo.extend((child, depth + 1) for child in children)
    return deepest


def parse_config(data: Mapping, path: str | Path | None = None) -> Config:
    """Validate a parsed TOML mapping. ``path`` names the file in errors and anchors
    relative paths (the state dir) at the file's folder."""
    path = Path(path) if path is not None else None
    where = str(path) if path is not None else "<config>"
    if _depth(data) > MAX_TOML_DEPTH:
        raise ConfigError(f"{where}: values nested too deeply (at most {MAX_TOML_DEPTH} levels)")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        text = unknown_keys(where, unknown, SECTIONS)
        raise ConfigError(text.replace("unknown key(s)", "unknown section(s)", 1))
    for name in SECTIONS:
        if name in data and not isinstance(data[name], Mapping):
            raise ConfigError(f"{where}: [{name}] must be a table, not {_kind(data[name])}")
    audio = _audio(data.get("audio", {}), where)
    session = _session(data.get("session"), audio, where)
    params = _params(data.get("params", {}), session, where)
    base = path.parent if path is not None else Path.cwd()
    state = _state(data.get("state", {}), base, where)
    log = _log(data.get("log", {}), where)
    n_in, n_out = session.n_inputs, session.n_outputs
    if audio.input_map and len(audio.input_map) < n_in:
        raise ConfigError(
            f"{where}: [audio] input_map: the session uses {n_in} engine inputs but the map "
            f"names {len(audio.input_map)}"
        )
    if audio.output_map and len(audio.output_map) < n_out:
        raise ConfigError(
            f"{where}: [audio] output_map: the session uses {n_out} engine outputs but the "
            f"map names {len(audio.output_map)}"
        )
    passed = {k: _freeze(copy.deepcopy(dict(data.get(k, {})))) for k in PASS_THROUGH}
    config = Config(
        path=path,
        audio=audio,
        session=session,
        params=params,
        state=state,
        log=log,
        **passed,
        loudness=_loudness(data.get("loudness", {}), session, where),
        alerts=_alerts(data.get("alerts", {}), where),
        reference=_reference(data.get("reference", {}), base, where),
    )
    control_surfaces(config)  # a bad [osc]/[midi]/[mdns] is refused like any other section
    return config


@dataclass(frozen=True)
class ControlSurfaces:
    """What the daemon runs in front of its hub, from ``[osc]``, ``[mdns]`` and ``[midi]``.

    osc: a :class:`studiod.controllers.osc.OscConfig` (its ``oscquery_port`` is the OSCQuery
    HTTP server, 0: none), or None when ``[osc] enabled = false``; mdns: a
    :class:`studiod.controllers.discovery.DiscoveryConfig` or None when disabled (it needs
    OSC: it advertises the OSC and OSCQuery ports); midi: the ``[midi]`` table for
    :func:`studiod.controllers.midi.manager_from_config` (``profile_dir`` made absolute), or
    None when disabled.
    """

    osc: object | None
    mdns: object | None
    midi: Mapping | None


def control_surfaces(config: Config) -> ControlSurfaces:
    """Validate and convert a config's control-surface sections; raises ConfigError naming
    the file, the section and the key. Every section may be absent: OSC on 127.0.0.1:9000
    with OSCQuery on 9001, mDNS on OSC's interface, MIDI on the platform's default API."""
    from studiod.controllers.discovery import DiscoveryConfig
    from studiod.controllers.osc import OscConfig

    where = config.name
    table = thaw(config.osc)
    osc_on = _enabled(table, where, "osc")
    try:
        osc = OscConfig.from_mapping(table)
    except (TypeError, ValueError) as exc:
        raise ConfigError(_controller_error(where, "osc", exc)) from None
    table = thaw(config.mdns)
    try:
        mdns = DiscoveryConfig.from_mapping(table)
    except (TypeError, ValueError) as exc:
        raise ConfigError(_controller_error(where, "mdns", exc)) from None
    midi = _midi(thaw(config.midi), config.path, where)
    return ControlSurfaces(
        osc=osc if osc_on else None,
        mdns=mdns if mdns.enabled and osc_on else None,
        midi=midi,
    )


def _enabled(table: dict, where: str, section: str) -> bool:
    enabled = table.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: [{section}] enabled: must be true or false")
    return enabled


def _controller_error(where: str, section: str, exc: Exception) -> str:
    """The controllers' own messages ("osc.port: …", "mdns: unknown key(s) …") in ours."""
    text = str(exc)
    for prefix in (f"{section}.", f"{section}: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    return f"{where}: [{section}] {text}"


def _midi(table: dict, path: Path | None, where: str) -> dict | None:
    _check_keys(table, MIDI_KEYS, where, "midi")
    if not _enabled(table, where, "midi"):
        return None
    _str(table, "api", where, "midi", None, MIDI_APIS)
    raw = _str(table, "profile_dir", where, "midi", None)
    if raw is not None:
        if "\0" in raw:
            raise ConfigError(f"{where}: [midi] profile_dir: contains a NUL character")
        folder = Path(os.path.expanduser(raw))
        if not folder.is_absolute():
            folder = (path.parent if path is not None else Path.cwd()) / folder
        _check_dir(folder, where, "midi", "profile_dir", writable=False)
        table["profile_dir"] = str(folder)
    profiles = table.get("profiles")
    if profiles is not None and (
        not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles)
    ):
        raise ConfigError(f"{where}: [midi] profiles: must be an array of profile ids")
    if "poll_s" in table:
        # rtmidi reports no unplugging: the port list is polled; hot-plug within 2 s
        # (issue 5) needs a poll well under that
        table["poll_s"] = _float(table, "poll_s", where, "midi", 0.5, 0.05, 1.0)
    return table


# --------------------------------------------------------------------------------------
# sections


def _kind(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)  # fmt: skip


def _check_keys(table: Mapping, known: tuple[str, ...], where: str, section: str) -> None:
    unknown = set(table) - set(known)
    if unknown:
        raise ConfigError(unknown_keys(f"{where}: [{section}]", unknown, known))


def _int(table, key, where, section, default, lo, hi) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: [{section}] {key}: must be an integer, not {_kind(value)}")
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: [{section}] {key}: must be from {lo} to {hi}, got {value}")
    return value


def _float(table, key, where, section, default, lo, hi) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: [{section}] {key}: must be a number, not {_kind(value)}")
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"{where}: [{section}] {key}: must be from {lo:g} to {hi:g}, got {value}")
    return value


def _str(table, key, where, section, default, choices=None) -> str | None:
    value = table.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: [{section}] {key}: must be a string, not {_kind(value)}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: [{section}] {key}: {value!r} is not one of {list(choices)}")
    return value


def _channel_map(table, key, where) -> tuple[int, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ConfigError(f"{where}: [audio] {key}: must be an array of integers")
    if any(not 0 <= v <= 256 for v in value):
        raise ConfigError(
            f"{where}: [audio] {key}: channels are 1-based device channels 1…256 (0: none)"
        )
    if value and max(value) == 0:
        raise ConfigError(f"{where}: [audio] {key}: maps every channel to none")
    return tuple(value)


def _audio(table: Mapping, where: str) -> AudioConfig:
    known = tuple(AudioConfig.__dataclass_fields__)
    _check_keys(table, known, where, "audio")
    backend = _str(table, "backend", where, "audio", "portaudio", BACKENDS)
    hostapi = _str(table, "hostapi", where, "audio", None)
    if backend == "portaudio" and hostapi is not None and "jack" in hostapi.casefold():
        # PortAudio's JACK host API hangs for good when the server dies; ours recovers
        backend = "jack"
    autoconnect = table.get("autoconnect", True)
    if not isinstance(autoconnect, bool):
        raise ConfigError(f"{where}: [audio] autoconnect: must be true or false")
    samplerate = _int(table, "samplerate", where, "audio", 48000, 0, 10**6)
    if samplerate not in SAMPLERATES:
        raise ConfigError(
            f"{where}: [audio] samplerate: {samplerate} is not one of {list(SAMPLERATES)}"
        )
    block = _int(table, "block_frames", where, "audio", 64, MIN_BLOCK_FRAMES, MAX_BLOCK_FRAMES)
    if block & (block - 1):
        raise ConfigError(
            f"{where}: [audio] block_frames: must be a power of two from {MIN_BLOCK_FRAMES} "
            f"to {MAX_BLOCK_FRAMES}, got {block}"
        )
    latency = table.get("latency", "low")
    if isinstance(latency, int | float) and not isinstance(latency, bool):
        if not 0.0 < float(latency) <= 1.0:
            raise ConfigError(f"{where}: [audio] latency: seconds must be in (0, 1], got {latency}")
        latency = str(float(latency))
    elif latency not in ("low", "high"):
        raise ConfigError(f"{where}: [audio] latency: 'low', 'high' or seconds, not {latency!r}")
    client = _str(table, "client_name", where, "audio", "studiod")
    if not client or len(client) > 32 or ":" in client:
        raise ConfigError(
            f"{where}: [audio] client_name: 1 to 32 characters without ':', got {client!r}"
        )
    return AudioConfig(
        backend=backend,
        device=_str(table, "device", where, "audio", None),
        hostapi=hostapi,
        samplerate=samplerate,
        block_frames=block,
        input_map=_channel_map(table, "input_map", where),
        output_map=_channel_map(table, "output_map", where),
        client_name=client,
        autoconnect=autoconnect,
        latency=latency,
        realtime_priority=_int(table, "realtime_priority", where, "audio", 70, 0, 99),
        switch_interval_ms=_float(
            table, "switch_interval_ms", where, "audio", DEFAULT_SWITCH_INTERVAL_MS, 0.0, 100.0
        ),
    )


def _session(table: Mapping | None, audio: AudioConfig, where: str) -> Session:
    if table is None:
        raise ConfigError(f"{where}: [session] is missing: declare channels and monitor systems")
    table = dict(table)
    rate = table.get("samplerate", audio.samplerate)
    if rate != audio.samplerate:
        raise ConfigError(
            f"{where}: [session] samplerate: {rate} differs from [audio] samplerate "
            f"{audio.samplerate} (leave it out: the session runs at the device's rate)"
        )
    table["samplerate"] = audio.samplerate
    try:
        session = Session.from_dict(table, where=f"{where}: [session]")
    except SessionError as exc:
        text = str(exc)
        raise ConfigError(
            text if text.startswith(where) else f"{where}: [session] {text}"
        ) from None
    return session


def _params(table: Mapping, session: Session, where: str) -> tuple[tuple[str, object], ...]:
    registry = build_layout(session).registry
    table, renamed = migrate_values(table, registry)
    if renamed:
        log.warning(describe_renames(f"{where}: [params]", renamed))
    out = []
    for address, value in table.items():
        if isinstance(value, Mapping):
            raise ConfigError(
                f'{where}: [params] {address}: quote addresses as keys, e.g. "/ch/1/fader" = -6.0'
            )
        if address not in registry:
            close = difflib.get_close_matches(address, [p.address for p in registry], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: [params] {address}: unknown address {address!r}{hint}")
        try:
            registry[address].validate(value)
        except ParamError as exc:
            raise ConfigError(f"{where}: [params] {address}: {exc}") from None
        out.append((address, value))
    return tuple(out)


def _state(table: Mapping, base: Path, where: str) -> StateConfig:
    _check_keys(table, ("dir", "save_delay_s", "max_delay_s"), where, "state")
    raw = _str(table, "dir", where, "state", None)
    if raw is not None and "\0" in raw:
        raise ConfigError(f"{where}: [state] dir: contains a NUL character")
    directory = default_state_dir() if raw is None else Path(os.path.expanduser(raw))
    if not directory.is_absolute():
        directory = base / directory
    if raw is not None:  # the default is systemd's StateDirectory= or the user's own
        _check_dir(directory, where, "state", "dir")
    delay = _float(table, "save_delay_s", where, "state", 1.0, 0.0, 60.0)
    max_delay = _float(table, "max_delay_s", where, "state", 5.0, 0.0, 600.0)
    if max_delay < delay:
        raise ConfigError(f"{where}: [state] max_delay_s: must be >= save_delay_s ({delay:g})")
    return StateConfig(dir=directory, save_delay_s=delay, max_delay_s=max_delay)


def _check_dir(directory: Path, where: str, section: str, key: str, writable: bool = True) -> None:
    """A directory we will create and write (``writable``) or only read: a usable path
    (length, NUL), and for writing either an existing writable directory or one creatable
    under its nearest existing parent."""
    text = os.fsencode(directory)
    if b"\0" in text:
        raise ConfigError(f"{where}: [{section}] {key}: contains a NUL character")
    if len(text) > PATH_MAX_BYTES:
        raise ConfigError(f"{where}: [{section}] {key}: longer than {PATH_MAX_BYTES} bytes")
    for part in directory.parts:
        if len(os.fsencode(part)) > NAME_MAX_BYTES:
            raise ConfigError(
                f"{where}: [{section}] {key}: the name {part[:24]!r}… is longer than "
                f"{NAME_MAX_BYTES} bytes"
            )
    if not writable:
        return
    existing = directory
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{where}: [{section}] {key}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == directory else f"cannot be created in {existing}"
        raise ConfigError(f"{where}: [{section}] {key}: {directory} {what}")


def _log(table: Mapping, where: str) -> LogConfig:
    _check_keys(table, ("level", "stats_interval_s"), where, "log")
    return LogConfig(
        level=_str(table, "level", where, "log", "info", LOG_LEVELS),
        stats_interval_s=_float(table, "stats_interval_s", where, "log", 60.0, 0.0, 86400.0),
    )


def _loudness(table: Mapping, session: Session, where: str) -> LoudnessConfig:
    from studiod.dsp.targets import TARGETS

    # the log's settings a config may set (max_rows, ring_hops… are the daemon's business)
    known = ("enabled", "spl_at_minus20dbfs", "target", "retention_days", "start_lufs",
             "stop_lufs", "start_hold_s", "stop_hold_s", "min_segment_s",
             "dose_threshold_dba")  # fmt: skip
    _check_keys(table, known, where, "loudness")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: [loudness] enabled: must be true or false")
    spl = table.get("spl_at_minus20dbfs", {})
    if not isinstance(spl, Mapping):
        raise ConfigError(f"{where}: [loudness] spl_at_minus20dbfs: must be a table of "
                          "monitor system = dB SPL")  # fmt: skip
    systems = [m.name for m in session.systems]
    for name in spl:
        if name not in systems:
            raise ConfigError(f"{where}: [loudness] spl_at_minus20dbfs: no monitor system "
                              f"{name!r}; systems: {systems}")  # fmt: skip
    section = "loudness"
    calibration = {n: _float(spl, n, where, f"{section}.spl_at_minus20dbfs", None, 40.0, 130.0)
                   for n in spl}  # fmt: skip
    start = _float(table, "start_lufs", where, section, -50.0, -70.0, 0.0)
    stop = _float(table, "stop_lufs", where, section, -60.0, -70.0, 0.0)
    if stop > start:
        raise ConfigError(f"{where}: [loudness] stop_lufs: must not be above start_lufs "
                          f"({start:g})")  # fmt: skip
    return LoudnessConfig(
        enabled=enabled,
        target=_str(table, "target", where, section, "spotify", tuple(TARGETS)),
        retention_days=_float(table, "retention_days", where, section, 31.0, 0.01, 3650.0),
        spl_at_minus20dbfs=MappingProxyType(calibration),
        start_lufs=start,
        stop_lufs=stop,
        start_hold_s=_float(table, "start_hold_s", where, section, 1.0, 0.1, 60.0),
        stop_hold_s=_float(table, "stop_hold_s", where, section, 3.0, 0.5, 600.0),
        min_segment_s=_float(table, "min_segment_s", where, section, 5.0, 0.1, 3600.0),
        dose_threshold_dba=(
            None if "dose_threshold_dba" not in table
            else _float(table, "dose_threshold_dba", where, section, None, 0.0, 140.0)
        ),
    )  # fmt: skip


def _alerts(table: Mapping, where: str) -> AlertsConfig:
    known = tuple(AlertsConfig.__dataclass_fields__)
    _check_keys(table, known, where, "alerts")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: [alerts] enabled: must be true or false")
    steps = table.get("dose_steps_percent", [50.0, 80.0, 100.0])
    if (
        not isinstance(steps, list | tuple)
        or not steps
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in steps)
        or not all(0.0 < v <= 1000.0 for v in steps)
    ):
        raise ConfigError(f"{where}: [alerts] dose_steps_percent: must be an array of "
                          "percentages from 0 to 1000")  # fmt: skip
    s = "alerts"
    return AlertsConfig(
        enabled=enabled,
        target_delay_s=_float(table, "target_delay_s", where, s, 10.0, 0.0, 600.0),
        mono_correlation=_float(table, "mono_correlation", where, s, -0.3, -1.0, 0.0),
        mono_delay_s=_float(table, "mono_delay_s", where, s, 3.0, 0.0, 600.0),
        xrun_burst=_int(table, "xrun_burst", where, s, 3, 1, 100000),
        xrun_window_s=_float(table, "xrun_window_s", where, s, 10.0, 1.0, 3600.0),
        dose_steps_percent=tuple(sorted(float(v) for v in steps)),
        clear_s=_float(table, "clear_s", where, s, 5.0, 0.0, 600.0),
        reference_dbfs=_float(table, "reference_dbfs", where, s, -18.0, -60.0, 0.0),
    )


def _reference(table: Mapping, base: Path, where: str) -> ReferenceConfig:
    _check_keys(table, ("enabled", "track", "tracks", "loop"), where, "reference")
    flags = {}
    for key in ("enabled", "loop"):
        flags[key] = table.get(key, True)
        if not isinstance(flags[key], bool):
            raise ConfigError(f"{where}: [reference] {key}: must be true or false")
    if "track" in table and "tracks" in table:
        raise ConfigError(f"{where}: [reference]: give track (one) or tracks (a list), not both")
    if "track" in table:
        raw = [_str(table, "track", where, "reference", None)]
    else:
        raw = table.get("tracks", [])
        if not isinstance(raw, list) or not all(isinstance(t, str) and t for t in raw):
            raise ConfigError(f"{where}: [reference] tracks: must be a list of file paths")
    tracks = []
    for text in raw:
        path = Path(os.path.expanduser(text))
        tracks.append(path if path.is_absolute() else base / path)
    return ReferenceConfig(enabled=flags["enabled"], tracks=tuple(tracks), loop=flags["loop"])


def _freeze(value):
    """Read-only view of nested tables (lists become tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value):
    """A plain dict/list copy of a frozen table (for Session.from_dict and comparisons)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value
