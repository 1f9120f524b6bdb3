"""``studiod render SESSION OUT``: mix stem files through the engine to a premaster.

The session file (TOML, see ``examples/session.toml``) names the stems, the engine session
(groups, FX buses), the mixer settings as registry addresses and automation lanes
(daemon.automation). The stems run through the same :class:`Engine` the daemon uses, in
4096-frame blocks, into the master bus; the premaster is the master bus with the true-peak
limiter and the dither switched off, peak normalised (default -6 dBFS) and written as
24-bit PCM with TPDF dither (configurable).
Optionally the mix is also mastered to a preset with ``studiod master``'s code.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from studiod.controllers.jsontext import dumps, finite_or_none
from studiod.daemon.audiofile import AudioFileError, atomic_sound_file
from studiod.daemon.automation import Automation, parse_lanes
from studiod.daemon.cmd_master import MasterOptions, master_file
from studiod.daemon.offline import (
    BITS,
    ENGINE_BLOCK_FRAMES,
    EXIT_OK,
    READ_BLOCK_FRAMES,
    OfflineError,
    Progress,
    check_output,
    check_table,
    fail,
    open_audio,
    preset_from_args,
    run_engine_blocks,
    set_params,
    write_text_atomic,
)
from studiod.dsp.dither import Dither
from studiod.dsp.engine import Engine
from studiod.dsp.layout import system_prefix
from studiod.dsp.loudness import LoudnessMeter
from studiod.dsp.session import Session, SessionError

SESSION_KEYS = ("samplerate", "channel", "group", "fx", "mix", "automation", "render")
CHANNEL_KEYS = ("name", "stem")
RENDER_DEFAULTS = {
    "normalize": "peak",  # "peak": scale the premaster's sample peak to peak_dbfs; "none"
    "peak_dbfs": -6.0,
    "bits": "24",
    "tail_s": 2.0,  # rendered after the longest stem so reverb and delay tails ring out
    "master": None,  # a preset name: also write a mastered file
    "master_out": None,  # where (relative to the session file); default OUT + "-master"
    "master_bits": None,  # default: the preset's, else 24
    "master_chain": {},  # /master/... settings for the mastering pass
}
NORMALIZE = ("peak", "none")
# The mix runs this far below full scale through the monitor path (and is scaled back in
# float afterwards) so that an output safety limiter never touches a premaster that peaks
# above 0 dBFS before normalisation.
HEADROOM_DB = 24.0
_SYSTEM = "main"


class RenderSession:
    """A parsed, validated session file: the engine session, stems, mix and options."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        where = str(self.path)
        if not self.path.is_file():
            raise OfflineError(f"{where}: no such session file")
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise OfflineError(f"{where}: not valid TOML ({exc})") from None
        except OSError as exc:
            raise OfflineError(f"{where}: cannot read ({exc.strerror})") from None
        unknown = sorted(set(data) - set(SESSION_KEYS))
        if unknown:
            raise OfflineError(f"{where}: unknown key(s) {unknown}; known: {list(SESSION_KEYS)}")
        channels = data.get("channel", [])
        if not isinstance(channels, list) or not channels:
            raise OfflineError(f"{where}: needs at least one [[channel]] with a name and a stem")
        self.stems: list[Path] = []
        names = []
        for i, ch in enumerate(channels):
            key = f"{where}: channel[{i}]"
            check_table(ch, key, CHANNEL_KEYS)
            for k in CHANNEL_KEYS:
                if not isinstance(ch.get(k), str) or not ch[k]:
                    raise OfflineError(f"{key}: '{k}' must be a non-empty string")
            names.append(ch["name"])
            stem = Path(ch["stem"]).expanduser()
            self.stems.append(stem if stem.is_absolute() else self.path.parent / stem)
        self.names = names
        self.samplerate = data.get("samplerate")
        if self.samplerate is not None and (
            not isinstance(self.samplerate, int) or isinstance(self.samplerate, bool)
        ):
            raise OfflineError(f"{where}: samplerate must be an integer (Hz)")
        self.groups = data.get("group", [])
        self.fx = data.get("fx", [])
        self.mix = data.get("mix", {})
        if not isinstance(self.mix, dict):
            raise OfflineError(f"{where}: [mix] must be a table of address = value")
        self.automation = data.get("automation", [])  # checked against the engine's registry
        render = check_table(data.get("render", {}), f"{where}: [render]", RENDER_DEFAULTS)
        self.options = {**RENDER_DEFAULTS, **render}

    def engine_session(self, channel_counts: list[int], samplerate: int) -> Session:
        """The engine session: one channel per stem (mono or stereo-linked), inputs in order."""
        channels, pos = [], 1
        for name, count in zip(self.names, channel_counts, strict=True):
            channels.append({"name": name, "inputs": list(range(pos, pos + count))})
            pos += count
        data = {
            "samplerate": samplerate,
            "channel": channels,
            "group": self.groups,
            "fx": self.fx,
            "monitor": {"system": [{"name": _SYSTEM, "outputs": [1, 2]}]},
        }
        try:
            return Session.from_dict(data, where=str(self.path))
        except SessionError as exc:
            raise OfflineError(str(exc)) from None


def _flatten_mix(mix: dict, prefix: str = "") -> dict:
    """``[mix]`` accepts quoted addresses (``"/ch/1/fader" = -3``) and nested tables."""
    out = {}
    for key, value in mix.items():
        address = (
            f"{prefix}/{key.strip('/')}" if prefix else (key if key.startswith("/") else "/" + key)
        )
        if isinstance(value, dict):
            out.update(_flatten_mix(value, address))
        else:
            out[address] = value
    return out


def check_stems(session: RenderSession) -> tuple[int, list[int]]:
    """(the sample rate, each stem's frames). Checks existence, format, channel count and
    matching sample rates before any audio is read."""
    rates, frames = [], []
    for stem in session.stems:
        with open_audio(stem) as f:
            if f.channels not in (1, 2):
                raise OfflineError(f"{stem}: {f.channels} channels; a stem is mono or stereo")
            rates.append(f.samplerate)
            frames.append(f.frames)
    wanted = session.samplerate or rates[0]
    for stem, rate in zip(session.stems, rates, strict=True):
        if rate != wanted:
            first = (
                f"the session's samplerate {wanted}"
                if session.samplerate
                else (f"{session.stems[0]} ({wanted} Hz)")
            )
            raise OfflineError(
                f"{stem}: sample rate {rate} Hz does not match {first}; resample the stems"
            )
    return wanted, frames


def _stem_blocks(session: RenderSession, frames: int, n_inputs: int) -> Iterator[np.ndarray]:
    """The engine's input, READ_BLOCK_FRAMES at a time: every stem's next block side by side
    (a stem that has ended gives silence) for ``frames`` frames in all."""
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open_audio(stem)) for stem in session.stems]
        for start in range(0, frames, READ_BLOCK_FRAMES):
            n = min(READ_BLOCK_FRAMES, frames - start)
            block = np.zeros((n, n_inputs), dtype=np.float32)
            col = 0
            for stem, f in zip(session.stems, files, strict=True):
                try:
                    got = f.read(n, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise AudioFileError(f"{stem}: read error at frame {start} ({exc})") from None
                if not np.all(np.isfinite(got)):
                    raise OfflineError(f"{stem}: contains NaN or infinite samples")
                block[: len(got), col : col + f.channels] = got
                col += f.channels
            yield block


def render_mix(
    session: RenderSession, samplerate: int, stem_frames: list[int], tail_s: float,
    write: Callable[[np.ndarray], None], progress: Progress | None = None,
) -> tuple[int, float]:  # fmt: skip
    """The master bus (limiter and dither off), block by block to ``write`` as float32
    [frames, 2] at the engine's output level (HEADROOM_DB below the mix). Returns (frames,
    the mix's sample peak as a linear factor)."""
    counts = []
    for stem in session.stems:
        with open_audio(stem) as f:
            counts.append(f.channels)
    engine = Engine(
        session.engine_session(counts, samplerate), max_block_frames=ENGINE_BLOCK_FRAMES
    )
    frames = max(stem_frames) + round(tail_s * samplerate)
    set_params(engine, _flatten_mix(session.mix), f"{session.path}: [mix]")
    fixed = {
        "/master/limiter/on": 0,
        "/master/dither/bits": "off",
        "/monitor/level": -HEADROOM_DB,
    }
    limit = f"{system_prefix(_SYSTEM)}/limit"
    if limit in engine.registry:
        fixed[limit] = engine.registry[limit].maximum
    set_params(engine, fixed, "render")
    lanes = parse_lanes(session.automation, engine, str(session.path), reserved=fixed)
    automation = Automation(lanes, engine) if lanes else None
    if progress:
        progress.relabel("mixing", frames + engine.latency_samples)
    peak = 0.0
    inp = _stem_blocks(session, frames, engine.session.n_inputs)
    for y in run_engine_blocks(engine, inp, [0, 1], progress, automation):
        peak = max(peak, float(np.max(np.abs(y))) if len(y) else 0.0)
        write(y)
    return frames, peak * 10.0 ** (HEADROOM_DB / 20.0)


def _option(session: RenderSession, args, name: str):
    value = getattr(args, name, None)
    return session.options[name] if value is None else value


def render(args) -> dict:
    session = RenderSession(args.session)
    normalize = "none" if args.no_normalize else session.options["normalize"]
    if normalize not in NORMALIZE:
        raise OfflineError(f"{session.path}: [render] normalize must be one of {NORMALIZE}")
    peak_dbfs = float(_option(session, args, "peak_dbfs"))
    if not (math.isfinite(peak_dbfs) and -60.0 <= peak_dbfs <= 0.0):
        raise OfflineError(f"peak {peak_dbfs:g} dBFS is out of range -60…0")
    bits = str(_option(session, args, "bits"))
    tail_s = float(_option(session, args, "tail_s"))
    if not (math.isfinite(tail_s) and 0.0 <= tail_s <= 60.0):
        raise OfflineError(f"tail {tail_s:g} s is out of range 0…60")
    subtype = check_output(args.output, bits)
    master_name = _option(session, args, "master")
    master_out = None
    if master_name:
        preset = preset_from_args(master_name, None, None)
        master_bits = str(_option(session, args, "master_bits") or preset.bits or "24")
        out = Path(args.output)
        if args.master_out:
            master_out = Path(args.master_out)
        elif session.options["master_out"]:
            master_out = session.path.parent / session.options["master_out"]
        else:
            master_out = out.with_name(f"{out.stem}-master{out.suffix}")
        check_output(master_out, master_bits)
        chain = session.options["master_chain"]
        if not isinstance(chain, dict):
            raise OfflineError(f"{session.path}: [render.master_chain] must be a table")

    samplerate, stem_frames = check_stems(session)
    headroom = 10.0 ** (HEADROOM_DB / 20.0)
    # Two passes, memory flat with length: the mix goes to a float32 scratch file as the
    # engine renders it (its peak known at the end), then the premaster (normalised,
    # dithered) is written from it block by block, and the master reads it like any file.
    out_dir = Path(args.output).resolve().parent
    fd, scratch = tempfile.mkstemp(prefix=".studiod-mix-", suffix=".wav", dir=out_dir)
    os.close(fd)
    try:
        with Progress("mixing", 1) as bar:
            with sf.SoundFile(scratch, "w", samplerate, 2, subtype="FLOAT") as mix_file:
                frames, peak = render_mix(
                    session, samplerate, stem_frames, tail_s,
                    lambda y: mix_file.write(y.astype(np.float64) * headroom), bar,
                )  # fmt: skip
            if peak == 0.0:
                raise OfflineError("the mix is silent: check the stems and the [mix] settings")
            gain_db = peak_dbfs - 20.0 * math.log10(peak) if normalize == "peak" else 0.0
            gain = 10.0 ** (gain_db / 20.0)
            if bits != "32f" and peak * gain > 1.0:
                raise OfflineError(
                    f"the premaster peaks at {20 * math.log10(peak * gain):+.2f} "
                    f"dBFS and would clip at {bits} bits: normalise it or use bits = '32f'"
                )
            dither = Dither(bits=int(bits), lanes=2) if bits != "32f" else None
            meter = LoudnessMeter(samplerate, 2)
            bar.relabel("premaster", frames)
            with (
                open_audio(scratch) as mix_file,
                atomic_sound_file(args.output, samplerate, 2, subtype) as premaster,
            ):
                for block in mix_file.blocks(READ_BLOCK_FRAMES, dtype="float64", always_2d=True):
                    block = block * gain
                    if dither is not None:
                        block = dither.process(block)
                    block = block.astype(np.float32)
                    meter.process(block)
                    premaster.write(block)
                    bar.update(len(block))
                mastered = None
                if master_name:  # inside: a master that fails keeps the premaster unwritten
                    opts = MasterOptions(
                        preset=preset,
                        chain=dict(_flatten_mix(chain)) if chain else {},
                        bits=master_bits,
                    )
                    mastered = master_file(scratch, master_out, opts, bar)
                    mastered["output"]["path"] = str(master_out)
            m = meter.readings()
            report = {
                "session": str(session.path),
                "stems": [str(s) for s in session.stems],
                "samplerate": samplerate,
                "premaster": {
                    "path": str(args.output),
                    "bits": bits,
                    "normalize": normalize,
                    "gain_db": gain_db,
                    "sample_peak_dbfs": finite_or_none(m["sample_peak_dbfs"]),
                    "true_peak_dbtp": finite_or_none(m["true_peak_dbtp"]),
                    "integrated_lufs": finite_or_none(m["integrated_lufs"]),
                    "loudness_range_lu": finite_or_none(m["loudness_range_lu"]),
                    "duration_s": frames / samplerate,
                },
            }
            if mastered is not None:
                report["master"] = mastered
    finally:
        Path(scratch).unlink(missing_ok=True)
    return report


def register(commands) -> None:
    p = commands.add_parser(
        "render",
        help="mix a session's stems through the engine to a premaster (and a master)",
        description="Render the stems named in SESSION (TOML, see examples/session.toml) "
        "through the engine with the session's mixer settings, to a premaster OUT (the master "
        "bus without limiter, peak-normalised to -6 dBFS, 24-bit by default) and optionally "
        "a mastered file.",
    )
    p.add_argument("session", metavar="SESSION", help="session file (TOML)")
    p.add_argument("output", metavar="OUT", help="premaster file (.wav, .flac, .aiff)")
    p.add_argument("--peak", dest="peak_dbfs", type=float, metavar="DBFS",
                   help="premaster sample peak (default -6)")  # fmt: skip
    p.add_argument("--no-normalize", action="store_true", help="keep the mix's own level")
    p.add_argument("--bits", choices=tuple(BITS), help="premaster bit depth (default 24)")
    p.add_argument("--tail", dest="tail_s", type=float, metavar="S",
                   help="seconds rendered after the longest stem (default 2)")  # fmt: skip
    p.add_argument("--master", metavar="PRESET", help="also master the mix to this preset")
    p.add_argument("--master-out", metavar="FILE", help="the mastered file (default OUT-master)")
    p.add_argument("--master-bits", choices=tuple(BITS), help="mastered file's bit depth")
    p.add_argument("--report", metavar="JSON", help="write a JSON report")
    p.set_defaults(func=main)


def main(args) -> int:
    try:
        report = render(args)
        if args.report:
            write_text_atomic(args.report, dumps(report) + "\n")
    except (OfflineError, AudioFileError) as exc:
        return fail("render", str(exc))
    pre = report["premaster"]
    print(
        f"studiod render: {pre['path']}: peak {pre['sample_peak_dbfs']:.2f} dBFS, "
        f"{pre['integrated_lufs']:.2f} LUFS, {pre['bits']}-bit"
    )
    if "master" in report:
        out = report["master"]["output"]
        print(
            f"studiod render: {out['path']}: {out['integrated_lufs']:.2f} LUFS, true peak "
            f"{out['true_peak_dbtp']:.2f} dBTP ({report['master']['target']['preset']})"
        )
    return EXIT_OK
