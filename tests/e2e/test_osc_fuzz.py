"""Fuzzing a live daemon over OSC, in a private network namespace.

``studiod run`` on the virtual audio device, OSC on UDP and TCP at 127.0.0.1, the rate limit
lifted so that every datagram reaches the parser and dispatcher. A seeded generator sends
20 000 datagrams in bursts of 1000 (another 80 000 go through the packet handler in
process: tests/controllers/test_osc_fuzz.py): random bytes, mutated valid messages, valid
messages with NaN/Inf/extreme values of every OSC type to every kind of parameter, wildcard
storms,
bundles nested up to 3000 deep, broken bundle sizes (a negative one made python-osc's parser
loop for ever), and a few near-64 KB bundles. After every burst a query from another socket
must be answered within 100 ms; TCP clients send garbage frames alongside. At the end the
daemon is still running, stops cleanly, and its log holds no traceback and stays short
(refusals are logged once per client per second).
"""

from __future__ import annotations

import random
import socket
import struct
import time
import tomllib

import pytest
from pythonosc.osc_message import OscMessage

from studiod.dsp.layout import build_layout
from studiod.dsp.session import Session
from tests.controllers.osc_fuzz import Fuzzer, message
from tests.e2e.conftest import DaemonProcess
from tests.e2e.netns import netns

pytestmark = pytest.mark.e2e

OSC_PORT = 9000
BURSTS = 20
BURST = 1000
ANSWER_WITHIN_S = 0.1

SESSION = """
[session]
[[session.channel]]
name = "kick"
inputs = 1
[[session.channel]]
name = "keys"
inputs = [2, 3]
[[session.group]]
name = "drums"
[[session.fx]]
name = "verb"
kind = "reverb"
[[session.monitor.system]]
name = "studio"
outputs = [1, 2]
[[session.monitor.system]]
name = "phone"
outputs = [1]
simulation = "phone"
mono = true
"""

CONFIG = (
    """
[audio]
backend = "virtual"
block_frames = 128
realtime_priority = 0
"""
    + SESSION
    + """
[state]
dir = "state"
[log]
stats_interval_s = 0
[osc]
port = 9000
tcp = true
rate_limit_hz = 1000000
burst = 1000000
oscquery_port = 0
[mdns]
enabled = false
[midi]
enabled = false
"""
)


def _query(sock: socket.socket) -> float:
    """Seconds until /ch/1/fader is answered. The query is sent again every 10 ms: a burst
    can overflow the daemon's socket buffer, and the kernel then drops the query itself; a
    daemon stalled by a datagram answers none of them."""
    start = time.monotonic()
    query = message("/ch/1/fader")
    while (now := time.monotonic()) < start + 2.0:
        sock.sendto(query, ("127.0.0.1", OSC_PORT))
        sock.settimeout(0.01)
        try:
            while True:
                if OscMessage(sock.recv(65536)).address == "/ch/1/fader":
                    return time.monotonic() - start
        except TimeoutError:
            continue
    return now - start


def _tcp_garbage(rng: random.Random, fuzz: Fuzzer) -> None:
    """A TCP client: size-prefixed frames of fuzz, some with lying sizes, then a close."""
    try:
        with socket.create_connection(("127.0.0.1", OSC_PORT), timeout=1.0) as sock:
            for _ in range(20):
                frame = fuzz.datagram()
                size = len(frame) if rng.random() < 0.9 else rng.randrange(2**31)
                sock.sendall(struct.pack(">I", size) + frame)
    except OSError:
        pass  # the server closed a client whose frame was too long: that is the point


@netns
def test_20k_fuzzed_datagrams_against_a_live_daemon(tmp_path):
    session = Session.from_dict(tomllib.loads(SESSION)["session"])
    addresses = [p.address for p in build_layout(session).registry]
    addresses += ["/subscribe", "/unsubscribe", "/meters/loudness", "/meters/channels", "/"]
    daemon = DaemonProcess.from_text(CONFIG, tmp_path)
    daemon.start()
    fuzz = Fuzzer(12, addresses)
    rng = random.Random(13)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    asker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    slow = []
    started = time.monotonic()
    try:
        assert _query(asker) < 2.0, daemon.log()
        for burst in range(BURSTS):
            for k in range(BURST):
                dgram = fuzz.datagram(big=k < 2 and burst % 4 == 0)
                try:
                    sender.sendto(dgram, ("127.0.0.1", OSC_PORT))
                except OSError:
                    continue  # e.g. EMSGSIZE is the sender's problem, not the daemon's
                sent += 1
            if burst % 4 == 2:
                _tcp_garbage(rng, fuzz)
            took = _query(asker)
            if took > ANSWER_WITHIN_S:
                slow.append((burst, took))
        elapsed = time.monotonic() - started
        assert daemon.proc.poll() is None, daemon.log()
        assert sent >= BURSTS * BURST * 0.99
        assert not slow, f"bursts answered later than {ANSWER_WITHIN_S * 1000:.0f} ms: {slow}"
    finally:
        sender.close()
        asker.close()
        code = daemon.stop()
    log = daemon.log()
    assert code == 0, log
    assert "Traceback" not in log and "Error:" not in log.replace("/error", ""), log[-4000:]
    lines = log.splitlines()
    # refusals: one line per client per second (and the TCP ones), plus start and stop
    assert len(lines) <= 4 * elapsed + 60, f"{len(lines)} log lines in {elapsed:.0f} s"
    assert any("osc:" in line and "more since" in line for line in lines)
