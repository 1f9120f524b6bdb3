"""The daemon on a virtual audio device: levels through the callback, live parameter
changes, state restored, reload (params, bad file, session swap, device change), device
loss and return, meters, the monitor-source ring, sd_notify, and `studiod run` signals."""

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from studiod.daemon.audio import DeviceError, VirtualDevice
from studiod.daemon.notify import Notifier
from studiod.dsp.simulation import makeup_gain_db

FS = 48000
A_DBFS = -20.0  # test tone peak level: far below every limiter and safety threshold
A = 10 ** (A_DBFS / 20)
F_HZ = 997.0  # EBU Tech 3341's 1 kHz test frequency (not a submultiple of the rate)
PAN_CENTRE = math.cos(math.pi / 4)  # constant-power pan law, -3 dB at centre

CONFIG = """
[audio]
backend = "virtual"
block_frames = {block}
realtime_priority = 0
[session]
{channels}
[session.monitor]
ext_inputs = [3, 4]
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
save_delay_s = 0.2
[log]
stats_interval_s = 0
"""

TWO_CHANNELS = (
    '[[session.channel]]\nname = "a"\ninputs = 1\n[[session.channel]]\nname = "b"\ninputs = 2'
)
THREE_CHANNELS = TWO_CHANNELS + '\n[[session.channel]]\nname = "c"\ninputs = 2'


def write_config(tmp_path, block=64, channels=TWO_CHANNELS, params="") -> Path:
    path = tmp_path / "studiod.toml"
    path.write_text(CONFIG.format(block=block, channels=channels, params=params))
    return path


def tone(seconds=1.0, channels=6) -> np.ndarray:
    t = np.arange(int(seconds * FS)) / FS
    x = np.zeros((len(t), channels), np.float32)
    x[:, 0] = A * np.sin(2 * np.pi * F_HZ * t)
    return x


class Rig:
    """Device factory: virtual devices playing ``source``, recording their output; while
    ``broken`` is set, opening fails like an unplugged interface."""

    def __init__(self, source=None):
        self.source = tone() if source is None else source
        self.devices: list[VirtualDevice] = []
        self.broken = False

    def __call__(self, audio, core):
        if self.broken:
            raise DeviceError("no such device (unplugged)")
        device = VirtualDevice(core, source=self.source, tap_frames=FS)
        self.devices.append(device)
        return device

    @property
    def device(self) -> VirtualDevice:
        return self.devices[-1]

    def play(self, daemon, seconds: float) -> None:
        """Run ``daemon``'s control loop until the device has played ``seconds`` more audio:
        a wait in wall-clock time holds less audio when the machine is slow."""
        device = self.device
        target = device.blocks + math.ceil(seconds * device.samplerate / device.block_frames)
        deadline = time.monotonic() + 10 * seconds + 5.0
        while device.blocks < target:
            assert time.monotonic() < deadline, f"{device.blocks} of {target} blocks played"
            daemon.run(0.02)

    def rms(self, column: int, seconds: float = 0.2) -> float:
        y = self.device.tail(int(seconds * FS))[:, column].astype(np.float64)
        return float(np.sqrt(np.mean(y**2)))


def rms_db(x: float) -> float:
    return 20 * math.log10(x) if x > 0 else -math.inf


SINE_RMS = A / math.sqrt(2)


def test_level_pan_mute_and_state_restore(tmp_path, started):
    daemon, rig = started()
    daemon.run(0.5)
    # input 1 -> channel a, centre: both studio outputs at -3 dB (constant-power law)
    for col in (0, 1):
        assert rms_db(rig.rms(col)) == pytest.approx(rms_db(SINE_RMS * PAN_CENTRE), abs=0.05)
    assert rig.rms(2) == 0.0  # alt is not selected
    daemon.hub.set("/ch/1/fader", -12.0, source="test")
    daemon.hub.set("/ch/1/pan", -1.0, source="test")
    daemon.run(0.5)
    assert rms_db(rig.rms(0)) == pytest.approx(rms_db(SINE_RMS) - 12.0, abs=0.05)
    assert rms_db(rig.rms(1)) < -100
    daemon.hub.set("/ch/1/mute", 1, source="test")
    daemon.run(0.5)
    assert rms_db(rig.rms(0)) < -100
    daemon.close()  # flushes the state
    # a new daemon on the same state dir comes back with the same values
    again, rig2 = started()
    assert again.hub.get("/ch/1/fader") == -12.0 and again.hub.get("/ch/1/mute") == 1.0
    again.hub.set("/ch/1/mute", 0, source="test")
    again.run(0.5)
    assert rms_db(rig2.rms(0)) == pytest.approx(rms_db(SINE_RMS) - 12.0, abs=0.05)


def test_config_params_win_over_state(tmp_path, started):
    daemon, _ = started(write_config(tmp_path, params='"/monitor/systems/alt/trim" = -3.0'))
    daemon.hub.set("/monitor/systems/alt/trim", -9.0, source="test")
    daemon.hub.set("/ch/2/fader", -9.0, source="test")
    daemon.close()
    again, _ = started(write_config(tmp_path, params='"/monitor/systems/alt/trim" = -3.0'))
    assert again.hub.get("/monitor/systems/alt/trim") == -3.0  # the config names it
    assert again.hub.get("/ch/2/fader") == -9.0  # the state file has it


def test_monitor_switching_and_meters(tmp_path, started):
    daemon, rig = started()
    readings = []
    daemon.add_meter_listener(readings.append)
    daemon.hub.set("/monitor/system", "alt", source="test")
    daemon.run(2.3)
    assert rig.rms(0) == 0.0 and rig.rms(1) == 0.0
    for col in (2, 3):
        assert rms_db(rig.rms(col)) == pytest.approx(rms_db(SINE_RMS * PAN_CENTRE), abs=0.05)
    assert len(readings) >= 1
    last = readings[-1]
    assert last.system == "alt" and last.outputs == (3, 4) and last.source == "mix"
    # Identical ~1 kHz tones of peak p in both channels read 20 log10(p) LUFS (EBU Tech
    # 3341 test case 1: -23 dBFS stereo sine -> -23 LUFS); K-weighting at 997 Hz is +0.69 dB
    # which the -0.691 offset cancels.
    expected = 20 * math.log10(A * PAN_CENTRE)
    assert last.monitor.momentary_lufs == pytest.approx(expected, abs=0.1)
    assert last.master.momentary_lufs == pytest.approx(expected, abs=0.1)
    assert last.master.sample_peak_dbfs == pytest.approx(expected, abs=0.05)
    assert last.master.true_peak_dbtp == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize(("freq_hz", "target_db"), [(50.0, 10.0), (F_HZ, 0.0)])
def test_car_simulation_response(tmp_path, started, freq_hz, target_db):
    """The car system (on the studio pair) against the studio system: its documented target
    points (dsp/simulation.py: 50 Hz +10 dB, 1 kHz 0 dB; fitted within ±1 dB) plus its
    loudness-matching make-up gain."""
    t = np.arange(FS) / FS
    source = np.zeros((FS, 6), np.float32)
    source[:, 0] = 10 ** (-30 / 20) * np.sin(2 * np.pi * freq_hz * t)
    daemon, rig = started(rig=Rig(source))
    daemon.run(0.6)
    studio = rig.rms(0, 0.4)
    daemon.hub.set("/monitor/system", "car", source="test")
    daemon.run(0.8)
    car = rig.rms(0, 0.4)
    makeup_db = makeup_gain_db("car", FS)
    assert rms_db(car) - rms_db(studio) == pytest.approx(target_db + makeup_db, abs=1.0)


def test_monitor_source_ring(tmp_path, started):
    daemon, rig = started(rig=Rig(np.zeros((FS, 6), np.float32)))
    t = np.arange(FS // 2) / FS
    ref = np.column_stack([0.1 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
    fed = []

    def provider(source):
        while source.space >= len(ref) // 10:
            fed.append(source.write(ref[: len(ref) // 10]))

    daemon.set_monitor_source_provider(provider)
    daemon.monitor_source.activate(True)
    daemon.hub.set("/monitor/source", "ext", source="test")
    daemon.run(0.8)
    assert sum(fed) > FS // 2
    assert rms_db(rig.rms(0, 0.1)) == pytest.approx(rms_db(0.1 / math.sqrt(2)), abs=0.1)
    daemon.set_monitor_source_provider(None)
    assert not daemon.monitor_source.active


def test_reload_params_bad_file_session_and_device(tmp_path, started):
    path = write_config(tmp_path)
    daemon, rig = started(path)
    daemon.run(0.3)
    device = rig.device
    # [params] changed: applied live, same device, same engine
    engine = daemon.engine
    write_config(tmp_path, params='"/ch/1/fader" = -6.0')
    assert daemon.reload()
    assert daemon.hub.get("/ch/1/fader") == -6.0 and daemon.engine is engine
    # a broken file: refused, the running config stays, audio keeps flowing
    path.write_text(path.read_text() + "\n[audio\n")
    calls = daemon.core.callbacks
    assert not daemon.reload()
    assert daemon.reload_failures == 1 and daemon.config.params == (("/ch/1/fader", -6.0),)
    daemon.run(0.3)
    assert daemon.core.callbacks > calls and rig.device is device
    # a session change: a new engine under the same stream, values carried over, and the
    # switch is a crossfade (no step larger than the tone's own slope)
    write_config(tmp_path, channels=THREE_CHANNELS, params='"/ch/1/fader" = -6.0')
    daemon.run(0.3)
    assert daemon.reload()
    daemon.run(0.3)
    assert daemon.engine is not engine and "/ch/3/fader" in daemon.hub.registry
    assert rig.device is device and daemon.device_losses == 0
    assert daemon.hub.get("/ch/1/fader") == -6.0
    y = rig.device.tail(int(0.55 * FS))[:, 0].astype(np.float64)
    slope = 2 * np.pi * F_HZ / FS * A * PAN_CENTRE * 10 ** (-6 / 20)
    assert np.max(np.abs(np.diff(y))) < 1.05 * slope
    assert rms_db(rig.rms(0)) == pytest.approx(rms_db(SINE_RMS * PAN_CENTRE) - 6.0, abs=0.05)
    # a device change (block size): the stream is reopened
    write_config(tmp_path, block=128, channels=THREE_CHANNELS, params='"/ch/1/fader" = -6.0')
    assert daemon.reload()
    daemon.run(0.3)
    assert rig.device is not device and rig.device.block_frames == 128
    assert daemon.core.callbacks > 0 and daemon.hub.get("/ch/1/fader") == -6.0


def test_device_loss_and_return(tmp_path, started):
    rig = Rig()
    daemon, _ = started(rig=rig)
    daemon.hub.set("/ch/1/fader", -6.0, source="test")
    daemon.run(0.3)
    rig.broken = True
    rig.device.fail("unplugged")
    daemon.run(1.5)
    assert daemon.device_state == "lost" and daemon.device_losses == 1
    rig.broken = False
    back = time.monotonic()
    while daemon.device_state != "running" and time.monotonic() - back < 3.0:
        daemon.run(0.05)
    assert daemon.device_state == "running"
    assert time.monotonic() - back < 2.0
    daemon.run(0.4)
    assert daemon.hub.get("/ch/1/fader") == -6.0
    assert rms_db(rig.rms(0)) == pytest.approx(rms_db(SINE_RMS * PAN_CENTRE) - 6.0, abs=0.05)


def test_device_missing_at_start_keeps_retrying(tmp_path, started):
    rig = Rig()
    rig.broken = True
    daemon, _ = started(rig=rig)
    assert daemon.device_state == "lost"
    daemon.run(0.5)
    rig.broken = False
    daemon.run(0.8)
    assert daemon.device_state == "running" and daemon.core.callbacks > 0


def test_snapshots_through_the_daemon(tmp_path, started):
    daemon, _ = started()
    daemon.hub.set("/ch/2/fader", -7.0, source="test")
    daemon.save_snapshot("mix A")
    daemon.hub.set("/ch/2/fader", 0.0, source="test")
    assert daemon.list_snapshots() == ["mix A"]
    assert daemon.recall_snapshot("mix A") == []
    assert daemon.hub.get("/ch/2/fader") == -7.0


def test_scene_commands_through_the_hub(tmp_path, started):
    """What OSC, MIDI buttons and ``studiod snapshot`` send, with its answers and refusals."""
    from studiod.controllers.commands import CommandError

    daemon, _ = started()
    hub = daemon.hub
    hub.set("/ch/1/fader", -4.0, source="test")
    assert hub.run("/snapshot/save", ["verse"]) == ("verse",)
    assert hub.run("/snapshot/save", ["chorus"]) == ("chorus",)
    assert hub.run("/snapshot/list") == ("chorus", "verse")
    hub.set("/ch/1/fader", 0.0, source="test")
    hub.set("/snapshot/fade", 200.0, source="test")
    assert hub.run("/snapshot/recall", ["verse"]) == ("verse", 0)
    daemon.run(0.4)  # the 200 ms fade, on the control loop
    assert hub.get("/ch/1/fader") == -4.0
    assert hub.run("/snapshot/delete", ["chorus"]) == ("chorus",)
    assert hub.run("/snapshot/list") == ("verse",)
    for address, args, reason in (
        ("/snapshot/delete", ["chorus"], "no snapshot named 'chorus'"),
        ("/snapshot/recall", ["nope"], "no snapshot named 'nope'"),
        ("/snapshot/save", ["../etc"], "snapshot name"),
    ):
        with pytest.raises(CommandError, match=reason):
            hub.run(address, args)


def _received(server: socket.socket) -> list[str]:
    """Every datagram the sd_notify socket holds."""
    messages = []
    server.settimeout(0.2)
    while True:
        try:
            messages.append(server.recv(4096).decode())
        except TimeoutError:
            return messages


def test_sd_notify(tmp_path, started):
    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(5.0)
    try:
        env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"}
        daemon, _ = started(notifier=Notifier(env))
        daemon.run(0.6)
        daemon.close()
        messages = _received(server)
    finally:
        server.close()
    lines = [line for m in messages for line in m.split("\n")]
    assert "READY=1" in lines
    assert any(line.startswith("STATUS=running studio") for line in lines)
    assert 4 <= lines.count("WATCHDOG=1") <= 8  # every 100 ms for 0.6 s
    assert lines[-1] == "STOPPING=1"


def test_run_command_reload_and_signals(tmp_path):
    """`studiod run` as systemd runs it: READY on the notify socket, SIGHUP with a bad file
    keeps it running, SIGTERM stops it cleanly with exit status 0."""
    path = write_config(tmp_path)
    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(120.0)
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "studiod.daemon.cli", "run", "--config", str(path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while "READY=1" not in server.recv(4096).decode():
            pass
        path.write_text(path.read_text() + "\n[audio\n")
        proc.send_signal(signal.SIGHUP)
        server.settimeout(10.0)
        while "READY=1" not in server.recv(4096).decode():  # a refused reload re-reports ready
            pass
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        server.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "reload refused, keeping the running config" in err
    assert "TOML syntax error" in err
    assert "stopped:" in err
    for line in err.splitlines():  # one event per line, no tracebacks
        assert line.startswith(("INFO ", "WARNING ", "ERROR ", "ALSA")), line


def test_notify_never_blocks(tmp_path):
    """A manager that does not read its socket (its queue holds max_dgram_qlen datagrams)
    must not stall the control loop: messages are dropped and counted."""
    sock_path = tmp_path / "deaf.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(sock_path)})
        started = time.monotonic()
        sent = [notifier.status(f"tick {k}") for k in range(2000)]
        assert time.monotonic() - started < 1.0
        assert sent[0] and not sent[-1] and notifier.errors > 0
    finally:
        server.close()


def test_reference_player_and_loudness_log_hooks(tmp_path, started):
    """The reference player plays into the external pair inside the callback (A/B with the
    monitor source), and the loudness log's tap sees the master."""
    import soundfile as sf

    from studiod.daemon.loudlog import LoudnessLog
    from studiod.daemon.reference import ReferencePlayer
    from studiod.dsp.loudtap import buses_for_session

    daemon, rig = started(rig=Rig(np.zeros((FS, 6), np.float32)))
    t = np.arange(2 * FS) / FS
    track = 0.2 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "ref.wav", np.column_stack([track, track]), FS, subtype="FLOAT")
    player = ReferencePlayer(FS)
    player.load(tmp_path / "ref.wav")
    player.set_gain_db(0.0)
    player.loop = True
    log = LoudnessLog(tmp_path / "loudness.sqlite3", FS, buses_for_session(daemon.config.session))
    daemon.attach_reference_player(player)
    daemon.attach_loudness_log_tap(log.tap)
    daemon.hub.set("/monitor/source", "ref", source="test")
    player.play()
    daemon.run(1.2)
    log.update(system="studio")
    assert rms_db(rig.rms(0, 0.2)) == pytest.approx(rms_db(0.2 / math.sqrt(2)), abs=0.1)
    assert log.latest["master"]  # a row for the master bus
    daemon.hub.set("/monitor/source", "mix", source="test")
    player.stop()
    daemon.run(0.3)
    assert rig.rms(0, 0.1) < 1e-6  # back to the (silent) mix
    daemon.attach_reference_player(None)
    daemon.attach_loudness_log_tap(None)
    log.close()


def test_a_start_that_compiles_says_so_to_systemd_and_the_log(tmp_path, caplog):
    """What a first start shows while numba compiles: STATUS= lines and log lines, through
    the same path as the daemon's prepare (a fresh uncached function stands in for the
    kernels, which this test process has long compiled)."""
    import numba

    from studiod.daemon.runtime import _starting

    @numba.njit
    def fresh(x):
        return x * 3.0

    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    studiod_log = logging.getLogger("studiod")  # setup_logging() stops its propagation
    studiod_log.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="studiod"):
            with _starting(Notifier({"NOTIFY_SOCKET": str(sock_path)})):
                assert fresh(2.0) == 6.0
        messages = _received(server)
    finally:
        studiod_log.removeHandler(caplog.handler)
        server.close()
    assert any(m.startswith("STATUS=starting: compiling the DSP kernels") for m in messages)
    assert any(m.endswith(".fresh") and "STATUS=starting: compiling" in m for m in messages)
    assert messages[-1].startswith("STATUS=starting: compiled ")
    assert "compiled " in caplog.text and "functions in" in caplog.text
