"""Compressor, gate/expander and multiband compressor against closed forms and scipy.signal.

References: the soft-knee static curve of Giannoulis, Massberg, Reiss (JAES 60(6), 2012,
eq. 4) written out piecewise here; one-pole step responses 1 - exp(-t / tau); scipy's
Butterworth designs for the side-chain filter and the crossover bands.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import signal

from studiod.dsp.crossover import Crossover3
from studiod.dsp.dynamics import GATE_HYSTERESIS_DB, Compressor, Gate, MultibandCompressor

FS = 48000.0
E1 = 1.0 - math.exp(-1.0)  # a one-pole step response reaches 1 - 1/e after tau


def reference_reduction_db(level_db, threshold_db, ratio, knee_db):
    """Giannoulis eq. 4, piecewise as printed, as a reduction x_G - y_G (dB, >= 0)."""
    level_db = np.asarray(level_db, dtype=float)
    inv_r = 0.0 if math.isinf(ratio) else 1.0 / ratio
    over = level_db - threshold_db
    y = np.where(
        2 * over < -knee_db,
        level_db,
        np.where(
            2 * np.abs(over) <= knee_db,
            level_db + (inv_r - 1) * (over + knee_db / 2) ** 2 / (2 * max(knee_db, 1e-300)),
            threshold_db + over * inv_r,
        ),
    )
    return level_db - y


def gain_db(y, x):
    return 20.0 * np.log10(np.abs(y) / np.abs(x))


def first_index(mask):
    hits = np.flatnonzero(mask)
    assert hits.size, "the response never got there"
    return int(hits[0])


# ----------------------------------------------------------------------------------------------
# Compressor
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "threshold_db, ratio, knee_db",
    [(-20.0, 4.0, 6.0), (-30.0, 2.0, 0.0), (-10.0, math.inf, 12.0), (-40.0, 100.0, 24.0)],
)
def test_static_curve_dc(threshold_db, ratio, knee_db):
    # One lane per level, spanning below, across and above the knee; half of them negative DC.
    levels_db = np.linspace(threshold_db - knee_db / 2 - 6, min(threshold_db + 30, 6.0), 41)
    amps = 10 ** (levels_db / 20) * np.where(np.arange(41) % 2, -1.0, 1.0)
    comp = Compressor(
        FS,
        lanes=41,
        threshold_db=threshold_db,
        ratio=ratio,
        knee_db=knee_db,
        attack_ms=1.0,
        release_ms=50.0,
        makeup_db=3.0,
    )
    x = np.tile(amps, (int(0.1 * FS), 1))  # 100 attack time constants
    y = comp.process(x)
    expected = reference_reduction_db(levels_db, threshold_db, ratio, knee_db)
    np.testing.assert_allclose(gain_db(y[-1], x[-1]), 3.0 - expected, atol=0.05)
    np.testing.assert_allclose(comp.gain_reduction_db, expected, atol=0.05)


def test_static_curve_sine_peak():
    # A sine's steady-state gain follows the curve at its peak level (peak detector, release
    # much longer than the period, attack much shorter).
    levels_db = np.linspace(-36.0, 0.0, 13)
    n = int(0.25 * FS)
    t = np.arange(n) / FS
    x = np.sin(2 * np.pi * 1000.0 * t)[:, None] * 10 ** (levels_db / 20)
    comp = Compressor(
        FS,
        lanes=13,
        threshold_db=-24.0,
        ratio=3.0,
        knee_db=10.0,
        attack_ms=0.05,
        release_ms=5000.0,
    )
    y = comp.process(x)
    period = int(FS / 1000.0)
    last = slice(n - period, n)
    reduction = np.max(-gain_db(y[last], x[last] + 1e-300), axis=0)
    expected = reference_reduction_db(levels_db, -24.0, 3.0, 10.0)
    np.testing.assert_allclose(reduction, expected, atol=0.05)


@pytest.mark.parametrize("attack_ms, release_ms", [(1.0, 20.0), (10.0, 200.0), (50.0, 1000.0)])
def test_attack_and_release_time_constants(attack_ms, release_ms):
    threshold_db, ratio = -30.0, 4.0
    step_db = (0.0 - threshold_db) * (1 - 1 / ratio)  # hard knee, 0 dBFS in
    n_on = int((attack_ms * 20) * FS / 1000)
    n_off = int((release_ms * 8) * FS / 1000)
    x = np.concatenate([np.full(n_on, 1.0), np.full(n_off, 1e-3)])  # 0 dBFS, then -60 dBFS
    comp = Compressor(
        FS,
        threshold_db=threshold_db,
        ratio=ratio,
        knee_db=0.0,
        attack_ms=attack_ms,
        release_ms=release_ms,
    )
    reduction = -gain_db(comp.process(x), x)
    t_attack = (first_index(reduction[:n_on] >= E1 * step_db) + 1) / FS
    assert t_attack == pytest.approx(attack_ms / 1000, rel=0.05)
    assert reduction[n_on - 1] == pytest.approx(step_db, abs=0.01)
    t_release = (first_index(reduction[n_on:] <= step_db / math.e) + 1) / FS
    assert t_release == pytest.approx(release_ms / 1000, rel=0.05)


def test_stereo_link_gives_identical_gain():
    rng = np.random.default_rng(1)
    n = int(0.3 * FS)
    loud = 0.8 * np.sin(2 * np.pi * 220.0 * (np.arange(n) + 0.5) / FS)  # no exact zeros
    quiet = 0.01 * rng.standard_normal(n)  # -40 dBFS, below the threshold
    x = np.column_stack([loud, quiet, quiet, loud])
    params = dict(threshold_db=-20.0, ratio=4.0, knee_db=6.0, attack_ms=5.0, release_ms=100.0)
    linked = Compressor(FS, lanes=4, link="stereo", **params)
    y = linked.process(x)
    g = y / x
    np.testing.assert_allclose(g[:, 0], g[:, 1], rtol=1e-12)
    np.testing.assert_allclose(g[:, 2], g[:, 3], rtol=1e-12)
    assert linked.gain_reduction_db[1] > 5.0
    # Unlinked the quiet lane is left alone, and the loud lane gets the same as linked.
    unlinked = Compressor(FS, lanes=4, **params)
    y_un = unlinked.process(x)
    np.testing.assert_allclose(y_un[:, 1], x[:, 1], rtol=1e-12)
    np.testing.assert_allclose(y_un[:, 0], y[:, 0], rtol=1e-12)
    # An explicit partner list works the same way.
    explicit = Compressor(FS, lanes=4, link=[3, 2, 1, 0], **params)
    y_ex = explicit.process(x)
    np.testing.assert_allclose(y_ex[:, 1] / x[:, 1], y_ex[:, 2] / x[:, 2], rtol=1e-12)


def test_sidechain_hpf_reduces_low_frequency_gain_reduction():
    freq_hz, amp, hpf_hz = 60.0, 0.5, 120.0
    threshold_db, ratio = -40.0, 4.0
    n = int(1.0 * FS)
    x = amp * np.sin(2 * np.pi * freq_hz * np.arange(n) / FS)
    period = round(FS / freq_hz)
    params = dict(
        threshold_db=threshold_db, ratio=ratio, knee_db=0.0, attack_ms=0.05, release_ms=5000.0
    )
    results = {}
    for hpf in (0.0, hpf_hz):
        comp = Compressor(FS, sidechain_hpf_hz=hpf, **params)
        y = comp.process(x)
        results[hpf] = np.max(-gain_db(y[-period:], x[-period:]))
    # Prediction: the detector sees scipy's 2nd-order Butterworth high-pass of the sine.
    sos = signal.butter(2, hpf_hz, btype="highpass", fs=FS, output="sos")
    detector_peak_db = 20 * np.log10(np.max(np.abs(signal.sosfilt(sos, x)[-period:])))
    expected = reference_reduction_db(detector_peak_db, threshold_db, ratio, 0.0)
    plain = reference_reduction_db(20 * math.log10(amp), threshold_db, ratio, 0.0)
    assert results[0.0] == pytest.approx(plain, abs=0.05)
    assert results[hpf_hz] == pytest.approx(expected, abs=0.05)
    assert results[hpf_hz] < results[0.0] - 5.0


def _noise_burst(n, lanes, seed):
    rng = np.random.default_rng(seed)
    env = 10 ** ((-25 + 25 * np.sin(2 * np.pi * 3.0 * np.arange(n) / FS)) / 20)
    return rng.standard_normal((n, lanes)) * 0.3 * env[:, None]


def _split_blocks(processor, x, edges):
    return np.concatenate([processor.process(x[a:b]) for a, b in itertools.pairwise(edges)])


EDGES = [0, 1, 7, 64, 128, 129, 1000, 4096, 4097, 9000, 12000]


def test_compressor_block_size_invariance():
    x = _noise_burst(12000, 4, seed=2)
    make = lambda: Compressor(  # noqa: E731
        FS,
        lanes=4,
        threshold_db=[-30, -30, -20, -10],
        ratio=[4, 4, math.inf, 2],
        knee_db=6.0,
        attack_ms=2.0,
        release_ms=60.0,
        makeup_db=4.0,
        sidechain_hpf_hz=[150.0, 150.0, 0.0, 80.0],
        link=[1, 0, 2, 3],
    )
    whole = make().process(x)
    np.testing.assert_allclose(_split_blocks(make(), x, EDGES), whole, atol=1e-9)
    comp64 = make()
    blocks64 = np.concatenate([comp64.process(x[i : i + 64]) for i in range(0, len(x), 64)])
    np.testing.assert_allclose(blocks64, whole, atol=1e-9)


def test_dtype_shape_and_parameter_change():
    x = (0.5 * np.sin(np.arange(2000) / 10.0)).astype(np.float32)
    comp = Compressor(FS, threshold_db=-20.0, ratio=4.0)
    y = comp.process(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    comp.set(ratio=1.0, makeup_db=0.0)
    y2 = comp.process(np.full(int(3 * FS), 0.5))
    assert abs(gain_db(y2[-1], 0.5)) < 1e-6  # ratio 1 releases to unity gain (30 tau)


def test_nan_audio_does_not_poison_state():
    comp = Compressor(FS, threshold_db=-20.0, sidechain_hpf_hz=100.0)
    bad = np.full(256, 0.5)
    bad[10] = np.nan
    comp.process(bad)
    y = comp.process(np.full(4800, 0.1))
    assert np.isfinite(y).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(threshold_db=math.nan),
        dict(threshold_db=-61.0),
        dict(ratio=0.5),
        dict(ratio=math.nan),
        dict(ratio=101.0),
        dict(knee_db=-1.0),
        dict(knee_db=25.0),
        dict(attack_ms=0.0),
        dict(attack_ms=math.nan),
        dict(release_ms=1.0),
        dict(makeup_db=30.0),
        dict(sidechain_hpf_hz=5.0),
        dict(sidechain_hpf_hz=math.nan),
        dict(link=[0, 0]),
        dict(link=[1, 2]),
        dict(link="surround"),
        dict(threshold_db=[-10.0, math.nan]),
        dict(threshold_db=[-10.0, -20.0, -30.0]),
    ],
)
def test_compressor_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        Compressor(FS, lanes=2, **kwargs)


def test_compressor_accepts_infinite_ratio_and_keeps_old_values_on_error():
    comp = Compressor(FS, ratio=math.inf)
    with pytest.raises(ValueError):
        comp.set(ratio=math.nan)
    assert comp.params["ratio"][0] == math.inf


# ----------------------------------------------------------------------------------------------
# Gate / expander
# ----------------------------------------------------------------------------------------------


def test_gate_range_floor_and_expander_curve():
    threshold_db, range_db = -40.0, 30.0
    levels_db = np.linspace(-100.0, -30.0, 29)
    amps = 10 ** (levels_db / 20)
    n = int(0.5 * FS)
    for ratio in (2.0, math.inf):
        gate = Gate(
            FS,
            lanes=len(amps),
            threshold_db=threshold_db,
            range_db=range_db,
            ratio=ratio,
            attack_ms=1.0,
            hold_ms=0.0,
            release_ms=10.0,
        )
        x = np.tile(amps, (n, 1))
        y = gate.process(x)
        below = np.maximum(threshold_db - levels_db, 0.0)
        expected = np.minimum(
            below * (ratio - 1) if ratio < math.inf else np.where(below > 0, np.inf, 0.0), range_db
        )
        np.testing.assert_allclose(-gain_db(y[-1], x[-1]), expected, atol=0.05)
    # Silence sits exactly at the floor.
    gate = Gate(FS, threshold_db=-50.0, range_db=60.0, release_ms=5.0)
    y = gate.process(np.full(int(0.2 * FS), 1e-7))
    assert -gain_db(y[-1], 1e-7) == pytest.approx(60.0, abs=0.05)


def test_gate_hysteresis():
    threshold_db = -40.0
    amp = lambda db: 10 ** (db / 20)  # noqa: E731
    seg = int(0.1 * FS)
    levels = [
        -60.0,
        threshold_db - 1.0,
        threshold_db + 1.0,
        threshold_db - GATE_HYSTERESIS_DB + 1.0,
        threshold_db - GATE_HYSTERESIS_DB - 1.0,
    ]
    x = np.concatenate([np.full(seg, amp(level)) for level in levels])
    gate = Gate(
        FS, threshold_db=threshold_db, range_db=40.0, attack_ms=1.0, hold_ms=0.0, release_ms=5.0
    )
    g = gain_db(gate.process(x), x)
    ends = [g[(k + 1) * seg - 1] for k in range(len(levels))]
    assert ends[0] == pytest.approx(-40.0, abs=0.05)  # closed
    assert ends[1] == pytest.approx(-40.0, abs=0.05)  # 1 dB below: still closed
    assert ends[2] == pytest.approx(0.0, abs=0.05)  # opened
    assert ends[3] == pytest.approx(0.0, abs=0.05)  # inside the hysteresis: stays open
    assert ends[4] == pytest.approx(-40.0, abs=0.05)  # below it: closes


def test_gate_hold_and_time_constants():
    hold_ms, attack_ms, release_ms, range_db = 30.0, 5.0, 50.0, 60.0
    n_closed, n_open, n_tail = int(1.0 * FS), int(0.2 * FS), int(0.5 * FS)
    x = np.concatenate([np.full(n_closed, 1e-5), np.full(n_open, 0.5), np.full(n_tail, 1e-5)])
    gate = Gate(
        FS,
        threshold_db=-30.0,
        range_db=range_db,
        ratio=math.inf,
        attack_ms=attack_ms,
        hold_ms=hold_ms,
        release_ms=release_ms,
    )
    atten = -gain_db(gate.process(x), x)
    assert atten[n_closed - 1] == pytest.approx(range_db, abs=0.01)
    # Opening: the attenuation falls to 1/e of the range after the attack time.
    t_open = (first_index(atten[n_closed:] <= range_db / math.e) + 1) / FS
    assert t_open == pytest.approx(attack_ms / 1000, rel=0.05)
    # Hold: fully open for exactly hold_ms after the level drops, then release.
    tail = atten[n_closed + n_open :]
    hold = round(hold_ms * FS / 1000)
    assert np.all(tail[:hold] < 1e-6)
    assert tail[hold] > 1e-3
    t_close = (first_index(tail[hold:] >= E1 * range_db) + 1) / FS
    assert t_close == pytest.approx(release_ms / 1000, rel=0.05)


def test_gate_link_and_block_size_invariance():
    n = int(0.6 * FS)
    loud = 0.5 * np.sin(2 * np.pi * 100.0 * (np.arange(n) + 0.5) / FS)
    x = np.column_stack([loud, np.full(n, 1e-4)])
    params = dict(threshold_db=-30.0, range_db=50.0, attack_ms=1.0, hold_ms=20.0, release_ms=50.0)
    y = Gate(FS, lanes=2, link="stereo", **params).process(x)
    np.testing.assert_allclose(y / x, (y / x)[:, ::-1], rtol=1e-12)
    y_un = Gate(FS, lanes=2, **params).process(x)
    assert gain_db(y_un[-1, 1], x[-1, 1]) == pytest.approx(-50.0, abs=0.05)
    assert gain_db(y[-1, 1], x[-1, 1]) == pytest.approx(0.0, abs=1e-6)

    xb = _noise_burst(12000, 3, seed=4)
    make = lambda: Gate(  # noqa: E731
        FS,
        lanes=3,
        threshold_db=-35.0,
        range_db=[40.0, 60.0, 20.0],
        ratio=[math.inf, 3.0, 2.0],
        attack_ms=0.5,
        hold_ms=[5.0, 0.0, 12.0],
        release_ms=30.0,
        sidechain_hpf_hz=[0.0, 200.0, 0.0],
        link=[2, 1, 0],
    )
    whole = make().process(xb)
    np.testing.assert_allclose(_split_blocks(make(), xb, EDGES), whole, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(threshold_db=math.nan),
        dict(threshold_db=-91.0),
        dict(range_db=-1.0),
        dict(range_db=91.0),
        dict(range_db=math.nan),
        dict(ratio=0.9),
        dict(attack_ms=math.nan),
        dict(hold_ms=-1.0),
        dict(hold_ms=math.nan),
        dict(release_ms=6000.0),
        dict(link=[5]),
    ],
)
def test_gate_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        Gate(FS, **kwargs)


# ----------------------------------------------------------------------------------------------
# Multiband
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("samplerate", [44100.0, 96000.0])
def test_multiband_without_gain_reduction_is_flat(samplerate):
    n = 1 << 15
    x = np.zeros((n, 2))
    x[0] = 1e-3  # -60 dBFS, far below every threshold
    mb = MultibandCompressor(
        samplerate,
        lanes=2,
        low_hz=150.0,
        high_hz=4000.0,
        threshold_db=-20.0,
        ratio=4.0,
        makeup_db=0.0,
    )
    y = mb.process(x) / 1e-3
    for lane in range(2):
        mag_db = 20 * np.log10(np.abs(np.fft.rfft(y[:, lane])))
        assert np.max(np.abs(mag_db)) < 0.01
    assert np.all(mb.gain_reduction_db == 0.0)


def test_multiband_compresses_only_the_band_with_the_signal():
    low_hz, high_hz = 200.0, 5000.0
    threshold_db, ratio = -30.0, 4.0
    n = int(0.5 * FS)
    fade = np.minimum(np.arange(n) / (0.05 * FS), 1.0)  # no onset click into the other bands
    x = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(n) / FS) * np.sin(0.5 * np.pi * fade) ** 2
    x2 = np.column_stack([x, x])
    mb = MultibandCompressor(
        FS,
        lanes=2,
        low_hz=low_hz,
        high_hz=high_hz,
        link="stereo",
        threshold_db=threshold_db,
        ratio=ratio,
        knee_db=0.0,
        attack_ms=0.05,
        release_ms=5000.0,
    )
    mb.set_solo([1])  # listen to the mid band alone; solo does not change the detectors
    y = mb.process(x2)
    period = int(FS / 1000.0)
    # The mid band's level from scipy: LR4 high-pass at low_hz, LR4 low-pass at high_hz.
    sos = np.vstack(
        [signal.butter(2, low_hz, "highpass", fs=FS, output="sos")] * 2
        + [signal.butter(2, high_hz, "lowpass", fs=FS, output="sos")] * 2
    )
    mid = signal.sosfilt(sos, x)
    mid_peak_db = 20 * np.log10(np.max(np.abs(mid[-period:])))
    expected = reference_reduction_db(mid_peak_db, threshold_db, ratio, 0.0)
    assert mb.gain_reduction_db[1] == pytest.approx(np.full(2, expected), abs=0.05)
    assert np.all(mb.gain_reduction_db[[0, 2]] < 1e-6)
    out_peak_db = 20 * np.log10(np.max(np.abs(y[-period:, 0])))
    assert out_peak_db == pytest.approx(mid_peak_db - expected, abs=0.1)


def test_multiband_solo_bypass_and_block_size_invariance():
    x = _noise_burst(12000, 2, seed=5)
    mb = MultibandCompressor(
        FS, lanes=2, low_hz=300.0, high_hz=3000.0, threshold_db=-60.0, ratio=2.0
    )
    mb.set_solo([1])
    xo = Crossover3(300.0, 3000.0, FS, lanes=2)
    _, mid, _ = xo.process(x)
    mb.set_bypass(1)
    np.testing.assert_allclose(mb.process(x), mid, atol=1e-12)  # bypassed mid band alone

    make = lambda: MultibandCompressor(  # noqa: E731
        FS,
        lanes=2,
        low_hz=120.0,
        high_hz=6000.0,
        threshold_db=(-30.0, -25.0, -35.0),
        ratio=(2.0, 4.0, math.inf),
        attack_ms=(5.0, 2.0, 0.5),
        release_ms=(200.0, 80.0, 40.0),
        makeup_db=(2.0, 0.0, -3.0),
    )
    whole = make().process(x)
    np.testing.assert_allclose(_split_blocks(make(), x, EDGES), whole, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(low_hz=math.nan),
        dict(low_hz=3000.0, high_hz=300.0),
        dict(threshold_db=(-20.0, math.nan, -20.0)),
        dict(ratio=(2.0, 2.0)),
        dict(attack_ms=0.0),
    ],
)
def test_multiband_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        MultibandCompressor(FS, **kwargs)


def test_fast_log2_and_exp2_against_numpy():
    # The kernels' private level/gain conversions, checked over their whole working range.
    from studiod.dsp.dynamics import _fast_exp2, _fast_log2

    rng = np.random.default_rng(7)
    levels = 10 ** rng.uniform(-15, 3, 500)
    got = np.array([_fast_log2(v) for v in levels])
    np.testing.assert_allclose(got, np.log2(levels), rtol=0, atol=1e-10)
    zs = np.concatenate([rng.uniform(-40, 5, 500), [0.0, -0.5, 0.5, -1020.0]])
    got = np.array([_fast_exp2(z) for z in zs])
    np.testing.assert_allclose(got, np.exp2(zs), rtol=1e-9)
