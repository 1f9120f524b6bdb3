"""Stereo delay and FDN reverb, checked against closed-form expectations and scipy.signal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal as ss

from studiod.dsp.effects import (
    DELAY_MAX_GLIDE_RATE,
    REVERB_FILTER,
    REVERB_LENGTH,
    Reverb,
    StereoDelay,
)

FS = 48000


def _impulse(n: int, left: float = 1.0, right: float = 1.0) -> np.ndarray:
    x = np.zeros((n, 2))
    x[0] = (left, right)
    return x


def _process_in_blocks(proc, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Process ``x`` in random block sizes 1..300 frames (stateful processor)."""
    out = []
    start = 0
    while start < len(x):
        size = int(rng.integers(1, 301))
        out.append(proc.process(x[start : start + size]))
        start += size
    return np.concatenate(out)


def _schroeder_t60(h: np.ndarray, fs: float = FS) -> float:
    """T60 from the Schroeder backward integral (ISO 3382-1), line fit from -5 to -35 dB."""
    energy = np.cumsum(h[::-1] ** 2)[::-1]
    edc_db = 10.0 * np.log10(energy / energy[0])
    i5 = int(np.argmax(edc_db <= -5.0))
    i35 = int(np.argmax(edc_db <= -35.0))
    assert i35 > i5 > 0, "impulse response too short for a -35 dB fit"
    t = np.arange(i5, i35) / fs
    slope_db_per_s = np.polyfit(t, edc_db[i5:i35], 1)[0]
    return -60.0 / slope_db_per_s


def _octave(h: np.ndarray, centre_hz: float) -> np.ndarray:
    """Octave band (IEC 61260 edges fc/sqrt2..fc*sqrt2) with a 4th-order Butterworth."""
    sos = ss.butter(
        4, [centre_hz / math.sqrt(2), centre_hz * math.sqrt(2)], "bandpass", fs=FS, output="sos"
    )
    return ss.sosfilt(sos, h)


# ------------------------------------------------------------------------------------------
# Stereo delay
# ------------------------------------------------------------------------------------------


def test_delay_echoes_at_exact_times_with_feedback_powers():
    feedback = 0.6
    dly = StereoDelay(FS, time_l_ms=250.0, time_r_ms=100.0, feedback=feedback)
    y = dly.process(_impulse(FS * 2))
    for lane, time_ms in ((0, 250.0), (1, 100.0)):
        period = round(time_ms * FS / 1000.0)
        expected = np.zeros(len(y))
        k = np.arange(1, len(y) // period + 1)
        k = k[k * period < len(y)]
        expected[k * period] = feedback ** (k - 1)
        np.testing.assert_allclose(y[:, lane], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("delay_samples", [480.37, 1234.5, 77.91])
def test_fractional_delay_matches_lagrange_interpolation(delay_samples):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4000, 2))
    time_ms = delay_samples * 1000.0 / FS
    dly = StereoDelay(FS, time_l_ms=time_ms, time_r_ms=time_ms, feedback=0.0)
    y = dly.process(x)
    # The cubic through the four samples around the delay (delays base..base + 3), evaluated
    # at the delay: weights from the Vandermonde system, independent of the module's product
    # formula (solved relative to base to keep the system well conditioned).
    base = math.floor(delay_samples) - 1
    offsets = np.arange(4.0)
    powers = (delay_samples - base) ** np.arange(4)
    weights = np.linalg.solve(np.vander(offsets, 4, increasing=True).T, powers)
    expected = np.zeros_like(x)
    for offset, w in zip(range(4), weights, strict=True):
        expected[base + offset :] += w * x[: len(x) - base - offset]
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-9)


def test_delay_time_change_glides_without_click():
    freq_hz, amp = 110.0, 0.5
    n = FS * 5
    t = np.arange(n)
    x = np.repeat((amp * np.sin(2 * np.pi * freq_hz * t / FS))[:, None], 2, axis=1)
    old_ms, new_ms = (300.0, 20.0), (52.5, 507.5)  # one shorter, one longer
    dly = StereoDelay(FS, time_l_ms=old_ms[0], time_r_ms=old_ms[1], feedback=0.0)
    first = dly.process(x[:FS])
    dly.set(time_l_ms=new_ms[0], time_r_ms=new_ms[1])
    rest = np.concatenate([dly.process(x[i : i + 64]) for i in range(FS, n, 64)])
    y = np.concatenate([first, rest])
    # y = A sin(w (n - d(n))) with |d(n) - d(n-1)| <= rate, so a sample-to-sample step is at
    # most A w (1 + rate). A read position that jumped would step by 2 A |sin(w dD / 2)|.
    omega = 2 * np.pi * freq_hz / FS
    bound = amp * omega * (1.0 + DELAY_MAX_GLIDE_RATE)
    for lane in range(2):
        jump_samples = (old_ms[lane] - new_ms[lane]) * FS / 1000.0
        assert 2 * amp * abs(math.sin(omega * jump_samples / 2)) > 10 * bound  # test is sharp
    steps = np.abs(np.diff(y, axis=0)).max(axis=0)
    assert np.all(steps <= bound * 1.01), (steps, bound)
    # ...and it does arrive: after the glide the output is the sine at the new delays.
    for lane in range(2):
        d = round(new_ms[lane] * FS / 1000)
        tail = slice(n - FS // 2, n)
        np.testing.assert_allclose(y[tail, lane], x[tail.start - d : n - d, 0], atol=1e-9)


def test_ping_pong_alternates_sides():
    feedback = 0.5
    dly = StereoDelay(FS, time_l_ms=100.0, time_r_ms=150.0, feedback=feedback, ping_pong=True)
    y = dly.process(_impulse(FS * 2))  # centred mono impulse
    d_l, d_r = 4800, 7200
    expected = np.zeros_like(y)
    t, k = d_l, 0
    while t < len(y):  # L at d_l, R at d_l + d_r, L at 2 d_l + d_r, ...
        lane = k % 2
        expected[t, lane] = feedback**k
        t += d_r if lane == 0 else d_l
        k += 1
    assert k >= 6
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)


def test_feedback_damping_matches_scipy_loop():
    # Y/X = z^-D / (1 - fb F(z) z^-D), F = first-order low-pass x high-pass, designed by
    # scipy.signal.butter (bilinear with prewarping) as the independent reference.
    delay, feedback, highcut_hz, lowcut_hz = 480, 0.9, 3000.0, 200.0
    dly = StereoDelay(
        FS,
        time_l_ms=delay * 1000.0 / FS,
        time_r_ms=delay * 1000.0 / FS,
        feedback=feedback,
        highcut_hz=highcut_hz,
        lowcut_hz=lowcut_hz,
    )
    rng = np.random.default_rng(2)
    x = rng.standard_normal((FS // 2, 2))
    y = dly.process(x)
    b_lp, a_lp = ss.butter(1, highcut_hz, "lowpass", fs=FS)
    b_hp, a_hp = ss.butter(1, lowcut_hz, "highpass", fs=FS)
    b_f = np.polymul(b_lp, b_hp)
    a_f = np.polymul(a_lp, a_hp)
    num = np.concatenate([np.zeros(delay), a_f])
    den = np.concatenate([a_f, np.zeros(delay)])
    den[delay : delay + len(b_f)] -= feedback * b_f
    expected = ss.lfilter(num, den, x, axis=0)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-9)


def test_delay_block_size_invariance():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((FS, 2))
    params = dict(
        time_l_ms=123.4,
        time_r_ms=77.7,
        feedback=0.8,
        ping_pong=True,
        highcut_hz=5000.0,
        lowcut_hz=150.0,
        mix=0.7,
    )
    whole = StereoDelay(FS, **params)
    first = whole.process(x[: FS // 2])
    whole.set(time_l_ms=300.0, feedback=0.5)  # a change between blocks, then a glide
    ref = np.concatenate([first, whole.process(x[FS // 2 :])])
    split = StereoDelay(FS, **params)
    first = _process_in_blocks(split, x[: FS // 2], rng)
    split.set(time_l_ms=300.0, feedback=0.5)
    second = _process_in_blocks(split, x[FS // 2 :], rng)
    np.testing.assert_allclose(np.concatenate([first, second]), ref, rtol=0, atol=1e-9)


def test_delay_stable_at_maximum_feedback():
    dly = StereoDelay(
        FS, time_l_ms=1.0, time_r_ms=1.0, feedback=0.95, highcut_hz=20000.0, lowcut_hz=10.0
    )
    rng = np.random.default_rng(8)
    x = np.zeros((FS * 30, 2))
    x[:FS] = rng.uniform(-1.0, 1.0, (FS, 2))
    y = dly.process(x)
    assert np.isfinite(y).all()
    # A 1 ms loop at -0.45 dB per pass has fallen by > 10000 dB after 29 s: flushed to zero.
    assert np.all(y[-FS:] == 0.0)


def test_delay_long_feedback_and_nan_input():
    dly = StereoDelay(FS, time_l_ms=1.0, time_r_ms=2000.0, feedback=0.95)
    x = np.zeros((FS * 30, 2))
    x[0] = 1.0
    x[10, 0] = np.nan
    x[20, 1] = np.inf
    x[30, 0] = -np.inf
    y = dly.process(x)
    assert np.isfinite(y).all()
    # 2 s loop: echo k at k * 2 s with 0.95^(k-1).
    peaks = [y[k * 2 * FS, 1] for k in range(1, 15)]
    np.testing.assert_allclose(peaks, 0.95 ** np.arange(14), rtol=1e-12)
    # Non-finite input is treated exactly like silence.
    clean = StereoDelay(FS, time_l_ms=1.0, time_r_ms=2000.0, feedback=0.95)
    np.testing.assert_array_equal(y, clean.process(np.where(np.isfinite(x), x, 0.0)))


def test_delay_keeps_dtype_and_accepts_mono():
    dly = StereoDelay(FS, time_l_ms=10.0, time_r_ms=10.0, feedback=0.0)
    x = np.zeros(1000, dtype=np.float32)
    x[0] = 1.0
    y = dly.process(x)
    assert y.dtype == np.float32 and y.shape == (1000, 2)
    assert y[480, 0] == 1.0 and y[480, 1] == 1.0


@pytest.mark.parametrize(
    "params",
    [
        {"feedback": 0.96},
        {"feedback": float("nan")},
        {"time_l_ms": 0.5},
        {"time_r_ms": 2500.0},
        {"highcut_hz": 30000.0},
        {"mix": -0.1},
        {"ping_pong": 1},
        {"tempo": 120},
    ],
)
def test_delay_rejects_bad_parameters(params):
    dly = StereoDelay(FS)
    with pytest.raises(ValueError):
        dly.set(**params)


def test_delay_time_limited_by_allocated_memory():
    dly = StereoDelay(FS, max_time_ms=500.0)
    with pytest.raises(ValueError, match="time_l_ms"):
        dly.set(time_l_ms=600.0)


# ------------------------------------------------------------------------------------------
# Reverb
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decay_s", [0.5, 2.0, 5.0])
def test_reverb_t60_matches_setting(decay_s):
    rev = Reverb(FS, decay_s=decay_s, hf_ratio=1.0)  # damping off, default modulation on
    y = rev.process(_impulse(int((1.5 * decay_s + 0.3) * FS)))
    for lane in range(2):
        assert _schroeder_t60(y[:, lane]) == pytest.approx(decay_s, rel=0.10)


def test_reverb_damping_shortens_high_band_by_set_ratio():
    decay_s, hf_ratio = 2.0, 0.4
    rev = Reverb(FS, decay_s=decay_s, hf_ratio=hf_ratio, damping_hz=2000.0)
    h = rev.process(_impulse(int(1.5 * decay_s * FS)))[:, 0]
    t60_low = _schroeder_t60(_octave(h, 500.0))
    t60_high = _schroeder_t60(_octave(h, 8000.0))
    assert t60_low == pytest.approx(decay_s, rel=0.10)
    assert t60_high / t60_low == pytest.approx(hf_ratio, rel=0.15)


def test_reverb_line_gains_follow_jot_formula():
    decay_s, hf_ratio = 1.5, 0.5
    rev = Reverb(FS, decay_s=decay_s, hf_ratio=hf_ratio, damping_hz=3000.0, size=1.3)
    lengths = rev.line_lengths
    for i, a in enumerate(lengths):  # mutually prime
        for b in lengths[i + 1 :]:
            assert math.gcd(int(a), int(b)) == 1
    np.testing.assert_array_equal(lengths, rev.coefs[REVERB_LENGTH])
    for i, m in enumerate(lengths):
        c = rev.coefs[REVERB_FILTER : REVERB_FILTER + 5, i]
        _, h = ss.freqz(c[:3], [1.0, c[3], c[4]], worN=[0.0, np.pi])
        g_low = 10.0 ** (-3.0 * m / (decay_s * FS))  # Jot & Chaigne: -60 dB per T60
        g_high = 10.0 ** (-3.0 * m / (hf_ratio * decay_s * FS))
        np.testing.assert_allclose(np.abs(h), [g_low, g_high], rtol=1e-9)


@pytest.mark.parametrize("samplerate", [44100, 96000])
@pytest.mark.parametrize("size", [0.25, 2.0])
def test_reverb_lines_mutually_prime_at_any_rate_and_size(samplerate, size):
    lengths = Reverb(samplerate, size=size).line_lengths
    assert len(set(lengths)) == len(lengths)
    assert all(math.gcd(int(a), int(b)) == 1 for a in lengths for b in lengths if a != b)


def test_reverb_predelay_is_silent_then_shifts_response():
    predelay = 2400  # 50 ms
    n = FS
    # Without modulation the network is time-invariant, so the response only shifts.
    plain = Reverb(FS, predelay_ms=0.0, mod_depth_ms=0.0).process(_impulse(n))
    delayed = Reverb(FS, predelay_ms=50.0, mod_depth_ms=0.0).process(_impulse(n))
    assert np.all(delayed[:predelay] == 0.0)
    modulated = Reverb(FS, predelay_ms=50.0).process(_impulse(FS // 10))
    assert np.all(modulated[:predelay] == 0.0)
    assert np.abs(delayed[predelay : predelay + FS // 10]).max() > 1e-3
    np.testing.assert_allclose(delayed[predelay:], plain[: n - predelay], rtol=0, atol=1e-12)


@pytest.mark.parametrize("impulse", [(1.0, 1.0), (1.0, 0.0)])
def test_reverb_outputs_decorrelated(impulse):
    y = Reverb(FS, decay_s=2.0).process(_impulse(3 * FS, *impulse))
    corr = np.corrcoef(y[:, 0], y[:, 1])[0, 1]
    assert abs(corr) < 0.3
    mono = Reverb(FS, decay_s=2.0, width=0.0).process(_impulse(FS, *impulse))
    np.testing.assert_array_equal(mono[:, 0], mono[:, 1])


def test_reverb_stable_at_maximum_settings_over_30_s():
    rev = Reverb(
        FS,
        decay_s=20.0,
        hf_ratio=1.0,
        size=2.0,
        diffusion=1.0,
        mod_depth_ms=2.0,
        mod_rate_hz=5.0,
        predelay_ms=250.0,
    )
    rng = np.random.default_rng(4)
    x = np.zeros((30 * FS, 2))
    x[: FS // 2] = rng.uniform(-1.0, 1.0, (FS // 2, 2))
    y = np.concatenate([rev.process(x[i : i + 4096]) for i in range(0, len(x), 4096)])
    assert np.isfinite(y).all()
    rms_db = [10 * np.log10(np.mean(y[s * FS : (s + 1) * FS] ** 2)) for s in range(1, 30)]
    assert np.all(np.diff(rms_db) < 0)  # decays second by second
    # 60 dB per 20 s: about 84 dB from second 1 to second 29.
    assert rms_db[0] - rms_db[-1] == pytest.approx(60.0 * 28 / 20.0, abs=8.0)


def test_reverb_block_size_invariance():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((FS, 2)) * 0.5
    params = dict(decay_s=3.0, predelay_ms=12.3, mod_depth_ms=1.0, mod_rate_hz=2.0)
    ref = Reverb(FS, **params).process(x)
    got = _process_in_blocks(Reverb(FS, **params), x, rng)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


def test_reverb_ignores_nan_and_inf():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((FS // 2, 2))
    bad = x.copy()
    bad[100, 0] = np.nan
    bad[200, 1] = np.inf
    bad[300] = -np.inf
    y = Reverb(FS).process(bad)
    assert np.isfinite(y).all()
    clean = np.where(np.isfinite(bad), bad, 0.0)
    np.testing.assert_array_equal(y, Reverb(FS).process(clean))


def test_reverb_size_change_glides_and_settles():
    rev = Reverb(FS, size=1.0)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3 * FS, 2)) * 0.1
    rev.process(x[:FS])
    rev.set(size=0.5)
    y = np.concatenate([rev.process(x[i : i + 64]) for i in range(FS, 3 * FS, 64)])
    assert np.isfinite(y).all()
    line_state = rev.state[3]
    np.testing.assert_array_equal(line_state[0], rev.coefs[REVERB_LENGTH])


def test_reverb_keeps_dtype():
    y = Reverb(FS).process(np.zeros((256, 2), dtype=np.float32))
    assert y.dtype == np.float32 and y.shape == (256, 2)


@pytest.mark.parametrize(
    "params",
    [
        {"decay_s": 0.05},
        {"decay_s": 25.0},
        {"predelay_ms": 300.0},
        {"size": float("nan")},
        {"hf_ratio": 1.5},
        {"damping_hz": 30000.0},
        {"width": 2.0},
        {"room": 1},
    ],
)
def test_reverb_rejects_bad_parameters(params):
    rev = Reverb(FS)
    with pytest.raises(ValueError):
        rev.set(**params)
