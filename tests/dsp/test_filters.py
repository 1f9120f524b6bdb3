import numpy as np
import pytest
import scipy.signal as ss

from studiod.dsp.filters import (
    CASCADE_SECTIONS,
    CASCADE_TILE,
    HIGHPASS,
    HIGHSHELF,
    PEAK,
    STACK_LANES,
    IIRFilter,
    biquad_bank,
    biquad_cascade_bank,
    design_biquad,
    to_sos,
)
from tests.dsp.reference import rbj_reference_ba

RATES = (44100, 48000, 96000)


@pytest.mark.parametrize("samplerate", RATES)
@pytest.mark.parametrize(
    ("kind", "freq_hz", "q", "gain_db"),
    [
        ("lowpass", 1000.0, 0.707, 0.0),
        ("highpass", 80.0, 0.707, 0.0),
        ("bandpass", 2500.0, 2.0, 0.0),
        ("notch", 60.0, 10.0, 0.0),
        ("allpass", 500.0, 0.5, 0.0),
        ("peak", 1000.0, 1.4, 6.0),
        ("peak", 12000.0, 0.7, -9.0),
        ("lowshelf", 120.0, 0.707, 4.5),
        ("highshelf", 8000.0, 0.707, -3.0),
        ("highshelf", 15000.0, 1.2, 12.0),
    ],
)
def test_rbj_response_matches_the_bilinear_analog_prototype(samplerate, kind, freq_hz, q, gain_db):
    filt = IIRFilter.rbj(kind, freq_hz, samplerate, q=q, gain_db=gain_db)
    freqs = np.geomspace(10.0, 0.49 * samplerate, 400)
    _, ours = ss.sosfreqz(filt.sos, worN=freqs, fs=samplerate)
    _, ref = ss.freqz(*rbj_reference_ba(kind, freq_hz, q, gain_db, samplerate), worN=freqs,
                      fs=samplerate)  # fmt: skip
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("samplerate", RATES)
@pytest.mark.parametrize("kind", ["highpass", "lowpass"])
@pytest.mark.parametrize("order", [2, 4])
def test_butterworth_equals_scipy_butter(samplerate, kind, order):
    freq_hz = 90.0 if kind == "highpass" else 9000.0
    x = np.random.default_rng(1).standard_normal((samplerate // 2, 2))
    filt = IIRFilter.butterworth(kind, order, freq_hz, samplerate, lanes=2)
    ours = np.concatenate([filt.process(x[:777]), filt.process(x[777:])])
    ref = ss.sosfilt(ss.butter(order, freq_hz, kind, fs=samplerate, output="sos"), x, axis=0)
    np.testing.assert_allclose(ours, ref, atol=1e-9)


@pytest.mark.parametrize("kind", ["lowpass1", "highpass1"])
def test_first_order_equals_scipy_butter_1(kind):
    btype = "lowpass" if kind == "lowpass1" else "highpass"
    filt = IIRFilter.rbj(kind, 300.0, 48000)
    b, a = ss.butter(1, 300.0, btype, fs=48000)
    np.testing.assert_allclose(filt.coefs[0, :2], b, rtol=1e-12)
    np.testing.assert_allclose(filt.coefs[0, 3], a[1], rtol=1e-12)


def test_block_size_invariance_and_float32_io():
    x = np.random.default_rng(2).standard_normal(10_000).astype(np.float32)
    whole = IIRFilter.rbj("peak", 3000.0, 48000, q=2.0, gain_db=8.0).process(x)
    split_filter = IIRFilter.rbj("peak", 3000.0, 48000, q=2.0, gain_db=8.0)
    split = np.concatenate([split_filter.process(x[i : i + 64]) for i in range(0, len(x), 64)])
    assert whole.dtype == np.float32
    np.testing.assert_array_equal(whole, split)


def test_state_decays_to_exact_zero_instead_of_denormals():
    filt = IIRFilter.butterworth("lowpass", 4, 30.0, 48000)
    filt.process(np.ones(4800))
    filt.process(np.zeros(48000 * 30))
    assert np.all(filt.state == 0.0)


def test_to_sos_layout():
    sos = to_sos(np.array([[1.0, 2.0, 3.0, 4.0, 5.0]]))
    np.testing.assert_array_equal(sos, [[1.0, 2.0, 3.0, 1.0, 4.0, 5.0]])


def test_bad_kind_and_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown filter kind"):
        IIRFilter.rbj("wobble", 100.0, 48000)
    with pytest.raises(ValueError, match="even order"):
        IIRFilter.butterworth("highpass", 3, 100.0, 48000)
    with pytest.raises(ValueError, match="lanes"):
        IIRFilter.rbj("peak", 100.0, 48000, lanes=2).process(np.zeros(10))


@pytest.mark.parametrize(
    "lanes, sections, frames",
    [
        (3, 3, 1000),
        # more lanes and sections than one pass holds, a frame count no tile divides
        (STACK_LANES + 3, CASCADE_SECTIONS + 2, 3 * CASCADE_TILE + 17),
        (1, 1, 5),
    ],
)
def test_cascade_bank_equals_a_pass_per_active_section(lanes, sections, frames):
    """The same samples and final state as biquad_bank run once per active section, in two
    calls (the state carries over)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((frames, lanes))
    shapes = [(PEAK, 300.0), (HIGHPASS, 80.0), (HIGHSHELF, 6000.0)]
    coefs = np.zeros((sections, 5, lanes))
    for k in range(sections):
        kind, freq_hz = shapes[k % 3]
        for lane in range(lanes):
            design_biquad(kind, freq_hz * (1 + 0.1 * lane), 0.9, 4.0, 48000.0, coefs[k, :, lane])
    active = np.arange(sections) % 3 != 1 if sections > 1 else np.ones(1, bool)
    ours = x.copy()
    state = np.zeros((sections, 2, lanes))
    half = frames // 2
    biquad_cascade_bank(ours[:half], coefs, state, active)
    biquad_cascade_bank(ours[half:], coefs, state, active)
    ref = x.copy()
    for k in np.flatnonzero(active):
        ref_state = np.zeros((1, 2, lanes))
        biquad_bank(ref, ref, coefs[k : k + 1], ref_state)
        np.testing.assert_allclose(state[k], ref_state[0], atol=1e-12)
    np.testing.assert_allclose(ours, ref, atol=1e-12)
