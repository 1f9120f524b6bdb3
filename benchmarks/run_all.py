"""Run every benchmark (``./run bench``), one after the other, each in its own process.

Every ``benchmarks/bench_<name>.py`` is a benchmark (loudness and engine first, then the
others by name). Each prints its figures and ends with its result line; this script prints
them as they come and repeats the last lines at the end. Arguments after ``--`` are passed to
every benchmark run (e.g. ``--runs 5``). Exit status: non-zero when a benchmark failed.

    python benchmarks/run_all.py [NAME ...] [-- ARGS...]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRST = ("loudness", "engine")  # issue #3 (vs ffmpeg, pyloudnorm), issue #2 (vs pedalboard)
_FOUND = {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}
BENCHMARKS = {
    **{name: _FOUND[name] for name in FIRST if name in _FOUND},
    **{name: path for name, path in _FOUND.items() if name not in FIRST},
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    summary = []
    status = 0
    for name in names:
        print(f"=== {name} ===", flush=True)
        proc = subprocess.Popen(
            [sys.executable, str(BENCHMARKS[name]), *extra], stdout=subprocess.PIPE, text=True
        )
        last = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.strip():
                last = line.strip()
        if proc.wait() != 0:
            status = 1
            last = f"FAILED (exit {proc.returncode})"
        summary.append(f"{name}: {last}")
        print(flush=True)
    print("=== summary ===")
    print("\n".join(summary))
    return status


if __name__ == "__main__":
    sys.exit(main())
