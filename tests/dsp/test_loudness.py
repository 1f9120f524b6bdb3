"""Unit tests of studiod.dsp.loudness against independent references.

References: the BS.1770-4 Table 1/2 coefficients (printed values), scipy.signal.sosfilt /
sosfreqz, straightforward list-based numpy implementations of BS.1770-4 gating and of the
EBU Tech 3342 LRA algorithm, numpy's corrcoef, and closed-form sine levels.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from scipy import signal

from studiod.dsp.loudness import (
    LoudnessMeter,
    _piece_plan,
    block_geometry,
    kweighting_sos,
    loudness_process_state,
    make_state,
    measure,
    settle_frames,
)

from .ebu_signals import chord_programme, filtered_noise_programme, sine, stereo

FS = 48000

# ITU-R BS.1770-4 Annex 1, Table 1 (pre-filter) and Table 2 (RLB high-pass), 48 kHz.
TABLE_SOS_48K = np.array(
    [
        [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241,
         0.73248077421585],
        [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
    ]
)  # fmt: skip


@pytest.fixture(scope="module")
def programme():
    """30 s of stereo programme with dynamics (noise phrases plus chords)."""
    return 0.8 * filtered_noise_programme(30.0, FS, seed=21) + chord_programme(30.0, FS, seed=22)


def _reference_blocks(x, fs, weights, window_s, hop_s):
    """Weighted mean squares of K-weighted windows (list-based BS.1770-4 eqs. 1-4)."""
    y = signal.sosfilt(TABLE_SOS_48K, x, axis=0)
    win = round(window_s * fs)
    hop = round(hop_s * fs)
    starts = range(0, len(y) - win + 1, hop)
    return np.array([np.sum(np.mean(y[s : s + win] ** 2, axis=0) * weights) for s in starts])


def _lufs(z):
    with np.errstate(divide="ignore"):
        return -0.691 + 10.0 * np.log10(z)


def _reference_integrated(z, relative_shift_lu=0.0):
    keep = z[_lufs(z) > -70.0]
    if keep.size == 0:
        return -math.inf
    gate = _lufs(np.mean(keep)) - 10.0 + relative_shift_lu
    return _lufs(np.mean(keep[_lufs(keep) > gate]))


def _reference_lra(z):
    """EBU Tech 3342: gates -70 LUFS and -20 LU, percentiles at sorted index round((n-1) p)."""
    loud = _lufs(z)
    loud = loud[loud > -70.0]
    gate = _lufs(np.mean(10.0 ** ((loud + 0.691) / 10.0))) - 20.0
    kept = np.sort(loud[loud > gate])
    n = kept.size
    return kept[math.floor((n - 1) * 0.95 + 0.5)] - kept[math.floor((n - 1) * 0.10 + 0.5)]


# --- K-weighting -----------------------------------------------------------------------------


def test_kweighting_48k_equals_bs1770_tables():
    np.testing.assert_allclose(kweighting_sos(48000), TABLE_SOS_48K, rtol=0, atol=1e-8)


@pytest.mark.parametrize("samplerate", [8000, 11025, 16000, 22050, 32000, 44100, 96000, 192000])
def test_kweighting_response_matches_48k_at_every_rate(samplerate):
    # Reference: the normative 48 kHz filter's response (scipy.signal.sosfreqz).
    f = np.geomspace(20.0, min(0.45 * samplerate, 10000.0), 200)
    ref = np.abs(signal.sosfreqz(TABLE_SOS_48K, worN=f, fs=48000)[1])
    got = np.abs(signal.sosfreqz(kweighting_sos(samplerate), worN=f, fs=samplerate)[1])
    assert np.max(np.abs(20 * np.log10(got / ref))) < 0.05


def test_block_geometry():
    assert block_geometry(48000) == (480, 10)
    assert block_geometry(44100) == (441, 10)
    assert block_geometry(22050) == (441, 5)
    assert block_geometry(8000) == (80, 10)
    assert block_geometry(192000) == (1920, 10)


# --- momentary, short-term, integrated, LRA against list-based references --------------------


def test_momentary_and_shortterm_follow_reference(programme):
    meter = LoudnessMeter(FS, 2)
    hop = FS // 10
    momentary, shortterm = [], []
    for start in range(0, len(programme) - hop + 1, hop):
        meter.process(programme[start : start + hop])
        momentary.append(meter.momentary_lufs)
        shortterm.append(meter.shortterm_lufs)
    ref_m = _lufs(_reference_blocks(programme, FS, [1, 1], 0.4, 0.1))
    ref_s = _lufs(_reference_blocks(programme, FS, [1, 1], 3.0, 0.1))
    np.testing.assert_allclose(momentary[3 : 3 + len(ref_m)], ref_m, atol=1e-7)
    np.testing.assert_allclose(shortterm[29 : 29 + len(ref_s)], ref_s, atol=1e-7)
    assert momentary[:3] == [-math.inf] * 3  # no full 400 ms window yet
    assert meter.momentary_max_lufs >= np.max(ref_m) - 1e-9
    assert meter.shortterm_max_lufs >= np.max(ref_s) - 1e-9


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_integrated_within_documented_histogram_bound(seed):
    x = filtered_noise_programme(30.0, FS, seed=seed) + chord_programme(30.0, FS, seed=seed)
    got = measure(x, FS)["integrated_lufs"]
    z = _reference_blocks(x, FS, [1, 1], 0.4, 0.1)
    exact = _reference_integrated(z)
    # Documented bound: equal to the exact value for a relative gate moved by < 0.01 LU.
    bracket = [_reference_integrated(z, shift) for shift in np.linspace(-0.01, 0.01, 21)]
    assert min(bracket) - 1e-9 <= got <= max(bracket) + 1e-9
    assert abs(got - exact) < 0.01


def test_loudness_range_matches_tech3342_reference(programme):
    got = measure(programme, FS)
    z = _reference_blocks(programme, FS, [1, 1], 3.0, 0.1)
    assert got["loudness_range_lu"] > 3.0
    assert abs(got["loudness_range_lu"] - _reference_lra(z)) <= 0.02 + 1e-9


def test_integrated_of_sine_is_closed_form():
    # A 997 Hz stereo sine at -20 dBFS: mean square 0.5 * a^2 per channel, times the
    # K-weighting power gain at 997 Hz (from scipy.signal.sosfreqz of the table filter).
    gain = abs(signal.sosfreqz(TABLE_SOS_48K, worN=[997.0], fs=FS)[1][0]) ** 2
    expected = -0.691 + 10 * math.log10(2 * 0.5 * 10 ** (-20 / 10) * gain)
    x = stereo(sine(-20.0, 10.0, freq_hz=997.0))
    result = measure(x, FS)
    assert abs(result["integrated_lufs"] - expected) < 1e-3
    assert abs(result["loudness_range_lu"]) < 1e-3


# --- block-size invariance, dtypes, reset ----------------------------------------------------


def _readings_by_blocks(x, block, fs=FS):
    meter = LoudnessMeter(fs, x.shape[1])
    for start in range(0, len(x), block):
        meter.process(x[start : start + block])
    return meter.readings()


def test_block_size_invariance(programme):
    x = programme[: 12 * FS]
    whole = _readings_by_blocks(x, len(x))
    for block in (64, 1001):
        got = _readings_by_blocks(x, block)
        for key, value in whole.items():
            if isinstance(value, float) and math.isfinite(value):
                assert abs(got[key] - value) <= 1e-9, (block, key)
            elif isinstance(value, list):
                np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-9)
            else:
                assert got[key] == value, (block, key)


def test_float32_input_equals_float64_of_same_values(programme):
    x32 = programme[: 5 * FS].astype(np.float32)
    a = measure(x32, FS)
    b = measure(x32.astype(np.float64), FS)
    for key in ("integrated_lufs", "momentary_max_lufs", "true_peak_dbtp"):
        assert a[key] == pytest.approx(b[key], abs=1e-12)
    # Pearson's cancellation magnifies the summation-order differences of the two builds.
    assert a["correlation"] == pytest.approx(b["correlation"], abs=1e-8)


def test_process_returns_input_and_reset_starts_over(programme):
    meter = LoudnessMeter(FS, 2)
    x = programme[: 4 * FS]
    assert meter.process(x) is x
    first = meter.readings()
    meter.process(programme[4 * FS : 8 * FS])
    meter.reset()
    meter.process(x)
    assert meter.readings() == first


def test_values_are_published_at_10_hz(programme):
    meter = LoudnessMeter(FS, 2)
    meter.process(programme[:FS])  # exactly 1 s: a 100 ms boundary
    value = meter.momentary_lufs
    meter.process(programme[FS : FS + 4799])  # 1 frame short of the next boundary
    assert meter.momentary_lufs == value
    meter.process(programme[FS + 4799 : FS + 4800])
    assert meter.momentary_lufs != value


# --- engine use: jitted caller, constant memory ----------------------------------------------


@numba.njit(nogil=True)
def _engine_like(x, state):
    for start in range(0, x.shape[0], 64):
        loudness_process_state(x[start : start + 64], state)


def test_kernel_runs_from_jitted_code_in_64_frame_blocks(programme):
    x = np.ascontiguousarray(programme[: 6 * FS])
    state = make_state(FS, np.ones(2))
    _engine_like(x, state)
    ref = measure(x, FS)
    assert state.meters[2] == pytest.approx(ref["integrated_lufs"], abs=1e-9)
    # State size is fixed by rate and channels, never by the duration measured.
    sizes = [a.nbytes for a in state]
    _engine_like(x, state)
    assert [a.nbytes for a in state] == sizes


# --- peaks, correlation, layouts -------------------------------------------------------------


def test_sample_and_true_peak_per_channel():
    t = np.arange(FS) / FS
    left = 0.5 * np.sin(2 * np.pi * (FS / 4) * t + np.pi / 4)  # samples at +-0.354
    right = 0.25 * np.sin(2 * np.pi * 1000.0 * t)
    x = np.column_stack([left, right])
    r = measure(x, FS)
    np.testing.assert_allclose(
        r["sample_peak_dbfs_per_channel"], 20 * np.log10(np.max(np.abs(x), axis=0)), atol=1e-12
    )
    # fs/4 at 45 degrees: the waveform peaks 3.01 dB above its samples, between them.
    assert r["true_peak_dbtp_per_channel"][0] == pytest.approx(20 * math.log10(0.5), abs=0.2)
    assert r["true_peak_dbtp_per_channel"][1] == pytest.approx(20 * math.log10(0.25), abs=0.05)
    assert r["true_peak_dbtp"] == max(r["true_peak_dbtp_per_channel"])


def test_correlation_against_numpy(programme):
    x = programme[: 10 * FS]
    meter = LoudnessMeter(FS, 2)
    meter.process(x)
    assert meter.programme_correlation == pytest.approx(np.corrcoef(x.T)[0, 1], abs=1e-9)
    last = x[-round(0.4 * FS) :]
    assert meter.correlation == pytest.approx(np.corrcoef(last.T)[0, 1], abs=1e-9)
    mono = x[:, :1]
    assert measure(np.column_stack([mono, mono]), FS)["correlation"] == pytest.approx(1.0)
    assert measure(np.column_stack([mono, -mono]), FS)["correlation"] == pytest.approx(-1.0)


def test_silence_conventions():
    meter = LoudnessMeter(FS, 2)
    meter.process(np.zeros((5 * FS, 2), dtype=np.float32))
    assert meter.momentary_lufs == -math.inf
    assert meter.shortterm_lufs == -math.inf
    assert meter.integrated_lufs == -math.inf
    assert meter.momentary_max_lufs == -math.inf
    assert meter.loudness_range_lu == 0.0
    assert meter.true_peak_dbtp == -math.inf
    assert meter.sample_peak_dbfs == -math.inf
    assert meter.correlation is None
    assert meter.programme_correlation is None
    assert LoudnessMeter(FS, 1).correlation is None


def test_lfe_is_excluded_and_weights_override(programme):
    five = np.column_stack([programme[:, 0], programme[:, 1], programme[:, 0], programme])
    lfe_loud = np.insert(five, 3, 0.9 * np.sin(2 * np.pi * 50 * np.arange(len(five)) / FS), 1)
    lfe_quiet = np.insert(five, 3, 0.0, axis=1)
    a = measure(lfe_loud, FS, layout="5.1")
    b = measure(lfe_quiet, FS, layout="5.1")
    c = measure(five, FS, layout="5.0")
    d = measure(lfe_quiet, FS, weights=[1.0, 1.0, 1.0, 0.0, 1.41, 1.41])
    for key in ("integrated_lufs", "loudness_range_lu", "shortterm_max_lufs"):
        assert a[key] == pytest.approx(c[key], abs=1e-9)
        assert b[key] == pytest.approx(c[key], abs=1e-9)
        assert d[key] == pytest.approx(c[key], abs=1e-9)
    # Surround channels count 1.41 times (+1.49 dB) a front channel (BS.1770-4 Table 3).
    only_ls = np.zeros((len(programme), 5))
    only_ls[:, 3] = programme[:, 0]
    only_l = np.zeros_like(only_ls)
    only_l[:, 0] = programme[:, 0]
    diff = measure(only_ls, FS)["integrated_lufs"] - measure(only_l, FS)["integrated_lufs"]
    assert diff == pytest.approx(10 * math.log10(1.41), abs=1e-9)


def test_mono_and_dual_mono():
    x = sine(-23.0, 5.0)
    mono = measure(x, FS)["integrated_lufs"]
    dual = measure(stereo(x), FS)["integrated_lufs"]
    assert dual - mono == pytest.approx(10 * math.log10(2.0), abs=1e-9)


# --- robustness and validation ---------------------------------------------------------------


def test_nan_input_clears_the_filter_and_is_counted():
    x = stereo(sine(-23.0, 6.0))
    bad = x.copy()
    bad[FS, 0] = np.nan
    meter = LoudnessMeter(FS, 2, true_peak=False)
    meter.process(bad[: 2 * FS])
    meter.process(bad[2 * FS :])
    assert meter.nonfinite_events == 1
    assert meter.shortterm_lufs == pytest.approx(-23.0, abs=0.1)  # recovered after 3 s
    assert math.isfinite(meter.integrated_lufs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"samplerate": 4000}, "samplerate"),
        ({"samplerate": float("nan")}, "samplerate"),
        ({"samplerate": 384000}, "samplerate"),
        ({"channels": 0}, "channels"),
        ({"channels": 3}, "no default layout"),
        ({"channels": 2, "layout": "7.1"}, "unknown layout"),
        ({"channels": 2, "layout": "5.1"}, "has 6 channels"),
        ({"channels": 2, "weights": [1.0]}, "one entry per channel"),
        ({"channels": 2, "weights": [1.0, float("nan")]}, "finite"),
        ({"channels": 2, "weights": [0.0, 0.0]}, "at least one"),
        ({"channels": 2, "weights": [1.0, -1.0]}, ">= 0"),
    ],
)
def test_parameter_validation(kwargs, match):
    kwargs = {"samplerate": FS, **kwargs}
    with pytest.raises(ValueError, match=match):
        LoudnessMeter(**kwargs)


def test_audio_shape_validation():
    meter = LoudnessMeter(FS, 2)
    with pytest.raises(ValueError, match="channels"):
        meter.process(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="shape"):
        meter.process(np.zeros((2, 2, 2)))


# --- whole-signal path: threads, time pieces ---------------------------------------------------


def _assert_same_readings(a, b, atol=1e-9):
    assert a.keys() == b.keys()
    for key, value in a.items():
        other = b[key]
        if isinstance(value, list):
            np.testing.assert_allclose(other, value, rtol=0, atol=atol, err_msg=key)
        elif isinstance(value, float) and math.isfinite(value):
            assert abs(other - value) <= atol, (key, value, other)
        elif isinstance(value, float) and math.isnan(value):
            assert math.isnan(other), key
        else:
            assert other == value, (key, value, other)


@pytest.mark.parametrize("layout", ["mono", "stereo", "5.1"])
def test_threaded_measure_equals_streaming(programme, layout):
    x = {
        "mono": programme[:, :1],
        "stereo": programme,
        "5.1": np.column_stack([programme, programme[:, 0], 0.5 * programme[:, 1], programme]),
    }[layout]
    x = np.ascontiguousarray(x[: 25 * FS + 777])  # not a whole number of sub-blocks
    one = measure(x, FS, layout=layout, workers=1)
    for workers in (2, 3):
        _assert_same_readings(one, measure(x, FS, layout=layout, workers=workers))
    x32 = x.astype(np.float32)
    _assert_same_readings(
        measure(x32, FS, layout=layout, workers=1), measure(x32, FS, layout=layout, workers=2)
    )


def test_threaded_block_continues_a_stream(programme):
    # A meter that is mid-sub-block, fed a long block on 2 threads, then more blocks, ends
    # in the same state as one fed everything in one thread.
    cuts = (1234, 20 * FS + 99, 20 * FS + 5000)
    streaming = LoudnessMeter(FS, 2)
    threaded = LoudnessMeter(FS, 2)
    for a, b in zip((0, *cuts), (*cuts, len(programme)), strict=True):
        streaming.process(programme[a:b])
        threaded.process(programme[a:b], workers=2 if b - a > FS else 1)
    _assert_same_readings(streaming.readings(), threaded.readings())
    np.testing.assert_allclose(threaded.state.kstate, streaming.state.kstate, rtol=1e-9, atol=0)
    np.testing.assert_array_equal(threaded.state.tp_history, streaming.state.tp_history)
    np.testing.assert_array_equal(threaded.state.counters, streaming.state.counters)


def test_threaded_nan_input_behaves_like_streaming(programme):
    x = programme[: 12 * FS].copy()
    x[5 * FS + 17, 1] = np.nan
    meters = [LoudnessMeter(FS, 2), LoudnessMeter(FS, 2)]
    for meter, workers in zip(meters, (1, 2), strict=True):
        meter.process(x, workers=workers)
        meter.process(programme[12 * FS : 16 * FS], workers=workers)
    assert meters[0].nonfinite_events == meters[1].nonfinite_events == 1
    _assert_same_readings(meters[0].readings(), meters[1].readings())


@pytest.mark.parametrize("subs", [552, 553, 5000, 60001])
@pytest.mark.parametrize(("groups", "per_group"), [(1, 1), (1, 16), (2, 5), (3, 16)])
def test_piece_plan_measures_every_sub_block_once(subs, groups, per_group):
    settle = 69  # 0.69 s of 10 ms sub-blocks: the 48 kHz settling run
    plan = _piece_plan(subs, settle, groups, per_group)
    assert len(plan) == groups
    measured = np.zeros(subs, dtype=int)
    for origin, measure_from, stop in plan:
        for o, m, s in zip(origin, measure_from, stop, strict=True):
            first = o + m
            assert m == (0 if first == 0 else settle)  # only the signal's start needs no run-in
            assert o >= 0
            measured[first:s] += 1
    np.testing.assert_array_equal(measured, 1)
    assert plan[-1][2][-1] == subs  # the last piece ends the body: its state goes on
    # the pieces run in lockstep: all as long as the first, unless the body ends first
    length = plan[0][2][0]
    for origin, _, stop in plan:
        np.testing.assert_array_equal(stop, np.minimum(subs, origin + length))


@pytest.mark.parametrize("samplerate", [8000, 48000, 192000])
def test_settle_frames_bounds_the_free_response(samplerate):
    # The state a time piece settles to differs from the sequential one by the filter's free
    # response; scipy's sosfilt from a random initial state gives it independently.
    state = make_state(samplerate, np.ones(1))
    settle = settle_frames(state.kcoefs)
    zi = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 2))
    free, zf = signal.sosfilt(kweighting_sos(samplerate), np.zeros(settle), zi=zi)
    assert np.max(np.abs(free[-100:])) < 1e-30
    assert np.max(np.abs(zf)) < 1e-30


def test_workers_validation():
    with pytest.raises(ValueError, match="workers"):
        LoudnessMeter(FS, 2).process(np.zeros((10, 2)), workers=0)
