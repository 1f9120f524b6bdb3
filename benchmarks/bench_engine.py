"""Engine speed against pedalboard on identical work, and the engine's real-time cost (issue #2).

1. Throughput, same run, one core each: 16 mono channel strips (high-pass, 4 EQ bands,
   compressor, gain) summed to stereo, then a master chain (EQ, compressor, limiter) over
   60 s of 48 kHz synthesised multitrack (``_material.multitrack``).

   * studiod: an ``Engine`` with 16 mono channels, one monitor system, set through the
     parameter registry (``/ch/N/hpf/on`` …), rendered offline in 4096-frame blocks.
   * pedalboard, per channel: HighpassFilter, LowShelfFilter, PeakFilter, PeakFilter,
     HighShelfFilter, Compressor, Gain; the channels panned to stereo and summed with numpy;
     master: LowShelfFilter, PeakFilter, PeakFilter, HighShelfFilter, Compressor, Limiter.

   Where the work is not identical (it is never less on our side):
   * pedalboard's HighpassFilter is first order (6 dB/oct); our high-pass is set to slope "6"
     (first-order Butterworth) for this comparison.
   * our limiter is a look-ahead true-peak limiter (4x oversampled peak detection);
     pedalboard's Limiter works on sample peaks.
   * the engine also runs what it always runs: parameter smoothing, constant-power pan per
     channel, meters, the monitor section and the output safety limiters.

2. Real-time cost: a standard session (16 inputs, two groups, reverb and delay, master chain
   on, 4 monitor systems: studio, alt, headphones, car simulation) called like the audio
   callback, one ``engine.process`` per 64-frame block; per-block time as % of the 1.333 ms
   block period (p50 / p99 / max over many blocks, best of N runs).
3. Scaling: the same session with 2 … 64 channels (median cost per 64-frame block).

The last line is ``engine/pedalboard throughput: <x>x`` (pedalboard's time / ours).

    python benchmarks/bench_engine.py [--seconds 60] [--runs 3] [--blocks 4000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pedalboard as pb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _material import multitrack

from studiod.dsp.engine import Engine
from studiod.dsp.loudness import measure
from studiod.dsp.session import Session

SAMPLERATE = 48000
BLOCK = 64

# One channel strip, the same numbers on both sides.
HPF_HZ = 80.0
EQ_BANDS = (  # (shape, freq_hz, gain_db, q): low shelf, two peaks, high shelf
    ("lowshelf", 100.0, 2.0, 0.707),
    ("peak", 400.0, -3.0, 1.0),
    ("peak", 2500.0, 2.0, 1.0),
    ("highshelf", 8000.0, 1.5, 0.707),
)
COMP = {"threshold": -24.0, "ratio": 4.0, "attack": 10.0, "release": 100.0}
CHANNEL_GAIN_DB = -6.0
MASTER_EQ = (
    ("lowshelf", 60.0, 1.0, 0.707),
    ("peak", 300.0, -1.5, 0.7),
    ("peak", 3000.0, 1.0, 0.7),
    ("highshelf", 12000.0, 2.0, 0.707),
)
MASTER_COMP = {"threshold": -18.0, "ratio": 2.0, "attack": 15.0, "release": 150.0}
CEILING_DB = -1.0
LIMITER_RELEASE_MS = 50.0


def session(channels: int, systems: int = 1, buses: bool = False) -> Session:
    """``channels`` mono strips on inputs 1…n; 1 or 4 monitor systems; optional groups/FX."""
    monitors = [
        {"name": "studio", "outputs": [1, 2]},
        {"name": "alt", "outputs": [3, 4]},
        {"name": "headphones", "outputs": [5, 6]},
        {"name": "car", "outputs": [1, 2], "simulation": "car"},
    ][:systems]
    data = {
        "samplerate": SAMPLERATE,
        "channel": [{"name": f"ch{i}", "inputs": [i]} for i in range(1, channels + 1)],
        "monitor": {"system": monitors},
    }
    if buses:
        data["group"] = [{"name": "drums"}, {"name": "music"}]
        data["fx"] = [{"name": "reverb", "kind": "reverb"}, {"name": "delay", "kind": "delay"}]
    return Session.from_dict(data, where="benchmark")


def configure(engine: Engine, slope: str = "6", sends: bool = False) -> None:
    """Turn on the channel strips and the master chain through the registry."""
    channels = len(engine.session.channels)
    for ch in range(1, channels + 1):
        p = f"/ch/{ch}"
        engine.set(f"{p}/hpf/on", 1)
        engine.set(f"{p}/hpf/freq", HPF_HZ)
        engine.set(f"{p}/hpf/slope", slope)
        engine.set(f"{p}/eq/on", 1)
        for b, (_, freq_hz, gain_db, q) in enumerate(EQ_BANDS, start=1):
            engine.set(f"{p}/eq/{b}/freq", freq_hz)
            engine.set(f"{p}/eq/{b}/gain", gain_db)
            engine.set(f"{p}/eq/{b}/q", q)
        engine.set(f"{p}/comp/on", 1)
        for key, value in COMP.items():
            engine.set(f"{p}/comp/{key}", value)
        engine.set(f"{p}/comp/knee", 0.0)
        engine.set(f"{p}/fader", CHANNEL_GAIN_DB)
        if sends:
            for fx in engine.session.fx:
                engine.set(f"{p}/send/{fx.name}/level", -20.0)
            if engine.session.groups:
                engine.set(f"{p}/bus", engine.session.groups[ch % 2].name)
    engine.set("/master/eq/on", 1)
    for b, (_, freq_hz, gain_db, q) in enumerate(MASTER_EQ, start=1):
        engine.set(f"/master/eq/{b}/freq", freq_hz)
        engine.set(f"/master/eq/{b}/gain", gain_db)
        engine.set(f"/master/eq/{b}/q", q)
    engine.set("/master/comp/on", 1)
    engine.set("/master/comp/knee", 0.0)
    for key, value in MASTER_COMP.items():
        engine.set(f"/master/comp/{key}", value)
    engine.set("/master/limiter/on", 1)
    engine.set("/master/limiter/ceiling", CEILING_DB)
    engine.set("/master/limiter/release", LIMITER_RELEASE_MS)


def _filters(bands) -> list:
    make = {"lowshelf": pb.LowShelfFilter, "peak": pb.PeakFilter, "highshelf": pb.HighShelfFilter}
    return [
        make[shape](cutoff_frequency_hz=freq_hz, gain_db=gain_db, q=q)
        for shape, freq_hz, gain_db, q in bands
    ]


def pedalboard_mix(tracks: np.ndarray) -> np.ndarray:
    """The same mix with pedalboard: per-channel boards, constant-power centre pan, master."""
    n, channels = tracks.shape
    strip = pb.Pedalboard(
        [
            pb.HighpassFilter(cutoff_frequency_hz=HPF_HZ),
            *_filters(EQ_BANDS),
            pb.Compressor(
                threshold_db=COMP["threshold"],
                ratio=COMP["ratio"],
                attack_ms=COMP["attack"],
                release_ms=COMP["release"],
            ),
            pb.Gain(gain_db=CHANNEL_GAIN_DB),
        ]
    )
    master = pb.Pedalboard(
        [
            *_filters(MASTER_EQ),
            pb.Compressor(
                threshold_db=MASTER_COMP["threshold"],
                ratio=MASTER_COMP["ratio"],
                attack_ms=MASTER_COMP["attack"],
                release_ms=MASTER_COMP["release"],
            ),
            pb.Limiter(threshold_db=CEILING_DB, release_ms=LIMITER_RELEASE_MS),
        ]
    )
    bus = np.zeros((2, n), dtype=np.float32)
    centre = np.float32(np.sqrt(0.5))  # constant-power pan, -3 dB centre, like the engine
    for c in range(channels):
        strip.reset()
        y = strip(np.ascontiguousarray(tracks[:, c]), SAMPLERATE, reset=True)
        bus += centre * y.reshape(1, -1)
    return master(bus, SAMPLERATE, reset=True).T


def engine_mix(engine: Engine, tracks: np.ndarray) -> np.ndarray:
    return engine.render(tracks, block_frames=4096, tap="master")


def best_of(runs: int, fn):
    best = float("inf")
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def block_costs(engine: Engine, inputs: np.ndarray, blocks: int) -> np.ndarray:
    """Seconds per ``engine.process`` call, 64-frame blocks, as the audio callback calls it."""
    out = np.zeros((BLOCK, engine.session.n_outputs), dtype=np.float32)
    frames = inputs.shape[0] - BLOCK
    costs = np.empty(blocks)
    clock = time.perf_counter_ns
    for k in range(blocks):
        start = (k * BLOCK) % frames
        block = inputs[start : start + BLOCK]
        t0 = clock()
        engine.process(block, out)
        costs[k] = clock() - t0
    return costs * 1e-9


def realtime_engine(channels: int, seconds: float = 4.0) -> tuple[Engine, np.ndarray]:
    """A standard-session engine with ``channels`` inputs, configured, warmed up."""
    engine = Engine(session(channels, systems=4, buses=True))
    configure(engine, slope="12", sends=True)
    tracks = multitrack(seconds, channels, SAMPLERATE)
    inputs = np.zeros((len(tracks), engine.session.n_inputs), dtype=np.float32)
    inputs[:, :channels] = tracks
    block_costs(engine, inputs, 500)  # compile / load, settle the smoothers
    return engine, inputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio for the throughput")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    parser.add_argument("--blocks", type=int, default=4000, help="64-frame blocks per run")
    args = parser.parse_args(argv)
    period_s = BLOCK / SAMPLERATE
    print(f"engine benchmark: {os.cpu_count()} CPUs, pedalboard {pb.__version__}")

    # 1. throughput on identical work
    tracks = multitrack(args.seconds, 16, SAMPLERATE)
    engine = Engine(session(16))
    configure(engine, slope="6")
    engine_mix(engine, tracks[: 2 * SAMPLERATE])  # compile or load from the cache
    pedalboard_mix(tracks[:SAMPLERATE])
    t_ours, ours = best_of(args.runs, lambda: engine_mix(engine, tracks))
    t_pb, theirs = best_of(args.runs, lambda: pedalboard_mix(tracks))
    a = measure(ours, SAMPLERATE)
    b = measure(np.ascontiguousarray(theirs), SAMPLERATE)
    print()
    print(
        f"throughput: 16 strips + master chain over {args.seconds:g} s of 48 kHz audio, "
        f"best of {args.runs}"
    )
    print(
        f"  studiod Engine (4096-frame blocks)   {t_ours:7.3f} s   "
        f"{args.seconds / t_ours:7.1f}x real time"
    )
    print(
        f"  pedalboard                           {t_pb:7.3f} s   "
        f"{args.seconds / t_pb:7.1f}x real time"
    )
    print(
        f"  mix loudness / true peak: studiod {a['integrated_lufs']:.1f} LUFS "
        f"{a['true_peak_dbtp']:.2f} dBTP, pedalboard {b['integrated_lufs']:.1f} LUFS "
        f"{b['true_peak_dbtp']:.2f} dBTP (limiters at {CEILING_DB:g})"
    )

    # 2. real-time cost per 64-frame block, standard session
    engine, inputs = realtime_engine(16)
    runs = [block_costs(engine, inputs, args.blocks) for _ in range(args.runs)]
    p50 = min(np.percentile(c, 50) for c in runs)
    p99 = min(np.percentile(c, 99) for c in runs)
    worst = min(c.max() for c in runs)
    print()
    print(
        f"real-time cost, standard session (16 inputs, 2 groups, reverb + delay, master chain, "
        f"4 monitor systems), {args.blocks} blocks of 64 frames, best of {args.runs}:"
    )
    print(f"  p50 {p50 * 1e6:7.1f} us = {100 * p50 / period_s:5.1f} % of the 1333 us period")
    print(f"  p99 {p99 * 1e6:7.1f} us = {100 * p99 / period_s:5.1f} %")
    print(f"  max {worst * 1e6:7.1f} us = {100 * worst / period_s:5.1f} %")

    # 3. scaling with the channel count
    print()
    print("scaling (standard session, median per 64-frame block):")
    base = None
    for channels in (2, 4, 8, 16, 32, 64):
        engine, inputs = realtime_engine(channels)
        cost = min(
            np.percentile(block_costs(engine, inputs, args.blocks // 2), 50)
            for _ in range(args.runs)
        )
        base = base if base is not None else cost
        per_channel = (cost - base) / (channels - 2) * 1e6 if channels > 2 else float("nan")
        print(
            f"  {channels:3d} channels  {cost * 1e6:7.1f} us  {100 * cost / period_s:5.1f} %"
            + (f"   +{per_channel:5.2f} us per channel over 2" if channels > 2 else "")
        )
    print(f"engine/pedalboard throughput: {t_pb / t_ours:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
