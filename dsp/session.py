"""A session: what the engine graph is made of (channels, buses, monitor systems).

Pure data, validated on construction. The daemon's config and the offline ``render`` command
build one from TOML; :func:`default_session` is the embedded demo's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

SIMULATIONS = ("none", "car", "earbuds", "phone", "laptop")
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
    additive: switched on and off on its own (a subwoofer) instead of exclusively.
    """

    name: str
    outputs: tuple[int, ...]
    simulation: str = "none"
    mono: bool = False
    additive: bool = False


@dataclass(frozen=True)
class Session:
    samplerate: int
    channels: tuple[ChannelSpec, ...]
    groups: tuple[GroupSpec, ...] = ()
    fx: tuple[FxSpec, ...] = ()
    systems: tuple[MonitorSystemSpec, ...] = ()
    ext_inputs: tuple[int, ...] = ()  # 1-based input pair of the external monitor source
    n_inputs: int = field(default=0)
    n_outputs: int = field(default=0)

    def __post_init__(self) -> None:
        _validate(self)
        used_in = [i for c in self.channels for i in c.inputs] + list(self.ext_inputs)
        used_out = [o for s in self.systems for o in s.outputs]
        object.__setattr__(self, "n_inputs", max([self.n_inputs, *used_in]))
        object.__setattr__(self, "n_outputs", max([self.n_outputs, *used_out, 2]))

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
        if not name or "/" in name or " " in name:
            raise SessionError(f"{kind} name {name!r} must be non-empty, no spaces or '/'")
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
    _names_unique("channel", [c.name for c in s.channels])
    _names_unique("group", [g.name for g in s.groups])
    _names_unique("fx", [f.name for f in s.fx])
    _names_unique("monitor system", [m.name for m in s.systems])
    if "master" in {g.name for g in s.groups}:
        raise SessionError("'master' is reserved, not a group name")


def _ints(value, key: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    raise SessionError(f"{key} must be an integer or a list of integers, not {value!r}")


def _from_dict(data: Mapping, where: str) -> Session:
    known = {"samplerate", "channel", "group", "fx", "monitor"}
    unknown = set(data) - known
    if unknown:
        raise SessionError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    channels = tuple(
        ChannelSpec(str(c["name"]), _ints(c["inputs"], f"{where}: channel[{i}].inputs"))
        for i, c in enumerate(data.get("channel", []))
    )
    groups = tuple(GroupSpec(str(g["name"])) for g in data.get("group", []))
    fx = tuple(FxSpec(str(f["name"]), str(f.get("kind", "reverb"))) for f in data.get("fx", []))
    monitor = data.get("monitor", {})
    systems = tuple(
        MonitorSystemSpec(
            name=str(m["name"]),
            outputs=_ints(m["outputs"], f"{where}: monitor.system[{i}].outputs"),
            simulation=str(m.get("simulation", "none")),
            mono=bool(m.get("mono", False)),
            additive=bool(m.get("additive", False)),
        )
        for i, m in enumerate(monitor.get("system", []))
    )
    ext = monitor.get("ext_inputs", ())
    return Session(
        samplerate=int(data.get("samplerate", 48000)),
        channels=channels,
        groups=groups,
        fx=fx,
        systems=systems,
        ext_inputs=_ints(ext, f"{where}: monitor.ext_inputs") if ext else (),
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
