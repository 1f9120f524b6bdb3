"""A Raspberry Pi budget from instruction counts: the standard session's cost per block,
counted on this machine under valgrind and turned into Cortex-A72 (Pi 4) and Cortex-A76
(Pi 5) time with published clocks and an assumed IPC (docs/pi-budget.md).

No Pi and no hardware counter is needed: an instruction count does not depend on how busy
the machine is. How:

1. A child process builds the standard session of ``bench_engine`` (its ``session()`` and
   ``configure()``, as ``realtime_engine`` does: 2 groups, reverb and delay, the master chain,
   4 monitor systems (studio, alt, headphones, car simulation), on the same multitrack) for
   2, 4, 8, 16, 32 and 64 channels, settles it with 500 blocks of 64 frames, and runs the
   engine's ``process_block`` from a compiled loop, the way the daemon's audio callback
   (``daemon/rtcore.py``) calls it: no Python and no numba dispatch in a block. Blocks of 64,
   128 and 256 frames, ``--audio-ms`` of audio each (200: a loudness meter's 100 ms step falls
   into every run).
2. Run natively, the loop times each block (``clock_gettime(CLOCK_MONOTONIC)``, the clock of
   ``time.perf_counter``, around it): the median µs per block here (the best of 7 passes of
   0.5 s of audio per size, the passes spread over the whole run).
3. Run under callgrind, the same loop asks valgrind to zero its counters before each block
   and to dump them after it (client requests: ``valgrind.h``'s instruction sequence, inline
   in the compiled loop). Each dump holds one block's instructions and nothing else: Python's
   start-up, the imports, the cache loading and the set-up are never counted (a dump before
   each run is thrown away: a process's first dump holds costs from before the zeroing). The
   ``engine.process`` call from Python is counted too, as a difference (30 calls minus 10), to
   show the dispatch the daemon does not pay.
4. Twice: numba compiled for this CPU (on x86-64 with AVX2 + FMA: 256-bit vectors; a CPU with
   AVX-512 is counted with it turned off, as valgrind 3.19 decodes no AVX-512 instruction) and for
   ``x86-64-v2`` (SSE4.2: 128-bit vectors of 2 doubles, the width of the Pi's NEON; no FMA), in
   a numba cache of its own. The x86-64-v2 count stands in for the AArch64 count. On an
   aarch64 machine only the native count is made: it is the real thing.
5. time = instructions / (IPC x clock), with the clocks and IPCs of ``CORES``.

The first run compiles the engine for x86-64-v2 (minutes); later runs load it from numba's
cache. The counting runs take a few minutes each (valgrind runs Python ~50x slower). Needs
valgrind (``./run bench`` installs it).

    python benchmarks/bench_pi_budget.py [--targets native,x86-64-v2] [--audio-ms 200]

The last line is ``standard session at 128 frames: NN % of one Cortex-A72 core (goal <= 25 %)``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

sys.path.insert(0, str(Path(__file__).resolve().parent))

from studiod.daemon.native import clock_ns, libc_address
from studiod.dsp._jit import kernel
from studiod.dsp.engine import process_block

SAMPLERATE = 48000  # bench_engine.SAMPLERATE
FRAMES = (64, 128, 256)
CHANNELS = (2, 4, 8, 16, 32, 64)
STANDARD = 16  # the standard session's channels
INPUT_S = 4.0  # the multitrack realtime_engine plays
WARMUP_BLOCKS = 500  # realtime_engine's settling, 64-frame blocks
SETTLE_BLOCKS = 8  # at each block size before it is timed or counted
TIME_AUDIO_S = 0.5  # timed per block size and channel count, per pass
TIME_RUNS = 7  # passes; the best pass's median: the quietest moment of a shared machine
PY_CALLS = (10, 30)  # engine.process from Python: the count of 30 calls minus that of 10
HEARTBEAT_S = 10.0

# Published clocks (Raspberry Pi's config.txt documentation, default arm_freq: Pi 4 Model B
# up to rev 1.3 and CM4 1500 MHz, rev 1.4 1500 or 1800 with arm_boost=1, Pi 400 1800; Pi 5
# 2400; the Pi 4 at its lower clock) and an assumed sustained IPC: a third of the A72's 3-wide
# decode, and for the A76 the A72's times 1.5, under the +60-70 % (integer) and +100-120 %
# (floating point) per clock that Arm gave for Neoverse N1 (an A76 derivative) over the A72.
# Sources and reasoning: docs/pi-budget.md.
CORES = (
    # name, board, clock (Hz), assumed IPC
    ("Cortex-A72", "Pi 4", 1.5e9, 1.0),
    ("Cortex-A76", "Pi 5", 2.4e9, 1.5),
)
GOAL_PCT = 25.0  # the standard session at 128 frames, of one A72 core
BUDGETS_PCT = (25.0, 50.0, 75.0)

# The AArch64 stand-in: numba's NUMBA_CPU_NAME / NUMBA_CPU_FEATURES for 128-bit SSE4.2 code.
V2_CPU = "x86-64-v2"
V2_FEATURES = (
    "+64bit,+cmov,+cx16,+cx8,+fxsr,+mmx,+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3"
)

# ----------------------------------------------------------------------------------------
# valgrind client requests from compiled code

# callgrind.h: VG_USERREQ_TOOL_BASE('C','T') + 0 (DUMP_STATS), + 1 (ZERO_STATS)
CG_DUMP = 0x43540000
CG_ZERO = 0x43540001
# valgrind.h's VALGRIND_DO_CLIENT_REQUEST_EXPR: (instruction sequence, LLVM constraints:
# result, address of the six request words, the default result). The aarch64 one is
# valgrind.h's too but has not run yet: no Pi was at hand.
_REQUEST_ASM = {
    "x86_64": (
        "rolq $$3, %rdi\n\trolq $$13, %rdi\n\trolq $$61, %rdi\n\trolq $$51, %rdi\n\t"
        "xchgq %rbx, %rbx",
        "={rdx},{rax},0,~{cc},~{memory}",
    ),
    "aarch64": (
        "ror x12, x12, #3\n\tror x12, x12, #13\n\tror x12, x12, #51\n\tror x12, x12, #61\n\t"
        "orr x10, x10, x10",
        "={x3},{x4},0,~{cc},~{memory}",
    ),
}
llvm.initialize_native_asmparser()  # numba does not: inline assembly needs it


@intrinsic
def _client_request(typingctx, words_addr):
    """Hand valgrind the request in the six uint64 words at ``words_addr`` (valgrind.h's
    magic sequence). Natively the sequence changes nothing (a register rotated by 128 bits,
    a register swapped with itself) and yields 0."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        asm, constraints = _REQUEST_ASM[platform.machine()]
        fnty = ir.FunctionType(i64, [i64, i64])
        request = ir.InlineAsm(fnty, asm, constraints, side_effect=True)
        return builder.call(request, [args[0], i64(0)])

    return sig, codegen


@kernel
def _request(words, code):
    """One callgrind request (``CG_*``) from Python; ``words``: uint64[6]."""
    words[0] = code
    _client_request(words.ctypes.data)


@kernel
def _run_blocks(arrays, inputs, out, frames, position, costs_ns, clock, count, words):
    """``costs_ns.shape[0]`` blocks of ``frames`` through ``process_block`` (``arrays``: the
    engine's ``arrays()``), reading ``inputs`` from ``position`` on (looping), as the audio
    callback calls it. Each block's wall time (ns) goes to ``costs_ns`` when ``clock`` is
    (clock_gettime's address, clock id); with ``count``, callgrind's counters are zeroed
    before each block and dumped after it. Returns the next position."""
    s, lp_head, lp_spectra, lp_ctl, q_idx, q_val, q_ctl = arrays
    span = inputs.shape[0] - frames
    dest = out[:frames]
    for k in range(costs_ns.shape[0]):
        start = (position + k * frames) % span
        block = inputs[start : start + frames]
        t0 = clock_ns(clock[0], clock[1])
        if count:
            words[0] = CG_ZERO
            _client_request(words.ctypes.data)
        process_block(s, lp_head, lp_spectra, lp_ctl, block, dest, q_idx, q_val, q_ctl)
        if count:
            words[0] = CG_DUMP
            _client_request(words.ctypes.data)
        costs_ns[k] = clock_ns(clock[0], clock[1]) - t0
    return (position + costs_ns.shape[0] * frames) % span


# ----------------------------------------------------------------------------------------
# the child: one process per target and mode (timed natively, or counted under callgrind)


def _blocks(frames: int, audio_s: float) -> int:
    return max(1, round(audio_s * SAMPLERATE / frames))


def child(mode: str, inputs_path: str, out_path: str, audio_ms: float) -> int:
    """Build the sessions, run the blocks, write what was done (and the times) as JSON."""
    from contextlib import nullcontext

    from studiod.dsp._jit import CompileProgress

    count = mode == "count"
    tag = "callgrind" if count else "native"

    def say(text: str) -> None:
        print(f"[{tag}] {text}", flush=True)

    tracks = np.load(inputs_path)
    plan: list = []  # what each callgrind dump holds, in order
    rows: list = []  # native: the timings
    sessions = []
    # No helper thread while counting: callgrind counts every thread's instructions.
    with nullcontext() if count else CompileProgress(say, every_s=HEARTBEAT_S):
        for channels in CHANNELS:
            started = time.monotonic()
            sessions.append(_Session(channels, tracks))
            if count:
                sessions.pop().count(audio_ms, plan)
            say(
                f"{channels:2d} channels: {'counted' if count else 'built and settled'} "
                f"({time.monotonic() - started:.0f} s)"
            )
    if not count:
        # Every size timed once per pass, the passes spread over the whole run: the best
        # pass's median is each size's quietest moment on a shared machine.
        best: dict = {}
        for k in range(TIME_RUNS):
            for session in sessions:
                for key, us in session.time().items():
                    best[key] = min(best.get(key, us), us)
            say(f"timing pass {k + 1} of {TIME_RUNS} done")
        rows = [{"channels": c, "frames": f, "us": us} for (c, f), us in best.items()]
        python_us = [s.python_us() for s in sessions if s.channels == STANDARD]
        rows.append({"channels": STANDARD, "frames": 64, "python_us": min(python_us)})
    Path(out_path).write_text(json.dumps({"plan": plan, "rows": rows}))
    return 0


class _Session:
    """bench_engine.realtime_engine's engine with ``channels`` inputs on its multitrack,
    settled as realtime_engine settles it (500 blocks of 64 frames), driven by
    :func:`_run_blocks`."""

    def __init__(self, channels: int, tracks: np.ndarray):
        import bench_engine

        from studiod.dsp.engine import Engine

        self.channels = channels
        self.engine = Engine(bench_engine.session(channels, systems=4, buses=True))
        bench_engine.configure(self.engine, slope="12", sends=True)
        n_inputs, n_outputs = self.engine.session.n_inputs, self.engine.session.n_outputs
        self.inputs = np.zeros((len(tracks), n_inputs), dtype=np.float32)
        self.inputs[:, :channels] = tracks[:, :channels]
        self.out = np.zeros((max(FRAMES), n_outputs), dtype=np.float32)
        self.arrays = self.engine.arrays()
        self.words = np.zeros(6, dtype=np.uint64)
        self.idle = np.zeros(2, dtype=np.int64)  # no clock: blocks are not timed
        self.clock = np.array([libc_address("clock_gettime"), time.CLOCK_MONOTONIC], np.int64)
        self.position = 0
        self.run(64, WARMUP_BLOCKS)  # realtime_engine settles through engine.process

    def run(self, frames: int, blocks: int, counted: bool = False, timed: bool = False):
        """``blocks`` blocks on from where the last run stopped; their ns when ``timed``."""
        costs = np.zeros(blocks, dtype=np.int64)
        clock = self.clock if timed else self.idle
        self.position = _run_blocks(self.arrays, self.inputs, self.out, frames, self.position,
                                    costs, clock, counted, self.words)  # fmt: skip
        return costs

    def time(self) -> dict:
        """(channels, frames) -> median µs per block over TIME_AUDIO_S of audio."""
        medians = {}
        for frames in FRAMES:
            self.run(frames, SETTLE_BLOCKS)
            costs = self.run(frames, _blocks(frames, TIME_AUDIO_S), timed=True)
            medians[self.channels, frames] = float(np.median(costs)) / 1000.0
        return medians

    def python_us(self) -> float:
        """``engine.process`` called from Python at 64 frames, timed as bench_engine does."""
        import bench_engine

        return min(
            float(np.median(bench_engine.block_costs(self.engine, self.inputs, 500))) * 1e6
            for _ in range(TIME_RUNS)
        )

    def count(self, audio_ms: float, plan: list) -> None:
        """Each block size counted block by block (``plan`` says what each dump holds); at
        STANDARD channels also ``engine.process`` from Python."""
        for frames in FRAMES:
            self.run(frames, SETTLE_BLOCKS)
            # A dump first, thrown away: a process's first dump holds more than what followed
            # the zeroing (50 M instructions here; likely the start-up's other threads).
            _request(self.words, CG_ZERO)
            _request(self.words, CG_DUMP)
            plan.append(["discard", self.channels, frames, 1])
            blocks = _blocks(frames, audio_ms / 1000.0)
            self.run(frames, blocks, counted=True)
            plan.append(["block", self.channels, frames, blocks])
        if self.channels != STANDARD:
            return
        # engine.process from Python, counted as the difference of two windows
        out = np.zeros((64, self.out.shape[1]), dtype=np.float32)
        cases = {
            "python": (self.inputs[:64], out),
            "python0": (np.zeros((0, self.inputs.shape[1]), np.float32), out[:0]),
        }
        for kind, (block, dest) in cases.items():
            self.engine.process(block, dest)  # numba loads this specialisation on first use
            for calls in PY_CALLS:
                _request(self.words, CG_ZERO)
                for _ in range(calls):
                    self.engine.process(block, dest)
                _request(self.words, CG_DUMP)
                plan.append([kind, STANDARD, block.shape[0], calls])


# ----------------------------------------------------------------------------------------
# the parent


def _targets() -> dict[str, tuple[str, str, str]]:
    """(NUMBA_CPU_NAME, NUMBA_CPU_FEATURES, NUMBA_CACHE_DIR or "") per target: this CPU as
    numba sees it (the cache ``studiod warmup`` filled serves it, and valgrind, whose CPU
    differs, is never asked), and on x86-64 the 128-bit stand-in in a cache of its own."""
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    from studiod.dsp._jit import CACHE_DIR

    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    # valgrind (3.19, Debian 12) stops at the first AVX-512 instruction (SIGILL): count this
    # CPU's code without AVX-512, as an AVX2 machine runs it
    features = ",".join(
        "-" + f[1:] if f.startswith(("+avx512", "+avx10", "+amx")) else f
        for f in features.split(",")
    )
    native = (config.CPU_NAME or llvm.get_host_cpu_name(), features, "")
    targets = {"native": native}
    if platform.machine() == "x86_64":
        targets[V2_CPU] = (V2_CPU, V2_FEATURES, f"{CACHE_DIR.parent}-{V2_CPU}")
    return targets


def _stream(cmd: list[str], env: dict, label: str) -> None:
    """Run ``cmd``, show its lines as they come and a line every HEARTBEAT_S of silence."""
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=HEARTBEAT_S)
        except queue.Empty:
            print(f"  {label}: running, {time.monotonic() - started:.0f} s", flush=True)
            continue
        if line is None:
            break
        print(f"  {line.rstrip()}", flush=True)
    if proc.wait() != 0:
        raise RuntimeError(f"{label} failed (exit {proc.returncode})")
    print(f"  {label}: done in {time.monotonic() - started:.0f} s", flush=True)


def _dump_counts(folder: Path) -> list[int]:
    """Instructions of each callgrind dump (``cg.out.1``, ``cg.out.2``, ...), in order."""
    dumps = sorted(folder.glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
    counts = []
    for path in dumps:
        match = re.search(r"^summary:\s+(\d+)", path.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no summary line in {path}")
        counts.append(int(match[1]))
    return counts


def measure(target: str, spec, work: Path, inputs_path: Path, audio_ms: float) -> dict:
    """Time the target natively, then count it under callgrind."""
    cpu, features, cache_dir = spec
    env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=features, PYTHONUNBUFFERED="1")
    if cache_dir:
        env["NUMBA_CACHE_DIR"] = cache_dir
    script = str(Path(__file__).resolve())
    common = ["--inputs", str(inputs_path), "--audio-ms", str(audio_ms)]
    timed = work / f"{target}-time.json"
    print(f"{target}: timing natively (numba compiles on a first run: minutes)", flush=True)
    _stream(
        [sys.executable, script, "--child", "time", "--out", str(timed), *common],
        env,
        f"{target} native",
    )
    folder = work / f"callgrind-{target}"
    folder.mkdir()
    counted = work / f"{target}-count.json"
    print(f"{target}: counting under callgrind", flush=True)
    valgrind = [
        "valgrind",
        "--tool=callgrind",
        "--smc-check=all-non-file",
        f"--callgrind-out-file={folder / 'cg.out'}",
        f"--log-file={folder / 'valgrind.log'}",
    ]
    try:
        _stream(
            [*valgrind, sys.executable, script, "--child", "count", "--out", str(counted), *common],
            env,
            f"{target} callgrind",
        )
    except RuntimeError:
        print((folder / "valgrind.log").read_text()[-3000:], file=sys.stderr)
        raise
    plan = json.loads(counted.read_text())["plan"]
    counts = _dump_counts(folder)
    if len(counts) != sum(n if kind == "block" else 1 for kind, _, _, n in plan):
        raise RuntimeError(f"{len(counts)} callgrind dumps, the plan says otherwise: {plan}")
    result: dict = {"blocks": {}, "python": {}, "us": {}, "python_us": None}
    at = 0
    for kind, channels, frames, n in plan:
        if kind == "block":
            result["blocks"][channels, frames] = counts[at : at + n]
            at += n
        elif kind == "discard":
            at += 1
        else:
            result["python"][kind, n] = counts[at]
            at += 1
    for row in json.loads(timed.read_text())["rows"]:
        if "python_us" in row:
            result["python_us"] = row["python_us"]
        else:
            result["us"][row["channels"], row["frames"]] = row["us"]
    return result


def _fit(counts: dict, frames: int) -> tuple[float, float]:
    """Least squares: instructions per block = a + b * channels."""
    xs = np.array(CHANNELS, dtype=float)
    ys = np.array([np.mean(counts[c, frames]) for c in CHANNELS])
    b, a = np.polyfit(xs, ys, 1)
    return float(a), float(b)


def _cpu_mhz() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)
    return match[1] if match else "?"


def report(results: dict, audio_ms: float) -> str:
    """Print the tables; return the last line."""
    proxy = V2_CPU if V2_CPU in results else "native"
    native = results["native"]
    counts = results[proxy]["blocks"]
    mean = {key: float(np.mean(v)) for key, v in counts.items()}
    period_us = {f: f / SAMPLERATE * 1e6 for f in FRAMES}

    def core_us(instructions: float, clock_hz: float, ipc: float) -> float:
        return instructions / ipc / clock_hz * 1e6

    print()
    print(
        f"instructions per block: mean (max) over {audio_ms:g} ms of audio per block size, "
        f"each block counted alone; AArch64 stand-in: {proxy}"
    )
    names = "  ".join(f"{name} µs   %" for name, _, _, _ in CORES)
    print(
        f"standard session ({STANDARD} channels, 2 groups, reverb + delay, master chain, "
        "4 monitor systems):"
    )
    print(f"  frames  period µs  native instr       {proxy} instr    here µs  {names}")
    for f in FRAMES:
        nat = native["blocks"][STANDARD, f]
        v2 = counts[STANDARD, f]
        line = (
            f"  {f:6d}  {period_us[f]:9.0f}  {np.mean(nat):9.0f} ({max(nat):7d})  "
            f"{np.mean(v2):9.0f} ({max(v2):7d})  {native['us'][STANDARD, f]:7.1f}"
        )
        for _, _, clock_hz, ipc in CORES:
            us = core_us(mean[STANDARD, f], clock_hz, ipc)
            line += f"  {us:13.1f} {100 * us / period_us[f]:5.1f}"
        print(line)

    # dispatch: engine.process from Python against the compiled loop's block
    py = {}
    for kind in ("python", "python0"):
        lo, hi = (native["python"][kind, n] for n in PY_CALLS)
        py[kind] = (hi - lo) / (PY_CALLS[1] - PY_CALLS[0])
    kernel64 = float(np.mean(native["blocks"][STANDARD, 64]))
    print(
        f"engine.process from Python ({STANDARD} channels, 64 frames, native): "
        f"{py['python']:.0f} instructions per call = the block's {kernel64:.0f} + "
        f"{py['python'] - kernel64:.0f} of dispatch\n  (an empty block: {py['python0']:.0f}); "
        f"timed here {native['python_us']:.1f} µs per call, {native['us'][STANDARD, 64]:.1f} µs "
        "from the compiled loop. Everywhere else: the block alone, as the daemon's callback "
        "runs it."
    )

    rates = [np.mean(native["blocks"][key]) / native["us"][key] for key in native["us"]]
    print(
        f"this machine: {np.median(rates):.0f} native instructions per µs (median over "
        f"{len(rates)} sizes; {min(rates):.0f}-{max(rates):.0f}), cpu MHz {_cpu_mhz()}: "
        f"IPC x GHz, the sanity check of the assumed figures"
    )
    if proxy != "native":
        ratio = [mean[key] / np.mean(native["blocks"][key]) for key in counts]
        print(f"{proxy}/native instructions: {min(ratio):.2f}-{max(ratio):.2f}")

    print()
    print(
        "cost against channels, µs per 64-frame block (here: measured, native code; "
        f"{' and '.join(name for name, _, _, _ in CORES)}: estimated from the {proxy} count):"
    )
    print(f"  channels  {proxy} instr   here µs  " + "  ".join(f"{n:>10} µs" for n, *_ in CORES))
    for c in CHANNELS:
        line = f"  {c:8d}  {mean[c, 64]:12.0f}  {native['us'][c, 64]:8.1f}  "
        line += "  ".join(f"{core_us(mean[c, 64], hz, ipc):13.1f}" for _, _, hz, ipc in CORES)
        print(line)

    print()
    print(
        f"channels that fit in a share of one core (a fit of the {proxy} count: instructions "
        "per block = a + b x channels; beyond 64 channels extrapolated):"
    )
    heads = "  ".join(f"{name} {pct:g} %" for name, *_ in CORES for pct in BUDGETS_PCT)
    print(f"  frames  a (instr)  b (instr/ch)  fit within  {heads}")
    for f in FRAMES:
        a, b = _fit(counts, f)
        worst = max(abs(mean[c, f] - (a + b * c)) / mean[c, f] for c in CHANNELS)
        line = f"  {f:6d}  {a:9.0f}  {b:12.0f}  {100 * worst:8.1f} %"
        for name, _, clock_hz, ipc in CORES:
            for pct in BUDGETS_PCT:
                budget = pct / 100 * period_us[f] * 1e-6 * clock_hz * ipc
                fit = int((budget - a) // b) if budget > a else 0
                line += f"  {fit:>{len(name) + len(f'{pct:g}') + 3}d}"
        print(line)

    name, _, clock_hz, ipc = CORES[0]
    pct = 100 * core_us(mean[STANDARD, 128], clock_hz, ipc) / period_us[128]
    needed = mean[STANDARD, 128] / (GOAL_PCT / 100 * period_us[128] * 1e-6 * clock_hz)
    print()
    print(
        f"goal: the standard session at 128 frames within {GOAL_PCT:g} % of one {name} core "
        f"needs an IPC of {needed:.2f} at {clock_hz / 1e9:g} GHz "
        f"({needed * clock_hz / 1.8e9:.2f} at 1.8 GHz); assumed {ipc:g}: "
        f"{'met' if pct <= GOAL_PCT else 'not met'}"
    )
    return (
        f"standard session at 128 frames: {pct:.0f} % of one {name} core (goal <= {GOAL_PCT:g} %)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--targets",
        default=None,
        help="comma-separated: native, x86-64-v2 (default: both on x86-64)",
    )
    parser.add_argument(
        "--audio-ms",
        type=float,
        default=200.0,
        help="audio counted per block size and channel count",
    )
    parser.add_argument("--child", choices=("time", "count"), help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.inputs, args.out, args.audio_ms)

    if platform.machine() not in _REQUEST_ASM:
        print(
            f"pi budget: counting needs valgrind's client requests, written here for "
            f"{' and '.join(_REQUEST_ASM)} only (this is {platform.machine()})"
        )
        return 2
    if shutil.which("valgrind") is None:
        print(
            "pi budget: valgrind is missing (./run bench installs it; or apt-get install valgrind)"
        )
        return 2
    available = _targets()
    chosen = args.targets.split(",") if args.targets else list(available)
    if "native" not in chosen or any(t not in available for t in chosen):
        parser.error(f"--targets: 'native' and any of {list(available)}")
    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True)
    import numba

    print(
        f"pi budget: {platform.machine()}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}, numba {numba.__version__}, {version.stdout.strip()}"
    )
    for t in chosen:
        cpu, features, cache_dir = available[t]
        wide = "256-bit" if "+avx2" in features else "128-bit"
        print(
            f"  target {t}: NUMBA_CPU_NAME={cpu} ({wide} vectors)"
            + (f", NUMBA_CACHE_DIR={cache_dir}" if cache_dir else "")
        )
    from _material import multitrack

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="studiod-pi-budget-") as tmp:
        work = Path(tmp)
        inputs_path = work / "multitrack.npy"
        np.save(inputs_path, multitrack(INPUT_S, max(CHANNELS), SAMPLERATE))
        results = {t: measure(t, available[t], work, inputs_path, args.audio_ms) for t in chosen}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"measured in {(time.monotonic() - started) / 60:.1f} min (load average now {load})")
    last = report(results, args.audio_ms)
    print(last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
