"""mDNS discovery and OSCQuery seen from another process, in a private network namespace.

The daemon side (engine, hub, OSC server with TCP, OSCQuery HTTP server, zeroconf
advertiser bound to 127.0.0.1) runs in the test process; a separate Python process browses
with zeroconf restricted to 127.0.0.1 and resolves the services; liblo's ``oscsend`` sets a
value on the port that was discovered; an HTTP client reads the OSCQuery tree at the
discovered port and sees the new VALUE.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from studiod.controllers.discovery import Discovery, DiscoveryConfig, instance_name, txt_records
from studiod.controllers.hub import ControlHub
from studiod.controllers.osc import OscConfig, OscServer
from studiod.controllers.web import WebServer
from studiod.dsp.engine import Engine
from studiod.dsp.session import default_session
from tests.e2e.netns import inside, netns

pytestmark = pytest.mark.e2e

BROWSER = r"""
import json, sys, time
from zeroconf import IPVersion, ServiceBrowser, Zeroconf
types = ["_osc._udp.local.", "_osc._tcp.local.", "_oscjson._tcp.local."]
zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
found = {}
class Listener:
    def add_service(self, zc, type_, name): found[name] = type_
    def update_service(self, zc, type_, name): found[name] = type_
    def remove_service(self, zc, type_, name): pass
browser = ServiceBrowser(zc, types, Listener())
end = time.monotonic() + 10
while len(found) < 3 and time.monotonic() < end:
    time.sleep(0.05)
out = []
for name, type_ in found.items():
    info = zc.get_service_info(type_, name, timeout=3000)
    out.append({"type": type_, "name": name, "port": info.port,
                "addresses": info.parsed_addresses(), "server": info.server,
                "txt": {k.decode(): (v or b"").decode() for k, v in info.properties.items()}})
browser.cancel()
zc.close()
print(json.dumps(out))
"""


@netns
def test_services_resolve_from_another_process_and_oscquery_follows_osc():
    assert inside()
    session = default_session(4)
    hub = ControlHub(Engine(session))
    config = OscConfig(host="127.0.0.1", port=9000, tcp=True, oscquery_port=9001)
    osc = OscServer(hub, config).start()
    http = WebServer(hub, config, osc).start()
    systems = [m.name for m in session.systems]
    mdns = Discovery(
        "127.0.0.1",
        osc.udp_port,
        tcp_port=osc.tcp_port,
        oscquery_port=http.port,
        channels=len(session.channels),
        systems=systems,
    ).start()
    try:
        assert mdns.registered.wait(15) and mdns.error is None
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", BROWSER], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, proc.stderr
        resolved = {s["type"]: s for s in json.loads(proc.stdout)}
        browse_s = time.monotonic() - started
        assert set(resolved) == {"_osc._udp.local.", "_osc._tcp.local.", "_oscjson._tcp.local."}
        host = socket.gethostname().split(".")[0]
        for service in resolved.values():
            assert service["addresses"] == ["127.0.0.1"]
            assert host in service["name"]
            assert service["txt"]["channels"] == "4"
            assert service["txt"]["systems"].split(",") == systems
            assert service["txt"]["version"]
        assert resolved["_osc._udp.local."]["port"] == 9000
        assert resolved["_osc._tcp.local."]["port"] == 9000
        query = resolved["_oscjson._tcp.local."]
        assert query["port"] == 9001

        base = f"http://{query['addresses'][0]}:{query['port']}"
        with urllib.request.urlopen(base + "/?HOST_INFO", timeout=5) as r:
            info = json.load(r)
        assert info["OSC_PORT"] == resolved["_osc._udp.local."]["port"]

        def value(address):
            with urllib.request.urlopen(f"{base}{address}?VALUE", timeout=5) as r:
                return json.load(r)["VALUE"]

        assert value("/ch/3/fader") == [0.0]
        udp = resolved["_osc._udp.local."]
        target = [udp["addresses"][0], str(udp["port"])]
        subprocess.run(["oscsend", *target, "/ch/3/fader", "f", "-18"], check=True, timeout=10)
        subprocess.run(["oscsend", *target, "/monitor/system", "s", "car"], check=True)
        # both sets are applied by the server's thread after oscsend has returned: wait for
        # each (checking the second right after seeing the first raced it on a busy machine)
        end = time.monotonic() + 3
        while (value("/ch/3/fader"), value("/monitor/system")) != ([-18.0], ["car"]):
            assert time.monotonic() < end, "OSCQuery never showed the OSC sets"
            time.sleep(0.02)
        with urllib.request.urlopen(base + "/", timeout=5) as r:
            tree = json.load(r)
        node = tree["CONTENTS"]["ch"]["CONTENTS"]["3"]["CONTENTS"]["fader"]
        assert node["VALUE"] == [-18.0] and node["TYPE"] == "f"
        print(f"browse + resolve from another process: {browse_s:.2f} s")
    finally:
        mdns.close()
        http.close()
        osc.close()


def test_names_and_txt_records_fit_dns_limits():
    name = instance_name("a" * 80)
    assert name.startswith("studiod on ") and len(name.encode()) <= 63
    txt = txt_records(16, [f"system{i:02d}" for i in range(40)])
    assert len(f"systems={txt['systems']}".encode()) <= 255
    assert txt["systems"].split(",")[0] == "system00"
    assert all(s.startswith("system") and len(s) == 8 for s in txt["systems"].split(","))
    with pytest.raises(ValueError, match="unknown key"):
        DiscoveryConfig.from_mapping({"enable": True})
