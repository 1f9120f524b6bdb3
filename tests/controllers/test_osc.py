"""The OSC API through real sockets on 127.0.0.1, with python-osc building and parsing the
client side (an independent implementation of the OSC 1.0 encoding)."""

from __future__ import annotations

import logging
import math
import socket
import struct
import time

import numpy as np
import pytest
from pythonosc import slip
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from studiod.controllers.hub import ControlHub
from studiod.controllers.osc import METER_FLOOR_DB, OscConfig, OscServer
from studiod.controllers.oscpattern import AddressPattern
from studiod.dsp.engine import Engine
from studiod.dsp.session import default_session

TIMEOUT_S = 2.0


def _message(address: str, *args) -> OscMessageBuilder:
    builder = OscMessageBuilder(address)
    for arg in args:
        if isinstance(arg, tuple):  # (value, explicit type tag)
            builder.add_arg(arg[0], arg[1])
        else:
            builder.add_arg(arg)
    return builder


class Client:
    """A UDP OSC client with its own port, receiving what the server sends back."""

    def __init__(self, port: int, bind_port: int = 0):
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", bind_port))
        self.sock.settimeout(TIMEOUT_S)
        self.port = self.sock.getsockname()[1]

    def send(self, address: str, *args) -> None:
        self.sock.sendto(_message(address, *args).build().dgram, self.server)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def recv(self, timeout: float = TIMEOUT_S) -> OscMessage:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(65536)
        return OscMessage(data)

    def recv_until(self, address: str, timeout: float = TIMEOUT_S) -> OscMessage:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {address} within {timeout} s")
            msg = self.recv(left)
            if msg.address == address:
                return msg

    def drain(self, wait: float = 0.15) -> list[OscMessage]:
        out = []
        end = time.monotonic() + wait
        while (left := end - time.monotonic()) > 0:
            try:
                out.append(self.recv(left))
            except TimeoutError:
                break
        return out

    def close(self) -> None:
        self.sock.close()


METERS = {
    "momentary_lufs": -18.5,
    "shortterm_lufs": -19.25,
    "integrated_lufs": -math.inf,  # not yet defined: sent as the floor
    "true_peak_dbtp": -1.5,
    "channel_peak_dbfs": [-6.0, -200.0, -12.0],
}


@pytest.fixture(scope="module")
def engine_session():
    return default_session(3)


@pytest.fixture
def make_server(engine_session):
    servers = []

    def make(**config):
        engine = Engine(engine_session)
        hub = ControlHub(engine)
        cfg = {"port": 0, "tcp": True, "tcp_port": 0, "feedback_hz": 100.0, "meter_hz": 20.0}
        cfg.update(config)
        server = OscServer(hub, OscConfig(**cfg), meters_provider=lambda: METERS).start()
        servers.append(server)
        return server, hub, engine

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def osc(make_server):
    server, hub, engine = make_server()
    clients = []

    def client(bind_port: int = 0) -> Client:
        c = Client(server.udp_port, bind_port)
        clients.append(c)
        return c

    yield server, hub, engine, client
    for c in clients:
        c.close()


def _query(c: Client, address: str):
    c.send(address)
    msg = c.recv_until(address)
    return msg.params


def test_float_set_and_query(osc):
    _, _, engine, client = osc
    c = client()
    c.send("/ch/1/fader", -6.0)
    assert _query(c, "/ch/1/fader") == [-6.0]
    assert engine.get("/ch/1/fader") == -6.0
    c.send("/master/limiter/ceiling", (-2, "i"))  # an int is a number too
    c.send("/ch/2/pan", (-0.25, "d"))
    assert _query(c, "/master/limiter/ceiling") == [-2.0]
    assert _query(c, "/ch/2/pan") == [-0.25]
    # the engine's audio thread gets it: the channel's post-fader level follows the fader
    n = 14400  # 300 ms: the 20 ms parameter smoothing has settled to < 0.001 dB
    sine = np.zeros((n, engine.session.n_inputs), np.float32)
    sine[:, 0] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(n) / 48000)
    engine.render(sine, 64)
    peak_moved = engine.state.ch_peak[0]
    c.send("/ch/1/fader", 0.0)
    assert _query(c, "/ch/1/fader") == [0.0]
    engine.render(sine, 64)
    peak_unity = engine.state.ch_peak[0]
    assert 20 * np.log10(peak_moved / peak_unity) == pytest.approx(-6.0, abs=0.05)


def test_query_answer_types(osc):
    _, _, _, client = osc
    c = client()
    c.sock.sendto(_message("/monitor/system").build().dgram, c.server)
    msg = c.recv_until("/monitor/system")
    assert msg.params == ["studio"]
    c.send("/ch/1/mute")
    msg = c.recv_until("/ch/1/mute")
    assert msg.params == [0] and isinstance(msg.params[0], int)
    c.send("/ch/1/fader")
    msg = c.recv_until("/ch/1/fader")
    assert isinstance(msg.params[0], float)


def test_toggle_accepts_i_f_true_false(osc):
    _, _, engine, client = osc
    c = client()
    for arg, want in [((1, "i"), 1), ((0.0, "f"), 0), (True, 1), (False, 0), ((1.0, "f"), 1)]:
        c.send("/monitor/dim/on", arg)
        assert _query(c, "/monitor/dim/on") == [want]
        assert engine.get("/monitor/dim/on") == want
    c.send("/monitor/dim/on", (2, "i"))
    err = c.recv_until("/error")
    assert err.params[0] == "/monitor/dim/on" and "0 or 1" in err.params[1]


def test_an_older_releases_addresses_are_served_by_their_new_names(osc, caplog):
    """A client laid out before the OSC methods became leaves: /monitor/dim was the dim
    toggle, /monitor/car/trim a system's trim. Answers come under today's addresses."""
    _, _, engine, client = osc
    c = client()
    with caplog.at_level(logging.WARNING, logger="studiod.osc"):
        c.send("/monitor/dim", (1, "i"))
        c.send("/monitor/car/trim", (-2.5, "f"))
        assert _query(c, "/monitor/dim/on") == [1]
        assert _query(c, "/monitor/systems/car/trim") == [-2.5]
        c.send("/monitor/dim")  # a query of the old address
        assert c.recv_until("/monitor/dim/on").params == [1]
    assert engine.get("/monitor/dim/on") == 1.0
    assert "/monitor/dim -> /monitor/dim/on" in caplog.text
    assert "/monitor/car/trim -> /monitor/systems/car/trim" in caplog.text


def test_enum_accepts_name_or_index_and_answers_name(osc):
    _, _, engine, client = osc
    c = client()
    c.send("/monitor/system", "car")
    assert _query(c, "/monitor/system") == ["car"]
    c.send("/monitor/system", (1, "i"))
    assert _query(c, "/monitor/system") == ["alt"]
    assert engine.get("/monitor/system") == 1.0
    for bad in ["nope", (1.5, "f"), (99, "i"), True]:
        c.send("/monitor/system", bad)
        err = c.recv_until("/error")
        assert err.params[0] == "/monitor/system"
    assert _query(c, "/monitor/system") == ["alt"]


@pytest.mark.parametrize(
    "address, args, reason",
    [
        ("/nope", [(1.0, "f")], "unknown address"),
        ("/ch/1/fader", ["loud"], "expects a number"),
        ("/ch/1/fader", [(20.0, "f")], "out of range"),
        ("/ch/1/fader", [(float("nan"), "f")], "not a finite"),
        ("/ch/1/fader", [(1.0, "f"), (2.0, "f")], "one argument"),
        ("/ch/1/pan", [True], "expects a number"),
        ("/ch/1/mute", ["on"], "toggle"),
        ("/ch/1/fader", [(b"\x01\x02", "b")], "unsupported type"),
        ("/ch/[1/fader", [(1.0, "f")], "unclosed"),
        ("/subscribe", [(-1, "i")], "out of range"),
    ],
)
def test_bad_input_answers_error_and_never_reaches_engine(osc, address, args, reason):
    _, hub, engine, client = osc
    c = client()
    before = engine.registry.values.copy()
    version = hub.version
    c.send(address, *args)
    err = c.recv_until("/error")
    assert err.params[0] == address
    assert reason in err.params[1]
    assert hub.version == version
    np.testing.assert_array_equal(engine.registry.values, before)
    assert engine._q_ctl[0] == 0  # nothing was queued for the audio thread


def test_malformed_packets_answer_error_and_server_keeps_running(osc):
    server, _, _, client = osc
    c = client()
    rng = np.random.default_rng(5)
    bad = [
        b"/ch/1/fader\x00",  # address not padded to 4 bytes
        b"/ch/1/fader\x00\x00\x00\x00,f\x00\x00\x01",  # float truncated
        b"#bundle\x00\x00\x00",  # truncated bundle
        b"garbage that is not OSC",
        *(b"/" + rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
          for _ in range(50)),
    ]  # fmt: skip
    for data in bad:
        c.send_raw(data)
    errors = [m for m in c.drain(0.5) if m.address == "/error"]
    assert len(errors) >= 4
    assert any("malformed" in e.params[1] for e in errors)
    c.send("/ch/1/fader", -3.0)
    assert _query(c, "/ch/1/fader") == [-3.0]
    assert server.stats["errors"] >= 4


def test_bundle_immediate_and_future_time_tag(osc):
    _, _, engine, client = osc
    c = client()
    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(_message("/ch/1/mute", (1, "i")).build())
    bundle.add_content(_message("/ch/2/mute", (1, "i")).build())
    c.send_raw(bundle.build().dgram)
    assert _query(c, "/ch/2/mute") == [1]
    assert engine.get("/ch/1/mute") == 1.0
    later = OscBundleBuilder(time.time() + 0.4)
    later.add_content(_message("/ch/3/fader", (-20.0, "f")).build())
    sent = time.monotonic()
    c.send_raw(later.build().dgram)
    time.sleep(0.15)
    assert engine.get("/ch/3/fader") == 0.0  # not yet
    while engine.get("/ch/3/fader") != -20.0 and time.monotonic() - sent < 2.0:
        time.sleep(0.005)
    applied_after = time.monotonic() - sent
    assert 0.35 <= applied_after < 0.6


def test_pattern_matching_sets_and_queries_every_match(osc):
    _, _, engine, client = osc
    c = client()
    c.send("/ch/*/mute", (1, "i"))
    c.send("/ch/{1,3}/fader", (-10.0, "f"))
    c.send("/ch/[12]/pan")  # a query: one answer per match
    answers = [m for m in c.drain(0.3) if m.address.endswith("/pan")]
    assert sorted(m.address for m in answers) == ["/ch/1/pan", "/ch/2/pan"]
    assert [engine.get(f"/ch/{n}/mute") for n in (1, 2, 3)] == [1.0, 1.0, 1.0]
    assert [engine.get(f"/ch/{n}/fader") for n in (1, 2, 3)] == [-10.0, 0.0, -10.0]
    c.send("/ch/[!1]/solo", (1, "i"))
    c.drain(0.1)
    assert [engine.get(f"/ch/{n}/solo") for n in (1, 2, 3)] == [0.0, 1.0, 1.0]


def test_pattern_matching_agrees_with_python_osc_dispatcher(engine_session):
    """python-osc's dispatcher implements OSC 1.0 matching independently: same matches."""
    addresses = [p.address for p in Engine(engine_session).registry]
    dispatcher = Dispatcher()
    for a in addresses:
        dispatcher.map(a, print, a)  # the handler carries its address as its argument
    patterns = ["/ch/*/fader", "/ch/?/eq/[1-3]/gain", "/monitor/systems/{studio,car}/trim",
                "/ch/[!2]/mute", "/master/*", "/*/*/fader", "/bus/d*/comp/*"]  # fmt: skip
    for pattern in patterns:
        ours = {a for a in addresses if AddressPattern.parse(pattern).matches(a)}
        theirs = {h.args[0] for h in dispatcher.handlers_for_address(pattern)}
        assert ours == theirs and ours, pattern


def test_subscribers_get_changes_from_anyone_but_not_their_own(osc):
    _, hub, _, client = osc
    a, b, other = client(), client(), client()
    a.send("/subscribe")
    time.sleep(0.05)
    b.send("/ch/2/pan", 0.5)
    msg = a.recv_until("/ch/2/pan")
    assert msg.params == [0.5]
    hub.set("/monitor/system", "headphones", source="midi")  # not OSC: still fed back
    assert a.recv_until("/monitor/system").params == ["headphones"]
    a.send("/ch/1/fader", -4.0)  # its own change is not echoed to it
    got = [m.address for m in a.drain(0.3)]
    assert "/ch/1/fader" not in got
    assert [m for m in other.drain(0.1) if not m.address.startswith("/meters")] == []


def test_feedback_coalesces_per_address(osc):
    _, _, _, client = osc
    a, b = client(), client()
    a.send("/subscribe")
    time.sleep(0.05)
    values = np.linspace(-40.0, 0.0, 200)
    for v in values:
        b.send("/ch/1/fader", float(v))
    received = [m.params[0] for m in a.drain(0.5) if m.address == "/ch/1/fader"]
    assert received[-1] == 0.0
    # 200 changes in well under a second: at most 100 ticks/s, so far fewer than 200 sent
    assert 1 <= len(received) < 100


def test_subscription_expires_and_unsubscribe(osc):
    _, _, _, client = osc
    a, b = client(), client()
    a.send("/subscribe", (1, "i"))  # 1 s TTL
    time.sleep(0.05)
    b.send("/ch/1/trim", 3.0)
    assert a.recv_until("/ch/1/trim").params == [3.0]
    time.sleep(1.2)
    a.drain(0.05)
    b.send("/ch/1/trim", 4.0)
    assert [m for m in a.drain(0.3) if m.address == "/ch/1/trim"] == []
    a.send("/subscribe", (60, "i"))
    time.sleep(0.05)
    b.send("/ch/1/trim", 5.0)
    assert a.recv_until("/ch/1/trim").params == [5.0]
    a.send("/unsubscribe")
    time.sleep(0.05)
    b.send("/ch/1/trim", 6.0)
    assert [m for m in a.drain(0.3) if m.address == "/ch/1/trim"] == []


def test_subscribe_with_port_routes_feedback_and_answers_there(osc):
    """For senders that cannot receive (liblo's oscsend): feedback, query answers and errors
    for that host go to the subscribed port."""
    _, _, _, client = osc
    listener = client()
    sender = client()
    sender.send("/subscribe", (30, "i"), (listener.port, "i"))
    time.sleep(0.05)
    other = client()
    other.send("/ch/3/fader", -7.5)
    assert listener.recv_until("/ch/3/fader").params == [-7.5]
    sender.send("/ch/2/fader")  # a query: the answer goes to the listener
    assert listener.recv_until("/ch/2/fader").params == [0.0]
    sender.send("/nope")
    assert listener.recv_until("/error").params[0] == "/nope"
    assert sender.drain(0.2) == []
    sender.send("/unsubscribe", (listener.port, "i"))
    time.sleep(0.05)
    sender.send("/ch/2/fader")
    assert sender.recv_until("/ch/2/fader").params == [0.0]


def test_meter_streams_and_queries(osc):
    _, _, _, client = osc
    a = client()
    a.send("/meters/loudness")
    loud = a.recv_until("/meters/loudness")
    assert loud.params == pytest.approx([-18.5, -19.25, METER_FLOOR_DB, -1.5])
    a.send("/subscribe")
    chans = a.recv_until("/meters/channels")
    assert chans.params == pytest.approx([-6.0, METER_FLOOR_DB, -12.0])
    t0 = time.monotonic()
    count = sum(m.address == "/meters/loudness" for m in a.drain(1.0))
    rate = count / (time.monotonic() - t0)
    assert 12 <= rate <= 25  # meter_hz = 20
    a.send("/meters/loudness", (1.0, "f"))
    assert "read-only" in a.recv_until("/error").params[1]


def test_rate_limit_per_client(make_server):
    server, hub, _ = make_server(rate_limit_hz=50.0, burst=10)
    c = Client(server.udp_port)
    version = hub.version
    for i in range(100):
        c.send("/ch/1/fader", float(-(i % 60)))
    msgs = c.drain(0.3)
    applied = hub.version - version
    assert 10 <= applied <= 10 + 50 * 0.5  # the burst, plus what the bucket refilled
    limited = [m for m in msgs if m.address == "/error" and "rate limit" in m.params[1]]
    assert 1 <= len(limited) <= 2  # answered, but at most once a second
    assert server.stats["limited"] >= 60
    time.sleep(0.3)
    c.send("/ch/1/fader", -1.0)  # the bucket refills: accepted again
    assert _query(c, "/ch/1/fader") == [-1.0]
    c.close()


def test_allow_list_drops_other_networks_silently(make_server):
    server, hub, _ = make_server(allow=("10.0.0.0/8",))
    c = Client(server.udp_port)
    c.send("/ch/1/fader", -5.0)
    c.send("/ch/1/fader")
    assert c.drain(0.3) == []
    assert hub.version == 0
    c.close()


def _tcp_frames(sock: socket.socket, count: int) -> list[OscMessage]:
    data = b""
    sock.settimeout(TIMEOUT_S)
    while data.count(slip.END) < 2 * count:
        data += sock.recv(65536)
    return [OscMessage(slip.decode(slip.END + f + slip.END)) for f in data.split(slip.END) if f]


def test_tcp_slip_framing(osc):
    server, _, engine, client = osc
    with socket.create_connection(("127.0.0.1", server.tcp_port)) as sock:
        frame = slip.encode(_message("/ch/2/fader", -9.0).build().dgram)
        sock.sendall(frame[:7])  # a frame split across TCP segments
        time.sleep(0.05)
        sock.sendall(frame[7:] + slip.encode(_message("/ch/2/fader").build().dgram))
        (answer,) = _tcp_frames(sock, 1)
        assert answer.address == "/ch/2/fader" and answer.params == [-9.0]
        sock.sendall(slip.encode(_message("/subscribe").build().dgram))
        time.sleep(0.05)
        client().send("/monitor/cut", (1, "i"))
        end = time.monotonic() + TIMEOUT_S
        feedback = []
        while not feedback and time.monotonic() < end:  # meters stream in between
            feedback = [m for m in _tcp_frames(sock, 1) if m.address == "/monitor/cut"]
        assert feedback[0].params == [1]
    assert engine.get("/ch/2/fader") == -9.0


def test_tcp_size_prefixed_framing(osc):
    """OSC 1.0 streams (int32 size before each packet), which liblo sends over TCP."""
    server, _, engine, _ = osc
    with socket.create_connection(("127.0.0.1", server.tcp_port)) as sock:
        for address, args in (("/ch/3/pan", [0.75]), ("/ch/3/pan", [])):
            dgram = _message(address, *args).build().dgram
            sock.sendall(struct.pack(">i", len(dgram)) + dgram)
        sock.settimeout(TIMEOUT_S)
        head = sock.recv(4, socket.MSG_WAITALL)
        body = sock.recv(struct.unpack(">i", head)[0], socket.MSG_WAITALL)
        assert OscMessage(body).params == [0.75]
    assert engine.get("/ch/3/pan") == 0.75


def test_config_validation():
    assert OscConfig.from_mapping({"port": 9100, "allow": ["192.168.1.0/24"]}).port == 9100
    with pytest.raises(ValueError, match="unknown key"):
        OscConfig.from_mapping({"prot": 1})
    with pytest.raises(ValueError, match=r"osc\.port"):
        OscConfig.from_mapping({"port": 70000})
    with pytest.raises(ValueError, match=r"osc\.allow"):
        OscConfig.from_mapping({"allow": ["192.168.1.300/24"]})
    with pytest.raises(ValueError, match=r"osc\.rate_limit_hz"):
        OscConfig(rate_limit_hz=float("nan"))


def test_osc_commands_answer_the_sender_and_refuse_with_error(osc):
    _, hub, _, client = osc
    saved = {}
    hub.bind("/snapshot/save", lambda name: saved.setdefault(name, True) and (name,))
    hub.bind("/snapshot/list", lambda: tuple(saved))
    c = client()
    c.send("/snapshot/save", "verse 1")
    assert c.recv_until("/snapshot/save").params == ["verse 1"]
    c.send("/snapshot/list")
    assert c.recv_until("/snapshot/list").params == ["verse 1"]
    c.send("/snapshot/save", 3.0)
    assert c.recv_until("/error").params == ["/snapshot/save", "/snapshot/save: takes s name"]
    c.send("/player/load", "/x.wav")  # nothing bound: this session has no player
    assert c.recv_until("/error").params == [
        "/player/load", "/player/load: not available in this session"
    ]  # fmt: skip
    assert saved == {"verse 1": True}
