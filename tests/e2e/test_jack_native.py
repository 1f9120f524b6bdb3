"""The compiled callback in this process, called by libjack (JackDevice) and by PortAudio's
JACK host API (PortAudioDevice, the path ALSA, CoreAudio and WASAPI take too): it keeps
time while Python cannot run at all, and it carries the signal."""

import ctypes
import subprocess
import time

import numpy as np
import pytest

from studiod.daemon.audio import AudioCore, JackDevice, PortAudioDevice
from studiod.daemon.config import AudioConfig
from studiod.dsp.engine import Engine
from studiod.dsp.session import ChannelSpec, MonitorSystemSpec, Session
from tests.e2e.conftest import FS, JackServer
from tests.machine import Stolen

pytestmark = pytest.mark.e2e

PERIOD = 128


@pytest.fixture
def jack_server():
    """Synchronous (jackd -S): the driver waits for every client each cycle. A callback
    that waited for the GIL would stall the whole graph, and that is what is counted; in the
    asynchronous mode a late cycle also skips a client, and a recording repeats a period no
    client made, whenever the hypervisor takes the CPU for a few milliseconds."""
    server = JackServer(period=PERIOD, synchronous=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["jack", "portaudio"])
def native(request, jack_server, monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack_server.name)
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    session = Session(samplerate=FS, channels=(ChannelSpec("tone", (1,)),),
                      systems=(MonitorSystemSpec("studio", (1, 2)),))  # fmt: skip
    engine = Engine(session)
    # PortAudio's JACK host API connects the dummy driver's silent capture ports to ours
    audio = AudioConfig(backend=request.param, hostapi="JACK", client_name="native",
                        block_frames=PERIOD, autoconnect=False)  # fmt: skip
    core = AudioCore(engine, audio, 1, 2)
    core.warm_up()
    device = (JackDevice if request.param == "jack" else PortAudioDevice)(audio, core)
    device.start()
    deadline = time.monotonic() + 5.0
    while core.callbacks < 50:
        assert time.monotonic() < deadline, "no JACK callbacks"
        time.sleep(0.01)
    first = 1 if request.param == "jack" else 0  # PortAudio numbers its ports from 0
    yield core, (f"native:in_{first}", f"native:out_{first}")
    device.close()


def test_callback_keeps_time_while_the_gil_is_held(native, jack_server):
    """Every cycle of the second the GIL is held runs our callback: a callback that waited
    for the GIL would hold the synchronous graph still. The time the hypervisor took the
    CPUs away (tests.machine) is not counted as time there was."""
    core, _ = native
    with Stolen() as stolen:
        start = time.monotonic()
        before = core.callbacks
        # usleep through ctypes.PyDLL keeps the GIL: no Python thread runs for a second
        ctypes.PyDLL(None).usleep(1_000_000)
        blocks = core.callbacks - before
        elapsed_s = time.monotonic() - start
    assert blocks >= 0.95 * (elapsed_s - stolen.upper_s) * FS / PERIOD, (blocks, stolen.upper_s)


def test_signal_and_fader_while_the_gil_is_held(native, jack_server, tmp_path):
    """jack_simple_client's sine into the daemon's input; jack_rec (both C clients) records
    the sine and the daemon's output 1 while this process holds the GIL: the output is the
    input at the fader's -12 dB and the pan law's -3.01 dB in every 50 ms of the take."""
    import soundfile

    core, (port_in, port_out) = native
    core.engine.set("/ch/1/fader", -12.0)
    tone = subprocess.Popen(["jack_simple_client", "tone"], env=jack_server.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    path = tmp_path / "take.wav"
    try:
        deadline = time.monotonic() + 10.0
        while "tone:output1" not in jack_server.ports():
            assert time.monotonic() < deadline, "jack_simple_client did not start"
            time.sleep(0.05)
        jack_server.connect("tone:output1", port_in)
        time.sleep(0.2)  # the fader ramp and the engine's latency
        rec = subprocess.Popen(["jack_rec", "-f", str(path), "-d", "1.5", "tone:output1",
                                port_out], env=jack_server.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(0.3)
        ctypes.PyDLL(None).usleep(1_000_000)  # the GIL held through most of the take
        assert rec.wait(timeout=20) == 0
    finally:
        tone.terminate()
        tone.wait(timeout=10)
    take, rate = soundfile.read(path, dtype="float64")
    assert rate == FS and len(take) >= FS
    chunk = FS // 20
    ratios_db = []
    for start in range(FS // 10, len(take) - chunk, chunk):  # past jack_rec's start-up
        x, y = take[start : start + chunk].T
        ratios_db.append(20 * np.log10(np.sqrt(np.mean(y**2)) / np.sqrt(np.mean(x**2))))
    late = jack_server.late_clients(0.0)
    assert np.allclose(ratios_db, -12.0 - 3.0103, atol=0.1), (ratios_db, late)
