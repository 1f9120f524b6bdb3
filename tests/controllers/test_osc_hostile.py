"""The OSC API against hostile input: wildcard storms, NaN/Inf of every type, deep bundles,
floods of tiny messages. Every refusal is answered with /error and logged in one line; no
datagram causes more than a bounded amount of work (oscpattern's steps); the server keeps
answering. Time per datagram is measured in benchmarks/bench_hostile.py."""

from __future__ import annotations

import logging
import math
import socket
import struct
import time

import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from studiod.controllers import osc as osc_module
from studiod.controllers.hub import ControlHub
from studiod.controllers.osc import (
    MAX_BUNDLE_DEPTH,
    OscConfig,
    OscServer,
    PacketError,
    packet_messages,
)
from studiod.controllers.oscpattern import (
    MAX_PATTERN_LENGTH,
    AddressPattern,
    AddressTree,
    PatternTooComplex,
    WorkBudget,
)
from studiod.controllers.web import WebServer
from studiod.dsp.engine import Engine
from studiod.dsp.registry import ENUM, FADER, TOGGLE
from studiod.dsp.session import default_session

TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def registry_addresses():
    return [p.address for p in Engine(default_session(3)).registry]


@pytest.fixture
def server():
    engine = Engine(default_session(3))
    hub = ControlHub(engine)
    osc = OscServer(hub, OscConfig(port=0, burst=100_000, rate_limit_hz=100_000.0)).start()
    yield osc, engine
    osc.close()


@pytest.fixture
def client(server):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(TIMEOUT_S)
    yield sock
    sock.close()


def _message(address: str, *typed_args) -> bytes:
    builder = OscMessageBuilder(address)
    for value, tag in typed_args:
        builder.add_arg(value, tag)
    return builder.build().dgram


def _raw_message(address: str, tags: str, payload: bytes) -> bytes:
    """A message built by hand (python-osc's builder refuses some of what a fuzzer sends)."""

    def pad(b: bytes) -> bytes:
        b += b"\0"
        return b + b"\0" * (-len(b) % 4)

    return pad(address.encode()) + pad(("," + tags).encode()) + payload


def _bundle(*elements: bytes) -> bytes:
    out = b"#bundle\0" + struct.pack(">Q", 1)  # time tag 1: immediately
    for element in elements:
        out += struct.pack(">i", len(element)) + element
    return out


def _receive_all(sock: socket.socket, wait_s: float = 0.3) -> list[OscMessage]:
    out = []
    end = time.monotonic() + wait_s
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(65536)
        except TimeoutError:
            break
        out.append(OscMessage(data))
    return out


def _send(sock, osc: OscServer, dgram: bytes) -> None:
    sock.sendto(dgram, ("127.0.0.1", osc.udp_port))


def _still_answers(sock, osc: OscServer) -> None:
    """A query after the storm is answered at once."""
    _receive_all(sock, 0.05)
    _send(sock, osc, _message("/ch/1/fader"))
    sock.settimeout(TIMEOUT_S)
    reply = OscMessage(sock.recvfrom(65536)[0])
    assert reply.address == "/ch/1/fader"


def _no_traceback(caplog) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


# -- matching -------------------------------------------------------------------------------------
PATTERNS = [
    "/ch/*/fader", "/ch/?/eq/[1-3]/gain", "/monitor/systems/{studio,car}/trim", "/ch/[!2]/mute",
    "/master/*", "/*/*/fader", "/bus/d*/comp/*", "/*", "/*/*", "/*/*/*", "/*/*/*/*",
    "/ch/{1,2,}/fader", "/ch/1/f*d*r", "/ch/1/*a*", "/c?/[0-9]/[a-f]*", "/ch/1/eq/*/{gain,freq}",
    "/ch/1/fader*", "/ch/1/**", "/ch/*/*e*", "/monitor/*", "/m*/s*", "/ch/{3,1}/pan",
    "/ch/1/eq/[!a-z]/q", "/*/*/eq/?/*", "/ch/1/[fp]a*", "/[a-z]*/*",
]  # fmt: skip


def test_matching_agrees_with_python_osc_dispatcher(registry_addresses):
    """python-osc's dispatcher implements OSC 1.0 matching independently (with a regex):
    the same addresses match, pattern by pattern, through the registry tree and one by one."""
    dispatcher = Dispatcher()
    for a in registry_addresses:
        dispatcher.map(a, print, a)  # the handler carries its address as its argument
    tree = AddressTree(registry_addresses)
    for text in PATTERNS:
        pattern = AddressPattern.parse(text)
        ours = tree.match(pattern, WorkBudget(10**9), 10**6)
        theirs = {h.args[0] for h in dispatcher.handlers_for_address(text)}
        assert set(ours) == theirs, text
        assert {a for a in registry_addresses if pattern.matches(a)} == theirs, text
    assert tree.match(AddressPattern.parse("/ch/*/fader"), WorkBudget(10**9), 2) == [
        "/ch/1/fader",
        "/ch/2/fader",
    ]  # the limit keeps the first matches in registry order


def test_matching_work_grows_linearly_with_the_stars(registry_addresses):
    """The stall that was seen: ``/****...x``. With a backtracking regex the cost doubles
    with each star; here the steps spent grow at most linearly with the pattern length."""
    tree = AddressTree(registry_addresses)
    spent = {}
    for stars in (8, 64, 256, MAX_PATTERN_LENGTH - 2):
        for text in (
            "/" + "*" * stars + "x",
            "/*/" + "*?" * (stars // 2),
            "/*/*/" + "*a" * (stars // 2),
        ):
            text = text[:MAX_PATTERN_LENGTH]
            budget = WorkBudget(10**9)
            tree.match(AddressPattern.parse(text, budget), budget, 10**6)
            spent[text] = 10**9 - budget.steps
    for text, steps in spent.items():
        assert steps <= 60 * len(text) + 5000, (text[:20], steps)


def test_malformed_and_oversized_patterns_are_refused_with_a_reason():
    for text, reason in [
        ("/ch/[1/fader", "unclosed '['"),
        ("/ch/{1,2/fader}", "'/' inside"),
        ("/ch/{1,2/fader", "unclosed '{'"),
        ("/ch/]/fader", "unbalanced"),
        ("/ch/[]/fader", "empty '[]'"),
        ("/ch/[z-a]/fader", "bad range"),
        ("/" + "*" * MAX_PATTERN_LENGTH, "longer than"),
    ]:
        with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
            AddressPattern.parse(text)


def test_the_budget_bounds_the_work_of_one_pattern(registry_addresses):
    tree = AddressTree(registry_addresses)
    with pytest.raises(PatternTooComplex):
        tree.match(AddressPattern.parse("/*/*/*/*"), WorkBudget(100), 10**6)


# -- through the server ---------------------------------------------------------------------------
def test_a_wildcard_storm_is_answered_and_the_server_keeps_answering(server, client, caplog):
    osc, _ = server
    storm = "/" + "*" * 24 + "x"  # the 32-byte datagram that stalled the daemon for ~10 s
    _send(client, osc, _message(storm))
    errors = [m for m in _receive_all(client) if m.address == "/error"]
    assert [e.params for e in errors] == [[storm, "pattern matches no address"]]
    # a 64 KB bundle of the longest patterns: bounded work, the rest refused in one answer each
    long_pattern = ("/*/*/" + "*?" * 400)[:MAX_PATTERN_LENGTH]
    message = _message(long_pattern, (0.0, "f"))
    bundle = _bundle(*[message] * (60_000 // (len(message) + 4)))
    assert len(bundle) <= 65_507
    _send(client, osc, bundle)
    replies = _receive_all(client, 0.5)
    errors = [m.params[1] for m in replies if m.address == "/error"]
    limit = "pattern matching exceeds the work limit of one packet; the rest of the packet"
    # each message is answered until the packet's budget is spent, then one answer for the rest
    assert errors[-1].startswith(limit) and sum(e.startswith(limit) for e in errors) == 1
    assert set(errors[:-1]) == {"pattern matches no address"}
    _still_answers(client, osc)
    _no_traceback(caplog)


@pytest.mark.parametrize(
    "value, tag",
    [
        (math.nan, "f"),
        (math.inf, "f"),
        (-math.inf, "d"),
        (math.nan, "d"),
        (2**63 - 1, "h"),
        (-(2**63), "h"),
        (2**31 - 1, "i"),
    ],
)
def test_nan_inf_and_overflow_for_every_kind_of_parameter(server, client, caplog, value, tag):
    osc, engine = server
    registry = engine.registry
    kinds = {}
    for param in registry:
        kinds.setdefault(param.kind, param)
    assert {ENUM, TOGGLE} <= set(kinds)
    before = registry.snapshot()
    accepted = set()
    for param in kinds.values():
        _send(client, osc, _message(param.address, (value, tag)))
        replies = _receive_all(client, 0.2)
        errors = [m.params for m in replies if m.address == "/error"]
        if param.address == "/monitor/system" or param.kind in (ENUM, TOGGLE):
            assert len(errors) == 1 and errors[0][0] == param.address, (param.address, replies)
        elif not errors:
            # a float parameter takes a number only when it is in range; a fader takes -inf
            # as its off position (FADER taper)
            in_range = math.isfinite(value) and param.minimum <= value <= param.maximum
            assert in_range or (param.taper == FADER and value == -math.inf), param.address
            accepted.add(param.address)
    after = registry.snapshot()
    assert {a: after[a] for a in before if a not in accepted} == {
        a: v for a, v in before.items() if a not in accepted
    }
    _still_answers(client, osc)
    _no_traceback(caplog)


def test_monitor_system_nan_is_refused_once_with_error(server, client, caplog):
    """The case from the issue: ``/monitor/system f NaN`` logged a ValueError traceback."""
    osc, _ = server
    for value, tag in ((math.nan, "f"), (math.inf, "f"), (math.nan, "d")):
        _send(client, osc, _message("/monitor/system", (value, tag)))
        (reply,) = _receive_all(client, 0.2)
        assert reply.address == "/error" and reply.params[0] == "/monitor/system"
        assert "not a whole number" in reply.params[1]
    _no_traceback(caplog)


def test_deeply_nested_bundles_are_refused_in_one_line(server, client, caplog):
    osc, engine = server
    inner = _message("/ch/1/fader", (-3.0, "f"))
    for _ in range(MAX_BUNDLE_DEPTH):
        inner = _bundle(inner)
    assert len(list(packet_messages(inner, MAX_BUNDLE_DEPTH))) == 1
    _send(client, osc, inner)  # the deepest accepted nesting still works
    _still_answers(client, osc)
    assert engine.registry.get("/ch/1/fader") == -3.0
    deep = _message("/ch/1/fader", (-9.0, "f"))
    for _ in range(3000):
        deep = _bundle(deep)
    assert len(deep) < 65_507
    with caplog.at_level(logging.WARNING, logger="studiod.osc"):
        _send(client, osc, deep)
        errors = [m for m in _receive_all(client) if m.address == "/error"]
    assert len(errors) == 1 and "nested more than" in errors[0].params[1]
    assert engine.registry.get("/ch/1/fader") == -3.0
    assert len([r for r in caplog.records if "nested" in r.getMessage()]) == 1
    _still_answers(client, osc)
    _no_traceback(caplog)


def test_packet_walk_refuses_broken_structure_without_looping():
    head = b"#bundle\0" + b"\0" * 7 + b"\1"
    for data, reason in [
        (head + b"\x7f\xff\xff\xff#bundle\0", "past the end"),
        # python-osc's parser loops for ever on this 20-byte datagram (a negative size)
        (head + b"\xff\xff\xff\xfc", "past the end"),
        (head + b"\0\0", "cut off"),
        (head + b"\0\0\0\4abcd", "not a message or bundle"),
        (b"#bundle\0\0", "shorter than its header"),
        (b"garbage", "not an OSC message"),
    ]:
        with pytest.raises(PacketError, match=reason):
            list(packet_messages(data, MAX_BUNDLE_DEPTH))


def test_packet_walk_keeps_the_order_and_time_tags():
    def msg(n):
        return _message(f"/m/{n}")

    later = b"#bundle\0" + struct.pack(">Q", (2_208_988_800 + 1000) << 32)
    inner = later + struct.pack(">i", len(msg(2))) + msg(2) + struct.pack(">i", len(msg(3)))
    inner += msg(3)
    packet = _bundle(msg(1), inner, msg(4))
    walked = list(packet_messages(packet, MAX_BUNDLE_DEPTH))
    assert [OscMessage(d).address for _, d in walked] == ["/m/1", "/m/2", "/m/3", "/m/4"]
    assert [t for t, _ in walked] == [None, 1000.0, 1000.0, None]


# -- TCP: idle connections cannot lock others out ------------------------------------------------
@pytest.fixture
def tcp_server():
    engine = Engine(default_session(3))
    osc = OscServer(ControlHub(engine), OscConfig(port=0, tcp=True, tcp_port=0)).start()
    yield osc
    osc.close()


def _tcp_query(port: int, address: str) -> OscMessage:
    """Connect, send one size-prefixed query (OSC 1.0 framing), read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        dgram = _message(address)
        sock.sendall(struct.pack(">i", len(dgram)) + dgram)
        size = struct.unpack(">i", _read_exactly(sock, 4))[0]
        return OscMessage(_read_exactly(sock, size))


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed by the server")
        out += chunk
    return out


def _closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_sixteen_idle_tcp_connections_do_not_lock_out_a_17th_client(tcp_server):
    silent = [
        socket.create_connection(("127.0.0.1", tcp_server.tcp_port), timeout=TIMEOUT_S)
        for _ in range(osc_module.MAX_TCP_CLIENTS)
    ]
    try:
        time.sleep(osc_module.TCP_EVICT_IDLE_S + 0.3)
        answer = _tcp_query(tcp_server.tcp_port, "/ch/1/fader")
        assert answer.address == "/ch/1/fader" and answer.params == [0.0]
        closed = [s for s in silent if _closed_by_server(s, 0.05)]
        # the ones beyond the per-host share were refused at once, one more made room
        assert len(closed) == osc_module.MAX_TCP_CLIENTS - osc_module.MAX_TCP_PER_HOST + 1
    finally:
        for s in silent:
            s.close()


def test_an_idle_tcp_client_is_closed_but_a_subscriber_is_not(tcp_server, monkeypatch):
    monkeypatch.setattr(osc_module, "TCP_IDLE_TIMEOUT_S", 0.3)
    port = tcp_server.tcp_port
    with (
        socket.create_connection(("127.0.0.1", port)) as idle,
        socket.create_connection(("127.0.0.1", port)) as listener,
    ):
        dgram = _message("/subscribe")
        listener.sendall(struct.pack(">i", len(dgram)) + dgram)
        assert _closed_by_server(idle, 3.0)
        assert not _closed_by_server(listener, 1.0)


# -- OSCQuery: clients that vanish ----------------------------------------------------------------
def test_vanished_http_clients_are_closed_without_a_traceback(capfd, caplog):
    """Clients that send a request and reset the connection before the answer (a phone
    locking its screen): socketserver used to print a BrokenPipeError traceback for each."""
    hub = ControlHub(Engine(default_session(3)))
    config = osc_module.OscConfig(oscquery_port=0)
    with WebServer(hub, config) as server, caplog.at_level(logging.DEBUG, "studiod"):
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # with linger 0: a reset, not a polite close
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S) as sock:
            sock.sendall(b"GET /ch/1/fader?VALUE HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    assert "Traceback" not in capfd.readouterr().err
    _no_traceback(caplog)
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not failures, [r.getMessage() for r in failures]


def test_refusals_from_many_hosts_cannot_flood_the_log(server, caplog):
    """Spoofed UDP sources look like new hosts every time: the log stays at
    MAX_LOG_LINES_PER_S lines a second and the per-host table stays bounded."""
    osc, _ = server
    with caplog.at_level(logging.WARNING, "studiod.osc"):
        for i in range(5000):
            host = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
            osc._refuse_quietly(osc_module.Peer("udp", host, 1))
    assert len(caplog.records) <= osc_module.MAX_LOG_LINES_PER_S * 2
    assert len(osc._error_log) <= osc_module.MAX_RATE_CLIENTS


def test_scheduled_bundles_due_together_share_one_budget(server, client, caplog):
    """Hundreds of expensive patterns timed for the same instant: those that fall due
    together are dispatched under one datagram's budget; the rest are refused."""
    osc, _ = server
    due = time.time() + 0.4
    tag = struct.pack(">Q", int((due + 2_208_988_800) * 2**32))
    timed = b"#bundle\0" + tag
    element = _message("/*/*/*")
    timed += struct.pack(">i", len(element)) + element
    for _ in range(300):
        _send(client, osc, timed)
    replies = _receive_all(client, 1.5)
    limit = [m for m in replies if m.address == "/error" and "(scheduled bundles)" in m.params[1]]
    answered = [m for m in replies if m.address != "/error"]
    assert limit and answered  # some went through, the rest were refused
    _still_answers(client, osc)
    _no_traceback(caplog)
