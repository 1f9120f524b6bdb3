"""The engine follows the device's samplerate: a virtual sound card locked to 44.1 kHz under
a config at 48 kHz (the same path a JACK server at 44.1 kHz takes, end to end in
tests/e2e/test_jack_rate.py). The engine, meters, loudness log and reference player are
rebuilt at the card's rate through the reload's own path, every value holds, it is logged
once and reported; when the card is back at the configured rate, the engine follows it back.
PortAudio's choice of rate is a pure function, tested here with the answers a device gives."""

import logging
import math

import numpy as np
import pytest

from studiod.daemon.audio import DeviceError, VirtualDevice, choose_samplerate
from studiod.daemon.components import config_diff
from studiod.daemon.config import at_samplerate, load_config
from tests.daemon.test_runtime import PAN_CENTRE, THREE_CHANNELS, A, Rig, rms_db, write_config

F_HZ = 997.0
# Channel 1's EQ band 2 (a peak) on the tone: its gain there is exactly +9 dB only when
# the coefficients are designed at the rate the samples run at. Designed at 48 kHz and run
# at 44.1 kHz the peak moves to 916 Hz, and a Q of 8 leaves far less than +9 dB at 997 Hz.
EQ = {"/ch/1/eq/2/freq": F_HZ, "/ch/1/eq/2/q": 8.0, "/ch/1/eq/2/gain": 9.0}
EQ_PARAMS = "\n".join(f'"{k}" = {v}' for k, v in EQ.items())


class LockedRig(Rig):
    """Device factory: virtual sound cards that run at ``samplerate_hz`` (the card's clock),
    playing a 997 Hz tone at that rate into input 1; ``broken``: unplugged."""

    def __init__(self, samplerate_hz: int):
        super().__init__()
        self.samplerate_hz = samplerate_hz

    def __call__(self, audio, core):
        if self.broken:
            raise DeviceError("no such device (unplugged)")
        fs = self.samplerate_hz
        t = np.arange(fs) / fs  # one second: 997 whole periods, a seamless loop
        source = np.zeros((fs, 6), np.float32)
        source[:, 0] = A * np.sin(2 * np.pi * F_HZ * t)
        source = source[:, : core.dev_in]  # none with a programme (an output-only stream)
        self.devices.append(VirtualDevice(core, source=source, tap_frames=fs, samplerate=fs))
        return self.device

    def tone_db(self, column: int, seconds: float = 0.2) -> float:
        """The level (dB, RMS) of output ``column`` over the last ``seconds``."""
        y = self.device.tail(int(seconds * self.device.samplerate))[:, column].astype(np.float64)
        return rms_db(float(np.sqrt(np.mean(y**2))))


def expected_db(fader_db: float = 0.0, eq_db: float = 9.0) -> float:
    return rms_db(A / math.sqrt(2) * PAN_CENTRE) + fader_db + eq_db


@pytest.fixture
def messages(caplog):
    """The daemon's log records (setup_logging() stops the 'studiod' logger propagating)."""
    logger = logging.getLogger("studiod")
    own = not logger.propagate  # else caplog's root handler sees every record already
    if own:
        logger.addHandler(caplog.handler)
    with caplog.at_level("DEBUG", logger="studiod"):
        yield caplog
    if own:
        logger.removeHandler(caplog.handler)


def run_until(daemon, condition, seconds: float = 3.0) -> None:
    """Run the control loop until ``condition()`` (the daemon's own state, an event)."""
    for _ in range(round(seconds / 0.05)):
        if condition():
            return
        daemon.run(0.05)
    assert condition()


def play(daemon, rig, seconds: float = 0.3) -> None:
    """Run until the card has played ``seconds`` more (past the 20 ms parameter smoothing:
    what it plays last is the settled sound)."""
    done = rig.device.tapped + int(seconds * rig.device.samplerate)
    run_until(daemon, lambda: rig.device.tapped >= done)


def follows(daemon, rig, rate: int) -> bool:
    return (daemon.device_state == "running" and daemon.core.samplerate == rate
            and rig.device.samplerate == rate and rig.device.blocks > 0)  # fmt: skip


def test_the_engine_runs_at_the_rate_of_a_card_locked_to_another(tmp_path, started, messages):
    import soundfile as sf

    t = np.arange(48000) / 48000  # a one-second reference track at 48 kHz
    sf.write(tmp_path / "ref.wav", np.column_stack([0.1 * np.sin(2 * np.pi * 440 * t)] * 2),
             48000, subtype="FLOAT")  # fmt: skip
    path = write_config(tmp_path, params=EQ_PARAMS)
    path.write_text(path.read_text() + '[reference]\ntrack = "ref.wav"\n')
    rig = LockedRig(44100)
    daemon, _ = started(path, rig=rig)
    assert len(daemon.component("reference").player.state.audio) == 48000
    assert daemon.device_state == "lost"  # the card refused 48 kHz; not retried at it
    run_until(daemon, lambda: follows(daemon, rig, 44100))
    play(daemon, rig)
    # every part at the card's rate: engine, meters, loudness log tap, reference player
    assert daemon.engine.samplerate == 44100 and daemon.core.samplerate == 44100
    assert daemon.loudness.log.samplerate == 44100
    player = daemon.component("reference").player  # the track loaded again, resampled
    assert player.samplerate == 44100 and len(player.state.audio) == 44100
    assert daemon.config.session.samplerate == 44100 and daemon.config.audio.samplerate == 48000
    # the tone arrives at the EQ's gain: coefficients designed at 44.1 kHz
    assert rig.tone_db(0) == pytest.approx(expected_db(), abs=0.05)
    stats = daemon.stats()
    assert stats["samplerate"] == 44100 and stats["configured_samplerate"] == 48000
    assert "44100 Hz (configured 48000 Hz)" in daemon.status_text()
    warnings = [r.getMessage() for r in messages.records if r.levelno == logging.WARNING]
    said = "the device runs at 44100 Hz, not the configured 48000 Hz: the engine runs at 44100 Hz"
    assert sum(m.startswith(said) for m in warnings) == 1, warnings
    assert not any("retrying" in r.getMessage() for r in messages.records)


def test_values_hold_and_the_engine_follows_the_card_there_and_back(tmp_path, started, messages):
    rig = LockedRig(48000)
    path = write_config(tmp_path, params='"/ch/1/fader" = -6.0\n' + EQ_PARAMS)
    daemon, _ = started(path, rig=rig)
    play(daemon, rig)
    # a live value over one from [params]: a rate change must neither lose it nor apply
    # [params] again
    daemon.hub.set("/ch/1/fader", -3.0, source="test")
    daemon.hub.set("/ch/2/mute", 1.0, source="test")
    play(daemon, rig)
    assert rig.tone_db(0) == pytest.approx(expected_db(-3.0), abs=0.05)
    card = rig.device

    rig.samplerate_hz = 44100  # the card comes back locked to another clock
    card.fail("clock change")
    run_until(daemon, lambda: follows(daemon, rig, 44100))
    play(daemon, rig)
    assert daemon.hub.get("/ch/1/fader") == -3.0 and daemon.hub.get("/ch/2/mute") == 1.0
    assert rig.tone_db(0) == pytest.approx(expected_db(-3.0), abs=0.05)

    # a reload that keeps [audio]: the engine stays at the card's rate (no rebuild)
    engine = daemon.engine
    write_config(tmp_path, params='"/ch/1/fader" = -6.0\n"/ch/1/pan" = 0.0\n' + EQ_PARAMS)
    assert daemon.reload()
    assert daemon.engine is engine and daemon.config.session.samplerate == 44100

    rig.samplerate_hz = 48000  # back at the configured rate: the engine follows it back
    rig.device.fail("clock change")
    run_until(daemon, lambda: follows(daemon, rig, 48000))
    play(daemon, rig)
    assert daemon.engine.samplerate == 48000 and daemon.config.session.samplerate == 48000
    assert daemon.hub.get("/ch/1/fader") == -3.0 and daemon.hub.get("/ch/2/mute") == 1.0
    assert rig.tone_db(0) == pytest.approx(expected_db(-3.0), abs=0.05)
    assert "configured" not in daemon.status_text()
    lines = [r.getMessage() for r in messages.records]
    assert sum("not the configured 48000 Hz" in m for m in lines) == 1
    assert sum("the device runs at the configured 48000 Hz again" in m for m in lines) == 1


def test_the_demo_programme_plays_at_its_pitch_on_a_card_at_another_rate(tmp_path, started):
    """The demo's programme is made at [audio] samplerate: an engine at the card's rate
    plays it resampled (unresampled, the 997 Hz tone would come out at 916 Hz, beside the
    EQ's peak)."""
    t = np.arange(48000) / 48000
    programme = np.zeros((48000, 2), np.float32)
    programme[:, 0] = A * np.sin(2 * np.pi * F_HZ * t)
    rig = LockedRig(44100)
    path = write_config(tmp_path, params=EQ_PARAMS)
    daemon, _ = started(path, rig=rig, programme=programme)
    run_until(daemon, lambda: follows(daemon, rig, 44100))
    play(daemon, rig)
    assert rig.tone_db(0) == pytest.approx(expected_db(), abs=0.05)


def test_a_card_at_a_rate_the_engine_cannot_run_is_retried(tmp_path, started, messages):
    rig = LockedRig(32000)
    daemon, _ = started(rig=rig)
    run_until(daemon, lambda: len(rig.devices) >= 3)  # opened three times: retried
    assert daemon.device_state == "lost" and daemon.engine.samplerate == 48000
    errors = [r.getMessage() for r in messages.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "runs at 32000 Hz" in errors[0], errors
    rig.samplerate_hz = 48000
    run_until(daemon, lambda: follows(daemon, rig, 48000))


def test_a_new_samplerate_alone_reopens_the_stream_and_keeps_the_graph(tmp_path):
    old = load_config(write_config(tmp_path))
    plan = config_diff(old, at_samplerate(old, 44100))
    assert plan.changed == {"session"} and plan.session and plan.reopen_device
    assert not plan.graph
    plan = config_diff(old, load_config(write_config(tmp_path, channels=THREE_CHANNELS)))
    assert plan.session and plan.graph and not plan.reopen_device


def test_portaudio_rate_choice():
    """The configured rate when the device takes it; else its default rate when the engine
    runs there; else the engine rate nearest the configured one; None when none opens."""
    assert choose_samplerate(48000, 44100.0, lambda hz: True) == 48000
    assert choose_samplerate(48000, 44100.0, lambda hz: hz == 44100) == 44100
    # a default the engine cannot run at (a 32 kHz codec that also takes 96 and 88.2 kHz)
    assert choose_samplerate(48000, 32000.0, lambda hz: hz in (32000, 88200, 96000)) == 88200
    assert choose_samplerate(96000, 32000.0, lambda hz: hz in (32000, 88200, 44100)) == 88200
    assert choose_samplerate(48000, 48000.0, lambda hz: False) is None
