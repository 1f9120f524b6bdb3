"""The control hub: the one way a parameter changes, whoever changes it.

MIDI surfaces, OSC clients, snapshots, the state file and config reloads all call
:meth:`ControlHub.set`. The hub validates through the engine's registry, queues the change
for the audio thread, and tells every listener (OSC subscribers, MIDI feedback, the state
saver) what changed and who changed it, so that feedback can skip the sender.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from studiod.dsp.engine import Engine
from studiod.dsp.registry import Param, ParamError, Registry


@dataclass(frozen=True)
class Change:
    """One accepted change: the parameter, its engine value, and who made it."""

    param: Param
    value: float
    source: object = None


Listener = Callable[[Change], None]


class ControlHub:
    """Validated parameter changes in, notifications out. Thread-safe.

    Listeners are called synchronously on the caller's thread, outside the hub's lock;
    they must only record or enqueue (feedback is sent at a bounded rate elsewhere).
    """

    def __init__(self, engine: Engine):
        self._engine = engine
        self._lock = threading.Lock()
        self._listeners: dict[int, Listener] = {}
        self._tokens = itertools.count(1)
        # a change computed from the current value (nudge, step, toggle) is one read-and-set:
        # two surfaces flipping the same toggle at once flip it twice, never once
        self._modify = threading.Lock()
        self.version = 0  # increments on every accepted change

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def registry(self) -> Registry:
        return self._engine.registry

    def get(self, address: str) -> float:
        return self._engine.get(address)

    def set(self, address: str, value: object, source: object = None) -> Change:
        """Validate, queue for the audio thread, notify. Raises ParamError or QueueFull."""
        param, number = self._engine.set(address, value)
        change = Change(param, number, source)
        with self._lock:
            self.version += 1
            listeners = list(self._listeners.values())
        for listener in listeners:
            listener(change)
        return change

    def nudge(self, address: str, delta: float, source: object = None) -> Change:
        """Move a parameter by ``delta`` of its control range (the normalized 0…1 position
        of its taper: a relative encoder's detent, an OSC "a bit up")."""
        with self._modify:
            param = self.registry[address]
            position = param.to_normalized(self.get(address)) + float(delta)
            return self.set(address, param.from_normalized(position), source)

    def step(self, address: str, steps: int, source: object = None, wrap: bool = False) -> Change:
        """Move an enum or toggle by ``steps`` choices: clamped at the ends, or cycling
        round with ``wrap``."""
        with self._modify:
            param = self.registry[address]
            count = round(param.maximum - param.minimum) + 1
            index = round(self.get(address) - param.minimum) + int(steps)
            index = index % count if wrap else max(0, min(count - 1, index))
            return self.set(address, param.minimum + index, source)

    def toggle(self, address: str, source: object = None) -> Change:
        """Flip a toggle (any value at or above 0.5 counts as on)."""
        with self._modify:
            return self.set(address, 0.0 if self.get(address) >= 0.5 else 1.0, source)

    def apply(self, values: Mapping[str, object], source: object = None) -> list[str]:
        """Set many values (a snapshot, the state file); returns one error line per value
        that was refused, and applies all the others."""
        errors = []
        for address, value in values.items():
            try:
                self.set(address, value, source)
            except ParamError as exc:
                errors.append(str(exc))
        return errors

    def snapshot(self) -> dict[str, float | str]:
        return self.registry.snapshot()

    def subscribe(self, listener: Listener) -> int:
        with self._lock:
            token = next(self._tokens)
            self._listeners[token] = listener
        return token

    def unsubscribe(self, token: int) -> None:
        with self._lock:
            self._listeners.pop(token, None)

    def swap_engine(self, engine: Engine, keep: Iterable[str] | None = None) -> list[str]:
        """Move to a new engine (a changed session) carrying every value both know over;
        returns refused values. The caller swaps the audio callback to the new engine."""
        old = self.snapshot()
        with self._lock:
            self._engine = engine
        wanted = old if keep is None else {a: old[a] for a in keep if a in old}
        carried = {a: v for a, v in wanted.items() if a in engine.registry}
        return self.apply(carried, source=self)
