"""A session: what the engine graph is made of (channels, buses, monitor systems).

Pure data, validated on construction. The daemon's config and the offline ``render`` command
build one from TOML; :func:`default_session` is the embedded demo's.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

SIMULATIONS = ("none", "car", "earbuds", "phone", "laptop", "tv", "club")
FX_KINDS = ("reverb", "delay")
SAMPLERATES = (44100, 48000, 88200, 96000, 176400, 192000)
MAX_BLOCK_FRAMES = 8192


class SessionError(ValueError):
    """A session description the engine cannot build; the message names the key."""


@dataclass(frozen=True)
class ChannelSpec:
    """A mono (one input) or stereo-linked (two inputs) channel strip; inputs are 1-based."""

    name: str
    inputs: tuple[int, ...]

    @property
    def lanes(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class GroupSpec:
    """A stereo group bus with a glue compressor, summed into the master."""

    name: str


@dataclass(frozen=True)
class FxSpec:
    """A stereo FX bus fed by channel sends, its return summed into the master."""

    name: str
    kind: str


@dataclass(frozen=True)
class MonitorSystemSpec:
    """A set of speakers (or headphones) fed by the monitor section.

    outputs: 1-based output channels (two for stereo, one for a single speaker);
    simulation: the default simulation chain; mono: sum to mono before the speakers;
    additive: switched on and off on its own (a subwoofer) instead of exclusively;
    cue: a cue (headphone) output, as on a console's cue section: it follows the monitor
    bus, or plays its own mix of the channels (``/ch/N/cue/NAME/...``) while
    ``/monitor/systems/NAME/cue`` is on, and it carries the talkback.
    """

    name: str
    outputs: tuple[int, ...]
    simulation: str = "none"
    mono: bool = False
    additive: bool = False
    cue: bool = False


@dataclass(frozen=True)
class Session:
    samplerate: int
    channels: tuple[ChannelSpec, ...]
    groups: tuple[GroupSpec, ...] = ()
    fx: tuple[FxSpec, ...] = ()
    systems: tuple[MonitorSystemSpec, ...] = ()
    ext_inputs: tuple[int, ...] = ()  # 1-based input pair of the external monitor source
    talkback_input: int = 0  # 1-based input of the talkback microphone (0: none)
    n_inputs: int = field(default=0)
    n_outputs: int = field(default=0)

    def __post_init__(self) -> None:
        _validate(self)
        used_in = [i for c in self.channels for i in c.inputs] + list(self.ext_inputs)
        used_in += [self.talkback_input]
        used_out = [o for s in self.systems for o in s.outputs]
        object.__setattr__(self, "n_inputs", max([self.n_inputs, *used_in]))
        object.__setattr__(self, "n_outputs", max([self.n_outputs, *used_out, 2]))

    @property
    def cues(self) -> tuple[MonitorSystemSpec, ...]:
        """The cue systems, in session order (the engine's cue mixes)."""
        return tuple(m for m in self.systems if m.cue)

    @property
    def lanes(self) -> int:
        """Total number of channel-strip lanes (a stereo channel has two)."""
        return sum(c.lanes for c in self.channels)

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "session") -> Session:
        """Build from a parsed TOML/JSON mapping; errors name ``where`` and the key."""
        try:
            return _from_dict(data, where)
        except SessionError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise SessionError(f"{where}: {exc}") from None


def _names_unique(kind: str, names: list[str]) -> None:
    seen = set()
    for name in names:
        if not name or "/" in name or " " in name or not name.isprintable() or len(name) > 64:
            raise SessionError(
                f"{kind} name {name!r} must be 1 to 64 printable characters, no spaces or '/'"
            )
        if name in seen:
            raise SessionError(f"{kind} name {name!r} is used twice")
        seen.add(name)


def _validate(s: Session) -> None:
    if s.samplerate not in SAMPLERATES:
        raise SessionError(f"samplerate {s.samplerate} is not one of {SAMPLERATES}")
    if not s.channels:
        raise SessionError("a session needs at least one channel")
    for c in s.channels:
        if c.lanes not in (1, 2) or any(i < 1 for i in c.inputs):
            raise SessionError(f"channel {c.name!r}: inputs must be one or two 1-based numbers")
    for f in s.fx:
        if f.kind not in FX_KINDS:
            raise SessionError(f"fx {f.name!r}: kind {f.kind!r} is not one of {FX_KINDS}")
    if not s.systems:
        raise SessionError("a session needs at least one monitor system")
    for m in s.systems:
        if len(m.outputs) not in (1, 2) or any(o < 1 for o in m.outputs):
            raise SessionError(f"monitor system {m.name!r}: outputs must be one or two numbers")
        if m.simulation not in SIMULATIONS:
            raise SessionError(
                f"monitor system {m.name!r}: simulation {m.simulation!r} not in {SIMULATIONS}"
            )
    if not any(not m.additive for m in s.systems):
        raise SessionError("at least one monitor system must be exclusive (not additive)")
    if s.ext_inputs and (len(s.ext_inputs) != 2 or any(i < 1 for i in s.ext_inputs)):
        raise SessionError("ext_inputs must be a pair of 1-based input numbers")
    tb = s.talkback_input
    if isinstance(tb, bool) or not isinstance(tb, int) or tb < 0:
        raise SessionError("talkback_input must be a 1-based input number")
    if s.talkback_input and not s.cues:
        raise SessionError("talkback_input needs a cue system (cue = true) to talk to")
    _names_unique("channel", [c.name for c in s.channels])
    _names_unique("group", [g.name for g in s.groups])
    _names_unique("fx", [f.name for f in s.fx])
    _names_unique("monitor system", [m.name for m in s.systems])
    if "master" in {g.name for g in s.groups}:
        raise SessionError("'master' is reserved, not a group name")


# Bounds that keep a typo from allocating the machine away (``inputs = 0x7fffffff`` asked
# for 8 TiB): the largest audio interfaces and JACK graphs have a few hundred ports.
MAX_IO_CHANNEL = 256  # 1-based device input/output numbers, as [audio] input_map
MAX_STRIPS = 256  # channels, groups, FX buses and monitor systems, each


def unknown_keys(where: str, unknown: set, known) -> str:
    """The error text for unknown keys, with the closest known key as a hint (a typo)."""
    hints = []
    for key in sorted(unknown, key=str):
        close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
        hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    return f"{where}: unknown key(s) {', '.join(hints)}; known: {sorted(known)}"


def _table(value, known: tuple[str, ...], where: str) -> Mapping:
    """A sub-table (a channel, a monitor system…) with only known keys."""
    if not isinstance(value, Mapping):
        raise SessionError(f"{where} must be a table, not {value!r}")
    unknown = set(value) - set(known)
    if unknown:
        raise SessionError(unknown_keys(where, unknown, known))
    return value


def _list(data: Mapping, key: str, where: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list | tuple):
        raise SessionError(f"{where}.{key} must be an array of tables, not {value!r}")
    if len(value) > MAX_STRIPS:
        raise SessionError(f"{where}.{key}: {len(value)} entries, at most {MAX_STRIPS}")
    return list(value)


def _text(table: Mapping, key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        what = "is missing" if value is None else f"must be a string, not {value!r}"
        raise SessionError(f"{where}.{key} {what}")
    return value


def _flag(table: Mapping, key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise SessionError(f"{where}.{key} must be true or false, not {value!r}")
    return value


def _ints(value, key: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        if any(not 1 <= v <= MAX_IO_CHANNEL for v in value):
            raise SessionError(f"{key}: channel numbers are 1…{MAX_IO_CHANNEL}, got {value!r}")
        return tuple(value)
    if isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    raise SessionError(f"{key} must be an integer or a list of integers, not {value!r}")


def _from_dict(data: Mapping, where: str) -> Session:
    known = ("samplerate", "channel", "group", "fx", "monitor")
    unknown = set(data) - set(known)
    if unknown:
        raise SessionError(unknown_keys(where, unknown, known))
    channels = []
    for i, c in enumerate(_list(data, "channel", where)):
        at = f"{where}: channel[{i}]"
        c = _table(c, ("name", "inputs"), at)
        if "inputs" not in c:
            raise SessionError(f"{at}.inputs is missing")
        channels.append(ChannelSpec(_text(c, "name", at), _ints(c["inputs"], f"{at}.inputs")))
    groups = []
    for i, g in enumerate(_list(data, "group", where)):
        at = f"{where}: group[{i}]"
        groups.append(GroupSpec(_text(_table(g, ("name",), at), "name", at)))
    fx = []
    for i, f in enumerate(_list(data, "fx", where)):
        at = f"{where}: fx[{i}]"
        f = _table(f, ("name", "kind"), at)
        fx.append(FxSpec(_text(f, "name", at), _text(f, "kind", at, "reverb")))
    monitor = _table(
        data.get("monitor", {}), ("system", "ext_inputs", "talkback_input"), f"{where}: monitor"
    )
    systems = []
    for i, m in enumerate(_list(monitor, "system", f"{where}: monitor")):
        at = f"{where}: monitor.system[{i}]"
        m = _table(m, ("name", "outputs", "simulation", "mono", "additive", "cue"), at)
        if "outputs" not in m:
            raise SessionError(f"{at}.outputs is missing")
        systems.append(
            MonitorSystemSpec(
                name=_text(m, "name", at),
                outputs=_ints(m["outputs"], f"{at}.outputs"),
                simulation=_text(m, "simulation", at, "none"),
                mono=_flag(m, "mono", at),
                additive=_flag(m, "additive", at),
                cue=_flag(m, "cue", at),
            )
        )
    ext = monitor.get("ext_inputs", ())
    rate = data.get("samplerate", 48000)
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise SessionError(f"{where}: samplerate must be an integer, not {rate!r}")
    return Session(
        samplerate=rate,
        channels=tuple(channels),
        groups=tuple(groups),
        fx=tuple(fx),
        systems=tuple(systems),
        ext_inputs=_ints(ext, f"{where}: monitor.ext_inputs") if ext else (),
        talkback_input=monitor.get("talkback_input", 0),
    )


# The monitor systems of a typical 8-output studio interface: studio monitors on 1-2, alt
# speakers on 3-4, headphones on 5-6, the car and earbud simulations on those pairs, and a
# single mono speaker (the "Auratone" check, and the phone simulation) on 7.
STANDARD_SYSTEMS = (
    MonitorSystemSpec("studio", (1, 2)),
    MonitorSystemSpec("alt", (3, 4)),
    MonitorSystemSpec("headphones", (5, 6)),
    MonitorSystemSpec("car", (1, 2), simulation="car"),
    MonitorSystemSpec("earbuds", (5, 6), simulation="earbuds"),
    MonitorSystemSpec("phone", (7,), simulation="phone", mono=True),
    MonitorSystemSpec("mono", (7,), mono=True),
)


def default_session(n_channels: int = 16, samplerate: int = 48000) -> Session:
    """The embedded default: mono channels on inputs 1…n, two groups, reverb and delay, the
    standard monitor systems, and the external source on the next input pair."""
    return Session(
        samplerate=samplerate,
        channels=tuple(ChannelSpec(f"ch{i + 1}", (i + 1,)) for i in range(n_channels)),
        groups=(GroupSpec("drums"), GroupSpec("music")),
        fx=(FxSpec("reverb", "reverb"), FxSpec("delay", "delay")),
        systems=STANDARD_SYSTEMS,
        ext_inputs=(n_channels + 1, n_channels + 2),
    )
