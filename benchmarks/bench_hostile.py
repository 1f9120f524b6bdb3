"""Hostile datagrams: the time the OSC server takes for the worst single datagrams we could
build (each at most 64 KB), beside python-osc's own dispatcher on the same datagrams.

The server (default 16-channel session, rate limit lifted so that every message is
dispatched) handles each datagram through ``OscServer.handle_packet``, as its UDP thread
does, replies included (to a local socket that nobody reads). The peer is python-osc's
``Dispatcher.call_handlers_for_packet`` with every registry address mapped to a no-op: the
matching work a plain python-osc server would do (it translates patterns into backtracking
regexes; the wildcard storm is run against it with fewer stars, since 24 stalled it for
seconds). Each figure is the worst of ``--runs`` runs.

Run: ``python benchmarks/bench_hostile.py [--runs 5]``. The last line: ``hostile: worst
datagram X ms (acceptance: <= 10 ms); python-osc on the 16-star storm Y ms``.
"""

from __future__ import annotations

import argparse
import math
import random
import socket
import struct
import sys
import time

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder

from studiod.controllers.hub import ControlHub
from studiod.controllers.osc import OscConfig, OscServer, Peer
from studiod.controllers.oscpattern import MAX_PATTERN_LENGTH
from studiod.dsp.engine import Engine
from studiod.dsp.session import default_session

MAX_DATAGRAM = 65_507  # the largest UDP payload over IPv4


def _message(address: str, *typed_args) -> bytes:
    builder = OscMessageBuilder(address)
    for value, tag in typed_args:
        builder.add_arg(value, tag)
    return builder.build().dgram


def _bundle(elements: list[bytes]) -> bytes:
    out = b"#bundle\0" + struct.pack(">Q", 1)
    for element in elements:
        if len(out) + 4 + len(element) > MAX_DATAGRAM:
            break
        out += struct.pack(">i", len(element)) + element
    return out


def _filled(message: bytes) -> bytes:
    return _bundle([message] * (MAX_DATAGRAM // (len(message) + 4) + 1))


def datagrams() -> dict[str, bytes]:
    rng = random.Random(12)
    deep = _message("/ch/1/fader", (-3.0, "f"))
    for _ in range(4000):
        if len(deep) + 20 > MAX_DATAGRAM:
            break
        deep = _bundle([deep])
    alternation = "/{" + ",".join(["c", "ch", "m", "master"] * 200)
    return {
        "24-star storm (32 bytes)": _message("/" + "*" * 24 + "x"),
        "64 KB of 512-char *? patterns": _filled(
            _message(("/*/*/" + "*?" * 300)[:MAX_PATTERN_LENGTH], (0.0, "f"))
        ),
        "64 KB of /*/*/* queries": _filled(_message("/*/*/*")),
        "64 KB of /*/*/*/* queries": _filled(_message("/*/*/*/*")),
        "64 KB of 512-char {a,b,...} patterns": _filled(
            _message(alternation[: MAX_PATTERN_LENGTH - 5] + "}/*/*")
        ),
        "64 KB of [!a-z][a-z] classes": _filled(
            _message(("/*/" + "[!a-z][0-9a-z]*" * 40)[:MAX_PATTERN_LENGTH])
        ),
        "64 KB of tiny unknown messages": _filled(_message("/a")),
        "64 KB of f NaN to an enum": _filled(_message("/monitor/system", (math.nan, "f"))),
        "64 KB of fader sets": _filled(_message("/ch/1/fader", (-6.0, "f"))),
        "bundles nested to 64 KB": deep,
        "64 KB of random bytes": bytes(rng.randrange(256) for _ in range(MAX_DATAGRAM)),
    }


def _time_ms(fn, runs: int) -> float:
    """The worst of ``runs`` (what a datagram can cost, not what it usually costs)."""
    worst = 0.0
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        worst = max(worst, time.perf_counter() - start)
    return worst * 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    engine = Engine(default_session(16))
    hub = ControlHub(engine)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    peer = Peer("udp", "127.0.0.1", sink.getsockname()[1])
    dispatcher = Dispatcher()
    for param in hub.registry:
        dispatcher.map(param.address, lambda *a: None)
    config = OscConfig(port=0, rate_limit_hz=1e6, burst=1_000_000)
    worst_name, worst_ms = "", 0.0
    with OscServer(hub, config) as osc:
        for name, dgram in datagrams().items():
            ours_ms = _time_ms(lambda dgram=dgram: osc.handle_packet(dgram, peer), args.runs)
            if "storm" in name:
                peer_ms = float("nan")  # 24 stars: seconds in python-osc; see the line below
            else:
                peer_ms = _time_ms(
                    lambda dgram=dgram: _peer(dispatcher, dgram), max(1, args.runs // 2)
                )
            ratio = f"{ours_ms / peer_ms:5.2f}x python-osc" if peer_ms == peer_ms else ""
            print(f"{name:40} {len(dgram):6d} B  {ours_ms:7.2f} ms  {ratio}", flush=True)
            if ours_ms > worst_ms:
                worst_name, worst_ms = name, ours_ms
    storm16 = _message("/" + "*" * 16 + "x")
    peer16 = _time_ms(lambda: _peer(dispatcher, storm16), 1)
    with OscServer(hub, config) as osc:
        ours16 = _time_ms(lambda: osc.handle_packet(storm16, peer), args.runs)
    print(f"{'16-star storm':40} {len(storm16):6d} B  {ours16:7.2f} ms  python-osc {peer16:.1f} ms")
    sink.close()
    print(
        f"hostile: worst datagram {worst_ms:.2f} ms ({worst_name}; acceptance: <= 10 ms); "
        f"python-osc on the 16-star storm {peer16:.1f} ms, studiod {ours16:.2f} ms"
    )
    return 0


def _peer(dispatcher: Dispatcher, dgram: bytes) -> None:
    try:
        dispatcher.call_handlers_for_packet(dgram, ("127.0.0.1", 1))
    except Exception:  # python-osc raises on what it cannot parse; the time is what counts
        pass


if __name__ == "__main__":
    sys.exit(main())
