"""The web server over real sockets: the OSCQuery WebSocket (LISTEN, IGNORE, PATH_CHANGED,
OSC in binary frames), the password, the same-origin rule, the allow-list and the
connection limits. aiohttp's client speaks WebSocket; raw sockets play the slow clients."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from studiod.controllers.hub import ControlHub
from studiod.controllers.osc import OscConfig, OscServer
from studiod.controllers.web import Providers, WebServer
from studiod.dsp.engine import Engine
from studiod.dsp.session import default_session
from tests.controllers.test_osc_hostile import _closed_by_server

TIMEOUT_S = 5.0
READ_ONLY = "read-only until the client gives the password"


def _osc(address: str, *args) -> bytes:
    msg = OscMessageBuilder(address)
    for arg in args:
        msg.add_arg(arg)
    return msg.build().dgram


@pytest.fixture(scope="module")
def engine_session():
    return default_session(2)


@pytest.fixture
def serve(engine_session):
    """``serve(**config) -> (hub, osc, web)``; closed after the test."""
    started = []

    def start(providers=None, **options):
        hub = ControlHub(Engine(engine_session))
        config = OscConfig(port=0, oscquery_port=0, **options)
        osc = OscServer(hub, config).start()
        web = WebServer(hub, config, osc, providers=providers or Providers()).start()
        started.append((web, osc))
        return hub, osc, web

    yield start
    for web, osc in started:
        web.close()
        osc.close()


class Ws:
    """A WebSocket client on its own event loop, driven synchronously."""

    def __init__(self, port: int, headers: dict | None = None):
        import aiohttp

        self.loop = asyncio.new_event_loop()
        self.session = self.loop.run_until_complete(self._session(aiohttp))
        self.ws = self.loop.run_until_complete(
            self.session.ws_connect(f"http://127.0.0.1:{port}/", headers=headers or {})
        )

    @staticmethod
    async def _session(aiohttp):
        return aiohttp.ClientSession()

    def command(self, command: str, data) -> None:
        self.loop.run_until_complete(
            self.ws.send_str(json.dumps({"COMMAND": command, "DATA": data}))
        )

    def send(self, dgram: bytes) -> None:
        self.loop.run_until_complete(self.ws.send_bytes(dgram))

    def receive(self, timeout: float = TIMEOUT_S):
        """The next frame: an OscMessage (binary) or a dict (text); None on timeout."""
        import aiohttp

        try:
            msg = self.loop.run_until_complete(self.ws.receive(timeout))
        except TimeoutError:
            return None
        if msg.type == aiohttp.WSMsgType.BINARY:
            return OscMessage(msg.data)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return json.loads(msg.data)
        raise AssertionError(f"unexpected frame {msg.type}")

    def until(self, predicate, timeout: float = TIMEOUT_S):
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            frame = self.receive(left)
            if frame is not None and predicate(frame):
                return frame
        raise AssertionError("the frame never came")

    def close(self) -> None:
        self.loop.run_until_complete(self.ws.close())
        self.loop.run_until_complete(self.session.close())
        self.loop.close()


def _is(address: str):
    return lambda f: isinstance(f, OscMessage) and f.address == address


def test_listen_streams_changes_from_any_surface_and_ignore_stops_it(serve):
    hub, osc, web = serve()
    ws = Ws(web.port)
    try:
        ws.command("LISTEN", "/ch/1/fader")
        assert ws.until(_is("/ch/1/fader")).params == [0.0]  # where it is now
        # a change made over OSC/UDP (as MIDI or a scene would, through the hub)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sent = time.monotonic()
            sock.sendto(_osc("/ch/1/fader", -12.0), ("127.0.0.1", osc.udp_port))
            frame = ws.until(_is("/ch/1/fader"))
        assert frame.params == [-12.0] and time.monotonic() - sent < 0.1
        hub.set("/ch/2/mute", 1, source="test")  # not listened to: nothing comes
        ws.command("IGNORE", "/ch/1/fader")
        hub.set("/ch/1/fader", -3.0, source="test")
        assert ws.receive(0.3) is None
    finally:
        ws.close()


def test_osc_in_binary_frames_sets_queries_and_errors_come_back(serve):
    hub, _, web = serve()
    ws = Ws(web.port)
    try:
        ws.send(_osc("/monitor/system", "car"))
        ws.send(_osc("/monitor/system"))
        assert ws.until(_is("/monitor/system")).params == ["car"]
        assert hub.get("/monitor/system") == hub.registry["/monitor/system"].validate("car")
        ws.send(_osc("/monitor/dim/on", 7))
        error = ws.until(_is("/error"))
        assert error.params[0] == "/monitor/dim/on" and "0 or 1" in error.params[1]
        ws.send(b"\x00garbage")
        assert ws.until(_is("/error")).params[1].startswith("malformed")
    finally:
        ws.close()


def test_a_new_namespace_is_announced_with_path_changed(serve, engine_session):
    hub, _, web = serve()
    ws = Ws(web.port)
    try:
        ws.command("LISTEN", "/ch/1/fader")
        ws.until(_is("/ch/1/fader"))
        hub.swap_engine(Engine(default_session(3)))  # a reload with another session
        frame = ws.until(lambda f: isinstance(f, dict))
        assert frame == {"COMMAND": "PATH_CHANGED", "DATA": "/"}
    finally:
        ws.close()


def test_with_a_password_nothing_changes_before_auth(serve):
    hub, _, web = serve(password="s3cret")
    ws = Ws(web.port)
    try:
        ws.send(_osc("/ch/1/fader", -20.0))
        error = ws.until(_is("/error"))
        assert error.params == ["/ch/1/fader", READ_ONLY]
        ws.send(_osc("/ch/1/fader"))  # reading is open
        assert ws.until(_is("/ch/1/fader")).params == [0.0]
        ws.command("AUTH", "wrong")
        assert ws.until(lambda f: isinstance(f, dict)) == {"COMMAND": "AUTH", "DATA": False}
        ws.send(_osc("/snapshot/save", "verse"))  # commands that change things too
        assert ws.until(_is("/error")).params == ["/snapshot/save", READ_ONLY]
        ws.send(_osc("/snapshot/list"))  # one that only reads goes through (to its handler)
        assert ws.until(_is("/error")).params == [
            "/snapshot/list",
            "/snapshot/list: not available in this session",
        ]
        ws.command("AUTH", "s3cret")
        assert ws.until(lambda f: isinstance(f, dict)) == {"COMMAND": "AUTH", "DATA": True}
        ws.send(_osc("/ch/1/fader", -20.0))
        ws.send(_osc("/ch/1/fader"))
        assert ws.until(_is("/ch/1/fader")).params == [-20.0]
        assert hub.get("/ch/1/fader") == -20.0
    finally:
        ws.close()


def test_a_page_of_another_origin_may_not_open_the_socket(serve):
    import aiohttp

    _, _, web = serve()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        Ws(web.port, headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
    ws = Ws(web.port, headers={"Origin": f"http://127.0.0.1:{web.port}"})  # the page itself
    ws.close()


def _get(url: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_hosts_outside_the_allow_list_are_refused(serve):
    _, _, web = serve(allow=("10.0.0.0/8",))
    status, body, _ = _get(f"http://127.0.0.1:{web.port}/?HOST_INFO")
    assert status == 403 and b"allow-list" in body


def test_dashboard_history_and_metrics_come_from_the_providers(serve):
    seen = []

    def history(t_from, t_to, bus):
        seen.append((t_from, t_to, bus))
        return {"bus": bus, "readings": [{"t": t_to, "momentary_lufs": float("-inf")}]}

    providers = Providers(
        dashboard=lambda: {"channels": ["a", "b"]},
        history=history,
        metrics=lambda: b"# HELP x y\n# TYPE x gauge\nx 1.0\n",
    )
    _, _, web = serve(providers=providers, password="pw")
    base = f"http://127.0.0.1:{web.port}"
    status, body, _ = _get(base + "/ui/api/dashboard")
    assert status == 200
    assert json.loads(body) == {"name": "studiod", "password": True, "channels": ["a", "b"]}
    status, body, _ = _get(base + "/ui/api/history?from=100&to=200&bus=car")
    assert status == 200 and seen == [(100.0, 200.0, "car")]
    assert json.loads(body)["readings"] == [{"t": 200.0, "momentary_lufs": None}]  # JSON: no -inf
    assert _get(base + "/ui/api/history?from=300&to=200")[0] == 400
    assert _get(base + "/ui/api/history?from=x")[0] == 400
    status, body, headers = _get(base + "/metrics")
    assert status == 200 and body.endswith(b"x 1.0\n")
    assert headers["Content-Type"].startswith("text/plain; version=")
    status, _, headers = _get(base + "/ui")
    assert status == 200  # redirected to /ui/


def _slow_client(port: int) -> socket.socket:
    """A connection that has sent half a request head and goes quiet (slowloris)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    return sock


def _closed(sock: socket.socket) -> bool:
    return _closed_by_server(sock, 0.01)


def test_200_slow_clients_do_not_stop_a_normal_request(serve):
    _, _, web = serve(http_max_connections=64, http_header_timeout_s=2.0)
    slow = [_slow_client(web.port) for _ in range(200)]
    try:
        started = time.monotonic()
        status, body, _ = _get(f"http://127.0.0.1:{web.port}/?HOST_INFO")
        assert status == 200 and json.loads(body)["NAME"] == "studiod"
        assert time.monotonic() - started < 2.0
        time.sleep(1.0)  # a few sweeps: the longest-idle beyond the cap are closed
        still_open = sum(not _closed(s) for s in slow)
        assert still_open <= 64
        assert web.stats["evicted"] >= 200 - 64
        time.sleep(2.5)  # past the header timeout: the rest go too
        assert not any(not _closed(s) for s in slow)
        assert web.stats["timed_out"] >= 1
    finally:
        for sock in slow:
            sock.close()
