"""``studiod demo``: the embedded session through the engine, no hardware needed.

The synthesised multitrack plays through the same engine the daemon runs, in 64-frame
blocks as the audio thread would, and the monitor output is measured with the BS.1770
meter and written to a WAV file.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from studiod.daemon.audiofile import write_atomic
from studiod.dsp.demo_session import DEMO_SETTINGS, demo_session, synthesize
from studiod.dsp.engine import Engine
from studiod.dsp.loudness import measure

BLOCK_FRAMES = 64


def run_demo(seconds: float, out_path: Path, system: str, samplerate: int = 48000) -> dict:
    """Render the demo; returns the loudness figures and the engine's cost."""
    engine = Engine(demo_session(samplerate))
    for address, value in DEMO_SETTINGS.items():
        engine.set(address, value)
    engine.set("/monitor/system", system)
    tracks = synthesize(seconds, samplerate)
    spec = next(m for m in engine.session.systems if m.name == system)
    columns = [o - 1 for o in spec.outputs]
    # first call compiles the engine (or loads it from numba's cache)
    engine.render(np.zeros((BLOCK_FRAMES, engine.session.n_inputs), np.float32), BLOCK_FRAMES)
    started = time.perf_counter()
    out = engine.render(tracks, BLOCK_FRAMES)
    elapsed_s = time.perf_counter() - started
    heard = out[:, columns]
    figures = measure(heard, samplerate)
    write_atomic(out_path, heard, samplerate, subtype="PCM_24")
    figures["realtime_factor"] = seconds / elapsed_s
    figures["block_cost_percent"] = 100.0 * elapsed_s / seconds
    return figures


def register(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="play the embedded demo session through the engine (no hardware needed)",
        description="Render the synthesised demo session through the engine in 64-frame "
        "blocks, print its loudness and write what the monitor system hears to a WAV file.",
    )
    demo.add_argument("--seconds", type=float, default=16.0, help="length (default 16)")
    demo.add_argument("--system", default="studio", help="monitor system (default studio)")
    demo.add_argument("--out", default="out/demo.wav", help="WAV file (default out/demo.wav)")
    demo.set_defaults(func=main)


def main(args) -> int:
    figures = run_demo(args.seconds, Path(args.out), args.system)
    print(f"studiod demo: {args.seconds:g} s of the demo session through the engine")
    print(f"  monitor system      {args.system}")
    print(f"  integrated          {figures['integrated_lufs']:7.2f} LUFS")
    print(f"  short-term max      {figures['shortterm_max_lufs']:7.2f} LUFS")
    print(f"  momentary max       {figures['momentary_max_lufs']:7.2f} LUFS")
    print(f"  loudness range      {figures['loudness_range_lu']:7.2f} LU")
    print(f"  true peak           {figures['true_peak_dbtp']:7.2f} dBTP")
    print(f"  engine speed        {figures['realtime_factor']:7.1f}x real time "
          f"({figures['block_cost_percent']:.1f} % of each 64-frame block)")  # fmt: skip
    print(f"  wrote               {args.out}")
    return 0
