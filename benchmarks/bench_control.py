"""Control benchmark, OSC part: message -> engine latency and the sustained rate absorbed.

The engine (default 16-channel session) runs in a paced thread that behaves like the audio
callback: 64-frame blocks at 48 kHz, each started on its deadline (sleep until then), one
``engine.process`` per block. A separate process (so that its Python does not share our
GIL) sends ``/ch/1/fader`` over UDP to the OSC server at a fixed rate, each message with a
distinct value, and records when it sent each one (CLOCK_MONOTONIC is system-wide).

Reported:
- latency from sending a message to the block in which the engine's target for that fader
  holds the new value (the gain starts moving in that block), p50/p99/max;
- the smoothing that follows (engine.PARAM_SMOOTH_MS and GAIN_RAMP_MS): time from that
  block until the smoothed fader value is within 0.5 dB of the new target, for a 20 dB step;
- per rate: messages sent, applied by the hub, refused, late blocks (a block finished more
  than one period after its deadline: what would be an xrun on a device), block cost.

Run: ``python benchmarks/bench_control.py [--seconds 3] [--rates 1000,2000,4000]``.
The last line: ``osc: latency p99 X ms at 1000 msg/s; every message applied up to N msg/s;
late blocks at 1000 msg/s L (baseline without messages B)``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import subprocess
import sys
import threading
import time

import numpy as np

from studiod.controllers.hub import ControlHub
from studiod.controllers.osc import OscConfig, OscServer
from studiod.dsp.engine import Engine
from studiod.dsp.session import default_session

BLOCK_FRAMES = 64
SAMPLERATE = 48000
ADDRESS = "/ch/1/fader"
STEP_DB = 0.001  # message k carries -60 + (k mod 60000) * 0.001 dB: distinct within a run
DISTINCT = 60000

SENDER = r"""
import json, socket, sys, time
from pythonosc.osc_message_builder import OscMessageBuilder
port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = int(rate * seconds)
dgrams = []
for k in range(n):
    b = OscMessageBuilder("/ch/1/fader")
    b.add_arg(-60.0 + (k % 60000) * 0.001, "f")
    dgrams.append(b.build().dgram)
sent = []
start = time.monotonic_ns()
period = 1e9 / rate
for k, d in enumerate(dgrams):
    due = start + k * period
    while (now := time.monotonic_ns()) < due:
        if due - now > 2e6:
            time.sleep((due - now - 1e6) / 1e9)
    sent.append(time.monotonic_ns())  # before sending: the engine may see it before we run again
    sock.sendto(d, ("127.0.0.1", port))
print(json.dumps(sent))
"""


class PacedEngine:
    """The engine driven like an audio callback, in real time, in its own thread."""

    def __init__(self, engine: Engine, slot: int):
        self.engine = engine
        self.slot = slot
        n_in, n_out = engine.session.n_inputs, engine.session.n_outputs
        rng = np.random.default_rng(1)
        self.inp = (0.1 * rng.standard_normal((BLOCK_FRAMES, n_in))).astype(np.float32)
        self.out = np.zeros((BLOCK_FRAMES, n_out), np.float32)
        self.period_ns = int(1e9 * BLOCK_FRAMES / SAMPLERATE)
        self.seen: list[tuple[int, float]] = []  # (time, new target) when the target changed
        self.cost_ns: list[int] = []
        self.late = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="paced-engine", daemon=True)

    def _run(self) -> None:
        tgt = self.engine.state.tgt
        last = tgt[self.slot]
        deadline = time.monotonic_ns()
        while not self.stop.is_set():
            deadline += self.period_ns
            t0 = time.monotonic_ns()
            self.engine.process(self.inp, self.out)
            t1 = time.monotonic_ns()
            self.cost_ns.append(t1 - t0)
            if tgt[self.slot] != last:
                last = tgt[self.slot]
                self.seen.append((t1, float(last)))
            if t1 > deadline + self.period_ns:
                self.late += 1
                deadline = t1  # an xrun: start again from now
            wait = deadline - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)

    def reset(self) -> None:
        self.seen.clear()
        self.cost_ns.clear()
        self.late = 0


def _run_rate(port: int, rate: float, seconds: float) -> list[int]:
    if rate == 0:  # the baseline: the paced engine alone, for the late blocks the machine causes
        time.sleep(seconds)
        return []
    proc = subprocess.run(
        [sys.executable, "-c", SENDER, str(port), str(rate), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    return json.loads(proc.stdout)


def _latencies_ms(sent: list[int], seen: list[tuple[int, float]]) -> np.ndarray:
    by_value: dict[int, list[int]] = {}
    for j, t in enumerate(sent):
        by_value.setdefault(j % DISTINCT, []).append(t)
    lat = []
    for t_seen, value in seen:
        times = by_value.get(round((value + 60.0) / STEP_DB), [])
        i = bisect.bisect_right(times, t_seen)
        if i:
            lat.append((t_seen - times[i - 1]) / 1e6)
    return np.array(lat)


def _settle_ms(engine: Engine, hub: ControlHub, paced: PacedEngine, slot: int) -> float:
    """Audio time from the block that takes a 20 dB fader step until the smoothed value is
    within 0.5 dB of it (blocks processed back to back: independent of the machine's load)."""
    hub.set(ADDRESS, -20.0)
    for _ in range(int(0.5 * SAMPLERATE / BLOCK_FRAMES)):
        engine.process(paced.inp, paced.out)
    hub.set(ADDRESS, 0.0)
    for block in range(1, int(2.0 * SAMPLERATE / BLOCK_FRAMES)):
        engine.process(paced.inp, paced.out)
        if abs(engine.state.cur[slot]) <= 0.5:
            return 1000.0 * block * BLOCK_FRAMES / SAMPLERATE
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rates", default="0,1000,2000,4000", help="0: no messages (baseline)")
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        default=None,
        help="sys.setswitchinterval for this run (Python's default is 5 ms)",
    )
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000.0)

    engine = Engine(default_session(16, SAMPLERATE), max_block_frames=BLOCK_FRAMES)
    hub = ControlHub(engine)
    slot = engine.registry[ADDRESS].index
    # the rate limit is the thing under test here only as far as the server absorbs: lift it
    config = OscConfig(port=0, rate_limit_hz=1e6, burst=100000)
    paced = PacedEngine(engine, slot)
    engine.process(paced.inp, paced.out)  # compile (or load from numba's cache) first
    settle = _settle_ms(engine, hub, paced, slot)
    with OscServer(hub, config) as osc:
        paced.thread.start()
        time.sleep(0.5)
        period_ms = paced.period_ns / 1e6
        print(f"engine: 16 channels, {BLOCK_FRAMES}-frame blocks at {SAMPLERATE} Hz "
              f"(period {period_ms:.3f} ms), paced in a thread")  # fmt: skip
        print(
            f"smoothing after the target changes: within 0.5 dB of a 20 dB step in "
            f"{settle:.1f} ms (PARAM_SMOOTH_MS one-pole, then the GAIN_RAMP_MS linear ramp)"
        )
        best_rate, p99_at_1000, baseline_late, late_at_1000 = 0.0, float("nan"), 0, 0
        for rate in rates:
            paced.reset()
            before = hub.version
            refused = osc.stats["errors"]
            sent = _run_rate(osc.udp_port, rate, args.seconds)
            time.sleep(0.2)
            applied = hub.version - before
            late = paced.late
            lat = _latencies_ms(sent, list(paced.seen)) if sent else np.zeros(1)
            cost = np.array(paced.cost_ns) / 1e6
            p50, p99 = np.percentile(lat, [50, 99])
            worst = lat.max()
            print(f"{rate:6.0f} msg/s: sent {len(sent)}, applied {applied}, "
                  f"refused {osc.stats['errors'] - refused}, late blocks {late}; "
                  f"latency p50 {p50:.2f} ms p99 {p99:.2f} ms max {worst:.2f} ms "
                  f"({len(lat)} samples); block cost p50 {np.median(cost) / period_ms:.0%} "
                  f"p99 {np.percentile(cost, 99) / period_ms:.0%} of the period")  # fmt: skip
            if rate == 1000:
                p99_at_1000, late_at_1000 = p99, late
            if rate == 0:
                baseline_late = late
            elif applied == len(sent):
                best_rate = max(best_rate, rate)
        paced.stop.set()
        paced.thread.join()
    print(f"osc: latency p99 {p99_at_1000:.2f} ms at 1000 msg/s; every message applied up to "
          f"{best_rate:.0f} msg/s; late blocks at 1000 msg/s {late_at_1000} "
          f"(baseline without messages {baseline_late})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
