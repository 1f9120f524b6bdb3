"""The daemon against a real JACK server (dummy driver): a JACK client plays known tones into
its inputs and records its outputs. Gain, pan, mute, monitor switching, the car simulation,
state after SIGKILL, a bad reload, the server dying and coming back. (What the audio thread
does under load: test_realtime.py; how often the machine makes it late: the soak
benchmark.)"""

import math
import time

import numpy as np
import pytest

from studiod.dsp.simulation import makeup_gain_db
from tests.e2e.conftest import FS

pytestmark = pytest.mark.e2e

A1 = 10 ** (-20 / 20)  # input 1: 997 Hz at -20 dBFS peak
F1 = 997.0
A2 = 10 ** (-30 / 20)  # input 2: 50 Hz at -30 dBFS peak
F2 = 50.0
PAN_CENTRE = math.cos(math.pi / 4)  # constant-power pan, -3 dB at centre

CONFIG = """
[audio]
backend = "jack"
client_name = "studiod"
samplerate = 48000
block_frames = 128
[session]
[[session.channel]]
name = "tone"
inputs = 1
[[session.channel]]
name = "bass"
inputs = 2
[[session.monitor.system]]
name = "studio"
outputs = [1, 2]
[[session.monitor.system]]
name = "alt"
outputs = [3, 4]
[[session.monitor.system]]
name = "car"
outputs = [1, 2]
simulation = "car"
[params]
{params}
[state]
dir = "state"
save_delay_s = 0.3
[log]
stats_interval_s = 0
"""


def write_config(tmp_path, params: str = "", extra: str = ""):
    path = tmp_path / "studiod.toml"
    path.write_text(CONFIG.format(params=params) + extra)
    return path


def programme(seconds: float = 2.0, fs: int = FS) -> np.ndarray:
    t = np.arange(int(seconds * fs)) / fs
    return np.column_stack([A1 * np.sin(2 * np.pi * F1 * t), A2 * np.sin(2 * np.pi * F2 * t)])


CLEAN_RESIDUAL = 0.01  # of a chunk's RMS: a repeated JACK period leaves 5 % and more


def amplitudes(
    x: np.ndarray, freqs_hz: tuple[float, ...], chunk_s: float = 0.04, fs: int = FS
) -> np.ndarray:
    """Peak amplitude of each ``freqs_hz`` component of ``x`` (at ``fs``): a least-squares
    fit of those sines (and DC) in 40 ms chunks, median over the chunks the fit explains
    (residual under CLEAN_RESIDUAL of the chunk's RMS). Independent of phase; a chunk with
    a discontinuity is left out: the recording's start before the signal arrived, or a JACK
    period skipped or repeated because the machine ran a client late (which jackd's
    asynchronous mode does several times a second on a loaded VM). A recording with fewer
    than three such chunks is an error."""
    n = int(chunk_s * fs)
    t = np.arange(n) / fs
    basis = [np.ones(n)]
    for f0 in freqs_hz:
        basis += [np.sin(2 * np.pi * f0 * t), np.cos(2 * np.pi * f0 * t)]
    basis = np.column_stack(basis)
    chunks = x[: len(x) // n * n].astype(np.float64).reshape(-1, n).T
    coefs, *_ = np.linalg.lstsq(basis, chunks, rcond=None)
    residual = np.sqrt(np.mean((chunks - basis @ coefs) ** 2, axis=0))
    clean = residual <= CLEAN_RESIDUAL * np.sqrt(np.mean(chunks**2, axis=0))
    assert clean.sum() >= 3, f"{clean.sum()} of {len(clean)} chunks without a discontinuity"
    return np.median(np.hypot(coefs[1::2], coefs[2::2])[:, clean], axis=1)


def amplitude(x: np.ndarray, freq_hz: float, chunk_s: float = 0.04, fs: int = FS) -> float:
    """Peak amplitude of the ``freq_hz`` component, fitted with both test tones."""
    return float(amplitudes(x, (freq_hz, *({F1, F2} - {freq_hz})), chunk_s, fs)[0])


def db(x: float) -> float:
    return 20 * math.log10(x) if x > 1e-12 else -240.0


@pytest.fixture
def rig(tmp_path, jack_server, daemon_factory, peer_factory):
    """The daemon on JACK, a peer playing the two tones into it and recording outputs 1-4."""

    class Rig:
        def __init__(self):
            self.daemon = daemon_factory(write_config(tmp_path))
            self.daemon.start()
            self.peer = peer_factory()
            self.peer.play(programme(), tmp_path)
            self.peer.wire()

        def params(self, text: str) -> None:
            write_config(tmp_path, text)
            self.daemon.reload()
            time.sleep(0.15)  # parameter smoothing (20 ms) and a few periods of latency

        def record(self, seconds: float = 0.5) -> np.ndarray:
            return self.peer.record(seconds, tmp_path)

    return Rig()


def test_gain_pan_mute_and_monitor_switching(rig):
    y = rig.record()
    expected = A1 * PAN_CENTRE
    for col in (0, 1):
        assert db(amplitude(y[:, col], F1)) == pytest.approx(db(expected), abs=0.1)
    assert np.max(np.abs(y[:, 2:4])) < 1e-6  # alt is off
    rig.params('"/ch/1/fader" = -6.0')
    y = rig.record()
    assert db(amplitude(y[:, 0], F1)) == pytest.approx(db(expected) - 6.0, abs=0.1)
    rig.params('"/ch/1/fader" = -6.0\n"/ch/1/pan" = -1.0')
    y = rig.record()
    assert db(amplitude(y[:, 0], F1)) == pytest.approx(db(A1) - 6.0, abs=0.1)
    assert db(amplitude(y[:, 1], F1)) < db(A1) - 80
    rig.params('"/ch/1/mute" = 1')
    y = rig.record()
    assert db(amplitude(y[:, 0], F1)) < db(A1) - 80
    assert db(amplitude(y[:, 0], F2)) == pytest.approx(db(A2 * PAN_CENTRE), abs=0.1)
    # monitor switching: the right output pair carries the signal, the other is silent
    rig.params(
        '"/ch/1/mute" = 0\n"/ch/1/fader" = 0.0\n"/ch/1/pan" = 0.0\n"/monitor/system" = "alt"'
    )
    y = rig.record()
    assert np.max(np.abs(y[:, 0:2])) < 1e-6
    for col in (2, 3):
        assert db(amplitude(y[:, col], F1)) == pytest.approx(db(expected), abs=0.1)


def test_car_simulation_response(rig, tmp_path):
    """The car system against the studio one, at its documented target points
    (dsp/simulation.py: 50 Hz +10 dB, 1 kHz 0 dB, fitted within ±1 dB) plus its
    loudness-matching make-up gain, with both tones at -40 dBFS so that the car's light
    compression (threshold -20 dB) stays out of it."""
    quiet = programme() * (10 ** (-40 / 20) / np.array([A1, A2]))
    rig.peer.play(quiet, tmp_path)
    time.sleep(0.2)
    studio = rig.record(1.0)
    rig.params('"/monitor/system" = "car"')
    time.sleep(0.3)
    car = rig.record(1.0)
    gain_50 = db(amplitude(car[:, 0], F2)) - db(amplitude(studio[:, 0], F2))
    gain_1k = db(amplitude(car[:, 0], F1)) - db(amplitude(studio[:, 0], F1))
    makeup_db = makeup_gain_db("car", FS)
    assert gain_50 == pytest.approx(10.0 + makeup_db, abs=1.0)
    assert gain_1k == pytest.approx(0.0 + makeup_db, abs=1.0)


def test_bad_reload_keeps_running(rig, tmp_path):
    rig.params('"/ch/1/fader" = -10.0')
    (tmp_path / "studiod.toml").write_text("[audio]\nblock_frames = 100\n")
    rig.daemon.reload()  # refused: READY again with the old config
    y = rig.record()
    assert rig.daemon.proc.poll() is None
    assert db(amplitude(y[:, 0], F1)) == pytest.approx(db(A1 * PAN_CENTRE) - 10.0, abs=0.1)
    assert "reload refused, keeping the running config" in rig.daemon.log()
    assert "block_frames: must be a power of two" in rig.daemon.log()


def test_state_restored_after_sigkill(rig, tmp_path, daemon_factory, peer_factory):
    rig.params('"/ch/1/fader" = -12.0\n"/monitor/system" = "alt"')
    rig.params("")  # the config no longer names them: the live values stay
    time.sleep(1.0)  # past the state debounce (0.3 s)
    rig.daemon.kill9()
    rig.peer.close()
    again = daemon_factory(write_config(tmp_path))
    again.start()
    peer = peer_factory(name="peer2")
    peer.play(programme(), tmp_path)
    peer.wire()
    time.sleep(0.2)
    y = peer.record(0.5, tmp_path)
    assert np.max(np.abs(y[:, 0:2])) < 1e-6  # still on alt
    assert db(amplitude(y[:, 2], F1)) == pytest.approx(db(A1 * PAN_CENTRE) - 12.0, abs=0.1)


def test_jack_server_restart(rig, jack_server, tmp_path, peer_factory):
    """The server dies and comes back: the daemon reconnects within 2 s of it being back,
    with its parameter values intact."""
    rig.params('"/ch/1/fader" = -6.0')
    rig.peer.proc.kill()  # it dies with the server anyway
    jack_server.kill()
    time.sleep(1.0)
    assert rig.daemon.proc.poll() is None
    jack_server.start()
    back = time.monotonic()
    deadline = back + 5.0
    while "studiod:out_1" not in jack_server.ports() and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.monotonic() - back
    assert elapsed < 2.0, rig.daemon.log()
    peer = peer_factory(name="peer3")
    peer.play(programme(), tmp_path)
    peer.wire()
    time.sleep(0.2)
    y = peer.record(0.5, tmp_path)
    assert db(amplitude(y[:, 0], F1)) == pytest.approx(db(A1 * PAN_CENTRE) - 6.0, abs=0.1)
    log = rig.daemon.log()
    assert "lost (JACK server gone" in log and "back after" in log
