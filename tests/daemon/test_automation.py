"""Automation lanes in ``studiod render`` sessions, against their closed forms: a fader fade
straight in dB with corners between control ticks and a pan sweep, sample by sample; a
step on its sample; bad lanes named."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from studiod.daemon.automation import Lane
from studiod.daemon.cli import main

FS = 48000
SECONDS = 3.0
A1, F1 = 0.5, 997.0
A2, F2 = 0.25, 440.0

SESSION = """
samplerate = 48000

[[channel]]
name = "one"
stem = "one.wav"

[[channel]]
name = "two"
stem = "two.wav"

[mix]
"/ch/1/pan" = -1.0

[[automation]]
address = "/ch/1/fader"
points = [[0.5003, 0.0], [1.5017, -60.0], [2.0, -60.0], [2.2509, -6.0]]

[[automation]]
address = "/ch/2/pan"
points = [[0.25, 1.0], [2.75, -1.0]]

[[automation]]
address = "/master/fader"
points = [[2.5003, 0.0], [3.0, -20.0]]

[render]
tail_s = 0.0
"""


def _stems(tmp_path) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(int(SECONDS * FS)) / FS
    one = A1 * np.sin(2 * np.pi * F1 * t)
    two = A2 * np.sin(2 * np.pi * F2 * t)
    sf.write(tmp_path / "one.wav", one, FS, subtype="FLOAT")
    sf.write(tmp_path / "two.wav", two, FS, subtype="FLOAT")
    return one, two


def _render(tmp_path, body: str, out_name: str = "mix.wav") -> int:
    session = tmp_path / "s.toml"
    session.write_text(body)
    return main(["render", str(session), str(tmp_path / out_name), "--no-normalize",
                 "--bits", "32f"])  # fmt: skip


def test_a_fader_fade_and_a_pan_sweep_follow_their_closed_forms(tmp_path, capsys):
    """Channel 1 hard left with its fader straight in dB from 0 to -60 dB over 1 s, then
    back up to -6 dB in 0.25 s, the corners between samples and between control ticks;
    channel 2's constant-power pan swept from right to left; the master faded out by 20 dB
    in the last half second (behind the saturator's 69-sample half-band): every output
    sample within 1e-4 of the closed form."""
    one, two = _stems(tmp_path)
    assert _render(tmp_path, SESSION) == 0, capsys.readouterr().err
    y, fs = sf.read(tmp_path / "mix.wav", dtype="float64")
    assert fs == FS and y.shape == (len(one), 2)
    t = np.arange(len(one)) / FS
    fader_db = np.interp(t, [0.5003, 1.5017, 2.0, 2.2509], [0.0, -60.0, -60.0, -6.0])
    theta = (np.interp(t, [0.25, 2.75], [1.0, -1.0]) + 1.0) * math.pi / 4.0
    master = 10.0 ** (np.interp(t, [2.5003, 3.0], [0.0, -20.0]) / 20.0)
    left = (one * 10.0 ** (fader_db / 20.0) + two * np.cos(theta)) * master
    right = two * np.sin(theta) * master
    error = np.abs(y - np.column_stack([left, right]))
    assert error.max() < 1e-4, (error.max(), int(error.argmax()) // 2)
    # channel 2 from the right to the left
    assert y[: FS // 8, 1].max() > 0.99 * A2 and np.abs(y[-FS // 8 :, 1]).max() < 1e-6


def test_a_step_lands_on_the_first_sample_at_its_time(tmp_path, capsys):
    """A mute at 1.0001 s (step): the tone is untouched up to the sample before and silent
    from the first sample at or after 1.0001 s (48004.8 samples in) on."""
    one, _ = _stems(tmp_path)
    body = SESSION.split("[[automation]]")[0] + (
        '[[automation]]\naddress = "/ch/1/mute"\npoints = [[0.0, 0], [1.0001, 1]]\n'
        'curve = "step"\n[render]\ntail_s = 0.0\n'
    )
    body = body.replace('"/ch/1/pan" = -1.0', '"/ch/1/pan" = -1.0\n"/ch/2/mute" = true')
    assert _render(tmp_path, body) == 0, capsys.readouterr().err
    y, _ = sf.read(tmp_path / "mix.wav", dtype="float64")
    assert np.abs(y[:48005, 0] - one[:48005]).max() < 1e-6
    assert np.abs(y[48005:]).max() == 0.0


def test_lane_curves():
    """Values between and beyond the points: straight, a constant ratio, held."""
    times = np.array([1.0, 3.0])
    linear = Lane("/x", times, np.array([100.0, 400.0]), "linear")
    exponential = Lane("/x", times, np.array([100.0, 400.0]), "exponential")
    step = Lane("/x", times, np.array([100.0, 400.0]), "step")
    t = np.array([0.0, 1.0, 2.0, 2.999, 3.0, 9.0])
    assert linear.at(t) == pytest.approx([100, 100, 250, 100 + 300 * 1.999 / 2, 400, 400])
    assert exponential.at(t) == pytest.approx([100, 100, 200, 100 * 4 ** (1.999 / 2), 400, 400])
    assert step.at(t).tolist() == [100, 100, 100, 100, 400, 400]
    negative = Lane("/x", times, np.array([-1.0, -4.0]), "exponential")
    assert negative.at(2.0) == pytest.approx(-2.0)


BAD_LANES = [
    ('address = "/ch/9/fader"\npoints = [[0, 0]]', "address '/ch/9/fader' is not a parameter"),
    ('address = "/ch/1/fader"\npoints = [[1, 0], [0.5, -6]]',
     "point 1: times start at 0 s or later and increase (0.5 s)"),
    ('address = "/ch/1/fader"\npoints = [[-1, 0]]', "times start at 0 s or later"),
    ('address = "/ch/1/fader"\npoints = [[0, 40]]', "point 0: /ch/1/fader: 40 dB is out of range"),
    ('address = "/ch/1/fader"\npoints = [[0, -6], [1, 0]]\ncurve = "exponential"',
     "an exponential lane's values have one sign and none is 0"),
    ('address = "/ch/1/mute"\npoints = [[0, 0], [1, 1]]', "takes curve = 'step' only"),
    ('address = "/ch/1/fader"\npoints = [[0, 0]]\ncurve = "cubic"', "curve 'cubic' is not one of"),
    ('address = "/ch/1/fader"\npoints = []', "points must be a non-empty array"),
    ('address = "/ch/1/fader"\npoints = [[0]]', "point 0 must be [time_s, value]"),
    ('address = "/ch/1/fader"\npoints = [[0, 0]]\nspeed = 2', "unknown key(s) ['speed']"),
    ('address = "/monitor/level"\npoints = [[0, 0]]', "/monitor/level is the render's own"),
]  # fmt: skip


@pytest.mark.parametrize(("lane", "message"), BAD_LANES)
def test_bad_lanes_are_named_and_nothing_is_written(lane, message, tmp_path, capsys):
    _stems(tmp_path)
    body = SESSION.split("[[automation]]")[0] + f"[[automation]]\n{lane}\n"
    out = tmp_path / "mix.wav"
    out.write_bytes(b"keep me")
    assert _render(tmp_path, body) == 1
    err = capsys.readouterr().err
    assert err.startswith("studiod render: error:") and "s.toml: automation[0]" in err, err
    assert message in err, err
    assert out.read_bytes() == b"keep me"


def test_two_lanes_on_one_address(tmp_path, capsys):
    _stems(tmp_path)
    lane = '[[automation]]\naddress = "/ch/1/fader"\npoints = [[0, 0]]\n'
    assert _render(tmp_path, SESSION.split("[[automation]]")[0] + lane + lane) == 1
    assert "automation[1]: /ch/1/fader has a lane already" in capsys.readouterr().err
