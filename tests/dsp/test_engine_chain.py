"""The processors wired into the engine: dynamics, sends and FX returns, the master chain
(multiband, limiter, dither) and the monitor systems' simulations and safety limiters."""

import math

import numpy as np
import pytest
import scipy.signal as ss

from studiod.dsp.dynamics import Compressor
from studiod.dsp.filters import to_sos
from studiod.dsp.simulation import design_simulation, makeup_gain_db
from studiod.dsp.truepeak import TruePeakMeter
from tests.dsp.test_engine import FS, SESSION, bare_engine, inputs, noise, play, settle


def true_peak_db(x: np.ndarray, factor: int = 8) -> float:
    """An independent true-peak estimate: scipy's polyphase resampler at ``factor``x."""
    up = ss.resample_poly(x.astype(float), factor, 1, axis=0)
    return 20 * math.log10(np.max(np.abs(up)))


def test_channel_compressor_is_the_compressor_processor():
    settings = {
        "threshold_db": -30.0,
        "ratio": 4.0,
        "knee_db": 6.0,
        "attack_ms": 5.0,
        "release_ms": 80.0,
        "makeup_db": 3.0,
    }
    engine = bare_engine(
        **{
            "/ch/1/comp/on": 1,
            "/ch/1/comp/threshold": -30.0,
            "/ch/1/comp/ratio": 4.0,
            "/ch/1/comp/knee": 6.0,
            "/ch/1/comp/attack": 5.0,
            "/ch/1/comp/release": 80.0,
            "/ch/1/comp/makeup": 3.0,
        }
    )
    x = noise(9600, level=0.3)
    y = play(engine, inputs(9600, c1=x))
    ref = Compressor(FS, **settings).process(x.astype(float)) * math.sqrt(0.5)
    np.testing.assert_allclose(y[:, 0], ref, atol=2e-6)
    assert np.std(y[:, 0]) < 0.6 * np.std(x * math.sqrt(0.5))


def test_stereo_channel_dynamics_are_linked():
    engine = bare_engine(**{"/ch/3/comp/on": 1, "/ch/3/comp/threshold": -40.0})
    left = noise(9600, 1, level=0.1)
    y = play(engine, inputs(9600, c3=left, c4=left * 0.01))
    gain_left = y[4800:, 0] / left[4800:]
    gain_right = y[4800:, 1] / (left[4800:] * 0.01)
    np.testing.assert_allclose(gain_left, gain_right, rtol=1e-4)


def test_gate_closes_on_quiet_input():
    engine = bare_engine(
        **{"/ch/1/gate/on": 1, "/ch/1/gate/threshold": -30.0, "/ch/1/gate/range": 60.0}
    )
    x = noise(FS, level=0.001)  # -60 dBFS: below the threshold
    y = play(engine, inputs(FS, c1=x))
    attenuation_db = 20 * math.log10(np.std(y[FS // 2 :, 0]) / np.std(x[FS // 2 :] * 0.7071))
    assert attenuation_db == pytest.approx(-60.0, abs=0.5)


def test_post_and_pre_fader_sends_feed_the_reverb():
    x = np.zeros(FS, np.float32)
    x[100] = 0.5
    dry = bare_engine(**{"/ch/1/fader": -90.0})
    assert np.max(np.abs(play(dry, inputs(FS, c1=x)))) < 1e-6  # -120 dB
    post = bare_engine(**{"/ch/1/fader": -90.0, "/ch/1/send/verb/level": 0.0})
    assert np.max(np.abs(play(post, inputs(FS, c1=x)))) < 1e-6  # follows the fader
    pre = bare_engine(
        **{"/ch/1/fader": -90.0, "/ch/1/send/verb/level": 0.0, "/ch/1/send/verb/pre": 1}
    )
    tail = play(pre, inputs(FS, c1=x))
    assert np.max(np.abs(tail[:, :2])) > 1e-3
    # a reverb tail, not a copy of the impulse: energy spread over time, L and R different
    energy = np.cumsum(tail[:, 0].astype(float) ** 2)
    assert energy[FS // 4] < 0.9 * energy[-1]
    assert abs(np.corrcoef(tail[:, 0], tail[:, 1])[0, 1]) < 0.5


def test_delay_return_repeats_at_the_set_time():
    x = np.zeros(FS, np.float32)
    x[0] = 0.5
    engine = bare_engine(
        **{
            "/ch/1/fader": -90.0,
            "/ch/1/send/echo/level": 0.0,
            "/ch/1/send/echo/pre": 1,
            "/fx/echo/time/left": 250.0,
            "/fx/echo/eq/hpf": 20.0,
            "/fx/echo/eq/lpf": 20000.0,
        }
    )
    settle(engine, 1.5)  # the delay time glides (tape-style) from its default to 250 ms
    y = play(engine, inputs(FS, c1=x))
    assert np.argmax(np.abs(y[:, 0])) == pytest.approx(0.25 * FS, abs=3)


def test_group_glue_compressor_reduces_the_group():
    x = noise(FS, level=0.3)
    off = play(bare_engine(**{"/ch/1/bus": "drums"}), inputs(FS, c1=x))
    on = play(
        bare_engine(
            **{
                "/ch/1/bus": "drums",
                "/bus/drums/comp/on": 1,
                "/bus/drums/comp/threshold": -30.0,
                "/bus/drums/comp/ratio": 4.0,
            }
        ),
        inputs(FS, c1=x),
    )
    assert np.std(on[FS // 2 :, 0]) < 0.5 * np.std(off[FS // 2 :, 0])


def test_multiband_without_gain_reduction_keeps_the_magnitude_flat():
    engine = bare_engine(
        **{
            "/master/mb/on": 1,
            "/master/mb/1/threshold": 0.0,
            "/master/mb/2/threshold": 0.0,
            "/master/mb/3/threshold": 0.0,
        }
    )
    x = np.zeros(16384, np.float32)
    x[0] = 0.01
    y = play(engine, inputs(16384, c1=x))[:, 0]
    magnitude_db = 20 * np.log10(np.abs(np.fft.rfft(y)) / np.abs(np.fft.rfft(x * 0.7071)))
    band = slice(int(20 / FS * 16384), int(20000 / FS * 16384))
    assert np.max(np.abs(magnitude_db[band])) < 0.01


@pytest.mark.parametrize("ceiling_dbtp", [-1.0, -0.3])
def test_master_limiter_holds_the_true_peak_ceiling(ceiling_dbtp):
    engine = bare_engine(**{"/master/limiter/on": 1, "/master/limiter/ceiling": ceiling_dbtp})
    x = np.stack([noise(FS, seed, level=0.5) for seed in range(SESSION.n_inputs)], axis=1)
    master = engine.render(x * 2, 64, tap="master")
    assert true_peak_db(master[engine.master_latency_samples :]) <= ceiling_dbtp + 1e-6
    meter = TruePeakMeter(FS, lanes=2)
    meter.process(master)
    assert meter.overall_dbtp <= ceiling_dbtp + 1e-6
    assert true_peak_db(master) > ceiling_dbtp - 1.0  # it is limiting, not just quiet


@pytest.mark.parametrize(("bits", "scale"), [("16", 2**15), ("24", 2**23)])
def test_master_dither_lands_on_the_word_length_grid(bits, scale):
    engine = bare_engine(**{"/master/dither/bits": bits, "/master/dither/shape": 1})
    master = engine.render(inputs(9600, c1=noise(9600, level=0.05)), 64, tap="master")
    codes = master.astype(float) * scale
    np.testing.assert_array_equal(codes, np.round(codes))
    assert np.count_nonzero(np.diff(codes[:, 0])) > 1000


def test_car_system_plays_through_its_simulation():
    engine = bare_engine(**{"/monitor/system": "alt", "/monitor/systems/alt/sim": "car"})
    x = noise(4 * FS, level=0.05)
    y = play(engine, inputs(4 * FS, c3=x, c4=x))  # a centred stereo source
    f, h_est = ss.csd(x, y[:, 2], fs=FS, nperseg=8192)
    _, pxx = ss.welch(x, fs=FS, nperseg=8192)
    measured_db = 20 * np.log10(np.abs(h_est / pxx))
    _, h = ss.sosfreqz(to_sos(design_simulation("car", FS)), worN=f, fs=FS)
    # the filters' response plus the loudness-matching make-up of a stereo system
    expected_db = 20 * np.log10(np.maximum(np.abs(h), 1e-12)) + makeup_gain_db("car", FS)
    for freq in (50.0, 100.0, 1000.0, 10000.0):
        k = np.argmin(np.abs(f - freq))
        assert measured_db[k] == pytest.approx(expected_db[k], abs=0.5), freq


def test_safety_limiter_protects_every_output():
    engine = bare_engine(**{"/monitor/systems/studio/limit": -6.0, "/ch/1/fader": 10.0})
    y = play(engine, inputs(FS, c1=noise(FS, level=1.0)))
    assert np.max(np.abs(y[:, :2])) <= 10 ** (-6 / 20) + 1e-7


def test_master_bus_compressor_is_the_compressor_processor():
    engine = bare_engine(
        **{
            "/master/comp/on": 1,
            "/master/comp/threshold": -30.0,
            "/master/comp/ratio": 4.0,
            "/master/comp/knee": 0.0,
            "/master/comp/attack": 10.0,
            "/master/comp/release": 100.0,
        }
    )
    left, right = noise(9600, 1, level=0.2), noise(9600, 2, level=0.2)
    y = play(engine, inputs(9600, c3=left, c4=right))
    ref = Compressor(
        FS,
        lanes=2,
        threshold_db=-30.0,
        ratio=4.0,
        knee_db=0.0,
        attack_ms=10.0,
        release_ms=100.0,
        link="stereo",
    ).process(np.column_stack([left, right]).astype(float))
    np.testing.assert_allclose(y[:, :2], ref, atol=2e-6)
