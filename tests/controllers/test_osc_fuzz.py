"""80 000 hostile datagrams through the OSC server's packet handler, in process (the live
daemon gets another 20 000 in tests/e2e/test_osc_fuzz.py): no exception escapes, nothing
is logged with a traceback, the log stays at one line per client per second, every
datagram's work stays within its budget, and the server answers a query after each burst."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
from pythonosc.osc_message import OscMessage

from studiod.controllers.hub import ControlHub
from studiod.controllers.osc import OscConfig, OscServer, Peer
from studiod.dsp.engine import Engine
from studiod.dsp.session import default_session
from tests.controllers.osc_fuzz import Fuzzer, message

DATAGRAMS = 80_000
BURST = 1000


def test_80k_fuzzed_datagrams_in_process(caplog):
    engine = Engine(default_session(4))
    hub = ControlHub(engine)
    addresses = [p.address for p in hub.registry]
    addresses += ["/subscribe", "/unsubscribe", "/meters/loudness", "/meters/channels", "/"]
    fuzz = Fuzzer(2026, addresses)
    config = OscConfig(port=0, rate_limit_hz=1e6, burst=1_000_000)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2.0)
    peer = Peer("udp", "127.0.0.1", sink.getsockname()[1])
    silence = np.zeros((64, engine.session.n_inputs), np.float32)
    out = np.zeros((64, engine.session.n_outputs), np.float32)
    started = time.monotonic()
    with OscServer(hub, config) as osc, caplog.at_level(logging.INFO, "studiod"):
        for burst in range(DATAGRAMS // BURST):
            for k in range(BURST):
                osc.handle_packet(fuzz.datagram(big=k == 0 and burst % 8 == 0), peer)
            engine.process(silence, out)  # as the audio thread would: drains the change queue
            _drain(sink)  # the replies to the burst (those the socket buffer kept)
            osc.handle_packet(message("/ch/1/fader"), peer)
            answer = None
            while answer is None or answer.address != "/ch/1/fader":
                answer = OscMessage(sink.recv(65536))
        elapsed = time.monotonic() - started
        received = osc.stats["received"]
    sink.close()
    assert received >= DATAGRAMS  # bundles hold several messages; broken ones count none
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert 0 < len(warnings) <= 2 * elapsed + 5, f"{len(warnings)} lines in {elapsed:.0f} s"


def _drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(65536)
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2.0)
