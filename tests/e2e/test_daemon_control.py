"""The control surfaces running inside the daemon, end to end, in a private network namespace.

``studiod run`` on a JACK server (dummy driver) with a JACK peer playing two tones into it and
recording what it plays (as in test_jack_daemon.py). From other processes and with
independent implementations: liblo's ``oscsend`` moves a fader and mutes a channel and
``oscdump`` (subscribed) receives the feedback, the query answers and the meter streams; the
level the peer records follows each change; the OSC loudness stream agrees with pyloudnorm on
the recording; an HTTP client reads the value over OSCQuery; a zeroconf browser in another
process resolves ``_osc._udp``; a reload that changes ``[osc]`` moves the server. Then: a
nanoKONTROL2 played on JACK MIDI drives the daemon's hub (the OSC subscriber hears of it),
and ``studiod demo`` has OSC, OSCQuery and mDNS up on loopback.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pyloudnorm
import pytest

from tests.e2e.conftest import FS, REPO, DaemonProcess, JackServer, Peer
from tests.e2e.jack_nano import JackNano
from tests.e2e.netns import inside, netns
from tests.e2e.test_jack_daemon import A1, A2, F1, F2, PAN_CENTRE, amplitude, db, programme

pytestmark = pytest.mark.e2e

OSC_PORT = 9000
OSCQUERY_PORT = 9001
DUMP_PORT = 9100
MOVED_PORT = 9002
INSTANCE = "studiod e2e"

CONFIG = """
[audio]
backend = "jack"
client_name = "studiod"
block_frames = 128
[session]
[[session.channel]]
name = "tone"
inputs = 1
[[session.channel]]
name = "bass"
inputs = 2
[[session.monitor.system]]
name = "studio"
outputs = [1, 2]
[state]
dir = "state"
[log]
stats_interval_s = 0
[osc]
port = {port}
meter_hz = 10
[mdns]
name = "{instance}"
[midi]
enabled = {midi}
"""

# A zeroconf browser restricted to 127.0.0.1: resolves the first _osc._udp service.
BROWSER = r"""
import json, sys, time
from zeroconf import IPVersion, ServiceBrowser, Zeroconf
zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
found = []
class Listener:
    def add_service(self, zc, type_, name): found.append(name)
    def update_service(self, zc, type_, name): pass
    def remove_service(self, zc, type_, name): pass
browser = ServiceBrowser(zc, "_osc._udp.local.", Listener())
end = time.monotonic() + 15
out = None
while out is None and time.monotonic() < end:
    for name in list(found):
        info = zc.get_service_info("_osc._udp.local.", name, timeout=3000)
        if info is not None:
            out = {"name": name, "port": info.port, "addresses": info.parsed_addresses(),
                   "txt": {k.decode(): (v or b"").decode() for k, v in info.properties.items()}}
    time.sleep(0.05)
browser.cancel()
zc.close()
print(json.dumps(out))
"""


def browse() -> subprocess.Popen:
    """The browser in its own process (started early: mDNS probing takes a few seconds)."""
    return subprocess.Popen(
        [sys.executable, "-c", BROWSER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def resolved(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    service = json.loads(out)
    assert service is not None, "the browser resolved no _osc._udp service"
    return service


class Dump:
    """``oscdump -L PORT``; a reader thread keeps every line with its arrival time."""

    def __init__(self, port: int):
        self.proc = subprocess.Popen(
            ["oscdump", "-L", str(port)], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.2)  # let it bind

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith("/"):  # liblo 0.31 prefixes the NTP time tag
                line = line.split(" ", 1)[-1]
            with self._cond:
                self.lines.append((time.monotonic(), line))
                self._cond.notify_all()

    def wait_for(self, prefix: str, since: float, timeout: float = 3.0, match=None) -> str:
        """The first line starting with ``prefix`` that arrived after ``since`` (and for
        which ``match(line)`` is true, if given)."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, line in self.lines:
                    if at >= since and line.startswith(prefix) and (match is None or match(line)):
                        return line
                left = end - time.monotonic()
                if left <= 0:
                    recent = [line for at, line in self.lines if at >= since][-20:]
                    raise AssertionError(f"oscdump never printed {prefix!r}; it printed {recent}")
                self._cond.wait(left)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


def oscsend(*args: str, port: int = OSC_PORT) -> float:
    """Send with liblo's oscsend; returns the time just before, for Dump.wait_for."""
    now = time.monotonic()
    subprocess.run(["oscsend", "127.0.0.1", str(port), *args], check=True, timeout=10)
    return now


def floats(line: str) -> list[float]:
    return [float(v) for v in line.split()[2:]]


def law_db(position: float) -> float:
    """The console fader law (X32 OSC breakpoints), written out independently."""
    return float(np.interp(position, [0, 0.0625, 0.25, 0.5, 1.0], [-90, -60, -30, -10, 10]))


def connected(server: JackServer, port: str) -> bool:
    """Whether JACK lists a connection of ``port``."""
    lines = server.run("jack_lsp", "-c", port).stdout.splitlines()
    return any(line.startswith((" ", "\t")) for line in lines)


def wait_until(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def oscquery_value(address: str, port: int = OSCQUERY_PORT):
    url = f"http://127.0.0.1:{port}{address}?VALUE"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["VALUE"]


@netns
def test_daemon_osc_mdns_and_audio(tmp_path):
    assert inside()
    config = tmp_path / "studiod.toml"
    config.write_text(CONFIG.format(port=OSC_PORT, instance=INSTANCE, midi="false"))
    server = JackServer(period=128)
    server.start()
    daemon = peer = dump = None
    try:
        daemon = DaemonProcess(config, server.env, tmp_path)
        daemon.start()
        browser = browse()
        peer = Peer(server, "peer", 2, 2)
        peer.play(programme(), tmp_path)
        peer.wire()
        dump = Dump(DUMP_PORT)
        oscsend("/subscribe", "ii", "60", str(DUMP_PORT))
        time.sleep(0.2)

        def record() -> np.ndarray:
            time.sleep(0.15)  # the 20 ms smoothing and a few periods of latency
            return peer.record(0.5, tmp_path)

        y = record()
        heard = db(A1 * PAN_CENTRE)
        assert db(amplitude(y[:, 0], F1)) == pytest.approx(heard, abs=0.1)

        # an OSC fader move: fed back to the subscriber, in the audio, answered to a query
        sent = oscsend("/ch/1/fader", "f", "-12")
        assert floats(dump.wait_for("/ch/1/fader f", sent)) == [-12.0]
        y = record()
        for col in (0, 1):
            assert db(amplitude(y[:, col], F1)) == pytest.approx(heard - 12.0, abs=0.1)
        sent = oscsend("/ch/1/fader")
        assert floats(dump.wait_for("/ch/1/fader f", sent)) == [-12.0]
        assert oscquery_value("/ch/1/fader") == [-12.0]

        # the meters: momentary loudness of what is heard against pyloudnorm on the
        # recording (a steady signal), true peak of the last one-second reading against the
        # recording's sample peak, channel 1's post-fader peak against the tone
        time.sleep(1.0)  # the reading interval ending in the recording starts after the move
        since = time.monotonic() + 1.1
        y = peer.record(1.2, tmp_path).astype(np.float64)
        loudness = floats(dump.wait_for("/meters/loudness ffff", since))
        reference = pyloudnorm.Meter(FS).integrated_loudness(y[int(0.2 * FS) :])
        assert loudness[0] == pytest.approx(reference, abs=0.3)
        sample_peak = db(float(np.max(np.abs(y))))
        assert sample_peak - 0.05 <= loudness[3] <= sample_peak + 0.5
        channels = floats(dump.wait_for("/meters/channels ff", since))
        assert channels[0] == pytest.approx(db(A1 * PAN_CENTRE) - 12.0, abs=0.2)

        # an OSC mute
        sent = oscsend("/ch/1/mute", "i", "1")
        assert floats(dump.wait_for("/ch/1/mute i", sent)) == [1.0]
        y = record()
        assert db(amplitude(y[:, 0], F1)) < heard - 80
        assert db(amplitude(y[:, 0], F2)) == pytest.approx(db(A2 * PAN_CENTRE), abs=0.1)
        assert floats(dump.wait_for("/meters/channels ff", time.monotonic()))[0] == -144.0

        # unmute: the level after the fader move
        sent = oscsend("/ch/1/mute", "i", "0")
        assert floats(dump.wait_for("/ch/1/mute i", sent)) == [0.0]
        y = record()
        assert db(amplitude(y[:, 0], F1)) == pytest.approx(heard - 12.0, abs=0.1)

        # mDNS: another process resolves the daemon's _osc._udp on loopback
        service = resolved(browser)
        assert service["port"] == OSC_PORT and service["addresses"] == ["127.0.0.1"]
        assert service["name"].startswith(INSTANCE)
        assert service["txt"]["channels"] == "2" and service["txt"]["systems"] == "studio"

        # a reload that moves [osc] restarts the server on the new port, values intact
        config.write_text(CONFIG.format(port=MOVED_PORT, instance=INSTANCE, midi="false"))
        daemon.reload()
        wait_until(lambda: "osc: listening on udp 127.0.0.1:9002" in daemon.log(), 3.0, "OSC")
        oscsend("/subscribe", "ii", "60", str(DUMP_PORT), port=MOVED_PORT)
        sent = oscsend("/ch/1/fader", port=MOVED_PORT)
        assert floats(dump.wait_for("/ch/1/fader f", sent)) == [-12.0]

        assert daemon.stop() == 0
        log = daemon.log()
        assert "Traceback" not in log and "ERROR" not in log, log
        assert "stopped:" in log
    finally:
        for thing in (dump, peer):
            if thing is not None:
                thing.close()
        if daemon is not None:
            daemon.close()
        server.stop()


@netns
def test_demo_has_osc_oscquery_and_mdns_on_loopback(tmp_path):
    assert inside()
    proc = subprocess.Popen(
        [sys.executable, "-m", "studiod.daemon.cli", "demo", "--seconds", "20",
         "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        port = None
        for line in proc.stdout:
            match = re.match(r"\s+OSC\s+udp 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match[1])
                break
        assert port == OSC_PORT, proc.stderr.read() if proc.poll() is not None else ""
        service = resolved(browse())
        assert service["port"] == OSC_PORT and service["addresses"] == ["127.0.0.1"]
        assert oscquery_value("/monitor/system") == ["studio"]
        dump = Dump(DUMP_PORT)
        try:
            oscsend("/subscribe", "ii", "60", str(DUMP_PORT))
            # the demo's programme is playing: the loudness stream reads a real level
            loudness = floats(dump.wait_for("/meters/loudness ffff", time.monotonic()))
            assert -40.0 < loudness[0] < 0.0 and math.isfinite(loudness[0])
        finally:
            dump.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0


MIDI_CONFIG = """
[audio]
backend = "jack"
block_frames = 256
[session]
[[session.channel]]
name = "tone"
inputs = 1
[[session.monitor.system]]
name = "studio"
outputs = [1, 2]
[state]
dir = "state"
[log]
stats_interval_s = 0
[osc]
[mdns]
enabled = false
[midi]
api = "jack"
poll_s = 0.25
"""


@netns
def test_daemon_midi_reaches_the_hub_and_osc_subscribers(tmp_path):
    """JACK MIDI next to JACK audio in the daemon (python-rtmidi holds the GIL inside
    libjack calls that wait for the server; the compiled process callback never needs it):
    a nanoKONTROL2 on JACK MIDI mutes channel 1 and moves its fader through the shipped
    profile, and an OSC subscriber hears of both."""
    assert inside()
    config = tmp_path / "studiod.toml"
    config.write_text(MIDI_CONFIG)
    server = JackServer(period=256)
    server.start()
    os.environ.update(server.env)  # our JACK MIDI client finds the same server
    daemon = dump = nano = None
    try:
        daemon = DaemonProcess(config, server.env, tmp_path)
        daemon.start()
        dump = Dump(DUMP_PORT)
        oscsend("/subscribe", "ii", "60", str(DUMP_PORT))
        dump.wait_for("/meters/loudness", time.monotonic())  # the subscription is live
        oscsend("/ch/1/fader", "f", "-12")
        sent = oscsend("/ch/1/fader")  # a query: the answer goes to the subscribed port
        assert floats(dump.wait_for("/ch/1/fader f", sent)) == [-12.0]
        nano = JackNano()
        wait_until(lambda: "connected on" in daemon.log(), 3.0, "the daemon's MIDI to connect")
        # the daemon has asked for the connection; JACK makes it in a later cycle
        wait_until(lambda: connected(server, "fakekorg:nanoKONTROL2 MIDI 1"), 3.0,
                   "JACK to connect the nanoKONTROL2 port")  # fmt: skip
        # M1 toggles the mute; fader 1 is picked up as 95 -> 40 passes the -12 dB position
        sent = time.monotonic()
        nano.send([0xB0, 48, 127], [0xB0, 48, 0], [0xB0, 0, 95], [0xB0, 0, 40])
        assert floats(dump.wait_for("/ch/1/mute i", sent)) == [1.0]
        moved = law_db(40 / 127)
        dump.wait_for("/ch/1/fader f", sent, match=lambda x: abs(floats(x)[0] - moved) < 1e-3)
        assert oscquery_value("/ch/1/fader") == [pytest.approx(moved, abs=1e-3)]
        assert daemon.stop() == 0
        assert "Traceback" not in daemon.log() and "ERROR" not in daemon.log(), daemon.log()
    finally:
        for thing in (nano, dump):
            if thing is not None:
                thing.close()
        if daemon is not None:
            daemon.close()
        server.stop()
