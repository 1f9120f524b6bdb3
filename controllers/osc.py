"""The OSC API: UDP (and TCP with OSC 1.1 SLIP framing) in front of the control hub.

Address space = the parameter registry, exactly: ``/ch/1/fader f -6.0`` sets a value,
``/ch/1/fader`` with no argument is a query answered to the sender on the same address.
Floats take ``i``/``f``/``d``/``h`` and answer ``f``; toggles take ``i``/``f``/``T``/``F``
(0 or 1) and answer ``i``; enums take a choice name ``s`` or an index ``i`` and answer ``s``.
OSC 1.0 address patterns (``?``, ``*``, ``[a-z]``, ``[!0-9]``, ``{a,b}``) set or query every
matching parameter, and bundles are honoured, including future time tags (scheduled, up to
``MAX_SCHEDULE_S`` ahead).

Hostile input is bounded (issue 12): a pattern is matched in time linear in its length
(:mod:`studiod.controllers.oscpattern`) and is at most 512 characters; bundles nest at most
``MAX_BUNDLE_DEPTH`` deep; each datagram has a work budget (``MAX_PACKET_STEPS``: its messages,
the matching and every parameter a pattern touches pay into it), and what is left of a
datagram that spends it is refused with one ``/error``. NaN and infinities are refused for
every kind of parameter. TCP clients get ``MAX_TCP_PER_HOST`` of the ``MAX_TCP_CLIENTS``
slots each, are closed after ``TCP_IDLE_TIMEOUT_S`` of silence unless subscribed, and a new
client takes the slot of the longest-idle connection when all are taken.

Protocol messages (not parameters):

``/subscribe [i ttl_s] [i port]``
    Receive every change made by anyone (coalesced per address, at most ``feedback_hz``
    updates per address per second) and the meter streams, for ``ttl_s`` seconds (default
    ``subscribe_ttl_s``, as Behringer X32's ``/xremote``: send it again to renew). Without a
    port, feedback goes to the sender's address and port. With a port, it goes to that port
    on the sender's host (never to another host), and that destination also becomes the
    host's reply port: answers to queries and ``/error`` replies for messages from that
    host go there while the subscription lives (Ardour's "manual reply port" mode). This
    lets senders that cannot receive, such as liblo's ``oscsend``, pair with a listener such
    as ``oscdump``. A change is never echoed to the exact endpoint that made it.
``/unsubscribe [i port]``
    End the subscription (of the sender, or of ``port`` on the sender's host).
``/meters/loudness`` (stream, or query with no argument)
    ``f momentary_lufs, f shortterm_lufs, f integrated_lufs, f true_peak_dbtp``.
``/meters/channels`` (stream, or query)
    ``f`` peak level in dBFS per channel strip, in session order.
``/meters/correlation`` (stream, or query)
    ``f`` the L/R correlation of what is heard over the last second, -1 to +1 (+1: mono
    compatible, below 0: out-of-phase content that cancels in mono); absent in silence.
``/meters/inputs`` (stream, or query)
    Gain staging, per channel strip in session order, before trim and fader: ``f`` peak
    dBFS (the last block's), ``f`` RMS dBFS (since the previous message), ``f`` that RMS
    against the reference level (``[alerts] reference_dbfs``, default -18 dBFS), ``i``
    clipped samples since start (at or above -0.1 dBFS).
``/meters/lra`` (stream, or query)
    ``f`` the loudness range (EBU Tech 3342, LU) of what is heard since the meters' reset.
``/meters/bus/NAME`` (stream, or query; NAME a bus of the loudness log: ``master`` and each
monitor system)
    ``f momentary_lufs, f shortterm_lufs, f integrated_lufs`` (of the open programme
    segment) ``, f true_peak_dbtp``, from the loudness log's reading of the last second.
``/meters/dose`` (stream, or query)
    ``s bus, f percent`` for each calibrated bus: today's noise dose (NIOSH, 85 dBA for
    8 h = 100 %).
``/alert s kind, s severity, s bus, s message`` (sent to subscribers)
    A live alert raised or cleared (severity ``clear``); see ``studiod.daemon.alerts``.
``/nudge s address, f delta`` / ``/step s address, i steps`` / ``/toggle s address``
    Relative changes, made by the hub from the current value (as MIDI encoders and
    buttons make them): ``delta`` is a fraction of the control's range along its taper
    (``/nudge s /ch/1/fader f 0.05``), ``steps`` moves an enum by choices.
Commands (``/snapshot/save s name``, ``/player/load s path`` …, the table in
:mod:`studiod.controllers.commands`)
    Carried out through the hub; their answer goes back to the sender on the command's
    address (``/snapshot/list`` answers ``s name ...``).
``/error s address, s reason``
    Sent to the sender for anything refused: unknown address, wrong type, out of range, NaN,
    malformed packet, rate limit. Logged once per client per second; never reaches the engine.

Meter values come from a ``meters_provider``: a callable with no arguments returning a
mapping with any of these keys (missing keys are simply not streamed)::

    "momentary_lufs", "shortterm_lufs", "integrated_lufs", "true_peak_dbtp": float
    "channel_peak_dbfs": sequence of float, one per channel strip
    "correlation": float from -1 to 1, or None
    "inputs": sequence of (peak_dbfs, rms_dbfs, re_reference_db, clips) per channel strip

Values below ``METER_FLOOR_DB`` or not finite (silence, an integrated loudness not yet
defined) are sent as ``METER_FLOOR_DB``, because many OSC surfaces cannot display -inf.

Threads. The UDP server runs in one thread (python-osc's parsers, our dispatch), so a
client's messages apply in the order sent; each TCP connection has its own thread. Those
threads only parse, validate and call :meth:`ControlHub.set`, which validates and enqueues
for the audio thread. One sender thread sends all feedback and meters at a bounded rate and
runs scheduled bundles. The hub listener only records the change in a dict (coalescing).
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import math
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pythonosc import osc_message, slip
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import ParseError
from pythonosc.parsing import osc_types

from studiod.controllers.commands import COMMANDS, CommandError
from studiod.controllers.hub import Change, ControlHub
from studiod.controllers.oscpattern import (
    AddressPattern,
    AddressTree,
    PatternTooComplex,
    WorkBudget,
    is_pattern,
)
from studiod.dsp.engine import QueueFull
from studiod.dsp.layout import describe_renames, renamed_address
from studiod.dsp.registry import ENUM, TOGGLE, Param, ParamError
from studiod.dsp.session import unknown_keys

log = logging.getLogger("studiod.osc")

DEFAULT_PORT = 9000
METER_FLOOR_DB = -144.0  # about the dynamic range of 24-bit PCM (6.02 dB * 24)
MAX_SCHEDULE_S = 60.0  # bundles further in the future are refused
MAX_SCHEDULED = 4096
MAX_PATTERN_MATCHES = 4096
# The work one datagram may cause, in oscpattern's steps (one token over one name position,
# about 0.1 µs on the x86 PC it was measured on; not measured on a Pi): each message, each
# parameter a pattern touches and the matching itself pay into one budget per datagram; the
# rest of a datagram that spends it is refused with one /error. Chosen so that the worst
# datagrams we could build stay within 10 ms (benchmarks/bench_hostile.py: 4.4 ms on that
# PC) while a bundle of up to 100 messages, or a pattern over a few hundred parameters, goes
# through.
MAX_PACKET_STEPS = 40_000
STEPS_PER_PARAM = 150
STEPS_PER_MESSAGE = 400  # parse one message and answer it (a value or an /error): ~40 µs
MAX_TCP_FRAME = 65536
MAX_BUNDLE_DEPTH = 8  # bundles in bundles: legitimate senders nest one or two deep
_BUNDLE_HEADER = b"#bundle\0"
MAX_TCP_CLIENTS = 16
# One host may hold half the TCP slots, so one misbehaving machine cannot fill them all.
MAX_TCP_PER_HOST = 8
# A TCP client that sends nothing for this long is closed, unless it is subscribed (then it
# is a listener, and lives as long as its subscription).
TCP_IDLE_TIMEOUT_S = 60.0
# When the slots are full, a new client takes the slot of the connection idle the longest
# (non-subscribers first), if that one has been idle at least this long.
TCP_EVICT_IDLE_S = 1.0
MAX_RATE_CLIENTS = 1024
ERROR_LOG_INTERVAL_S = 1.0
MAX_LOG_LINES_PER_S = 20  # refusals logged in all, whatever the number of client hosts
SEND_TIMEOUT_S = 0.5

# Type tags a parameter or protocol message may carry. python-osc parses a few more (blobs,
# MIDI, RGBA, arrays) and skips the ones it does not know; none of them means anything here.
_ACCEPTED_TAGS = frozenset("ifdhsTF")
ERROR_ADDRESS = "/error"
METERS_LOUDNESS = "/meters/loudness"
METERS_CHANNELS = "/meters/channels"
METERS_CORRELATION = "/meters/correlation"
METERS_INPUTS = "/meters/inputs"
METERS_LRA = "/meters/lra"
METERS_DOSE = "/meters/dose"
METERS_BUS = "/meters/bus/"  # + a loudness-log bus name
METERS_PREFIX = "/meters/"
METER_DESCRIPTIONS = {
    METERS_LOUDNESS: "what is heard: momentary, short-term, integrated LUFS and the last "
    "second's true peak dBTP (BS.1770-4)",
    METERS_LRA: "what is heard: loudness range, LU (EBU Tech 3342)",
    METERS_CHANNELS: "each channel strip's post-fader peak, dBFS",
    METERS_CORRELATION: "what is heard: L/R correlation of the last second, -1 to +1",
    METERS_INPUTS: "gain staging, per channel: peak dBFS, RMS dBFS, RMS re the reference "
    "level dB, clipped samples",
    METERS_BUS: "a loudness-log bus's last second: momentary, short-term, integrated LUFS "
    "(open programme segment), true peak dBTP",
    METERS_DOSE: "today's noise dose per calibrated bus: name, percent (NIOSH)",
}
# relative changes through the hub (as MIDI encoders and buttons make them): their usage
_RELATIVE = {
    "/nudge": "takes s address, f delta (a fraction of the control range)",
    "/step": "takes s address, i steps (enum choices, clamped)",
    "/toggle": "takes s address",
}
LOUDNESS_KEYS = ("momentary_lufs", "shortterm_lufs", "integrated_lufs", "true_peak_dbtp")

MetersProvider = Callable[[], Mapping[str, object]]


class Link(Protocol):
    """Where a client of another transport gets its messages: ``send`` one OSC packet
    without blocking, True if it was taken (dropping it when the client is behind)."""

    def send(self, dgram: bytes) -> bool: ...


@dataclass(frozen=True)
class OscConfig:
    """The ``[osc]`` config section.

    host: address to bind ("127.0.0.1" local only, "0.0.0.0" every IPv4 interface, "::" v6);
    port: UDP port; tcp/tcp_port: also a TCP listener with OSC 1.1 SLIP framing (its port
    defaults to the UDP port number); allow: client networks (CIDR) that may talk to us;
    rate_limit_hz/burst: per-client token bucket (messages per second, bucket size);
    feedback_hz: feedback ticks per second (each address at most once per tick);
    meter_hz: meter stream rate; subscribe_ttl_s/max_ttl_s: subscription lifetime;
    max_subscribers: concurrent subscriptions; oscquery_port: the HTTP server (OSCQuery,
    its WebSocket, the dashboard and /metrics; 0: none); password: what a WebSocket client
    must give before it may change anything (empty: no password; OSC over UDP/TCP has no
    way to give one, the allow-list guards it); http_max_connections: HTTP connections held
    at once (when more arrive, the longest-idle ones are closed); http_header_timeout_s: a
    connection's request head must arrive within this; http_idle_timeout_s: an idle
    keep-alive connection is closed after this.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tcp: bool = False
    tcp_port: int | None = None
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    rate_limit_hz: float = 2000.0
    burst: int = 500
    feedback_hz: float = 50.0
    meter_hz: float = 10.0
    subscribe_ttl_s: float = 10.0
    max_ttl_s: float = 3600.0
    max_subscribers: int = 32
    oscquery_port: int = 9001
    password: str = ""
    http_max_connections: int = 128
    http_header_timeout_s: float = 10.0
    http_idle_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        _check_port("port", self.port)
        if self.tcp_port is not None:
            _check_port("tcp_port", self.tcp_port)
        _check_port("oscquery_port", self.oscquery_port)
        for key, top in _FLOAT_BOUNDS.items():
            value = getattr(self, key)
            if not (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and 0 < value <= top
            ):
                raise ValueError(f"osc.{key}: must be a number in (0, {top:g}], not {value!r}")
        for key, top in _INT_BOUNDS.items():
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise ValueError(f"osc.{key}: must be an integer 1…{top}, not {value!r}")
        try:
            socket.getaddrinfo(self.host, None, proto=socket.IPPROTO_UDP)
        except (OSError, UnicodeError) as exc:
            raise ValueError(f"osc.host: {self.host!r} is not an address: {exc}") from None
        for net in self.allow:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"osc.allow: {exc}") from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> OscConfig:
        """From the parsed ``[osc]`` TOML table; errors name the key."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(unknown_keys("osc", unknown, known))
        values = dict(data)
        if "allow" in values:
            allow = values["allow"]
            if isinstance(allow, str):
                allow = [allow]
            if not isinstance(allow, list | tuple) or not all(isinstance(a, str) for a in allow):
                raise ValueError("osc.allow: must be a list of networks such as '192.168.1.0/24'")
            values["allow"] = tuple(allow)
        if "tcp" in values and not isinstance(values["tcp"], bool):
            raise ValueError(f"osc.tcp: must be true or false, not {values['tcp']!r}")
        for key in ("host", "password"):
            if key in values and not isinstance(values[key], str):
                raise ValueError(f"osc.{key}: must be a string, not {values[key]!r}")
        return cls(**values)


# Upper bounds of the [osc] numbers: beyond them a value is a typo, and some would cost
# memory or a busy thread (a 10 MHz feedback tick).
_FLOAT_BOUNDS = {
    "rate_limit_hz": 1e6,
    "feedback_hz": 1000.0,
    "meter_hz": 100.0,
    "subscribe_ttl_s": 86400.0,
    "max_ttl_s": 7 * 86400.0,
    "http_header_timeout_s": 3600.0,
    "http_idle_timeout_s": 86400.0,
}
_INT_BOUNDS = {"burst": 1_000_000, "max_subscribers": 1024, "http_max_connections": 65536}


def _check_port(key: str, port: object) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"osc.{key}: must be a port number 0…65535 (0: any), not {port!r}")


# -- pieces that do not need a socket ------------------------------------------------------
def osc_value(param: Param, value: float) -> int | float | str:
    """The OSC argument for an engine value: enum -> choice name, toggle -> int, else float."""
    if param.kind == ENUM:
        return param.choices[int(value)]
    if param.kind == TOGGLE:
        return int(value)
    return float(value)


def osc_type(param: Param) -> str:
    """The OSC type tag a parameter answers with (and that OSCQuery advertises)."""
    return {ENUM: "s", TOGGLE: "i"}.get(param.kind, "f")


def build_message(address: str, args: Iterable[object] = ()) -> bytes:
    """An OSC message datagram (python-osc's builder); floats as 32-bit ``f``."""
    builder = OscMessageBuilder(address)
    for arg in args:
        if isinstance(arg, bool):
            builder.add_arg(arg, OscMessageBuilder.ARG_TYPE_TRUE if arg else "F")
        elif isinstance(arg, int):
            builder.add_arg(arg, OscMessageBuilder.ARG_TYPE_INT)
        elif isinstance(arg, float):
            builder.add_arg(arg, OscMessageBuilder.ARG_TYPE_FLOAT)
        else:
            builder.add_arg(str(arg), OscMessageBuilder.ARG_TYPE_STRING)
    return builder.build().dgram


def meter_values(meters: Mapping[str, object] | None) -> dict[str, list]:
    """The meter streams' arguments by address, from a meters provider's mapping (see the
    module docstring for what each carries); a meter the mapping lacks is left out."""
    if not meters:
        return {}
    out: dict[str, list] = {}
    if all(k in meters for k in LOUDNESS_KEYS):
        out[METERS_LOUDNESS] = [meter_db(meters[k]) for k in LOUDNESS_KEYS]
    lra = meters.get("loudness_range_lu")
    if lra is not None and math.isfinite(lra):
        out[METERS_LRA] = [float(lra)]
    levels = meters.get("channel_peak_dbfs")
    if levels is not None and len(levels) > 0:
        out[METERS_CHANNELS] = [meter_db(v) for v in levels]
    inputs = meters.get("inputs")
    if inputs:
        values = []
        for peak_dbfs, rms_dbfs, re_reference_db, clips in inputs:
            re_ref = float(re_reference_db) if math.isfinite(re_reference_db) else None
            values += [meter_db(peak_dbfs), meter_db(rms_dbfs)]
            values += [METER_FLOOR_DB if re_ref is None else re_ref, int(clips)]
        out[METERS_INPUTS] = values
    corr = meters.get("correlation")
    if corr is not None and math.isfinite(corr):
        out[METERS_CORRELATION] = [float(corr)]
    for bus, reading in (meters.get("buses") or {}).items():
        out[METERS_BUS + bus] = [meter_db(v) for v in reading]
    dose = meters.get("dose")
    if dose:
        out[METERS_DOSE] = [x for bus, pct in dose.items() for x in (bus, float(pct))]
    return out


def meter_messages(meters: Mapping[str, object] | None) -> dict[str, bytes]:
    """:func:`meter_values` as OSC messages."""
    return {address: build_message(address, v) for address, v in meter_values(meters).items()}


def allow_networks(config: OscConfig) -> list:
    """The ``allow`` networks of a config, parsed once (for :func:`host_allowed`)."""
    return [ipaddress.ip_network(n, strict=False) for n in config.allow]


def host_allowed(host: str, networks: list) -> bool:
    """Whether a client host (an address, IPv4-mapped IPv6 too) is in ``networks``: the
    allow-list of every surface, OSC and HTTP."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def _changes(address: str, tags: str, args: list) -> bool:
    """Whether a message would change anything: a value set, a relative change, or a
    command other than a query form (``/snapshot/list``, ``/player/position`` alone)."""
    command = COMMANDS.get(address)
    if command is not None:
        return command.changes(tags)
    return bool(args) or address in _RELATIVE


def param_argument(param: Param, args: list) -> object:
    """The value to hand to the hub for one OSC argument list, or ParamError.

    The registry checks range and NaN; this checks what each kind may be given.
    """
    if len(args) != 1:
        raise ParamError(f"{param.address}: expected one argument, got {len(args)}")
    (arg,) = args
    if param.kind == ENUM:
        if isinstance(arg, bool):
            raise ParamError(f"{param.address}: expects a choice name or an index, not T/F")
        return arg
    if param.kind == TOGGLE:
        if isinstance(arg, str):
            raise ParamError(f"{param.address}: a toggle takes i/f 0 or 1, or T/F, not a string")
        return arg
    if isinstance(arg, bool | str):
        raise ParamError(f"{param.address}: expects a number (f), not {arg!r}")
    return arg


def _type_tags(message: OscMessage) -> str:
    """The type tag string of a parsed message (without the comma)."""
    dgram = message.dgram
    _, index = osc_types.get_string(dgram, 0)
    if index >= len(dgram):
        return ""
    tags, _ = osc_types.get_string(dgram, index)
    return tags[1:]


class _QuietUnhandledTypes(logging.Filter):
    """python-osc logs a root-logger warning for every argument type it does not parse; a
    flood of such packets would flood the journal. We answer them with /error instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unhandled parameter type")


_QUIET = _QuietUnhandledTypes()


@dataclass
class _RateLimiter:
    """Token bucket per client host: ``rate_hz`` tokens per second, ``burst`` at most."""

    rate_hz: float
    burst: int
    _buckets: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, host: str, now: float) -> bool:
        with self._lock:
            bucket = self._buckets.get(host)
            if bucket is None:
                if len(self._buckets) >= MAX_RATE_CLIENTS:
                    oldest = min(self._buckets, key=lambda h: self._buckets[h][1])
                    del self._buckets[oldest]
                bucket = self._buckets[host] = [float(self.burst), now]
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate_hz)
            bucket[1] = now
            if tokens < 1.0:
                bucket[0] = tokens
                return False
            bucket[0] = tokens - 1.0
            return True


@dataclass(frozen=True)
class Peer:
    """Who sent a message: transport ("udp"/"tcp"), host and port. Used as the hub source."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"osc.{self.transport}://{self.host}:{self.port}"


@dataclass
class _Subscription:
    dest: Peer
    expires: float  # monotonic time; inf for TCP (ends with the connection)
    reply_port: bool  # the host's replies go here too


class _TcpConnection:
    """One TCP client: framed sends under a lock, so replies and feedback never mix."""

    def __init__(self, sock: socket.socket, peer: Peer):
        self.sock = sock
        self.peer = peer
        self.lock = threading.Lock()
        self.closed = False
        self.framing: str | None = None  # "slip" (OSC 1.1) or "size" (OSC 1.0 int32 prefix)
        self.last_active = time.monotonic()  # last time the client sent anything
        # a client that stops reading must not stall the feedback thread for long
        sock.settimeout(SEND_TIMEOUT_S)

    def send(self, dgram: bytes) -> bool:
        if self.closed:
            return False
        if self.framing == "size":
            framed = len(dgram).to_bytes(4, "big") + dgram
        else:
            framed = slip.encode(dgram)
        try:
            with self.lock:
                self.sock.sendall(framed)
            return True
        except OSError:
            self.closed = True
            return False


class OscServer:
    """The OSC API over UDP (and TCP): see the module docstring for the protocol.

    ``OscServer(hub, config, meters_provider)``; ``start()`` binds and starts the threads,
    ``close()`` stops them (also a context manager). ``udp_port``/``tcp_port`` are the bound
    ports (useful with port 0). ``stats`` counts received, applied, refused and rate-limited
    messages.
    """

    def __init__(
        self,
        hub: ControlHub,
        config: OscConfig | None = None,
        meters_provider: MetersProvider | None = None,
    ):
        self.hub = hub
        self.config = config or OscConfig()
        self.meters_provider = meters_provider
        self._networks = allow_networks(self.config)
        self._limiter = _RateLimiter(self.config.rate_limit_hz, self.config.burst)
        self._lock = threading.Lock()  # subscriptions, pending changes, schedule
        self._wake = threading.Condition(self._lock)
        self._pending: dict[str, Change] = {}
        self._subs: dict[Peer, _Subscription] = {}
        self._reply_ports: dict[str, int] = {}
        self._tcp: dict[Peer, _TcpConnection] = {}
        self._links: dict[Peer, Link] = {}  # other transports' clients (the WebSocket's)
        self._readonly: set[Peer] = set()
        self._scheduled: list[tuple[float, int, Peer, OscMessage]] = []
        self._seq = itertools.count()
        self._error_log: dict[str, tuple[float, int]] = {}
        self._log_window = (-math.inf, 0)  # (start of this second, lines logged in it)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp: socketserver.UDPServer | None = None
        self._tcp_server: socketserver.TCPServer | None = None
        self._hub_token: int | None = None
        self._tree: tuple[object, AddressTree] | None = None
        self.stats = {"received": 0, "applied": 0, "queries": 0, "errors": 0, "limited": 0}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> OscServer:
        logging.getLogger().addFilter(_QUIET)
        family = _family(self.config.host)
        self._udp = _UdpServer((self.config.host, self.config.port), self, family)
        self._threads.append(_thread("osc-udp", self._udp.serve_forever, 0.1))
        if self.config.tcp:
            tcp_port = self.config.port if self.config.tcp_port is None else self.config.tcp_port
            self._tcp_server = _TcpServer((self.config.host, tcp_port), self, family)
            self._threads.append(_thread("osc-tcp", self._tcp_server.serve_forever, 0.1))
        self._hub_token = self.hub.subscribe(self._on_change)
        self._address_tree()  # built now, not by the first pattern that arrives
        self._threads.append(_thread("osc-feedback", self._sender_loop))
        log.info(
            "osc: listening on udp %s:%d%s",
            self.config.host,
            self.udp_port,
            f" and tcp {self.config.host}:{self.tcp_port}" if self._tcp_server else "",
        )
        return self

    def close(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._hub_token is not None:
            self.hub.unsubscribe(self._hub_token)
            self._hub_token = None
        for server in (self._udp, self._tcp_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        with self._lock:
            conns = list(self._tcp.values())
        for conn in conns:
            conn.closed = True
            _shutdown(conn.sock)
        for t in self._threads:
            t.join(timeout=2.0)
        self._threads.clear()

    def __enter__(self) -> OscServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def udp_port(self) -> int:
        return self._udp.server_address[1] if self._udp else 0

    @property
    def tcp_port(self) -> int:
        return self._tcp_server.server_address[1] if self._tcp_server else 0

    @property
    def subscribers(self) -> list[Peer]:
        with self._lock:
            return list(self._subs)

    def broadcast(self, address: str, args: Iterable[object]) -> int:
        """Send one message to every subscriber now, from any thread (an ``/alert``);
        returns how many it was sent to. Lossy like all feedback (UDP)."""
        dgram = build_message(address, args)
        now = time.monotonic()
        with self._lock:
            subs = [dest for dest, sub in self._subs.items() if sub.expires > now]
        return sum(1 for dest in subs if self._send(dest, dgram))

    def attach(self, peer: Peer, link: Link, readonly: bool = False) -> None:
        """A client of another transport (the WebSocket): its packets come through
        :meth:`handle_packet`, replies and feedback go to ``link.send``. ``readonly``: it may
        query and subscribe but not change anything (see :meth:`set_readonly`)."""
        with self._lock:
            self._links[peer] = link
        self.set_readonly(peer, readonly)

    def set_readonly(self, peer: Peer, readonly: bool) -> None:
        with self._lock:
            if readonly:
                self._readonly.add(peer)
            else:
                self._readonly.discard(peer)

    def detach(self, peer: Peer) -> None:
        """The client is gone: its link, its subscription and its read-only mark."""
        with self._lock:
            self._links.pop(peer, None)
            self._subs.pop(peer, None)
            self._readonly.discard(peer)

    # -- receiving -------------------------------------------------------------------------------
    def allowed(self, host: str) -> bool:
        """Whether a client host is in the allow-list."""
        return host_allowed(host, self._networks)

    def handle_packet(self, data: bytes, peer: Peer) -> None:
        """One datagram (or one SLIP frame) from ``peer``: parse, dispatch, answer.

        Messages are parsed one at a time as they are dispatched, each paying into the
        packet's WorkBudget; when it runs out, the rest of the packet is refused with one
        /error, so no datagram can keep this thread for long."""
        if not data:
            return
        now_wall = time.time()
        budget = WorkBudget(MAX_PACKET_STEPS)
        address = ""
        try:
            for time_tag, dgram in packet_messages(data, MAX_BUNDLE_DEPTH):
                budget.spend(STEPS_PER_MESSAGE)
                self.stats["received"] += 1
                try:
                    message = OscMessage(dgram)
                except (ParseError, osc_message.ParseError, ValueError, IndexError) as exc:
                    self._refuse(peer, "", f"malformed message: {exc}")
                    continue
                address = message.address
                if not self._limiter.allow(peer.host, time.monotonic()):
                    self.stats["limited"] += 1
                    self._refuse(peer, address, "rate limit exceeded", limited=True)
                    continue
                delay = 0.0 if time_tag is None else time_tag - now_wall
                if delay > 0.0005:
                    self._schedule(delay, peer, message)
                else:
                    self._dispatch(message, peer, budget)
                address = ""
        except PacketError as exc:
            self._refuse(peer, "", f"malformed packet: {exc}")
        except PatternTooComplex as exc:
            self._refuse(peer, address, f"{exc}; the rest of the packet was not processed")

    def _schedule(self, delay: float, peer: Peer, message: OscMessage) -> None:
        if delay > MAX_SCHEDULE_S:
            self._refuse(peer, message.address, f"time tag more than {MAX_SCHEDULE_S:g} s ahead")
            return
        with self._wake:
            if len(self._scheduled) >= MAX_SCHEDULED:
                full = True
            else:
                full = False
                due = time.monotonic() + delay
                heapq.heappush(self._scheduled, (due, next(self._seq), peer, message))
                self._wake.notify()
        if full:
            self._refuse(peer, message.address, "too many scheduled bundles")

    def _dispatch(self, message: OscMessage, peer: Peer, budget: WorkBudget | None = None) -> None:
        address = message.address
        try:
            tags = _type_tags(message)
        except osc_types.ParseError as exc:
            self._refuse(peer, address, f"malformed message: {exc}")
            return
        bad = set(tags) - _ACCEPTED_TAGS
        if bad:
            self._refuse(peer, address, f"unsupported type tag(s) {''.join(sorted(bad))!r}")
            return
        args = message.params
        if peer in self._readonly and _changes(address, tags, args):
            self._refuse(peer, address, "read-only until the client gives the password")
            return
        if address == "/subscribe":
            self._subscribe(peer, args)
        elif address == "/unsubscribe":
            self._unsubscribe(peer, args)
        elif address.startswith(METERS_PREFIX):
            if args:
                self._refuse(peer, address, "meters are read-only (send no argument to query)")
            else:
                self._answer_meters(peer, address)
        elif address in _RELATIVE:
            self._dispatch_relative(address, args, peer)
        elif address in COMMANDS:
            self._dispatch_command(address, args, peer)
        elif is_pattern(address):
            self._dispatch_pattern(address, args, peer, budget)
        else:
            self._dispatch_param(address, args, peer)

    def _dispatch_relative(self, verb: str, args: list, peer: Peer) -> None:
        """``/nudge s address f delta``, ``/step s address i steps``, ``/toggle s address``:
        the hub's relative changes, shared with MIDI encoders and buttons."""
        want = {"/nudge": 2, "/step": 2, "/toggle": 1}[verb]
        if len(args) != want or not isinstance(args[0], str):
            self._refuse(peer, verb, _RELATIVE[verb])
            return
        address = args[0]
        try:
            if verb == "/toggle":
                self.hub.toggle(address, source=peer)
            elif verb == "/step":
                self.hub.step(address, int(args[1]), source=peer)
            else:
                delta = float(args[1])
                if not math.isfinite(delta):
                    raise ParamError(f"{address}: the delta must be finite")
                self.hub.nudge(address, delta, source=peer)
            self.stats["applied"] += 1
        except (ParamError, TypeError, ValueError) as exc:
            self._refuse(peer, verb, str(exc))
        except QueueFull as exc:
            self._refuse(peer, verb, f"engine busy: {exc}")

    def _dispatch_command(self, address: str, args: list, peer: Peer) -> None:
        """A command (:mod:`studiod.controllers.commands`): carried out on this thread, its
        reply sent back to the sender."""
        try:
            reply = self.hub.run(address, args)
        except (CommandError, ParamError) as exc:
            self._refuse(peer, address, str(exc))
            return
        except QueueFull as exc:
            self._refuse(peer, address, f"engine busy: {exc}")
            return
        self.stats["applied"] += 1
        if reply is not None:
            self._reply(peer, build_message(address, reply))

    def _dispatch_param(self, address: str, args: list, peer: Peer) -> None:
        registry = self.hub.registry
        if address not in registry:
            new = renamed_address(address)
            if new is None or new not in registry:
                self._refuse(peer, address, "unknown address")
                return
            # a client laid out for an older release is served (and the log says so)
            note = describe_renames(f"a client at {peer}", [(address, new)])
            self._log_limited(f"renamed:{peer.host}:{address}", "osc: %s", note)
            address = new
        param = registry[address]
        if not args:
            self.stats["queries"] += 1
            value = osc_value(param, self.hub.get(address))
            self._reply(peer, build_message(address, [value]))
            return
        try:
            self.hub.set(address, param_argument(param, args), source=peer)
            self.stats["applied"] += 1
        except ParamError as exc:
            self._refuse(peer, address, str(exc))
        except QueueFull as exc:
            self._refuse(peer, address, f"engine busy: {exc}")

    def _dispatch_pattern(
        self, pattern: str, args: list, peer: Peer, budget: WorkBudget | None
    ) -> None:
        own = budget is None  # a scheduled message: its own budget, as a datagram of one
        if budget is None:
            budget = WorkBudget(MAX_PACKET_STEPS)
        try:
            matches = self._address_tree().match(
                AddressPattern.parse(pattern, budget), budget, MAX_PATTERN_MATCHES
            )
            # every parameter a pattern touches is validated and queued or answered
            budget.spend(len(matches) * STEPS_PER_PARAM)
        except ValueError as exc:
            self._refuse(peer, pattern, str(exc))
            return
        except PatternTooComplex as exc:
            if not own:
                raise  # handle_packet refuses the rest of the packet once
            self._refuse(peer, pattern, str(exc))
            return
        if not matches:
            self._refuse(peer, pattern, "pattern matches no address")
            return
        for address in matches:
            self._dispatch_param(address, args, peer)

    def _address_tree(self) -> AddressTree:
        """The registry's addresses as a segment tree, rebuilt when the registry changes."""
        registry = self.hub.registry
        tree = self._tree
        if tree is None or tree[0] is not registry:
            tree = self._tree = (registry, AddressTree(p.address for p in registry))
        return tree[1]

    # -- subscriptions --------------------------------------------------------------------------
    def _subscribe(self, peer: Peer, args: list) -> None:
        cfg = self.config
        ttl_s, port = cfg.subscribe_ttl_s, None
        try:
            if len(args) > 2 or any(isinstance(a, bool | str) for a in args):
                raise ValueError("takes [i ttl_s] [i port]")
            if args:
                ttl_s = float(args[0])
                if not (math.isfinite(ttl_s) and 0 < ttl_s <= cfg.max_ttl_s):
                    raise ValueError(f"ttl {args[0]!r} s is out of range 0…{cfg.max_ttl_s:g}")
            if len(args) == 2:
                if peer.transport == "tcp":
                    raise ValueError("a port is for UDP subscribers; TCP feedback uses the link")
                port = args[1]
                if not isinstance(port, int) or not 0 < port <= 65535:
                    raise ValueError(f"port {port!r} is not 1…65535")
        except ValueError as exc:
            self._refuse(peer, "/subscribe", str(exc))
            return
        dest = peer if port is None else Peer("udp", peer.host, port)
        expires = math.inf if peer.transport == "tcp" else time.monotonic() + ttl_s
        with self._lock:
            if dest not in self._subs and len(self._subs) >= cfg.max_subscribers:
                full = True
            else:
                full = False
                self._subs[dest] = _Subscription(dest, expires, port is not None)
                if port is not None:
                    self._reply_ports[peer.host] = port
        if full:
            self._refuse(peer, "/subscribe", f"too many subscribers ({cfg.max_subscribers})")

    def _unsubscribe(self, peer: Peer, args: list) -> None:
        port = peer.port
        if args:
            if len(args) != 1 or not isinstance(args[0], int) or isinstance(args[0], bool):
                self._refuse(peer, "/unsubscribe", "takes [i port]")
                return
            port = args[0]
        dest = Peer(peer.transport if not args else "udp", peer.host, port)
        with self._lock:
            sub = self._subs.pop(dest, None)
            if sub is not None and sub.reply_port:
                self._reply_ports.pop(peer.host, None)

    def _on_change(self, change: Change) -> None:
        """Hub listener (any thread): record only; the sender thread coalesces and sends."""
        with self._lock:
            self._pending[change.param.address] = change

    # -- sending -----------------------------------------------------------------------------------
    def _reply_dest(self, peer: Peer) -> Peer:
        if peer.transport == "udp":
            port = self._reply_ports.get(peer.host)
            if port is not None:
                return Peer("udp", peer.host, port)
        return peer

    def _reply(self, peer: Peer, dgram: bytes) -> None:
        self._send(self._reply_dest(peer), dgram)

    def _send(self, dest: Peer, dgram: bytes) -> bool:
        if dest.transport == "tcp":
            conn = self._tcp.get(dest)
            return conn.send(dgram) if conn is not None else False
        if dest.transport != "udp":
            link = self._links.get(dest)
            return link.send(dgram) if link is not None else False
        udp = self._udp
        if udp is None:
            return False
        try:
            udp.socket.sendto(dgram, (dest.host, dest.port))
            return True
        except OSError:
            return False  # nobody listening (ICMP refused), network down: feedback is lossy

    def _refuse(self, peer: Peer, address: str, reason: str, limited: bool = False) -> None:
        """Answer /error to the sender (rate-limit errors at most once a second) and log
        once per client per second."""
        self.stats["errors"] += 1
        due = self._log_limited(
            f"{peer.transport}:{peer.host}", "osc: %s %s: %s", peer, address or "(packet)", reason
        )
        if limited and not due:
            return
        self._reply(peer, build_message(ERROR_ADDRESS, [address, reason]))

    def _refuse_quietly(self, peer: Peer) -> None:
        """A client outside the allow-list gets no answer (no reflection), one log line a second."""
        self._log_limited(f"denied:{peer.host}", "osc: %s is not in the allow-list: ignored", peer)

    def _log_limited(self, key: str, fmt: str, *args, level: int = logging.WARNING) -> bool:
        """Log at most once a second per ``key`` (a client host), saying how many lines were
        held back, and at most MAX_LOG_LINES_PER_S lines a second in all (spoofed UDP sources
        are new hosts every time); the table of keys is bounded. Returns whether ``key`` was
        due (a line for it was logged, or held back only by the overall limit)."""
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._error_log.get(key, (-math.inf, 0))
            due = now - last >= ERROR_LOG_INTERVAL_S
            if due and key not in self._error_log and len(self._error_log) >= MAX_RATE_CLIENTS:
                self._error_log.clear()
            self._error_log[key] = (now, 0) if due else (last, suppressed + 1)
            start, lines = self._log_window
            if now - start >= 1.0:
                start, lines = now, 0
            write = due and lines < MAX_LOG_LINES_PER_S
            self._log_window = (start, lines + 1 if write else lines)
        if write:
            more = f" ({suppressed} more since)" if suppressed else ""
            log.log(level, fmt + "%s", *args, more)
        return due

    def _answer_meters(self, peer: Peer, address: str) -> None:
        messages = self._meter_messages()
        if address in messages:
            self._reply(peer, messages[address])
        else:
            self._refuse(peer, address, "no meter values available")

    def _meter_messages(self) -> dict[str, bytes]:
        provider = self.meters_provider
        if provider is None:
            return {}
        try:
            meters = provider()
        except Exception as exc:  # a broken provider must not stop feedback
            log.warning("osc: meters provider failed: %s", exc)
            return {}
        return meter_messages(meters)

    def _sender_loop(self) -> None:
        tick_s = 1.0 / self.config.feedback_hz
        meter_s = 1.0 / self.config.meter_hz
        next_tick = time.monotonic()
        next_meter = next_tick
        while not self._stop.is_set():
            with self._wake:
                now = time.monotonic()
                due_at = self._scheduled[0][0] if self._scheduled else math.inf
                timeout = min(next_tick, due_at) - now
                if timeout > 0:
                    self._wake.wait(timeout)
                now = time.monotonic()
                ready = []
                while self._scheduled and self._scheduled[0][0] <= now:
                    ready.append(heapq.heappop(self._scheduled))
            # scheduled messages that fall due together share one datagram's budget, so
            # thousands of patterns timed for the same instant cannot hold this thread
            budget = WorkBudget(MAX_PACKET_STEPS)
            for _, _, peer, message in ready:
                try:
                    budget.spend(STEPS_PER_MESSAGE)
                    self._dispatch(message, peer, budget)
                except PatternTooComplex as exc:
                    self._refuse(peer, message.address, f"{exc} (scheduled bundles)")
            if now < next_tick:
                continue
            next_tick = max(next_tick + tick_s, now)
            try:
                self._feedback_tick(now, now >= next_meter)
            except Exception:  # the sender thread must survive anything
                log.exception("osc: feedback tick failed")
            if now >= next_meter:
                next_meter = max(next_meter + meter_s, now)

    def _feedback_tick(self, now: float, meters_due: bool) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            expired = [d for d, s in self._subs.items() if s.expires <= now]
            for dest in expired:
                sub = self._subs.pop(dest)
                if sub.reply_port and self._reply_ports.get(dest.host) == dest.port:
                    del self._reply_ports[dest.host]
            subs = list(self._subs)
        if not subs:
            return
        dead = []
        for change in pending.values():
            dgram = build_message(change.param.address, [osc_value(change.param, change.value)])
            for dest in subs:
                if dest != change.source and not self._send(dest, dgram):
                    if dest.transport == "tcp":
                        dead.append(dest)
        if meters_due:
            for dgram in self._meter_messages().values():
                for dest in subs:
                    self._send(dest, dgram)
        if dead:
            with self._lock:
                for dest in dead:
                    self._subs.pop(dest, None)

    # -- TCP connections ---------------------------------------------------------------------------
    def _serve_tcp(self, sock: socket.socket, peer: Peer) -> None:
        """One TCP connection. Framing is detected from the first byte: SLIP END (0xC0) means
        OSC 1.1 (SLIP, RFC 1055, double-END); anything else is OSC 1.0's int32 size prefix,
        which liblo's tools send by default (a size below 16 MiB starts with 0x00). Replies
        and feedback use the client's framing."""
        conn = _TcpConnection(sock, peer)
        with self._lock:
            room, victim = self._tcp_room(peer.host)
            if room:
                if victim is not None:
                    self._drop_tcp(victim)
                self._tcp[peer] = conn
        if not room:
            self._log_limited(
                f"tcp:{peer.host}",
                "osc: %s refused: %d TCP clients (%d per host), none idle",
                peer,
                MAX_TCP_CLIENTS,
                MAX_TCP_PER_HOST,
            )
            return
        if victim is not None:
            self._log_limited(
                f"tcp-evict:{peer.host}",
                "osc: %s closed (idle) to make room for %s",
                victim.peer,
                peer,
                level=logging.INFO,
            )
            _shutdown(victim.sock)
        buffer = bytearray()
        try:
            while not self._stop.is_set() and not conn.closed:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    # idle client: look at the stop flag and the idle time, keep waiting
                    if time.monotonic() - conn.last_active > TCP_IDLE_TIMEOUT_S:
                        with self._lock:
                            listener = peer in self._subs
                        if not listener:
                            log.info("osc: %s closed: idle for %g s", peer, TCP_IDLE_TIMEOUT_S)
                            break
                    continue
                if not chunk:
                    break
                conn.last_active = time.monotonic()
                if conn.framing is None:
                    conn.framing = "slip" if chunk[:1] == slip.END else "size"
                buffer += chunk
                frames, buffer = _split_frames(conn.framing, buffer)
                if buffer is None:
                    self._refuse(peer, "", f"TCP frame longer than {MAX_TCP_FRAME} bytes")
                    break
                for frame in frames:
                    if frame is None:
                        self._refuse(peer, "", "malformed SLIP frame")
                    else:
                        self.handle_packet(frame, peer)
        except OSError:
            pass
        finally:
            conn.closed = True
            with self._lock:
                self._drop_tcp(conn)

    def _tcp_room(self, host: str) -> tuple[bool, _TcpConnection | None]:
        """(room for a new TCP client from ``host``, the connection to close for it). Caller
        holds the lock."""
        conns = list(self._tcp.values())
        same_host = [c for c in conns if c.peer.host == host]
        if len(same_host) >= MAX_TCP_PER_HOST:
            pool = same_host
        elif len(conns) >= MAX_TCP_CLIENTS:
            pool = conns
        else:
            return True, None
        now = time.monotonic()
        idle = [c for c in pool if now - c.last_active >= TCP_EVICT_IDLE_S]
        if not idle:
            return False, None
        return True, min(idle, key=lambda c: (c.peer in self._subs, c.last_active))

    def _drop_tcp(self, conn: _TcpConnection) -> None:
        """Forget a TCP connection and its subscription. Caller holds the lock."""
        conn.closed = True
        if self._tcp.get(conn.peer) is conn:
            del self._tcp[conn.peer]
        self._subs.pop(conn.peer, None)


def _split_frames(framing: str, buffer: bytearray) -> tuple[list, bytearray | None]:
    """Complete packets in ``buffer`` (None for a bad SLIP frame) and the unused rest; the
    rest is None when a frame exceeds MAX_TCP_FRAME."""
    frames: list = []
    if framing == "slip":
        *parts, rest = bytes(buffer).split(slip.END)
        for part in parts:
            if not part:
                continue  # OSC 1.1 frames begin and end with END: empty between
            try:
                frames.append(slip.decode(slip.END + part + slip.END))
            except slip.ProtocolError:
                frames.append(None)
        return frames, (bytearray(rest) if len(rest) <= MAX_TCP_FRAME else None)
    pos = 0
    while len(buffer) - pos >= 4:
        size = int.from_bytes(buffer[pos : pos + 4], "big")
        if size > MAX_TCP_FRAME:
            return frames, None
        if len(buffer) - pos - 4 < size:
            break
        frames.append(bytes(buffer[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    return frames, buffer[pos:]


class PacketError(ValueError):
    """A datagram whose bundle structure is broken or nested too deeply."""


_IMMEDIATELY = b"\0\0\0\0\0\0\0\1"
_NTP_TO_UNIX_S = 2_208_988_800  # 1900-01-01 to 1970-01-01 (RFC 5905)


def packet_messages(data: bytes, max_depth: int) -> Iterator[tuple[float | None, bytes]]:
    """(time tag as Unix seconds, or None for "immediately"; message datagram) for every
    message of an OSC packet, in the order they appear, one at a time.

    OSC 1.0 bundle: "#bundle\\0", an 8-byte NTP time tag, then elements, each an int32 size
    and that many bytes (a message or a bundle). Walked without recursion and lazily: python-
    osc's parser recurses (RecursionError at ~1000 levels), parses a whole 64 KB bundle
    before the first message can be refused, and loops for ever on a negative element size.
    Raises PacketError for a broken structure or bundles nested more than ``max_depth``."""
    if not data.startswith(_BUNDLE_HEADER):
        if not data.startswith(b"/"):
            raise PacketError("not an OSC message or bundle")
        yield None, data
        return
    stack = [_open_bundle(data, 1, max_depth)]  # [bundle, next element's byte, depth, tag]
    while stack:
        frame = stack[-1]
        bundle, pos, depth, tag = frame
        if pos >= len(bundle):
            stack.pop()
            continue
        if pos + 4 > len(bundle):
            raise PacketError(f"element size cut off at byte {pos}")
        size = int.from_bytes(bundle[pos : pos + 4], "big", signed=True)
        if size < 0 or pos + 4 + size > len(bundle):
            raise PacketError(f"element size {size} at byte {pos} is past the end")
        element = bundle[pos + 4 : pos + 4 + size]
        frame[1] = pos + 4 + size
        if element.startswith(_BUNDLE_HEADER):
            stack.append(_open_bundle(element, depth + 1, max_depth))
        elif element.startswith(b"/"):
            yield tag, element
        else:
            raise PacketError(f"element at byte {pos + 4} is not a message or bundle")


def _open_bundle(bundle: bytes, depth: int, max_depth: int) -> list:
    if depth > max_depth:
        raise PacketError(f"bundles nested more than {max_depth} deep")
    if len(bundle) < 16:
        raise PacketError("bundle shorter than its header")
    raw = bundle[8:16]
    tag = None if raw == _IMMEDIATELY else int.from_bytes(raw, "big") / 2**32 - _NTP_TO_UNIX_S
    return [bundle, 16, depth, tag]


def meter_db(value: object) -> float:
    """A meter reading in dB for OSC: not finite or below METER_FLOOR_DB -> the floor."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return METER_FLOOR_DB
    if not math.isfinite(number) or number < METER_FLOOR_DB:
        return METER_FLOOR_DB
    return number


def _shutdown(sock: socket.socket) -> None:
    """End a TCP connection both ways; its thread's recv() returns at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _family(host: str) -> socket.AddressFamily:
    info = socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP)
    return info[0][0]


def _thread(name: str, target, poll_interval: float | None = None) -> threading.Thread:
    if poll_interval is None:
        t = threading.Thread(target=target, name=name, daemon=True)
    else:
        t = threading.Thread(target=target, args=(poll_interval,), name=name, daemon=True)
    t.start()
    return t


def _peer(transport: str, client_address) -> Peer:
    return Peer(transport, str(client_address[0]), int(client_address[1]))


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        osc: OscServer = self.server.osc
        peer = _peer("udp", self.client_address)
        if not osc.allowed(peer.host):
            osc._refuse_quietly(peer)
            return
        osc.handle_packet(self.request[0], peer)


class _UdpServer(socketserver.UDPServer):
    """One thread, in arrival order (socketserver without ThreadingMixIn)."""

    allow_reuse_address = False
    max_packet_size = 65535

    def __init__(self, address, osc: OscServer, family: socket.AddressFamily):
        self.address_family = family
        self.osc = osc
        super().__init__(address, _UdpHandler)

    def handle_error(self, request, client_address) -> None:
        _log_internal_error("a packet from", client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        osc: OscServer = self.server.osc
        peer = _peer("tcp", self.client_address)
        if not osc.allowed(peer.host):
            osc._refuse_quietly(peer)
            return
        osc._serve_tcp(self.request, peer)


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, osc: OscServer, family: socket.AddressFamily):
        self.address_family = family
        self.osc = osc
        super().__init__(address, _TcpHandler)

    def handle_error(self, request, client_address) -> None:
        _log_internal_error("the TCP connection from", client_address)


def _log_internal_error(what: str, client_address) -> None:
    """One line for an exception that escaped a handler (a bug: every known refusal is
    answered with /error before this), never socketserver's traceback on stderr."""
    exc = sys.exc_info()[1]
    log.error("osc: internal error on %s %s: %s: %s", what, client_address, type(exc).__name__, exc)
