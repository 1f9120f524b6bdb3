"""Stereo width (M/S law, LR4 mono bass) and the oversampled soft saturator."""

import itertools

import numpy as np
import pytest
import scipy.signal as ss

from studiod.dsp.stereo import HALFBAND, Saturator, StereoWidth

RNG_SEED = 11


def _stereo_noise(n=8000, seed=RNG_SEED):
    return np.random.default_rng(seed).standard_normal((n, 2)) * 0.3


# --- width ------------------------------------------------------------------------------


def test_width_zero_is_the_documented_mono_sum():
    x = _stereo_noise()
    y = StereoWidth(width=0.0).process(x)
    mono = (x[:, 0] + x[:, 1]) / 2
    np.testing.assert_allclose(y[:, 0], mono, atol=1e-15)
    np.testing.assert_array_equal(y[:, 0], y[:, 1])


def test_width_one_is_identity_bit_for_bit():
    x = _stereo_noise()
    np.testing.assert_array_equal(StereoWidth(width=1.0).process(x), x)
    x32 = x.astype(np.float32)
    y32 = StereoWidth(width=1.0).process(x32)
    assert y32.dtype == np.float32
    np.testing.assert_array_equal(y32, x32)


@pytest.mark.parametrize("width", [0.5, 1.5, 2.0])
def test_width_scales_side_and_keeps_mid(width):
    x = _stereo_noise()
    y = StereoWidth(width=width).process(x)
    np.testing.assert_allclose(y[:, 0] + y[:, 1], x[:, 0] + x[:, 1], atol=1e-14)
    np.testing.assert_allclose(y[:, 0] - y[:, 1], width * (x[:, 0] - x[:, 1]), atol=1e-14)


@pytest.mark.parametrize("samplerate", [44100, 48000, 96000])
@pytest.mark.parametrize("freq_hz", [20.0, 120.0, 500.0])
def test_mono_below_is_an_lr4_on_the_side_only(freq_hz, samplerate):
    n = 1 << 15
    # Pure side impulse: (L - R) / 2 is a unit impulse, the mid is zero.
    side_in = np.zeros((n, 2))
    side_in[0] = [1.0, -1.0]
    out = StereoWidth(width=1.0, mono_below_hz=freq_hz, samplerate=samplerate).process(side_in)
    side_ir = (out[:, 0] - out[:, 1]) / 2
    np.testing.assert_allclose(out[:, 0] + out[:, 1], 0.0, atol=1e-15)  # no leak into mid
    # Reference: scipy's 2nd-order Butterworth high-pass, squared (Linkwitz-Riley 4).
    butter = ss.butter(2, freq_hz, "highpass", fs=samplerate, output="sos")
    freqs = np.geomspace(10.0, 20000.0, 400)
    _, ref = ss.sosfreqz(np.vstack([butter, butter]), worN=freqs, fs=samplerate)
    _, got = ss.freqz(side_ir, worN=freqs, fs=samplerate)
    ref_db = 20 * np.log10(np.abs(ref))
    got_db = 20 * np.log10(np.abs(got))
    audible = ref_db > -100
    np.testing.assert_allclose(got_db[audible], ref_db[audible], atol=0.01)
    # LR4 identity: -6.02 dB at the crossover, 24 dB/octave far below it.
    _, at_f = ss.freqz(side_ir, worN=[freq_hz, freq_hz / 8, freq_hz / 16], fs=samplerate)
    assert abs(20 * np.log10(abs(at_f[0])) + 6.02) < 0.05
    assert abs(20 * np.log10(abs(at_f[2] / at_f[1])) + 24.0) < 0.5
    # Mid untouched: a pure mid impulse comes out unchanged.
    mid_in = np.zeros((n, 2))
    mid_in[0] = [1.0, 1.0]
    out = StereoWidth(width=1.7, mono_below_hz=freq_hz, samplerate=samplerate).process(mid_in)
    np.testing.assert_allclose(out, mid_in, atol=1e-15)


def test_mono_below_removes_side_energy_below_the_frequency():
    samplerate = 48000
    t = np.arange(samplerate) / samplerate
    low = np.sin(2 * np.pi * 40.0 * t)
    high = np.sin(2 * np.pi * 2000.0 * t)
    x = np.stack([low + high, -low + high], 1) * 0.25  # 40 Hz only in the side
    y = StereoWidth(width=1.0, mono_below_hz=160.0).process(x)[samplerate // 2 :]
    side = (y[:, 0] - y[:, 1]) / 2
    mid = (y[:, 0] + y[:, 1]) / 2
    # LR4 at 160 Hz: 40 Hz is two octaves below, 10^(-48/20) of the side level or less.
    assert np.sqrt(np.mean(side**2)) < 0.25 * 10 ** (-47 / 20) / np.sqrt(2)
    np.testing.assert_allclose(mid, 0.25 * high[samplerate // 2 :], atol=1e-12)


def test_width_block_size_invariance():
    x = _stereo_noise(10000)
    whole = StereoWidth(1.4, 90.0).process(x)
    w = StereoWidth(1.4, 90.0)
    parts = np.concatenate([w.process(x[i : i + 64]) for i in range(0, len(x), 64)])
    np.testing.assert_allclose(parts, whole, atol=1e-12)
    w = StereoWidth(1.4, 90.0)
    cuts = [0, 1, 77, 500, 501, 4096, 10000]
    parts = np.concatenate([w.process(x[a:b]) for a, b in itertools.pairwise(cuts)])
    np.testing.assert_allclose(parts, whole, atol=1e-12)


def test_width_validation():
    for kwargs in ({"width": 2.1}, {"width": float("nan")}, {"mono_below_hz": 10.0}):
        with pytest.raises(ValueError):
            StereoWidth(**kwargs)
    with pytest.raises(ValueError):
        StereoWidth().process(np.zeros((10, 3)))


# --- saturation -------------------------------------------------------------------------


def _closed_form(x, drive_db):
    g = 10.0 ** (drive_db / 20.0)
    return np.tanh(g * x) / g


@pytest.mark.parametrize("drive_db", [0.0, 6.0, 12.0, 24.0])
def test_static_curve_matches_tanh(drive_db):
    levels = np.linspace(-2.0, 2.0, 41)
    hold = 400  # > latency (69) + the halfband's settling
    x = np.repeat(levels, hold)
    sat = Saturator(drive_db, mix=1.0, lanes=1)
    y = sat.process(x)
    settled = y[np.arange(len(levels)) * hold + hold - 1]
    np.testing.assert_allclose(settled, _closed_form(levels, drive_db), atol=1e-12)
    # Half mix: the average of dry and wet, time-aligned.
    y = Saturator(drive_db, mix=0.5, lanes=1).process(x)
    settled = y[np.arange(len(levels)) * hold + hold - 1]
    np.testing.assert_allclose(
        settled, 0.5 * levels + 0.5 * _closed_form(levels, drive_db), 0, 1e-12
    )


def test_small_signals_have_unity_gain_and_dry_is_delayed_exactly():
    samplerate = 48000
    t = np.arange(9600) / samplerate
    for freq_hz in (100.0, 1000.0, 10000.0):
        x = 1e-4 * np.sin(2 * np.pi * freq_hz * t)
        sat = Saturator(24.0, mix=1.0, lanes=1)
        y = sat.process(x)[4800:]
        ref = x[4800 - sat.latency_samples : len(x) - sat.latency_samples]
        gain_db = 20 * np.log10(np.sqrt(np.mean(y**2)) / np.sqrt(np.mean(ref**2)))
        assert abs(gain_db) < 0.001
        np.testing.assert_allclose(y, ref, atol=1e-4 * 1e-3)  # aligned: delay is exact
    x = np.random.default_rng(2).standard_normal((5000, 2))
    sat = Saturator(24.0, mix=0.0)
    y = sat.process(x)
    np.testing.assert_allclose(y[sat.latency_samples :], x[: -sat.latency_samples], atol=1e-15)


def _thd(y, freq_hz, samplerate):
    spectrum = np.abs(np.fft.rfft(y * np.blackman(len(y))))
    bin_hz = samplerate / len(y)

    def peak(f):
        k = round(f / bin_hz)
        return spectrum[k - 3 : k + 4].max()

    harmonics = [peak(k * freq_hz) for k in range(2, 10) if k * freq_hz < samplerate / 2]
    return np.sqrt(np.sum(np.square(harmonics))) / peak(freq_hz)


def test_thd_rises_monotonically_with_drive():
    samplerate = 48000
    n = 1 << 14
    freq_hz = 375.0  # an exact bin: 128 cycles in n samples
    x = 0.5 * np.sin(2 * np.pi * freq_hz * np.arange(n + 200) / samplerate)
    thd = []
    for drive_db in np.arange(0.0, 24.1, 3.0):
        y = Saturator(drive_db, mix=1.0, lanes=1).process(x)[200:]
        thd.append(_thd(y, freq_hz, samplerate))
    assert np.all(np.diff(thd) > 0)
    # Independent check of the first point: the closed-form curve at 1x gives the same THD.
    z = _closed_form(x[200:], 0.0)
    assert thd[0] == pytest.approx(_thd(z, freq_hz, samplerate), rel=1e-3)


def _worst_alias_db(y, freq_hz, samplerate):
    spectrum = np.abs(np.fft.rfft(y * np.blackman(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / samplerate)
    guard = 6 * samplerate / len(y)
    harmonic = freqs < guard
    for k in range(1, int(samplerate / 2 / freq_hz) + 1):
        harmonic |= np.abs(freqs - k * freq_hz) < guard
    fundamental = spectrum[np.argmin(np.abs(freqs - freq_hz))]
    return 20 * np.log10(spectrum[~harmonic].max() / fundamental)


def test_oversampling_lowers_aliasing():
    samplerate = 48000
    n = 1 << 16
    freq_hz = round(5000 * n / samplerate) * samplerate / n
    latency = Saturator.latency_samples
    x = np.sin(2 * np.pi * freq_hz * np.arange(n + latency) / samplerate)
    y = Saturator(12.0, mix=1.0, lanes=1).process(x)[latency:]
    oversampled = _worst_alias_db(y, freq_hz, samplerate)
    naive = _worst_alias_db(_closed_form(x[:n], 12.0), freq_hz, samplerate)
    assert oversampled < -40.0  # measured -41.5 dB
    assert oversampled < naive - 20.0  # measured -18.9 dB at 1x


def test_halfband_passband_and_stopband():
    # The one filter behind the oversampler: flat to 20 kHz at 44.1 kHz, images rejected.
    freqs, response = ss.freqz(HALFBAND, worN=1 << 15, fs=2 * 44100)
    db = 20 * np.log10(np.abs(response) + 1e-300)
    assert np.max(np.abs(db[freqs <= 20000])) < 0.001
    assert np.max(db[freqs >= 44100 - 20000]) < -99.0  # images of 0-20 kHz


def test_saturator_block_size_invariance_and_validation():
    x = np.random.default_rng(4).standard_normal((9000, 2))
    whole = Saturator(9.0, 0.7).process(x)
    sat = Saturator(9.0, 0.7)
    parts = np.concatenate([sat.process(x[i : i + 64]) for i in range(0, len(x), 64)])
    np.testing.assert_allclose(parts, whole, atol=1e-12)
    for kwargs in ({"drive_db": 25.0}, {"drive_db": float("nan")}, {"mix": 1.5}):
        with pytest.raises(ValueError):
            Saturator(**kwargs)
