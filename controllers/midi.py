"""MIDI control surfaces on real ports: matching, hot-plug, input, rate-limited feedback.

Parsing is separate from transport. :class:`MidiParser` turns any byte stream into
messages (running status, real-time bytes inside messages, bounded SysEx, garbage skipped).
A backend lists and opens ports: :class:`RtMidiBackend` (python-rtmidi on ALSA or JACK) or
:class:`MemoryBackend` (in-memory ports for tests and benchmarks). :class:`MidiManager`
ties them to the :class:`~studiod.controllers.hub.ControlHub`:

* every ``poll_interval_s`` it lists the ports (rtmidi has no disconnect event), opens the
  ones a profile's ``port`` pattern matches, closes the ones that vanished and reopens them
  when they come back, restoring the surface's LEDs and motor faders;
* a port's input callback only parses, translates (:meth:`Surface.handle`) and enqueues;
  one dispatcher thread applies the queue through ``hub.set`` (a burst of fader messages for
  one address collapses to the latest value);
* a hub listener marks what changed; one service thread sends the feedback at the
  profile's ``feedback_hz`` within its ``max_bytes_per_s`` budget, and meters.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import mido

from studiod.controllers.commands import CommandError
from studiod.controllers.mapping import (
    Intent,
    Profile,
    Surface,
    apply_intent,
    load_profiles,
    meter_level,
)
from studiod.dsp.registry import ParamError

log = logging.getLogger("studiod.midi")

CLIENT_NAME = "studiod"
POLL_INTERVAL_S = 0.5  # a device that comes back is reopened within two polls (< 2 s)
MAX_SYSEX_BYTES = 8192  # longer SysEx (a flood, a firmware dump) is dropped, not buffered
QUEUE_SIZE = 8192
_DATA_LENGTH = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
_COMMON_LENGTH = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0}


class MidiPortError(RuntimeError):
    """A port that cannot be listed or opened."""


# --- parsing --------------------------------------------------------------------------------
class MidiParser:
    """A MIDI 1.0 byte-stream parser that never gets stuck.

    Follows the MIDI 1.0 Detailed Specification: running status (data bytes after a complete
    channel message reuse its status), real-time bytes (0xF8…0xFF) may appear anywhere, even
    inside another message, without disturbing it; system common messages cancel running
    status; any status byte other than real-time ends a SysEx. Stray data bytes, undefined
    status bytes and SysEx longer than ``max_sysex`` are dropped and counted.
    """

    def __init__(self, max_sysex: int = MAX_SYSEX_BYTES):
        self.max_sysex = int(max_sysex)
        self._status = 0
        self._data: list[int] = []
        self._need = 0
        self._sysex: list[int] | None = None
        self._overflow = False
        self.messages = 0
        self.dropped = 0  # bytes thrown away

    def reset(self) -> None:
        self._status, self._data, self._need, self._sysex = 0, [], 0, None

    def feed(self, data: Iterable[int]) -> list[mido.Message]:
        """Parse more bytes; returns the messages they complete."""
        out: list[mido.Message] = []
        for byte in data:
            byte = int(byte) & 0xFF
            if byte >= 0xF8:
                if byte not in (0xF9, 0xFD):  # undefined real-time bytes are ignored
                    self._emit(out, [byte])
                continue
            if byte == 0xF0:
                self._abort_sysex()
                self._sysex, self._overflow, self._status = [0xF0], False, 0
                continue
            if byte == 0xF7:
                if self._sysex is not None and not self._overflow:
                    self._sysex.append(0xF7)
                    self._emit(out, self._sysex)
                elif self._sysex is None:
                    self.dropped += 1
                self._sysex = None
                continue
            if byte >= 0x80:
                self._abort_sysex()
                self._data = []
                if byte < 0xF0:
                    self._status, self._need = byte, _DATA_LENGTH[byte & 0xF0]
                elif byte in _COMMON_LENGTH:
                    self._status, self._need = byte, _COMMON_LENGTH[byte]
                    if self._need == 0:
                        self._emit(out, [byte])
                        self._status = 0
                else:  # 0xF4, 0xF5: undefined
                    self._status = 0
                    self.dropped += 1
                continue
            if self._sysex is not None:
                if len(self._sysex) < self.max_sysex:
                    self._sysex.append(byte)
                else:
                    self._overflow = True
                    self.dropped += 1
                continue
            if not self._status:
                self.dropped += 1
                continue
            self._data.append(byte)
            if len(self._data) == self._need:
                self._emit(out, [self._status, *self._data])
                self._data = []
                if self._status >= 0xF0:  # system common: no running status
                    self._status = 0
        return out

    def _abort_sysex(self) -> None:
        if self._sysex is not None:
            self.dropped += len(self._sysex)
            self._sysex = None

    def _emit(self, out: list, data: list[int]) -> None:
        try:
            out.append(mido.Message.from_bytes(data))
            self.messages += 1
        except (ValueError, TypeError):
            self.dropped += len(data)


# --- backends -------------------------------------------------------------------------------
InputCallback = Callable[[list[int], float], None]

# JACK MIDI input is drained by a thread this often. With a callback, rtmidi would call into
# Python from the JACK client's process thread, which then waits for the GIL: a busy control
# thread makes that client late and JACK reports an xrun to the whole graph (the audio too).
JACK_DRAIN_S = 0.001


class RtMidiBackend:
    """Ports through python-rtmidi: ``api`` is "alsa", "jack" or None (the platform default).

    Port names are rtmidi's (ALSA: "client:port 20:0", JACK: "client:port"). Ports whose
    client name starts with ``client_name`` are our own and never matched.
    """

    def __init__(self, api: str | int | None = None, client_name: str = CLIENT_NAME):
        import rtmidi

        self._rtmidi = rtmidi
        apis = {None: rtmidi.API_UNSPECIFIED, "alsa": rtmidi.API_LINUX_ALSA,
                "jack": rtmidi.API_UNIX_JACK}  # fmt: skip
        self.api = apis[api] if not isinstance(api, int) else api
        self.client_name = client_name
        self._drain: _Drain | None = None
        self._scan_in = self._scan_out = self._jack_ports = None
        try:
            if self.api == rtmidi.API_UNIX_JACK:
                # rtmidi's clients are activated: each would be woken every JACK cycle
                self._jack_ports = _JackPorts(f"{client_name}-scan")
            else:
                self._scan_in = rtmidi.MidiIn(self.api, name=f"{client_name}-scan")
                self._scan_out = rtmidi.MidiOut(self.api, name=f"{client_name}-scan")
        except (rtmidi.RtMidiError, OSError) as exc:
            raise MidiPortError(f"MIDI unavailable ({exc})") from None

    def is_own(self, port_name: str) -> bool:
        return port_name.lower().startswith(self.client_name.lower())

    def input_ports(self) -> list[str]:
        if self._jack_ports is not None:
            ports = self._jack_ports.list(sources=True)
        else:
            ports = self._scan_in.get_ports()
        return [p for p in ports if not self.is_own(p)]

    def output_ports(self) -> list[str]:
        if self._jack_ports is not None:
            ports = self._jack_ports.list(sources=False)
        else:
            ports = self._scan_out.get_ports()
        return [p for p in ports if not self.is_own(p)]

    def open_input(self, port_name: str, callback: InputCallback, label: str = "in"):
        rtmidi = self._rtmidi
        try:
            midi_in = rtmidi.MidiIn(self.api, name=self.client_name)
            ports = midi_in.get_ports()
            if port_name not in ports:
                midi_in.delete()
                raise MidiPortError(f"input port {port_name!r} is gone")
            # SysEx is not used on input and active sensing / clock only cost CPU
            midi_in.ignore_types(sysex=True, timing=True, active_sense=True)
            jack = midi_in.get_current_api() == rtmidi.API_UNIX_JACK
            if not jack:  # ALSA: rtmidi's own input thread calls us
                midi_in.set_callback(lambda event, _data: callback(event[0], time.monotonic()))
            midi_in.open_port(ports.index(port_name), name=label)
        except rtmidi.RtMidiError as exc:
            raise MidiPortError(f"cannot open input {port_name!r}: {exc}") from None
        handle = _RtHandle(midi_in)
        if jack:
            if self._drain is None:
                self._drain = _Drain()
            self._drain.add(handle, callback)
        return handle

    def open_output(self, port_name: str, label: str = "out"):
        rtmidi = self._rtmidi
        try:
            midi_out = rtmidi.MidiOut(self.api, name=self.client_name)
            ports = midi_out.get_ports()
            if port_name not in ports:
                midi_out.delete()
                raise MidiPortError(f"output port {port_name!r} is gone")
            midi_out.open_port(ports.index(port_name), name=label)
        except rtmidi.RtMidiError as exc:
            raise MidiPortError(f"cannot open output {port_name!r}: {exc}") from None
        return _RtHandle(midi_out)

    def close(self) -> None:
        if self._drain is not None:
            self._drain.stop()
        if self._jack_ports is not None:
            self._jack_ports.close()
        for m in (self._scan_in, self._scan_out):
            if m is not None:
                m.delete()


class _RtHandle:
    def __init__(self, midi):
        self._midi = midi
        self._lock = threading.Lock()

    def pending(self) -> list[list[int]]:
        """The messages rtmidi has queued (input opened without a callback)."""
        messages = []
        with self._lock:
            while not self._midi.is_deleted:
                event = self._midi.get_message()
                if event is None:
                    break
                messages.append(event[0])
        return messages

    @property
    def closed(self) -> bool:
        return self._midi.is_deleted

    def send(self, data) -> None:
        with self._lock:
            if not self._midi.is_deleted:
                self._midi.send_message(list(data))

    def close(self) -> None:
        with self._lock:
            if self._midi.is_deleted:
                return
            if hasattr(self._midi, "cancel_callback"):
                try:
                    self._midi.cancel_callback()
                except Exception:  # no callback set
                    pass
            self._midi.close_port()
            self._midi.delete()


class _JackPorts:
    """JACK's MIDI ports, listed by a client that is opened but never activated (so JACK
    never wakes it), as rtmidi names them: "client:port"."""

    _NO_START_SERVER = 0x01  # jack/types.h JackOptions
    _IS_INPUT, _IS_OUTPUT = 0x1, 0x2  # JackPortFlags
    _MIDI_TYPE = b"8 bit raw midi"  # JACK_DEFAULT_MIDI_TYPE

    def __init__(self, client_name: str):
        import ctypes
        import ctypes.util

        self._ctypes = ctypes
        lib = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
        p, c = ctypes.c_void_p, ctypes.c_char_p
        lib.jack_client_open.restype = p
        lib.jack_client_open.argtypes = [c, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.jack_client_close.argtypes = [p]
        lib.jack_get_ports.restype = ctypes.POINTER(c)
        lib.jack_get_ports.argtypes = [p, c, c, ctypes.c_ulong]
        lib.jack_free.argtypes = [p]
        lib.jack_on_shutdown.argtypes = [p, p, p]
        libc = ctypes.CDLL(None, use_errno=True)
        libc.sem_init.argtypes = [p, ctypes.c_int, ctypes.c_uint]
        libc.sem_trywait.argtypes = [p]
        self._lib, self._libc = lib, libc
        # JACK's notification thread reports a server that went away by calling sem_post on
        # this semaphore: C calling C. A Python callback there is cancelled by
        # jack_client_close (pthread_cancel) while it may wait for the GIL, which can leave
        # the interpreter's lock held for ever. 64 aligned bytes hold any libc's sem_t.
        self._gone = (ctypes.c_uint64 * 8)()
        if libc.sem_init(self._gone, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "sem_init failed")
        self._sem_post = ctypes.cast(libc.sem_post, p).value
        self._name = client_name.encode()
        self._client = None
        self._lock = threading.Lock()
        if not self._open():
            raise OSError("no JACK server")

    def _open(self) -> bool:
        while self._libc.sem_trywait(self._gone) == 0:
            pass  # a shutdown of the previous client, already acted on
        status = self._ctypes.c_int(0)
        self._client = self._lib.jack_client_open(
            self._name, self._NO_START_SERVER, self._ctypes.byref(status)
        )
        if self._client:
            self._lib.jack_on_shutdown(self._client, self._sem_post, self._gone)
        return bool(self._client)

    def list(self, sources: bool) -> list[str]:
        """Ports that send MIDI (``sources``: for our inputs) or receive it."""
        with self._lock:
            if self._client and self._libc.sem_trywait(self._gone) == 0:
                self._lib.jack_client_close(self._client)  # the server went away
                self._client = None
            if not self._client and not self._open():
                return []  # no server; asked again at the next scan
            flags = self._IS_OUTPUT if sources else self._IS_INPUT
            names = self._lib.jack_get_ports(self._client, None, self._MIDI_TYPE, flags)
            if not names:
                return []
            found = []
            k = 0
            while names[k]:
                found.append(names[k].decode(errors="replace"))
                k += 1
            self._lib.jack_free(self._ctypes.cast(names, self._ctypes.c_void_p))
            return found

    def close(self) -> None:
        with self._lock:
            if self._client:
                self._lib.jack_client_close(self._client)
                self._client = None


class _Drain:
    """A thread that hands queued JACK MIDI input to its callbacks every ``JACK_DRAIN_S``."""

    def __init__(self):
        self._inputs: list[tuple[_RtHandle, InputCallback]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="studiod-midi-drain", daemon=True)
        self._thread.start()

    def add(self, handle: _RtHandle, callback: InputCallback) -> None:
        with self._lock:
            self._inputs.append((handle, callback))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(JACK_DRAIN_S):
            with self._lock:
                self._inputs = [(h, cb) for h, cb in self._inputs if not h.closed]
                inputs = list(self._inputs)
            for handle, callback in inputs:
                for message in handle.pending():
                    try:
                        callback(message, time.monotonic())
                    except Exception:  # one bad message must not stop the controller
                        log.exception("midi: input callback failed")


class MemoryBackend:
    """In-memory ports: ``add_device(name)`` plugs a fake controller in, ``remove_device``
    unplugs it. A :class:`FakeDevice` sends bytes to whoever opened its input port and
    records what was sent to its output port."""

    def __init__(self):
        self.devices: dict[str, FakeDevice] = {}
        self.lock = threading.Lock()

    def add_device(self, name: str, has_output: bool = True) -> FakeDevice:
        with self.lock:
            device = FakeDevice(name, has_output)
            self.devices[name] = device
            return device

    def remove_device(self, name: str) -> None:
        with self.lock:
            device = self.devices.pop(name, None)
        if device is not None:
            device.unplugged = True

    def is_own(self, port_name: str) -> bool:
        return False

    def input_ports(self) -> list[str]:
        with self.lock:
            return list(self.devices)

    def output_ports(self) -> list[str]:
        with self.lock:
            return [n for n, d in self.devices.items() if d.has_output]

    def open_input(self, port_name: str, callback: InputCallback, label: str = "in"):
        with self.lock:
            device = self.devices.get(port_name)
            if device is None:
                raise MidiPortError(f"input port {port_name!r} is gone")
            device.listeners.append(callback)
        return _MemoryInput(device, callback)

    def open_output(self, port_name: str, label: str = "out"):
        with self.lock:
            device = self.devices.get(port_name)
            if device is None or not device.has_output:
                raise MidiPortError(f"output port {port_name!r} is gone")
        return _MemoryOutput(device)

    def close(self) -> None:
        pass


@dataclass
class FakeDevice:
    """A controller in memory: ``send`` is a control moving, ``received`` what it was sent."""

    name: str
    has_output: bool = True
    listeners: list = field(default_factory=list)
    received: list = field(default_factory=list)
    unplugged: bool = False

    def send(self, data) -> None:
        if self.unplugged:
            return
        for callback in list(self.listeners):
            callback(list(data), time.monotonic())

    def take(self) -> list[tuple[int, ...]]:
        out, self.received = self.received, []
        return out


class _MemoryInput:
    def __init__(self, device: FakeDevice, callback):
        self._device, self._callback = device, callback

    def close(self) -> None:
        if self._callback in self._device.listeners:
            self._device.listeners.remove(self._callback)


class _MemoryOutput:
    def __init__(self, device: FakeDevice):
        self._device = device

    def send(self, data) -> None:
        if self._device.unplugged:
            raise MidiPortError(f"{self._device.name} is unplugged")
        self._device.received.append(tuple(data))

    def close(self) -> None:
        pass


# --- the manager ------------------------------------------------------------------------------
@dataclass
class _Connection:
    port: str
    surface: Surface
    profile: Profile
    parser: MidiParser
    inp: object
    out: object | None = None
    out_port: str = ""
    next_feedback: float = 0.0
    next_meter: float = 0.0
    meter_hold: list = field(default_factory=list)
    alive: bool = True


@dataclass
class MidiStats:
    received: int = 0  # raw input events
    messages: int = 0  # decoded messages
    intents: int = 0
    applied: int = 0
    dropped: int = 0  # intents lost to a full queue (ours or the engine's)
    refused: int = 0  # values the registry refused
    errors: int = 0
    feedback_messages: int = 0
    feedback_bytes: int = 0
    connects: int = 0
    disconnects: int = 0


class MidiManager:
    """All MIDI surfaces of one daemon: ports, threads, hub listener.

    ``profiles`` defaults to the shipped and user profiles; ``backend`` to rtmidi with the
    platform's default API. ``start()`` runs the threads; tests may instead call
    ``poll_ports()``, ``drain()`` and ``service()`` themselves.
    """

    def __init__(
        self,
        hub,
        profiles: list[Profile] | None = None,
        backend=None,
        *,
        poll_interval_s: float = POLL_INTERVAL_S,
        queue_size: int = QUEUE_SIZE,
        meter_source: Callable[[], list[float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.hub = hub
        self.profiles = list(load_profiles() if profiles is None else profiles)
        self.backend = backend if backend is not None else RtMidiBackend()
        self.poll_interval_s = float(poll_interval_s)
        self.clock = clock
        self.meter_source = meter_source or self._engine_channel_peaks
        self.stats = MidiStats()
        self._queue: queue.Queue[Intent] = queue.Queue(maxsize=queue_size)
        self._conns: dict[str, _Connection] = {}
        self._lost: dict[str, Surface] = {}  # surfaces of unplugged ports, for their state
        self._conns_lock = threading.RLock()
        self._raw_listeners: list[Callable[[str, mido.Message], None]] = []
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []
        self._token = hub.subscribe(self._on_change)
        self._said: dict[str, float] = {}

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._running.is_set():
            return
        self._running.set()
        for name, target in (("midi-dispatch", self._dispatch_loop),
                             ("midi-service", self._service_loop)):  # fmt: skip
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._running.clear()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._threads.clear()
        self.hub.unsubscribe(self._token)
        with self._conns_lock:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._conns.clear()

    def __enter__(self) -> MidiManager:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def surfaces(self) -> list[Surface]:
        with self._conns_lock:
            return [c.surface for c in self._conns.values()]

    def surface(self, port_or_name: str) -> Surface | None:
        for conn in list(self._conns.values()):
            if port_or_name in (conn.port, conn.surface.name):
                return conn.surface
        return None

    def add_raw_listener(self, listener: Callable[[str, mido.Message], None]) -> None:
        """Also receive every decoded message with its port name (MIDI learn)."""
        self._raw_listeners.append(listener)

    def remove_raw_listener(self, listener) -> None:
        if listener in self._raw_listeners:
            self._raw_listeners.remove(listener)

    # -- ports -------------------------------------------------------------------------------
    def match(self, port_name: str) -> Profile | None:
        """The profile for a port: the highest priority among those whose pattern matches."""
        candidates = [p for p in self.profiles if p.matches_input(port_name)]
        if not candidates:
            return None
        return max(candidates, key=lambda p: p.priority)

    def poll_ports(self) -> None:
        """Open new matching ports, close vanished ones, reopen outputs that came back."""
        try:
            inputs = self.backend.input_ports()
            outputs = self.backend.output_ports()
        except Exception as exc:  # JACK server gone, ALSA sequencer missing…
            self._say("list", f"cannot list MIDI ports: {exc}")
            return
        with self._conns_lock:
            for port, conn in list(self._conns.items()):
                if port not in inputs:
                    log.info("MIDI %s: %s unplugged", conn.surface.name, port)
                    self._close(conn)
                    del self._conns[port]
                    self._lost[port] = conn.surface
                    self.stats.disconnects += 1
                elif conn.out is not None and conn.out_port not in outputs:
                    self._close_output(conn)
                elif conn.out is None:
                    self._open_output(conn, outputs)
            used_outputs = {c.out_port for c in self._conns.values()}
            for port in inputs:
                if port in self._conns:
                    continue
                profile = self.match(port)
                if profile is None:
                    continue
                self._connect(port, profile, [o for o in outputs if o not in used_outputs])
                if port in self._conns:
                    used_outputs.add(self._conns[port].out_port)

    def _connect(self, port: str, profile: Profile, outputs: list[str]) -> None:
        surface = self._lost.pop(port, None)
        if surface is None or surface.profile is not profile:
            names = {c.surface.name for c in self._conns.values()}
            name, k = profile.name, 1
            while name in names:
                k += 1
                name = f"{profile.name} #{k}"
            surface = Surface(profile, self.hub, name=name)
        conn = _Connection(port, surface, profile, MidiParser(), None)
        try:
            conn.inp = self.backend.open_input(
                port, lambda data, now, c=conn: self._on_input(c, data, now), label=profile.id
            )
        except MidiPortError as exc:
            self._lost[port] = surface
            self._say(f"open {port}", str(exc))
            return
        self._conns[port] = conn
        self.stats.connects += 1
        log.info("MIDI %s: connected on %s (profile %s)", surface.name, port, profile.id)
        self._open_output(conn, outputs)

    def _open_output(self, conn: _Connection, outputs: list[str]) -> None:
        candidates = [o for o in outputs if conn.profile.matches_output(o)]
        if not candidates:
            return
        # the output that shares the longest prefix with the input: the same device
        best = max(candidates, key=lambda o: (o == conn.port, _common_prefix(o, conn.port)))
        try:
            conn.out = self.backend.open_output(best, label=conn.profile.id)
        except MidiPortError as exc:
            self._say(f"open {best}", str(exc))
            return
        conn.out_port = best
        conn.surface.reset_outputs()
        conn.next_feedback = 0.0
        for message in conn.profile.init:
            self._send(conn, message)

    def _close_output(self, conn: _Connection) -> None:
        out, conn.out, conn.out_port = conn.out, None, ""
        if out is not None:
            try:
                out.close()
            except Exception as exc:
                self._say("close", f"closing {conn.port}: {exc}")

    def _close(self, conn: _Connection) -> None:
        conn.alive = False
        if conn.inp is not None:
            try:
                conn.inp.close()
            except Exception as exc:
                self._say("close", f"closing {conn.port}: {exc}")
        self._close_output(conn)

    # -- input (port callback threads) ---------------------------------------------------------
    def _on_input(self, conn: _Connection, data: list[int], now: float) -> None:
        """Parse, translate, enqueue; never raises into the MIDI library's thread."""
        if not conn.alive:
            return
        self.stats.received += 1
        try:
            for msg in conn.parser.feed(data):
                self.stats.messages += 1
                for listener in list(self._raw_listeners):
                    listener(conn.port, msg)
                for intent in conn.surface.handle(msg, now):
                    self.stats.intents += 1
                    try:
                        self._queue.put_nowait(intent)
                    except queue.Full:
                        self.stats.dropped += 1
            if conn.surface.loopback:
                self._say(f"loop {conn.port}", f"MIDI loop on {conn.port}: echoes are dropped")
        except Exception as exc:  # a bug must not kill the port
            self.stats.errors += 1
            self._say(f"input {conn.port}", f"MIDI input from {conn.port}: {exc!r}")

    # -- dispatch (one thread) --------------------------------------------------------------------
    def drain(self, max_items: int | None = None) -> int:
        """Apply the queued intents (all, or at most ``max_items``) through the hub; returns
        how many hub changes that made."""
        batch: list[Intent] = []
        limit = self._queue.maxsize if max_items is None else max_items
        try:
            while len(batch) < limit:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return self._apply(batch)

    def _apply(self, batch: list[Intent]) -> int:
        # A later "set" of an address makes everything before it for that address moot.
        kept: list[Intent] = []
        overridden: set[str] = set()
        for intent in reversed(batch):
            if intent.address in overridden:
                continue
            if intent.kind == "set":
                overridden.add(intent.address)
            kept.append(intent)
        applied = 0
        for intent in reversed(kept):
            try:
                apply_intent(self.hub, intent)
                applied += 1
            except (ParamError, CommandError) as exc:
                self.stats.refused += 1
                self._say(f"refused {intent.address}", f"MIDI: {exc}")
            except Exception as exc:  # engine.QueueFull: the audio thread is behind
                self.stats.dropped += 1
                self._say("apply", f"MIDI change to {intent.address} dropped: {exc}")
        self.stats.applied += applied
        return applied

    def _dispatch_loop(self) -> None:
        while self._running.is_set():
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            try:
                while len(batch) < 4096:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            self._apply(batch)

    # -- changes from anywhere (hub listener: record only) -----------------------------------------
    def _on_change(self, change) -> None:
        for conn in list(self._conns.values()):
            conn.surface.on_change(change)

    # -- feedback and ports (one thread) ----------------------------------------------------------
    def service(self, now: float | None = None, force: bool = False) -> int:
        """Send due feedback and meters; returns the number of messages sent."""
        now = self.clock() if now is None else now
        sent = 0
        peaks = None
        with self._conns_lock:
            conns = list(self._conns.values())
        for conn in conns:
            if conn.out is None:
                continue
            profile = conn.profile
            if force or now >= conn.next_feedback:
                conn.next_feedback = now + 1.0 / profile.feedback_hz
                budget = max(16, int(profile.max_bytes_per_s / profile.feedback_hz))
                for message in conn.surface.collect_feedback(now, budget):
                    sent += self._send(conn, message)
            meters = profile.meters
            if meters is not None:
                if peaks is None:
                    peaks = self._peaks()
                sent += self._meters(conn, peaks, now, force)
        return sent

    def _meters(self, conn: _Connection, peaks: list[float], now: float, force: bool) -> int:
        """Mackie Control meters: hold the maximum between sends; a strip whose level is
        above zero is refreshed every send (the device lets its meters fall by itself)."""
        meters = conn.profile.meters
        surface = conn.surface
        cells = conn.profile.bank_size
        if len(conn.meter_hold) != cells:
            conn.meter_hold = [0.0] * cells
        for k in range(cells):
            channel = surface.bank_offset + k
            peak = peaks[channel] if channel < len(peaks) else 0.0
            conn.meter_hold[k] = max(conn.meter_hold[k], peak)
        if not force and now < conn.next_meter:
            return 0
        conn.next_meter = now + 1.0 / meters.rate_hz
        sent = 0
        for k in range(min(cells, 8)):
            level = meter_level(conn.meter_hold[k], meters.levels, meters.floor_db)
            conn.meter_hold[k] = 0.0
            if level > 0 or force:
                sent += self._send(conn, (0xD0 | meters.channel, (k << 4) | level))
        return sent

    def _peaks(self) -> list[float]:
        try:
            return list(self.meter_source())
        except Exception:
            return []

    def _engine_channel_peaks(self) -> list[float]:
        """Per-channel block peaks from the engine (the larger lane of a stereo channel)."""
        return [float(p) for p in self.hub.engine.channel_peaks()]

    def _send(self, conn: _Connection, message) -> int:
        out = conn.out
        if out is None:
            return 0
        try:
            out.send(message)
        except Exception as exc:
            self._say(f"send {conn.port}", f"MIDI output to {conn.out_port}: {exc}")
            return 0
        self.stats.feedback_messages += 1
        self.stats.feedback_bytes += len(message)
        return 1

    def _service_loop(self) -> None:
        next_poll = 0.0
        while self._running.is_set():
            now = self.clock()
            if now >= next_poll:
                next_poll = now + self.poll_interval_s
                self.poll_ports()
            try:
                self.service(now)
            except Exception as exc:
                self.stats.errors += 1
                self._say("service", f"MIDI feedback: {exc!r}")
            rates = [c.profile.feedback_hz for c in list(self._conns.values())]
            time.sleep(1.0 / max([*rates, 30.0]))

    def _say(self, key: str, message: str) -> None:
        """Log a warning at most once per second per key (a flood must not flood the log)."""
        now = time.monotonic()
        if now - self._said.get(key, -10.0) >= 1.0:
            self._said[key] = now
            log.warning(message)


def manager_from_config(hub, midi: dict | None = None, backend=None) -> MidiManager:
    """A MidiManager from the daemon config's ``[midi]`` table: ``api`` ("alsa"/"jack"),
    ``profile_dir`` (user profiles), ``profiles`` (ids to use; default all), ``poll_s``."""
    from pathlib import Path

    midi = dict(midi or {})
    unknown = set(midi) - {"api", "profile_dir", "profiles", "poll_s"}
    if unknown:
        raise ValueError(f"[midi]: unknown key(s) {sorted(unknown)}")
    folder = Path(midi["profile_dir"]) if midi.get("profile_dir") else None
    profiles = load_profiles(folder)
    wanted = midi.get("profiles")
    if wanted is not None:
        known = {p.id for p in profiles}
        missing = [w for w in wanted if w not in known]
        if missing:
            raise ValueError(f"[midi] profiles: unknown {missing}; known: {sorted(known)}")
        profiles = [p for p in profiles if p.id in wanted]
    if backend is None:
        backend = RtMidiBackend(api=midi.get("api"))
    return MidiManager(hub, profiles, backend,
                       poll_interval_s=float(midi.get("poll_s", POLL_INTERVAL_S)))  # fmt: skip


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def describe_port_match(profiles: list[Profile], ports: list[str]) -> list[tuple[str, str]]:
    """(port, profile id or "") for each port: what ``studiod devices`` shows."""
    out = []
    for port in ports:
        candidates = [p for p in profiles if p.matches_input(port)]
        best = max(candidates, key=lambda p: p.priority) if candidates else None
        out.append((port, best.id if best else ""))
    return out


def port_pattern(port_name: str) -> str:
    """A pattern that matches this port again after a replug (ALSA client:port numbers and
    JACK's a2j bracketed ids stripped)."""
    base = re.sub(r"\s+\d+:\d+$", "", port_name)
    base = re.sub(r"\s*\[\d+\]", "", base)
    return re.escape(base.split(":", 1)[-1].strip() or base)
