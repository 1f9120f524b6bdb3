"""``studiod album ALBUM.toml OUTDIR``: a sequenced, mastered release in every format asked.

The album file (TOML; ``examples/album.toml``, docs/offline.md) has an ``[album]`` table
(``title``, ``artist``, ``target``: a delivery preset of the one targets table, ``mode``:
``album`` or ``track``, ``formats``, optional ``chain`` of ``/master/...`` settings) and one
``[[track]]`` table per track (``file``, ``title``, optional ``isrc``, ``gap_s`` of silence
before it, ``fade_in_s``, ``fade_out_s``, ``gain_db``, ``crossfade_s`` into the next).

Levels. In ``album`` mode one gain structure serves the album, as album normalisation on
the streaming services plays it: the loudest-sounding track (integrated loudness of its
input plus its ``gain_db``) is mastered to the target and every other track to the target
minus its original distance from that one, so the tracks keep their relative loudness. In
``track`` mode every track meets the target (plus its ``gain_db``). Each track goes through
``studiod master``'s chain and gain search (its true-peak limiter at the preset's ceiling,
the fades on its input).

Deliveries. Every track and the continuous album (``album.EXT``, the gaps and crossfades in
it, with ``album.cue``) are written in each format: ``wav24`` and ``flac`` (24 bit, TPDF
dither), ``wav16`` (44.1 kHz, 16 bit, dithered), ``mp3`` (320 kbit/s), ``aac`` (256 kbit/s,
``.m4a``), ``opus`` (192 kbit/s): the lossy ones through ffmpeg. Every delivery is read back
(the lossy ones decoded) and its true peak measured: when it passes the ceiling (an
encoder's overshoot, or resampling's), the track is mastered again with the ceiling lowered
by the overshoot and that delivery made again (as Apple's Digital Masters guidance asks for
AAC), and the report says so. Tags (mutagen): title, artist, album, track number, ISRC and
ReplayGain 2.0 loudness (reference -18 LUFS) in every file: Vorbis comments in FLAC, ID3 in
MP3 and in WAV (an ``id3`` chunk: ffmpeg, foobar2000 and Mp3tag read it; a LIST-INFO chunk
has no field for an ISRC, its ``ISRC`` being the "source", and where one is present ffmpeg
reads no ID3 chunk at all), MP4 atoms in AAC, Opus comments (with R128_TRACK_GAIN, RFC 7845).

Outputs: ``NN - Title.EXT`` per track and format, ``album.EXT``, ``album.cue``,
``report.json`` and ``report.png``. Everything is made in a temporary directory inside
OUTDIR and moved into place only when all of it succeeded: a bad track is named in the
error and nothing half written is left.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from studiod.controllers.jsontext import dumps, finite_or_none
from studiod.daemon.audiofile import AudioFileError
from studiod.daemon.cmd_master import (
    MasterOptions,
    master_audio,
    resample,
)
from studiod.daemon.offline import (
    EXIT_OK,
    PRESETS,
    OfflineError,
    Preset,
    Progress,
    fail,
    read_audio,
    write_text_atomic,
)
from studiod.dsp.dither import Dither
from studiod.dsp.loudness import LoudnessMeter

ALBUM_KEYS = ("title", "artist", "target", "mode", "formats", "chain")
TRACK_KEYS = ("file", "title", "isrc", "gap_s", "fade_in_s", "fade_out_s", "gain_db",
              "crossfade_s")  # fmt: skip
MODES = ("album", "track")
MAX_REMASTERS = 3  # a delivery over the ceiling is made again at most this often
REPLAYGAIN_REFERENCE_LUFS = -18.0  # ReplayGain 2.0 (hydrogenaud.io ReplayGain 2.0 spec)
R128_REFERENCE_LUFS = -23.0  # Opus R128_TRACK_GAIN (RFC 7845 section 5.2.1: EBU R 128)
# ISO 3901: country (2 letters), registrant (3 alphanumerics), year (2 digits), designation
# (5 digits); written with or without the hyphens, stored without them.
ISRC = re.compile(r"^([A-Z]{2})-?([A-Z0-9]{3})-?(\d{2})-?(\d{5})$")


@dataclass(frozen=True)
class Format:
    """A delivery: file extension, PCM bits (lossless) or ffmpeg encoder arguments (lossy),
    and the sample rate it is delivered at (None: the album's)."""

    ext: str
    bits: int | None = None
    samplerate: int | None = None
    encoder: tuple[str, ...] = ()
    cue_type: str | None = None

    @property
    def lossy(self) -> bool:
        return bool(self.encoder)


FORMATS = {
    "wav24": Format("wav", bits=24, cue_type="WAVE"),
    "wav16": Format("wav", bits=16, samplerate=44100, cue_type="WAVE"),
    "flac": Format("flac", bits=24, cue_type="WAVE"),
    "mp3": Format("mp3", encoder=("-c:a", "libmp3lame", "-b:a", "320k"), cue_type="MP3"),
    "aac": Format("m4a", encoder=("-c:a", "aac", "-b:a", "256k")),
    "opus": Format("opus", encoder=("-c:a", "libopus", "-b:a", "192k"), samplerate=48000),
}


@dataclass(frozen=True)
class Track:
    number: int
    file: Path
    title: str
    isrc: str | None = None
    gap_s: float = 0.0
    fade_in_s: float = 0.0
    fade_out_s: float = 0.0
    gain_db: float = 0.0
    crossfade_s: float = 0.0


@dataclass(frozen=True)
class Album:
    title: str
    artist: str
    preset: Preset
    mode: str
    formats: tuple[str, ...]
    tracks: tuple[Track, ...]
    chain: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# the album file


def load_album(path: str | Path) -> Album:
    """Read and validate an album file; OfflineError names the file, the key and why."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise OfflineError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OfflineError(f"{path}: not TOML ({exc})") from None
    unknown = set(data) - {"album", "track"}
    if unknown:
        raise OfflineError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}")
    album = data.get("album")
    if not isinstance(album, dict):
        raise OfflineError(f"{path}: [album] is missing")
    where = f"{path}: [album]"
    _known(album, ALBUM_KEYS, where)
    target = _text(album, "target", where, "spotify")
    if target not in PRESETS:
        raise OfflineError(f"{where} target: {target!r} is not one of {', '.join(PRESETS)}")
    mode = _text(album, "mode", where, "album")
    if mode not in MODES:
        raise OfflineError(f"{where} mode: {mode!r} is not 'album' or 'track'")
    formats = album.get("formats", ["wav24"])
    if not isinstance(formats, list) or not formats or not all(f in FORMATS for f in formats):
        raise OfflineError(f"{where} formats: {formats!r}: a list of {', '.join(FORMATS)}")
    chain = album.get("chain", {})
    if not isinstance(chain, dict):
        raise OfflineError(f"{where} chain: a table of /master/... settings")
    tracks = data.get("track")
    if not isinstance(tracks, list) or not tracks:
        raise OfflineError(f"{path}: no [[track]]")
    parsed = tuple(_track(path, i, t) for i, t in enumerate(tracks, start=1))
    for track, following in itertools.pairwise(parsed):
        if track.crossfade_s > 0 and following.gap_s > 0:
            raise OfflineError(
                f"{path}: [[track]] {track.number} crossfade_s: a crossfade into track "
                f"{following.number}, which has a gap_s before it: choose one"
            )
    if parsed[-1].crossfade_s > 0:
        raise OfflineError(f"{path}: [[track]] {parsed[-1].number} crossfade_s: no next track")
    return Album(
        title=_text(album, "title", where), artist=_text(album, "artist", where),
        preset=PRESETS[target], mode=mode, formats=tuple(dict.fromkeys(formats)),
        tracks=parsed, chain=chain,
    )  # fmt: skip


def _track(path: Path, number: int, data: object) -> Track:
    where = f"{path}: [[track]] {number}"
    if not isinstance(data, dict):
        raise OfflineError(f"{where}: not a table")
    _known(data, TRACK_KEYS, where)
    file = _text(data, "file", where)
    numbers = {}
    for key in ("gap_s", "fade_in_s", "fade_out_s", "gain_db", "crossfade_s"):
        value = data.get(key, 0.0)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise OfflineError(f"{where} {key}: {value!r} is not a number")
        low, high = (-24.0, 24.0) if key == "gain_db" else (0.0, 600.0)
        if not low <= value <= high:
            raise OfflineError(f"{where} {key}: {value:g} is outside {low:g}…{high:g}")
        numbers[key] = float(value)
    isrc = data.get("isrc")
    if isrc is not None:
        match = ISRC.match(str(isrc).upper()) if isinstance(isrc, str) else None
        if match is None:
            raise OfflineError(f"{where} isrc: {isrc!r} is not an ISRC (CC-XXX-YY-NNNNN)")
        isrc = "".join(match.groups())
    return Track(number, (path.parent / file), _text(data, "title", where), isrc, **numbers)


def _known(table: dict, keys: tuple[str, ...], where: str) -> None:
    unknown = set(table) - set(keys)
    if unknown:
        raise OfflineError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                           f"(known: {', '.join(keys)})")  # fmt: skip


def _text(table: dict, key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise OfflineError(f"{where} {key}: a non-empty string is needed, not {value!r}")
    return value


def file_name(track: Track, ext: str) -> str:
    """``NN - Title.EXT``, with the characters a file system refuses replaced."""
    title = re.sub(r'[/\\:*?"<>|\x00-\x1f]', "_", track.title).strip(". ")
    return f"{track.number:02d} - {title}.{ext}"


# --------------------------------------------------------------------------------------
# mastering and deliveries


@dataclass
class _Master:
    """One track mastered (float32 at the album rate, before any dither)."""

    track: Track
    audio: np.ndarray
    report: dict
    ceiling_dbtp: float


def _measure(audio: np.ndarray, samplerate: int) -> dict:
    meter = LoudnessMeter(samplerate, audio.shape[1])
    meter.process(np.ascontiguousarray(audio, dtype=np.float32))
    return meter.readings()


def _targets(album: Album, inputs: list[float]) -> list[float]:
    """Each track's integrated-loudness target (see the module docstring)."""
    target = album.preset.integrated_lufs
    levels = [loud + t.gain_db for loud, t in zip(inputs, album.tracks, strict=True)]
    if album.mode == "track":
        return [target + t.gain_db for t in album.tracks]
    loudest = max(levels)
    return [target - (loudest - level) for level in levels]


def _master_track(
    album: Album,
    track: Track,
    source: tuple[np.ndarray, int],
    rate: int,
    target_lufs: float,
    ceiling_dbtp: float,
    progress: Progress | None,
) -> _Master:
    """``source`` (audio, its rate) mastered at the album's ``rate`` to float (no dither:
    each delivery dithers to its own bits)."""
    x, source_rate = source
    preset = replace(album.preset, integrated_lufs=target_lufs, ceiling_dbtp=ceiling_dbtp)
    opts = MasterOptions(preset=preset, chain=dict(album.chain), bits="32f", dither=False,
                         fade_in_s=track.fade_in_s, fade_out_s=track.fade_out_s,
                         samplerate=rate)  # fmt: skip
    try:
        result = master_audio(x, source_rate, opts, progress)
    except OfflineError as exc:
        raise OfflineError(f"track {track.number} ({track.file.name}): {exc}") from None
    return _Master(track, result.audio, result.report, ceiling_dbtp)


def _pcm(audio: np.ndarray, rate: int, fmt: Format) -> tuple[np.ndarray, int]:
    """The audio a lossless delivery holds: at its rate, dithered to its bits."""
    out_rate = fmt.samplerate or rate
    if out_rate != rate:
        audio = resample(audio, rate, out_rate)
    dither = Dither(bits=fmt.bits, lanes=audio.shape[1], seed=1)
    return dither.process(np.ascontiguousarray(audio, dtype=np.float32)), out_rate


def _ffmpeg(args: list[str], what: str) -> bytes:
    try:
        done = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
                               *args], capture_output=True, timeout=600)  # fmt: skip
    except FileNotFoundError:
        raise OfflineError("lossy formats need ffmpeg (Debian: apt install ffmpeg)") from None
    if done.returncode != 0:
        raise OfflineError(f"{what}: ffmpeg failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def _deliver(audio: np.ndarray, rate: int, fmt: Format, out: Path, tmp: Path) -> np.ndarray:
    """Write one delivery to ``out``; returns what a player reads back from it (float32)."""
    if not fmt.lossy:
        pcm, out_rate = _pcm(audio, rate, fmt)
        subtype = {16: "PCM_16", 24: "PCM_24"}[fmt.bits]
        sf.write(out, pcm, out_rate, subtype=subtype, format=fmt.ext.upper())
        back, _ = sf.read(out, dtype="float32", always_2d=True)
        return back
    source = tmp / "encode.wav"
    sf.write(source, audio, rate, subtype="FLOAT")
    rate_args = ["-ar", str(fmt.samplerate)] if fmt.samplerate else []
    _ffmpeg(["-y", "-i", str(source), *fmt.encoder, *rate_args, str(out)], out.name)
    raw = _ffmpeg(["-i", str(out), "-f", "f32le", "-ac", str(audio.shape[1]), "-ar", str(rate),
                   "-"], f"decoding {out.name}")  # fmt: skip
    return np.frombuffer(raw, dtype="<f4").reshape(-1, audio.shape[1]).copy()


def _true_peak(audio: np.ndarray, rate: int) -> float:
    return float(_measure(audio, rate)["true_peak_dbtp"])


# --------------------------------------------------------------------------------------
# the album file (gaps, crossfades) and its cue sheet


@dataclass(frozen=True)
class _Placement:
    """Where a track sits in the continuous album (frames at the album rate)."""

    gap_start: int
    start: int
    end: int


def assemble(masters: list[_Master], rate: int) -> tuple[np.ndarray, list[_Placement]]:
    """The continuous album: each track after its gap of digital silence, overlapping the
    previous one by that one's ``crossfade_s`` with complementary linear (equal-gain) ramps,
    whose weights sum to 1, so the crossfade never passes the louder track's peak."""
    channels = max(m.audio.shape[1] for m in masters)
    parts: list[tuple[int, np.ndarray]] = []
    places: list[_Placement] = []
    pos = 0
    overlap = 0
    for m in masters:
        x = m.audio if m.audio.shape[1] == channels else np.repeat(m.audio, channels, axis=1)
        x = x.astype(np.float64)
        gap = round(m.track.gap_s * rate)
        start = pos + gap - overlap
        if overlap:
            x[:overlap] *= np.linspace(0.0, 1.0, overlap + 2)[1:-1, None]
        overlap = round(m.track.crossfade_s * rate)
        if overlap:
            if overlap >= len(x):
                raise OfflineError(f"track {m.track.number}: crossfade_s is longer than the track")
            x[-overlap:] *= np.linspace(1.0, 0.0, overlap + 2)[1:-1, None]
        parts.append((start, x))
        places.append(_Placement(start - gap, start, start + len(x)))
        pos = start + len(x)
    album = np.zeros((pos, channels))
    for start, x in parts:
        album[start : start + len(x)] += x
    return album.astype(np.float32), places


def cue_sheet(album: Album, places: list[_Placement], rate: int, fmt: Format, name: str) -> str:
    """A CUE sheet for the continuous album file ``name``: INDEX 00 where a gap starts,
    INDEX 01 where the track starts (MM:SS:FF, 75 frames a second)."""

    def stamp(frame: int) -> str:
        cd = round(frame * 75 / rate)
        return f"{cd // 4500:02d}:{cd // 75 % 60:02d}:{cd % 75:02d}"

    def quoted(text: str) -> str:
        return '"' + text.replace('"', "'") + '"'

    lines = [f"PERFORMER {quoted(album.artist)}", f"TITLE {quoted(album.title)}",
             f"FILE {quoted(name)} {fmt.cue_type}"]  # fmt: skip
    for track, place in zip(album.tracks, places, strict=True):
        lines.append(f"  TRACK {track.number:02d} AUDIO")
        lines.append(f"    TITLE {quoted(track.title)}")
        lines.append(f"    PERFORMER {quoted(album.artist)}")
        if track.isrc:
            lines.append(f"    ISRC {track.isrc}")
        if place.start > place.gap_start:
            lines.append(f"    INDEX 00 {stamp(place.gap_start)}")
        lines.append(f"    INDEX 01 {stamp(place.start)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# tags


def tag(path: Path, fmt: Format, tags: dict[str, str], loudness: dict[str, float]) -> None:
    """Write ``tags`` (title, artist, album, tracknumber, isrc) and the ReplayGain 2.0
    loudness tags into a delivery with mutagen, in the form its format's players read."""
    rg = {
        "REPLAYGAIN_TRACK_GAIN": f"{loudness['track_gain_db']:+.2f} dB",
        "REPLAYGAIN_TRACK_PEAK": f"{loudness['track_peak']:.6f}",
    }
    if "album_gain_db" in loudness:
        rg["REPLAYGAIN_ALBUM_GAIN"] = f"{loudness['album_gain_db']:+.2f} dB"
        rg["REPLAYGAIN_ALBUM_PEAK"] = f"{loudness['album_peak']:.6f}"
    if fmt.ext in ("wav", "mp3"):
        _tag_id3(path, fmt, tags, rg)
    elif fmt.ext == "flac":
        from mutagen.flac import FLAC

        f = FLAC(path)
        f.update({k.upper(): v for k, v in tags.items() if v})
        f.update(rg)
        f.save()
    elif fmt.ext == "m4a":
        from mutagen.mp4 import MP4, MP4FreeForm

        f = MP4(path)
        names = {"title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb"}
        for key, atom in names.items():
            if tags.get(key):
                f[atom] = [tags[key]]
        if tags.get("tracknumber"):
            number, _, total = tags["tracknumber"].partition("/")
            f["trkn"] = [(int(number), int(total or 0))]
        free = {"ISRC": tags.get("isrc"), **rg}
        for key, value in free.items():
            if value:
                f[f"----:com.apple.iTunes:{key}"] = [MP4FreeForm(value.encode())]
        f.save()
    elif fmt.ext == "opus":
        from mutagen.oggopus import OggOpus

        f = OggOpus(path)
        f.update({k.upper(): v for k, v in tags.items() if v})
        # RFC 7845: Q7.8 fixed point, relative to the output gain, reference -23 LUFS
        gain = loudness["track_gain_db"] + REPLAYGAIN_REFERENCE_LUFS - R128_REFERENCE_LUFS
        f["R128_TRACK_GAIN"] = str(round(gain * 256))
        f.save()


def _tag_id3(path: Path, fmt: Format, tags: dict[str, str], rg: dict[str, str]) -> None:
    from mutagen.id3 import TALB, TIT2, TPE1, TRCK, TSRC, TXXX

    if fmt.ext == "wav":
        from mutagen.wave import WAVE as Tagged
    else:
        from mutagen.mp3 import MP3 as Tagged
    f = Tagged(path)
    if f.tags is None:
        f.add_tags()
    frames = {"title": TIT2, "artist": TPE1, "album": TALB, "tracknumber": TRCK, "isrc": TSRC}
    for key, frame in frames.items():
        if tags.get(key):
            f.tags.add(frame(encoding=3, text=tags[key]))
    for key, value in rg.items():
        f.tags.add(TXXX(encoding=3, desc=key, text=value))
    f.save()


# --------------------------------------------------------------------------------------
# the command


def make_album(album: Album, outdir: Path, progress: Progress | None = None) -> dict:
    """Master, assemble, deliver and tag ``album`` into ``outdir``; returns the report."""
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".studiod-album-", dir=outdir) as tmp_name:
        tmp = Path(tmp_name)
        report = _make(album, tmp, progress)
        (tmp / "encode.wav").unlink(missing_ok=True)
        # everything made: move it into place, file by file (each rename atomic)
        for made in sorted(p for p in tmp.rglob("*") if p.is_file()):
            target = outdir / made.relative_to(tmp)
            target.parent.mkdir(exist_ok=True)
            os.replace(made, target)
    return report


def _make(album: Album, tmp: Path, progress: Progress | None) -> dict:
    sources = []
    for track in album.tracks:
        try:
            x, rate = read_audio(track.file, progress)
        except (OfflineError, AudioFileError) as exc:
            raise OfflineError(f"track {track.number} ({track.file}): {exc}") from None
        if not np.all(np.isfinite(x)):
            raise OfflineError(f"track {track.number} ({track.file}): NaN or infinite samples")
        sources.append((x, rate))
    rate = album.preset.samplerate or max(r for _, r in sources)
    inputs = []
    for track, (x, r) in zip(album.tracks, sources, strict=True):
        loud = _measure(x, r)["integrated_lufs"]
        if not math.isfinite(loud):
            raise OfflineError(f"track {track.number} ({track.file}): silent")
        inputs.append(loud)
    targets = _targets(album, inputs)
    ceiling = album.preset.ceiling_dbtp
    masters = []
    for track, source, target in zip(album.tracks, sources, targets, strict=True):
        if progress:
            progress.relabel(f"track {track.number}: mastering")
        masters.append(_master_track(album, track, source, rate, target, ceiling, progress))
    total = len(album.tracks)
    album_meter = LoudnessMeter(rate, 2)
    for m in masters:
        a = m.audio if m.audio.shape[1] == 2 else np.repeat(m.audio, 2, axis=1)
        album_meter.process(a)
    album_lufs = album_meter.readings()["integrated_lufs"]
    album_peak = max(float(np.max(np.abs(m.audio))) for m in masters)
    tracks_report = []
    per_format: dict[str, list[_Master]] = {name: list(masters) for name in album.formats}
    for i, (track, source) in enumerate(zip(album.tracks, sources, strict=True)):
        entry = {"number": track.number, "title": track.title, "file": str(track.file),
                 "input_integrated_lufs": inputs[i], "target_lufs": targets[i],
                 "deliveries": {}}  # fmt: skip
        for name in album.formats:
            fmt = FORMATS[name]
            m = masters[i]
            out = _out_dir(tmp, album, name) / file_name(track, fmt.ext)
            if progress:
                progress.relabel(f"track {track.number}: {name}")
            remastered = []
            tags = _tags(album, track, total)
            for _ in range(MAX_REMASTERS + 1):
                heard = _deliver(m.audio, rate, fmt, out, tmp)
                tp = _true_peak(heard, fmt.samplerate or rate)
                if tp <= ceiling or len(remastered) == MAX_REMASTERS:
                    break
                # the encoder (or the resampler) overshot: master again, that much lower
                lowered = m.ceiling_dbtp - (tp - ceiling) - 0.05
                remastered.append({"true_peak_dbtp": tp, "new_ceiling_dbtp": lowered})
                m = _master_track(album, track, source, rate, targets[i], lowered, progress)
            if tp > ceiling:
                raise OfflineError(f"track {track.number} {name}: true peak {tp:.2f} dBTP "
                                   f"stays above the {ceiling:g} dBTP ceiling")  # fmt: skip
            per_format[name][i] = m
            readings = m.report["output"]
            tag(out, fmt, tags, {
                "track_gain_db": REPLAYGAIN_REFERENCE_LUFS - readings["integrated_lufs"],
                "track_peak": float(np.max(np.abs(m.audio))),
                "album_gain_db": REPLAYGAIN_REFERENCE_LUFS - album_lufs,
                "album_peak": album_peak,
            })  # fmt: skip
            entry["deliveries"][name] = {"file": str(out.relative_to(tmp)), "true_peak_dbtp": tp,
                                         "remastered": remastered}  # fmt: skip
        first = masters[i].report
        entry.update({
            "integrated_lufs": first["output"]["integrated_lufs"],
            "loudness_range_lu": first["output"]["loudness_range_lu"],
            "true_peak_dbtp": first["output"]["true_peak_dbtp"],
            "gain_db": first["gain_db"],
            "limiter_max_reduction_db": first["limiter_max_reduction_db"],
            "duration_s": len(masters[i].audio) / rate,
        })  # fmt: skip
        tracks_report.append(entry)
    album_report = {"title": album.title, "artist": album.artist, "mode": album.mode,
                    "target": {"preset": album.preset.name,
                               "integrated_lufs": album.preset.integrated_lufs,
                               "ceiling_dbtp": ceiling},
                    "integrated_lufs": finite_or_none(album_lufs), "files": {}}  # fmt: skip
    places: list[_Placement] = []
    for name in album.formats:
        fmt = FORMATS[name]
        whole, places = assemble(per_format[name], rate)
        out = _out_dir(tmp, album, name) / f"album.{fmt.ext}"
        if progress:
            progress.relabel(f"album: {name}")
        scaled_db = 0.0
        album_tags = {"title": album.title, "artist": album.artist, "album": album.title}
        for _ in range(MAX_REMASTERS + 1):
            heard = _deliver(whole, rate, fmt, out, tmp)
            tp = _true_peak(heard, fmt.samplerate or rate)
            if tp <= ceiling:
                break
            # the continuous file overshot where single tracks did not: that much lower
            step = tp - ceiling + 0.05
            whole = (whole * 10 ** (-step / 20)).astype(np.float32)
            scaled_db -= step
        if tp > ceiling:
            raise OfflineError(f"album {name}: true peak {tp:.2f} dBTP above the ceiling")
        tag(out, fmt, album_tags, {
            "track_gain_db": REPLAYGAIN_REFERENCE_LUFS - album_lufs, "track_peak": album_peak,
        })  # fmt: skip
        album_report["files"][name] = {"file": str(out.relative_to(tmp)), "true_peak_dbtp": tp,
                                       "gain_db": scaled_db}  # fmt: skip
    cue_format = next((n for n in album.formats if FORMATS[n].cue_type), None)
    if cue_format is not None:
        fmt = FORMATS[cue_format]
        cue_rate = fmt.samplerate or rate
        scaled = [_Placement(*(round(v * cue_rate / rate) for v in (p.gap_start, p.start, p.end)))
                  for p in places]  # fmt: skip
        name = (_out_dir(tmp, album, cue_format) / f"album.{fmt.ext}").relative_to(tmp)
        text = cue_sheet(album, scaled, cue_rate, fmt, str(name))
        write_text_atomic(tmp / "album.cue", text)
    album_report["tracks"] = [{"number": t.number, "gap_start_s": p.gap_start / rate,
                               "start_s": p.start / rate, "end_s": p.end / rate}
                              for t, p in zip(album.tracks, places, strict=True)]  # fmt: skip
    report = {"album": album_report, "tracks": tracks_report}
    write_text_atomic(tmp / "report.json", dumps(report))
    from studiod.daemon.plot import plot_album

    plot_album(tmp / "report.png", report)
    return report


def _out_dir(tmp: Path, album: Album, name: str) -> Path:
    """Where a format's files go: OUTDIR itself, or OUTDIR/<format>/ when another format of
    the album has the same extension (wav24 and wav16)."""
    ext = FORMATS[name].ext
    if sum(FORMATS[other].ext == ext for other in album.formats) == 1:
        return tmp
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    return folder


def _tags(album: Album, track: Track, total: int) -> dict[str, str]:
    return {"title": track.title, "artist": album.artist, "album": album.title,
            "tracknumber": f"{track.number}/{total}", "isrc": track.isrc or ""}  # fmt: skip


def register(commands) -> None:
    parser = commands.add_parser(
        "album",
        help="master, sequence and deliver an album from an album file",
        description="Master every track of ALBUM.toml to the album's target (one gain "
        "structure for the album, or each track to the target), assemble the continuous "
        "album with its gaps and crossfades, and write every format asked with its tags, "
        "a cue sheet and a report into OUTDIR.",
    )
    parser.add_argument("album", metavar="ALBUM.toml", help="the album file")
    parser.add_argument("outdir", metavar="OUTDIR", help="where the deliveries go")
    parser.set_defaults(func=main)


def main(args) -> int:
    try:
        album = load_album(args.album)
        with Progress("album", 1) as bar:
            report = make_album(album, Path(args.outdir), bar)
    except (OfflineError, AudioFileError) as exc:
        return fail("album", str(exc))
    for t in report["tracks"]:
        print(f"{t['number']:02d} {t['title']:<30.30} {t['integrated_lufs']:7.2f} LUFS "
              f"{t['true_peak_dbtp']:6.2f} dBTP  gain {t['gain_db']:+.2f} dB")  # fmt: skip
    print(f"album: {report['album']['integrated_lufs']:.2f} LUFS -> {args.outdir}")
    return EXIT_OK
