"""Linear-phase EQ: magnitude vs scipy's sosfreqz of the biquads, linear phase, streaming."""

import numpy as np
import pytest
import scipy.signal as ss

from studiod.dsp.filters import HIGHPASS, HIGHSHELF, LOWPASS, LOWSHELF, PEAK, design_biquad
from studiod.dsp.linphase import LinearPhaseEQ, default_taps

RATES = (44100, 48000, 96000)

# Realistic master EQs (kind, freq_hz, q, gain_db); all are within the FIR's resolution.
CASCADES = {
    "master": [
        (LOWSHELF, 100.0, 0.707, 3.0),
        (PEAK, 60.0, 0.7, 4.0),
        (PEAK, 1000.0, 1.4, -2.0),
        (HIGHSHELF, 10000.0, 0.707, 2.0),
    ],
    "highpass_presence": [(HIGHPASS, 25.0, 0.707, 0.0), (PEAK, 3000.0, 2.0, 3.0)],
    "low_mid_cut_air_lowpass": [
        (PEAK, 80.0, 2.0, 6.0),
        (PEAK, 200.0, 1.0, -4.0),
        (LOWPASS, 18000.0, 0.707, 0.0),
    ],
}


def _coefs(spec, samplerate):
    coefs = np.zeros((len(spec), 5))
    for row, (kind, freq_hz, q, gain_db) in enumerate(spec):
        design_biquad(kind, freq_hz, q, gain_db, samplerate, coefs[row])
    return coefs


def _sos(coefs):
    # Independent of filters.to_sos: scipy's row layout written out here.
    return np.column_stack([coefs[:, :3], np.ones(len(coefs)), coefs[:, 3:]])


def _impulse_response(eq):
    x = np.zeros(eq.taps + 200)
    x[0] = 1.0
    return eq.process(x)


@pytest.mark.parametrize("samplerate", RATES)
@pytest.mark.parametrize("name", sorted(CASCADES))
def test_magnitude_matches_biquads(name, samplerate):
    coefs = _coefs(CASCADES[name], samplerate)
    eq = LinearPhaseEQ(coefs, samplerate)
    h = _impulse_response(eq)
    freqs = np.geomspace(30.0, 20000.0, 600)
    _, fir_response = ss.freqz(h, worN=freqs, fs=samplerate)
    _, iir_response = ss.sosfreqz(_sos(coefs), worN=freqs, fs=samplerate)
    error_db = 20 * np.log10(np.abs(fir_response)) - 20 * np.log10(np.abs(iir_response))
    assert np.max(np.abs(error_db)) < 0.1
    # Nothing after the FIR's last tap (FFT rounding only): the response is ``taps`` long.
    assert np.max(np.abs(h[eq.taps :])) < 1e-12


@pytest.mark.parametrize("samplerate", RATES)
def test_phase_is_linear_with_group_delay_equal_to_latency(samplerate):
    eq = LinearPhaseEQ(_coefs(CASCADES["master"], samplerate), samplerate)
    assert eq.taps == default_taps(samplerate) and eq.taps % 2 == 1
    assert eq.latency_samples == (eq.taps - 1) // 2
    h = _impulse_response(eq)[: eq.taps]
    np.testing.assert_allclose(h, h[::-1], atol=1e-15)  # symmetric about latency_samples
    freqs = np.geomspace(30.0, 20000.0, 50)
    _, delay = ss.group_delay((h, [1.0]), w=freqs, fs=samplerate)
    np.testing.assert_allclose(delay, eq.latency_samples, atol=1e-6)


def test_default_length_scales_with_rate():
    assert default_taps(48000) == 4095
    assert default_taps(96000) == 8191
    assert default_taps(44100) == 3761


def test_flat_eq_is_a_pure_delay():
    eq = LinearPhaseEQ(_coefs([(PEAK, 1000.0, 1.0, 0.0)], 48000), 48000, lanes=2)
    x = np.random.default_rng(1).standard_normal((6000, 2))
    y = eq.process(x)
    d = eq.latency_samples
    np.testing.assert_allclose(y[d:], x[:-d], atol=1e-12)
    np.testing.assert_allclose(y[:d], 0.0, atol=1e-12)


def test_streaming_equals_fftconvolve_of_the_fir():
    samplerate = 48000
    eq = LinearPhaseEQ(_coefs(CASCADES["master"], samplerate), samplerate, lanes=2)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((30000, 2))
    fir = _impulse_response(LinearPhaseEQ(eq.coefs, samplerate))[: eq.taps]
    expected = np.stack([ss.fftconvolve(x[:, lane], fir)[: len(x)] for lane in range(2)], 1)
    out = []
    start = 0
    while start < len(x):  # irregular calls, including 1-frame and long ones
        n = int(rng.integers(1, 700))
        out.append(eq.process(x[start : start + n]))
        start += n
    np.testing.assert_allclose(np.concatenate(out), expected, atol=1e-9)
    # And against a direct-form reference on a short stretch.
    direct = ss.lfilter(fir, [1.0], x[:3000, 0])
    np.testing.assert_allclose(np.concatenate(out)[:3000, 0], direct, atol=1e-9)


def test_block_size_invariance_and_float32():
    samplerate = 44100
    coefs = _coefs(CASCADES["highpass_presence"], samplerate)
    x = np.random.default_rng(3).standard_normal((20000, 2))
    whole = LinearPhaseEQ(coefs, samplerate, lanes=2).process(x)
    eq = LinearPhaseEQ(coefs, samplerate, lanes=2)
    blocks = np.concatenate([eq.process(x[i : i + 64]) for i in range(0, len(x), 64)])
    np.testing.assert_allclose(blocks, whole, atol=1e-9)
    y32 = LinearPhaseEQ(coefs, samplerate, lanes=2).process(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, whole, atol=1e-5)


def test_swapped_coefficients_act_on_the_whole_history():
    # After a swap and one partition, the output is the new filter on all past input.
    samplerate = 48000
    old = _coefs(CASCADES["master"], samplerate)
    new = _coefs(CASCADES["low_mid_cut_air_lowpass"], samplerate)
    x = np.random.default_rng(5).standard_normal(12000)
    eq = LinearPhaseEQ(old, samplerate)
    first = eq.process(x[:6400])
    eq.set_coefs(new)
    second = eq.process(x[6400:])
    reference_new = LinearPhaseEQ(new, samplerate).process(x)
    reference_old = LinearPhaseEQ(old, samplerate).process(x)
    np.testing.assert_allclose(first, reference_old[:6400], atol=1e-9)
    np.testing.assert_allclose(second[64:], reference_new[6400 + 64 :], atol=1e-9)


def test_validation():
    coefs = _coefs(CASCADES["master"], 48000)
    with pytest.raises(ValueError):
        LinearPhaseEQ(coefs, 48000, taps=4096)
    with pytest.raises(ValueError):
        LinearPhaseEQ(coefs, float("nan"))
    with pytest.raises(ValueError):
        LinearPhaseEQ(coefs, 48000, block_frames=48)
    bad = coefs.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        LinearPhaseEQ(bad, 48000)
    with pytest.raises(ValueError):
        LinearPhaseEQ(coefs, 48000, lanes=2).process(np.zeros((64, 1)))
