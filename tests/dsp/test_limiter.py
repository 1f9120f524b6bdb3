"""True-peak limiter and safety limiter: ceiling never exceeded, transparency, latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from studiod.dsp import limiter as lim_module
from studiod.dsp.limiter import (
    SafetyLimiter,
    TruePeakLimiter,
    design_limiter,
    limiter_bank,
    make_limiter_state,
)
from studiod.dsp.truepeak import TruePeakMeter

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
EBU_DIR = SHARED / "testdata" / "ebu" / "ebu-loudness-test-set-v05"


def _pink(rng, n, lanes):
    spec = np.fft.rfft(rng.standard_normal((n, lanes)), axis=0)
    f = np.arange(spec.shape[0], dtype=float)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f)[:, None], n=n, axis=0)


def _peak_to(x, db):
    return x * 10 ** (db / 20) / np.abs(x).max()


def _material(fs, ceiling, rng):
    n = int(fs * 0.6)
    t = np.arange(n)[:, None] / fs
    sig = {
        "white+20": _peak_to(rng.standard_normal((n, 2)), ceiling + 20),
        "pink+20": _peak_to(_pink(rng, n, 2), ceiling + 20),
        "square+10": _peak_to(np.sign(np.sin(2 * np.pi * 997 * t + [0.0, 0.3])), ceiling + 10),
    }
    for ratio in (0.45, 0.47, 0.49):
        phase = rng.uniform(0, 2 * np.pi, 2)
        sig[f"sine{ratio}fs"] = _peak_to(np.sin(2 * np.pi * ratio * fs * t + phase), ceiling + 12)
    bursts = np.zeros((n, 2))
    for _ in range(5):
        start = int(rng.uniform(0.02, 0.5) * fs)
        length = int(rng.uniform(0.0005, 0.03) * fs)
        level = 10 ** ((ceiling + rng.uniform(-6, 20)) / 20)
        bursts[start : start + length] += level * rng.standard_normal((length, 2))
    sig["bursts"] = bursts
    for case in range(15, 24):
        x, _ = sf.read(EBU_DIR / f"seq-3341-{case}-24bit.wav.wav")
        sig[f"ebu{case}+6"] = x[: int(0.25 * len(x))] * 10 ** (6 / 20)
    return sig


def _true_peaks_db(y):
    """Independent measurements: scipy polyphase resampling at 4x and 8x, Annex 2 meter."""
    r4 = np.abs(resample_poly(y, 4, 1, axis=0)).max()
    r8 = np.abs(resample_poly(y, 8, 1, axis=0)).max()
    meter = TruePeakMeter(48000, lanes=y.shape[1], factor=4)
    meter.process(y)
    return 20 * np.log10(r4), 20 * np.log10(r8), meter.overall_dbtp


@pytest.mark.parametrize("fs, ceiling", [(44100, -1.0), (48000, -0.3), (96000, -1.0)])
def test_output_true_peak_never_exceeds_ceiling(fs, ceiling):
    rng = np.random.default_rng(fs)
    for name, x in _material(fs, ceiling, rng).items():
        lim = TruePeakLimiter(fs, lanes=2, ceiling_dbtp=ceiling, release_ms=50.0)
        # Trailing silence lets the output end in silence, as the references assume.
        x = np.concatenate([x, np.zeros((lim.latency_samples + 256, 2))])
        y = lim.process(x)
        for ref, tp in zip(("4x", "8x", "annex2"), _true_peaks_db(y), strict=True):
            assert tp <= ceiling + 1e-9, f"{name} at {fs} Hz: {ref} {tp:.4f} dBTP"


def test_drive_pushes_quiet_material_into_the_ceiling():
    fs = 48000
    rng = np.random.default_rng(3)
    x = _peak_to(_pink(rng, fs // 2, 2), -12.0)
    lim = TruePeakLimiter(fs, ceiling_dbtp=-1.0, drive_db=18.0)
    y = lim.process(np.concatenate([x, np.zeros((lim.latency_samples + 256, 2))]))
    assert max(_true_peaks_db(y)) <= -1.0
    assert lim.gr_db[0] > 3.0
    # and the limiter gets close to the ceiling (not over-limiting): within 0.3 dB
    assert max(_true_peaks_db(y)) > -1.3


def test_transparent_below_ceiling_and_latency_exact():
    fs = 48000
    rng = np.random.default_rng(11)
    lim = TruePeakLimiter(fs, ceiling_dbtp=-1.0, lookahead_ms=2.0)
    lat = lim.latency_samples
    x = _peak_to(rng.standard_normal((fs // 4, 2)), -6.0)
    y = lim.process(x.copy())
    np.testing.assert_array_equal(y[lat:], x[:-lat])
    np.testing.assert_array_equal(y[:lat], 0.0)
    assert lim.gr_db[0] == 0.0
    # An impulse comes out exactly latency_samples later.
    imp = np.zeros((400, 2))
    imp[0] = 0.5
    lim.reset()
    out = lim.process(imp)
    assert np.flatnonzero(out[:, 0]).tolist() == [lat]


def test_gain_returns_to_exactly_one_after_release():
    fs = 48000
    rng = np.random.default_rng(12)
    lim = TruePeakLimiter(fs, ceiling_dbtp=-1.0, release_ms=20.0)
    loud = _peak_to(rng.standard_normal((fs // 10, 2)), 6.0)
    quiet = _peak_to(rng.standard_normal((fs, 2)), -10.0)
    x = np.concatenate([loud, quiet])
    y = lim.process(x.copy())
    lat = lim.latency_samples
    tail = slice(len(x) - fs // 2, len(x))  # 0.5 s = 25 release time constants later
    delayed = np.concatenate([np.zeros((lat, 2)), x])[: len(x)]
    np.testing.assert_array_equal(y[tail], delayed[tail])


def test_block_size_invariance():
    fs = 44100
    rng = np.random.default_rng(13)
    x = _peak_to(rng.standard_normal((fs // 2, 2)), 10.0)
    whole = TruePeakLimiter(fs, ceiling_dbtp=-0.5).process(x.copy())
    coefs = np.zeros(8)
    design_limiter(-0.5, 100.0, 2.0, fs, coefs, 0.0)
    state = make_limiter_state(coefs, 2)
    gr = np.zeros(1)
    parts = []
    for i in range(0, len(x), 64):
        block = np.ascontiguousarray(x[i : i + 64])
        limiter_bank(block, block, coefs, *state, gr)
        parts.append(block)
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-12)


def _irregular_blocks(n, rng):
    """Block lengths of 1 .. 700 frames (crossing tiles, skip runs and ring wraps)."""
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.choice([1, 3, 31, 32, 33, 64, 255, 256, 257, 700])))
    return np.cumsum(sizes)[:-1]


def _loud_and_quiet(fs, rng):
    """Hot noise, silence, quiet noise and isolated peaks: every path of the kernels."""
    parts = [
        _peak_to(rng.standard_normal((fs // 10, 2)), 8.0),
        np.zeros((fs // 20, 2)),
        _peak_to(rng.standard_normal((fs // 10, 2)), -20.0),
        _peak_to(_pink(rng, fs // 10, 2), -3.0),
    ]
    clicks = np.zeros((fs // 10, 2))
    clicks[rng.integers(0, len(clicks), 12), rng.integers(0, 2, 12)] = 1.5
    parts.append(clicks)
    return np.concatenate(parts)


def test_block_size_invariance_irregular_blocks():
    fs = 48000
    rng = np.random.default_rng(14)
    x = _loud_and_quiet(fs, rng)
    whole = TruePeakLimiter(fs, ceiling_dbtp=-1.0, release_ms=10.0).process(x.copy())
    lim = TruePeakLimiter(fs, ceiling_dbtp=-1.0, release_ms=10.0)
    parts = [lim.process(b.copy()) for b in np.split(x, _irregular_blocks(len(x), rng))]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-12)
    safe_whole = SafetyLimiter(fs, threshold_db=-1.0, release_ms=5.0).process(x.copy())
    safe = SafetyLimiter(fs, threshold_db=-1.0, release_ms=5.0)
    parts = [safe.process(b.copy()) for b in np.split(x, _irregular_blocks(len(x), rng))]
    np.testing.assert_allclose(np.concatenate(parts), safe_whole, rtol=0, atol=1e-12)


def test_detector_folded_tables_reproduce_the_interpolators():
    """The detector evaluates each pair of mirrored phases folded (see the module docstring):
    a + b and a - b must give back the taps of both phases of each filter (to rounding)."""
    from studiod.dsp.truepeak import design_interpolator, design_sinc_interpolator

    for a, b, mid, span, beta in (
        (lim_module._DET_A, lim_module._DET_B, lim_module._DET_MID, 32, 6.0),
        (lim_module._SHORT_A, lim_module._SHORT_B, lim_module._SHORT_MID, 20, 5.0),
    ):
        h = design_sinc_interpolator(8, span, beta)
        for row, p in enumerate((1, 2, 3)):
            np.testing.assert_allclose(a[row] + b[row], h[p, : span // 2], rtol=0, atol=1e-15)
            np.testing.assert_allclose(a[row] - b[row], h[8 - p, : span // 2], rtol=0, atol=1e-15)
        np.testing.assert_array_equal(mid, h[4, : span // 2])
    h = design_interpolator(4)
    for row, p in enumerate((0, 1)):
        np.testing.assert_allclose(
            lim_module._ANN_A[row] + lim_module._ANN_B[row], h[p, :6], rtol=0, atol=1e-15
        )
        np.testing.assert_allclose(
            lim_module._ANN_A[row] - lim_module._ANN_B[row], h[3 - p, :6], rtol=0, atol=1e-15
        )
    # The skip bound is the largest sum of |taps| of any evaluated point.
    largest = max(np.abs(design_sinc_interpolator(8, 32, 6.0)).sum(axis=1).max(), 1.0)
    assert largest <= lim_module._PEAK_BOUND <= largest * (1 + 1e-8)


def test_gain_computer_shortcuts_match_step_by_step():
    """The kernels' shortcuts (the run loop with its at-rest skip, and _gain_skip) give
    what one _gain_step per interval gives (to rounding; unity exactly where it is unity),
    releases and ramp tails included."""
    rng = np.random.default_rng(16)
    segments = []
    for _ in range(12):
        length = int(rng.integers(1, 600))
        level = rng.choice([0.0, 0.1, 2.0])
        segments.append(np.abs(rng.standard_normal(length)) * level)
    a = np.concatenate(segments)
    threshold, release = 0.5, 0.2
    r = np.where(a > threshold, threshold / np.maximum(a, 1e-300), 1.0)

    def fresh():
        g = np.zeros(lim_module._gain_size(40, 8))
        lim_module._init_gain(g, 40, 8)
        return g

    g = fresh()
    reference = np.array([lim_module._gain_step(g, v, release) for v in r])
    assert reference.min() < 0.5 and (reference == 1.0).sum() > 1000
    g = fresh()
    run = a.copy()
    for chunk in np.split(np.arange(len(a)), _irregular_blocks(len(a), rng)):
        view = run[chunk[0] : chunk[-1] + 1]
        lim_module._gain_run(g, view, len(view), threshold, release)
    # fast-math contraction may round a sum differently in the two loops (1 ulp)
    np.testing.assert_allclose(run, reference, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(run == 1.0, reference == 1.0)
    g = fresh()
    skipped = []
    for v in r:
        if v == 1.0 and lim_module._gain_at_rest(g):
            lim_module._gain_skip(g, 1)
            skipped.append(1.0)
        else:
            skipped.append(lim_module._gain_step(g, v, release))
    np.testing.assert_allclose(skipped, reference, rtol=0, atol=1e-12)


def test_quiet_and_silent_input_pass_bit_exact():
    """Material far below the ceiling (the detector's bound test skips it) and digital
    silence come out as the delayed input, bit for bit."""
    fs = 48000
    rng = np.random.default_rng(15)
    x = np.concatenate([_peak_to(rng.standard_normal((fs // 4, 2)), -20.0), np.zeros((fs // 8, 2))])
    lim = TruePeakLimiter(fs, ceiling_dbtp=-1.0)
    lat = lim.latency_samples
    y = lim.process(x.copy())
    np.testing.assert_array_equal(y[lat:], x[:-lat])
    assert lim.gr_db[0] == 0.0


def test_limiter_validation_and_float32():
    with pytest.raises(ValueError):
        TruePeakLimiter(48000, ceiling_dbtp=1.0)
    with pytest.raises(ValueError):
        TruePeakLimiter(48000, release_ms=float("nan"))
    lim = TruePeakLimiter(48000, lanes=1)
    y = lim.process(np.ones(1000, dtype=np.float32))
    assert y.dtype == np.float32 and y.shape == (1000,)
    x = np.zeros((100, 2))
    x[5, 0] = np.inf
    lim = TruePeakLimiter(48000)
    assert np.isfinite(lim.process(x)).all() and lim.nonfinite_count == 1


# --- safety limiter --------------------------------------------------------------------


def test_safety_never_exceeds_threshold_per_lane():
    fs = 48000
    rng = np.random.default_rng(21)
    thresholds = np.array([-0.5, -6.0, -20.0])
    safe = SafetyLimiter(fs, lanes=3, threshold_db=thresholds, lookahead_ms=0.5)
    x = rng.standard_normal((fs, 3)) * 10 ** (rng.uniform(-30, 30, (fs, 1)) / 20)
    for dtype in (np.float64, np.float32):
        y = safe.process(x.astype(dtype))
        assert np.all(np.abs(y) <= (10 ** (thresholds / 20)).astype(dtype))


def test_safety_transparent_below_threshold_and_latency():
    fs = 48000
    safe = SafetyLimiter(fs, lanes=2, threshold_db=-1.0, lookahead_ms=1.0)
    lat = safe.latency_samples
    assert lat == 48
    x = _peak_to(np.random.default_rng(22).standard_normal((4000, 2)), -3.0)
    y = safe.process(x.copy())
    np.testing.assert_array_equal(y[lat:], x[:-lat])


def test_safety_nan_gives_silence_and_counts():
    fs = 48000
    safe = SafetyLimiter(fs, lanes=2, threshold_db=-1.0, lookahead_ms=0.5)
    lat = safe.latency_samples
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(4800) / fs)[:, None] * np.ones(2)
    x[1000:1100, 0] = np.nan
    x[2000, 0] = np.inf
    y = safe.process(x)
    assert np.isfinite(y).all()
    assert safe.nonfinite.tolist() == [101, 0]
    np.testing.assert_array_equal(y[1000 + lat : 1100 + lat, 0], 0.0)
    assert y[2000 + lat, 0] == 0.0
    # the other lane is untouched
    np.testing.assert_array_equal(y[lat:, 1], x[:-lat, 1])
    # continuous NaN -> continuous silence
    y = safe.process(np.full((1000, 2), np.nan))
    np.testing.assert_array_equal(y[lat:], 0.0)


def test_safety_block_size_invariance():
    fs = 44100
    x = np.random.default_rng(23).standard_normal((fs // 4, 2)) * 2.0
    whole = SafetyLimiter(fs, lanes=2, threshold_db=-3.0).process(x.copy())
    safe = SafetyLimiter(fs, lanes=2, threshold_db=-3.0)
    parts = [safe.process(x[i : i + 64].copy()) for i in range(0, len(x), 64)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-12)
