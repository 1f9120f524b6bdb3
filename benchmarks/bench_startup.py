"""Start-up and memory: how long a user waits and what a Pi has to hold.

* ``studiod --help``: whole process, median of five;
* ``studiod demo`` to READY, timed from the spawn to systemd's ``READY=1`` (the benchmark
  listens on ``$NOTIFY_SOCKET`` as systemd would): warm (the numba cache filled) and, with
  ``--cold``, with an empty cache (minutes: every kernel is compiled);
* the private memory (``Private_Clean + Private_Dirty`` of ``/proc/PID/smaps_rollup``: what
  the process alone holds, shared libraries' pages not counted) of each stage of a start,
  each in a fresh process: the interpreter, numpy, numba, the engine modules, and the
  running demo 20 s after its start;
* with ``--analyze-minutes M``: ``studiod analyze`` of an M-minute stereo 24-bit file beside
  a process that only decodes it (soundfile, the decoder studiod reads with).

Run: ``python benchmarks/bench_startup.py [--cold] [--analyze-minutes 30]``. The last line:
``studiod demo private memory after 20 s: X MB``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

STUDIOD = [sys.executable, "-m", "studiod.daemon.cli"]
DEMO_SETTLE_S = 20.0

STAGES = {
    "python": "pass",
    "numpy": "import numpy",
    "numba": "import numba",
    "engine modules": "import studiod.dsp.engine, studiod.daemon.rtcore",
    "daemon modules": "import studiod.daemon.runtime, studiod.daemon.cmd_demo",
}


def private_mb(pid: int | str = "self") -> float:
    """What a process alone holds (MB): its private clean and dirty pages."""
    total_kb = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total_kb += int(line.split()[1])
    return total_kb / 1024.0


def stage_memory(code: str) -> float:
    """Private memory of a fresh interpreter after ``code`` (the probe imports nothing else)."""
    probe = f"{code}\n{inspect.getsource(private_mb)}\nprint(private_mb())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return float(out.stdout.split()[-1])


def help_seconds(runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*STUDIOD, "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def demo_until_ready(env: dict, settle_s: float | None) -> tuple[float, float | None, str]:
    """(seconds to READY=1, private MB ``settle_s`` after the start or None, its stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        address = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address)
        state = os.path.join(tmp, "state")
        argv = [*STUDIOD, "demo", "--state-dir", state]
        started = time.monotonic()
        env = {**env, "NOTIFY_SOCKET": address}
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        ready_s = None
        try:
            sock.settimeout(1.0)
            while ready_s is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"studiod demo ended early:\n{proc.stderr.read()}")
                try:
                    message = sock.recv(4096).decode()
                except TimeoutError:
                    continue
                if "READY=1" in message.splitlines():
                    ready_s = time.monotonic() - started
            memory = None
            if settle_s is not None:
                time.sleep(max(0.0, started + settle_s - time.monotonic()))
                memory = private_mb(proc.pid)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=60)
            sock.close()
    return ready_s, memory, err


def analyze_vs_decode(minutes: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "programme.wav"
        rng = np.random.default_rng(3)
        with sf.SoundFile(path, "w", 48000, 2, subtype="PCM_24") as f:
            for _ in range(int(minutes * 60 / 10)):
                f.write((0.1 * rng.standard_normal((480000, 2))).astype(np.float32))
        decode = f"import soundfile as sf\nfor b in sf.blocks({str(path)!r}, 65536): pass"
        timings = {}
        for name, argv in (("decode", [sys.executable, "-c", decode]),
                           ("analyze", [*STUDIOD, "analyze", str(path)])):  # fmt: skip
            started = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True)
            timings[name] = time.perf_counter() - started
    return timings["analyze"], timings["decode"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="also start with an empty cache")
    parser.add_argument("--analyze-minutes", type=float, default=0.0)
    args = parser.parse_args()

    print(f"studiod --help: {help_seconds():.2f} s (median of 5)", flush=True)
    env = dict(os.environ)
    if args.cold:
        with tempfile.TemporaryDirectory() as cache:
            ready_s, _, err = demo_until_ready({**env, "NUMBA_CACHE_DIR": cache}, None)
            compiled = [line for line in err.splitlines() if "compiled" in line]
            print(f"cold start to READY: {ready_s:.1f} s ({compiled[-1] if compiled else ''})",
                  flush=True)  # fmt: skip
    demo_until_ready(env, None)  # fills the cache when it is empty
    ready_s, _, _ = demo_until_ready(env, None)
    print(f"warm start to READY: {ready_s:.2f} s", flush=True)
    if args.analyze_minutes:
        analyze_s, decode_s = analyze_vs_decode(args.analyze_minutes)
        print(f"analyze of {args.analyze_minutes:g} min: {analyze_s:.1f} s; decoding alone "
              f"{decode_s:.1f} s ({analyze_s / decode_s:.1f}x)", flush=True)  # fmt: skip
    for name, code in STAGES.items():
        print(f"private memory, {name}: {stage_memory(code):.0f} MB", flush=True)
    _, memory, _ = demo_until_ready(env, DEMO_SETTLE_S)
    print(f"studiod demo private memory after {DEMO_SETTLE_S:.0f} s: {memory:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
