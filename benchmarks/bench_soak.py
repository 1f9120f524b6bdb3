"""Soak: the daemon at 64 frames / 48 kHz, 16 inputs, 8 outputs, for 10 minutes, while two
control threads change parameters 1000 times a second each (standing in for the OSC and
MIDI floods of issue 4 until those exist: every change goes through ControlHub.set, the
path they will use).

Reports xruns, the callback's duration (p50/p99/p99.9/max as % of the period), READY time
with a warm numba cache (a `studiod run` subprocess timed to its sd_notify READY=1), and
RSS. Before the soak, a baseline: the same virtual device with an empty callback, which
shows how many deadlines the machine itself misses (scheduling, VM steal) without studiod.

    python benchmarks/bench_soak.py [--minutes 10] [--backend virtual|jack] [--rate 1000]
                                    [--switch-interval-ms 0.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from studiod.daemon.audio import VirtualDevice
from studiod.daemon.config import AudioConfig, Config, LogConfig, StateConfig
from studiod.daemon.runtime import Daemon, setup_logging
from studiod.dsp.demo_session import DEMO_SETTINGS, synthesize
from studiod.dsp.session import ChannelSpec, GroupSpec, MonitorSystemSpec, Session

FS = 48000
TOML = """
[audio]
backend = "virtual"
block_frames = 64
[session]
{channels}
[[session.monitor.system]]
name = "studio"
outputs = [1, 2]
[[session.monitor.system]]
name = "alt"
outputs = [3, 4]
[[session.monitor.system]]
name = "headphones"
outputs = [5, 6]
[[session.monitor.system]]
name = "car"
outputs = [1, 2]
simulation = "car"
[[session.monitor.system]]
name = "mono"
outputs = [7]
mono = true
[[session.monitor.system]]
name = "sub"
outputs = [8]
additive = true
[state]
dir = "{state}"
"""


def soak_session() -> Session:
    return Session(
        samplerate=FS,
        channels=tuple(ChannelSpec(f"ch{i}", (i,)) for i in range(1, 17)),
        groups=(GroupSpec("drums"), GroupSpec("music")),
        systems=(
            MonitorSystemSpec("studio", (1, 2)),
            MonitorSystemSpec("alt", (3, 4)),
            MonitorSystemSpec("headphones", (5, 6)),
            MonitorSystemSpec("car", (1, 2), simulation="car"),
            MonitorSystemSpec("mono", (7,), mono=True),
            MonitorSystemSpec("sub", (8,), additive=True),
        ),
    )


def baseline(seconds: float, priority: int) -> int:
    """Deadline misses of the virtual device with an empty callback."""
    device = VirtualDevice(lambda *a: None, FS, 64, 0, 8, priority=priority)
    device.start()
    time.sleep(seconds)
    device.close()
    return device.xruns


def ready_time(tmp: Path) -> float:
    """Seconds from `studiod run` to READY=1 (second start: warm numba cache)."""
    channels = "\n".join(f'[[session.channel]]\nname = "ch{i}"\ninputs = {i}' for i in range(1, 17))
    config = tmp / "soak.toml"
    config.write_text(TOML.format(channels=channels, state=tmp / "state-ready"))
    best = None
    for _ in range(2):
        sock_path = tmp / "notify.sock"
        sock_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(sock_path))
        sock.settimeout(600)
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "studiod.daemon.cli", "run", "--config", str(config)],
            env=dict(os.environ, NOTIFY_SOCKET=str(sock_path)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while b"READY=1" not in sock.recv(4096):
            pass
        elapsed = time.monotonic() - started
        proc.terminate()
        proc.wait(timeout=30)
        sock.close()
        best = elapsed  # the last run is the warm one
    return best


def rss_mb() -> tuple[float, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def flood(hub, rate: float, stop: threading.Event, seed: int, counts: list, kind: str):
    """``rate`` changes per second through the hub, like a MIDI/OSC receive thread."""
    rng = np.random.default_rng(seed)
    addresses = (
        [(f"/ch/{c}/fader", -40.0, 0.0) for c in range(1, 17)]
        + [(f"/ch/{c}/pan", -1.0, 1.0) for c in range(1, 17)]
        + [(f"/ch/{c}/eq/2/gain", -6.0, 6.0) for c in range(1, 17)]
        + [("/master/fader", -12.0, 0.0), ("/monitor/level", -20.0, 0.0)]
    )
    sent = 0
    refused = 0
    start = time.perf_counter()
    while not stop.is_set():
        address, lo, hi = addresses[sent % len(addresses)]
        try:
            hub.set(address, float(rng.uniform(lo, hi)), source=kind)
        except Exception:
            refused += 1
        sent += 1
        delay = start + sent / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    counts.append((kind, sent, refused, sent / (time.perf_counter() - start)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="changes/s per thread")
    parser.add_argument("--backend", choices=("virtual", "jack"), default="virtual")
    parser.add_argument("--switch-interval-ms", type=float, default=None)
    parser.add_argument("--priority", type=int, default=70)
    parser.add_argument("--baseline-s", type=float, default=30.0)
    args = parser.parse_args()
    setup_logging("warning")
    tmp = Path(tempfile.mkdtemp(prefix="studiod-soak-"))
    jackd = None
    try:
        print(f"soak: {args.minutes:g} min, 64 frames @ 48 kHz, 16 in / 8 out, "
              f"2 x {args.rate:g} changes/s, backend {args.backend}")  # fmt: skip
        ready_s = ready_time(tmp)
        print(f"READY with a warm cache: {ready_s:.2f} s")
        base = baseline(args.baseline_s, args.priority) if args.backend == "virtual" else None
        if base is not None:
            print(f"baseline: {base} missed deadlines in {args.baseline_s:g} s with an empty "
                  "callback (the machine itself)")  # fmt: skip
        audio = AudioConfig(backend=args.backend, block_frames=64,
                            realtime_priority=args.priority)  # fmt: skip
        if args.switch_interval_ms is not None:
            audio = dataclasses.replace(audio, switch_interval_ms=args.switch_interval_ms)
        if args.backend == "jack":
            name = f"studiod-soak-{os.getpid()}"
            os.environ["JACK_DEFAULT_SERVER"] = name
            jackd = subprocess.Popen(
                ["jackd", "-d", "dummy", "-r", str(FS), "-p", "64", "-C", "16", "-P", "8"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)
        session = soak_session()
        config = Config(
            path=None, audio=audio, session=session,
            params=tuple((a, v) for a, v in DEMO_SETTINGS.items() if a.startswith("/ch/")
                         and int(a.split("/")[2]) <= 16 and "/bus" not in a and "/send" not in a),
            state=StateConfig(dir=tmp / "state"), log=LogConfig(stats_interval_s=0),
        )  # fmt: skip
        tracks = synthesize(16.0, FS)
        programme = np.ascontiguousarray(np.tile(tracks[:, :8], (1, 2)))
        daemon = Daemon(config, programme=programme)
        daemon.start()
        stop = threading.Event()
        counts: list = []
        threads = [
            threading.Thread(target=flood, args=(daemon.hub, args.rate, stop, k, counts, kind))
            for k, kind in enumerate(("osc", "midi"))
        ]
        for t in threads:
            t.start()
        started = time.monotonic()
        daemon.run(args.minutes * 60.0)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        stats = daemon.stats()
        rss, peak = rss_mb()
        daemon.close()
        for kind, sent, refused, rate in counts:
            print(f"{kind:>5} thread: {sent} changes ({rate:.0f}/s), {refused} refused")
        print(f"blocks: {stats['callbacks']} in {elapsed:.0f} s; xruns: {stats['xruns']}; "
              f"callbacks longer than the period: {stats['overlong']}")  # fmt: skip
        print(f"callback: p50 {stats['p50_pct']:.1f} %, p99 {stats['p99_pct']:.1f} %, "
              f"p99.9 {stats['p999_pct']:.1f} %, max {stats['max_pct']:.1f} % of the "
              f"{stats['period_us']:.0f} µs period")  # fmt: skip
        print(f"RSS: {rss:.0f} MB (peak {peak:.0f} MB)")
        print(f"soak: {stats['xruns']} xruns in {elapsed:.0f} s, callback p99.9 "
              f"{stats['p999_pct']:.1f} % of the period, READY {ready_s:.2f} s, RSS {rss:.0f} MB"
              + (f", baseline {base} missed deadlines" if base is not None else ""))  # fmt: skip
        return 0
    finally:
        if jackd is not None:
            jackd.terminate()
            jackd.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
