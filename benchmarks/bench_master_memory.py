"""Memory of ``studiod master`` against the length of the file: peak RSS of the command
(block by block: flat with length) beside the whole-signal path it replaced
(``master_audio`` on the file read into memory, still used when resampling) and ffmpeg's
``loudnorm`` filter (a streaming peer), on the same files, in the same run.

Each file is stereo 24-bit WAV at 48 kHz of synthetic programme (pink-ish noise under a few
tones, with a slow level ride so the limiter works), written block by block. Each tool runs
in its own process; its peak RSS is the kernel's ``ru_maxrss`` from ``wait4``.

Run: ``python benchmarks/bench_master_memory.py [--minutes 2,8] [--skip-whole-over 10]``
(``--minutes 120`` for the 2-hour acceptance figure: a few minutes per pass on a PC). The
last line: ``master memory: X MB at N min (block by block), slope S MB/min; whole-signal
path Y MB at M min``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.signal as ss
import soundfile as sf

FS = 48000
BLOCK = 1 << 16

WHOLE = r"""
import sys
from studiod.daemon.cmd_master import MasterOptions, master_audio
from studiod.daemon.offline import PRESETS, read_audio
x, fs = read_audio(sys.argv[1])
master_audio(x, fs, MasterOptions(preset=PRESETS["spotify"]))
"""


def write_programme(path: Path, minutes: float, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    frames = int(minutes * 60 * FS)
    state = np.zeros((1, 2))
    with sf.SoundFile(path, "w", FS, 2, subtype="PCM_24") as f:
        for start in range(0, frames, BLOCK):
            n = min(BLOCK, frames - start)
            t = (start + np.arange(n)) / FS
            white = rng.standard_normal((n, 2)) * 0.05
            # a one-pole tilt (state carried across blocks): less top end, like music
            noise, state = ss.lfilter([1.0], [1.0, -0.9], white, axis=0, zi=state)
            tones = 0.1 * np.sin(2 * np.pi * np.outer(t, [110.0, 165.0]))
            ride = 0.5 + 0.4 * np.sin(2 * np.pi * t / 20.0)[:, None]
            f.write(((noise * 0.1 + tones) * ride).astype(np.float32))


def peak_rss_mb(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one command."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[:4]} failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024.0, took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", default="2,8", help="file lengths, comma-separated")
    parser.add_argument(
        "--skip-whole-over", type=float, default=10.0, help="no whole-signal run above N min"
    )
    args = parser.parse_args(argv)
    lengths = [float(m) for m in args.minutes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="studiod-bench-") as tmp:
        for minutes in lengths:
            src = Path(tmp) / f"in-{minutes:g}.wav"
            write_programme(src, minutes)
            out = Path(tmp) / "out.wav"
            block_mb, block_s = peak_rss_mb(
                [sys.executable, "-m", "studiod.daemon.cli", "master", str(src), str(out),
                 "--target", "spotify"]
            )  # fmt: skip
            ffmpeg_mb, ffmpeg_s = peak_rss_mb(
                ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-af",
                 "loudnorm=I=-14:TP=-1", "-f", "null", "-"]
            )  # fmt: skip
            whole_mb = whole_s = float("nan")
            if minutes <= args.skip_whole_over:
                whole_mb, whole_s = peak_rss_mb([sys.executable, "-c", WHOLE, str(src)])
            rows.append((minutes, block_mb, whole_mb, ffmpeg_mb))
            print(
                f"{minutes:6.1f} min: studiod master {block_mb:7.1f} MB ({block_s:5.1f} s), "
                f"whole-signal path {whole_mb:7.1f} MB ({whole_s:5.1f} s), "
                f"ffmpeg loudnorm {ffmpeg_mb:6.1f} MB ({ffmpeg_s:5.1f} s); "
                f"studiod/ffmpeg {block_mb / ffmpeg_mb:.1f}x",
                flush=True,
            )
            src.unlink()
    (m0, b0, *_), (m1, b1, *_) = rows[0], rows[-1]
    slope = (b1 - b0) / (m1 - m0) if m1 != m0 else 0.0
    whole = [(m, w) for m, _, w, _ in rows if w == w]
    whole_text = (
        f"; whole-signal path {whole[-1][1]:.0f} MB at {whole[-1][0]:g} min" if whole else ""
    )
    print(
        f"master memory: {b1:.0f} MB at {m1:g} min (block by block), slope {slope:.2f} MB/min"
        + whole_text
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
