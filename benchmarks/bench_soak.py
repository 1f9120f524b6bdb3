"""Soak: the daemon at 64 frames / 48 kHz, 16 inputs, 8 outputs, for 10 minutes, while 1000
OSC messages and 1000 MIDI messages a second arrive from another process.

On JACK (the default where jackd is installed; a dummy-driver server is started) the MIDI
comes from a JACK MIDI port named like a nanoKONTROL2, the OSC over UDP. jackd's own log
names every client it found late. The fair comparison is a *witness* in the same graph
(benchmarks/jack_witness.py): a JACK client in compiled code, in its own process, that
burns per cycle the CPU time of studiod's median callback (calibrated over the first
seconds of the traffic). Whatever makes the witness late is the machine's; the last line
is the ratio of late cycles, ``daemon/witness late cycles: 0.9x`` (goal: at most 1.0).
The audio thread's involuntary context switches per 1000 cycles, the daemon's and the
witness's, come from their own counters in /proc.

On the virtual device there is no MIDI transport here, so the MIDI half is a thread of
ControlHub.set calls (the path the MIDI thread takes), and a baseline run of the device on
a one-channel session shows the machine's own missed deadlines.

Also reports xruns, the callback's duration (p50/p99/p99.9/max as % of the period, wall
clock and own CPU time), READY time with a warm numba cache (a `studiod run` subprocess
timed to its sd_notify READY=1), and RSS.

    python benchmarks/bench_soak.py [--minutes 10] [--backend jack|virtual] [--rate 1000]
"""

from __future__ import annotations

import argparse
import collections
import math
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

from studiod.daemon import rtcore as rt
from studiod.daemon.audio import AudioCore, VirtualDevice
from studiod.daemon.config import AudioConfig, Config, LogConfig, StateConfig
from studiod.daemon.realtime import ThreadCounters, thread_counters
from studiod.daemon.runtime import Daemon, setup_logging
from studiod.dsp.demo_session import DEMO_SETTINGS, synthesize
from studiod.dsp.engine import Engine
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
    """Deadline misses of the virtual device on a one-channel session."""
    session = Session(samplerate=FS, channels=(ChannelSpec("ch1", (1,)),),
                      systems=(MonitorSystemSpec("studio", (1, 2)),))  # fmt: skip
    core = AudioCore(Engine(session), AudioConfig(block_frames=64), 1, 2)
    core.warm_up()
    device = VirtualDevice(core, priority=priority)
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
    """jackd (dummy driver) with its messages kept, and the witness in its graph."""

    LATE = re.compile(
        r"JackEngine::XRun: client = (\S+) was not finished, state = (\w+)|"
        r"JackEngine::XRun: client (\S+) finished after current callback"
    )
    WITNESS = "witness"

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
        self.witness = None
        self.witness_tid = 0

    def start_witness(self, burn_us: float) -> None:
        """The witness client, burning ``burn_us`` of CPU time per cycle."""
        self.witness = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("jack_witness.py")), self.WITNESS,
             f"{burn_us:.1f}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        word, tid = self.witness.stdout.readline().split()
        assert word == "ready", word
        self.witness_tid = int(tid)

    def witness_counters(self) -> ThreadCounters:
        return thread_counters(self.witness_tid, self.witness.pid)

    def stop_witness(self) -> int:
        """Stop the witness; returns the cycles it ran."""
        out, _ = self.witness.communicate("", timeout=30)
        self.witness = None
        return int(out.split()[-1])

    def _read(self) -> None:
        for line in self.server.stderr:
            self.messages.append((time.monotonic(), line))

    def late(self, since: float) -> dict[str, collections.Counter]:
        """Since ``since``: per client, the cycles in which jackd found it late, by state
        ("Triggered": its thread was never scheduled; "Running": it had not finished;
        "Finished": it finished after the deadline)."""
        found: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for t, line in list(self.messages):
            m = self.LATE.search(line)
            if t >= since and m:
                found[m[1] or m[3]][m[2] or "Finished"] += 1
        return found

    def close(self) -> None:
        if self.witness is not None:
            self.witness.kill()
        self.server.terminate()
        self.server.wait(timeout=10)


CALIBRATE_S = 5.0


def calibrate(daemon: Daemon, seconds: float) -> float:
    """The daemon's median own CPU time per block (µs) over ``seconds`` of the soak's
    traffic: what the witness burns per cycle."""
    daemon.run(seconds)
    core = daemon.core
    blocks = min(int(seconds * FS / core.block_frames), rt.TIMES_RING)
    done = core.callbacks
    burn_us = float(np.median(core.cpu.ring[np.arange(done - blocks, done) % rt.TIMES_RING]))
    burn_us /= 1000.0
    print(f"witness: burns {burn_us:.0f} µs of CPU per cycle (the daemon's median under the "
          f"traffic, over {seconds:g} s)")  # fmt: skip
    return burn_us


def per_1000(count: int, cycles: int) -> float:
    return 1000.0 * count / max(cycles, 1)


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
            print(f"baseline: {base} missed deadlines in {args.baseline_s:g} s on a one-channel "
                  "session (the machine itself)")  # fmt: skip
        audio = AudioConfig(backend=args.backend, block_frames=64,
                            realtime_priority=args.priority)  # fmt: skip
        if args.backend == "jack":
            jack = Jack(64)
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
        if jack is not None:
            jack.start_witness(calibrate(daemon, CALIBRATE_S))
        started = time.monotonic()
        samples: list[float] = []  # RSS every 10 s: a leak shows as a slope
        sampler = threading.Thread(target=sample_rss, args=(samples, stop, 10.0), daemon=True)
        sampler.start()
        audio_before = thread_counters(daemon.core.audio_thread_id)
        blocks_before = daemon.core.callbacks
        witness_before = jack.witness_counters() if jack else None
        daemon.run(args.minutes * 60.0)
        audio_switches = thread_counters(daemon.core.audio_thread_id) - audio_before
        blocks = daemon.core.callbacks - blocks_before
        if jack is not None:
            witness_switches = jack.witness_counters() - witness_before
            witness_cycles = jack.stop_witness()
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
        print(f"callback: p50 {stats['p50_pct']:.1f} %, p99 {stats['p99_pct']:.1f} %, "
              f"p99.9 {stats['p999_pct']:.1f} %, max {stats['max_pct']:.1f} % of the "
              f"{stats['period_us']:.0f} µs period; own CPU time p50 "
              f"{stats['cpu_p50_pct']:.1f} %, p99.9 {stats['cpu_p999_pct']:.1f} %, "
              f"max {stats['cpu_max_pct']:.1f} %")  # fmt: skip
        faults = audio_switches.minor_faults + audio_switches.major_faults
        switches = audio_switches.involuntary_switches
        print(f"audio thread: {per_1000(switches, blocks):.1f} involuntary context switches "
              f"per 1000 cycles ({switches} in {blocks}), {faults} page faults")  # fmt: skip
        ratio_line = None
        if jack is not None:
            late = jack.late(started)
            ours, theirs = late.get("studiod", {}), late.get(Jack.WITNESS, {})
            print(f"witness thread: "
                  f"{per_1000(witness_switches.involuntary_switches, witness_cycles):.1f} "
                  f"involuntary context switches per 1000 cycles "
                  f"({witness_switches.involuntary_switches} in {witness_cycles})")  # fmt: skip
            print(f"JACK found studiod late in {sum(ours.values())} cycles {dict(ours)}, the "
                  f"witness in {sum(theirs.values())} {dict(theirs)}; every client: "
                  f"{ {c: sum(n.values()) for c, n in late.items()} }")  # fmt: skip
            d, w = sum(ours.values()), sum(theirs.values())
            ratio = d / w if w else (0.0 if d == 0 else math.inf)
            ratio_line = f"daemon/witness late cycles: {ratio:.1f}x ({d} / {w})"
        print(f"RSS: {rss:.0f} MB (peak {peak:.0f} MB, private {private:.0f} MB); during the soak "
              + " ".join(f"{mb:.0f}" for mb in samples))  # fmt: skip
        print(f"soak: {stats['xruns']} xruns in {elapsed:.0f} s, callback p99.9 "
              f"{stats['p999_pct']:.1f} % of the period, READY {ready_s:.2f} s, RSS {rss:.0f} MB"
              + (f", baseline {base} missed deadlines" if base is not None else ""))  # fmt: skip
        if ratio_line is not None:
            print(ratio_line)
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
