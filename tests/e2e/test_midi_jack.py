"""MIDI end to end through a real JACK server (dummy driver): a JACK MIDI client plays a
Korg nanoKONTROL2, drives a fader through the shipped profile and the engine's output level
changes by the console law; LEDs come back; unplugging and replugging the virtual port
reconnects within 2 s with the LEDs restored; garbage and SysEx floods do no harm; and
``studiod learn`` saves what it hears."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from studiod.controllers.hub import ControlHub
from studiod.controllers.mapping import load_profile, shipped_profile_paths
from studiod.controllers.midi import MidiManager, RtMidiBackend
from studiod.dsp.engine import Engine
from studiod.dsp.session import Session
from tests.e2e.conftest import JackServer
from tests.e2e.jack_nano import JackNano

pytestmark = pytest.mark.e2e

FS = 48000
SESSION = Session.from_dict(
    {
        "samplerate": FS,
        "channel": [{"name": "a", "inputs": 1}, {"name": "b", "inputs": 2}],
        "monitor": {"system": [{"name": "studio", "outputs": [1, 2]}]},
    }
)


@pytest.fixture(scope="module")
def jack_server():
    """A private jackd with the dummy driver; rtmidi clients find it by name."""
    server = JackServer(period=256)
    server.start()
    try:
        with pytest.MonkeyPatch.context() as env:
            for key in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER"):
                env.setenv(key, server.env[key])
            yield server.name
    finally:
        server.stop()


def wait(condition, timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout_s} s")


def law_db(position: float) -> float:
    """The console fader law (X32 OSC breakpoints), written out independently."""
    return float(np.interp(position, [0, 0.0625, 0.25, 0.5, 1.0], [-90, -60, -30, -10, 10]))


@pytest.fixture
def rig(jack_server):
    engine = Engine(SESSION, max_block_frames=4096)
    hub = ControlHub(engine)
    hub.set("/master/limiter/on", 0)
    profiles = [load_profile(p) for p in shipped_profile_paths()]
    manager = MidiManager(hub, profiles, RtMidiBackend(api="jack"), poll_interval_s=0.25)
    device = JackNano()
    manager.start()
    wait(lambda: manager.surfaces, 3.0)
    yield engine, hub, manager, device
    manager.stop()
    device.close()
    manager.backend.close()


def level_db(engine: Engine) -> float:
    """Render 0.5 s of a -30 dBFS 1 kHz tone on input 1; RMS of the last 0.25 s, left out."""
    t = np.arange(FS // 2) / FS
    x = np.zeros((len(t), SESSION.n_inputs), np.float32)
    x[:, 0] = 10 ** (-30 / 20) * np.sin(2 * np.pi * 1000 * t)
    y = engine.render(x, 256)[FS // 4 :, 0].astype(np.float64)
    return 10 * np.log10(np.mean(y**2) + 1e-30)  # a muted channel is exactly silent


def test_fader_through_jack_changes_the_engine_output(rig):
    engine, hub, _manager, device = rig
    before = level_db(engine)
    # soft takeover: the fader meets 0 dB (position 0.75 = CC 95.25) first, then moves
    device.send([0xB0, 0, 95], [0xB0, 0, 40])
    wait(lambda: abs(hub.get("/ch/1/fader") - law_db(40 / 127)) < 1e-9, 2.0)
    after = level_db(engine)
    # the default 0 dB to the CC 40 position: the level follows the console law
    assert after - before == pytest.approx(law_db(40 / 127) - 0.0, abs=0.02)
    # a mute button: the channel goes silent and its LED lights on the device
    device.send([0xB0, 48, 127], [0xB0, 48, 0])
    wait(lambda: hub.get("/ch/1/mute") == 1.0, 2.0)
    assert level_db(engine) < before - 80
    wait(lambda: [0xB0, 48, 127] in device.received, 2.0)


def test_hot_plug_reconnects_within_2s_with_leds_restored(rig):
    _engine, hub, manager, device = rig
    hub.set("/ch/2/mute", 1, source="osc")
    wait(lambda: [0xB0, 49, 127] in device.received, 2.0)
    device.close()  # unplugged
    wait(lambda: not manager.surfaces, 2.0)
    replugged = JackNano()
    device.__dict__.update(replugged.__dict__)  # the fixture closes it
    took = wait(lambda: [0xB0, 49, 127] in replugged.received, 2.0)
    assert took < 2.0 and manager.surfaces
    replugged.send([0xB0, 32, 127], [0xB0, 32, 0])  # S1 still works
    wait(lambda: hub.get("/ch/1/solo") == 1.0, 2.0)


def test_garbage_sysex_flood_and_running_status_through_jack(rig):
    _engine, hub, manager, device = rig
    rng = np.random.default_rng(3)
    for _ in range(300):
        device.send(rng.integers(0, 256, rng.integers(1, 3)).tolist())
    for _ in range(50):
        device.send([0xF0, *([0x55] * 2000), 0xF7])
    hub.set("/ch/2/fader", law_db(64 / 127))
    device.send([0xB0, 1, 64])
    device.send([0xB0, 1, 80])
    wait(lambda: abs(hub.get("/ch/2/fader") - law_db(80 / 127)) < 1e-9, 3.0)
    assert manager.stats.errors == 0 and manager.surfaces


LEARN = [sys.executable, "-m", "studiod.daemon.cli", "learn"]


def test_studiod_learn_saves_the_moved_control(jack_server, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "studiod.daemon.cli",
            "learn",
            "/monitor/level",
            "--api",
            "jack",
            "--port",
            "fakekorg",
            "--profile-dir",
            str(tmp_path),
            "--timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    device = JackNano()
    try:
        assert "Move the control" in proc.stdout.readline()
        time.sleep(0.5)  # its ports are open once it has listed them
        for value in range(60, 75):
            device.send([0xB0, 16, value])  # knob 1
            time.sleep(0.02)
        out, err = proc.communicate(timeout=30)
    finally:
        device.close()
    assert proc.returncode == 0, err
    saved = Path(tmp_path / "korg_nanokontrol2.toml")
    assert saved.exists() and "saved to" in out
    profile = load_profile(saved, {p.stem: load_profile(p) for p in shipped_profile_paths()})
    (control,) = [c for c in profile.controls if c.key == ("cc", 0, 16) and not c.layer]
    assert control.target == "/monitor/level" and control.mode == "absolute"
