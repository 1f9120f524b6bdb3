"""Loudness analysis speed against ffmpeg, libebur128 and pyloudnorm, side by side in one run.

Material: 10 minutes of synthesised 48 kHz stereo programme (``_material.stereo_programme``),
written to a temporary 32-bit float WAV so that ffmpeg and we read the same samples.

* Full analysis (momentary, short-term, integrated, LRA, true peak): ``ffmpeg -i FILE -af
  ebur128=peak=true -f null -`` against ``studiod.dsp.loudness.measure`` on the samples read
  from the same file with soundfile, file read included (what ``studiod analyze`` does).
* Full analysis in memory: libebur128 (through pyebur128; momentary, short-term, integrated,
  LRA and true peak, in its histogram mode, its fastest for a long programme) on the float64
  samples against ``measure`` on the same array.
* Integrated loudness: ``pyloudnorm.Meter(fs, filter_class="DeMan").integrated_loudness`` on
  the float64 samples in memory against ``measure(..., true_peak=False)`` on the same array.

Each figure is the best (shortest) wall-clock time of N runs; the ratios use those. ``measure``
uses every CPU (threads); the single-thread figures are printed too. The last line is
``analysis/ffmpeg: <x>x  analysis/libebur128: <y>x  integrated/pyloudnorm: <z>x`` (how many
times faster we are; issues #3 and #16).

    python benchmarks/bench_loudness.py [--seconds 600] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyebur128
import pyloudnorm
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _material import stereo_programme

from studiod.dsp.loudness import measure

SAMPLERATE = 48000


CPU_SECONDS: dict[str, float] = {}  # label -> least CPU seconds (this process + children)


def _cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def best_of(runs: int, fn, label: str = ""):
    """(shortest wall-clock seconds over ``runs`` calls, the last call's result); the least
    CPU time (all threads and child processes) goes to ``CPU_SECONDS[label]``."""
    best = float("inf")
    cpu = float("inf")
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        cpu_start = _cpu_now()
        result = fn()
        cpu = min(cpu, _cpu_now() - cpu_start)
        best = min(best, time.perf_counter() - start)
    if label:
        CPU_SECONDS[label] = cpu
    return best, result


def ffmpeg_ebur128(path: Path) -> dict:
    """ffmpeg's ebur128 summary (I, LRA, true peak) for ``path``."""
    proc = subprocess.run(
        [
            "ffmpeg",
            "-nostats",
            "-hide_banner",
            "-i",
            str(path),
            "-af",
            "ebur128=peak=true",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = proc.stderr[proc.stderr.rindex("Summary:") :]

    def grab(label: str) -> float:
        m = re.search(label + r":\s+(-?[\d.]+|-inf)", summary)
        if m is None:
            raise RuntimeError(f"no {label} in ffmpeg's summary:\n{summary}")
        return float(m.group(1))

    return {"I": grab("I"), "LRA": grab("LRA"), "TP": grab("Peak")}


def libebur128(x: np.ndarray) -> dict:
    """libebur128's full analysis of ``x`` (float64 [n, 2]): I, LRA and the true peak."""
    mode = pyebur128.MeasurementMode
    state = pyebur128.R128State(
        x.shape[1],
        SAMPLERATE,
        mode.MODE_I | mode.MODE_S | mode.MODE_LRA | mode.MODE_TRUE_PEAK | mode.MODE_HISTOGRAM,
    )
    state.add_frames(x.reshape(-1), len(x))
    peak = max(pyebur128.get_true_peak(state, c) for c in range(x.shape[1]))
    return {
        "I": pyebur128.get_loudness_global(state),
        "LRA": pyebur128.get_loudness_range(state),
        "TP": 20 * np.log10(peak),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="programme length")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed (./run installs it)", file=sys.stderr)
        return 1

    print(
        f"loudness benchmark: {args.seconds:g} s of 48 kHz stereo, best of {args.runs} runs, "
        f"{os.cpu_count()} CPUs"
    )
    x = stereo_programme(args.seconds, SAMPLERATE)
    with tempfile.TemporaryDirectory(prefix="studiod-bench-") as tmp:
        path = Path(tmp) / "programme.wav"
        sf.write(path, x, SAMPLERATE, subtype="FLOAT")
        x32 = sf.read(path, dtype="float32")[0]
        x64 = x32.astype(np.float64)
        # compile (or load from numba's cache) before timing
        measure(x32[: 5 * SAMPLERATE], SAMPLERATE)
        measure(x64[: 5 * SAMPLERATE], SAMPLERATE, true_peak=False)
        measure(x32[: 5 * SAMPLERATE], SAMPLERATE, workers=1)
        measure(x64[: 5 * SAMPLERATE], SAMPLERATE, true_peak=False, workers=1)

        def ours_file():
            return measure(sf.read(path, dtype="float32")[0], SAMPLERATE)

        t_ff, ff = best_of(args.runs, lambda: ffmpeg_ebur128(path), "ffmpeg")
        t_file, ours = best_of(args.runs, ours_file, "ours_file")
        t_mem, _ = best_of(args.runs, lambda: measure(x32, SAMPLERATE))
        t_mem1, _ = best_of(args.runs, lambda: measure(x32, SAMPLERATE, workers=1))
        t_read, _ = best_of(args.runs, lambda: sf.read(path, dtype="float32"))

    t_ebu, ebu = best_of(args.runs, lambda: libebur128(x64), "ebu")
    t_full, _ = best_of(args.runs, lambda: measure(x64, SAMPLERATE), "ours_full")
    t_full1, _ = best_of(args.runs, lambda: measure(x64, SAMPLERATE, workers=1))
    meter = pyloudnorm.Meter(SAMPLERATE, filter_class="DeMan")
    t_pyln, pyln = best_of(args.runs, lambda: meter.integrated_loudness(x64), "pyln")
    t_int, ours_i = best_of(
        args.runs, lambda: measure(x64, SAMPLERATE, true_peak=False), "ours_int"
    )
    t_int1, _ = best_of(args.runs, lambda: measure(x64, SAMPLERATE, true_peak=False, workers=1))

    print()
    print("full analysis (M, S, I, LRA, true peak)          seconds   vs ffmpeg")
    print(f"  ffmpeg -af ebur128=peak=true (file)            {t_ff:7.3f}      1.0x")
    print(f"  studiod measure, file read included            {t_file:7.3f}   {t_ff / t_file:6.1f}x")
    print(f"  studiod measure, in memory                     {t_mem:7.3f}   {t_ff / t_mem:6.1f}x")
    print(f"  studiod measure, in memory, one thread         {t_mem1:7.3f}   {t_ff / t_mem1:6.1f}x")
    print(f"  (soundfile read of the WAV alone               {t_read:7.3f})")
    print("full analysis (float64 in memory)                seconds   vs libebur128")
    print(f"  libebur128 (pyebur128, histogram mode)         {t_ebu:7.3f}      1.0x")
    print(
        f"  studiod measure                                {t_full:7.3f}   {t_ebu / t_full:6.1f}x"
    )
    print(
        f"  studiod measure, one thread                    {t_full1:7.3f}   {t_ebu / t_full1:6.1f}x"
    )
    print("integrated loudness (float64 in memory)          seconds   vs pyloudnorm")
    print(f"  pyloudnorm integrated_loudness                 {t_pyln:7.3f}      1.0x")
    print(f"  studiod measure(true_peak=False)               {t_int:7.3f}   {t_pyln / t_int:6.1f}x")
    print(
        f"  studiod measure(true_peak=False), one thread   {t_int1:7.3f}   {t_pyln / t_int1:6.1f}x"
    )
    cpu = CPU_SECONDS
    print("CPU seconds (all threads; a check when other work shares the machine):")
    print(
        f"  ffmpeg {cpu['ffmpeg']:.3f}  studiod file {cpu['ours_file']:.3f}  "
        f"({cpu['ffmpeg'] / cpu['ours_file']:.1f}x);  libebur128 {cpu['ebu']:.3f}  "
        f"studiod {cpu['ours_full']:.3f} ({cpu['ebu'] / cpu['ours_full']:.1f}x)"
    )
    print(
        f"  pyloudnorm {cpu['pyln']:.3f}  studiod integrated {cpu['ours_int']:.3f} "
        f"({cpu['pyln'] / cpu['ours_int']:.1f}x)"
    )
    print(f"  load average at the end: {os.getloadavg()[0]:.2f}")
    print()
    print("agreement:")
    print(
        f"  integrated  studiod {ours['integrated_lufs']:8.3f}  ffmpeg {ff['I']:6.1f}  "
        f"libebur128 {ebu['I']:8.3f}  pyloudnorm {pyln:8.3f} LUFS  "
        f"(integrated-only path {ours_i['integrated_lufs']:.3f})"
    )
    print(
        f"  LRA         studiod {ours['loudness_range_lu']:8.3f}  ffmpeg {ff['LRA']:6.1f}  "
        f"libebur128 {ebu['LRA']:8.3f} LU"
    )
    print(
        f"  true peak   studiod {ours['true_peak_dbtp']:8.3f}  ffmpeg {ff['TP']:6.1f}  "
        f"libebur128 {ebu['TP']:8.3f} dBTP"
    )
    print(
        f"analysis/ffmpeg: {t_ff / t_file:.1f}x  analysis/libebur128: {t_ebu / t_full:.1f}x  "
        f"integrated/pyloudnorm: {t_pyln / t_int:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
