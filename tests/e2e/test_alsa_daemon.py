"""PortAudio on ALSA, a Raspberry Pi's default audio path, end to end.

alsa-lib's user-space ``file`` plugin makes an ALSA device out of two files (this machine
has no sound card): the capture side reads the test's programme from a file (``infile``),
the playback side writes what the daemon plays into a FIFO that this test reads at the
real-time rate. The ``null`` plugin under both has no clock of its own; the FIFO's reader
is the device's clock (a full pipe holds the stream's next write). The device is defined in
a config file given to alsa-lib with ``ALSA_CONFIG_PATH``; PortAudio's ALSA host API lists it
as it lists a card's. The daemon runs as a user runs it: ``studiod run`` with backend
"portaudio" and host API "ALSA". Known audio in; gain, pan and monitor switching measured
on the outputs; the device lost (renamed away in the ALSA config, its stream broken) and
back.
"""

import os
import select
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from tests.e2e.conftest import FS, DaemonProcess, _wait
from tests.e2e.test_jack_daemon import A1, A2, F1, F2, PAN_CENTRE, amplitude, db, programme
from tests.e2e.test_jack_daemon import CONFIG as JACK_CONFIG

pytestmark = pytest.mark.e2e

DEVICE = "studiod_test"
OUTPUTS = 4
PROGRAMME_S = 120.0  # longer than the test runs: the file plugin does not loop its infile

ASOUND = """
pcm.{name} {{
    type asym
    playback.pcm {{ type file slave.pcm "null" file "{fifo}" format "raw" }}
    capture.pcm {{ type file slave.pcm "null" file "/dev/null" infile "{infile}" format "raw" }}
    hint {{ show on description "studiod test device" }}
}}
"""

# test_jack_daemon's session and settings, on the ALSA device
CONFIG = JACK_CONFIG.replace(
    'backend = "jack"\nclient_name = "studiod"',
    f'backend = "portaudio"\nhostapi = "ALSA"\ndevice = "{DEVICE}"',
)


class Playback:
    """The reading end of the device's playback FIFO: reads at the real-time rate (what it
    reads is what a sound card would have played) and keeps it with arrival times."""

    CHUNK_S = 0.005

    def __init__(self, fifo, channels: int):
        self.fifo = fifo
        self.frame_bytes = 4 * channels
        self.channels = channels
        self.chunks: list[tuple[float, bytes]] = []
        self._pending = b""
        self._fd = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        os.mkfifo(fifo)

    def open(self) -> None:
        # O_RDWR: opening never waits for a writer, and reading never sees end-of-file
        self._fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """The device goes away: the daemon's next write fails (EPIPE)."""
        if self._fd < 0:
            return
        self._stop.set()
        self._thread.join()
        os.close(self._fd)
        self._fd = -1

    def _run(self) -> None:
        started = time.monotonic()
        taken = 0
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * FS) * self.frame_bytes - taken
            data = b""
            while due > 0 and select.select([self._fd], [], [], 0)[0]:
                got = os.read(self._fd, due)
                data += got
                due -= len(got)
            if data:
                taken += len(data)
                self.chunks.append((time.monotonic(), data))
            self._stop.wait(self.CHUNK_S)

    def record(self, seconds: float) -> np.ndarray:
        """float32 [frames, channels] played during the next ``seconds``."""
        start = time.monotonic()
        time.sleep(seconds)
        data = b"".join(d for t, d in list(self.chunks) if t > start)
        usable = len(data) - len(data) % self.frame_bytes
        return np.frombuffer(data[:usable], "<f4").reshape(-1, self.channels)


@pytest.fixture
def alsa(tmp_path):
    """The device, its playback reader, and the daemon on it."""
    infile = tmp_path / "in.raw"
    programme(PROGRAMME_S).astype("<f4").tofile(infile)
    playback = Playback(tmp_path / "out.fifo", OUTPUTS)
    playback.open()
    asound = tmp_path / "asound.conf"

    def name_device(name: str) -> None:
        asound.write_text(ASOUND.format(name=name, fifo=playback.fifo, infile=infile))

    def write_config(params: str = "") -> None:
        config.write_text(CONFIG.format(params=params))

    name_device(DEVICE)
    config = tmp_path / "studiod.toml"
    write_config()
    env = dict(os.environ, ALSA_CONFIG_PATH=f"/usr/share/alsa/alsa.conf:{asound}")
    daemon = DaemonProcess(config, env, tmp_path)
    daemon.start()

    def params(text: str) -> None:
        write_config(text)
        daemon.reload()
        time.sleep(0.2)  # parameter smoothing (20 ms) and the stream's buffering

    yield SimpleNamespace(daemon=daemon, playback=playback, name_device=name_device,
                          params=params)  # fmt: skip
    daemon.close()
    playback.close()


def test_portaudio_on_alsa_plays_the_mix_and_follows_the_controls(alsa):
    assert "audio device studiod_test (ALSA) open" in alsa.daemon.log()
    y = alsa.playback.record(1.0)
    assert len(y) > 0.5 * FS  # the stream runs at the reader's pace, not faster or stalled
    expected = A1 * PAN_CENTRE
    for col in (0, 1):
        assert db(amplitude(y[:, col], F1)) == pytest.approx(db(expected), abs=0.1)
        assert db(amplitude(y[:, col], F2)) == pytest.approx(db(A2 * PAN_CENTRE), abs=0.1)
    assert np.max(np.abs(y[:, 2:4])) < 1e-6  # alt is off
    alsa.params('"/ch/1/fader" = -6.0\n"/ch/1/pan" = -1.0')
    y = alsa.playback.record(0.5)
    assert db(amplitude(y[:, 0], F1)) == pytest.approx(db(A1) - 6.0, abs=0.1)
    assert db(amplitude(y[:, 1], F1)) < db(A1) - 80
    alsa.params('"/ch/1/fader" = 0.0\n"/ch/1/pan" = 0.0\n"/monitor/system" = "alt"')
    y = alsa.playback.record(0.5)
    assert np.max(np.abs(y[:, 0:2])) < 1e-6
    for col in (2, 3):
        assert db(amplitude(y[:, col], F1)) == pytest.approx(db(expected), abs=0.1)


def test_the_device_lost_and_back(alsa):
    """Renamed away in the ALSA config and its stream broken: the daemon keeps running and
    retries; renamed back, it plays again within 2 s, with its parameter values."""
    alsa.params('"/ch/1/fader" = -6.0')
    alsa.name_device("studiod_gone")
    alsa.playback.close()
    _wait(lambda: "audio device studiod_test (ALSA) lost" in alsa.daemon.log(), 5.0, "the loss")
    time.sleep(1.0)
    assert alsa.daemon.proc.poll() is None
    assert "no audio device matches 'studiod_test'" in alsa.daemon.log()
    alsa.playback.open()
    alsa.name_device("studiod_test")
    back = time.monotonic()
    _wait(lambda: "audio device studiod_test (ALSA) back after" in alsa.daemon.log(), 5.0,
          "the device to reopen")  # fmt: skip
    assert time.monotonic() - back < 2.0
    time.sleep(0.3)
    y = alsa.playback.record(0.5)
    assert db(amplitude(y[:, 0], F1)) == pytest.approx(db(A1 * PAN_CENTRE) - 6.0, abs=0.1)
