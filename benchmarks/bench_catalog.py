"""Catalog analysis: ``studiod analyze`` over many files with ``--jobs`` and on a Dask cluster.

Material: ``--files`` WAV files (24-bit, 48 kHz stereo) of ``--seconds`` each, cut from one
long synthesised programme (``_material.stereo_programme``) at different offsets and levels.

Each figure is the best (shortest) wall-clock time of ``--runs`` runs of the command as a
user runs it, ``python -m studiod.daemon.cli analyze --json FILES``, interpreter start
included:

* ``--jobs 1`` (this process, one file after the other) and ``--jobs 2`` (worker processes,
  started by every run);
* ``--scheduler`` on a ``dask.distributed.LocalCluster`` of 1 and of 2 worker processes
  (one thread each, on 127.0.0.1), both started before the runs, as an existing cluster
  is; their first run (the workers load the compiled kernels) is printed apart.

The witness of what a second process gains on this machine at this moment (other work may
share it): ffmpeg's ebur128 filter over the same files, one and two processes at a time.
The runs go round by round, every way once a round, so that a change in the machine's load
falls on all of them alike. Every run's JSON must equal the ``--jobs 1`` JSON (the benchmark
fails otherwise). The last line is ``jobs 2/1: <x>x  cluster 2/1: <y>x  ffmpeg 2/1: <z>x``
(files/s ratios).

    python benchmarks/bench_catalog.py [--files 24] [--seconds 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _material import stereo_programme

SAMPLERATE = 48000


def write_catalog(folder: Path, files: int, seconds: float) -> list[str]:
    """``files`` 24-bit WAVs of ``seconds``: windows of one programme, levels 0 to -9 dB."""
    n = round(seconds * SAMPLERATE)
    hop = round(7.0 * SAMPLERATE)  # windows start 7 s apart (different sections)
    programme = stereo_programme(seconds + hop * (files - 1) / SAMPLERATE, SAMPLERATE)
    rng = np.random.default_rng(11)
    paths = []
    for k in range(files):
        gain = 10.0 ** (-rng.uniform(0.0, 9.0) / 20.0)
        path = folder / f"track{k:03d}.wav"
        sf.write(path, programme[k * hop : k * hop + n] * gain, SAMPLERATE, subtype="PCM_24")
        paths.append(str(path))
    return paths


def analyze(paths: list[str], how: list[str], reference: str | None = None) -> tuple[float, str]:
    """(wall seconds, stdout) of one ``studiod analyze --json HOW PATHS`` command; its JSON
    must equal ``reference`` when one is given."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "studiod.daemon.cli", "analyze", "--json", *how, *paths],
        capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"analyze {' '.join(how)} failed:\n{proc.stderr}")
    if reference is not None and proc.stdout != reference:
        raise RuntimeError(f"analyze {' '.join(how)}: the JSON differs from --jobs 1's")
    return elapsed, proc.stdout


def ffmpeg_files(paths: list[str], processes: int) -> float:
    """Wall seconds for ``ffmpeg -af ebur128=peak=true`` over ``paths``, ``processes`` at once."""

    def one(path: str) -> None:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-nostats", "-hide_banner", "-i", path,
             "-af", "ebur128=peak=true", "-f", "null", "-"],
            capture_output=True, check=True,
        )  # fmt: skip

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(processes) as pool:
        list(pool.map(one, paths))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=24, help="how many files")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each file")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    try:
        from dask.distributed import LocalCluster
    except ImportError:
        print("dask is not installed: pip install 'studiod[dask]'", file=sys.stderr)
        return 1

    n = args.files
    print(
        f"catalog benchmark: {n} files of {args.seconds:g} s (48 kHz stereo, 24-bit WAV), "
        f"best of {args.runs} runs, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at the start"
    )
    with tempfile.TemporaryDirectory(prefix="studiod-bench-") as tmp, ExitStack() as stack:
        paths = write_catalog(Path(tmp), n, args.seconds)
        # numba's cache and the page cache warm; the reference JSON
        _, reference = analyze(paths, ["--jobs", "1"])
        clusters = {
            workers: stack.enter_context(
                LocalCluster(
                    n_workers=workers, processes=True, threads_per_worker=1,
                    host="127.0.0.1", dashboard_address="127.0.0.1:0",
                )
            )
            for workers in (1, 2)
        }  # fmt: skip
        cold = {
            w: analyze(paths, ["--scheduler", c.scheduler_address], reference)[0]
            for w, c in clusters.items()
        }
        # pairs of (one at a time, two at a time): the second's ratio is to the first
        pairs = {
            "jobs": {
                "studiod analyze --jobs 1": lambda: analyze(paths, ["--jobs", "1"], reference)[0],
                "studiod analyze --jobs 2": lambda: analyze(paths, ["--jobs", "2"], reference)[0],
            },
            "cluster": {
                f"studiod analyze --scheduler, {w} worker{'s' if w > 1 else ''}": (
                    lambda a=c.scheduler_address: analyze(paths, ["--scheduler", a], reference)[0]
                )
                for w, c in clusters.items()
            },
        }
        if shutil.which("ffmpeg"):
            pairs["ffmpeg"] = {
                "ffmpeg ebur128, 1 process at a time": lambda: ffmpeg_files(paths, 1),
                "ffmpeg ebur128, 2 processes at a time": lambda: ffmpeg_files(paths, 2),
            }
        alone = "the command on one file"
        ways = {label: run for pair in pairs.values() for label, run in pair.items()}
        ways[alone] = lambda: analyze(paths[:1], ["--jobs", "1"])[0]
        best = {label: float("inf") for label in ways}
        for _ in range(args.runs):
            for label, run in ways.items():
                best[label] = min(best[label], run())

    print()
    print(f"{'':46} seconds   files/s   vs 1")
    ratios = []
    for name, pair in pairs.items():
        one, two = (best[label] for label in pair)
        for label in pair:
            print(f"  {label:<44} {best[label]:7.2f}   {n / best[label]:7.1f}   "
                  f"{one / best[label]:5.2f}x")  # fmt: skip
        ratios.append(f"{name} 2/1: {one / two:.2f}x")
    print(
        f"  ({alone}, start-up and loading the compiled kernels: {best[alone]:.2f} s;"
        f" a cluster's first run, its workers loading them: {cold[1]:.2f} s with 1 worker,"
        f" {cold[2]:.2f} s with 2)"
    )
    print("  the JSON of every run: identical to the first --jobs 1 run's")
    print(f"  load average at the end: {os.getloadavg()[0]:.2f}")
    print("  ".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
