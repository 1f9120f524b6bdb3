"""MIDI learn: move a control, the mapping is saved to the user's profile.

:func:`classify` turns the burst of messages one control sends when it is moved into a
``[[control]]`` table (pitch bend, 14-bit CC, NRPN, a button, an absolute knob or fader, or a
relative encoder with its encoding), :func:`capture` listens on the MIDI inputs for such a
burst, and :func:`save_learned` writes it to the user's profile for that device (a profile
that ``extends`` the shipped one, so the learned control replaces the shipped mapping of the
same message and everything else stays).
"""

from __future__ import annotations

import re
import threading
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mido

from studiod.controllers.atomic import atomic_write
from studiod.controllers.mapping import (
    ENCODINGS,
    Profile,
    ProfileError,
    _Where,
    load_profile,
    load_profiles,
    parse_profile,
    shipped_profile_paths,
    user_profile_dir,
)
from studiod.controllers.midi import MidiParser, port_pattern
from studiod.dsp.registry import ENUM, TOGGLE, Param

SETTLE_S = 0.7  # the burst ends when the control has been still this long


class LearnError(RuntimeError):
    """Nothing usable was received, or the profile cannot take the mapping."""


@dataclass(frozen=True)
class Learned:
    port: str
    control: dict  # a [[control]] table

    def describe(self) -> str:
        c = self.control
        extra = f" ({c['encoding']})" if "encoding" in c else ""
        return (
            f"{c['type']} channel {c['channel']} number {c.get('number', 0)}: "
            f"{c['mode']}{extra} -> {c['target']}"
        )


def _relative_encoding(values: list[int]) -> str | None:
    """The relative encoding a run of CC values fits, or None if it looks absolute.

    A relative encoder sends small signed steps, so its values sit near 0/127, or near 64,
    and repeat; an absolute control moved slowly sends a run of distinct, ordered values.
    """
    if len(values) < 2:
        return None
    repeats = len(set(values)) < len(values)
    if any(113 <= v <= 127 for v in values) and all(v <= 15 or v >= 113 for v in values):
        return "twos_complement" if repeats or any(v <= 15 for v in values) else None
    if all(1 <= v <= 15 or 65 <= v <= 79 for v in values) and (
        repeats or any(v >= 65 for v in values)
    ):
        return "signed_bit" if any(v <= 15 for v in values) or repeats else None
    if all(49 <= v <= 79 and v != 64 for v in values) and repeats:
        return "binary_offset"
    if all(1 <= v <= 15 for v in values) and repeats:
        return "twos_complement"
    return None


def classify(
    messages: list[mido.Message], address: str, param: Param, current: float | None = None
) -> dict:
    """The ``[[control]]`` table for the control that sent ``messages`` (``current``: the
    parameter's value now, which a button learned for a continuous parameter recalls)."""
    msgs = [m for m in messages if hasattr(m, "channel")]
    if not msgs:
        raise LearnError("no channel messages received")
    first = msgs[0]
    channel = first.channel
    msgs = [m for m in msgs if m.channel == channel]
    table: dict = {"name": f"learned {address}", "channel": channel + 1, "target": address}
    symmetric = param.kind not in (ENUM, TOGGLE) and math_isclose(param.minimum, -param.maximum)

    def button(kind: str, number: int) -> dict:
        table.update(type=kind, number=number)
        if param.kind == TOGGLE:
            table.update(mode="toggle", feedback=True)
        elif param.kind == ENUM:
            table.update(mode="cycle")
        else:  # a float: the button recalls the value the parameter has now
            table.update(mode="select", value=float(param.default if current is None else current))
        return table

    if first.type == "pitchwheel":
        table.update(type="pitchbend", mode="absolute", takeover="pickup")
        if symmetric:
            table["center"] = True
        return table
    if first.type in ("note_on", "note_off"):
        return button("note", first.note)
    ccs = [m for m in msgs if m.type == "control_change"]
    if not ccs:
        raise LearnError(f"cannot learn from {first.type} messages")
    numbers = {m.control for m in ccs}
    if {99, 98} <= numbers and 6 in numbers:
        msb = next(m.value for m in reversed(ccs) if m.control == 99)
        lsb = next(m.value for m in reversed(ccs) if m.control == 98)
        table.update(type="nrpn", number=(msb << 7) | lsb, mode="absolute", takeover="pickup")
        if 38 not in numbers:
            table["bits"] = 7
        if symmetric:
            table["center"] = True
        return table
    counts = Counter(m.control for m in ccs)
    number = counts.most_common(1)[0][0]
    if number < 32 and number + 32 in numbers:
        table.update(type="cc14", number=number, mode="absolute", takeover="pickup")
        if symmetric:
            table["center"] = True
        return table
    values = [m.value for m in ccs if m.control == number]
    if set(values) <= {0, 127} and param.kind in (TOGGLE, ENUM):
        return button("cc", number)
    encoding = _relative_encoding(values)
    table.update(type="cc", number=number)
    if encoding is not None and param.kind != TOGGLE:
        assert encoding in ENCODINGS
        table.update(mode="relative", encoding=encoding)
    else:
        table.update(mode="absolute", takeover="pickup")
    if symmetric:
        table["center"] = True
    return table


def math_isclose(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def capture(
    backend,
    timeout_s: float = 20.0,
    settle_s: float = SETTLE_S,
    port: str | None = None,
    clock=time.monotonic,
) -> tuple[str, list[mido.Message]]:
    """Listen on every input port (or those matching ``port``) until one control has moved
    and then been still for ``settle_s``; returns the port and its messages."""
    lock = threading.Lock()
    got: dict[str, list] = {}
    last = [0.0]
    chosen: list[str] = []
    handles = []

    def make_callback(name: str):
        parser = MidiParser()

        def callback(data, now):
            msgs = [m for m in parser.feed(data) if hasattr(m, "channel")]
            if not msgs:
                return
            with lock:
                if chosen and chosen[0] != name:
                    return
                if not chosen:
                    chosen.append(name)
                got.setdefault(name, []).extend(msgs)
                last[0] = clock()

        return callback

    for name in backend.input_ports():
        if port and re.search(port, name, re.IGNORECASE) is None:
            continue
        handles.append(backend.open_input(name, make_callback(name), label="learn"))
    if not handles:
        raise LearnError("no MIDI input ports" + (f" match {port!r}" if port else ""))
    start = clock()
    try:
        while clock() - start < timeout_s:
            time.sleep(0.02)
            with lock:
                if chosen and clock() - last[0] >= settle_s:
                    return chosen[0], list(got[chosen[0]])
    finally:
        for h in handles:
            h.close()
    raise LearnError(f"no control moved within {timeout_s:g} s")


# --- saving ------------------------------------------------------------------------------------
def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def control_text(control: dict) -> str:
    """A ``[[control]]`` table as TOML text."""
    lines = ["", "[[control]]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in control.items()]
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "controller"


def _same_message(table: dict, control: dict) -> bool:
    def key(t):
        return (t.get("type"), t.get("channel", 1), t.get("number", 0), t.get("layer", ""))

    return key(table) == key(control)


def save_learned(
    learned: Learned, user_dir: Path | None = None, profiles: list[Profile] | None = None
) -> Path:
    """Add the learned control to the user's profile for its device and return the file.

    The device's profile is the one whose port pattern matches; the user's file has that
    profile's id and ``extends`` it when it is a shipped one. A learned control replaces an
    earlier learned control for the same message. The file is validated before it replaces
    the old one (written to a temporary file, then renamed).
    """
    folder = user_profile_dir() if user_dir is None else Path(user_dir)
    profiles = load_profiles(folder) if profiles is None else profiles
    matching = [p for p in profiles if p.matches_input(learned.port)]
    profile = max(matching, key=lambda p: p.priority) if matching else None
    in_user_dir = profile is not None and Path(profile.path).parent == folder
    if profile is None:
        name = re.sub(r"\s+\d+:\d+$", "", learned.port.split(":", 1)[-1]).strip()
        path = folder / f"{_slug(name)}.toml"
        pattern = _toml_value(port_pattern(learned.port))
        header = f"[device]\nname = {_toml_value(name)}\nport = {pattern}\n"
    else:
        path = Path(profile.path) if in_user_dir else folder / f"{profile.id}.toml"
        header = f'[device]\nextends = "{profile.id}"\n'
    text = (
        path.read_text(encoding="utf-8")
        if path.exists()
        else ("# Written by `studiod learn`; edit freely.\n" + header)
    )
    # drop an earlier mapping of the same message from this file
    try:
        existing = tomllib.loads(text).get("control", [])
    except tomllib.TOMLDecodeError as exc:
        raise LearnError(f"{path}: {exc}") from None
    where = _Where(str(path), text)
    lines = text.splitlines(keepends=True)
    starts = where.tables.get("control", [])
    every_start = sorted(s for v in where.tables.values() for s in v)
    for index in reversed(range(len(existing))):
        table = existing[index]
        if not _same_message(table, learned.control):
            continue
        if isinstance(table.get("number"), list) or isinstance(table.get("channel"), list):
            raise LearnError(
                f"{path}:{starts[index] + 1}: that message is part of a list of controls; "
                "edit the file by hand"
            )
        start = starts[index]
        end = min((s for s in every_start if s > start), default=len(lines))
        del lines[start:end]
    text = "".join(lines).rstrip("\n") + "\n" + control_text(learned.control)
    parents = {p.id: p for p in profiles if Path(p.path).parent != folder}
    for shipped in shipped_profile_paths():  # what a user profile may extend
        parents.setdefault(shipped.stem, load_profile(shipped))
    try:
        parse_profile(text, str(path), parents)
    except ProfileError as exc:
        raise LearnError(f"the learned mapping does not fit: {exc}") from None
    atomic_write(path, text)
    return path


def learn(
    address: str,
    registry,
    backend,
    user_dir: Path | None = None,
    timeout_s: float = 20.0,
    port: str | None = None,
    settle_s: float = SETTLE_S,
) -> tuple[Learned, Path]:
    """Wait for a control to move, classify it for ``address``, save it; returns both."""
    param = registry[address]  # ParamError for an unknown address, before listening
    port_name, messages = capture(backend, timeout_s, settle_s, port)
    current = registry.get(address) if hasattr(registry, "get") else None
    learned = Learned(port_name, classify(messages, address, param, current))
    return learned, save_learned(learned, user_dir)
