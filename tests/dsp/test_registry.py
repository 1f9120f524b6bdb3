import math

import numpy as np
import pytest

from studiod.dsp.layout import build_layout
from studiod.dsp.registry import ParamError
from studiod.dsp.session import Session, SessionError, default_session


@pytest.fixture(scope="module")
def registry():
    return build_layout(default_session()).registry


def test_issue_addresses_exist_with_their_units(registry):
    expected = {
        "/ch/1/fader": "dB",
        "/ch/16/mute": "",
        "/ch/3/pan": "",
        "/ch/3/eq/2/gain": "dB",
        "/master/fader": "dB",
        "/master/limiter/ceiling": "dBTP",
        "/monitor/system": "",
        "/monitor/dim/on": "",
        "/monitor/mono": "",
        "/monitor/cut": "",
        "/monitor/level": "dB",
    }
    for address, unit in expected.items():
        assert registry[address].unit == unit
    assert registry["/monitor/system"].choices[:3] == ("studio", "alt", "headphones")
    assert registry["/ch/1/bus"].choices == ("master", "drums", "music")


def test_slots_are_dense_and_unique(registry):
    assert [p.index for p in registry] == list(range(len(registry)))


@pytest.mark.parametrize(
    ("address", "value", "reason"),
    [
        ("/ch/1/fader", math.nan, "finite"),
        ("/ch/1/fader", 11.0, "out of range"),
        ("/ch/1/pan", "left", "expected a number"),
        ("/ch/1/mute", 0.5, "toggle"),
        ("/monitor/system", "kitchen", "not one of"),
        ("/monitor/system", 99, "out of"),
        ("/ch/99/fader", 0.0, "unknown address"),
    ],
)
def test_bad_values_are_refused_with_a_reason(registry, address, value, reason):
    with pytest.raises(ParamError, match=reason):
        registry.set(address, value)


def test_enum_by_name_and_fader_minus_inf(registry):
    _, value = registry.set("/monitor/system", "car")
    assert registry["/monitor/system"].choices[int(value)] == "car"
    _, value = registry.set("/ch/2/fader", -math.inf)
    assert value == registry["/ch/2/fader"].minimum
    assert registry["/ch/2/fader"].format(value) == "-inf dB"


def test_fader_taper_follows_the_console_law(registry):
    fader = registry["/ch/1/fader"]
    # X32 law breakpoints: 0.5 -> -10 dB, 0.25 -> -30 dB, 1.0 -> +10 dB
    assert fader.from_normalized(0.5) == pytest.approx(-10.0)
    assert fader.from_normalized(0.25) == pytest.approx(-30.0)
    assert fader.from_normalized(1.0) == pytest.approx(10.0)
    for pos in np.linspace(0, 1, 17):
        assert fader.to_normalized(fader.from_normalized(pos)) == pytest.approx(pos, abs=1e-12)


def test_log_taper_is_equal_steps_per_octave(registry):
    freq = registry["/ch/1/hpf/freq"]
    assert freq.from_normalized(0.5) == pytest.approx(math.sqrt(20.0 * 2000.0))


def test_session_errors_name_the_problem():
    with pytest.raises(SessionError, match="samplerate"):
        Session.from_dict({"samplerate": 12345, "channel": [{"name": "a", "inputs": 1}]})
    with pytest.raises(SessionError, match="unknown key"):
        Session.from_dict({"chanel": []})
    with pytest.raises(SessionError, match="used twice"):
        Session.from_dict(
            {
                "channel": [{"name": "a", "inputs": 1}, {"name": "a", "inputs": 2}],
                "monitor": {"system": [{"name": "s", "outputs": [1, 2]}]},
            }
        )
