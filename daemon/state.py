"""Parameter values and named snapshots on disk, written crash-safely.

Layout of the state directory::

    params.json              every parameter value (by registry address), restored on start
    snapshots/<name>.json    named snapshots (scenes)

Every file is written to a temporary file in the same directory, flushed and fsync'ed,
renamed over the old one and the directory fsync'ed (POSIX rename(2) is atomic), so a
crash or power cut leaves either the old or the new file, never a torn one. The live
values are saved debounced by :class:`StateKeeper`: ``save_delay_s`` after the last
change, and at least every ``max_delay_s`` while values keep moving.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from studiod.controllers.atomic import atomic_write
from studiod.dsp.layout import describe_renames, migrate_values
from studiod.dsp.registry import ENUM, TOGGLE, Param, ParamError

log = logging.getLogger("studiod.state")

FORMAT = "studiod-state"
VERSION = 1
PARAMS_FILE = "params.json"
SNAPSHOT_DIR = "snapshots"
_SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}$")
# Snapshots are scenes of the mix: recalling one must not change what the speakers do
# (level, dim, system), so the monitor section is left out unless asked for; nor the
# reference player's transport or the scene fade itself, which are not part of a mix.
MONITOR_PREFIX = "/monitor/"
NOT_A_SCENE = ("/player/", "/snapshot/")


class StateError(OSError):
    """A state file that cannot be read or written, or a bad snapshot name."""


def encode(values: Mapping[str, float | str], kind: str) -> bytes:
    """The JSON document of a value set (``kind``: "params" or "snapshot")."""
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "values": dict(values),
    }
    return (json.dumps(doc, indent=1, sort_keys=False) + "\n").encode()


def decode(data: bytes, where: str) -> dict[str, float | str]:
    """Values of a state document; StateError naming ``where`` when it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateError(f"{where}: not a studiod state file")
    if doc.get("version") != VERSION:
        raise StateError(f"{where}: state version {doc.get('version')!r}, expected {VERSION}")
    values = doc.get("values")
    if not isinstance(values, dict):
        raise StateError(f"{where}: 'values' must be a table")
    return {
        str(k): v
        for k, v in values.items()
        if isinstance(v, int | float | str) and not isinstance(v, bool)
    }


class StateStore:
    """The files of one state directory."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    @property
    def params_path(self) -> Path:
        return self.dir / PARAMS_FILE

    def remove_stale_temp_files(self) -> int:
        """Delete temp files a killed writer left behind (call before anyone writes)."""
        count = 0
        for folder in (self.dir, self.dir / SNAPSHOT_DIR):
            for path in folder.glob(".*.tmp") if folder.is_dir() else ():
                path.unlink(missing_ok=True)
                count += 1
        return count

    def load_params(self) -> dict[str, float | str] | None:
        """The saved values, or None when there are none. A file that does not parse (only
        possible through outside damage) is moved aside and reported, never fatal."""
        path = self.params_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{path}: cannot read ({exc})") from None
        try:
            return decode(data, str(path))
        except StateError as exc:
            aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, aside)
            log.error("%s; moved aside to %s, starting from defaults", exc, aside.name)
            return None

    def save_params(self, values: Mapping[str, float | str]) -> None:
        atomic_write(self.params_path, encode(values, "params"))

    # -- snapshots ------------------------------------------------------------------------
    def snapshot_path(self, name: str) -> Path:
        if not isinstance(name, str) or not _SNAPSHOT_NAME.match(name):
            raise StateError(
                f"snapshot name {name!r}: 1 to 64 letters, digits, space, '_', '.', '+', '-', "
                "starting with a letter or digit"
            )
        return self.dir / SNAPSHOT_DIR / f"{name}.json"

    def save_snapshot(self, name: str, values: Mapping[str, float | str]) -> Path:
        path = self.snapshot_path(name)
        atomic_write(path, encode(values, "snapshot"))
        return path

    def load_snapshot(self, name: str) -> dict[str, float | str]:
        path = self.snapshot_path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StateError(f"no snapshot named {name!r}") from None
        except OSError as exc:
            raise StateError(f"{path}: cannot read ({exc})") from None
        return decode(data, str(path))

    def list_snapshots(self) -> list[str]:
        folder = self.dir / SNAPSHOT_DIR
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if _SNAPSHOT_NAME.match(p.stem))

    def delete_snapshot(self, name: str) -> bool:
        path = self.snapshot_path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True


@dataclass
class _SceneFade:
    """A scene recall in progress: (param, start and end positions 0..1, end value)."""

    source: str
    started: float
    duration_s: float
    moves: list[tuple[Param, float, float, float]] = field(default_factory=list)


class StateKeeper:
    """Saves every parameter value, debounced, and restores them.

    ``hub`` is a :class:`studiod.controllers.hub.ControlHub`. The hub listener only notes
    the time (it runs on whichever thread made the change); :meth:`service`, called from
    the daemon's control loop, does the file I/O. ``apply(values, source)`` applies a value
    set (default ``hub.apply``; the daemon passes one that waits out a full queue).
    """

    def __init__(
        self,
        hub,
        store: StateStore,
        save_delay_s: float = 1.0,
        max_delay_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        apply: Callable[[Mapping, object], list[str]] | None = None,
    ):
        self.hub = hub
        self._apply = apply or hub.apply
        self.store = store
        self.save_delay_s = save_delay_s
        self.max_delay_s = max_delay_s
        self._clock = clock
        self._first_change: float | None = None
        self._last_change = 0.0
        self._lock = threading.Lock()  # one writer at a time (service, flush, snapshots)
        self.saves = 0
        self.last_error: str | None = None
        self._token = hub.subscribe(self._on_change)
        self._fade: _SceneFade | None = None

    def _on_change(self, change) -> None:
        if change.source == "state":
            return  # the values just read from the file
        now = self._clock()
        if self._first_change is None:
            self._first_change = now
        self._last_change = now

    def _migrated(self, values: dict, where: str) -> dict:
        values, renamed = migrate_values(values, self.hub.registry)
        if renamed:
            log.warning(describe_renames(where, renamed))
        return values

    @property
    def dirty(self) -> bool:
        return self._first_change is not None

    def restore(self) -> tuple[int, list[str]]:
        """Apply the saved values through the hub; returns (values applied, refusals).
        Addresses the current session does not have are skipped (a changed config)."""
        values = self.store.load_params()
        if not values:
            return 0, []
        values = self._migrated(values, str(self.store.params_path))
        known = {a: v for a, v in values.items() if a in self.hub.registry}
        errors = self._apply(known, "state")
        return len(known) - len(errors), errors

    def service(self) -> bool:
        """Move a scene fade on, and save if the debounce has run out; True when a file
        was written."""
        if self._fade is not None:
            self._fade_step()
        first = self._first_change
        if first is None:
            return False
        now = self._clock()
        if now - self._last_change < self.save_delay_s and now - first < self.max_delay_s:
            return False
        return self.flush()

    def flush(self) -> bool:
        """Save now if anything changed since the last save."""
        with self._lock:
            if self._first_change is None:
                return False
            # Clear first: a change that lands while we write marks it dirty again.
            self._first_change = None
            try:
                self.store.save_params(self.hub.snapshot())
            except OSError as exc:
                self._first_change = self._clock()
                if str(exc) != self.last_error:
                    log.error("saving parameter values failed: %s", exc)
                self.last_error = str(exc)
                return False
            self.last_error = None
            self.saves += 1
            return True

    def close(self) -> None:
        self.flush()
        self.hub.unsubscribe(self._token)

    # -- snapshots ------------------------------------------------------------------------
    def save_snapshot(self, name: str, include_monitor: bool = False) -> Path:
        skip = NOT_A_SCENE if include_monitor else (*NOT_A_SCENE, MONITOR_PREFIX)
        values = {a: v for a, v in self.hub.snapshot().items() if not a.startswith(skip)}
        with self._lock:
            return self.store.save_snapshot(name, values)

    def recall_snapshot(self, name: str, fade_s: float = 0.0) -> list[str]:
        """Apply a snapshot through the hub (source ``"snapshot:<name>"``); returns refusals.
        Values for addresses this session does not have are skipped.

        With ``fade_s`` > 0 the continuous values (levels, frequencies, times) travel from
        where they are to the scene's along their controls' tapers over ``fade_s``, a step
        every :meth:`service` call, as a console's scene crossfade moves its faders;
        switches and choices change at once. Without, every value changes at once (the
        engine smooths each change, so a recall is click-free either way). A recall stops
        a fade still running."""
        values = self._migrated(self.store.load_snapshot(name), f"snapshot {name!r}")
        source = f"snapshot:{name}"
        self._fade = None
        if fade_s <= 0.0:
            known = {a: v for a, v in values.items() if a in self.hub.registry}
            return self._apply(known, source)
        fade = _SceneFade(source, self._clock(), fade_s)
        at_once, errors = {}, []
        for address, value in values.items():
            if address not in self.hub.registry:
                continue
            param = self.hub.registry[address]
            try:
                number = param.validate(value)
            except ParamError as exc:
                errors.append(str(exc))
                continue
            if param.kind in (ENUM, TOGGLE):
                at_once[address] = number
            else:
                start = param.to_normalized(self.hub.get(address))
                fade.moves.append((param, start, param.to_normalized(number), number))
        errors += self._apply(at_once, source)
        self._fade = fade
        self._fade_step()
        return errors

    def _fade_step(self) -> None:
        fade = self._fade
        progress = min(1.0, (self._clock() - fade.started) / fade.duration_s)
        values = {
            param.address: (
                end_value if progress >= 1.0
                else param.from_normalized(start + (end - start) * progress)
            )
            for param, start, end, end_value in fade.moves
        }  # fmt: skip
        if progress >= 1.0:
            self._fade = None
        for line in self._apply(values, fade.source):
            log.warning("%s: %s", fade.source, line)

    @property
    def fading(self) -> bool:
        return self._fade is not None
