"""The engine graph end to end: routing, pan law, sends, solo/mute, monitor section,
click-free switching, block-size invariance and NaN containment."""

import math

import numpy as np
import pytest
import scipy.signal as ss

from studiod.dsp.engine import GAIN_RAMP_MS, Engine, QueueFull
from studiod.dsp.registry import ParamError
from studiod.dsp.session import Session
from tests.dsp.reference import rbj_reference_ba

FS = 48000
SESSION = Session.from_dict(
    {
        "samplerate": FS,
        "channel": [
            {"name": "kick", "inputs": 1},
            {"name": "bass", "inputs": 2},
            {"name": "keys", "inputs": [3, 4]},
        ],
        "group": [{"name": "drums"}],
        "fx": [{"name": "verb", "kind": "reverb"}, {"name": "echo", "kind": "delay"}],
        "monitor": {
            "ext_inputs": [5, 6],
            "system": [
                {"name": "studio", "outputs": [1, 2]},
                {"name": "alt", "outputs": [3, 4]},
                {"name": "mono", "outputs": 5, "mono": True},
                {"name": "sub", "outputs": 6, "additive": True},
            ],
        },
    }
)


def bare_engine(**settings) -> Engine:
    """An engine whose master chain is transparent, with ``settings`` applied at once."""
    engine = Engine(SESSION, max_block_frames=FS)
    for address, value in {"/master/limiter/on": 0, **settings}.items():
        engine.set(address, value)
    settle(engine)
    return engine


def settle(engine: Engine, seconds: float = 0.3) -> None:
    engine.render(np.zeros((int(seconds * FS), SESSION.n_inputs), np.float32), 64)


def play(engine: Engine, x: np.ndarray, block_frames: int = 64) -> np.ndarray:
    """Render and drop the master chain's latency, so output frame i answers input frame i."""
    lat = engine.latency_samples
    padded = np.concatenate([x, np.zeros((lat, x.shape[1]), np.float32)])
    return engine.render(padded, block_frames)[lat:]


def inputs(n: int, **columns) -> np.ndarray:
    x = np.zeros((n, SESSION.n_inputs), np.float32)
    for name, signal in columns.items():
        x[:, int(name[1:]) - 1] = signal
    return x


def noise(n: int, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * level).astype(np.float32)


def test_mono_channel_at_centre_is_minus_3_db_on_each_side():
    engine = bare_engine()
    x = noise(4800)
    y = play(engine, inputs(4800, c1=x))
    np.testing.assert_allclose(y[:, 0], x * math.sqrt(0.5), atol=1e-6)
    np.testing.assert_allclose(y[:, 1], x * math.sqrt(0.5), atol=1e-6)
    assert not y[:, 2:].any()


@pytest.mark.parametrize("pan", [-1.0, -0.5, 0.0, 0.3, 1.0])
def test_pan_law_is_constant_power(pan):
    engine = bare_engine(**{"/ch/1/pan": pan})
    x = noise(4800)
    y = play(engine, inputs(4800, c1=x))
    theta = (pan + 1.0) * math.pi / 4.0
    np.testing.assert_allclose(y[:, 0], x * math.cos(theta), atol=1e-6)
    np.testing.assert_allclose(y[:, 1], x * math.sin(theta), atol=1e-6)
    power = (y[:, 0].astype(float) ** 2 + y[:, 1] ** 2).sum() / (x.astype(float) ** 2).sum()
    assert power == pytest.approx(1.0, abs=1e-5)


def test_stereo_channel_balance_keeps_sides_apart():
    engine = bare_engine(**{"/ch/3/pan": 0.5})
    left, right = noise(4800, 1), noise(4800, 2)
    y = play(engine, inputs(4800, c3=left, c4=right))
    theta = 1.5 * math.pi / 4.0
    np.testing.assert_allclose(y[:, 0], left * math.sqrt(2) * math.cos(theta), atol=1e-6)
    np.testing.assert_allclose(y[:, 1], right, atol=1e-6)


def test_fader_trim_and_polarity_multiply():
    engine = bare_engine(**{"/ch/1/fader": -6.0, "/ch/1/trim": 3.0, "/ch/1/polarity": 1})
    x = noise(4800)
    y = play(engine, inputs(4800, c1=x))
    gain = -(10 ** (-3.0 / 20)) * math.sqrt(0.5)
    np.testing.assert_allclose(y[:, 0], x * gain, atol=1e-6)


def test_channel_eq_band_matches_the_analog_reference():
    engine = bare_engine(**{"/ch/1/eq/2/gain": 6.0, "/ch/1/eq/2/freq": 1000.0, "/ch/1/eq/2/q": 1.4})
    x = noise(9600)
    y = play(engine, inputs(9600, c1=x))
    b, a = rbj_reference_ba("peak", 1000.0, 1.4, 6.0, FS)
    ref = ss.lfilter(b, a, x.astype(float)) * math.sqrt(0.5)
    np.testing.assert_allclose(y[:, 0], ref, atol=2e-6)


@pytest.mark.parametrize(("slope", "order"), [("6", 1), ("12", 2), ("18", 3), ("24", 4)])
def test_channel_high_pass_slopes_are_butterworth(slope, order):
    engine = bare_engine(**{"/ch/1/hpf/on": 1, "/ch/1/hpf/freq": 120.0, "/ch/1/hpf/slope": slope})
    x = noise(9600)
    y = play(engine, inputs(9600, c1=x))
    sos = ss.butter(order, 120.0, "highpass", fs=FS, output="sos")
    ref = ss.sosfilt(sos, x.astype(float)) * math.sqrt(0.5)
    np.testing.assert_allclose(y[:, 0], ref, atol=2e-6)


def test_mute_and_solo_in_place():
    engine = bare_engine(**{"/ch/1/solo": 1})
    y = play(engine, inputs(4800, c1=noise(4800, 1), c2=noise(4800, 2)))
    np.testing.assert_allclose(y[:, 0], noise(4800, 1) * math.sqrt(0.5), atol=1e-6)
    engine = bare_engine(**{"/ch/1/mute": 1})
    y = play(engine, inputs(4800, c1=noise(4800, 1), c2=noise(4800, 2)))
    np.testing.assert_allclose(y[:, 0], noise(4800, 2) * math.sqrt(0.5), atol=1e-6)


def test_group_routing_and_group_fader():
    engine = bare_engine(**{"/ch/1/bus": "drums", "/bus/drums/fader": -6.0})
    x = noise(4800)
    y = play(engine, inputs(4800, c1=x))
    np.testing.assert_allclose(y[:, 0], x * math.sqrt(0.5) * 10 ** (-6 / 20), atol=1e-6)


def test_mute_is_click_free():
    engine = bare_engine()
    t = np.arange(FS) / FS
    x = (0.9 * np.sin(2 * np.pi * 100 * t)).astype(np.float32)
    first = engine.render(inputs(2400, c1=x[:2400]), 64)
    engine.set("/ch/1/mute", 1)
    second = engine.render(inputs(FS - 2400, c1=x[2400:]), 64)
    y = np.concatenate([first, second])[:, 0]
    natural_step = 0.9 * math.sqrt(0.5) * 2 * np.pi * 100 / FS
    assert np.max(np.abs(np.diff(y))) < natural_step * 1.05
    assert np.max(np.abs(y[-4800:])) < 1e-6  # silent well after the fade


def test_monitor_system_switch_moves_the_signal_without_a_click():
    engine = bare_engine()
    t = np.arange(FS) / FS
    x = (0.9 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    first = engine.render(inputs(4800, c1=x[:4800]), 64)
    engine.set("/monitor/system", "alt")
    second = engine.render(inputs(FS - 4800, c1=x[4800:]), 64)
    y = np.concatenate([first, second])
    assert np.max(np.abs(y[-4800:, :2])) < 1e-6
    lat = engine.latency_samples
    np.testing.assert_allclose(y[-4800:, 2], x[-4800 - lat : -lat] * math.sqrt(0.5), atol=1e-6)
    natural_step = 0.9 * math.sqrt(0.5) * 2 * np.pi * 200 / FS
    assert np.max(np.abs(np.diff(y[:, :4], axis=0))) < natural_step * 1.05


def test_mono_system_and_additive_system():
    engine = bare_engine(**{"/monitor/system": "mono", "/monitor/systems/sub/on": 1})
    left, right = noise(4800, 1), noise(4800, 2)
    y = play(engine, inputs(4800, c3=left, c4=right))
    np.testing.assert_allclose(y[:, 4], 0.5 * (left + right), atol=1e-6)
    np.testing.assert_allclose(y[:, 5], 0.5 * (left + right), atol=1e-6)
    assert not y[:, :4].any()


@pytest.mark.parametrize(
    ("settings", "matrix"),
    [
        ({"/monitor/mono": 1}, [[0.5, 0.5], [0.5, 0.5]]),
        ({"/monitor/swap": 1}, [[0, 1], [1, 0]]),
        ({"/monitor/side": 1}, [[0.5, -0.5], [0.5, -0.5]]),
        ({"/monitor/solo": "left"}, [[1, 0], [1, 0]]),
        ({"/monitor/solo": "right"}, [[0, 1], [0, 1]]),
        ({"/monitor/polarity": 1}, [[-1, 0], [0, 1]]),
        ({"/monitor/dim/on": 1, "/monitor/dim/level": -20.0}, [[0.1, 0], [0, 0.1]]),
        ({"/monitor/level": -6.0}, [[10 ** (-6 / 20), 0], [0, 10 ** (-6 / 20)]]),
        (
            {"/monitor/reference/on": 1, "/monitor/reference/level": -12.0},
            [[10 ** (-0.6), 0], [0, 10 ** (-0.6)]],
        ),
        ({"/monitor/cut": 1}, [[0, 0], [0, 0]]),
    ],
)
def test_monitor_matrix(settings, matrix):
    engine = bare_engine(**settings)
    left, right = noise(4800, 1), noise(4800, 2)
    y = play(engine, inputs(4800, c3=left, c4=right))
    m = np.array(matrix, dtype=float)
    np.testing.assert_allclose(y[:, 0], m[0, 0] * left + m[0, 1] * right, atol=1e-6)
    np.testing.assert_allclose(y[:, 1], m[1, 0] * left + m[1, 1] * right, atol=1e-6)


def test_external_source_replaces_the_mix():
    engine = bare_engine(**{"/monitor/source": "ext"})
    ext_l, ext_r = noise(4800, 5), noise(4800, 6)
    y = engine.render(inputs(4800, c1=noise(4800, 1), c5=ext_l, c6=ext_r), 64)
    lat = engine.safety_latency_samples  # the external source skips the master chain
    np.testing.assert_allclose(y[lat:, 0], ext_l[:-lat], atol=1e-6)
    np.testing.assert_allclose(y[lat:, 1], ext_r[:-lat], atol=1e-6)


def test_system_delay_and_trim():
    engine = bare_engine(
        **{"/monitor/systems/studio/delay": 10.0, "/monitor/systems/studio/trim": -6.0}
    )
    x = noise(4800)
    y = play(engine, inputs(4800, c1=x))
    d = 480
    ref = x[:-d] * math.sqrt(0.5) * 10 ** (-6 / 20)
    np.testing.assert_allclose(y[d:, 0], ref, atol=1e-6)


def busy_engine() -> Engine:
    return bare_engine(
        **{
            "/ch/1/hpf/on": 1,
            "/ch/1/eq/1/gain": 3.0,
            "/ch/2/eq/3/gain": -4.0,
            "/ch/2/pan": -0.4,
            "/ch/3/lpf/on": 1,
            "/ch/3/bus": "drums",
            "/master/eq/4/gain": 2.0,
            "/master/limiter/on": 1,
            "/monitor/systems/studio/eq/2/gain": -3.0,
        }
    )


def test_block_size_invariance_of_the_whole_engine():
    x = np.stack([noise(FS, seed) for seed in range(SESSION.n_inputs)], axis=1) * 3
    long_block = busy_engine().render(x, block_frames=FS)
    small_blocks = busy_engine().render(x, block_frames=64)
    odd_blocks = busy_engine().render(x, block_frames=333)
    np.testing.assert_allclose(small_blocks, long_block, atol=1e-6)
    np.testing.assert_allclose(odd_blocks, long_block, atol=1e-6)


def test_nan_and_inf_inputs_never_reach_an_output():
    engine = busy_engine()
    x = np.stack([noise(9600, seed) for seed in range(SESSION.n_inputs)], axis=1)
    x[1000, 0] = np.nan
    x[5000, 2] = np.inf
    x[7000, 4] = -np.inf
    y = engine.render(x, 64)
    assert np.isfinite(y).all()
    assert engine.nan_events >= 3
    # the other channels keep playing, and the faulty one comes back after the bad block
    clean = bare_engine()
    assert np.abs(y[8000:, 0]).max() > 0.01
    assert clean.nan_events == 0


def test_bad_parameter_changes_are_refused_before_the_queue():
    engine = bare_engine()
    with pytest.raises(ParamError):
        engine.set("/ch/1/fader", float("nan"))
    with pytest.raises(ParamError):
        engine.set("/nowhere", 1.0)


def test_the_queue_is_bounded_and_never_blocks():
    engine = bare_engine()
    with pytest.raises(QueueFull):
        for _ in range(100_000):
            engine.set("/ch/1/fader", -3.0)
    settle(engine, 0.01)
    engine.set("/ch/1/fader", -3.0)  # drained: room again


def test_a_fader_move_is_heard_within_one_block_and_one_ramp():
    engine = bare_engine()
    x = np.full(4800, 0.5, np.float32)
    engine.render(inputs(4800, c1=x), 64)
    engine.set("/ch/1/fader", -20.0)
    y = engine.render(inputs(4800, c1=x), 64)[engine.latency_samples :, 0]
    arrived = np.flatnonzero(np.abs(y - 0.5 * 0.1 * math.sqrt(0.5)) < 1e-6)[0]
    assert arrived <= 64 + round(GAIN_RAMP_MS * 1e-3 * FS) + 1
