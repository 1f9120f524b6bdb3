"""``studiod album`` through its command line: a three-track album at different loudness, in
album and in track mode, every delivery checked with programs that are not ours (libebur128
through pyebur128 for the true peak, ffmpeg for decoding, ffprobe for the tags)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyebur128
import pytest
import soundfile as sf
from scipy import signal

from tests.e2e.netns import REPO

FS = 48000
CEILING_DBTP = -1.0  # spotify's (dsp/targets.py)
TARGET_LUFS = -14.0
# three tracks 6 dB apart: a tone over noise, at different levels and pitches
LEVELS_DB = (-12.0, -18.0, -24.0)
SECONDS = 8.0


def tracks(tmp_path) -> None:
    """Three pure tones at different levels and pitches: a tone's envelope shows the fades'
    shape sample by sample."""
    t = np.arange(int(SECONDS * FS)) / FS
    for i, (level, f0) in enumerate(zip(LEVELS_DB, (220.0, 330.0, 440.0), strict=True), 1):
        x = 10 ** (level / 20) * np.sin(2 * np.pi * f0 * t)
        sf.write(tmp_path / f"t{i}.wav", np.column_stack([x, x]), FS, subtype="FLOAT")


ALBUM = """
[album]
title = "Test Album"
artist = "The Testers"
target = "spotify"
mode = "{mode}"
formats = {formats}

[[track]]
file = "t1.wav"
title = "Intro"
isrc = "US-S1Z-26-00001"
fade_in_s = 0.5

[[track]]
file = "t2.wav"
title = "Middle"
isrc = "USS1Z2600002"
gap_s = 2.0
crossfade_s = 1.0

[[track]]
file = "t3.wav"
title = "Outro: the end"
fade_out_s = 2.0
"""


def album(tmp_path, mode="album", formats='["wav24", "flac", "mp3"]', text=ALBUM):
    path = tmp_path / f"{mode}.toml"
    path.write_text(text.format(mode=mode, formats=formats))
    return path


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studiod.daemon.cli", "album", *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip


def _decoded(path) -> tuple[np.ndarray, int]:
    """A file decoded by ffmpeg: float32 stereo frames and its rate."""
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                           capture_output=True, check=True, text=True).stdout  # fmt: skip
    rate = int(json.loads(probe)["streams"][0]["sample_rate"])
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "2",
                          "-"], capture_output=True, check=True).stdout  # fmt: skip
    return np.frombuffer(raw, "<f4").reshape(-1, 2), rate


def _ebur128(x: np.ndarray, rate: int, mode) -> pyebur128.R128State:
    state = pyebur128.R128State(2, rate, mode)
    state.add_frames(np.ascontiguousarray(x, dtype=np.float64).reshape(-1), len(x))
    return state


def true_peak_dbtp(path) -> float:
    """libebur128's true peak of a file as ffmpeg decodes it."""
    state = _ebur128(*_decoded(path), pyebur128.MeasurementMode.MODE_TRUE_PEAK)
    return 20 * np.log10(max(pyebur128.get_true_peak(state, c) for c in range(2)))


def integrated_lufs(path) -> float:
    state = _ebur128(*_decoded(path), pyebur128.MeasurementMode.MODE_I)
    return pyebur128.get_loudness_global(state)


def tags(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-of", "json", str(path)],
                         capture_output=True, check=True, text=True).stdout  # fmt: skip
    return {k.lower(): v for k, v in json.loads(out)["format"]["tags"].items()}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The album made once in album mode (wav24, flac, mp3, aac, opus) and once in track
    mode (wav24 and wav16, each in a folder of its name): (outdir album mode, outdir track
    mode, inputs' loudness)."""
    tmp = tmp_path_factory.mktemp("album")
    tracks(tmp)
    inputs = [integrated_lufs(tmp / f"t{i}.wav") for i in (1, 2, 3)]
    formats = '["wav24", "flac", "mp3", "aac", "opus"]'
    done = run(album(tmp, "album", formats), tmp / "out-album")
    assert done.returncode == 0, done.stderr
    done = run(album(tmp, "track", '["wav24", "wav16"]'), tmp / "out-track")
    assert done.returncode == 0, done.stderr
    return tmp / "out-album", tmp / "out-track", inputs


NAMES = ("01 - Intro", "02 - Middle", "03 - Outro_ the end")


def test_album_mode_keeps_the_tracks_differences_and_track_mode_levels_them(made):
    out_album, out_track, inputs = made
    loud = [integrated_lufs(out_album / f"{n}.wav") for n in NAMES]
    assert max(loud) == pytest.approx(TARGET_LUFS, abs=0.5)  # the loudest at the target
    for k in (1, 2):  # the others as far below it as they were
        assert loud[0] - loud[k] == pytest.approx(inputs[0] - inputs[k], abs=0.5)
    for name in NAMES:
        for folder in ("wav24", "wav16"):
            loud = integrated_lufs(out_track / folder / f"{name}.wav")
            assert loud == pytest.approx(TARGET_LUFS, abs=0.5), (folder, name)
        info = sf.info(out_track / "wav16" / f"{name}.wav")
        assert (info.samplerate, info.subtype) == (44100, "PCM_16")
    report = json.loads((out_album / "report.json").read_text())
    assert [t["number"] for t in report["tracks"]] == [1, 2, 3]
    for t in report["tracks"]:
        assert {"integrated_lufs", "loudness_range_lu", "true_peak_dbtp", "gain_db",
                "limiter_max_reduction_db"} <= set(t)  # fmt: skip
    png = (out_album / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_every_file_keeps_under_the_ceiling_lossy_ones_decoded(made):
    out_album, out_track, _ = made
    files = [p for p in out_album.iterdir() if p.suffix in (".wav", ".flac", ".mp3", ".m4a",
                                                              ".opus")]  # fmt: skip
    files += list(out_track.glob("wav*/*.wav"))
    assert len(files) == 5 * 4 + 2 * 4  # 3 tracks + the album, in each format
    for path in files:
        assert true_peak_dbtp(path) <= CEILING_DBTP, path.name


def test_isrc_and_titles_read_back_by_ffprobe(made):
    out_album, _, _ = made
    for ext in ("wav", "flac", "mp3"):
        first = tags(out_album / f"01 - Intro.{ext}")
        assert first["title"] == "Intro" and first["artist"] == "The Testers"
        assert first["album"] == "Test Album" and first["track"] == "1/3"
        assert first.get("isrc", first.get("tsrc")) == "USS1Z2600001"
        assert first["replaygain_track_gain"].endswith(" dB")
        third = tags(out_album / f"03 - Outro_ the end.{ext}")
        assert third["title"] == "Outro: the end" and "isrc" not in third


def _envelope(path, f0_hz: float) -> tuple[np.ndarray, int]:
    """The amplitude of a tone of ``f0_hz`` in a file, sample by sample: demodulated to 0 Hz
    and low-passed forwards and backwards (no delay, so a fade's crossings stay put)."""
    x, rate = sf.read(path, always_2d=True)
    z = x[:, 0] * np.exp(-2j * np.pi * f0_hz * np.arange(len(x)) / rate)
    sos = signal.butter(4, 40.0, fs=rate, output="sos")
    return 2 * np.abs(signal.sosfiltfilt(sos, z.real) + 1j * signal.sosfiltfilt(sos, z.imag)), rate


def _crossing(envelope: np.ndarray, level: float, rising: bool) -> float:
    """The time (in samples, interpolated) a fade-in first rises to ``level``, or a
    fade-out last falls to it (searched from the middle of the file)."""
    if rising:
        k = int(np.flatnonzero(envelope >= level)[0])
    else:
        middle = len(envelope) // 2
        k = middle + int(np.flatnonzero(envelope[middle:] < level)[0])
    a, b = envelope[k - 1], envelope[k]
    return k - 1 + (level - a) / (b - a)


def _fade_ms(envelope: np.ndarray, rate: int, rising: bool) -> tuple[float, float]:
    """(start, length) in ms of a half-Hann fade g = 0.5 -+ 0.5 cos(pi t / n) in a tone's
    envelope: g passes 1/4 and 3/4 a third of the fade apart."""
    body = np.median(envelope[len(envelope) // 3 : 2 * len(envelope) // 3])
    first = _crossing(envelope, body * (0.25 if rising else 0.75), rising)
    second = _crossing(envelope, body * (0.75 if rising else 0.25), rising)
    n = 3.0 * (second - first)
    return 1000.0 * (first - n / 3.0) / rate, 1000.0 * n / rate


def test_gaps_and_fades_have_the_lengths_asked(made):
    out_album, _, _ = made
    envelope, rate = _envelope(out_album / "01 - Intro.wav", 220.0)
    start_ms, length_ms = _fade_ms(envelope, rate, rising=True)
    assert start_ms == pytest.approx(0.0, abs=1.0) and length_ms == pytest.approx(500.0, abs=1.0)
    envelope, rate = _envelope(out_album / "03 - Outro_ the end.wav", 440.0)
    start_ms, length_ms = _fade_ms(envelope, rate, rising=False)
    assert length_ms == pytest.approx(2000.0, abs=1.0)
    assert start_ms + length_ms == pytest.approx(1000.0 * len(envelope) / rate, abs=1.0)
    # the album: track 1 (8 s), 2 s of silence, track 2 from 10 s crossfading over its last
    # second into track 3 (from 17 s to the end, 25 s)
    x, rate = sf.read(out_album / "album.wav", always_2d=True)
    ms = rate / 1000.0
    heard = np.flatnonzero(np.abs(x[:, 0]) > 1e-4)
    silence = np.diff(heard).argmax()
    assert heard[silence] / ms == pytest.approx(8000.0, abs=1.0)
    assert heard[silence + 1] / ms == pytest.approx(10000.0, abs=1.0)
    assert len(x) / ms == pytest.approx(25000.0, abs=1.0)
    cue = (out_album / "album.cue").read_text()
    assert 'FILE "album.wav" WAVE' in cue
    assert "INDEX 00 00:08:00" in cue and "INDEX 01 00:10:00" in cue  # the gap, then track 2
    assert "INDEX 01 00:17:00" in cue and "ISRC USS1Z2600002" in cue


def test_a_bad_track_is_named_and_nothing_is_written(tmp_path):
    tracks(tmp_path)
    (tmp_path / "t2.wav").write_bytes(b"RIFF....WAVEfmt not really")
    out = tmp_path / "out"
    done = run(album(tmp_path), out)
    assert done.returncode == 1
    assert "track 2" in done.stderr and "t2.wav" in done.stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('isrc = "US-S1Z-26-00001"', 'isrc = "US-S1Z-2600"'), "[[track]] 1 isrc: 'US-S1Z-2600'"),
        (("gap_s = 2.0", "gap_s = -1"), "[[track]] 2 gap_s: -1 is outside"),
        (('mode = "{mode}"', 'mode = "loud"'), "[album] mode: 'loud'"),
        (('title = "Intro"', 'titel = "Intro"'), "[[track]] 1: unknown key(s) titel"),
        (("formats = {formats}", 'formats = ["wma"]'), "[album] formats"),
        (("fade_out_s = 2.0", "crossfade_s = 1.0"), "[[track]] 3 crossfade_s: no next track"),
    ],
)
def test_album_file_errors_name_the_file_the_key_and_why(tmp_path, change, message):
    tracks(tmp_path)
    text = ALBUM.replace(*change)
    path = album(tmp_path, text=text)
    done = run(path, tmp_path / "out")
    assert done.returncode == 1
    assert f"{path}: {message}" in done.stderr, done.stderr


def test_an_encoders_overshoot_is_mastered_again_lower_and_reported(tmp_path):
    """Dense, limited material: MP3, AAC and Opus decode above a -1 dBTP ceiling the limiter
    held; the track is mastered again with the ceiling lowered by the overshoot."""
    rng = np.random.default_rng(3)
    frames = 10 * FS
    bursts = np.where(np.arange(frames) % (FS // 2) < FS // 20, 1.0, 0.25)  # drum-like hits
    x = 0.3 * rng.standard_normal((frames, 2)) * bursts[:, None]
    sf.write(tmp_path / "loud.wav", x, FS, subtype="FLOAT")
    path = tmp_path / "loud.toml"
    path.write_text('[album]\ntitle = "Loud"\nartist = "Limiter"\ntarget = "spotify"\n'
                    'formats = ["mp3", "aac", "opus"]\n[[track]]\nfile = "loud.wav"\n'
                    'title = "Brickwall"\n')  # fmt: skip
    done = run(path, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    deliveries = report["tracks"][0]["deliveries"]
    assert any(d["remastered"] for d in deliveries.values())  # at least one overshot
    for name, ext in (("mp3", "mp3"), ("aac", "m4a"), ("opus", "opus")):
        for remaster in deliveries[name]["remastered"]:
            assert remaster["true_peak_dbtp"] > CEILING_DBTP
            assert remaster["new_ceiling_dbtp"] < CEILING_DBTP
        out = tmp_path / "out" / f"01 - Brickwall.{ext}"
        assert true_peak_dbtp(out) <= CEILING_DBTP, name


def test_the_example_album_file_is_valid():
    from studiod.daemon.cmd_album import load_album

    example = load_album(REPO / "examples" / "album.toml")
    assert [t.title for t in example.tracks] == ["Intro", "City Lights", "Interlude", "Home"]
    assert example.tracks[0].isrc == "XXEXA2600001" and example.tracks[2].gain_db == -2.0
