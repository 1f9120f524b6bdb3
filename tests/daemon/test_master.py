"""``studiod master``: every preset lands on its target with the true peak at or below the
ceiling, measured independently (pyloudnorm, scipy's resample_poly, ffmpeg's ebur128); bit
depth and TPDF dither, fades, report, plot; errors never leave an output behind."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf

from studiod.daemon.cli import main
from studiod.daemon.offline import PRESETS
from studiod.dsp.loudness import measure
from tests.daemon.test_analyze import FS, ffmpeg_ebur128, programme, pyln_lufs

TOLERANCE_LU = 0.5  # issue #3
# scipy's resample_poly (Kaiser-windowed sinc) is a different interpolator from the limiter's
# detectors and the BS.1770 Annex 2 filter; the limiter's 0.05 dB safety margin covers the
# difference on programme material (measured: 0.044 dB below the ceiling at 4x and 8x), so
# no allowance is given.
RESAMPLE_TP_MARGIN_DB = 0.0


def resample_tp_dbtp(y: np.ndarray, factor: int = 4) -> float:
    up = ss.resample_poly(y.astype(np.float64), factor, 1, axis=0)
    return float(20 * np.log10(np.max(np.abs(up))))


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    """8 s of realistic stereo programme at about -20 dBFS RMS, as a 24-bit WAV."""
    path = tmp_path_factory.mktemp("master") / "song.wav"
    sf.write(path, programme(8.0), FS, subtype="PCM_24")
    return path


def master(*args) -> int:
    return main(["master", *map(str, args)])


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_hits_its_target(name, song, tmp_path, capsys):
    preset = PRESETS[name]
    out, report = tmp_path / "out.wav", tmp_path / "report.json"
    assert master(song, out, "--target", name, "--report", report) == 0, capsys.readouterr().err
    y, fs = sf.read(out, dtype="float64")
    info = sf.info(out)
    assert fs == (preset.samplerate or FS)  # cd: resampled to 44.1 kHz before the chain
    assert len(y) == math.ceil(8.0 * fs)
    assert info.subtype == {"16": "PCM_16", None: "PCM_24"}[preset.bits]
    assert pyln_lufs(y, fs) == pytest.approx(preset.integrated_lufs, abs=TOLERANCE_LU)
    m = measure(y, fs)
    assert m["integrated_lufs"] == pytest.approx(preset.integrated_lufs, abs=TOLERANCE_LU)
    assert m["true_peak_dbtp"] <= preset.ceiling_dbtp
    assert resample_tp_dbtp(y, 4) <= preset.ceiling_dbtp + RESAMPLE_TP_MARGIN_DB
    assert resample_tp_dbtp(y, 8) <= preset.ceiling_dbtp + RESAMPLE_TP_MARGIN_DB
    r = json.loads(report.read_text())
    assert r["target"]["preset"] == name
    assert r["target"]["integrated_lufs"] == preset.integrated_lufs
    assert r["output"]["integrated_lufs"] == pytest.approx(m["integrated_lufs"], abs=1e-6)
    assert r["output"]["true_peak_dbtp"] == pytest.approx(m["true_peak_dbtp"], abs=1e-6)
    assert r["output"]["dither"] is True
    assert r["chain"]["/master/limiter/ceiling"] == preset.ceiling_dbtp
    assert r["output"]["path"] == str(out)


def test_ffmpeg_agrees(song, tmp_path, capsys):
    out = tmp_path / "spotify.wav"
    assert master(song, out, "--target", "spotify") == 0, capsys.readouterr().err
    ref = ffmpeg_ebur128(out)
    assert ref["I"] == pytest.approx(-14.0, abs=TOLERANCE_LU)
    assert ref["TP"] <= -1.0 + 0.05  # ffmpeg prints 0.1 dB steps


def test_custom_target_chain_fades_and_dither(tmp_path, capsys):
    """--lufs/--ceiling with chain options, 16-bit output with fades. At the end of the file
    (0.5 s of digital silence after a 1 s fade-out) only the dither is left: TPDF of ±1 LSB
    rounded to the 16-bit grid gives 0 with probability 3/4 and ±1 LSB with 1/8 each."""
    x = np.concatenate([programme(8.0), np.zeros((FS // 2, 2), np.float32)])
    src = tmp_path / "in.wav"
    sf.write(src, x, FS, subtype="FLOAT")
    out, report = tmp_path / "out.wav", tmp_path / "r.json"
    code = master(
        src, out, "--lufs", -12, "--ceiling", -2, "--bits", "16",
        "--eq", "4:2:10000", "--eq", "1:-1", "--hpf", 30, "--multiband", "--mb", "1:-20:3",
        "--width", 1.2, "--limiter-release", 80, "--fade-in", 0.5, "--fade-out", 1.0,
        "--report", report,
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert sf.info(out).subtype == "PCM_16"
    y, _ = sf.read(out, dtype="int16")
    yf = y / 32768.0
    assert pyln_lufs(yf) == pytest.approx(-12.0, abs=TOLERANCE_LU)
    assert measure(yf, FS)["true_peak_dbtp"] <= -2.0
    assert resample_tp_dbtp(yf) <= -2.0 + RESAMPLE_TP_MARGIN_DB
    r = json.loads(report.read_text())
    assert r["target"]["preset"] == "custom"
    chain = r["chain"]
    assert chain["/master/eq/4/gain"] == 2.0 and chain["/master/eq/4/freq"] == 10000.0
    assert chain["/master/mb/on"] == 1.0 and chain["/master/mb/1/ratio"] == 3.0
    assert chain["/master/width"] == 1.2 and chain["/master/hpf/freq"] == 30.0
    assert chain["/master/dither/bits"] == "16"
    # the fade-in starts from silence: the first 1 ms is within a few LSB
    assert np.max(np.abs(y[: FS // 1000])) <= 3
    # the tail: dither only, with the TPDF probabilities
    tail = y[-int(0.4 * FS) :].reshape(-1)
    assert np.max(np.abs(tail)) <= 1
    p_zero = np.mean(tail == 0)
    assert p_zero == pytest.approx(0.75, abs=0.02)
    assert np.mean(tail == 1) == pytest.approx(0.125, abs=0.015)
    assert np.mean(tail == -1) == pytest.approx(0.125, abs=0.015)


def test_mono_and_float_output(tmp_path, capsys):
    src = tmp_path / "mono.wav"
    sf.write(src, programme(6.0)[:, 0], FS, subtype="PCM_16")
    out = tmp_path / "mono.flac"
    assert master(src, out, "--target", "apple", "--bits", "24") == 0, capsys.readouterr().err
    y, fs = sf.read(out, dtype="float64", always_2d=True)
    assert y.shape[1] == 1 and fs == FS
    assert pyln_lufs(y[:, 0]) == pytest.approx(-16.0, abs=TOLERANCE_LU)
    out32 = tmp_path / "float.wav"
    assert master(src, out32, "--target", "ebu-r128", "--bits", "32f") == 0
    assert sf.info(out32).subtype == "FLOAT"
    y32, _ = sf.read(out32, dtype="float64")
    assert pyln_lufs(y32) == pytest.approx(-23.0, abs=TOLERANCE_LU)
    assert measure(y32, FS)["true_peak_dbtp"] <= -1.0


def test_plot(song, tmp_path, capsys):
    out, png = tmp_path / "out.wav", tmp_path / "plot.png"
    assert master(song, out, "--target", "youtube", "--plot", png) == 0, capsys.readouterr().err
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_without_matplotlib(song, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "out.wav"
    assert master(song, out, "--target", "youtube", "--plot", tmp_path / "p.png") == 1
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert not out.exists()


def _no_temp_files(directory) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "vinyl"], "unknown preset 'vinyl'"),
        ([], "give a target"),
        (["--lufs", "-14", "--ceiling", "3"], "--ceiling 3 dBTP is out of range"),
        (["--target", "spotify", "--width", "5"], "/master/width: 5"),
        (["--target", "spotify", "--eq", "7:3"], "band must be 1…4"),
        (["--target", "spotify", "--set", "/master/eq/mode=cubic"], "'cubic' is not one of"),
        (["--target", "spotify", "--set", "/master/sat/drive=x"], "'x' is not a number"),
        (["--target", "spotify", "--set", "/master/dither/bits=16"], "use --bits"),
        (["--target", "spotify", "--set", "/master/nope=1"], "unknown address '/master/nope'"),
        (["--target", "spotify", "--fade-in", "5", "--fade-out", "5"], "longer than the audio"),
    ],
)
def test_bad_options(args, message, song, tmp_path, capsys):
    out = tmp_path / "out.wav"
    out.write_bytes(b"precious")
    assert master(song, out, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("studiod master: error:") and message in err, err
    assert out.read_bytes() == b"precious"
    assert _no_temp_files(tmp_path)


def test_bad_files(song, tmp_path, capsys):
    assert master(tmp_path / "nope.wav", tmp_path / "o.wav", "--target", "cd") == 1
    assert "nope.wav: no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"\x00" * 4000)
    assert master(junk, tmp_path / "o.wav", "--target", "cd") == 1
    assert "unsupported or unreadable audio format" in capsys.readouterr().err
    assert master(song, tmp_path / "o.mp3", "--target", "cd") == 1
    assert "unsupported output format '.mp3'" in capsys.readouterr().err
    assert master(song, tmp_path / "o.flac", "--target", "spotify", "--bits", "32f") == 1
    assert "FLAC cannot hold 32f-bit audio" in capsys.readouterr().err
    quad = tmp_path / "quad.wav"
    sf.write(quad, np.full((FS, 4), 0.1), FS)
    assert master(quad, tmp_path / "o.wav", "--target", "cd") == 1
    assert "mono or stereo" in capsys.readouterr().err
    rate = tmp_path / "22k.wav"
    sf.write(rate, programme(3.0, 22050), 22050)
    assert master(rate, tmp_path / "o.wav", "--target", "spotify") == 1
    assert "give --samplerate to resample" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_failure_keeps_existing_output(tmp_path, capsys):
    """A failure after reading (silent input) leaves an existing OUT as it was, no temp files."""
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros((FS * 2, 2)), FS)
    out = tmp_path / "out.wav"
    out.write_bytes(b"previous master")
    assert master(silent, out, "--target", "spotify") == 1
    assert "the input is silent" in capsys.readouterr().err
    assert out.read_bytes() == b"previous master"
    assert _no_temp_files(tmp_path)
