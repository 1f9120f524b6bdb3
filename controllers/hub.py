"""The control hub: the one way a parameter changes, whoever changes it.

MIDI surfaces, OSC clients, snapshots, the state file and config reloads all call
:meth:`ControlHub.set`. The hub validates through the engine's registry, queues the change
for the audio thread, and tells every listener (OSC subscribers, MIDI feedback, the state
saver) what changed and who changed it, so that feedback can skip the sender.

Commands (:mod:`studiod.controllers.commands`: save a scene, load a reference track) go
through the hub too: the part of the daemon that carries one out binds a handler to its
address, and every surface calls :meth:`ControlHub.run`.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from studiod.controllers.commands import COMMANDS, Command, CommandError, Handler, coerce
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
        self._handlers: dict[str, Handler] = {}

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

    def toggle(self, address: str, source: object = None, value: object = None) -> Change:
        """Flip a toggle (any value at or above 0.5 counts as on); with ``value``, flip
        between that value and the parameter's default (an A/B button on an enum:
        ``/monitor/source`` between "ref" and "mix")."""
        with self._modify:
            if value is None:
                return self.set(address, 0.0 if self.get(address) >= 0.5 else 1.0, source)
            param = self.registry[address]
            number = param.validate(value)
            chosen = self.get(address) == number
            return self.set(address, param.default if chosen else number, source)

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

    def bind(self, address: str, handler: Handler) -> None:
        """Carry out the command at ``address`` with ``handler(*args)`` (replacing any)."""
        if address not in COMMANDS:
            raise KeyError(f"{address} is not a command")
        with self._lock:
            self._handlers[address] = handler

    def unbind(self, address: str, handler: Handler) -> None:
        """Drop ``handler`` (only if it is still the one bound: a newer part keeps its own)."""
        with self._lock:
            if self._handlers.get(address) == handler:
                del self._handlers[address]

    def commands(self) -> list[Command]:
        """The commands something has bound, in the table's order."""
        with self._lock:
            return [c for a, c in COMMANDS.items() if a in self._handlers]

    def run(self, address: str, args: list | tuple = ()) -> tuple | None:
        """Carry out a command: its reply values, or None. Raises CommandError (bad
        arguments, nothing bound, or the handler's own refusal) or ParamError/QueueFull
        from the changes it makes."""
        command = COMMANDS.get(address)
        if command is None:
            raise CommandError(f"{address}: unknown command")
        values = coerce(command, args)
        with self._lock:
            handler = self._handlers.get(address)
        if handler is None:
            raise CommandError(f"{address}: not available in this session")
        return handler(*values)

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
