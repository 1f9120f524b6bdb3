"""MIDI control-surface profiles and the mapping from messages to parameter changes.

Pure logic, no I/O. A *profile* (a TOML file per controller, see ``controllers/profiles/``)
lists the surface's controls: which message each one sends (CC, 14-bit CC, NRPN, note, pitch
bend), which registry address it drives (``/ch/{strip}/fader`` follows the bank), how
(absolute with soft takeover, one of four relative-encoder encodings, toggle, momentary,
select, cycle) and what the surface should be sent back (LEDs, LED rings, motor faders,
scribble strips, meters). A :class:`Surface` is one connected device running a profile:
:meth:`Surface.handle` turns a decoded message into :class:`Intent` objects (applied to the
hub by :func:`apply_intent` on the dispatcher thread), :meth:`Surface.on_change` follows
changes made anywhere, and :meth:`Surface.collect_feedback` yields the bytes to send.

Values go through the registry's ``to_normalized``/``from_normalized`` so that a fader
follows the parameter's taper (the console fader law for levels, log for frequencies).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from studiod.controllers.commands import COMMANDS
from studiod.dsp.layout import describe_renames, renamed_address
from studiod.dsp.registry import ENUM, TOGGLE, Param, ParamError

log = logging.getLogger("studiod.midi")

# --- vocabulary ---------------------------------------------------------------------------
KINDS = ("cc", "cc14", "nrpn", "note", "pitchbend")
MODES = ("absolute", "relative", "toggle", "momentary", "select", "cycle")
ACTIONS = ("bank_next", "bank_prev", "strip_next", "strip_prev", "shift")
TAKEOVERS = ("jump", "pickup")
# The four relative-encoder encodings in common use (the names Ableton Live and Reaper give
# them): two's complement (1 = +1, 127 = -1), binary offset (65 = +1, 63 = -1), signed bit
# (Mackie Control V-Pot: bit 6 set = counter-clockwise, 1 = +1, 65 = -1) and signed bit 2
# (bit 6 set = clockwise, 65 = +1, 1 = -1).
ENCODINGS = ("twos_complement", "binary_offset", "signed_bit", "signed_bit_2")
FEEDBACK_KINDS = ("cc", "note", "pitchbend", "sysex")
BUTTON_MODES = ("toggle", "momentary", "select", "cycle")
MODES_BY_KIND = {
    "cc": MODES,
    "cc14": ("absolute",),
    "nrpn": ("absolute",),
    "pitchbend": ("absolute",),
    "note": BUTTON_MODES,
}
RAW_MAX = {"cc": 127, "cc14": 16383, "nrpn": 16383, "pitchbend": 16383, "note": 127}
# A non-motorised control picks the parameter up when it comes within this many of its own
# steps of the parameter's position (or crosses it between two messages).
PICKUP_STEPS = 2.0
DEFAULT_STEP = 1.0 / 128.0  # normalized travel per relative-encoder detent
BASE = ""  # the base layer's name

_CONTROL_KEYS = {
    "name", "type", "channel", "number", "lsb", "target", "action", "mode", "encoding",
    "step", "takeover", "center", "invert", "value", "direction", "layer", "shift", "latch",
    "feedback", "touch", "strip_offset", "bits",
}  # fmt: skip
_DEVICE_KEYS = {
    "name", "port", "output_port", "priority", "motorized", "bank_size", "feedback_hz",
    "max_bytes_per_s", "init", "extends", "source", "notes",
}  # fmt: skip
_DISPLAY_KEYS = {"header", "cells", "cell_width", "line_offsets", "lines"}
_METER_KEYS = {"type", "channel", "levels", "floor_db", "rate_hz"}
_FEEDBACK_KEYS = {"type", "channel", "number", "min", "max", "on", "off", "data"}
_TOUCH_KEYS = {"type", "channel", "number"}


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and line."""


# --- relative encoders ----------------------------------------------------------------------
def decode_relative(value: int, encoding: str) -> int:
    """Signed detent count of one relative-encoder CC value (0…127)."""
    if encoding == "twos_complement":
        return value if value < 64 else value - 128
    if encoding == "binary_offset":
        return value - 64
    if encoding == "signed_bit":
        return -(value & 0x3F) if value & 0x40 else value & 0x3F
    if encoding == "signed_bit_2":
        return value & 0x3F if value & 0x40 else -(value & 0x3F)
    raise ValueError(f"unknown relative encoding {encoding!r}")


# --- profile data model -----------------------------------------------------------------------
@dataclass(frozen=True)
class Feedback:
    """What a control's state sends back: a message whose value follows the parameter.

    Continuous values are scaled into ``lo…hi`` raw units; on/off states send ``on``/``off``.
    ``data`` is a SysEx template whose "value" and "number" entries are filled in.
    """

    kind: str
    channel: int = 0  # 0-based
    number: int = 0
    lo: int = 0
    hi: int = 127
    on: int = 127
    off: int = 0
    data: tuple = ()


@dataclass(frozen=True)
class Control:
    """One physical control in one layer (a table of ``[[control]]`` expanded per strip)."""

    name: str
    kind: str  # input message kind, one of KINDS
    channel: int  # 0-based
    number: int  # CC / note / NRPN parameter number; the MSB CC for cc14
    lsb: int = -1  # LSB CC of a cc14 control
    target: str = ""  # an address, or a template with {strip}
    strip: int = 0  # 0-based position of the control in its bank
    action: str = ""
    mode: str = "absolute"
    encoding: str = "twos_complement"
    step: float = DEFAULT_STEP
    takeover: str = "pickup"
    center: bool = False
    invert: bool = False
    value: Any = None  # the value a "select" button sets
    direction: int = 1  # which way a "cycle" button steps
    layer: str = BASE
    shift: str = "shift"  # the layer an action = "shift" control switches to
    latch: bool = False
    feedback: Feedback | None = None
    touch: tuple[str, int, int] | None = None  # (kind, channel, number) of a touch sensor
    raw_max: int = 127
    where: str = ""  # "file:line" for messages

    @property
    def key(self) -> tuple[str, int, int]:
        """The input message that reaches this control."""
        return (self.kind, self.channel, self.number)

    @property
    def banked(self) -> bool:
        return "{strip}" in self.target

    @property
    def is_button(self) -> bool:
        return self.mode in BUTTON_MODES or bool(self.action)


@dataclass(frozen=True)
class Display:
    """A text display written with SysEx: ``header + [offset] + ASCII + [0xF7]`` per line
    (the Mackie Control scribble strips: header F0 00 00 66 14 12, 7 characters per strip,
    the second line at offset 56)."""

    header: tuple[int, ...]
    cells: int = 8
    cell_width: int = 7
    line_offsets: tuple[int, ...] = (0, 56)
    lines: tuple[str, ...] = ("name", "fader")  # "name" or a strip address suffix


@dataclass(frozen=True)
class Meters:
    """Level meters: Mackie Control sends channel pressure ``(strip << 4) | level`` with
    level 0…12 for 0…100 % (Logic Control manual, "Meter")."""

    kind: str = "channel_pressure"
    channel: int = 0
    levels: int = 12
    floor_db: float = -60.0
    rate_hz: float = 10.0


@dataclass(frozen=True)
class Profile:
    """A controller: how to find its ports and what each control does."""

    id: str
    name: str
    port: str  # regular expression searched in port names, case-insensitive
    output_port: str = ""
    priority: int = 0
    motorized: bool = False
    bank_size: int = 8
    feedback_hz: float = 30.0
    max_bytes_per_s: int = 3000  # DIN MIDI carries 3125 bytes/s (31.25 kbaud, 10 bits/byte)
    init: tuple[tuple[int, ...], ...] = ()
    controls: tuple[Control, ...] = ()
    display: Display | None = None
    meters: Meters | None = None
    path: str = ""

    def matches_input(self, port_name: str) -> bool:
        return re.search(self.port, port_name, re.IGNORECASE) is not None

    def matches_output(self, port_name: str) -> bool:
        return re.search(self.output_port or self.port, port_name, re.IGNORECASE) is not None


# --- loading ------------------------------------------------------------------------------------
class _Where:
    """Line numbers of the tables and keys of one TOML text, for error messages."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.lines = text.splitlines()
        self.tables: dict[str, list[int]] = {}
        pattern = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?")
        for i, line in enumerate(self.lines):
            m = pattern.match(line)
            if m:
                self.tables.setdefault(m.group(2), []).append(i)

    def table_line(self, table: str, index: int = 0) -> int:
        starts = self.tables.get(table, [])
        return starts[index] + 1 if index < len(starts) else 0

    def key_line(self, table: str, index: int, key: str) -> int:
        start = self.table_line(table, index)
        if not start:
            return 0
        following = [s for starts in self.tables.values() for s in starts if s >= start]
        end = min(following, default=len(self.lines))
        key_re = re.compile(rf"^\s*{re.escape(key)}\s*=|[{{,]\s*{re.escape(key)}\s*=")
        for i in range(start, end):
            if key_re.search(self.lines[i]):
                return i + 1
        return start

    def error(self, table: str, index: int, key: str | None, message: str) -> ProfileError:
        line = self.key_line(table, index, key) if key else self.table_line(table, index)
        at = f"{self.path}:{line}" if line else self.path
        label = f"[[{table}]] #{index + 1}" if table == "control" else f"[{table}]"
        key_part = f" key '{key}'" if key else ""
        return ProfileError(f"{at}: {label}{key_part}: {message}")


def _check_keys(where: _Where, table: str, index: int, data: dict, known: set[str]) -> None:
    for key in data:
        if key not in known:
            raise where.error(table, index, key, f"unknown key; known keys: {sorted(known)}")


def _int(where, table, index, key, value, lo, hi) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise where.error(table, index, key, f"{value!r} must be an integer {lo}…{hi}")
    return value


def _listify(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def _bytes(where, table, index, key, value) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise where.error(table, index, key, "must be a non-empty list of bytes")
    for b in value:
        _int(where, table, index, key, b, 0, 255)
    return tuple(value)


def _feedback(where, index, spec, kind, channels, numbers, n) -> list[Feedback | None]:
    """Expand a control's ``feedback`` value into one Feedback per strip."""
    if spec is False or spec is None:
        return [None] * n
    if spec is True:  # mirror the input message
        if kind in ("cc14", "nrpn"):
            return [Feedback(kind, channels[i], numbers[i], 0, RAW_MAX[kind]) for i in range(n)]
        fb_kind = kind
        return [
            Feedback(fb_kind, channels[i], numbers[i], 0, RAW_MAX[kind], 127, 0) for i in range(n)
        ]
    if not isinstance(spec, dict):
        raise where.error("control", index, "feedback", "must be true, false or a table")
    _check_keys(where, "control", index, spec, _FEEDBACK_KEYS)
    fb_kind = spec.get("type", kind if kind in FEEDBACK_KINDS else "cc")
    if fb_kind not in FEEDBACK_KINDS:
        raise where.error("control", index, "feedback", f"type {fb_kind!r} not in {FEEDBACK_KINDS}")
    fb_channels = [
        _int(where, "control", index, "feedback", c, 1, 16) - 1
        for c in _listify(spec.get("channel", [c + 1 for c in channels]))
    ]
    fb_numbers = [
        _int(where, "control", index, "feedback", v, 0, 127)
        for v in _listify(spec.get("number", numbers))
    ]
    top = 16383 if fb_kind == "pitchbend" else 127
    lo = _int(where, "control", index, "feedback", spec.get("min", 0), 0, top)
    hi = _int(where, "control", index, "feedback", spec.get("max", top), 0, top)
    on = _int(where, "control", index, "feedback", spec.get("on", 127), 0, 127)
    off = _int(where, "control", index, "feedback", spec.get("off", 0), 0, 127)
    data: tuple = ()
    if fb_kind == "sysex":
        raw = spec.get("data")
        if not isinstance(raw, list) or not raw or raw[0] != 0xF0 or raw[-1] != 0xF7:
            raise where.error(
                "control", index, "feedback", "sysex data must be a list from 0xF0 to 0xF7"
            )
        for b in raw:
            if b not in ("value", "number"):
                _int(where, "control", index, "feedback", b, 0, 255)
        data = tuple(raw)
    out = []
    for i in range(n):
        ch = fb_channels[i] if len(fb_channels) > 1 else fb_channels[0]
        num = fb_numbers[i] if len(fb_numbers) > 1 else fb_numbers[0]
        out.append(Feedback(fb_kind, ch, num, lo, hi, on, off, data))
    if (len(fb_channels) > 1 and len(fb_channels) != n) or (
        len(fb_numbers) > 1 and len(fb_numbers) != n
    ):
        raise where.error("control", index, "feedback", f"lists must have {n} entries")
    return out


def _expand_control(where: _Where, index: int, data: dict, motorized: bool) -> list[Control]:
    """One ``[[control]]`` table → one Control per strip (list-valued channel/number)."""
    _check_keys(where, "control", index, data, _CONTROL_KEYS)
    kind = data.get("type")
    if kind not in KINDS:
        raise where.error("control", index, "type", f"{kind!r} is not one of {KINDS}")
    channels_raw = _listify(data.get("channel", 1))
    numbers_raw = _listify(data.get("number", 0))
    n = max(len(channels_raw), len(numbers_raw))
    for key, values in (("channel", channels_raw), ("number", numbers_raw)):
        if len(values) not in (1, n):
            raise where.error("control", index, key, f"list must have {n} entries like the other")
    top = 16383 if kind == "nrpn" else (31 if kind == "cc14" else 127)
    channels = [_int(where, "control", index, "channel", c, 1, 16) - 1 for c in channels_raw]
    numbers = [_int(where, "control", index, "number", v, 0, top) for v in numbers_raw]
    channels = channels * n if len(channels) == 1 else channels
    numbers = numbers * n if len(numbers) == 1 else numbers
    target = data.get("target", "")
    action = data.get("action", "")
    if bool(target) == bool(action):
        raise where.error("control", index, None, "needs exactly one of 'target' or 'action'")
    if target:
        if not isinstance(target, str) or not target.startswith("/"):
            raise where.error("control", index, "target", f"{target!r} is not an address")
        leftover = target.replace("{strip}", "")
        if "{" in leftover or "}" in leftover:
            raise where.error("control", index, "target", "the only placeholder is {strip}")
    if action and action not in ACTIONS:
        raise where.error("control", index, "action", f"{action!r} is not one of {ACTIONS}")
    default_mode = "absolute" if kind != "note" else "toggle"
    mode = data.get("mode", "toggle" if action else default_mode)
    if mode not in MODES_BY_KIND[kind]:
        raise where.error(
            "control", index, "mode", f"{mode!r} is not one of {MODES_BY_KIND[kind]} for {kind}"
        )
    encoding = data.get("encoding", "twos_complement")
    if encoding not in ENCODINGS:
        raise where.error("control", index, "encoding", f"{encoding!r} not in {ENCODINGS}")
    takeover = data.get("takeover", "jump" if motorized else "pickup")
    if takeover not in TAKEOVERS:
        raise where.error("control", index, "takeover", f"{takeover!r} not in {TAKEOVERS}")
    step = data.get("step", DEFAULT_STEP)
    if isinstance(step, bool) or not isinstance(step, int | float) or not 0 < step <= 1:
        raise where.error("control", index, "step", f"{step!r} must be a number in (0, 1]")
    if mode == "select" and "value" not in data:
        raise where.error("control", index, "value", "a select button needs the value it sets")
    value = data.get("value")
    values = list(value) if isinstance(value, list) else [value] * n
    for v in values:
        if (v is not None and not isinstance(v, str | int | float)) or isinstance(v, bool):
            raise where.error("control", index, "value", "must be a number or a choice name")
    if len(values) != n:
        raise where.error("control", index, "value", f"list must have {n} entries")
    direction = data.get("direction", 1)
    if direction not in (-1, 1):
        raise where.error("control", index, "direction", "must be 1 or -1")
    for key in ("center", "invert", "latch"):
        if not isinstance(data.get(key, False), bool):
            raise where.error("control", index, key, "must be true or false")
    for key in ("layer", "shift", "name"):
        if not isinstance(data.get(key, ""), str):
            raise where.error("control", index, key, "must be a string")
    if kind == "cc14":
        lsb_raw = _listify(data.get("lsb", [v + 32 for v in numbers]))
        lsbs = [_int(where, "control", index, "lsb", v, 0, 127) for v in lsb_raw]
        if len(lsbs) != n:
            raise where.error("control", index, "lsb", f"list must have {n} entries")
    offset = data.get("strip_offset", 0)
    _int(where, "control", index, "strip_offset", offset, 0, 1024)
    raw_max = RAW_MAX[kind]
    if kind == "nrpn" and data.get("bits", 14) == 7:
        raw_max = 127
    elif "bits" in data and data["bits"] not in (7, 14):
        raise where.error("control", index, "bits", "must be 7 or 14")
    feedback = _feedback(where, index, data.get("feedback", False), kind, channels, numbers, n)
    touch: list = [None] * n
    if "touch" in data:
        spec = data["touch"]
        if not isinstance(spec, dict):
            raise where.error("control", index, "touch", "must be a table")
        _check_keys(where, "control", index, spec, _TOUCH_KEYS)
        if spec.get("type", "note") != "note":
            raise where.error("control", index, "touch", "touch sensors send notes")
        t_ch = [_int(where, "control", index, "touch", c, 1, 16) - 1
                for c in _listify(spec.get("channel", 1))]  # fmt: skip
        t_num = [_int(where, "control", index, "touch", v, 0, 127)
                 for v in _listify(spec.get("number"))]  # fmt: skip
        if len(t_num) != n or len(t_ch) not in (1, n):
            raise where.error("control", index, "touch", f"needs {n} note numbers")
        touch = [("note", t_ch[i] if len(t_ch) > 1 else t_ch[0], t_num[i]) for i in range(n)]
    name = data.get("name", target or action)
    line = where.table_line("control", index)
    out = []
    for i in range(n):
        out.append(
            Control(
                name=name if n == 1 else f"{name} {i + 1}",
                kind=kind,
                channel=channels[i],
                number=numbers[i],
                lsb=lsbs[i] if kind == "cc14" else -1,
                target=target,
                strip=offset + i,
                action=action,
                mode=mode,
                encoding=encoding,
                step=float(step),
                takeover=takeover,
                center=data.get("center", False),
                invert=data.get("invert", False),
                value=values[i],
                direction=direction,
                layer=data.get("layer", BASE),
                shift=data.get("shift", "shift"),
                latch=data.get("latch", False),
                feedback=feedback[i],
                touch=touch[i],
                raw_max=raw_max,
                where=f"{where.path}:{line}",
            )
        )
    return out


def parse_profile(text: str, path: str = "<profile>", parents: dict[str, Profile] | None = None):
    """A Profile from TOML text. ``parents`` resolves ``extends`` (profile id -> Profile)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: TOML syntax error: {exc}") from None
    where = _Where(path, text)
    for key in data:
        if key not in ("device", "control", "display", "meters"):
            raise ProfileError(f"{path}: unknown table '{key}'")
    device = data.get("device")
    if not isinstance(device, dict):
        raise ProfileError(f"{path}: a profile needs a [device] table")
    _check_keys(where, "device", 0, device, _DEVICE_KEYS)
    parent = None
    if "extends" in device:
        parent = (parents or {}).get(device["extends"])
        if parent is None:
            raise where.error("device", 0, "extends", f"no profile {device['extends']!r}")
    for key in ("name", "port"):
        if key not in device and parent is None:
            raise where.error("device", 0, None, f"missing key '{key}'")
    name = device.get("name", parent.name if parent else "")
    port = device.get("port", parent.port if parent else "")
    for key, pattern in (("port", port), ("output_port", device.get("output_port", ""))):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise where.error("device", 0, key, f"bad regular expression: {exc}") from None
    motorized = device.get("motorized", parent.motorized if parent else False)
    if not isinstance(motorized, bool):
        raise where.error("device", 0, "motorized", "must be true or false")
    bank_default = parent.bank_size if parent else 8
    bank_size = _int(where, "device", 0, "bank_size", device.get("bank_size", bank_default), 1, 128)
    priority = _int(where, "device", 0, "priority", device.get("priority", 0), -100, 100)
    feedback_hz = device.get("feedback_hz", parent.feedback_hz if parent else 30.0)
    if isinstance(feedback_hz, bool) or not isinstance(feedback_hz, int | float):
        raise where.error("device", 0, "feedback_hz", "must be a number")
    if not 1 <= feedback_hz <= 200:
        raise where.error("device", 0, "feedback_hz", "must be 1…200 Hz")
    max_bps = _int(where, "device", 0, "max_bytes_per_s",
                   device.get("max_bytes_per_s", 3000), 100, 10_000_000)  # fmt: skip
    init = tuple(_bytes(where, "device", 0, "init", m) for m in device.get("init", [])) or (
        parent.init if parent else ()
    )
    controls_raw = data.get("control", [])
    if not isinstance(controls_raw, list):
        raise ProfileError(f"{path}: 'control' must be an array of tables ([[control]])")
    controls: list[Control] = []
    for i, table in enumerate(controls_raw):
        controls.extend(_expand_control(where, i, table, motorized))
    seen: dict[tuple, Control] = {}
    for c in controls:
        for key in _input_keys(c):
            other = seen.get((key, c.layer))
            if other is not None:
                raise ProfileError(
                    f"{c.where}: control '{c.name}' reuses the message of '{other.name}' "
                    f"({other.where}) in the same layer"
                )
            seen[(key, c.layer)] = c
    if parent is not None:  # the child's controls replace the parent's on the same message
        mine = {(k, c.layer) for c in controls for k in _input_keys(c)}
        inherited = [
            c for c in parent.controls if not any((k, c.layer) in mine for k in _input_keys(c))
        ]
        controls = inherited + controls
    display = parent.display if parent else None
    if "display" in data:
        d = data["display"]
        _check_keys(where, "display", 0, d, _DISPLAY_KEYS)
        header = _bytes(where, "display", 0, "header", d.get("header"))
        if header[0] != 0xF0:
            raise where.error("display", 0, "header", "a SysEx header starts with 0xF0")
        offsets = tuple(
            _int(where, "display", 0, "line_offsets", o, 0, 127)
            for o in d.get("line_offsets", [0, 56])
        )
        lines = tuple(d.get("lines", ["name", "fader"]))
        if len(lines) != len(offsets) or not all(isinstance(s, str) for s in lines):
            raise where.error("display", 0, "lines", "one string per line offset")
        display = Display(
            header=header,
            cells=_int(where, "display", 0, "cells", d.get("cells", 8), 1, 64),
            cell_width=_int(where, "display", 0, "cell_width", d.get("cell_width", 7), 1, 64),
            line_offsets=offsets,
            lines=lines,
        )
    meters = parent.meters if parent else None
    if "meters" in data:
        m = data["meters"]
        _check_keys(where, "meters", 0, m, _METER_KEYS)
        if m.get("type", "channel_pressure") != "channel_pressure":
            raise where.error("meters", 0, "type", "only 'channel_pressure' meters are known")
        floor_db = m.get("floor_db", -60.0)
        rate_hz = m.get("rate_hz", 10.0)
        for key, v, lo, hi in (("floor_db", floor_db, -120, -1), ("rate_hz", rate_hz, 1, 100)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
                raise where.error("meters", 0, key, f"must be a number {lo}…{hi}")
        meters = Meters(
            channel=_int(where, "meters", 0, "channel", m.get("channel", 1), 1, 16) - 1,
            levels=_int(where, "meters", 0, "levels", m.get("levels", 12), 1, 15),
            floor_db=float(floor_db),
            rate_hz=float(rate_hz),
        )
    return Profile(
        id=Path(path).stem,
        name=str(name),
        port=port,
        output_port=device.get("output_port", parent.output_port if parent else ""),
        priority=priority,
        motorized=motorized,
        bank_size=bank_size,
        feedback_hz=float(feedback_hz),
        max_bytes_per_s=max_bps,
        init=init,
        controls=tuple(controls),
        display=display,
        meters=meters,
        path=path,
    )


def _input_keys(c: Control) -> list[tuple[str, int, int]]:
    if c.kind == "cc14":
        return [("cc", c.channel, c.number), ("cc", c.channel, c.lsb)]
    return [c.key]


def load_profile(path: str | Path, parents: dict[str, Profile] | None = None) -> Profile:
    """Read and validate one profile file; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read: {exc}") from None
    return parse_profile(text, str(path), parents)


def shipped_profile_paths() -> list[Path]:
    """The profiles installed with studiod (``studiod/controllers/profiles/*.toml``)."""
    folder = resources.files("studiod.controllers") / "profiles"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml"))


def user_profile_dir() -> Path:
    """Where users keep their own profiles (and where ``studiod learn`` saves):
    ``$STUDIOD_MIDI_PROFILES``, else ``$XDG_CONFIG_HOME/studiod/midi``."""
    import os

    if os.environ.get("STUDIOD_MIDI_PROFILES"):
        return Path(os.environ["STUDIOD_MIDI_PROFILES"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "studiod" / "midi"


def load_profiles(user_dir: Path | None = None, include_shipped: bool = True) -> list[Profile]:
    """The shipped profiles, then the user's; a user profile with the id of a shipped one (or
    one that ``extends`` it) takes its place."""
    by_id: dict[str, Profile] = {}
    if include_shipped:
        for p in shipped_profile_paths():
            prof = load_profile(p)
            by_id[prof.id] = prof
    folder = user_profile_dir() if user_dir is None else user_dir
    if folder.is_dir():
        for p in sorted(folder.glob("*.toml")):
            prof = load_profile(p, parents=dict(by_id))
            text = p.read_text(encoding="utf-8")
            parent_id = tomllib.loads(text).get("device", {}).get("extends")
            by_id.pop(parent_id, None)
            by_id[prof.id] = prof
    return list(by_id.values())


# --- runtime ---------------------------------------------------------------------------------
class Intent(NamedTuple):
    """A change for the dispatcher to make through the hub.

    kind: "set" (amount is the engine value), "nudge" (normalized delta), "step" (choice or
    toggle index delta, wrapping for "cycle"), "toggle" (flip; amount: None, or the value
    to flip to from the default), "command" (amount: the command's arguments).
    """

    address: str
    kind: str
    amount: Any
    source: Any


@dataclass(frozen=True)
class MidiSource:
    """Who made a change: a surface and its control (hub listeners can skip the sender)."""

    surface: str
    control: int = -1


def apply_intent(hub, intent: Intent):
    """Make the change through the hub (``set``, or ``nudge``/``step``/``toggle``, which
    compute the value from the current one under the hub's lock, shared with OSC), on the
    one dispatcher thread, so that quick encoder detents and presses never get lost."""
    kind, address, source = intent.kind, intent.address, intent.source
    if kind == "set":
        return hub.set(address, intent.amount, source)
    if kind == "toggle":
        return hub.toggle(address, source, intent.amount)
    if kind == "command":
        return hub.run(address, intent.amount)
    if kind in ("step", "cycle"):
        return hub.step(address, int(intent.amount), source, wrap=kind == "cycle")
    if kind == "nudge":
        return hub.nudge(address, float(intent.amount), source)
    raise ValueError(f"unknown intent kind {intent.kind!r}")


def _to_position(raw: int, raw_max: int, center: bool, invert: bool) -> float:
    """Raw controller value → 0…1; ``center`` puts the middle value exactly at 0.5."""
    if center:
        mid = (raw_max + 1) // 2  # 64 of 0…127, 8192 of 0…16383
        p = 0.5 * raw / mid if raw <= mid else 0.5 + 0.5 * (raw - mid) / (raw_max - mid)
    else:
        p = raw / raw_max
    return 1.0 - p if invert else p


def _to_raw(position: float, lo: int, hi: int, center: bool, invert: bool) -> int:
    """0…1 → raw value in lo…hi (inverse of _to_position, rounded)."""
    p = min(max(position, 0.0), 1.0)
    p = 1.0 - p if invert else p
    span = hi - lo
    if center:
        mid = lo + (span + 1) // 2
        raw = lo + p * 2 * (mid - lo) if p <= 0.5 else mid + (p - 0.5) * 2 * (hi - mid)
    else:
        raw = lo + p * span
    return int(min(max(round(raw), lo), hi))


@dataclass
class _ControlState:
    picked_up: bool = False
    last_position: float = math.nan
    touched: bool = False
    msb: int = 0  # 14-bit latch (MIDI 1.0: receiving an MSB sets the LSB to zero)
    pressed: bool = False


@dataclass
class _NrpnState:
    param_msb: int = 127
    param_lsb: int = 127
    rpn: bool = False  # data entry currently addresses an RPN, not an NRPN
    data_msb: int = 0


@dataclass
class SurfaceStats:
    messages: int = 0
    ignored: int = 0
    echoes: int = 0


class Surface:
    """One connected controller running a profile: bank, layers, takeover and feedback state.

    ``handle``, ``on_change`` and ``collect_feedback`` may be called from different threads;
    each takes the surface's lock briefly and never calls the hub.
    """

    def __init__(self, profile: Profile, hub, name: str | None = None):
        self.profile = profile
        self.name = name or profile.name
        self.hub = hub
        self.lock = threading.RLock()
        self.bank_offset = 0
        self.layer = BASE
        self._latched: set[str] = set()
        self._held: list[str] = []
        self.stats = SurfaceStats()
        controls = profile.controls
        self._state = [_ControlState() for _ in controls]
        self._by_key: dict[tuple, list[int]] = {}
        for i, c in enumerate(controls):
            for key in _input_keys(c):
                self._by_key.setdefault(key, []).append(i)
            if c.touch is not None:
                self._by_key.setdefault(c.touch, []).append(i)
        self._nrpn_channels = {c.channel for c in controls if c.kind == "nrpn"}
        self._nrpn: dict[int, _NrpnState] = {ch: _NrpnState() for ch in self._nrpn_channels}
        self._registry = None
        self._noted: set[str] = set()  # older addresses the log has been told about
        self._resolved: list[str | None] = []
        self._by_address: dict[str, list[int]] = {}
        self._active: list[bool] = []
        self._sent: dict[tuple, tuple[int, ...]] = {}  # feedback slot -> bytes last sent
        self._dirty: set[int] = set()
        self._dirty_display = True
        self._echo: dict[tuple[int, ...], float] = {}  # recent feedback bytes -> time sent
        self.loopback = False
        self._echo_times: list[float] = []
        self._refresh_routing()

    # -- routing --------------------------------------------------------------------------
    def _channel_count(self) -> int:
        try:
            return len(self.hub.engine.session.channels)
        except AttributeError:
            n = 0
            while f"/ch/{n + 1}/fader" in self.hub.registry:
                n += 1
            return n

    def _refresh_routing(self) -> None:
        """Resolve every control's address for the current bank and registry; mark which
        control is active on each physical input in the current layer."""
        registry = self.hub.registry
        self._registry = registry
        resolved: list[str | None] = []
        by_address: dict[str, list[int]] = {}
        for i, c in enumerate(self.profile.controls):
            address = None
            if c.target:
                address = (
                    c.target.format(strip=self.bank_offset + c.strip + 1) if c.banked else c.target
                )
                if address not in registry and address not in COMMANDS:
                    address = self._renamed(address, registry)
            resolved.append(address)
            if address is not None:
                by_address.setdefault(address, []).append(i)
        self._resolved = resolved
        self._by_address = by_address
        active = [False] * len(self.profile.controls)
        for indices in self._by_key.values():
            chosen = self._choose(indices)
            if chosen is not None:
                active[chosen] = True
        self._active = active
        self._dirty = set(range(len(self.profile.controls)))
        self._dirty_display = True
        for s in self._state:
            s.picked_up = False

    def _renamed(self, address: str, registry) -> str | None:
        """Today's name of an older release's address in the profile (noted in the log once),
        or None: a target this session has not (another session's channel, say)."""
        new = renamed_address(address)
        if new is None or new not in registry:
            return None
        if address not in self._noted:
            self._noted.add(address)
            where = f"MIDI profile {self.profile.name!r} ({self.profile.path or 'built in'})"
            log.warning(describe_renames(where, [(address, new)]))
        return new

    def _choose(self, indices: list[int]) -> int | None:
        """The control that answers a message in the current layer (else the base layer)."""
        base = None
        for i in indices:
            layer = self.profile.controls[i].layer
            if layer == self.layer and layer != BASE:
                return i
            if layer == BASE:
                base = i
        return base

    def address_of(self, index: int) -> str | None:
        return self._resolved[index]

    # -- input ----------------------------------------------------------------------------
    def handle(self, msg, now: float = 0.0) -> list[Intent]:
        """Translate one decoded message (a mido Message) into intents."""
        with self.lock:
            if self._registry is not self.hub.registry:
                self._refresh_routing()
            self.stats.messages += 1
            if self._is_echo(msg, now):
                return []
            kind = msg.type
            if kind == "control_change":
                if msg.channel in self._nrpn_channels and msg.control in (98, 99, 100, 101, 6, 38):
                    return self._nrpn_input(msg)
                return self._dispatch(("cc", msg.channel, msg.control), msg.value, msg)
            if kind in ("note_on", "note_off"):
                velocity = msg.velocity if kind == "note_on" else 0
                return self._dispatch(("note", msg.channel, msg.note), velocity, msg)
            if kind == "pitchwheel":
                return self._dispatch(("pitchbend", msg.channel, 0), msg.pitch + 8192, msg)
            self.stats.ignored += 1
            return []

    def _nrpn_input(self, msg) -> list[Intent]:
        st = self._nrpn[msg.channel]
        cc, v = msg.control, msg.value
        if cc == 99:
            st.param_msb, st.rpn = v, False
        elif cc == 98:
            st.param_lsb, st.rpn = v, False
        elif cc in (101, 100):
            st.rpn = True
        elif not st.rpn and (st.param_msb, st.param_lsb) != (127, 127):
            number = (st.param_msb << 7) | st.param_lsb
            if cc == 6:
                st.data_msb = v
                indices = self._by_key.get(("nrpn", msg.channel, number), [])
                if any(self.profile.controls[i].raw_max == 127 for i in indices):
                    return self._dispatch(("nrpn", msg.channel, number), v, msg)
                return self._dispatch(("nrpn", msg.channel, number), v << 7, msg)
            indices = self._by_key.get(("nrpn", msg.channel, number), [])
            if any(self.profile.controls[i].raw_max == 127 for i in indices):
                return []  # a 7-bit NRPN control takes the data-entry MSB only
            return self._dispatch(("nrpn", msg.channel, number), (st.data_msb << 7) | v, msg)
        return []

    def _dispatch(self, key: tuple, raw: int, msg) -> list[Intent]:
        indices = self._by_key.get(key)
        if not indices:
            self.stats.ignored += 1
            return []
        touch = [i for i in indices if self.profile.controls[i].touch == key]
        if touch:
            for i in touch:
                st = self._state[i]
                st.touched = raw > 0
                if not st.touched:  # released: the motor goes back to the parameter value
                    self._forget(i)
                    self._dirty.add(i)
            return []
        chosen = self._choose(indices)
        if chosen is None:
            self.stats.ignored += 1
            return []
        c = self.profile.controls[chosen]
        if c.kind == "cc14":
            st = self._state[chosen]
            if key[2] == c.number:
                st.msb = raw
                raw = raw << 7
            else:
                raw = (st.msb << 7) | raw
        if c.action:
            return self._action(chosen, c, raw)
        address = self._resolved[chosen]
        if address is None:
            self.stats.ignored += 1
            return []
        source = MidiSource(self.name, chosen)
        if address in COMMANDS:
            return self._command(chosen, c, address, raw, source)
        if c.mode == "absolute":
            return self._absolute(chosen, c, address, raw, source)
        if c.mode == "relative":
            detents = decode_relative(raw, c.encoding)
            if detents == 0:
                return []
            param = self._registry[address]
            if param.kind in (ENUM, TOGGLE):
                return [Intent(address, "step", 1 if detents > 0 else -1, source)]
            return [Intent(address, "nudge", detents * c.step, source)]
        pressed = raw >= 64 if c.kind == "cc" else raw > 0
        st = self._state[chosen]
        was, st.pressed = st.pressed, pressed
        if c.mode == "momentary":
            if pressed == was:
                return []
            return [Intent(address, "set", 1.0 if pressed else 0.0, source)]
        if not pressed or was:
            return []
        if c.mode == "toggle":  # with a value: between it and the default (an A/B button)
            return [Intent(address, "toggle", c.value, source)]
        if c.mode == "select":
            return [Intent(address, "set", c.value, source)]
        return [Intent(address, "cycle", c.direction, source)]  # "cycle"

    def _command(self, i: int, c: Control, address: str, raw: int, source) -> list[Intent]:
        """A button on a command (``/snapshot/recall`` with ``value = "A"``): runs it on
        the press, with the control's value as its argument (none without one)."""
        pressed = raw >= 64 if c.kind == "cc" else raw > 0
        st = self._state[i]
        was, st.pressed = st.pressed, pressed
        if not pressed or was:
            return []
        return [Intent(address, "command", () if c.value is None else (c.value,), source)]

    def _absolute(self, i: int, c: Control, address: str, raw: int, source) -> list[Intent]:
        param: Param = self._registry[address]
        position = _to_position(raw, c.raw_max, c.center, c.invert)
        st = self._state[i]
        previous, st.last_position = st.last_position, position
        if c.takeover == "pickup" and not st.picked_up:
            target = param.to_normalized(self.hub.get(address))
            near = abs(position - target) <= PICKUP_STEPS / c.raw_max
            crossed = not math.isnan(previous) and (
                min(previous, position) <= target <= max(previous, position)
            )
            if not (near or crossed):
                self.stats.ignored += 1
                return []
            st.picked_up = True
        value = param.from_normalized(position)
        if param.kind == ENUM:
            value = int(value)
        return [Intent(address, "set", value, source)]

    def _action(self, i: int, c: Control, raw: int) -> list[Intent]:
        pressed = raw >= 64 if c.kind == "cc" else raw > 0
        st = self._state[i]
        was, st.pressed = st.pressed, pressed
        if c.action == "shift":
            if c.latch:
                if pressed and not was:
                    self._latched ^= {c.shift}
            elif pressed and not was:
                self._held.append(c.shift)
            elif not pressed and was and c.shift in self._held:
                self._held.remove(c.shift)
            layer = self._held[-1] if self._held else (next(iter(self._latched), BASE))
            if layer != self.layer:
                self.layer = layer
                self._refresh_routing()
            return []
        if not pressed or was:
            return []
        n = self._channel_count()
        size = self.profile.bank_size
        offset = self.bank_offset
        if c.action == "bank_next" and offset + size < n:
            offset += size
        elif c.action == "bank_prev":
            offset = max(0, offset - size)
        elif c.action == "strip_next" and offset + 1 < n:
            offset += 1
        elif c.action == "strip_prev":
            offset = max(0, offset - 1)
        if offset != self.bank_offset:
            self.bank_offset = offset
            self._refresh_routing()
        return []

    # -- changes from anywhere ----------------------------------------------------------------
    def on_change(self, change) -> None:
        """Hub listener: mark feedback dirty; a change made elsewhere drops the pick-up."""
        address = change.param.address
        indices = self._by_address.get(address)
        if not indices:
            return
        own = change.source.control if self._is_mine(change.source) else -1
        with self.lock:
            for i in indices:
                if i == own:
                    if self.profile.controls[i].mode == "absolute":
                        # the hardware already shows this position: remember, don't send
                        self._dirty.add(~i)
                    else:
                        self._dirty.add(i)
                    continue
                self._state[i].picked_up = False
                self._dirty.add(i)
            if self.profile.display is not None:
                self._dirty_display = True

    def _is_mine(self, source) -> bool:
        return isinstance(source, MidiSource) and source.surface == self.name

    def reset_outputs(self) -> None:
        """After (re)connecting: forget what the device shows; resend everything."""
        with self.lock:
            self._sent.clear()
            self._echo.clear()
            for s in self._state:
                s.picked_up = False
                s.touched = False
                s.pressed = False
                s.last_position = math.nan
            self._dirty = set(range(len(self.profile.controls)))
            self._dirty_display = True

    def _forget(self, i: int) -> None:
        fb = self.profile.controls[i].feedback
        if fb is not None:
            self._sent.pop(_slot(fb), None)

    # -- feedback ---------------------------------------------------------------------------
    def collect_feedback(self, now: float, budget_bytes: int) -> list[tuple[int, ...]]:
        """The messages to send now (at most ``budget_bytes``; the rest stays pending)."""
        out: list[tuple[int, ...]] = []
        used = 0
        with self.lock:
            if self._registry is not self.hub.registry:
                self._refresh_routing()
            pending = sorted(self._dirty, key=lambda i: i if i >= 0 else ~i)
            for item in pending:
                silent = item < 0
                i = ~item if silent else item
                self._dirty.discard(item)
                if not self._active[i]:
                    continue
                c = self.profile.controls[i]
                if c.feedback is None or (self._state[i].touched and not silent):
                    continue
                message = self._feedback_bytes(i, c)
                if message is None:
                    continue
                slot = _slot(c.feedback)
                if silent:
                    self._sent[slot] = message
                    continue
                if self._sent.get(slot) == message:
                    continue
                if used + len(message) > budget_bytes and out:
                    self._dirty.add(i)
                    continue
                self._sent[slot] = message
                out.append(message)
                used += len(message)
            if self._dirty_display and self.profile.display is not None:
                self._dirty_display = False
                for slot, message in self._display_messages():
                    if self._sent.get(slot) == message:
                        continue
                    if used + len(message) > budget_bytes and out:
                        self._dirty_display = True
                        continue
                    self._sent[slot] = message
                    out.append(message)
                    used += len(message)
            if self._echo:
                self._echo = {m: t for m, t in self._echo.items() if now - t <= ECHO_WINDOW_S}
            for message in out:
                self._echo[message] = now
        return out

    def _feedback_bytes(self, i: int, c: Control) -> tuple[int, ...] | None:
        fb = c.feedback
        address = self._resolved[i]
        if address is None or address in COMMANDS:
            value_on, position = False, 0.0
        else:
            param: Param = self._registry[address]
            value = self.hub.get(address)
            position = param.to_normalized(value)
            if c.mode == "select" or (c.mode == "toggle" and c.value is not None):
                try:
                    value_on = param.validate(c.value) == value
                except ParamError:
                    value_on = False
            else:
                value_on = value >= param.minimum + 0.5 * (param.maximum - param.minimum)
        binary = c.is_button
        if fb.kind == "pitchbend":
            raw = _to_raw(position, fb.lo, fb.hi, c.center, c.invert)
            return (0xE0 | fb.channel, raw & 0x7F, raw >> 7)
        if fb.kind in ("cc14", "nrpn"):
            raw = _to_raw(position, fb.lo, fb.hi, c.center, c.invert)
            if fb.kind == "cc14":
                return (0xB0 | fb.channel, c.number, raw >> 7, 0xB0 | fb.channel, c.lsb, raw & 0x7F)
            number = c.number
            status = 0xB0 | fb.channel
            return (status, 99, number >> 7, status, 98, number & 0x7F,
                    status, 6, raw >> 7, status, 38, raw & 0x7F)  # fmt: skip
        value = (
            (fb.on if value_on else fb.off)
            if binary
            else _to_raw(position, fb.lo, fb.hi, c.center, c.invert)
        )
        if fb.kind == "cc":
            return (0xB0 | fb.channel, fb.number, value)
        if fb.kind == "note":
            return (0x90 | fb.channel, fb.number, value)
        # sysex template
        return tuple(value if b == "value" else fb.number if b == "number" else b for b in fb.data)

    def _display_messages(self) -> Iterator[tuple[tuple, tuple[int, ...]]]:
        d = self.profile.display
        names = []
        try:
            names = [ch.name for ch in self.hub.engine.session.channels]
        except AttributeError:
            pass
        for line, (offset, content) in enumerate(zip(d.line_offsets, d.lines, strict=True)):
            cells = []
            for k in range(d.cells):
                strip = self.bank_offset + k + 1
                text = ""
                if content == "name":
                    text = names[strip - 1] if strip <= len(names) else ""
                else:
                    address = f"/ch/{strip}/{content}"
                    if address in self._registry:
                        param = self._registry[address]
                        text = param.format(self.hub.get(address)).replace(" dB", "")
                width = d.cell_width
                cells.append(text[: width - 1].center(width - 1) + " " if width > 1 else text[:1])
            ascii_bytes = tuple(b if 32 <= b < 127 else 63 for b in "".join(cells).encode())
            yield ("display", line), (*d.header, offset, *ascii_bytes, 0xF7)

    # -- loopback -------------------------------------------------------------------------------
    def _is_echo(self, msg, now: float) -> bool:
        """Is ``msg`` our own feedback coming straight back? A message identical to one we
        sent less than ECHO_WINDOW_S ago is an echo (our output routed back to our input, or
        a device that echoes what it receives): it is dropped, so it never reaches the hub
        and cannot feed a loop (an echoed LED note would otherwise press the button again).
        LOOPBACK_ECHOES echoes within a second declare a loop (``loopback``, logged)."""
        if not self._echo:
            return False
        data = tuple(msg.bytes())
        sent = self._echo.pop(data, None)
        if sent is None or now - sent > ECHO_WINDOW_S:
            return False
        self.stats.echoes += 1
        self._echo_times = [t for t in self._echo_times if now - t <= 1.0] + [now]
        if len(self._echo_times) >= LOOPBACK_ECHOES:
            self.loopback = True
        return True


# A human cannot press a button again within this long of the LED update the first press
# caused (that update itself follows the press by up to one feedback period), while a MIDI
# loop returns our message within a JACK period or a USB frame.
ECHO_WINDOW_S = 0.06
LOOPBACK_ECHOES = 4  # echoes within a second that declare a MIDI loop


def _slot(fb: Feedback) -> tuple:
    """The physical output a feedback message drives (one LED, one ring, one motor)."""
    if fb.kind == "sysex":
        return ("sysex", fb.data[:8], fb.number)
    return (fb.kind, fb.channel, fb.number)


def meter_level(peak: float, levels: int, floor_db: float) -> int:
    """Linear peak → meter step 0…levels, linear in dB from ``floor_db`` (0) to 0 dBFS."""
    if not peak > 0.0:
        return 0
    db = 20.0 * math.log10(peak)
    if db <= floor_db:
        return 0
    return min(levels, math.ceil((db - floor_db) / -floor_db * levels))


def describe(profile: Profile) -> Iterable[str]:
    """One line per control: message, mode and target (for ``studiod devices``/docs)."""
    for c in profile.controls:
        what = c.target or c.action
        layer = f" [{c.layer}]" if c.layer else ""
        yield f"{c.kind} ch{c.channel + 1} #{c.number}: {c.mode} -> {what}{layer}"


__all__ = [
    "ENCODINGS",
    "KINDS",
    "MODES",
    "Control",
    "Display",
    "Feedback",
    "Intent",
    "Meters",
    "MidiSource",
    "Profile",
    "ProfileError",
    "Surface",
    "apply_intent",
    "decode_relative",
    "load_profile",
    "load_profiles",
    "meter_level",
    "parse_profile",
    "shipped_profile_paths",
    "user_profile_dir",
]
