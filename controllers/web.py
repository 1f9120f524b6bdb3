"""studiod's HTTP server: OSCQuery, its WebSocket, the dashboard and Prometheus metrics on
one port (``[osc] oscquery_port``).

aiohttp, on a thread and event loop of its own: nothing here runs on the audio thread or
the control loop, and a client cannot hold either.

``GET /`` and every other path
    OSCQuery (:mod:`studiod.controllers.oscquery`): the namespace, ``?HOST_INFO``, attributes.
``GET /`` with ``Upgrade: websocket`` (any path)
    The OSCQuery WebSocket. Text frames are JSON commands: ``{"COMMAND": "LISTEN", "DATA":
    "/ch/1/fader"}`` streams every change of that method, whoever makes it (MIDI, OSC, a
    scene, another page), as a binary frame holding the OSC message; meters (``/meters/...``)
    stream at ``WS_METER_HZ``; ``IGNORE`` stops it. Binary frames are OSC packets handled as
    the OSC server handles a datagram (sets, queries, commands, patterns, bundles), the
    answers and ``/error`` replies coming back as binary frames. ``{"COMMAND":
    "PATH_CHANGED", "DATA": "/"}`` is sent when the namespace changes (a reload with another
    session, a part that brings its commands). studiod adds one command: ``{"COMMAND":
    "AUTH", "DATA": "<password>"}``, answered ``{"COMMAND": "AUTH", "DATA": true|false}``;
    with ``[osc] password`` set, a client may change nothing before it.
``GET /ui/``
    The dashboard (``controllers/ui``: every asset is served from here, nothing from the
    internet). ``GET /ui/api/dashboard`` is its start-up state, ``GET
    /ui/api/history?from=T&to=T&bus=B`` the loudness log's readings and alerts in a range.
``GET /metrics``
    Prometheus exposition format (:mod:`studiod.daemon.metrics`).

Access: the OSC allow-list (``[osc] allow``) applies to every request (403 otherwise). A
browser always sends ``Origin`` with a WebSocket handshake; one from another origin is
refused (403), so a page elsewhere on the LAN cannot drive the daemon through a visitor's
browser. State changes happen only over the WebSocket; every HTTP route is read-only.

Bounds: request heads of at most 8 KiB a line and ``MAX_REQUEST_BYTES`` of body; a
connection's request head must arrive within ``http_header_timeout_s``; an idle keep-alive
connection is closed after ``http_idle_timeout_s``; at most ``http_max_connections``
connections are held, the longest-idle ones closed first when more arrive. A WebSocket client
that does not read has its frames dropped (bounded queue), never the server's memory or
another client's stream; one that stops answering pings is closed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST

from studiod.controllers.jsontext import dumps
from studiod.controllers.osc import (
    METERS_PREFIX,
    OscConfig,
    Peer,
    allow_networks,
    build_message,
    host_allowed,
    meter_messages,
    osc_value,
)
from studiod.controllers.oscquery import answer, host_info

log = logging.getLogger("studiod.web")

WS_METER_HZ = 30.0  # meter frames a second to LISTENers (the dashboard wants >= 20)
WS_FLUSH_S = 0.02  # changes are coalesced per address and sent this often
WS_QUEUE = 512  # frames waiting for one slow client before newer ones are dropped
WS_HEARTBEAT_S = 10.0  # a client that answers no ping for this long is closed
MAX_LISTENS = 4096  # addresses one client may LISTEN to
MAX_REQUEST_BYTES = 65536
MAX_WS_MESSAGE_BYTES = 65536
SWEEP_S = 0.25  # how often connections are checked against the limits
UI_DIR = Path(str(resources.files("studiod.controllers") / "ui"))


@dataclass(frozen=True)
class Providers:
    """What the daemon gives the server (each optional, each called on the server's thread):
    ``meters()`` the meters-provider mapping (:mod:`studiod.controllers.osc`);
    ``dashboard()`` the page's start-up state (JSON-able); ``history(t_from, t_to, bus)``
    readings and alerts (JSON-able); ``metrics()`` the Prometheus exposition (bytes)."""

    meters: Callable[[], Mapping[str, object]] | None = None
    dashboard: Callable[[], dict] | None = None
    history: Callable[[float, float, str | None], dict] | None = None
    metrics: Callable[[], bytes] | None = None


class _WsClient:
    """One WebSocket client: what it listens to and a bounded queue of frames for it."""

    def __init__(self, ws: web.WebSocketResponse, peer: Peer, loop: asyncio.AbstractEventLoop):
        self.ws, self.peer, self.loop = ws, peer, loop
        self.listening: set[str] = set()
        self.queue: asyncio.Queue = asyncio.Queue(WS_QUEUE)
        self.dropped = 0

    def put(self, frame: bytes | str) -> bool:
        """On the loop: queue a frame (dropped, and counted, when the client is behind)."""
        try:
            self.queue.put_nowait(frame)
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            return False

    def send(self, dgram: bytes) -> bool:
        """From any thread (the OSC server's replies and feedback): the osc.Link protocol."""
        try:
            self.loop.call_soon_threadsafe(self.put, dgram)
            return True
        except RuntimeError:  # the loop has closed
            return False

    async def writer(self) -> None:
        while True:
            frame = await self.queue.get()
            if isinstance(frame, bytes):
                await self.ws.send_bytes(frame)
            else:
                await self.ws.send_str(frame)


class _Connection:
    """What the limits need to know about one connection (keyed by aiohttp's handler)."""

    __slots__ = ("busy", "last_active", "opened", "served")

    def __init__(self, now: float):
        self.opened = now
        self.last_active = now
        self.busy = 0  # requests (a WebSocket is one, for its whole life) in progress
        self.served = 0


class WebServer:
    """``WebServer(hub, config, osc=None, name="studiod", providers=Providers())``;
    ``start()`` binds ``config.host``:``config.oscquery_port`` (raises OSError, e.g. when the
    port is taken) and serves on its own thread; ``close()``; ``port`` is the bound port.
    ``osc`` (an :class:`~studiod.controllers.osc.OscServer`) handles the OSC packets that
    WebSocket clients send; without it they are refused."""

    def __init__(self, hub, config: OscConfig, osc=None, name: str = "studiod",
                 providers: Providers | None = None, port: int | None = None):  # fmt: skip
        self.hub, self.config, self.osc, self.name = hub, config, osc, name
        self.providers = providers or Providers()
        self._requested_port = config.oscquery_port if port is None else port
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._clients: set[_WsClient] = set()
        self._connections: dict[object, _Connection] = {}
        self._changed: set[str] = set()
        self._namespace: tuple = ()
        self._hub_token: int | None = None
        self._networks = allow_networks(config)
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._evict_logged = -math.inf
        self.stats = {"evicted": 0, "timed_out": 0, "refused": 0, "ws_dropped": 0}

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> WebServer:
        host = self.config.host
        family = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][0]
        self._sock = socket.create_server(
            (host, self._requested_port), family=family, backlog=256,
            dualstack_ipv6=False, reuse_port=False,
        )  # fmt: skip
        self._namespace = self._current_namespace()  # what clients are told changed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        self._started.wait(10.0)
        if self._failure is not None:
            self.close()
            raise OSError(f"web server did not start: {self._failure}")
        self._hub_token = self.hub.subscribe(self._on_change)
        log.info("web: http://%s:%d/ (OSCQuery), /ui/ (dashboard), /metrics", host, self.port)
        return self

    def close(self) -> None:
        if self._hub_token is not None:
            self.hub.unsubscribe(self._hub_token)
            self._hub_token = None
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                future.result(timeout=5.0)
            except Exception as exc:  # the loop is stopped below either way
                log.warning("web: shutdown: %s", exc)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=5.0)
        self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1] if self._sock is not None else 0

    def broadcast(self, address: str, args) -> None:
        """Send one message (an ``/alert``) to the WebSocket clients LISTENing to it, from
        any thread."""
        loop = self._loop
        if loop is None:
            return
        dgram = build_message(address, args)
        try:
            loop.call_soon_threadsafe(self._to_listeners, address, dgram)
        except RuntimeError:
            pass  # closing

    def _to_listeners(self, address: str, dgram: bytes) -> None:
        for client in self._clients:
            if address in client.listening:
                client.put(dgram)

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._failure = exc
            loop.close()
            self._started.set()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _serve(self) -> None:
        cfg = self.config
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/ui", self._to_ui)
        app.router.add_get("/ui/", self._index)
        app.router.add_get("/ui/api/dashboard", self._dashboard)
        app.router.add_get("/ui/api/history", self._history)
        app.router.add_static("/ui", UI_DIR, follow_symlinks=False)
        app.router.add_get("/{path:.*}", self._oscquery)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None,
            keepalive_timeout=cfg.http_idle_timeout_s, max_line_size=8190, max_field_size=8190,
            shutdown_timeout=1.0,
        )  # fmt: skip
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(_every(WS_FLUSH_S, self._flush)),
            loop.create_task(_every(1.0 / WS_METER_HZ, self._meters)),
            loop.create_task(_every(SWEEP_S, self._sweep)),
        ]

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        closing = [c.ws.close(code=WSCloseCode.GOING_AWAY) for c in self._clients]
        if closing:
            await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=1.0)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- limits and access -------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler):
        host = request.remote or ""
        if not host_allowed(host, self._networks):
            self.stats["refused"] += 1
            raise web.HTTPForbidden(text="not in this studiod's allow-list\n")
        conn = self._connection(request.protocol)
        conn.busy += 1
        try:
            response = await handler(request)
        finally:
            conn.busy -= 1
            conn.served += 1
            conn.last_active = time.monotonic()
        if isinstance(response, web.StreamResponse) and not response.prepared:
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    def _connection(self, handler) -> _Connection:
        conn = self._connections.get(handler)
        if conn is None:
            conn = self._connections[handler] = _Connection(time.monotonic())
        return conn

    def _sweep(self) -> None:
        """Close connections whose request head is late or that idle too long, and the
        longest-idle ones while more than ``http_max_connections`` are open."""
        cfg = self.config
        now = time.monotonic()
        handlers = self._runner.server.connections
        live = set(handlers)
        for gone in [h for h in self._connections if h not in live]:
            del self._connections[gone]
        idle, closed = [], 0
        for handler in handlers:
            conn = self._connection(handler)
            if conn.busy:
                continue
            limit = cfg.http_idle_timeout_s if conn.served else cfg.http_header_timeout_s
            if now - conn.last_active > limit:
                self.stats["timed_out"] += 1
                closed += 1
                handler.force_close()
            else:
                idle.append((conn.last_active, id(handler), handler))
        over = len(handlers) - closed - cfg.http_max_connections
        if over > 0:
            evict = sorted(idle)[:over]
            for _, _, handler in evict:
                handler.force_close()
            self.stats["evicted"] += len(evict)
            if now - self._evict_logged > 10.0:
                self._evict_logged = now
                log.warning("web: more than %d connections: closed the %d idle longest "
                            "(%d in all so far)", cfg.http_max_connections, len(evict),
                            self.stats["evicted"])  # fmt: skip

    # -- OSCQuery and the WebSocket ------------------------------------------------------
    def _host_info(self, request: web.Request) -> dict:
        bound = self.config.host
        ip = None if bound in ("0.0.0.0", "::", "") else bound
        osc_port = self.osc.udp_port if self.osc is not None else self.config.port
        return host_info(self.name, ip, osc_port, self.port)

    def _meter_values(self) -> Mapping[str, object] | None:
        provider = self.providers.meters
        if provider is None:
            return None
        try:
            return provider()
        except Exception as exc:  # a broken provider must not break the namespace
            log.warning("web: meters provider failed: %s", exc)
            return None

    async def _oscquery(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        status, body = answer(
            request.path_qs, self.hub.registry, self._host_info(request), self._meter_values(),
            self.hub.commands(),
        )  # fmt: skip
        if body is None:
            return web.Response(status=status)
        return web.json_response(body, status=status, dumps=_json)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not _same_origin(origin, request.host):
            self.stats["refused"] += 1
            log.warning("web: refused a WebSocket from %s opened by a page of %s",
                        request.remote, origin)  # fmt: skip
            raise web.HTTPForbidden(text="a page of another origin may not open this socket\n")
        ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, max_msg_size=MAX_WS_MESSAGE_BYTES)
        await ws.prepare(request)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peer = Peer("ws", request.remote or "", peername[1] if peername else 0)
        client = _WsClient(ws, peer, asyncio.get_running_loop())
        self._clients.add(client)
        locked = bool(self.config.password)
        if self.osc is not None:
            self.osc.attach(peer, client, readonly=locked)
        writer = asyncio.get_running_loop().create_task(client.writer())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._command(client, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._packet(client, msg.data)
        finally:
            writer.cancel()
            self._clients.discard(client)
            self.stats["ws_dropped"] += client.dropped
            if self.osc is not None:
                self.osc.detach(peer)
        return ws

    def _command(self, client: _WsClient, text: str) -> None:
        try:
            message = json.loads(text)
            command, data = message["COMMAND"], message.get("DATA")
        except (ValueError, TypeError, KeyError):
            log.debug("web: %s sent a text frame that is no command: %.80r", client.peer, text)
            return
        if command == "LISTEN" and isinstance(data, str):
            if len(client.listening) < MAX_LISTENS:
                client.listening.add(data)
                if data in self.hub.registry:  # where it is now, then every change
                    client.put(self._value_message(data))
        elif command == "IGNORE" and isinstance(data, str):
            client.listening.discard(data)
        elif command == "AUTH" and isinstance(data, str):
            ok = bool(self.config.password) and hmac.compare_digest(
                data.encode(), self.config.password.encode()
            )
            if ok and self.osc is not None:
                self.osc.set_readonly(client.peer, False)
            if not ok:
                log.warning("web: %s gave a wrong password", client.peer)
            client.put(json.dumps({"COMMAND": "AUTH", "DATA": ok}))
        else:
            log.debug("web: %s: unknown command %.40r", client.peer, command)

    async def _packet(self, client: _WsClient, data: bytes) -> None:
        if self.osc is None:
            client.put(build_message("/error", ["", "this server takes no OSC"]))
            return
        # a command may take a while (loading a reference track): off the loop
        await asyncio.get_running_loop().run_in_executor(
            None, self.osc.handle_packet, bytes(data), client.peer
        )

    def _value_message(self, address: str) -> bytes:
        param = self.hub.registry[address]
        return build_message(address, [osc_value(param, self.hub.get(address))])

    def _on_change(self, change) -> None:
        """Hub listener (any thread): note the address; :meth:`_flush` sends."""
        loop = self._loop
        if loop is not None and self._clients:
            try:  # the set is looked up on the loop: _flush may have swapped it meanwhile
                loop.call_soon_threadsafe(self._note_change, change.param.address)
            except RuntimeError:
                pass  # closing

    def _note_change(self, address: str) -> None:
        self._changed.add(address)

    def _current_namespace(self) -> tuple:
        return (self.hub.registry, tuple(c.address for c in self.hub.commands()))

    def _flush(self) -> None:
        namespace = self._current_namespace()
        if namespace != self._namespace:
            text = json.dumps({"COMMAND": "PATH_CHANGED", "DATA": "/"})
            for client in list(self._clients):
                client.put(text)
        self._namespace = namespace
        changed, self._changed = self._changed, set()
        registry = self.hub.registry
        for address in changed:
            if address not in registry:
                continue
            listeners = [c for c in self._clients if address in c.listening]
            if listeners:
                dgram = self._value_message(address)
                for client in listeners:
                    client.put(dgram)

    def _meters(self) -> None:
        wanted = {a for c in self._clients for a in c.listening if a.startswith(METERS_PREFIX)}
        if not wanted:
            return
        messages = meter_messages(self._meter_values())
        for client in list(self._clients):
            for address in client.listening & wanted:
                dgram = messages.get(address)
                if dgram is not None:
                    client.put(dgram)

    # -- the dashboard and metrics -------------------------------------------------------
    async def _to_ui(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(UI_DIR / "index.html")

    async def _dashboard(self, request: web.Request) -> web.StreamResponse:
        state = self.providers.dashboard() if self.providers.dashboard else {}
        state = {"name": self.name, "password": bool(self.config.password), **state}
        return web.json_response(state, dumps=_json)

    async def _history(self, request: web.Request) -> web.StreamResponse:
        if self.providers.history is None:
            raise web.HTTPNotFound(text="no loudness log in this daemon\n")
        now = time.time()
        try:
            t_to = float(request.query.get("to", now))
            t_from = float(request.query.get("from", t_to - 3600.0))
        except ValueError:
            raise web.HTTPBadRequest(text="from and to are Unix times in seconds\n") from None
        if not (math.isfinite(t_from) and math.isfinite(t_to) and t_from < t_to):
            raise web.HTTPBadRequest(text="from must be before to\n")
        bus = request.query.get("bus") or None
        loop = asyncio.get_running_loop()
        # SQLite reads off the loop: a long range must not hold the meter streams
        body = await loop.run_in_executor(None, self.providers.history, t_from, t_to, bus)
        return web.json_response(body, dumps=_json)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        if self.providers.metrics is None:
            raise web.HTTPNotFound(text="no metrics in this server\n")
        body = await asyncio.get_running_loop().run_in_executor(None, self.providers.metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _every(period_s: float, work: Callable[[], None]) -> None:
    """``work()`` every ``period_s`` on the loop; a failure is logged (at most once a
    minute) and the next period runs anyway."""
    logged = -math.inf
    while True:
        await asyncio.sleep(period_s)
        try:
            work()
        except Exception:
            if time.monotonic() - logged > 60.0:
                logged = time.monotonic()
                log.exception("web: %s failed", work.__name__)


_json = partial(dumps, indent=None)  # aiohttp's json_response takes a one-argument dumps


def _same_origin(origin: str, host: str) -> bool:
    """Whether a page's ``Origin`` (scheme://host[:port]) is this server's ``Host``."""
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()
