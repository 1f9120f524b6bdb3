"""True-peak meter: BS.1770-4 Annex 2 conformance on the EBU Tech 3341 files, scipy checks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import freqz, lfilter

from studiod.dsp.truepeak import (
    TruePeakMeter,
    design_interpolator,
    interpolated_peak_bank,
    make_truepeak_scratch,
    make_truepeak_state,
    oversampling_factor,
    truepeak_bank,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
EBU = SHARED / "testdata" / "ebu"
# README.md of the EBU test data, "True peak, computed with the BS.1770 Annex 2 48-tap FIR
# exactly as printed in the standard" (interpolated points only).
README_TP = {
    15: -6.198,
    16: -5.956,
    17: -6.295,
    18: -6.007,
    19: 3.054,
    20: -0.147,
    21: -0.079,
    22: -0.204,
    23: -0.079,
}


def _expected():
    rows = {}
    with open(EBU / "expected_values.csv") as f:
        for row in csv.DictReader(f):
            if row["measure"] == "max_true_peak":
                rows[int(row["tech3341_case"])] = row
    return rows


def _ebu(case):
    x, fs = sf.read(EBU / "ebu-loudness-test-set-v05" / f"seq-3341-{case}-24bit.wav.wav")
    return x, fs


def test_oversampling_factor():
    assert [oversampling_factor(fs) for fs in (32000, 44100, 48000, 88200, 96000)] == [
        4,
        4,
        4,
        2,
        2,
    ]
    assert oversampling_factor(176400) == 1 and oversampling_factor(192000) == 1
    with pytest.raises(ValueError):
        oversampling_factor(float("nan"))


def test_annex2_table_is_a_symmetric_48_tap_prototype():
    coefs = design_interpolator(4)
    assert coefs.shape == (4, 12)
    proto = coefs.T.reshape(-1)  # interleave the phases back into the 48-tap prototype
    np.testing.assert_array_equal(proto, proto[::-1])


@pytest.mark.parametrize("case", sorted(README_TP))
def test_ebu_true_peak_cases(case):
    x, fs = _ebu(case)
    strict = TruePeakMeter(fs, lanes=2, include_samples=False)
    strict.process(x)
    # Annex 2 as printed: matches the README's independent computation.
    assert abs(strict.overall_dbtp - README_TP[case]) <= 0.005
    meter = TruePeakMeter(fs, lanes=2)
    meter.process(x)
    row = _expected()[case]
    expected = float(row["expected"])
    assert expected - float(row["tol_minus"]) <= meter.overall_dbtp
    assert meter.overall_dbtp <= expected + float(row["tol_plus"])
    # With the original samples included the reading is max(Annex 2, sample peak).
    sample_peak = 20 * np.log10(np.abs(x).max())
    assert meter.overall_dbtp == pytest.approx(max(README_TP[case], sample_peak), abs=0.005)


def test_matches_scipy_lfilter_and_is_block_size_invariant():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5000, 3))
    coefs = design_interpolator(4)
    ref = np.max(
        [np.abs(lfilter(c, 1.0, x, axis=0)).max(axis=0) for c in coefs] + [np.abs(x).max(0)],
        axis=0,
    )
    whole = TruePeakMeter(48000, lanes=3)
    whole.process(x)
    np.testing.assert_allclose(whole.peak, ref, rtol=1e-12)
    split = TruePeakMeter(48000, lanes=3)
    edges = np.sort(rng.choice(np.arange(1, 5000), 40, replace=False))
    for block in np.split(x, edges):
        split.process(block)
    np.testing.assert_allclose(split.peak, whole.peak, rtol=0, atol=1e-12)
    # 64-frame blocks through the kernel directly, as the engine calls it
    history, peak = np.zeros((11, 3)), np.zeros(3)
    for i in range(0, 5000, 64):
        truepeak_bank(np.ascontiguousarray(x[i : i + 64]), coefs, history, peak)
    np.testing.assert_allclose(peak, whole.peak, rtol=0, atol=1e-12)


def test_sinc_interpolator_for_2x_is_flat_where_programme_lives():
    coefs = design_interpolator(2)
    np.testing.assert_array_equal(coefs[0], np.eye(1, coefs.shape[1], coefs.shape[1] // 2)[0])
    freqs = np.linspace(0.001, 0.2, 200) * 2 * np.pi
    for c in coefs:
        mag_db = 20 * np.log10(np.abs(freqz(c, 1.0, freqs)[1]))
        assert np.abs(mag_db).max() < 0.015


@pytest.mark.parametrize("fs", [44100, 96000])
def test_sine_true_peak_closed_form(fs):
    # A sine's true peak is its amplitude (closed form), whatever its phase to the samples.
    rng = np.random.default_rng(fs)
    t = np.arange(fs // 2) / fs
    for freq in (997.0, 5000.0, 0.23 * fs):
        amp = 0.5
        x = amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
        meter = TruePeakMeter(fs)
        meter.process(x[:2000].astype(np.float32))  # the switch-on transient rings
        meter.peak[:] = 0.0
        meter.process(x[2000:].astype(np.float32))
        assert meter.overall_dbtp == pytest.approx(20 * np.log10(amp), abs=0.25)


def test_nan_is_sticky_and_reset_clears():
    meter = TruePeakMeter(48000, lanes=2)
    x = np.zeros((100, 2))
    x[10, 1] = np.nan
    meter.process(x)
    assert np.isnan(meter.peak[1]) and meter.peak[0] == 0.0
    meter.process(np.full((10, 2), 0.5))
    assert np.isnan(meter.peak[1])
    meter.reset()
    meter.process(np.full((10, 2), 0.5))
    assert np.all(meter.peak >= 0.5)
    assert meter.peak_dbtp.shape == (2,)


# --- the vectorised scan (scratch buffer) against scipy and the scalar path -------------------


@pytest.mark.parametrize("factor", [4, 2, 1, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiled_scan_matches_scipy_for_every_factor(factor, dtype):
    rng = np.random.default_rng(factor)
    x = rng.standard_normal((3001, 3)).astype(dtype)
    coefs = design_interpolator(factor)
    xd = x.astype(np.float64)
    points = [np.abs(lfilter(c, 1.0, xd, axis=0)).max(axis=0) for c in coefs]
    ref_all = np.max([*points, np.abs(xd).max(0)], axis=0)
    ref_points = np.max(points, axis=0)
    # small tiles (37 frames) so that tile edges, block edges and history all get exercised
    scratch = make_truepeak_scratch(coefs, lanes=3, tile_frames=37)
    edges = np.sort(rng.choice(np.arange(1, len(x)), 25, replace=False))
    for kernel_fn, ref in ((truepeak_bank, ref_all), (interpolated_peak_bank, ref_points)):
        history, peak = make_truepeak_state(coefs, 3)
        for block in np.split(x, edges):
            kernel_fn(np.ascontiguousarray(block), coefs, history, peak, scratch)
        np.testing.assert_allclose(peak, ref, rtol=1e-12)
        # the scalar path (no scratch) gives the same peaks and the same history
        history2, peak2 = make_truepeak_state(coefs, 3)
        kernel_fn(x, coefs, history2, peak2)
        np.testing.assert_allclose(peak2, peak, rtol=1e-12)
        np.testing.assert_array_equal(history2, history)
        np.testing.assert_array_equal(history, xd[len(xd) - history.shape[0] :])


def test_tiled_scan_nan_is_sticky_and_tiny_scratch_falls_back():
    coefs = design_interpolator(4)
    x = np.random.default_rng(9).standard_normal((500, 2))
    x[123, 0] = np.nan
    history, peak = make_truepeak_state(coefs, 2)
    truepeak_bank(x, coefs, history, peak, make_truepeak_scratch(coefs, lanes=2, tile_frames=64))
    assert np.isnan(peak[0]) and np.isfinite(peak[1])
    # a scratch too small for one tile still gives the right answer (scalar path)
    history2, peak2 = make_truepeak_state(coefs, 2)
    truepeak_bank(x, coefs, history2, peak2, np.zeros(5))
    assert np.isnan(peak2[0]) and peak2[1] == pytest.approx(peak[1], rel=1e-12)
