"""Conformance of studiod.dsp.loudness: EBU Tech 3341 / 3342, ITU BS.2217, ffmpeg, pyloudnorm.

Tolerances are the standards': +-0.1 LU for M, S, I; +0.2/-0.4 dB for true peak; +-1 LU for
LRA. The meter is reset (a new meter) before every file, as Tech 3341 asks.
"""

from __future__ import annotations

import csv
import re
import subprocess

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from scipy import signal

from studiod.dsp.loudness import LoudnessMeter, measure

from .ebu_signals import (
    EBU_DIR,
    FS,
    TECH3341_INTEGRATED,
    TECH3342_CASES,
    chord_programme,
    filtered_noise_programme,
    tech3341_case6,
    tech3341_case9,
    tech3341_case11,
    tech3341_case14,
    tech3342_signal,
)

LU_TOL = 0.1
LRA_TOL = 1.0


def _expected_rows():
    with open(EBU_DIR / "expected_values.csv", newline="") as f:
        return list(csv.DictReader(f))


def _resolve(name: str):
    path = EBU_DIR / name
    if path.exists():
        return path
    # Case 13 files are spelt -24bit.wav or -24bit.wav.wav depending on the source.
    m = re.match(r"(.*seq-3341-13-\d+-24bit\.wav)", name)
    if m:
        hits = sorted(EBU_DIR.glob(m.group(1) + "*"))
        if hits:
            return hits[0]
    return path


ROWS = _expected_rows()


def _row_id(row):
    return f"{row['file'].split('/')[-1]}:{row['measure']}"


@pytest.mark.parametrize("row", ROWS, ids=[_row_id(r) for r in ROWS])
def test_ebu_itu_files(row):
    path = _resolve(row["file"])
    assert path.exists(), f"missing conformance file {path}"
    x, fs = sf.read(path, dtype="float64", always_2d=True)
    meter = LoudnessMeter(fs, x.shape[1])
    measure_name = row["measure"]
    lo = float(row["expected"]) - float(row["tol_minus"])
    hi = float(row["expected"]) + float(row["tol_plus"])
    if measure_name in ("M", "S"):
        # "M constant after 1 s, S constant after 3 s": every 100 ms reading from then on.
        settle_s = 1.0 if measure_name == "M" else 3.0
        hop = fs // 10
        readings = []
        for start in range(0, len(x), hop):
            meter.process(x[start : start + hop])
            if (start + hop) / fs >= settle_s - 1e-9:
                value = meter.momentary_lufs if measure_name == "M" else meter.shortterm_lufs
                readings.append(value)
        assert readings
        assert lo <= min(readings) and max(readings) <= hi, (min(readings), max(readings))
    else:
        meter.process(x)
        value = {
            "I": meter.integrated_lufs,
            "max_S": meter.shortterm_max_lufs,
            "max_M": meter.momentary_max_lufs,
            "max_true_peak": meter.true_peak_dbtp,
        }[measure_name]
        assert lo <= value <= hi, value


def test_every_conformance_file_is_covered():
    """Every WAV in the shared test set has an expected value that the test above checks."""
    covered = {_resolve(r["file"]).resolve() for r in ROWS}
    on_disk = {p.resolve() for p in EBU_DIR.rglob("*.wav")}
    assert on_disk == covered


# --- EBU Tech 3341 cases synthesised from Table 1 --------------------------------------------


@pytest.mark.parametrize(("case", "parts", "expected"), TECH3341_INTEGRATED, ids=lambda v: str(v))
def test_tech3341_integrated_cases(case, parts, expected):
    from .ebu_signals import sequence, stereo

    result = measure(stereo(sequence(parts)), FS)
    assert abs(result["integrated_lufs"] - expected) <= LU_TOL, (case, result)


@pytest.mark.parametrize(
    ("layout", "with_lfe", "lfe_level"),
    [("5.0", False, None), ("5.1", True, None), ("5.1", True, -3.0)],
    ids=["5.0", "5.1-silent-lfe", "5.1-loud-lfe"],
)
def test_tech3341_case6_multichannel(layout, with_lfe, lfe_level):
    x = tech3341_case6(with_lfe, lfe_level)
    result = measure(x, FS, layout=layout)
    assert abs(result["integrated_lufs"] - -23.0) <= LU_TOL, result["integrated_lufs"]


def test_tech3341_case9_shortterm_constant():
    x = tech3341_case9()
    meter = LoudnessMeter(FS, 2)
    hop = FS // 10
    readings = []
    for start in range(0, len(x), hop):
        meter.process(x[start : start + hop])
        if start + hop >= 3 * FS:
            readings.append(meter.shortterm_lufs)
    assert len(readings) > 500
    assert max(abs(r + 23.0) for r in readings) <= LU_TOL


@pytest.mark.parametrize(
    ("make", "segment_s", "kind"),
    [(tech3341_case11, 6.0, "S"), (tech3341_case14, 0.8, "M")],
    ids=["case11-maxS", "case14-maxM"],
)
def test_tech3341_successive_maxima(make, segment_s, kind):
    x = make()
    meter = LoudnessMeter(FS, 2)
    seg = round(segment_s * FS)
    for i in range(20):
        meter.process(x[i * seg : (i + 1) * seg])
        value = meter.shortterm_max_lufs if kind == "S" else meter.momentary_max_lufs
        assert abs(value - (-38.0 + i)) <= LU_TOL, (i, value)


@pytest.mark.parametrize(("case", "levels", "expected"), TECH3342_CASES, ids=lambda v: str(v))
def test_tech3342_loudness_range(case, levels, expected):
    result = measure(tech3342_signal(levels), FS)
    assert abs(result["loudness_range_lu"] - expected) <= LRA_TOL, (case, result)


# --- sample rates ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def programme_48k():
    # Band-limited below 3.4 kHz so that resampling to 8 kHz keeps the whole programme
    # (otherwise the 8 kHz version has less high-frequency energy and truly is quieter).
    noise = filtered_noise_programme(24.0, FS, seed=5, band_hz=(80.0, 3000.0))
    chord = chord_programme(24.0, FS, seed=6, top_hz=3000.0)
    return 0.7 * noise + 0.7 * chord


@pytest.mark.parametrize("samplerate", [8000, 22050, 44100, 96000, 192000])
def test_samplerate_independence(programme_48k, samplerate):
    from math import gcd

    ref = measure(programme_48k, FS)
    g = gcd(samplerate, FS)
    x = signal.resample_poly(programme_48k, samplerate // g, FS // g, axis=0)
    got = measure(x, samplerate)
    for key in ("integrated_lufs", "momentary_max_lufs", "shortterm_max_lufs"):
        assert abs(got[key] - ref[key]) <= LU_TOL, (key, got[key], ref[key])
    assert abs(got["loudness_range_lu"] - ref["loudness_range_lu"]) <= LRA_TOL


# --- cross-checks against ffmpeg and pyloudnorm on realistic material ------------------------


FFMPEG_EBUR128 = ("-af", "ebur128=peak=true", "-f", "null", "-")


def _ffmpeg_summary(path):
    proc = subprocess.run(
        [*("ffmpeg", "-nostats", "-hide_banner", "-i", str(path)), *FFMPEG_EBUR128],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = proc.stderr[proc.stderr.rindex("Summary:") :]

    def grab(label):
        m = re.search(label + r":\s+(-?[\d.]+|-inf)", summary)
        assert m, (label, summary)
        return float(m.group(1))

    return {"I": grab("I"), "LRA": grab("LRA"), "TP": grab("Peak")}


PROGRAMMES = {
    "noise-48k": (lambda: filtered_noise_programme(30.0, 48000, seed=11), 48000),
    "chord-48k": (lambda: chord_programme(30.0, 48000, seed=12), 48000),
    "noise-44k1": (lambda: filtered_noise_programme(30.0, 44100, seed=13), 44100),
    "mix-96k": (
        lambda: filtered_noise_programme(20.0, 96000, seed=14) + chord_programme(20.0, 96000),
        96000,
    ),
}


@pytest.mark.parametrize("name", list(PROGRAMMES))
def test_against_ffmpeg_and_pyloudnorm(name, tmp_path):
    make, fs = PROGRAMMES[name]
    x = make()
    path = tmp_path / f"{name}.wav"
    sf.write(path, x.astype(np.float32), fs, subtype="FLOAT")
    x32 = sf.read(path, dtype="float32")[0]  # exactly what ffmpeg reads
    ours = measure(x32, fs)
    ff = _ffmpeg_summary(path)
    pyln = pyloudnorm.Meter(fs, filter_class="DeMan").integrated_loudness(x32.astype(np.float64))
    # ffmpeg prints one decimal: its own rounding (<= 0.05) is inside the tolerance.
    assert abs(ours["integrated_lufs"] - ff["I"]) <= LU_TOL, (ours["integrated_lufs"], ff)
    assert abs(ours["integrated_lufs"] - pyln) <= LU_TOL, (ours["integrated_lufs"], pyln)
    assert abs(ours["loudness_range_lu"] - ff["LRA"]) <= LRA_TOL, (ours, ff)
    assert abs(ours["true_peak_dbtp"] - ff["TP"]) <= 0.3, (ours["true_peak_dbtp"], ff)
    # The material must actually have dynamics for the LRA comparison to mean something.
    assert ff["LRA"] >= 3.0
