"""The engine and state components.

:class:`EngineComponent` owns the engine behind the one :class:`ControlHub`: it builds it
from ``[session]`` and, on a reload that changes the session, builds the new one and moves
the hub to it (every value both know carries over); the audio component then primes it and
crossfades it in under the running stream. Its tick designs what the engine asks for
(``engine.service``).

:class:`StateComponent` restores every parameter value at start, applies ``[params]`` after
them (all at start and after a change of the session's graph; what changed otherwise), saves
changes crash-safely (debounced, :mod:`studiod.daemon.state`), and moves to a new ``[state]``
directory on reload. A session that changes only its samplerate (the engine following the
device's rate) carries every value over and applies no ``[params]`` again: live values hold.
"""

from __future__ import annotations

import logging
import time

from studiod.controllers.commands import CommandError
from studiod.controllers.hub import ControlHub
from studiod.daemon.components import Component, Plan
from studiod.daemon.device import max_frames, prime
from studiod.daemon.state import StateError, StateKeeper, StateStore
from studiod.dsp.engine import Engine, QueueFull
from studiod.dsp.registry import ParamError

log = logging.getLogger("studiod")


class EngineComponent(Component):
    name = "engine"
    sections = ("session",)

    def prepare(self) -> None:
        cfg = self.host.config
        engine = Engine(cfg.session, max_block_frames=max_frames(cfg))
        self.host.hub = ControlHub(engine)

    def apply(self, plan: Plan) -> str | None:
        if not plan.session:
            return None
        new = plan.new
        engine = Engine(new.session, max_block_frames=max_frames(new))
        for line in self.host.hub.swap_engine(engine):
            log.warning("reload: %s", line)
        return f"session ({len(new.session.channels)} channels)"

    def tick(self, now: float) -> None:
        self.host.hub.engine.service()

    def status(self) -> dict:
        hub = self.host.hub
        return {"nan_events": hub.engine.nan_events if hub else 0}


class StateComponent(Component):
    name = "state"
    sections = ("state", "params", "session")

    def __init__(self, host):
        super().__init__(host)
        self.keeper: StateKeeper | None = None

    def prepare(self) -> None:
        cfg = self.host.config
        for address, handler in self._commands().items():
            self.host.hub.bind(address, handler)
        store = StateStore(cfg.state.dir)
        store.remove_stale_temp_files()
        self.keeper = self._keeper(cfg, store)
        try:
            applied, errors = self.keeper.restore()
        except StateError as exc:
            log.error("state: %s; starting from defaults", exc)
        else:
            if applied or errors:
                log.info("restored %d parameter values from %s", applied, store.params_path)
            for line in errors:
                log.warning("state: %s", line)
        self.apply_params(cfg.params, initial=True)

    def _keeper(self, cfg, store: StateStore) -> StateKeeper:
        return StateKeeper(
            self.host.hub, store, cfg.state.save_delay_s, cfg.state.max_delay_s,
            apply=self.apply_values,
        )  # fmt: skip

    def stop(self) -> None:
        if self.keeper is not None:
            self.keeper.close()
        for address, handler in self._commands().items():
            self.host.hub.unbind(address, handler)

    def _commands(self) -> dict:
        return {
            "/snapshot/save": self._save,
            "/snapshot/recall": self._recall,
            "/snapshot/delete": self._delete,
            "/snapshot/list": self._list,
        }

    # The scene commands (OSC, MIDI buttons, the CLI), on the daemon's snapshot methods.
    def _save(self, name: str) -> tuple:
        _refusing(self.host.save_snapshot, name)
        return (name,)

    def _recall(self, name: str) -> tuple:
        return (name, len(_refusing(self.host.recall_snapshot, name)))

    def _delete(self, name: str) -> tuple:
        if not _refusing(self.host.delete_snapshot, name):
            raise CommandError(f"no snapshot named {name!r}")
        log.info("snapshot %r deleted", name)
        return (name,)

    def _list(self) -> tuple:
        return tuple(self.host.list_snapshots())

    def apply(self, plan: Plan) -> str | None:
        old, new = plan.old, plan.new
        what = []
        if plan.graph:  # another graph: every [params] value again
            self.apply_params(new.params, initial=True)
        else:
            self.apply_params(new.params, old=old.params)
            if dict(new.params) != dict(old.params):
                what.append("params")
        if new.state != old.state:
            self.keeper.close()
            self.keeper = self._keeper(new, StateStore(new.state.dir))
            self.keeper.flush()
            what.append("state")
        return ", ".join(what) or None

    def tick(self, now: float) -> None:
        self.keeper.service()

    def apply_values(self, values, source: object = None) -> list[str]:
        """``hub.apply`` that waits out a full parameter queue (a snapshot larger than the
        queue): while the engine is live the audio thread drains it within a block; before
        that, a silent block drains it here. Returns the refused values' messages."""
        hub, audio = self.host.hub, self.host.audio
        errors = []
        for address, value in values.items():
            deadline = time.monotonic() + 1.0
            while True:
                try:
                    hub.set(address, value, source)
                    break
                except ParamError as exc:
                    errors.append(str(exc))
                    break
                except QueueFull:
                    if time.monotonic() > deadline:
                        errors.append(f"{address}: the engine is not draining its queue")
                        break
                    core = audio.core if audio is not None else None
                    live = core is not None and core.engine is hub.engine
                    if live and audio.device_state == "running":
                        time.sleep(0.002)
                    else:
                        prime(hub.engine, seconds=0.0)
        return errors

    def apply_params(self, params, initial: bool = False, old=()) -> None:
        """[params] values through the hub (all at start; what changed on reload)."""
        before = dict(old)
        for address, value in params:
            if not initial and address in before and before[address] == value:
                continue
            for line in self.apply_values({address: value}, "config"):
                log.error("config [params] %s", line)


def _refusing(call, *args):
    """``call(*args)``; a bad scene name (StateError) or a failed read or write refuses the
    command with its reason."""
    try:
        return call(*args)
    except OSError as exc:
        raise CommandError(str(exc)) from None
