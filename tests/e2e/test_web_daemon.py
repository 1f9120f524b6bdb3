"""The daemon's HTTP face seen from other programs, in a private network namespace:
``studiod demo`` found over mDNS and browsed whole by an independent OSCQuery client (PyPI
``python-oscquery``); a WebSocket client LISTENing while liblo's ``oscsend`` changes the
value; ``/metrics`` read with prometheus_client's own parser; 200 slow connections held
while ``?HOST_INFO`` answers; and, on ``studiod run`` with a password, a change from a
client without it refused."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from studiod.daemon.oscclient import OscClient
from tests.controllers.test_web import READ_ONLY, Ws, _is, _osc, _slow_client
from tests.e2e.conftest import DaemonProcess
from tests.e2e.netns import REPO, inside, netns
from tests.e2e.test_daemon_control import OSC_PORT, oscsend

pytestmark = pytest.mark.e2e

HTTP_PORT = 9001


class Demo:
    """``studiod demo`` in this namespace, until the block ends; ``urls`` are the lines it
    prints (dashboard, OSCQuery, metrics)."""

    def __init__(self, tmp_path):
        self.state = tmp_path / "demo-state"
        self.urls: dict[str, str] = {}

    def __enter__(self) -> Demo:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "studiod.daemon.cli", "demo", "--state-dir", str(self.state)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        for line in self.proc.stdout:
            match = re.match(r"\s+(dashboard|OSCQuery|metrics)\s+(http://\S+)", line)
            if match:
                self.urls[match[1]] = match[2]
            if match and match[1] == "metrics":
                break
        assert set(self.urls) == {"dashboard", "OSCQuery", "metrics"}, self._stderr()
        return self

    def _stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.poll() is not None else ""

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


@netns
def test_demo_prints_its_urls_and_an_independent_oscquery_client_browses_it(tmp_path):
    assert inside()
    from pythonoscquery.osc_query_browser import OSCQueryBrowser
    from pythonoscquery.osc_query_client import OSCQueryClient

    with Demo(tmp_path) as demo:
        base = f"http://127.0.0.1:{HTTP_PORT}"
        assert demo.urls == {"dashboard": f"{base}/ui/", "OSCQuery": f"{base}/",
                             "metrics": f"{base}/metrics"}  # fmt: skip
        browser = OSCQueryBrowser()  # zeroconf: only loopback exists in this namespace
        try:
            end = time.monotonic() + 15.0
            while not browser.get_discovered_oscquery():
                assert time.monotonic() < end, "no OSCQuery service over mDNS"
                time.sleep(0.2)
            service = browser.get_discovered_oscquery()[0]
            assert service.port == HTTP_PORT
            client = OSCQueryClient(service)
            info = client.get_host_info()
            assert info.osc_port == OSC_PORT and info.extensions["LISTEN"]
            root = client.query_node("/")  # the whole tree, parsed node by node
            nodes, stack = [], [root]
            while stack:
                node = stack.pop()
                nodes.append(node)
                stack.extend(node.attributes[_attr("CONTENTS")] or [])
            paths = {n.full_path for n in nodes}
            for address in ("/monitor/dim/on", "/monitor/dim/level", "/monitor/system",
                            "/ch/1/fader", "/meters/loudness", "/snapshot/save"):  # fmt: skip
                assert address in paths
            # values read by the client agree with OSC's answers
            with OscClient("127.0.0.1", OSC_PORT) as osc:
                oscsend("/monitor/system", "s", "car")
                assert osc.ask("/monitor/system") == ["car"]
                for address in ("/monitor/system", "/ch/1/fader", "/monitor/level"):
                    value = client.query_node(address).attributes[_attr("VALUE")]
                    assert value == pytest.approx(osc.ask(address)), address
        finally:
            browser.zc.close()


def _attr(name: str):
    from pythonoscquery.shared.oscquery_spec import OSCQueryAttribute

    return OSCQueryAttribute[name]


@netns
def test_a_websocket_listener_hears_oscsend_and_metrics_parse(tmp_path):
    assert inside()
    from prometheus_client.parser import text_string_to_metric_families

    with Demo(tmp_path) as demo:
        ws = Ws(HTTP_PORT)
        try:
            ws.command("LISTEN", "/ch/2/fader")
            ws.until(_is("/ch/2/fader"))
            sent = time.monotonic()
            oscsend("/ch/2/fader", "f", "-7.5")
            frame = ws.until(lambda f: _is("/ch/2/fader")(f) and f.params == [-7.5])
            assert time.monotonic() - sent < 0.5  # oscsend's own start included
            ws.command("LISTEN", "/meters/loudness")
            count, end = 0, time.monotonic() + 1.0
            while time.monotonic() < end:
                frame = ws.receive(1.0)
                count += frame is not None and _is("/meters/loudness")(frame)
            assert count >= 20  # meter frames a second
        finally:
            ws.close()
        time.sleep(4.0)  # the demo plays: loudness readings, and a loudness-log second or two
        families = {
            f.name: f for f in text_string_to_metric_families(_get(demo.urls["metrics"]).decode())
        }
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in families.values() for s in f.samples}  # fmt: skip
        for bus in ("master", "monitor"):
            for window in ("momentary", "shortterm", "integrated"):
                value = samples[("studiod_loudness_lufs", (("bus", bus), ("window", window)))]
                assert -40.0 < value < 0.0, (bus, window, value)
            assert samples[("studiod_true_peak_dbtp", (("bus", bus),))] < 0.0
        assert samples[("studiod_device_state", (("studiod_device_state", "running"),))] == 1
        assert samples[("studiod_xruns_total", ())] >= 0
        assert samples[("studiod_callbacks_total", ())] > 1000
        assert 0 < samples[("studiod_callback_duration_seconds", (("quantile", "0.5"),))] < 0.01
        assert ("studiod_loudness_lufs", (("bus", "studio"), ("window", "shortterm"))) in samples
        assert not any(math.isnan(v) for v in samples.values())
        # the Grafana dashboard in docs/ asks only for what the daemon exposes
        dashboard = json.loads((REPO / "docs/metrics/grafana-studiod.json").read_text())
        asked = {m for panel in dashboard["panels"] for target in panel["targets"]
                 for m in re.findall(r"studiod_\w+", target["expr"])}  # fmt: skip
        exposed = set(families) | {name for name, _ in samples}  # also those with no sample now
        assert asked and asked <= exposed, asked - exposed


@netns
def test_200_slow_connections_and_host_info_still_answers(tmp_path):
    assert inside()
    with Demo(tmp_path):
        slow = [_slow_client(HTTP_PORT) for _ in range(200)]
        try:
            started = time.monotonic()
            info = json.loads(_get(f"http://127.0.0.1:{HTTP_PORT}/?HOST_INFO", timeout=2.0))
            assert time.monotonic() - started < 2.0
            assert info["OSC_PORT"] == OSC_PORT and info["WS_PORT"] == HTTP_PORT
        finally:
            for sock in slow:
                sock.close()


PASSWORD_CONFIG = """
[audio]
backend = "virtual"
[session]
[[session.channel]]
name = "vox"
inputs = 1
[[session.monitor.system]]
name = "studio"
outputs = [1, 2]
[osc]
port = 9000
oscquery_port = 9001
password = "studio-b"
[mdns]
enabled = false
[midi]
enabled = false
[state]
dir = "state"
[log]
stats_interval_s = 0
"""


@netns
def test_with_a_password_an_unauthenticated_change_is_refused(tmp_path):
    assert inside()
    daemon = DaemonProcess.from_text(PASSWORD_CONFIG, tmp_path)
    daemon.start()
    try:
        ws = Ws(HTTP_PORT)
        try:
            ws.send(_osc("/monitor/level", -10.0))
            error = ws.until(_is("/error"))
            assert error.params == ["/monitor/level", READ_ONLY]
            with OscClient("127.0.0.1", OSC_PORT) as osc:
                assert osc.ask("/monitor/level") == [0.0]
            ws.command("AUTH", "studio-b")
            assert ws.until(lambda f: isinstance(f, dict))["DATA"] is True
            ws.send(_osc("/monitor/level", -10.0))
            ws.send(_osc("/monitor/level"))
            assert ws.until(_is("/monitor/level")).params == [-10.0]
        finally:
            ws.close()
        assert daemon.stop() == 0
        log = daemon.log()
        assert "Traceback" not in log and "wrong password" not in log
    finally:
        daemon.stop()
