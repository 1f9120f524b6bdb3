"""3-band LR4 crossover against scipy.signal Butterworth designs (LR4 = Butterworth squared)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import signal

from studiod.dsp.crossover import Crossover3

LOW_HZ = 250.0
HIGH_HZ = 3000.0
N_IMPULSE = 1 << 15


def _impulse_bands(samplerate: float, lanes: int = 1):
    x = np.zeros((N_IMPULSE, lanes))
    x[0] = 1.0
    return Crossover3(LOW_HZ, HIGH_HZ, samplerate, lanes=lanes).process(x)


def _butter(btype: str, freq_hz: float, samplerate: float, freqs: np.ndarray) -> np.ndarray:
    sos = signal.butter(2, freq_hz, btype=btype, fs=samplerate, output="sos")
    return signal.sosfreqz(sos, worN=freqs, fs=samplerate)[1]


def _db(h: np.ndarray) -> np.ndarray:
    return 20.0 * np.log10(np.maximum(np.abs(h), 1e-300))


@pytest.mark.parametrize("samplerate", [44100.0, 48000.0, 96000.0])
def test_bands_match_squared_butterworth(samplerate):
    low, mid, high = (band[:, 0] for band in _impulse_bands(samplerate))
    freqs = np.fft.rfftfreq(N_IMPULSE, 1.0 / samplerate)
    lp1 = _butter("lowpass", LOW_HZ, samplerate, freqs)
    hp1 = _butter("highpass", LOW_HZ, samplerate, freqs)
    lp2 = _butter("lowpass", HIGH_HZ, samplerate, freqs)
    hp2 = _butter("highpass", HIGH_HZ, samplerate, freqs)
    expected = {
        "low": np.abs(lp1) ** 2,  # times the allpass of the second crossover: |AP| = 1
        "mid": np.abs(hp1 * lp2) ** 2,
        "high": np.abs(hp1 * hp2) ** 2,
    }
    for name, band in (("low", low), ("mid", mid), ("high", high)):
        got = np.abs(np.fft.rfft(band))
        ref = expected[name]
        audible = ref > 1e-3  # down to -60 dB compare in dB, below that absolutely
        np.testing.assert_allclose(_db(got[audible]), _db(ref[audible]), atol=0.01, err_msg=name)
        np.testing.assert_allclose(got[~audible], ref[~audible], atol=1e-5, err_msg=name)
    # The LR4 signature: each band is -6.02 dB (amplitude 1/2) at its crossover point.
    for band, freq_hz in ((low, LOW_HZ), (high, HIGH_HZ)):
        w = 2 * math.pi * freq_hz / samplerate
        h = np.sum(band * np.exp(-1j * w * np.arange(len(band))))
        assert abs(_db(np.array([h]))[0] - 20 * math.log10(0.5)) < 0.05


@pytest.mark.parametrize("samplerate", [44100.0, 48000.0, 96000.0])
def test_bands_sum_to_allpass(samplerate):
    low, mid, high = (band[:, 0] for band in _impulse_bands(samplerate))
    total = np.fft.rfft(low + mid + high)
    assert np.max(np.abs(_db(total))) < 0.01
    # And the phase is that of the two LR4 allpasses (LP^2 + HP^2 at each point), from scipy.
    freqs = np.fft.rfftfreq(N_IMPULSE, 1.0 / samplerate)
    ap = 1.0
    for freq_hz in (LOW_HZ, HIGH_HZ):
        ap = ap * (
            _butter("lowpass", freq_hz, samplerate, freqs) ** 2
            + _butter("highpass", freq_hz, samplerate, freqs) ** 2
        )
    np.testing.assert_allclose(total, ap, atol=1e-6)


def test_block_size_invariance_and_lanes():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5000, 3))
    whole = Crossover3(120.0, 5000.0, 48000.0, lanes=3).process(x)
    xo = Crossover3(120.0, 5000.0, 48000.0, lanes=3)
    parts = []
    edges = [0, 1, 8, 64, 128, 1000, 1001, 3333, 5000]
    for a, b in itertools.pairwise(edges):
        parts.append(xo.process(x[a:b]))
    for k in range(3):
        np.testing.assert_allclose(np.concatenate([p[k] for p in parts]), whole[k], atol=1e-9)
    # Lanes are independent: lane 1 alone gives the same bands.
    alone = Crossover3(120.0, 5000.0, 48000.0).process(x[:, 1])
    for k in range(3):
        np.testing.assert_allclose(alone[k], whole[k][:, 1], atol=1e-12)


def test_dtype_and_shape_preserved():
    x = np.random.default_rng(0).standard_normal(256).astype(np.float32)
    bands = Crossover3(200.0, 2000.0, 48000.0).process(x)
    for band in bands:
        assert band.dtype == np.float32 and band.shape == x.shape


@pytest.mark.parametrize(
    "low_hz, high_hz",
    [(math.nan, 2000.0), (200.0, math.nan), (2000.0, 200.0), (200.0, 200.0), (5.0, 200.0)],
)
def test_bad_frequencies_rejected(low_hz, high_hz):
    with pytest.raises(ValueError):
        Crossover3(low_hz, high_hz, 48000.0)


def test_frequency_above_nyquist_rejected():
    with pytest.raises(ValueError):
        Crossover3(200.0, 12000.0, 22050.0)
