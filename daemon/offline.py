"""Shared pieces of the offline commands (``analyze``, ``master``, ``render``).

Loudness presets with their sources, a progress bar that only draws on a terminal, streaming
analysis of audio files, platform compliance, album loudness, running an :class:`Engine` over
a whole file without parameter glides, and crash-safe JSON output.
"""

from __future__ import annotations

import fcntl
import itertools
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from studiod.controllers.atomic import atomic_write
from studiod.controllers.jsontext import finite_or_none
from studiod.daemon.audiofile import AudioFileError, _format_for
from studiod.dsp import loudness
from studiod.dsp.engine import Engine
from studiod.dsp.loudness import LoudnessMeter
from studiod.dsp.registry import ENUM, ParamError
from studiod.dsp.targets import TARGETS, Target

if TYPE_CHECKING:
    from studiod.daemon.automation import Automation

EXIT_OK = 0
EXIT_ERROR = 1  # bad input, unreadable file, unreachable target (argparse uses 2 for usage)


class OfflineError(Exception):
    """A problem the user can fix; the commands print it as ``studiod CMD: error: ...``."""


def check_table(value: object, where: str, known: Collection[str]) -> dict:
    """``value``, a TOML table with only ``known`` keys, or an OfflineError naming ``where``."""
    if not isinstance(value, dict):
        raise OfflineError(f"{where}: must be a table")
    bad = sorted(set(value) - set(known))
    if bad:
        raise OfflineError(f"{where}: unknown key(s) {bad}; known: {list(known)}")
    return value


# --------------------------------------------------------------------------------------
# loudness targets


# The one table of delivery targets (dsp/targets.py); "presets" in the offline commands.
Preset = Target
PRESETS = TARGETS


def preset_from_args(target: str | None, lufs: float | None, ceiling: float | None) -> Preset:
    """The preset named ``target``, or a custom one from ``lufs`` / ``ceiling`` (either
    overrides the named preset's value)."""
    if target is not None:
        if target not in PRESETS:
            raise OfflineError(f"unknown preset {target!r}; choose from {', '.join(PRESETS)}")
        base = PRESETS[target]
    elif lufs is not None:
        base = Preset("custom", lufs, -1.0, 1.0, "given on the command line")
    else:
        raise OfflineError("give a target: --target PRESET or --lufs X [--ceiling Y]")
    lufs = base.integrated_lufs if lufs is None else float(lufs)
    ceiling = base.ceiling_dbtp if ceiling is None else float(ceiling)
    if not (math.isfinite(lufs) and -70.0 < lufs <= 0.0):
        raise OfflineError(f"--lufs {lufs:g} is out of range (-70, 0]")
    if not (math.isfinite(ceiling) and -20.0 <= ceiling <= 0.0):
        raise OfflineError(f"--ceiling {ceiling:g} dBTP is out of range -20…0")
    if (lufs, ceiling) == (base.integrated_lufs, base.ceiling_dbtp):
        return base
    return Preset(
        base.name if target else "custom",
        lufs,
        ceiling,
        base.tolerance_lu,
        f"{base.source}; overridden on the command line" if target else base.source,
        base.bits,
        base.samplerate,
    )


# --------------------------------------------------------------------------------------
# output formats

BITS = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}


def check_output(path: str | Path, bits: str) -> str:
    """The libsndfile subtype for ``bits``; OfflineError if the file type cannot hold it.
    Checked before any work so that a bad OUT fails in a second, not after a render."""
    if bits not in BITS:
        raise OfflineError(f"bit depth {bits!r} is not one of {', '.join(BITS)}")
    try:
        fmt = _format_for(Path(path))
    except AudioFileError as exc:
        raise OfflineError(str(exc)) from None
    if not sf.check_format(fmt, BITS[bits]):
        raise OfflineError(f"{path}: {fmt} cannot hold {bits}-bit audio; use .wav")
    if Path(path).is_dir():
        raise OfflineError(f"{path}: is a directory")
    return BITS[bits]


# --------------------------------------------------------------------------------------
# progress


class Progress:
    """A one-line progress bar on ``stream`` (stderr), drawn only when it is a terminal.

    >>> with Progress("mastering", total_frames) as bar:
    ...     bar.update(frames_done_now)
    """

    WIDTH = 30
    MIN_INTERVAL_S = 0.1  # at most 10 redraws a second

    def __init__(self, label: str, total: int, stream=None, enabled: bool | None = None):
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.label = label
        self.total = max(int(total), 1)
        self.done = 0
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done = min(self.done + int(n), self.total)
        now = time.monotonic()
        if self.enabled and (now - self._last >= self.MIN_INTERVAL_S or self.done == self.total):
            self._last = now
            self._draw()

    def relabel(self, label: str, total: int | None = None) -> None:
        """Start a new pass (an iteration of master's gain search) on the same line."""
        self.label = label
        if total is not None:
            self.total = max(int(total), 1)
        self.done = 0

    def _draw(self) -> None:
        frac = self.done / self.total
        filled = round(frac * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label:<28.28} [{bar}] {100 * frac:5.1f} %")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * (self.WIDTH + 40) + "\r")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------
# reading and analysing files

READ_BLOCK_FRAMES = 65536


def open_audio(path: str | Path) -> sf.SoundFile:
    """Open an audio file for streaming; AudioFileError names the file and the reason."""
    path = Path(path)
    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    if not path.is_file():
        raise AudioFileError(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise AudioFileError(f"{path}: permission denied")
    try:
        return sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioFileError(f"{path}: unsupported or unreadable audio format ({exc})") from None


def read_audio(path: str | Path, progress: Progress | None = None) -> tuple[np.ndarray, int]:
    """The whole file as float32 [frames, channels] and its sample rate."""
    with open_audio(path) as f:
        frames = f.frames
        out = np.zeros((frames, f.channels), dtype=np.float32)
        pos = 0
        try:
            while pos < frames:
                got = f.read(min(READ_BLOCK_FRAMES, frames - pos), dtype="float32", always_2d=True)
                if len(got) == 0:
                    break
                out[pos : pos + len(got)] = got
                pos += len(got)
                if progress:
                    progress.update(len(got))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioFileError(f"{path}: read error at frame {pos} ({exc})") from None
        return out[:pos], f.samplerate


@dataclass(frozen=True)
class GatingHistogram:
    """What an album needs of a file's meter: its histogram of BS.1770-4 400 ms gating
    blocks (the integrated gate's), as exact per-bin energy sums and block counts.

    ``fine_bins`` int [k]: the 0.01 LU bins that hold blocks, ``fine`` [k, 2] their (energy,
    count); ``coarse`` [HIST_COARSE_BINS, 2] the 1 LU bins in full. Sparse (17 kB pickled
    with the readings for a 3-minute song, where the meter's state is 350 kB), so that a
    catalog's worth crosses process and network boundaries cheaply."""

    fine_bins: np.ndarray
    fine: np.ndarray
    coarse: np.ndarray

    @classmethod
    def of(cls, meter: LoudnessMeter) -> GatingHistogram:
        fine = meter.state.hist_fine[loudness.HIST_INTEGRATED]
        bins = np.flatnonzero(fine[:, 1]).astype(np.int32)
        coarse = meter.state.hist_coarse[loudness.HIST_INTEGRATED]
        return cls(bins, fine[bins].copy(), coarse.copy())


@dataclass
class FileAnalysis:
    """One file's readings (the JSON keys of ``studiod analyze``) and its gating histogram;
    picklable, so that a worker process or a Dask worker can return it."""

    readings: dict
    gating: GatingHistogram


# numba links a kernel's callees into it as shared ("weak") copies, and a process runs the copy
# it met first. A process that compiles the kernels runs each callee as compiled on its own;
# one that loads them from the cache runs the copies inside their callers, which LLVM optimised
# a second time there. With fast-math reassociation the two differ in the last bits (measured:
# a mono file's integrated loudness -24.2907075928369 LUFS in the process that compiled,
# -24.290707592836966 in every later one). So that a file measures the same, bit for bit, in
# every process and on the first run too, an analysis never runs code it compiled itself: a
# child process compiles, once, and every analysis loads the cache.
_ANALYSIS_CACHED = "analysis-kernels-cached"


def compile_analysis_kernels() -> None:
    """Compile (or load) every kernel ``analyze_file`` runs, by measuring a short generated
    file (``studiod warmup`` and the child of ``ensure_analysis_cached``), and leave the mark
    that they are cached."""
    from studiod.dsp._jit import CACHE_DIR

    with tempfile.TemporaryDirectory(prefix="studiod-compile-") as tmp:
        path = Path(tmp) / "noise.wav"
        noise = np.random.default_rng(0).standard_normal((4800, 2)).astype(np.float32)
        sf.write(path, 0.1 * noise, 48000, subtype="FLOAT")
        _measure_file(path)
    (CACHE_DIR / _ANALYSIS_CACHED).touch()


def ensure_analysis_cached() -> None:
    """Make sure the analysis kernels come from numba's cache (see above): on the first run,
    compile them in a child process, showing its progress on stderr. With a cache folder
    that cannot be written nothing is cached, every process compiles, and all agree."""
    from studiod.dsp._jit import CACHE_DIR

    if (CACHE_DIR / _ANALYSIS_CACHED).exists():
        return
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        lock = open(CACHE_DIR / (_ANALYSIS_CACHED + ".lock"), "a")
    except OSError:
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second worker waits for the first one's child
        if (CACHE_DIR / _ANALYSIS_CACHED).exists():
            return
        code = "from studiod.daemon.offline import _compile_child; _compile_child()"
        child = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
        if child.returncode != 0:
            raise OfflineError(
                f"compiling the analysis kernels failed (status {child.returncode}; "
                "its messages are above)"
            )


def _compile_child() -> None:
    """``compile_analysis_kernels`` with numba's progress on stderr (a child process)."""
    from studiod.dsp._jit import CompileProgress

    with CompileProgress(lambda text: print(f"studiod: {text}", file=sys.stderr, flush=True)):
        compile_analysis_kernels()


def analyze_file(
    path: str | Path, progress: Progress | None = None, finite_only: bool = False
) -> FileAnalysis:
    """Stream ``path`` through the BS.1770-4 meter (constant memory for any length), with
    the kernels from numba's cache (``ensure_analysis_cached``).

    A float file may hold NaN or infinite samples; no loudness is defined for them (the
    meter's sums would be NaN, and a NaN reading must never pass for silence). Such a file
    raises AudioFileError naming the first bad sample, unless ``finite_only``: then each
    non-finite sample is measured as silence (0.0) and the readings count them in
    ``nonfinite_samples``."""
    ensure_analysis_cached()
    return _measure_file(path, progress, finite_only)


def _measure_file(
    path: str | Path, progress: Progress | None = None, finite_only: bool = False
) -> FileAnalysis:
    """``analyze_file`` with whatever compiled code this process has."""
    with open_audio(path) as f:
        channels, samplerate, frames = f.channels, f.samplerate, f.frames
        if channels not in loudness.DEFAULT_LAYOUT:
            raise AudioFileError(
                f"{path}: {channels} channels; the meter takes "
                f"{', '.join(f'{c} ({n})' for c, n in loudness.DEFAULT_LAYOUT.items())}"
            )
        try:
            meter = LoudnessMeter(samplerate, channels)
        except ValueError as exc:
            raise AudioFileError(f"{path}: {exc}") from None
        if progress:
            progress.relabel(Path(path).name, frames)
        done = nonfinite = 0
        try:
            for block in f.blocks(READ_BLOCK_FRAMES, dtype="float32", always_2d=True):
                bad = ~np.isfinite(block)
                if bad.any():
                    if not finite_only:
                        frame, channel = np.argwhere(bad)[0]
                        raise AudioFileError(
                            f"{path}: sample {done + frame} of channel {channel + 1} is "
                            f"{block[frame, channel]}: no loudness is defined for a file with "
                            "NaN or infinite samples (--finite-only measures the others, "
                            "counting the bad ones as silence)"
                        )
                    nonfinite += int(bad.sum())
                    block = np.where(bad, np.float32(0.0), block)
                meter.process(block)
                done += len(block)
                if progress:
                    progress.update(len(block))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioFileError(f"{path}: read error at frame {done} ({exc})") from None
    r = meter.readings()
    readings = {
        "path": str(path),
        "samplerate": samplerate,
        "channels": channels,
        "duration_s": done / samplerate,
        "integrated_lufs": finite_or_none(r["integrated_lufs"]),
        "loudness_range_lu": finite_or_none(r["loudness_range_lu"]),
        "true_peak_dbtp": finite_or_none(r["true_peak_dbtp"]),
        "sample_peak_dbfs": finite_or_none(r["sample_peak_dbfs"]),
        "momentary_max_lufs": finite_or_none(r["momentary_max_lufs"]),
        "short_term_max_lufs": finite_or_none(r["shortterm_max_lufs"]),
        "correlation": finite_or_none(r["correlation"]),
        "nonfinite_samples": nonfinite,
    }
    return FileAnalysis(readings, GatingHistogram.of(meter))


def compliance(integrated_lufs: float | None, true_peak_dbtp: float | None) -> dict:
    """Per preset: the gain a platform's normalisation applies, the true peak after it, and
    whether the file complies (loudness within the preset's tolerance, true peak at most the
    ceiling). Silence (None) complies with nothing."""
    out = {}
    for name, p in PRESETS.items():
        if integrated_lufs is None:
            out[name] = {
                "target_lufs": p.integrated_lufs,
                "ceiling_dbtp": p.ceiling_dbtp,
                "tolerance_lu": p.tolerance_lu,
                "gain_db": None,
                "true_peak_after_gain_dbtp": None,
                "loudness_ok": False,
                "true_peak_ok": False,
                "compliant": False,
            }
            continue
        gain_db = p.integrated_lufs - integrated_lufs
        loud_ok = abs(gain_db) <= p.tolerance_lu
        peak_ok = true_peak_dbtp is None or true_peak_dbtp <= p.ceiling_dbtp
        out[name] = {
            "target_lufs": p.integrated_lufs,
            "ceiling_dbtp": p.ceiling_dbtp,
            "tolerance_lu": p.tolerance_lu,
            "gain_db": round(gain_db, 2),
            "true_peak_after_gain_dbtp": (
                None if true_peak_dbtp is None else round(true_peak_dbtp + gain_db, 2)
            ),
            "loudness_ok": bool(loud_ok),
            "true_peak_ok": bool(peak_ok),
            "compliant": bool(loud_ok and peak_ok),
        }
    return out


def album_integrated_lufs(histograms: list[GatingHistogram]) -> float | None:
    """Integrated loudness of several files as one programme: BS.1770-4 gating over the union
    of all files' 400 ms gating blocks (as libebur128's ``ebur128_loudness_global_multiple``).

    The files' gating-block histograms hold exact per-bin energy sums and counts, so their
    sum is the histogram of the union; the meter's own gate then runs on it. None for silence.
    Summed in the order given: the same files in the same order give the same bits, wherever
    each was measured.
    """
    fine = np.zeros((loudness.HIST_BINS, 2))
    coarse = np.zeros((loudness.HIST_COARSE_BINS, 2))
    for h in histograms:
        fine[h.fine_bins] += h.fine
        coarse += h.coarse
    readings = np.zeros(loudness.METERS_SIZE)
    # the meter's own gate (dsp.loudness), run on the merged histogram
    loudness._integrated_from_hist(fine, coarse, readings)
    return finite_or_none(readings[loudness.INTEGRATED])


# --------------------------------------------------------------------------------------
# running the engine offline

ENGINE_BLOCK_FRAMES = 4096
PREROLL_MAX_S = 5.0


def set_params(engine: Engine, settings: dict, where: str) -> None:
    """Apply ``{address: value}`` through the registry's validation; errors name ``where``."""
    for address, value in settings.items():
        try:
            if isinstance(value, str) and engine.registry[address].kind != ENUM:
                # command-line text for a number ("-3", "on" is not one)
                try:
                    value = float(value)
                except ValueError:
                    raise ParamError(f"{address}: {value!r} is not a number") from None
            engine.set(address, value)
        except ParamError as exc:
            raise OfflineError(f"{where}: {exc}") from None


def _settle(engine: Engine) -> None:
    """Process silence until every smoothed parameter has reached its target.

    The engine glides every change (no zipper noise), so parameters set before a render
    would otherwise glide from their defaults during the first few hundred ms of the file.
    Silence in leaves the filter and dynamics states as fresh as a new engine's.
    """
    inp = np.zeros((ENGINE_BLOCK_FRAMES, engine.session.n_inputs), dtype=np.float32)
    out = np.zeros((ENGINE_BLOCK_FRAMES, engine.session.n_outputs), dtype=np.float32)
    blocks = math.ceil(PREROLL_MAX_S * engine.samplerate / ENGINE_BLOCK_FRAMES)
    for k in range(blocks):
        engine.service()
        engine.process(inp, out)
        # the gains' per-sample glide (5 ms) needs more than the last tick: run 0.5 s at least
        if k * ENGINE_BLOCK_FRAMES >= engine.samplerate // 2 and not engine.state.dirty.any():
            return
    raise OfflineError("the engine's parameters did not settle (internal error)")


def run_engine(
    engine: Engine, inp: np.ndarray, columns: list[int], progress: Progress | None = None
) -> np.ndarray:
    """Render float32 ``inp`` [frames, n_inputs] and return output ``columns`` as float32
    [frames, len(columns)], aligned with the input (the engine's latency removed)."""
    blocks = run_engine_blocks(engine, (inp[k : k + ENGINE_BLOCK_FRAMES]
                                        for k in range(0, len(inp), ENGINE_BLOCK_FRAMES)),
                               columns, progress)  # fmt: skip
    parts = list(blocks)
    if not parts:
        return np.zeros((0, len(columns)), dtype=np.float32)
    return np.concatenate(parts)


def run_engine_blocks(
    engine: Engine,
    blocks: Iterable[np.ndarray],
    columns: list[int],
    progress: Progress | None = None,
    automation: Automation | None = None,
) -> Iterator[np.ndarray]:
    """Render a stream of float32 input blocks [frames, n_inputs] (any lengths) and yield
    output ``columns`` block by block, aligned with the input (the engine's latency removed:
    its first ``latency_samples`` output frames are dropped and as many frames of silence
    follow the input), with ``automation``'s lanes from the first input frame on. Memory
    stays flat whatever the length of the stream."""
    _settle(engine)
    process = engine.process
    if automation is not None:
        automation.start()
        process = automation.process
    latency = engine.latency_samples
    src = np.zeros((ENGINE_BLOCK_FRAMES, engine.session.n_inputs), dtype=np.float32)
    out = np.zeros((ENGINE_BLOCK_FRAMES, engine.session.n_outputs), dtype=np.float32)
    to_skip = latency

    def tail() -> Iterator[np.ndarray]:
        left = latency
        while left > 0:
            n = min(left, ENGINE_BLOCK_FRAMES)
            yield np.zeros((n, engine.session.n_inputs), dtype=np.float32)
            left -= n

    for block in itertools.chain(blocks, tail()):
        for start in range(0, len(block), ENGINE_BLOCK_FRAMES):
            n = min(ENGINE_BLOCK_FRAMES, len(block) - start)
            src[:n] = block[start : start + n]
            engine.service()
            process(src[:n], out[:n])
            if progress:
                progress.update(n)
            if to_skip >= n:
                to_skip -= n
                continue
            yield out[to_skip:n, columns].copy()
            to_skip = 0


# --------------------------------------------------------------------------------------
# JSON


def write_text_atomic(path: str | Path, text: str) -> None:
    """Temporary file in the same directory, fsync, rename: never a half-written file."""
    atomic_write(path, text)


def fail(command: str, message: str) -> int:
    """Print ``studiod COMMAND: error: message`` to stderr and return the error exit code."""
    print(f"studiod {command}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def fmt(value: float | None, digits: int = 1) -> str:
    """A table cell: the number, or '-inf' / '—' for silence and undefined readings."""
    if value is None:
        return "—"
    return f"{value:.{digits}f}"
