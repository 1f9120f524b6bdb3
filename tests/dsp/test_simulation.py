"""Monitor simulations: documented target points, mono phone, width, stability."""

import numpy as np
import pytest
import scipy.signal as ss

from studiod.dsp.session import SIMULATIONS as SIMULATION_NAMES
from studiod.dsp.simulation import SIMULATIONS, Simulation, design_simulation

RATES = (44100, 48000, 96000)


def _sos(coefs):
    return np.column_stack([coefs[:, :3], np.ones(len(coefs)), coefs[:, 3:]])


@pytest.mark.parametrize("samplerate", RATES)
@pytest.mark.parametrize("name", sorted(SIMULATIONS))
def test_response_hits_documented_targets(name, samplerate):
    targets = np.array(SIMULATIONS[name].targets, dtype=float)
    _, response = ss.sosfreqz(
        _sos(design_simulation(name, samplerate)), worN=targets[:, 0], fs=samplerate
    )
    np.testing.assert_allclose(20 * np.log10(np.abs(response)), targets[:, 1], atol=1.0)


@pytest.mark.parametrize("name", sorted(SIMULATIONS))
def test_processor_runs_the_designed_filters(name):
    samplerate = 48000
    x = np.random.default_rng(8).standard_normal((4000, 2)) * 0.2
    mono_in = np.repeat(x[:, :1], 2, axis=1)  # L = R: width has no effect on a mono input
    y = Simulation(name, samplerate).process(mono_in)
    expected = ss.sosfilt(_sos(design_simulation(name, samplerate)), mono_in[:, 0])
    np.testing.assert_allclose(y[:, 0], expected, atol=1e-12)
    np.testing.assert_allclose(y[:, 1], expected, atol=1e-12)


def test_phone_is_mono():
    samplerate = 48000
    x = np.random.default_rng(9).standard_normal((4000, 2)) * 0.2
    y = Simulation("phone", samplerate).process(x)
    np.testing.assert_array_equal(y[:, 0], y[:, 1])
    mono = ss.sosfilt(_sos(design_simulation("phone", samplerate)), (x[:, 0] + x[:, 1]) / 2)
    np.testing.assert_allclose(y[:, 0], mono, atol=1e-12)
    assert SIMULATIONS["phone"].mono


@pytest.mark.parametrize("name", ["car", "laptop", "earbuds", "tv"])
def test_width_scales_the_side(name):
    samplerate = 48000
    x = np.random.default_rng(10).standard_normal((4000, 2)) * 0.2
    y = Simulation(name, samplerate).process(x)
    sos = _sos(design_simulation(name, samplerate))
    side = ss.sosfilt(sos, (x[:, 0] - x[:, 1]) / 2)
    np.testing.assert_allclose((y[:, 0] - y[:, 1]) / 2, SIMULATIONS[name].width * side, atol=1e-12)


@pytest.mark.parametrize("samplerate", RATES)
@pytest.mark.parametrize("name", sorted(SIMULATIONS))
def test_stable(name, samplerate):
    coefs = design_simulation(name, samplerate)
    for row in coefs:
        assert np.all(np.abs(np.roots([1.0, row[3], row[4]])) < 1.0)
    impulse = np.zeros((samplerate, 2))
    impulse[0] = 1.0
    y = Simulation(name, samplerate).process(impulse)
    assert np.all(np.isfinite(y))
    assert np.max(np.abs(y[-samplerate // 10 :])) < 1e-9  # decays within a second
    loud = np.random.default_rng(12).uniform(-1, 1, (5 * samplerate, 2))
    y = Simulation(name, samplerate).process(loud)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) < 20.0


def test_block_size_invariance():
    x = np.random.default_rng(13).standard_normal((10000, 2)) * 0.2
    for name in SIMULATIONS:
        whole = Simulation(name, 48000).process(x)
        sim = Simulation(name, 48000)
        parts = np.concatenate([sim.process(x[i : i + 64]) for i in range(0, len(x), 64)])
        np.testing.assert_allclose(parts, whole, atol=1e-12)


def test_every_simulation_is_offered():
    assert SIMULATION_NAMES == ("none", *SIMULATIONS)


def test_spec_data_is_sane():
    for spec in SIMULATIONS.values():
        assert 0.0 <= spec.width <= 1.0
        assert len(spec.targets) >= 5
        if spec.compression is not None:
            c = spec.compression
            assert -40 <= c.threshold_db < 0 and 1 < c.ratio <= 4
            assert 0 < c.attack_ms < c.release_ms
    with pytest.raises(ValueError):
        design_simulation("cinema", 48000)
    with pytest.raises(ValueError):
        Simulation("car", 48000).process(np.zeros((10, 1)))
