"""OSCQuery: the OSC address space as JSON, generated from the registry.

After the OSCQuery proposal (Vidvox, github.com/Vidvox/OSCQueryProposal): ``GET /`` returns
the whole namespace as nested nodes (``FULL_PATH``, ``CONTENTS``, and for every method
``TYPE``, ``VALUE``, ``RANGE``, ``ACCESS``, ``DESCRIPTION``, ``UNIT``, ``CLIPMODE``),
``GET /ch/1`` a subtree, ``GET /ch/1/fader?VALUE`` one attribute (``{"VALUE": [-6.0]}``)
and ``GET /?HOST_INFO`` the server description (name, OSC address, port and transport, the
WebSocket's, the extensions we support). Errors are HTTP status codes as the proposal lists
them: 404 for an unknown path, 400 for an unknown attribute, 204 for an attribute this node
has not (the VALUE of a container). Values are read live from the registry, so a change made
over OSC, MIDI or a snapshot is in the next GET. The HTTP server and the WebSocket
(``LISTEN``/``IGNORE``, ``PATH_CHANGED``) are :mod:`studiod.controllers.web`.

Methods are the leaves of the tree (OSC 1.0; the registry refuses a method that is also a
container). A command (``/snapshot/save``) has arguments but no value to read or set, so its
ACCESS is 0 ("no value associated") and its TYPE tells what to send.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

from studiod.controllers.commands import Command
from studiod.controllers.osc import (
    METER_DESCRIPTIONS,
    METERS_BUS,
    METERS_LOUDNESS,
    METERS_LRA,
    meter_values,
    osc_type,
    osc_value,
)
from studiod.dsp.registry import ENUM, FADER, LOG, TOGGLE, Param, Registry

# ACCESS bit mask (OSCQuery proposal): 0 no value, 1 readable, 2 writable.
ACCESS_NONE = 0
ACCESS_READ = 1
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
    "LISTEN": True,  # over the WebSocket (studiod.controllers.web)
    "PATH_CHANGED": True,
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
    """The OSCQuery node of a command: a method one sends, with no value to read or set
    (ACCESS 0), its arguments' types (none: no TYPE) and what it does and answers."""
    node = {
        "FULL_PATH": command.address,
        "ACCESS": ACCESS_NONE,
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

    ``meters`` (a meters-provider mapping) adds the read-only ``/meters/...`` methods;
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
    for address, values in meter_values(meters).items():
        node_at(address).update(meter_node(address, values))
    for path, node in index.items():
        if "CONTENTS" in node and path != "/" and "DESCRIPTION" not in node:
            node["DESCRIPTION"] = f"{path} container"
    return root, index


def meter_node(address: str, values: list) -> dict:
    """The node of a meter stream (read-only; LISTEN to it over the WebSocket)."""
    types = "".join({str: "s", int: "i"}.get(type(v), "f") for v in values)
    generic = METER_DESCRIPTIONS.get(METERS_BUS if address.startswith(METERS_BUS) else address)
    node = {
        "FULL_PATH": address,
        "TYPE": types,
        "ACCESS": ACCESS_READ,
        "VALUE": values,
        "DESCRIPTION": generic or address,
    }
    if address in (METERS_LOUDNESS, METERS_LRA) or address.startswith(METERS_BUS):
        node["UNIT"] = ["gain.db"] * len(values)
    return node


def host_info(
    name: str, ip: str | None, osc_port: int, ws_port: int, transport: str = "UDP"
) -> dict:
    """The ``?HOST_INFO`` reply. Without ``ip`` (bound to every interface) the proposal says
    clients use the address they reached the HTTP server on, for OSC and the WebSocket."""
    info = {
        "NAME": name,
        "OSC_PORT": osc_port,
        "OSC_TRANSPORT": transport,
        "WS_PORT": ws_port,
        "EXTENSIONS": dict(EXTENSIONS),
    }
    if ip:
        info["OSC_IP"] = ip
        info["WS_IP"] = ip
    return info


def answer(
    target: str,
    registry: Registry,
    info: dict,
    meters: Mapping[str, object] | None = None,
    commands: Iterable[Command] = (),
) -> tuple[int, dict | None]:
    """(HTTP status, JSON body) for a request target such as ``/ch/1/fader?VALUE``;
    ``info`` is the HOST_INFO reply."""
    parts = urlsplit(target)
    path = unquote(parts.path) or "/"
    if len(path) > 1:
        path = path.rstrip("/")
    query = unquote(parts.query)
    if query == "HOST_INFO":
        return 200, info
    _, index = build_tree(registry, meters, commands)
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
