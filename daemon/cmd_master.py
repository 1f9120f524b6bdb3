"""``studiod master IN OUT``: the engine's master chain, brought to a loudness target.

The file runs through the same :class:`Engine` the daemon uses, as one stereo channel into the
master bus: subsonic high-pass, EQ, multiband compressor, width, saturation, the master fader,
the true-peak limiter and TPDF dither (the ``/master/...`` registry parameters). The gain into
the limiter (the master fader) is searched so that the result's integrated loudness lands on
the target: render, measure, correct (secant steps on the measured loudness-vs-gain curve,
whose slope the limiter makes smaller than 1) until within ``GAIN_TOLERANCE_LU``. The
limiter holds the true peak at the ceiling. The final file is measured again and is only
written when it meets the target within ±``TARGET_TOLERANCE_LU`` and the ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.signal as ss
import soundfile as sf

from studiod.controllers.jsontext import dumps, finite_or_none
from studiod.daemon.audiofile import AudioFileError, atomic_sound_file, write_atomic
from studiod.daemon.offline import (
    BITS,
    ENGINE_BLOCK_FRAMES,
    EXIT_OK,
    PRESETS,
    READ_BLOCK_FRAMES,
    OfflineError,
    Preset,
    Progress,
    check_output,
    fail,
    open_audio,
    preset_from_args,
    read_audio,
    run_engine_blocks,
    set_params,
    write_text_atomic,
)
from studiod.dsp.engine import Engine
from studiod.dsp.layout import system_prefix
from studiod.dsp.loudness import LoudnessMeter
from studiod.dsp.session import SAMPLERATES, ChannelSpec, MonitorSystemSpec, Session

GAIN_TOLERANCE_LU = 0.05  # the search stops this close to the target
TARGET_TOLERANCE_LU = 0.5  # the written file is within this of the target (issue #3)
MAX_PASSES = 10
# The gain lives on the master fader (-90…+10 dB, just before the limiter) so the chain's
# compressors see the level they were set for; what the fader cannot reach goes to the
# input trim (±24 dB).
FADER_MAX_DB = 10.0
TRIM_LIMIT_DB = 24.0
GAIN_MIN_DB = -60.0
GAIN_MAX_DB = FADER_MAX_DB + TRIM_LIMIT_DB
# Set by master itself, not by chain options.
MANAGED = {
    "/master/limiter/on": "the limiter is always in",
    "/master/limiter/ceiling": "use --ceiling or --target",
    "/master/fader": "the gain that reaches the target",
    "/master/dither/bits": "use --bits and --no-dither",
    "/master/dither/shape": "use --noise-shaping",
}
# the engine's monitor path carries the master bus to the output file untouched
_SYSTEM = "out"


@dataclass
class MasterOptions:
    """Everything ``master`` does besides reading and writing files.

    chain: ``{"/master/...": value}`` (registry addresses; the limiter's ceiling and the
    dither come from ``preset``/``bits``); bits "16", "24" or "32f"; fades in seconds;
    samplerate: resample to this rate before the chain (None: keep the input's).
    """

    preset: Preset
    chain: dict = field(default_factory=dict)
    bits: str = "24"
    dither: bool = True
    noise_shaping: bool = False
    fade_in_s: float = 0.0
    fade_out_s: float = 0.0
    samplerate: int | None = None


@dataclass
class MasterResult:
    audio: np.ndarray  # float32 [frames, channels], on the output's quantisation grid
    samplerate: int
    report: dict


def _session(samplerate: int) -> Session:
    return Session(
        samplerate=samplerate,
        channels=(ChannelSpec("in", (1, 2)),),
        systems=(MonitorSystemSpec(_SYSTEM, (1, 2)),),
    )


def _split_gain(gain_db: float) -> tuple[float, float]:
    """(master fader dB, input trim dB) for a total gain."""
    fader = min(gain_db, FADER_MAX_DB)
    return fader, gain_db - fader


def _quantize(y: np.ndarray, bits: str) -> np.ndarray:
    """Round to the PCM grid k / 2**(bits-1) (the dither's grid), clamped to full scale, so
    the measured audio is exactly what the file holds."""
    if bits == "32f":
        return y
    scale = 2.0 ** (int(bits) - 1)
    q = np.clip(np.round(y.astype(np.float64) * scale), -scale, scale - 1.0) / scale
    return q.astype(np.float32)


def resample(x: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly, Kaiser-windowed FIR), float32."""
    g = math.gcd(int(from_hz), int(to_hz))
    y = ss.resample_poly(x.astype(np.float64), int(to_hz) // g, int(from_hz) // g, axis=0)
    return np.ascontiguousarray(y, dtype=np.float32)


def apply_fades(x: np.ndarray, samplerate: int, fade_in_s: float, fade_out_s: float) -> np.ndarray:
    """Raised-cosine (half-Hann) fades on the chain's input: smooth at both ends, and the
    end of a fade-out is exact digital silence. Returns a new float32 array."""
    n_in, n_out = _fade_frames(len(x), samplerate, fade_in_s, fade_out_s)
    gain = fade_gain(0, len(x), len(x), n_in, n_out)
    return np.ascontiguousarray(x.astype(np.float64) * gain[:, None], dtype=np.float32)


def _fade_frames(n: int, samplerate: int, fade_in_s: float, fade_out_s: float) -> tuple[int, int]:
    n_in = round(fade_in_s * samplerate)
    n_out = round(fade_out_s * samplerate)
    if n_in + n_out > n:
        raise OfflineError(
            f"fades ({fade_in_s:g} s + {fade_out_s:g} s) are longer than the audio "
            f"({n / samplerate:.2f} s)"
        )
    return n_in, n_out


def fade_gain(start: int, frames: int, total: int, n_in: int, n_out: int) -> np.ndarray:
    """The fades' gain (float64) for frames ``start`` … ``start + frames - 1`` of a signal of
    ``total`` frames: rising over the first ``n_in`` frames, falling to 0 over the last
    ``n_out`` (so a block of a file gets exactly what the whole signal would)."""
    frame = np.arange(start, start + frames)
    gain = np.ones(frames)
    if n_in:
        head = frame < n_in
        gain[head] = 0.5 - 0.5 * np.cos(np.pi * frame[head] / n_in)
    if n_out:
        tail = frame >= total - n_out
        gain[tail] = 0.5 + 0.5 * np.cos(np.pi * (frame[tail] - (total - n_out) + 1) / n_out)
    return gain


class _Source:
    """The chain's input, read as often as the gain search needs it: float32 blocks
    [frames, channels] at ``rate`` with the fades applied (see :func:`apply_fades`)."""

    channels: int
    rate: int
    frames: int

    def blocks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError


class _ArraySource(_Source):
    """A whole signal in memory (already resampled and faded)."""

    def __init__(self, x: np.ndarray, rate: int):
        self.x, self.rate, self.frames, self.channels = x, rate, len(x), x.shape[1]

    def blocks(self) -> Iterator[np.ndarray]:
        for start in range(0, self.frames, READ_BLOCK_FRAMES):
            yield self.x[start : start + READ_BLOCK_FRAMES]


class _FileSource(_Source):
    """A file read block by block on every pass: memory flat with the file's length. The
    fades are applied per block by absolute frame; a NaN/Inf sample is an OfflineError."""

    def __init__(self, path: str | Path, fade_in_s: float, fade_out_s: float):
        self.path = path
        with open_audio(path) as f:
            self.channels, self.rate, self.frames = f.channels, f.samplerate, f.frames
        if self.channels not in (1, 2):
            raise OfflineError(f"master takes mono or stereo audio, got {self.channels} channels")
        self.n_in, self.n_out = _fade_frames(self.frames, self.rate, fade_in_s, fade_out_s)

    def blocks(self) -> Iterator[np.ndarray]:
        pos = 0
        with open_audio(self.path) as f:
            try:
                for block in f.blocks(READ_BLOCK_FRAMES, dtype="float32", always_2d=True):
                    if not np.all(np.isfinite(block)):
                        raise OfflineError("the input contains NaN or infinite samples")
                    if self.n_in or self.n_out:
                        gain = fade_gain(pos, len(block), self.frames, self.n_in, self.n_out)
                        block = (block.astype(np.float64) * gain[:, None]).astype(np.float32)
                    pos += len(block)
                    yield block
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioFileError(f"{self.path}: read error at frame {pos} ({exc})") from None


def master_audio(
    x: np.ndarray, samplerate: int, opts: MasterOptions, progress: Progress | None = None
) -> MasterResult:
    """Master float32 ``x`` [frames, 1 or 2] at ``samplerate``; see the module docstring."""
    if x.ndim != 2 or x.shape[1] not in (1, 2):
        raise OfflineError(f"master takes mono or stereo audio, got {x.shape[-1]} channels")
    if len(x) == 0:
        raise OfflineError("the input has no audio frames")
    if not np.all(np.isfinite(x)):
        raise OfflineError("the input contains NaN or infinite samples")
    _check_bits(opts)
    rate = _engine_rate(int(opts.samplerate or samplerate))
    if rate != samplerate:
        x = resample(x, samplerate, rate)
    x = apply_fades(x, rate, opts.fade_in_s, opts.fade_out_s)
    parts: list[np.ndarray] = []
    report = _master(_ArraySource(x, rate), samplerate, opts, parts.append, progress)
    audio = np.concatenate(parts) if parts else np.zeros((0, x.shape[1]), np.float32)
    return MasterResult(audio, rate, report)


def master_file(
    path: str | Path, out: str | Path, opts: MasterOptions, progress: Progress | None = None
) -> dict:
    """Master the file ``path`` into ``out`` block by block, reading it once per pass (the
    input's loudness, each step of the gain search, the final pass that writes ``out``): the
    memory it takes does not grow with the file's length. For inputs at an engine rate with
    no resampling asked (resampling runs on the whole signal: :func:`master_audio`).
    Returns the report; ``out`` is only replaced when the result meets the target."""
    _check_bits(opts)
    source = _FileSource(path, opts.fade_in_s, opts.fade_out_s)
    if source.frames == 0:
        raise OfflineError("the input has no audio frames")
    _engine_rate(source.rate)
    with atomic_sound_file(out, source.rate, source.channels, BITS[opts.bits]) as sink:
        return _master(source, source.rate, opts, sink.write, progress)


def _check_bits(opts: MasterOptions) -> None:
    if opts.bits not in BITS:
        raise OfflineError(f"bit depth {opts.bits!r} is not one of {', '.join(BITS)}")


def _engine_rate(rate: int) -> int:
    if rate not in SAMPLERATES:
        raise OfflineError(
            f"the engine runs at {', '.join(map(str, SAMPLERATES))} Hz, not {rate} Hz: "
            "give --samplerate to resample"
        )
    return rate


def _master(
    source: _Source,
    input_rate: int,
    opts: MasterOptions,
    write: Callable[[np.ndarray], None],
    progress: Progress | None,
) -> dict:
    """The gain search and the final pass over ``source``; the final (quantised) output goes
    to ``write`` block by block. Returns the report; raises OfflineError when the result
    misses the target or the ceiling (before the caller commits the output)."""
    channels, rate = source.channels, source.rate
    preset = opts.preset
    target = preset.integrated_lufs
    dither_bits = opts.bits if (opts.dither and opts.bits != "32f") else "off"
    chain = dict(opts.chain)
    for address in chain:
        if not address.startswith("/master/"):
            raise OfflineError(f"chain setting {address!r}: only /master/... addresses")
        if address in MANAGED:
            raise OfflineError(f"{address} is set by master itself ({MANAGED[address]})")
    session = _session(rate)
    snapshot: dict = {}
    reduction_db = [0.0]  # the limiter's largest gain reduction in the final pass

    def render(gain_db: float, label: str, final: bool) -> Iterator[np.ndarray]:
        engine = Engine(session, max_block_frames=ENGINE_BLOCK_FRAMES)
        fader_db, trim_db = _split_gain(gain_db)
        settings = {
            **chain,
            "/master/limiter/on": 1,
            "/master/limiter/ceiling": preset.ceiling_dbtp,
            "/master/dither/bits": dither_bits if final else "off",
            "/master/dither/shape": int(opts.noise_shaping),
            "/master/fader": fader_db,
            "/ch/1/trim": trim_db,
        }
        # an output safety limiter, if the system has one, must not touch the master
        limit = f"{system_prefix(_SYSTEM)}/limit"
        if limit in engine.registry:
            settings[limit] = engine.registry[limit].maximum
        set_params(engine, settings, "master chain")
        snapshot.update(
            {k: v for k, v in engine.registry.snapshot().items() if k.startswith("/master/")}
        )
        if progress:
            progress.relabel(label, source.frames + engine.latency_samples)
        stereo = (b if channels == 2 else np.repeat(b, 2, axis=1) for b in source.blocks())
        for y in run_engine_blocks(engine, stereo, [0, 1], progress):
            if final:  # the block just processed: its largest reduction
                reduction_db[0] = max(reduction_db[0], float(engine.state.mst_lim_gr[0]))
            yield np.ascontiguousarray(y[:, :channels])

    def integrated(blocks: Iterable[np.ndarray]) -> float:
        meter = LoudnessMeter(rate, channels, true_peak=False)
        for block in blocks:
            meter.process(block)
        return meter.integrated_lufs

    loud_in = integrated(source.blocks())
    if not math.isfinite(loud_in):
        raise OfflineError("the input is silent (no gating block above -70 LUFS)")
    passes: list[tuple[float, float]] = []
    gain = float(np.clip(target - loud_in, GAIN_MIN_DB, GAIN_MAX_DB))
    for k in range(MAX_PASSES):
        loud = integrated(render(gain, f"pass {k + 1}: gain {gain:+.2f} dB", final=False))
        passes.append((gain, loud))
        if abs(target - loud) <= GAIN_TOLERANCE_LU:
            break
        if len(passes) >= 2 and passes[-1][0] != passes[-2][0]:
            slope = (passes[-1][1] - passes[-2][1]) / (passes[-1][0] - passes[-2][0])
        else:
            slope = 1.0
        # a master chain only compresses: 0 < slope <= 1; keep steps finite and bounded
        slope = float(np.clip(slope, 0.05, 1.0)) if math.isfinite(slope) else 1.0
        new_gain = float(np.clip(gain + (target - loud) / slope, GAIN_MIN_DB, GAIN_MAX_DB))
        if new_gain == gain:
            break  # at the end of the gain range
        gain = new_gain
    best_gain = min(passes, key=lambda p: abs(target - p[1]))[0]
    # the final pass renders again (with dither, when asked) and writes as it measures: no
    # pass keeps its audio, so memory does not grow with the length
    label = "final pass" + (" (dither)" if dither_bits != "off" else "")
    meter = LoudnessMeter(rate, channels)
    for y in render(best_gain, label, True):
        q = _quantize(y, opts.bits)
        meter.process(q)
        write(q)
    m = meter.readings()
    integrated_out = m["integrated_lufs"]
    tp = m["true_peak_dbtp"]
    report = {
        "target": {
            "preset": preset.name,
            "integrated_lufs": target,
            "ceiling_dbtp": preset.ceiling_dbtp,
            "source": preset.source,
        },
        "input": {
            "samplerate": input_rate,
            "channels": channels,
            "duration_s": source.frames / rate,
            "integrated_lufs": finite_or_none(loud_in),
        },
        "output": {
            "samplerate": rate,
            "channels": channels,
            "bits": opts.bits,
            "dither": dither_bits != "off",
            "noise_shaping": bool(opts.noise_shaping and dither_bits != "off"),
            "integrated_lufs": finite_or_none(integrated_out),
            "loudness_range_lu": finite_or_none(m["loudness_range_lu"]),
            "true_peak_dbtp": finite_or_none(tp),
            "sample_peak_dbfs": finite_or_none(m["sample_peak_dbfs"]),
            "momentary_max_lufs": finite_or_none(m["momentary_max_lufs"]),
            "short_term_max_lufs": finite_or_none(m["shortterm_max_lufs"]),
            "correlation": m["correlation"],
        },
        "gain_db": best_gain,
        "limiter_max_reduction_db": reduction_db[0],
        "passes": [{"gain_db": g, "integrated_lufs": finite_or_none(v)} for g, v in passes],
        "fade_in_s": opts.fade_in_s,
        "fade_out_s": opts.fade_out_s,
        "chain": snapshot,
    }
    if not (math.isfinite(integrated_out) and abs(integrated_out - target) <= TARGET_TOLERANCE_LU):
        raise OfflineError(
            f"cannot reach {target:g} LUFS: the result measures {integrated_out:.2f} LUFS at "
            f"{best_gain:+.1f} dB of gain (the gain range is {GAIN_MIN_DB:g}…{GAIN_MAX_DB:g} dB)"
        )
    if not tp <= preset.ceiling_dbtp:
        raise OfflineError(
            f"the result's true peak {tp:.2f} dBTP is above the {preset.ceiling_dbtp:g} dBTP "
            "ceiling: is the master limiter running in the engine?"
        )
    return report


# --------------------------------------------------------------------------------------
# command line


def _floats(text: str, option: str, least: int, most: int) -> list[float]:
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise OfflineError(f"{option} {text!r}: expected numbers separated by ':'") from None
    if not least <= len(values) <= most or not all(math.isfinite(v) for v in values):
        raise OfflineError(f"{option} {text!r}: expected {least} to {most} numbers")
    return values


def _band(value: float, option: str, text: str, bands: int) -> int:
    if value != int(value) or not 1 <= value <= bands:
        raise OfflineError(f"{option} {text!r}: band must be 1…{bands}")
    return int(value)


def chain_from_args(args) -> dict:
    """The ``/master/...`` settings the chain options ask for (validated by the engine)."""
    chain: dict = {}
    for text in args.eq or []:
        v = _floats(text, "--eq", 2, 4)
        b = _band(v[0], "--eq", text, 4)
        chain["/master/eq/on"] = 1
        for key, value in zip(("gain", "freq", "q"), v[1:], strict=False):
            chain[f"/master/eq/{b}/{key}"] = value
    if args.eq_linear:
        chain["/master/eq/mode"] = "linear"
    if args.hpf is not None:
        chain["/master/hpf/on"] = 1
        chain["/master/hpf/freq"] = args.hpf
    if args.multiband or args.mb or args.xover:
        chain["/master/mb/on"] = 1
    if args.xover:
        low, high = _floats(args.xover, "--xover", 2, 2)
        chain["/master/mb/xover/low"] = low
        chain["/master/mb/xover/high"] = high
    for text in args.mb or []:
        v = _floats(text, "--mb", 2, 6)
        b = _band(v[0], "--mb", text, 3)
        keys = ("threshold", "ratio", "attack", "release", "makeup")
        for key, value in zip(keys, v[1:], strict=False):
            chain[f"/master/mb/{b}/{key}"] = value
    if args.width is not None:
        chain["/master/width"] = args.width
    if args.mono_bass is not None:
        chain["/master/monobass"] = args.mono_bass
    if args.saturation is not None:
        chain["/master/sat/on"] = 1
        chain["/master/sat/drive"] = args.saturation
    if args.limiter_release is not None:
        chain["/master/limiter/release"] = args.limiter_release
    for text in args.set or []:
        address, sep, value = text.partition("=")
        if not sep or not address.startswith("/master/"):
            raise OfflineError(f"--set {text!r}: expected /master/ADDRESS=VALUE")
        chain[address] = value  # text: set_params converts it for the parameter's kind
    return chain


def register(commands) -> None:
    presets = ", ".join(f"{p.name} ({p.integrated_lufs:g} LUFS, {p.ceiling_dbtp:g} dBTP)"
                        for p in PRESETS.values())  # fmt: skip
    p = commands.add_parser(
        "master",
        help="master a file through the engine's master chain to a loudness target",
        description="Run IN through the engine's master chain (EQ, multiband, width, "
        "saturation, true-peak limiter, dither) and bring it to a loudness target; the "
        f"result is measured and must meet it. Presets: {presets}.",
    )
    p.add_argument("input", metavar="IN", help="audio file (mono or stereo)")
    p.add_argument("output", metavar="OUT", help="output file (.wav, .flac, .aiff)")
    t = p.add_argument_group("target")
    t.add_argument("--target", metavar="PRESET", help=f"one of {', '.join(PRESETS)}")
    t.add_argument("--lufs", type=float, metavar="X", help="integrated loudness target, LUFS")
    t.add_argument("--ceiling", type=float, metavar="Y", help="true-peak ceiling, dBTP")
    f = p.add_argument_group("format")
    f.add_argument("--bits", choices=tuple(BITS), help="bit depth (default 24; cd: 16)")
    f.add_argument("--samplerate", type=int, help="resample to this rate (cd: 44100)")
    f.add_argument("--no-dither", action="store_true", help="round without TPDF dither")
    f.add_argument("--noise-shaping", action="store_true", help="noise-shaped dither")
    f.add_argument("--fade-in", type=float, default=0.0, metavar="S", help="fade-in, seconds")
    f.add_argument("--fade-out", type=float, default=0.0, metavar="S", help="fade-out, seconds")
    c = p.add_argument_group("chain")
    c.add_argument("--eq", action="append", metavar="B:GAIN[:FREQ[:Q]]",
                   help="EQ band B (1 low shelf, 2-3 peak, 4 high shelf): dB, Hz, Q")  # fmt: skip
    c.add_argument("--eq-linear", action="store_true", help="linear-phase EQ")
    c.add_argument("--hpf", type=float, metavar="HZ", help="subsonic high-pass (24 dB/oct)")
    c.add_argument("--multiband", action="store_true", help="multiband compressor in")
    c.add_argument("--xover", metavar="LOW:HIGH", help="multiband crossovers, Hz")
    c.add_argument("--mb", action="append", metavar="B:THR[:RATIO[:ATT:REL[:MAKEUP]]]",
                   help="multiband band B (1-3): threshold dB, ratio, attack/release ms, "
                   "makeup dB")  # fmt: skip
    c.add_argument("--width", type=float, help="stereo width (0 mono, 1 as is, 2 wide)")
    c.add_argument("--mono-bass", type=float, metavar="HZ", help="mono below this frequency")
    c.add_argument("--saturation", type=float, metavar="DB", help="soft saturation drive")
    c.add_argument("--limiter-release", type=float, metavar="MS", help="limiter release")
    c.add_argument("--set", action="append", metavar="ADDRESS=VALUE",
                   help="any /master/... registry parameter")  # fmt: skip
    o = p.add_argument_group("reports")
    o.add_argument("--report", metavar="JSON", help="write a JSON report")
    o.add_argument("--plot", metavar="PNG", help="plot loudness and true peak over time")
    p.set_defaults(func=main)


def options_from_args(args) -> MasterOptions:
    preset = preset_from_args(args.target, args.lufs, args.ceiling)
    if args.fade_in < 0 or args.fade_out < 0 or not math.isfinite(args.fade_in + args.fade_out):
        raise OfflineError("fades must be >= 0 seconds")
    return MasterOptions(
        preset=preset,
        chain=chain_from_args(args),
        bits=args.bits or preset.bits or "24",
        dither=not args.no_dither,
        noise_shaping=args.noise_shaping,
        fade_in_s=args.fade_in,
        fade_out_s=args.fade_out,
        samplerate=args.samplerate or preset.samplerate,
    )


def write_outputs(result: MasterResult, out: str, report: str | None, plot: str | None) -> None:
    """OUT, then the report and the plot; each through a temporary file and a rename."""
    write_atomic(
        out, result.audio, result.samplerate, subtype=BITS[result.report["output"]["bits"]]
    )
    result.report["output"]["path"] = str(out)
    if report:
        write_text_atomic(report, dumps(result.report) + "\n")
    if plot:
        from studiod.daemon.plot import loudness_series, plot_loudness

        t = result.report["target"]
        plot_loudness(
            plot,
            loudness_series(result.audio, result.samplerate),
            t["integrated_lufs"],
            t["ceiling_dbtp"],
            f"{Path(out).name}: {t['preset']} ({t['integrated_lufs']:g} LUFS, "
            f"{t['ceiling_dbtp']:g} dBTP)",
        )


def check_plot_available(plot: str | None) -> None:
    """Fail before the work, not after it, when --plot cannot be honoured."""
    if not plot:
        return
    if Path(plot).suffix.lower() != ".png":
        raise OfflineError(f"--plot {plot}: the plot is a PNG file; name it *.png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OfflineError(
            "--plot needs matplotlib: install the plot extra (pip install 'studiod[plot]')"
        ) from None


def _streams(path: str, opts: MasterOptions, plot: str | None) -> bool:
    """Whether ``master`` can run block by block: no resampling (scipy's resample_poly runs
    on a whole signal) and no plot (it is drawn from the whole result)."""
    if plot:
        return False
    with open_audio(path) as f:
        rate = f.samplerate
    return opts.samplerate in (None, rate)


def main(args) -> int:
    from studiod.daemon.plot import PlotError

    try:
        opts = options_from_args(args)
        check_output(args.output, opts.bits)
        check_plot_available(args.plot)
        with Progress("reading", 1) as bar:
            if _streams(args.input, opts, args.plot):
                report = master_file(args.input, args.output, opts, bar)
                report["output"]["path"] = str(args.output)
                if args.report:
                    write_text_atomic(args.report, dumps(report) + "\n")
            else:
                x, samplerate = read_audio(args.input)
                result = master_audio(x, samplerate, opts, bar)
                write_outputs(result, args.output, args.report, args.plot)
                report = result.report
    except (OfflineError, AudioFileError, PlotError) as exc:
        return fail("master", str(exc))
    out = report["output"]
    print(
        f"studiod master: {args.output}: {out['integrated_lufs']:.2f} LUFS "
        f"(target {opts.preset.integrated_lufs:g}), true peak {out['true_peak_dbtp']:.2f} dBTP "
        f"(ceiling {opts.preset.ceiling_dbtp:g}), gain {report['gain_db']:+.2f} dB, "
        f"{out['bits']}-bit" + (" dithered" if out["dither"] else "")
    )
    return EXIT_OK
