"""Soak: the daemon at 64 frames / 48 kHz, 16 inputs, 8 outputs, for 10 minutes, while 1000
OSC messages and 1000 MIDI messages a second arrive from another process.

On JACK (the default where jackd is installed; a dummy-driver server is started) the MIDI
comes from a JACK MIDI port named like a nanoKONTROL2, the OSC over UDP; jackd's own log
names every client it found late, and a C client with next to no work (jack_simple_client)
runs in the same graph, so that a cycle where it was late too counts as a stall of the
machine rather than of studiod. On the virtual device there is no MIDI transport here, so
the MIDI half is a thread of ControlHub.set calls (the path the MIDI thread takes), and a
baseline run of the device with an empty callback shows the machine's own missed deadlines.

Reports xruns, the callback's duration (p50/p99/p99.9/max as % of the period), READY time
with a warm numba cache (a `studiod run` subprocess timed to its sd_notify READY=1), and
RSS.

    python benchmarks/bench_soak.py [--minutes 10] [--backend jack|virtual] [--rate 1000]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
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


def rss_mb() -> tuple[float, float, float]:
    """This process's resident memory, its peak, and its private part (RssAnon: without
    shared libraries' pages and JACK's shared-memory segment) in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM", "RssAnon"))


ADDRESSES = (
    [(f"/ch/{c}/fader", -40.0, 0.0) for c in range(1, 17)]
    + [(f"/ch/{c}/pan", -1.0, 1.0) for c in range(1, 17)]
    + [(f"/ch/{c}/eq/2/gain", -6.0, 6.0) for c in range(1, 17)]
    + [("/master/fader", -12.0, 0.0), ("/monitor/level", -20.0, 0.0)]
)


def paced(rate: float, stop: threading.Event, send) -> tuple[int, float]:
    """Call ``send(k)`` for k = 0, 1, … at ``rate`` per second until ``stop``; returns the
    count and the rate achieved."""
    sent = 0
    start = time.perf_counter()
    while not stop.is_set():
        send(sent)
        sent += 1
        delay = start + sent / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return sent, sent / (time.perf_counter() - start)


def sender(osc_port: int, rate: float, midi: bool) -> int:
    """The flood's own process (``--send``): OSC over UDP and, with ``midi``, a JACK MIDI
    nanoKONTROL2 (faders and knobs of its eight strips), until stdin closes."""
    from pythonosc.udp_client import SimpleUDPClient

    stop = threading.Event()
    rng = np.random.default_rng(1)
    client = SimpleUDPClient("127.0.0.1", osc_port)

    def osc(k: int) -> None:
        address, lo, hi = ADDRESSES[k % len(ADDRESSES)]
        client.send_message(address, float(rng.uniform(lo, hi)))

    results = {}
    threads = [threading.Thread(target=lambda: results.update(osc=paced(rate, stop, osc)))]
    if midi:
        import rtmidi

        out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="soakkorg")
        out.open_virtual_port("nanoKONTROL2 MIDI 1")
        controls = list(range(0, 8)) + list(range(16, 24))  # its faders and knobs

        def note(k: int) -> None:
            value = k // len(controls) % 128
            out.send_message([0xB0, controls[k % len(controls)], value])

        def midi_thread() -> None:
            results["midi"] = paced(rate, stop, note)

        threads.append(threading.Thread(target=midi_thread))
    print("ready", flush=True)
    for t in threads:
        t.start()
    sys.stdin.read()
    stop.set()
    for t in threads:
        t.join()
    for kind, (sent, achieved) in sorted(results.items()):
        print(f"{kind} {sent} {achieved:.1f}", flush=True)
    return 0


def hub_flood(hub, rate: float, stop: threading.Event, counts: list) -> None:
    """The MIDI half without a MIDI transport: ControlHub.set from a thread, as the MIDI
    thread would call it."""
    rng = np.random.default_rng(2)
    refused = 0

    def change(k: int) -> None:
        nonlocal refused
        address, lo, hi = ADDRESSES[k % len(ADDRESSES)]
        try:
            hub.set(address, float(rng.uniform(lo, hi)), source="midi")
        except Exception:
            refused += 1

    sent, achieved = paced(rate, stop, change)
    counts.append(("hub", sent, achieved, refused))


class Jack:
    """jackd (dummy driver) with its messages kept, and a C reference client in its graph."""

    LATE = re.compile(
        r"JackEngine::XRun: client = (\S+) was not finished, state = (\w+)|"
        r"JackEngine::XRun: client (\S+) finished after current callback"
    )

    def __init__(self, period: int):
        name = f"studiod-soak-{os.getpid()}"
        os.environ["JACK_DEFAULT_SERVER"] = name
        os.environ["JACK_NO_START_SERVER"] = "1"
        self.messages: list[tuple[float, str]] = []
        self.server = subprocess.Popen(
            ["jackd", "-d", "dummy", "-r", str(FS), "-p", str(period), "-C", "16", "-P", "8"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(1.0)
        self.reference = subprocess.Popen(
            ["jack_simple_client", "reference"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)

    def _read(self) -> None:
        for line in self.server.stderr:
            self.messages.append((time.monotonic(), line))

    def late(self, since: float) -> tuple[dict[str, int], int, dict[str, int]]:
        """Since ``since``: the cycles in which jackd found studiod late by its state
        ("Triggered": its thread was never scheduled; "Running": it had not finished;
        "Finished": it finished after the deadline), how many of those the reference client
        was late in too (machine stalls), and the late cycles of every client."""
        found = []
        for t, line in list(self.messages):
            m = self.LATE.search(line)
            if t >= since and m:
                found.append((t, m[1] or m[3], m[2] or "Finished"))
        stalls = [t for t, client, _ in found if client == "reference"]
        ours = [(t, state) for t, client, state in found if client == "studiod"]
        in_stalls = sum(1 for t, _ in ours if any(abs(t - u) < 0.5e-3 for u in stalls))
        by_state = dict(collections.Counter(state for _, state in ours))
        return by_state, in_stalls, dict(collections.Counter(c for _, c, _ in found))

    def close(self) -> None:
        for proc in (self.reference, self.server):
            proc.terminate()
            proc.wait(timeout=10)


def main() -> int:
    if sys.argv[1:2] == ["--send"]:
        return sender(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s of each kind")
    parser.add_argument("--backend", choices=("jack", "virtual"),
                        default="jack" if shutil.which("jackd") else "virtual")  # fmt: skip
    parser.add_argument("--priority", type=int, default=70)
    parser.add_argument("--baseline-s", type=float, default=30.0)
    args = parser.parse_args()
    setup_logging("warning")
    tmp = Path(tempfile.mkdtemp(prefix="studiod-soak-"))
    jack = None
    try:
        print(f"soak: {args.minutes:g} min, 64 frames @ 48 kHz, 16 in / 8 out, {args.rate:g} "
              f"OSC + {args.rate:g} MIDI messages/s, backend {args.backend}")  # fmt: skip
        ready_s = ready_time(tmp)
        print(f"READY with a warm cache: {ready_s:.2f} s")
        base = baseline(args.baseline_s, args.priority) if args.backend == "virtual" else None
        if base is not None:
            print(f"baseline: {base} missed deadlines in {args.baseline_s:g} s with an empty "
                  "callback (the machine itself)")  # fmt: skip
        audio = AudioConfig(backend=args.backend, block_frames=64,
                            realtime_priority=args.priority)  # fmt: skip
        if args.backend == "jack":
            jack = Jack(64)
            mark = time.monotonic()
            time.sleep(args.baseline_s)
            _, _, alone = jack.late(mark)
            print(f"baseline: the reference C client alone on jackd was late in "
                  f"{alone.get('reference', 0)} cycles in {args.baseline_s:g} s (the machine "
                  "itself)")  # fmt: skip
        osc_port = free_udp_port()
        session = soak_session()
        config = Config(
            path=None, audio=audio, session=session,
            params=tuple((a, v) for a, v in DEMO_SETTINGS.items() if a.startswith("/ch/")
                         and int(a.split("/")[2]) <= 16 and "/bus" not in a and "/send" not in a),
            state=StateConfig(dir=tmp / "state"), log=LogConfig(stats_interval_s=0),
            osc={"port": osc_port, "oscquery_port": 0}, mdns={"enabled": False},
            midi={"api": "jack", "poll_s": 0.25} if jack else {"enabled": False},
        )  # fmt: skip
        tracks = synthesize(16.0, FS)
        programme = np.ascontiguousarray(np.tile(tracks[:, :8], (1, 2)))
        daemon = Daemon(config, programme=programme)
        daemon.start()
        flood = subprocess.Popen(
            [sys.executable, __file__, "--send", str(osc_port), str(args.rate),
             "1" if jack else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert flood.stdout.readline().strip() == "ready"
        stop = threading.Event()
        counts: list = []
        hub_thread = None
        if jack is None:
            hub_thread = threading.Thread(target=hub_flood,
                                          args=(daemon.hub, args.rate, stop, counts))  # fmt: skip
            hub_thread.start()
        started = time.monotonic()
        samples: list[float] = []  # RSS every 10 s: a leak shows as a slope
        sampler = threading.Thread(target=sample_rss, args=(samples, stop, 10.0), daemon=True)
        sampler.start()
        daemon.run(args.minutes * 60.0)
        out, _ = flood.communicate("", timeout=60)
        stop.set()
        if hub_thread is not None:
            hub_thread.join()
        elapsed = time.monotonic() - started
        stats = daemon.stats()
        rss, peak, private = rss_mb()
        daemon.close()
        for line in out.split("\n"):
            if line.strip():
                kind, sent, achieved = line.split()
                print(f"{kind:>5}: {sent} messages sent ({float(achieved):.0f}/s)")
        for kind, sent, achieved, refused in counts:
            print(f"{kind:>5}: {sent} changes ({achieved:.0f}/s), {refused} refused")
        print(f"blocks: {stats['callbacks']} in {elapsed:.0f} s; xruns: {stats['xruns']}; "
              f"callbacks longer than the period: {stats['overlong']}")  # fmt: skip
        blame = ""
        if jack is not None:
            by_state, in_stalls, by_client = jack.late(started)
            blame = (f"; JACK found studiod late in {sum(by_state.values())} cycles "
                     f"{by_state or ''}, {in_stalls} of them with the reference C client late "
                     f"too; late cycles by client: {by_client or 'none'}")  # fmt: skip
            print(blame[2:])
        print(f"callback: p50 {stats['p50_pct']:.1f} %, p99 {stats['p99_pct']:.1f} %, "
              f"p99.9 {stats['p999_pct']:.1f} %, max {stats['max_pct']:.1f} % of the "
              f"{stats['period_us']:.0f} µs period")  # fmt: skip
        print(f"RSS: {rss:.0f} MB (peak {peak:.0f} MB, private {private:.0f} MB); during the soak "
              + " ".join(f"{mb:.0f}" for mb in samples))  # fmt: skip
        print(f"soak: {stats['xruns']} xruns in {elapsed:.0f} s{blame}, callback p99.9 "
              f"{stats['p999_pct']:.1f} % of the period, READY {ready_s:.2f} s, RSS {rss:.0f} MB"
              + (f", baseline {base} missed deadlines" if base is not None else ""))  # fmt: skip
        return 0
    finally:
        if jack is not None:
            jack.close()
        shutil.rmtree(tmp, ignore_errors=True)


def sample_rss(samples: list, stop: threading.Event, every_s: float) -> None:
    while not stop.wait(every_s):
        samples.append(rss_mb()[0])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
