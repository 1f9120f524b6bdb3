"""The one parameter registry: every controllable value, declared once.

A parameter has an OSC-style address (``/ch/3/eq/2/gain``), a unit, a range, a default, a
taper (how a 0…1 control such as a MIDI fader maps onto the range) and a kind (float,
toggle, enum). OSC, MIDI mappings, the state file, the OSCQuery tree and the docs are all
generated from it, and every value is validated here before it gets near the audio thread.

Each parameter also owns one slot (``index``) of the engine's flat value array; the engine
layout (:mod:`studiod.dsp.layout`) decides which slot means what.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

FLOAT = "float"
TOGGLE = "toggle"
ENUM = "enum"

LINEAR = "linear"
LOG = "log"  # frequencies, times, ratios: equal steps per octave/decade
FADER = "fader"  # console fader law, bottom of travel is -inf

# The bottom of every fader and send range: treated as -inf dB (silence).
FADER_OFF_DB = -90.0

# Console fader law as (position 0…1, dB) breakpoints, linear in dB between them. These are
# the segments Behringer documents for the X32/M32 OSC protocol (fader float 0.0…1.0 with
# 0.0625 = -60 dB, 0.25 = -30 dB, 0.5 = -10 dB, 1.0 = +10 dB), so OSC apps built for consoles
# feel right.
_FADER_LAW = ((0.0, FADER_OFF_DB), (0.0625, -60.0), (0.25, -30.0), (0.5, -10.0), (1.0, 10.0))


class ParamError(ValueError):
    """A value or address that the registry refuses; the message says why."""


@dataclass(frozen=True)
class Param:
    """One controllable value. ``index`` is its slot in the engine's value array."""

    address: str
    index: int
    unit: str
    minimum: float
    maximum: float
    default: float
    taper: str = LINEAR
    kind: str = FLOAT
    choices: tuple[str, ...] = ()
    description: str = ""

    def validate(self, value: object) -> float:
        """The engine value for ``value`` (number, bool, or choice name), or ParamError."""
        if self.kind == ENUM:
            if isinstance(value, str):
                if value not in self.choices:
                    raise ParamError(f"{self.address}: {value!r} is not one of {self.choices}")
                return float(self.choices.index(value))
            number = _as_number(self.address, value)
            # NaN and ±inf first: int() of them raises, and they are no index anyway
            if not math.isfinite(number) or number != int(number):
                raise ParamError(f"{self.address}: index {value!r} is not a whole number")
            if not 0 <= number < len(self.choices):
                raise ParamError(
                    f"{self.address}: index {value!r} out of 0…{len(self.choices) - 1}"
                )
            return float(number)
        number = _as_number(self.address, value)
        if self.kind == TOGGLE:
            if number not in (0.0, 1.0):
                raise ParamError(f"{self.address}: a toggle takes 0 or 1, not {value!r}")
            return number
        if self.taper == FADER and number == -math.inf:
            return self.minimum
        if not math.isfinite(number):
            raise ParamError(f"{self.address}: {value!r} is not a finite number")
        if not self.minimum <= number <= self.maximum:
            raise ParamError(
                f"{self.address}: {number:g} {self.unit} is out of range "
                f"{self.minimum:g}…{self.maximum:g}"
            )
        return number

    def to_normalized(self, value: float) -> float:
        """Position 0…1 of a (valid) engine value along the taper."""
        if self.kind in (TOGGLE, ENUM):
            span = max(self.maximum - self.minimum, 1.0)
            return (value - self.minimum) / span
        if self.taper == FADER:
            return float(np.interp(value, [p[1] for p in _FADER_LAW], [p[0] for p in _FADER_LAW]))
        if self.taper == LOG:
            return math.log(value / self.minimum) / math.log(self.maximum / self.minimum)
        return (value - self.minimum) / (self.maximum - self.minimum)

    def from_normalized(self, position: float) -> float:
        """The engine value at position 0…1 along the taper (clamped)."""
        position = min(max(float(position), 0.0), 1.0)
        if self.kind in (TOGGLE, ENUM):
            return float(round(self.minimum + position * (self.maximum - self.minimum)))
        if self.taper == FADER:
            return float(
                np.interp(position, [p[0] for p in _FADER_LAW], [p[1] for p in _FADER_LAW])
            )
        if self.taper == LOG:
            return self.minimum * (self.maximum / self.minimum) ** position
        return self.minimum + position * (self.maximum - self.minimum)

    def format(self, value: float) -> str:
        """A human-readable value: choice name, on/off, or number with unit."""
        if self.kind == ENUM:
            return self.choices[int(value)]
        if self.kind == TOGGLE:
            return "on" if value else "off"
        if self.taper == FADER and value <= FADER_OFF_DB:
            return "-inf dB"
        return f"{value:g} {self.unit}".strip()


def _as_number(address: str, value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        try:
            return float(value)
        except OverflowError:  # an int beyond float range (a TOML or JSON integer)
            raise ParamError(f"{address}: {value!r} is out of range") from None
    raise ParamError(f"{address}: expected a number, got {type(value).__name__} {value!r}")


def check_leaves(addresses: Iterable[str]) -> None:
    """Raise ValueError if an address is also the container of another: in OSC 1.0 the
    methods are the leaves of the address tree (and OSCQuery clients hold to that)."""
    methods = set(addresses)
    for address in methods:
        parent = address.rpartition("/")[0]
        while parent:
            if parent in methods:
                raise ValueError(f"{parent} is a method and the container of {address}")
            parent = parent.rpartition("/")[0]


class Registry:
    """All parameters of one engine layout, with their current values.

    ``values`` is a float64 array indexed by ``Param.index``: the values as the control side
    knows them (what a query answers, what the state file stores). The engine keeps its own
    copy that follows through the change queue.
    """

    def __init__(self, params: Iterable[Param]):
        self._params = tuple(params)
        self._by_address = {p.address: p for p in self._params}
        if len(self._by_address) != len(self._params):
            raise ValueError("duplicate parameter address in the layout")
        for i, p in enumerate(self._params):
            if p.index != i:
                raise ValueError(f"{p.address}: index {p.index} but position {i}")
        check_leaves(self._by_address)
        self.values = np.array([p.default for p in self._params], dtype=np.float64)

    def __len__(self) -> int:
        return len(self._params)

    def __iter__(self) -> Iterator[Param]:
        return iter(self._params)

    def __contains__(self, address: object) -> bool:
        return address in self._by_address

    def __getitem__(self, address: str) -> Param:
        try:
            return self._by_address[address]
        except KeyError:
            raise ParamError(f"unknown address {address!r}") from None

    def get(self, address: str) -> float:
        return float(self.values[self[address].index])

    def set(self, address: str, value: object) -> tuple[Param, float]:
        """Validate and store; returns the parameter and its engine value."""
        param = self[address]
        number = param.validate(value)
        self.values[param.index] = number
        return param, number

    def defaults(self) -> np.ndarray:
        return np.array([p.default for p in self._params], dtype=np.float64)

    def snapshot(self) -> dict[str, float | str]:
        """Every value by address, enums by choice name (for the state file)."""
        return {
            p.address: p.choices[int(v)] if p.kind == ENUM else float(v)
            for p, v in zip(self._params, self.values, strict=True)
        }
