"""Cue mixes and talkback in the engine: headphone systems follow the monitor bus or play
their own mix of the channels (pre or post fader, a pan of their own), and the talkback mic
reaches the cue systems while the speakers dim."""

import math

import numpy as np
import pytest

from studiod.dsp.registry import FADER_OFF_DB
from studiod.dsp.session import Session, SessionError
from tests.dsp.test_engine import FS

SESSION = Session.from_dict(
    {
        "samplerate": FS,
        "channel": [{"name": "kick", "inputs": 1}, {"name": "bass", "inputs": 2}],
        "monitor": {
            "talkback_input": 7,
            "system": [
                {"name": "studio", "outputs": [1, 2]},
                {"name": "phones1", "outputs": [3, 4], "additive": True, "cue": True},
                {"name": "phones2", "outputs": [5, 6], "additive": True, "cue": True},
            ],
        },
    }
)
F_KICK, F_BASS, F_MIC = 997.0, 211.0, 3001.0
A = 0.1
CENTRE = math.cos(math.pi / 4)  # constant-power pan, -3 dB at centre


def engine_with(**settings):
    from studiod.dsp.engine import Engine

    engine = Engine(SESSION, max_block_frames=FS)
    base = {
        "/master/limiter/on": 0,
        "/monitor/systems/phones1/on": 1,
        "/monitor/systems/phones2/on": 1,
    }
    for address, value in {**base, **settings}.items():
        engine.set(address, value)
    return engine


def run(engine, seconds: float = 0.5) -> np.ndarray:
    """The last 0.2 s of ``seconds`` of the kick, bass and mic tones through ``engine``."""
    t = np.arange(int(seconds * FS)) / FS
    x = np.zeros((len(t), SESSION.n_inputs), np.float32)
    x[:, 0] = A * np.sin(2 * np.pi * F_KICK * t)
    x[:, 1] = A * np.sin(2 * np.pi * F_BASS * t)
    x[:, 6] = A * np.sin(2 * np.pi * F_MIC * t)
    return engine.render(x, 64)[-int(0.2 * FS) :].astype(np.float64)


def amp(y: np.ndarray, freq_hz: float) -> float:
    """Peak amplitude of the ``freq_hz`` component (least squares with the other tones)."""
    t = np.arange(len(y)) / FS
    basis = [np.ones(len(y))]
    for f in (freq_hz, *({F_KICK, F_BASS, F_MIC} - {freq_hz})):
        basis += [np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)]
    coefs, *_ = np.linalg.lstsq(np.column_stack(basis), y, rcond=None)
    return float(np.hypot(coefs[1], coefs[2]))


def db(ratio: float) -> float:
    return 20 * math.log10(ratio)


def test_cue_systems_follow_the_monitor_bus_by_default():
    y = run(engine_with())
    np.testing.assert_allclose(y[:, 2:4], y[:, 0:2], atol=1e-7)  # phones1 = studio
    np.testing.assert_allclose(y[:, 4:6], y[:, 0:2], atol=1e-7)
    assert amp(y[:, 0], F_KICK) == pytest.approx(A * CENTRE, rel=1e-3)
    assert amp(y[:, 0], F_MIC) < 1e-6  # no talkback


def test_a_cue_mix_is_its_own_pre_or_post_fader_with_its_own_pan():
    y = run(
        engine_with(
            **{
                "/monitor/systems/phones1/cue": 1,
                "/ch/1/cue/phones1/level": FADER_OFF_DB,  # no kick in this cue
                "/ch/2/cue/phones1/level": -6.0,
                "/ch/2/cue/phones1/pan": -1.0,  # the bass hard left in the headphones
                "/ch/2/fader": -20.0,  # the engineer pulls the bass down in the mix
            }
        )
    )
    studio, cue, follows = y[:, 0:2], y[:, 2:4], y[:, 4:6]
    assert db(amp(studio[:, 0], F_BASS) / (A * CENTRE)) == pytest.approx(-20.0, abs=0.01)
    # pre-fader: the musician's bass is where the cue send put it, whatever the mix fader
    assert db(amp(cue[:, 0], F_BASS) / A) == pytest.approx(-6.0, abs=0.01)
    assert amp(cue[:, 1], F_BASS) < 1e-6 and amp(cue[:, 0], F_KICK) < 1e-6
    np.testing.assert_allclose(follows, studio, atol=1e-7)  # phones2 still follows
    # post-fader: the mix fader moves the cue too
    engine = engine_with(
        **{
            "/monitor/systems/phones1/cue": 1,
            "/ch/2/cue/phones1/pre": 0,
            "/ch/2/fader": -20.0,
        }
    )
    cue = run(engine)[:, 2:4]
    assert db(amp(cue[:, 0], F_BASS) / (A * CENTRE)) == pytest.approx(-20.0, abs=0.01)
    assert db(amp(cue[:, 0], F_KICK) / (A * CENTRE)) == pytest.approx(0.0, abs=0.01)


def test_mute_silences_a_cue_send_solo_does_not():
    engine = engine_with(**{"/monitor/systems/phones1/cue": 1, "/ch/1/mute": 1, "/ch/2/solo": 1})
    y = run(engine)
    assert amp(y[:, 2], F_KICK) < 1e-6  # muted everywhere
    assert amp(y[:, 0], F_KICK) < 1e-6
    # the engineer's solo of the bass takes the kick out of the speakers, not the cue
    engine.set("/ch/1/mute", 0)
    y = run(engine)
    assert amp(y[:, 0], F_KICK) < 1e-6
    assert amp(y[:, 2], F_KICK) == pytest.approx(A * CENTRE, rel=1e-3)


def test_talkback_reaches_the_cues_and_dims_the_speakers():
    engine = engine_with(**{"/monitor/systems/phones1/cue": 1})
    before = run(engine)
    engine.set("/talkback/on", 1)
    y = run(engine)
    for col in range(2, 6):  # both cue systems, both ears, at the mic's level (0 dB)
        assert amp(y[:, col], F_MIC) == pytest.approx(A, rel=1e-3)
    for col in (0, 1):  # the speakers: 20 dB down (the default dim), and no mic
        assert db(amp(y[:, col], F_KICK) / amp(before[:, col], F_KICK)) == pytest.approx(
            -20.0, abs=0.01
        )
        assert amp(y[:, col], F_MIC) < 1e-6
    engine.set("/talkback/dim", -10.0)
    engine.set("/talkback/level", -6.0)
    y = run(engine)
    assert db(amp(y[:, 0], F_KICK) / amp(before[:, 0], F_KICK)) == pytest.approx(-10, abs=0.01)
    assert db(amp(y[:, 2], F_MIC) / A) == pytest.approx(-6.0, abs=0.01)
    engine.set("/talkback/on", 0)
    y = run(engine)
    np.testing.assert_allclose(y[:, 0:2], before[:, 0:2], atol=1e-6)
    assert amp(y[:, 2], F_MIC) < 1e-6


def test_talkback_switches_without_a_click():
    """A talkback press ramps the speakers' gain and the mic's over dsp.engine.GAIN_RAMP_MS:
    no sample moves by more than the tones' own steps plus the ramp's share of them."""
    from studiod.dsp.engine import GAIN_RAMP_MS

    engine = engine_with()
    t = np.arange(FS) / FS
    x = np.zeros((len(t), SESSION.n_inputs), np.float32)
    for col, f in ((0, F_KICK), (1, F_BASS), (6, F_MIC)):
        x[:, col] = A * np.sin(2 * np.pi * f * t)
    first = engine.render(x[: FS // 2], 64)
    engine.set("/talkback/on", 1)  # between two blocks of one continuous signal
    y = np.concatenate([first, engine.render(x[FS // 2 :], 64)]).astype(np.float64)
    steps = sum(2 * A * math.sin(math.pi * f / FS) for f in (F_KICK, F_BASS, F_MIC))
    bound = steps + 3 * A / (GAIN_RAMP_MS * 1e-3 * FS)
    for col in range(6):
        assert np.max(np.abs(np.diff(y[FS // 10 :, col]))) <= bound
    assert amp(y[-FS // 5 :, 2], F_MIC) == pytest.approx(A, rel=1e-3)  # it did switch


def test_talkback_needs_a_cue_system_and_the_addresses_follow_the_session():
    with pytest.raises(SessionError, match="talkback_input needs a cue system"):
        Session.from_dict(
            {
                "channel": [{"name": "a", "inputs": 1}],
                "monitor": {"talkback_input": 2, "system": [{"name": "s", "outputs": [1, 2]}]},
            }
        )
    from studiod.dsp.layout import build_layout

    registry = build_layout(SESSION).registry
    for address in ("/ch/1/cue/phones2/pan", "/monitor/systems/phones1/cue", "/talkback/dim"):
        assert address in registry
    assert (
        "/monitor/systems/studio/cue" not in registry and "/ch/1/cue/studio/level" not in registry
    )
