"""Monitor simulations: documented target points, mono phone, width, stability, and loudness
matching (every simulation as loud as none, measured through the engine)."""

import numpy as np
import pyloudnorm as pyln
import pytest
import scipy.signal as ss

from studiod.dsp._makeup import MAKEUP_DB
from studiod.dsp.engine import Engine
from studiod.dsp.loudness import LoudnessMeter, kweighting_sos
from studiod.dsp.session import SAMPLERATES, Session
from studiod.dsp.session import SIMULATIONS as SIMULATION_NAMES
from studiod.dsp.simulation import (
    SIMULATIONS,
    Simulation,
    compressor_change_db,
    design_makeup_db,
    design_simulation,
    filter_change_db,
    makeup_gain_db,
    match_noise,
)

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


# --- loudness matching, through the engine -----------------------------------------------------


def _match_session(samplerate: int) -> Session:
    """One stereo channel (the programme) and two monitor systems: a stereo pair and a single
    speaker with the mono sum."""
    return Session.from_dict(
        {
            "samplerate": samplerate,
            "channel": [{"name": "programme", "inputs": [1, 2]}],
            "monitor": {
                "system": [
                    {"name": "studio", "outputs": [1, 2]},
                    {"name": "single", "outputs": 3, "mono": True},
                ]
            },
        }
    )


PROGRAMME_S = 14.0  # long enough that the meters' own scatter is a few hundredths of a LU
SETTLE_S = 4.0  # compressors settled and switching ramps over before the measurement
SYSTEM_OUTPUTS = {"studio": [0, 1], "single": [2]}


def _programme(samplerate: int, seconds: float, seed: int) -> np.ndarray:
    """Gaussian pink noise 20 Hz..20 kHz, -20 dBFS RMS (mean square 0.01) per channel, the
    channels correlated 0.5 (a common part plus an independent one of equal power): the
    documented matching reference, made here independently of dsp/simulation.py."""
    n = round(seconds * samplerate)
    rng = np.random.default_rng(seed)
    f = np.fft.rfftfreq(n, 1 / samplerate)
    shape = np.where((f >= 20) & (f <= 20000), 1 / np.sqrt(np.maximum(f, 1)), 0)
    spectra = rng.standard_normal((3, len(f))) + 1j * rng.standard_normal((3, len(f)))
    common, a, b = np.fft.irfft(spectra * shape, n, axis=1)
    x = np.column_stack([common + a, common + b])
    return (x * 0.1 / np.sqrt(np.mean(x**2, axis=0))).astype(np.float32)


def _loudness(y: np.ndarray, samplerate: int) -> tuple[float, float]:
    """(project meter, pyloudnorm) integrated loudness of ``y`` (n, channels), LUFS."""
    meter = LoudnessMeter(samplerate, channels=y.shape[1])
    meter.process(y)
    theirs = pyln.Meter(samplerate).integrated_loudness(y.astype(np.float64))
    return meter.integrated_lufs, theirs


def _render_through(samplerate: int, system: str, sim: str, x: np.ndarray) -> np.ndarray:
    """x through an engine whose monitor section plays ``system`` with simulation ``sim``,
    set the way a user does (the monitor system's ``sim`` parameter)."""
    engine = Engine(_match_session(samplerate), max_block_frames=4096)
    engine.set("/monitor/system", system)
    engine.set(f"/monitor/systems/{system}/sim", sim)
    y = engine.render(x, 4096)
    return y[round(SETTLE_S * samplerate) :, SYSTEM_OUTPUTS[system]]


@pytest.fixture(scope="module", params=RATES)
def studio_loudness(request):
    """(rate, programme, {system: loudness with no simulation})."""
    fs = request.param
    x = _programme(fs, PROGRAMME_S, seed=2026)
    return fs, x, {system: _loudness(_render_through(fs, system, "none", x), fs)
                   for system in SYSTEM_OUTPUTS}  # fmt: skip


@pytest.mark.parametrize("system", sorted(SYSTEM_OUTPUTS))
@pytest.mark.parametrize("name", sorted(SIMULATIONS))
def test_simulation_is_loudness_matched_in_the_engine(studio_loudness, system, name):
    """-20 dBFS pink noise sounds as loud through every simulation as without one, on a
    stereo system and on a mono one, by the project's BS.1770 meter and by pyloudnorm."""
    fs, x, reference = studio_loudness
    ours, theirs = _loudness(_render_through(fs, system, name, x), fs)
    ref_ours, ref_theirs = reference[system]
    print(f"\n{fs} {system:6} {name:7} {ours - ref_ours:+.3f} LU (studiod) "
          f"{theirs - ref_theirs:+.3f} LU (pyloudnorm); none {ref_ours:.2f} LUFS")  # fmt: skip
    assert ours == pytest.approx(ref_ours, abs=0.5)
    assert theirs == pytest.approx(ref_theirs, abs=0.5)
    assert ours == pytest.approx(theirs, abs=0.05)  # the two meters agree on what they heard


@pytest.mark.parametrize("name", sorted(SIMULATIONS))
def test_makeup_is_designed_per_samplerate(name):
    """The make-up follows from the design at each rate: the filters' closed form and the
    compressor's measured steady state add up to it, and the rates agree (same analogue
    targets) within the compressor measurement's scatter."""
    for mono in (False, True):
        gains = [design_makeup_db(name, fs, mono) for fs in RATES]
        for fs, gain in zip(RATES, gains, strict=True):
            total = filter_change_db(name, fs, mono) + compressor_change_db(name, fs, mono)
            assert gain == pytest.approx(-total, abs=1e-12)
        assert max(gains) - min(gains) < 0.2
    if SIMULATIONS[name].compression is None:
        assert compressor_change_db(name, 48000) == 0.0
    else:
        assert compressor_change_db(name, 48000) < 0.0


def test_the_makeup_table_is_the_design_at_every_session_rate():
    """dsp/_makeup.py (``python -m studiod.dsp.simulation`` writes it) holds what the design
    gives, to its 6 decimals, for every simulation at every rate a session may run at."""
    assert sorted(MAKEUP_DB) == sorted(SAMPLERATES)
    for fs in SAMPLERATES:
        assert list(MAKEUP_DB[fs]) == list(SIMULATIONS), fs
        for name in SIMULATIONS:
            for mono in (False, True):
                designed = design_makeup_db(name, fs, mono)
                assert makeup_gain_db(name, fs, mono) == pytest.approx(designed, abs=1e-6)


def test_filter_change_closed_form_matches_filtered_noise():
    """The closed form against the filters run on a long noise (no compressor involved)."""
    x = match_noise(48000, 20.0, seed=5)
    kweight = ss.sosfilt(kweighting_sos(48000), x, axis=0)
    for name in SIMULATIONS:
        y = ss.sosfilt(kweighting_sos(48000), Simulation(name, 48000).process(x), axis=0)
        measured = 10 * np.log10(
            np.sum(np.mean(y**2, axis=0)) / np.sum(np.mean(kweight**2, axis=0))
        )
        assert measured == pytest.approx(filter_change_db(name, 48000), abs=0.05), name
