"""OSCQuery over real HTTP (urllib as the client) from the web server, checked against the
registry itself."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest
from pythonosc.osc_message_builder import OscMessageBuilder

from studiod.controllers.hub import ControlHub
from studiod.controllers.osc import OscConfig, OscServer
from studiod.controllers.web import Providers, WebServer
from studiod.dsp.engine import Engine
from studiod.dsp.registry import ENUM, TOGGLE
from studiod.dsp.session import default_session

METERS = {"momentary_lufs": -20.0, "shortterm_lufs": -21.0, "integrated_lufs": -22.0,
          "true_peak_dbtp": -3.0}  # fmt: skip


@pytest.fixture
def served():
    hub = ControlHub(Engine(default_session(2)))
    config = OscConfig(port=0, oscquery_port=0)
    osc = OscServer(hub, config).start()
    http = WebServer(hub, config, osc, providers=Providers(meters=lambda: METERS)).start()
    yield hub, osc, f"http://127.0.0.1:{http.port}"
    http.close()
    osc.close()


def _get(url: str) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read()
            return r.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _walk(node: dict):
    yield node
    for child in node.get("CONTENTS", {}).values():
        yield from _walk(child)


def test_tree_has_every_parameter_with_type_range_value_access(served):
    hub, _, base = served
    status, root = _get(base + "/")
    assert status == 200
    methods = {n["FULL_PATH"]: n for n in _walk(root) if "TYPE" in n}
    for p in hub.registry:
        node = methods.pop(p.address)
        assert node["ACCESS"] == 3
        assert node["DESCRIPTION"]
        value = hub.get(p.address)
        if p.kind == ENUM:
            assert node["TYPE"] == "s"
            assert node["RANGE"] == [{"VALS": list(p.choices)}]
            assert node["VALUE"] == [p.choices[int(value)]]
        elif p.kind == TOGGLE:
            assert node["TYPE"] == "i"
            assert node["RANGE"][0]["MIN"] == 0 and node["RANGE"][0]["MAX"] == 1
            assert node["VALUE"] == [int(value)]
        else:
            assert node["TYPE"] == "f"
            assert node["RANGE"] == [{"MIN": p.minimum, "MAX": p.maximum}]
            assert node["VALUE"] == [value]
    assert set(methods) == {"/meters/loudness"}  # the only extra method: read-only meters
    assert methods["/meters/loudness"]["ACCESS"] == 1
    assert methods["/meters/loudness"]["VALUE"] == [-20.0, -21.0, -22.0, -3.0]
    # methods are the leaves (OSC 1.0): no node has a value and contents at once
    for node in _walk(root):
        assert not ("VALUE" in node and node.get("CONTENTS")), node["FULL_PATH"]
    status, dim = _get(base + "/monitor/dim")
    assert status == 200 and dim["ACCESS"] == 0 and set(dim["CONTENTS"]) == {"on", "level"}


def test_host_info(served):
    _, osc, base = served
    status, info = _get(base + "/?HOST_INFO")
    assert status == 200
    assert info["OSC_PORT"] == osc.udp_port
    assert info["OSC_TRANSPORT"] == "UDP"
    assert info["OSC_IP"] == info["WS_IP"] == "127.0.0.1"
    assert info["WS_PORT"] == int(base.rsplit(":", 1)[1])  # the WebSocket on the same port
    assert info["EXTENSIONS"]["VALUE"] and info["EXTENSIONS"]["RANGE"]
    assert info["EXTENSIONS"]["LISTEN"] and info["EXTENSIONS"]["PATH_CHANGED"]
    assert not info["EXTENSIONS"]["PATH_ADDED"]


def test_value_changes_after_an_osc_set(served):
    _, osc, base = served
    assert _get(base + "/ch/2/fader?VALUE") == (200, {"VALUE": [0.0]})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        msg = OscMessageBuilder("/ch/2/fader")
        msg.add_arg(-12.0, "f")
        sock.sendto(msg.build().dgram, ("127.0.0.1", osc.udp_port))
        msg = OscMessageBuilder("/monitor/system")
        msg.add_arg("alt")
        sock.sendto(msg.build().dgram, ("127.0.0.1", osc.udp_port))
    end = time.monotonic() + 2.0
    while _get(base + "/ch/2/fader?VALUE")[1] != {"VALUE": [-12.0]}:
        assert time.monotonic() < end, "the OSC set never showed up in OSCQuery"
        time.sleep(0.01)
    assert _get(base + "/monitor/system?VALUE") == (200, {"VALUE": ["alt"]})


def test_errors_are_http_status_codes(served):
    _, _, base = served
    assert _get(base + "/nope")[0] == 404
    assert _get(base + "/ch/1/fader?BOGUS")[0] == 400
    assert _get(base + "/ch/1?VALUE")[0] == 204  # a container has no value
    assert _get(base + "/ch/1/pan?RANGE") == (200, {"RANGE": [{"MIN": -1.0, "MAX": 1.0}]})
