"""OSCQuery: the OSC address space as JSON over HTTP, generated from the registry.

After the OSCQuery proposal (Vidvox, github.com/Vidvox/OSCQueryProposal): ``GET /`` returns
the whole namespace as nested nodes (``FULL_PATH``, ``CONTENTS``, and for every method
``TYPE``, ``VALUE``, ``RANGE``, ``ACCESS``, ``DESCRIPTION``, ``UNIT``), ``GET /ch/1`` a
subtree, ``GET /ch/1/fader?VALUE`` one attribute (``{"VALUE": [-6.0]}``) and
``GET /?HOST_INFO`` the server description (name, OSC address, port and transport, the
attributes we support). Errors are HTTP status codes as the proposal lists them: 404 for an
unknown path, 400 for an unknown attribute, 204 for an attribute this node has not (the
VALUE of a container). Values are read live from the registry, so a change made over OSC,
MIDI or a snapshot is in the next GET. Streaming over WebSockets (``LISTEN``) is not
offered: OSC ``/subscribe`` does that job.

A node can be both a method and a container (``/monitor/dim`` is a toggle and
``/monitor/dim/level`` lives under it); the proposal allows attributes and CONTENTS together.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from studiod.controllers.commands import Command
from studiod.controllers.osc import (
    LOUDNESS_KEYS,
    METERS_LOUDNESS,
    meter_db,
    osc_type,
    osc_value,
)
from studiod.dsp.registry import ENUM, FADER, LOG, TOGGLE, Param, Registry

log = logging.getLogger("studiod.oscquery")

# ACCESS bit mask (OSCQuery proposal): 1 readable, 2 writable.
HTTP_IDLE_TIMEOUT_S = 30.0
ACCESS_READ = 1
ACCESS_WRITE = 2
ACCESS_READ_WRITE = 3

# Our units -> the proposal's units.md names (Jamoma dataspace). dB values are not clipped
# at the bottom of the range in a way a client should compute, so "gain.db" is the closest.
_UNITS = {
    "dB": "gain.db",
    "dBTP": "gain.db",
    "dBFS": "gain.db",
    "Hz": "time.hz",
    "ms": "time.ms",
    "s": "time.second",
}

ATTRIBUTES = (
    "FULL_PATH",
    "CONTENTS",
    "TYPE",
    "VALUE",
    "RANGE",
    "ACCESS",
    "DESCRIPTION",
    "UNIT",
    "CLIPMODE",
)
EXTENSIONS = {
    "ACCESS": True,
    "VALUE": True,
    "RANGE": True,
    "DESCRIPTION": True,
    "TYPE": True,
    "UNIT": True,
    "CLIPMODE": True,
    "TAGS": False,
    "EXTENDED_TYPE": False,
    "CRITICAL": False,
    "HTML": False,
    "LISTEN": False,
    "PATH_CHANGED": False,
    "PATH_RENAMED": False,
    "PATH_ADDED": False,
    "PATH_REMOVED": False,
}


def describe(param: Param) -> str:
    """A one-line description: what it is, its unit and taper."""
    text = param.description or param.address.rsplit("/", 1)[-1]
    if param.kind == TOGGLE:
        return f"{text} (0 off, 1 on)"
    if param.kind == ENUM:
        return f"{text}: one of {', '.join(param.choices)} (name or index)"
    taper = {FADER: ", fader law, bottom = -inf", LOG: ", log taper"}.get(param.taper, "")
    unit = f" [{param.unit}]" if param.unit else ""
    return f"{text}{unit}{taper}"


def method_node(param: Param, value: float) -> dict:
    """The OSCQuery node of one parameter with its current engine value."""
    if param.kind == ENUM:
        rng = {"VALS": list(param.choices)}
    elif param.kind == TOGGLE:
        rng = {"MIN": 0, "MAX": 1, "VALS": [0, 1]}
    else:
        rng = {"MIN": param.minimum, "MAX": param.maximum}
    node = {
        "FULL_PATH": param.address,
        "TYPE": osc_type(param),
        "VALUE": [osc_value(param, value)],
        "RANGE": [rng],
        "ACCESS": ACCESS_READ_WRITE,
        "DESCRIPTION": describe(param),
        # out-of-range values are refused with /error, never clipped
        "CLIPMODE": ["none"],
    }
    unit = _UNITS.get(param.unit)
    if unit:
        node["UNIT"] = [unit]
    return node


def _container(path: str) -> dict:
    return {"FULL_PATH": path, "ACCESS": 0, "CONTENTS": {}}


def command_node(command: Command) -> dict:
    """The OSCQuery node of a command: a method one sends (write-only), its arguments'
    types (none: no TYPE) and what it does and answers."""
    node = {
        "FULL_PATH": command.address,
        "ACCESS": ACCESS_WRITE,
        "DESCRIPTION": f"{command.description}; takes {command.usage}"
        + (f"; answers {command.replies}" if command.replies else ""),
    }
    if command.types:
        node["TYPE"] = command.types
    return node


def build_tree(
    registry: Registry,
    meters: Mapping[str, object] | None = None,
    commands: Iterable[Command] = (),
) -> tuple[dict, dict[str, dict]]:
    """The whole namespace: (root node, {path: node}) from the registry's current values.

    ``meters`` (a meters-provider mapping) adds the read-only ``/meters/loudness`` method;
    ``commands`` the commands the daemon carries out (those bound on its hub).
    """
    root = _container("/")
    root["DESCRIPTION"] = "studiod: every parameter of the mix and monitor engine"
    index = {"/": root}

    def node_at(path: str) -> dict:
        node = index.get(path)
        if node is None:
            parent_path, name = path.rsplit("/", 1)
            parent = node_at(parent_path or "/")
            node = parent.setdefault("CONTENTS", {}).setdefault(name, {"FULL_PATH": path})
            node.setdefault("ACCESS", 0)
            index[path] = node
        return node

    values = registry.values
    for param in registry:
        node = node_at(param.address)
        node.update(method_node(param, float(values[param.index])))
    for command in commands:
        node_at(command.address).update(command_node(command))
    if meters is not None:
        node = node_at(METERS_LOUDNESS)
        node.update(
            {
                "TYPE": "ffff",
                "ACCESS": ACCESS_READ,
                "VALUE": [meter_db(meters.get(k, -math.inf)) for k in LOUDNESS_KEYS],
                "RANGE": [{"MIN": -144.0, "MAX": 0.0}] * 3 + [{"MIN": -144.0, "MAX": 20.0}],
                "UNIT": ["gain.db"] * 4,
                "DESCRIPTION": "momentary, short-term, integrated LUFS and true peak dBTP "
                "(OSC /subscribe streams it)",
            }
        )
    for path, node in index.items():
        if "CONTENTS" in node and path != "/" and "DESCRIPTION" not in node:
            node["DESCRIPTION"] = f"{path} container"
    return root, index


def host_info(name: str, osc_ip: str | None, osc_port: int, transport: str = "UDP") -> dict:
    """The ``?HOST_INFO`` reply. Without ``osc_ip`` (bound to every interface) the proposal
    says clients use the address they reached the HTTP server on."""
    info = {
        "NAME": name,
        "OSC_PORT": osc_port,
        "OSC_TRANSPORT": transport,
        "EXTENSIONS": dict(EXTENSIONS),
    }
    if osc_ip:
        info["OSC_IP"] = osc_ip
    return info


class OscQueryServer:
    """HTTP server for the OSCQuery namespace of ``hub``'s registry (live values).

    ``OscQueryServer(hub, host, port, osc_port, name, osc_transport, meters_provider)``;
    ``start()``/``close()``; ``port`` is the bound port (useful with port 0).
    """

    def __init__(
        self,
        hub,
        host: str = "127.0.0.1",
        port: int = 9001,
        osc_port: int = 9000,
        name: str = "studiod",
        osc_transport: str = "UDP",
        meters_provider: Callable[[], Mapping[str, object]] | None = None,
    ):
        self.hub = hub
        self.host = host
        self.name = name
        self.osc_port = osc_port
        self.osc_transport = osc_transport
        self.meters_provider = meters_provider
        self._requested = (host, port)
        self._http: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> OscQueryServer:
        family = socket.getaddrinfo(self.host, None, proto=socket.IPPROTO_TCP)[0][0]
        server_cls = type("_Http", (_HttpServer,), {"address_family": family})
        self._http = server_cls(self._requested, _Handler)
        self._http.daemon_threads = True
        self._http.oscquery = self
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(0.1,), name="oscquery-http", daemon=True
        )
        self._thread.start()
        log.info("oscquery: http://%s:%d/", self.host, self.port)
        return self

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> OscQueryServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._http.server_address[1] if self._http else 0

    def answer(self, target: str) -> tuple[int, dict | None]:
        """(HTTP status, JSON body) for a request target such as ``/ch/1/fader?VALUE``."""
        parts = urlsplit(target)
        path = unquote(parts.path) or "/"
        if len(path) > 1:
            path = path.rstrip("/")
        query = unquote(parts.query)
        if query == "HOST_INFO":
            ip = None if self.host in ("0.0.0.0", "::", "") else self.host
            return 200, host_info(self.name, ip, self.osc_port, self.osc_transport)
        meters = None
        if self.meters_provider is not None:
            try:
                meters = self.meters_provider()
            except Exception as exc:
                log.warning("oscquery: meters provider failed: %s", exc)
        _, index = build_tree(self.hub.registry, meters, self.hub.commands())
        node = index.get(path)
        if node is None:
            return 404, None
        if not query:
            return 200, node
        if query not in ATTRIBUTES:
            return 400, None
        if query not in node:
            return 204, None
        return 200, {query: node[query]}


class _HttpServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """One log line, never socketserver's traceback on stderr: a client that went away
        mid-answer (a phone locking its screen) is routine, anything else is reported."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("oscquery: %s went away: %s", client_address[0], exc)
        else:
            log.warning(
                "oscquery: request from %s failed: %s: %s",
                client_address[0],
                type(exc).__name__,
                exc,
            )


class _Handler(BaseHTTPRequestHandler):
    server_version = "studiod-oscquery/1"
    protocol_version = "HTTP/1.1"
    # a keep-alive client that stops talking frees its thread after this long
    timeout = HTTP_IDLE_TIMEOUT_S

    def do_GET(self) -> None:
        status, body = self.server.oscquery.answer(self.path)
        payload = b"" if body is None else json.dumps(body, allow_nan=False).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def do_HEAD(self) -> None:
        self.do_GET()

    def log_message(self, format: str, *args) -> None:
        log.debug("oscquery: %s %s", self.address_string(), format % args)
