"""TPDF dither and noise shaping: grid, error statistics, no noise modulation, shaping."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import welch

from studiod.dsp.dither import SHAPINGS, Dither, dither_bank, shaping_gain_db

FS = 48000


def _sine(level_db, freq_hz, n, fs=FS):
    return 10 ** (level_db / 20) * np.sin(2 * np.pi * freq_hz * np.arange(n) / fs)


@pytest.mark.parametrize("bits", [16, 24])
@pytest.mark.parametrize("shaping", sorted(SHAPINGS))
def test_output_on_grid_and_clamped(bits, shaping):
    rng = np.random.default_rng(bits)
    x = rng.uniform(-1.3, 1.3, (20000, 2))
    y = Dither(bits, shaping, lanes=2, seed=1).process(x)
    k = y * 2.0 ** (bits - 1)
    np.testing.assert_array_equal(k, np.round(k))
    assert k.min() >= -(2 ** (bits - 1)) and k.max() <= 2 ** (bits - 1) - 1
    assert np.isfinite(y).all()


def test_tpdf_error_variance_and_no_noise_modulation():
    # Theory (Lipshitz, Wannamaker, Vanderkooy 1992): TPDF total error variance is Δ²/4,
    # zero mean, independent of the signal.
    n = 4 * FS
    lsb = 2.0**-15
    stats = []
    for x in (np.zeros(n), _sine(-60.0, 997.0, n), _sine(-20.0, 997.0, n)):
        err = (Dither(16, "none", seed=7).process(x) - x) / lsb
        stats.append((err.mean(), err.var()))
        assert err.var() == pytest.approx(0.25, rel=0.05)
        assert abs(err.mean()) < 0.01
    means, variances = np.array(stats).T
    assert np.ptp(variances) < 0.01  # 4 % of Δ²/4 between silence and signals
    assert np.ptp(means) < 0.01


def test_no_harmonics_of_a_low_level_sine():
    n = 1 << 18
    f0 = 64 * FS / 4096  # on a bin centre of the 4096-point Welch grid: 750 Hz
    x = _sine(-90.0, f0, n)  # about 1 LSB peak at 16 bit
    f, p_dith = welch(Dither(16, "none", seed=3).process(x) - x, FS, nperseg=4096)
    _, p_round = welch(np.round(x * 2**15) / 2**15 - x, FS, nperseg=4096)
    floor = np.median(p_dith)
    harmonics = [np.argmin(np.abs(f - h * f0)) for h in range(2, 10)]
    # undithered rounding of this sine is all harmonics (the control) ...
    assert max(p_round[harmonics]) > 100 * floor
    # ... dithered, the error spectrum is flat: no harmonic bin stands out of the noise
    assert max(p_dith[harmonics]) < 2.0 * floor


@pytest.mark.parametrize("shaping", ["wannamaker3", "lipshitz5", "wannamaker9"])
def test_noise_shaping_moves_error_out_of_1_to_5_khz(shaping):
    n = 4 * FS
    x = _sine(-40.0, 440.0, n)
    f, p_flat = welch(Dither(16, "none", seed=5).process(x) - x, FS, nperseg=4096)
    _, p_shaped = welch(Dither(16, shaping, seed=5).process(x) - x, FS, nperseg=4096)
    band = (f >= 1000) & (f <= 5000)
    measured = 10 * np.log10(p_shaped[band].mean() / p_flat[band].mean())
    # closed form |1 - H(e^jw)|² of the published coefficients
    expected = shaping_gain_db(shaping, (1000.0, 5000.0), FS)
    assert expected < -15.0
    assert measured == pytest.approx(expected, abs=0.5)


def test_reproducible_and_block_size_invariant():
    rng = np.random.default_rng(9)
    x = rng.uniform(-0.5, 0.5, (10000, 2))
    whole = Dither(24, "wannamaker9", lanes=2, seed=4).process(x)
    d = Dither(24, "wannamaker9", lanes=2, seed=4)
    parts = [d.process(x[i : i + 64]) for i in range(0, len(x), 64)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(Dither(24, "wannamaker9", lanes=2, seed=4).process(x), whole)
    assert not np.array_equal(Dither(24, "wannamaker9", lanes=2, seed=5).process(x), whole)
    # the lanes get independent streams
    e = Dither(16, "none", lanes=2, seed=1).process(np.zeros((50000, 2)))
    assert abs(np.corrcoef(e.T)[0, 1]) < 0.02
    # kernel directly, in place, and float32 in/out
    d = Dither(16)
    blk = np.ascontiguousarray(x[:64, :1])
    dither_bank(blk, blk, d.coefs, d.rng, d.err)
    assert Dither(16).process(x[:, 0].astype(np.float32)).dtype == np.float32


def test_nan_input_is_silence_and_does_not_poison_the_feedback():
    x = np.zeros(1000)
    x[10] = np.nan
    d = Dither(16, "wannamaker9")
    y = d.process(x)
    assert np.isfinite(y).all() and abs(y[10]) <= 2.0**-15 * 2
    assert np.abs(d.process(np.zeros(1000))).max() <= 2.0**-15 * 40


def test_validation():
    with pytest.raises(ValueError):
        Dither(20)
    with pytest.raises(ValueError):
        Dither(16, "bogus")
