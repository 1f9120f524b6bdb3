"""MIDI → engine: latency from a fader message to the engine's new gain target, and a
sustained 1000 messages/s absorbed while a paced 64-frame / 48 kHz audio thread runs.

The controller is a JACK MIDI client (python-rtmidi virtual port playing a Mackie Control)
on a private ``jackd -d dummy`` server, so the path is the real one: JACK → rtmidi's queue,
drained every millisecond (parse, translate, enqueue) → dispatcher → ControlHub.set →
engine queue → the next block.
Without jackd it falls back to in-memory ports (and says so). Runs in about 20 s.

    python benchmarks/bench_midi.py [--seconds 5] [--rate 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import threading
import time
import uuid

import numpy as np

from studiod.controllers.hub import ControlHub
from studiod.controllers.mapping import load_profile, shipped_profile_paths
from studiod.controllers.midi import MemoryBackend, MidiManager, RtMidiBackend
from studiod.dsp.engine import GAIN_RAMP_MS, Engine
from studiod.dsp.session import default_session

FS = 48000
BLOCK = 64
PERIOD_S = BLOCK / FS


class AudioThread(threading.Thread):
    """Calls engine.process every 64 frames on a real-time schedule; a block that starts
    more than one period late would have missed the interface's buffer: an xrun."""

    def __init__(self, engine: Engine):
        super().__init__(daemon=True, name="audio")
        self.engine = engine
        self.inp = np.zeros((BLOCK, engine.session.n_inputs), np.float32)
        self.out = np.zeros((BLOCK, engine.session.n_outputs), np.float32)
        self.running = True
        self.durations: list[float] = []
        self.xruns = 0
        self.blocks = 0

    def run(self) -> None:
        deadline = time.perf_counter()
        while self.running:
            deadline += PERIOD_S
            start = time.perf_counter()
            self.engine.process(self.inp, self.out)
            end = time.perf_counter()
            self.durations.append(end - start)
            self.blocks += 1
            if end > deadline + PERIOD_S:
                self.xruns += 1
                deadline = end  # resynchronise, as a driver would after an xrun
            pause = deadline - time.perf_counter()
            if pause > 0.0003:
                time.sleep(pause - 0.0002)
            while time.perf_counter() < deadline:
                pass


def start_jack() -> subprocess.Popen | None:
    if not shutil.which("jackd"):
        return None
    name = f"studiod-bench-{uuid.uuid4().hex[:6]}"
    os.environ["JACK_DEFAULT_SERVER"] = name
    os.environ["JACK_NO_START_SERVER"] = "1"
    proc = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", str(FS), "-p", "64"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    end = time.monotonic() + 10
    while subprocess.run(["jack_lsp"], capture_output=True).returncode != 0:
        if time.monotonic() > end:
            proc.kill()
            return None
        time.sleep(0.1)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="sustained run (5 s)")
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s (1000)")
    parser.add_argument("--trials", type=int, default=200, help="latency trials (200)")
    args = parser.parse_args()

    engine = Engine(default_session(16, FS), max_block_frames=BLOCK)
    engine.process(np.zeros((BLOCK, engine.session.n_inputs), np.float32),
                   np.zeros((BLOCK, engine.session.n_outputs), np.float32))  # fmt: skip
    hub = ControlHub(engine)
    profiles = [load_profile(p) for p in shipped_profile_paths()]
    jack = start_jack()
    if jack is not None:
        import rtmidi

        backend = RtMidiBackend(api="jack")
        device = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="bench-mcu")
        device.open_virtual_port("Mackie Control")
        send = device.send_message
        transport = "JACK MIDI (jackd -d dummy, 64 frames)"
    else:
        backend = MemoryBackend()
        fake = backend.add_device("Mackie Control")
        send = fake.send
        transport = "in-memory ports (jackd not found)"
    manager = MidiManager(hub, profiles, backend, poll_interval_s=0.2)
    manager.start()
    while not manager.surfaces:
        time.sleep(0.01)
    audio = AudioThread(engine)
    audio.start()
    time.sleep(0.5)

    # latency: message sent → hub (registry) → engine target drained by the audio thread
    param = engine.registry["/ch/1/fader"]
    tgt = engine.state.tgt
    to_hub, to_engine = [], []
    for k in range(args.trials):
        raw = 4000 + (k % 2) * 8000 + k
        value = param.from_normalized(raw / 16383)
        t0 = time.perf_counter()
        send([0xE0, raw & 0x7F, raw >> 7])
        hub_at = None
        while True:
            now = time.perf_counter()
            if hub_at is None and engine.registry.values[param.index] == value:
                hub_at = now
            if tgt[param.index] == value:
                break
            if now - t0 > 1.0:
                raise RuntimeError("a fader message did not reach the engine within 1 s")
            time.sleep(0.0001)
        to_hub.append((hub_at or now) - t0)
        to_engine.append(now - t0)
        time.sleep(0.005)

    # baseline: the same audio thread with no MIDI traffic (xruns here are the machine's)
    audio.durations.clear()
    idle_x, idle_b = audio.xruns, audio.blocks
    time.sleep(min(args.seconds, 3.0))
    idle_xruns, idle_blocks = audio.xruns - idle_x, audio.blocks - idle_b
    idle_ms = np.array(audio.durations) * 1e3

    # sustained: `rate` messages/s over the 8 faders
    audio.durations.clear()
    xruns0, blocks0 = audio.xruns, audio.blocks
    stats0 = (manager.stats.messages, manager.stats.dropped, manager.stats.applied)
    n = int(args.rate * args.seconds)
    last = {}
    start = time.perf_counter()
    for i in range(n):
        strip = i % 8
        raw = (i * 37) % 16384
        last[strip] = raw
        send([0xE0 | strip, raw & 0x7F, raw >> 7])
        due = start + (i + 1) / args.rate
        while time.perf_counter() < due:
            time.sleep(0.0002)
    elapsed = time.perf_counter() - start
    time.sleep(0.3)
    received = manager.stats.messages - stats0[0]
    dropped = manager.stats.dropped - stats0[1]
    applied = manager.stats.applied - stats0[2]
    final_ok = all(
        engine.state.tgt[engine.registry[f"/ch/{s + 1}/fader"].index]
        == engine.registry[f"/ch/{s + 1}/fader"].from_normalized(raw / 16383)
        for s, raw in last.items()
    )
    xruns = audio.xruns - xruns0
    blocks = audio.blocks - blocks0
    durations_ms = np.array(audio.durations) * 1e3
    audio.running = False
    audio.join()
    manager.stop()
    if jack is not None:
        device.close_port()
        jack.terminate()
        jack.wait()

    ms = np.array(to_engine) * 1e3
    hub_ms = np.array(to_hub) * 1e3
    print(f"studiod MIDI benchmark — {transport}, engine 16 ch at {BLOCK} frames / {FS} Hz")
    print(f"  message → hub.set done     p50 {np.median(hub_ms):6.2f} ms   "
          f"p99 {np.percentile(hub_ms, 99):6.2f} ms   max {hub_ms.max():6.2f} ms")  # fmt: skip
    print(f"  message → engine target    p50 {np.median(ms):6.2f} ms   "
          f"p99 {np.percentile(ms, 99):6.2f} ms   max {ms.max():6.2f} ms "
          f"(+ the gain ramp: {GAIN_RAMP_MS:g}"
          " ms linear ramp)")  # fmt: skip
    print(f"  sustained {args.rate:.0f} msg/s for {elapsed:.1f} s: received {received}/{n}, "
          f"queue drops {dropped}, hub changes {applied} (bursts coalesced), final values "
          f"{'exact' if final_ok else 'WRONG'}")  # fmt: skip
    print(f"  audio thread: {blocks} blocks, xruns {xruns}, callback p50 "
          f"{np.median(durations_ms):.3f} ms p99 {np.percentile(durations_ms, 99):.3f} ms "
          f"max {durations_ms.max():.3f} ms (period {PERIOD_S * 1e3:.3f} ms)")  # fmt: skip
    print(f"  baseline without MIDI: {idle_blocks} blocks, xruns {idle_xruns}, callback p99 "
          f"{np.percentile(idle_ms, 99):.3f} ms max {idle_ms.max():.3f} ms")  # fmt: skip
    print(f"RESULT midi latency p99 {np.percentile(ms, 99):.2f} ms, {received / elapsed:.0f} "
          f"msg/s absorbed, {xruns} xruns")  # fmt: skip


if __name__ == "__main__":
    main()
