"""The monitor controller end to end: reference A/B, scenes, cue mixes and talkback.

``studiod run`` on a JACK server (dummy driver) with a JACK peer playing two tones into it and
recording what it plays (as in test_jack_daemon.py), in a private network namespace. From
other processes: ``studiod player load`` loads a 44.1 kHz reference file into the running
daemon, ``studiod player ref`` / ``mix`` switch the monitor source; ``studiod snapshot`` saves
and recalls a scene while liblo's ``oscsend`` changes ten parameters in between; a cue mix
and the talkback are measured on the headphone outputs.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from scipy import signal

from studiod.daemon.oscclient import OscClient
from tests.e2e.conftest import FS, REPO, DaemonProcess, JackServer, Peer
from tests.e2e.netns import inside, netns
from tests.e2e.test_jack_daemon import A1, A2, F1, F2, PAN_CENTRE, amplitudes, programme

pytestmark = pytest.mark.e2e

OSC_PORT = 9000
REF_HZ = 440.0
REF_RATE = 44100  # the daemon resamples it to the engine's 48 kHz
RAMP_SAMPLES = 144  # dsp.engine.GAIN_RAMP_MS (3 ms) at 48 kHz: the source crossfade

# The daemon of these tests: two channels (a tone on input 1, a bass on input 2), its
# monitor section (CONFIG: the reference's pair; CUE_CONFIG: headphones and talkback), OSC.
HEAD = """
[audio]
backend = "jack"
client_name = "studiod"
block_frames = 128
[session]
[[session.channel]]
name = "tone"
inputs = 1
[[session.channel]]
name = "bass"
inputs = 2
"""
TAIL = """
[state]
dir = "state"
[log]
stats_interval_s = 0
[osc]
port = {port}
[mdns]
enabled = false
[midi]
enabled = false
"""
CONFIG = (
    HEAD
    + """
[session.monitor]
ext_inputs = [3, 4]
[[session.monitor.system]]
name = "studio"
outputs = [1, 2]
"""
    + TAIL
)


def studiod(*args: str, timeout: float = 30.0) -> str:
    """A ``studiod`` CLI command in its own process; its stdout (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "studiod.daemon.cli", *args, "--port", str(OSC_PORT)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, f"studiod {' '.join(args)}: {done.stderr}"
    return done.stdout


def oscsend(*args: str) -> None:
    subprocess.run(["oscsend", "127.0.0.1", str(OSC_PORT), *args], check=True, timeout=10)


def loudness(y: np.ndarray) -> float:
    return pyloudnorm.Meter(FS).integrated_loudness(y.astype(np.float64))


def step_bound(amps: np.ndarray, freqs_hz: tuple[float, ...]) -> float:
    """The largest sample-to-sample step of ``sum(a_k sin(2 pi f_k n / FS + phi_k))``:
    each sine moves by at most 2 a sin(pi f / FS) per sample."""
    pairs = zip(amps, freqs_hz, strict=True)
    return float(sum(2 * a * math.sin(math.pi * f / FS) for a, f in pairs))


class Rig:
    """jackd, ``studiod run`` on ``config`` and a JACK peer playing ``played`` (default: the
    two test tones; its columns into the daemon's first inputs) and recording the daemon's
    first ``outputs`` outputs."""

    def __init__(self, tmp_path, config: str = CONFIG, played=None, outputs: int = 2):
        self.tmp_path = tmp_path
        self.config, self.outputs = config, outputs
        self.programme = programme() if played is None else played
        self.server = JackServer(period=128, synchronous=True)
        self.daemon = self.peer = None

    def __enter__(self) -> Rig:
        config = self.tmp_path / "studiod.toml"
        config.write_text(self.config.format(port=OSC_PORT))
        self.server.start()
        self.daemon = DaemonProcess(config, self.server.env, self.tmp_path)
        self.daemon.start()
        self.peer = Peer(self.server, "peer", self.outputs, self.programme.shape[1])
        self.peer.play(self.programme, self.tmp_path)
        self.peer.wire()
        return self

    def take(self, seconds: float, prepare=None, switch=None, at_s: float = 0.0) -> np.ndarray:
        """A recording of ``seconds`` (after ``prepare()``, with ``switch()`` called ``at_s``
        into it). jackd runs synchronously (:class:`JackServer`): a late cycle on this VM
        delays the recording and leaves no step or dip in it."""
        if prepare is not None:
            prepare()
        recorded: dict[str, np.ndarray] = {}

        def take() -> None:
            recorded["y"] = self.peer.record(seconds, self.tmp_path).astype(np.float64)

        thread = threading.Thread(target=take)
        thread.start()
        if switch is not None:
            time.sleep(at_s)
            switch()
        thread.join()
        return recorded["y"]

    def __exit__(self, *exc) -> None:
        if self.peer is not None:
            self.peer.close()
        if self.daemon is not None:
            self.daemon.close()
        self.server.stop()


@netns
def test_reference_ab_at_the_mixs_loudness_and_back_without_a_click(tmp_path):
    assert inside()
    t = np.arange(8 * REF_RATE) / REF_RATE
    ref = 0.5 * np.sin(2 * np.pi * REF_HZ * t)  # ~9 dB louder than the mix
    sf.write(tmp_path / "ref.flac", np.column_stack([ref, ref]), REF_RATE)
    with Rig(tmp_path) as rig:
        out = studiod("player", "load", str(tmp_path / "ref.flac"))
        assert out.startswith(f"loaded {tmp_path / 'ref.flac'}: 8.0 s"), out
        time.sleep(3.2)  # the mix's short-term loudness (3 s) that the reference is matched to
        mix = rig.take(1.0)
        assert studiod("player", "ref").strip() == "/monitor/source ref"
        time.sleep(1.0)  # matched from the first reading on (ReferencePlayer.update_match)
        heard = rig.take(1.5)
        ref_amp = amplitudes(heard[:, 0], (REF_HZ, F1, F2))
        mix_amp = amplitudes(mix[:, 0], (F1, F2))
        # the reference, and of the mix nothing within 60 dB of where it was
        assert ref_amp[0] > 0.05 and all(ref_amp[1:] < 1e-3 * mix_amp)
        assert loudness(heard) == pytest.approx(loudness(mix), abs=1.0)
        assert float(studiod("player", "where").split()[0]) > 1.0  # it plays

        # back to the mix in the middle of a recording
        y = rig.take(
            2.0,
            prepare=lambda: (oscsend("/monitor/source", "s", "ref"), time.sleep(1.0)),
            switch=lambda: oscsend("/monitor/source", "s", "mix"),
            at_s=0.8,
        )
        before = amplitudes(y[: FS // 2, 0], (REF_HZ, F1, F2))
        after = amplitudes(y[-FS // 2 :, 0], (REF_HZ, F1, F2))
        assert before[0] > 0.05 and all(before[1:] < 1e-3 * mix_amp)  # the reference ...
        assert after[1:] == pytest.approx(mix_amp, rel=0.01)  # ... then the mix
        assert after[0] < 1e-3 * before[0]
        before, after = before[:1], after[1:]
        # The switch is a linear crossfade y = (1 - s) mix + s ref, s moving 1/RAMP_SAMPLES
        # a sample: a step is at most the sines' own steps plus (|mix| + |ref|) / RAMP_SAMPLES.
        peaks = before[0] + after.sum()
        bound = step_bound(before, (REF_HZ,)) + step_bound(after, (F1, F2)) + peaks / RAMP_SAMPLES
        for column in (0, 1):
            assert np.max(np.abs(np.diff(y[:, column]))) <= bound
        # and a hard switch could have broken it: the two signals differ by up to their sum
        assert peaks > 3 * bound
        assert rig.daemon.stop() == 0
        log = rig.daemon.log()
        assert "Traceback" not in log and "ERROR" not in log, log
        assert "reference: " in log and "ref.flac loaded" in log


# Ten parameters of the mix, each moved away from its scene value.
SCENE = {
    "/ch/1/fader": -6.0, "/ch/2/fader": -3.0, "/ch/1/pan": -0.3, "/ch/2/pan": 0.25,
    "/ch/1/eq/2/gain": 3.0, "/ch/1/eq/2/freq": 2500.0, "/ch/2/hpf/freq": 30.0,
    "/ch/1/comp/threshold": -10.0, "/master/fader": -2.0, "/ch/2/mute": 0,
}  # fmt: skip
MOVED = {
    "/ch/1/fader": -14.0, "/ch/2/fader": -20.0, "/ch/1/pan": 0.5, "/ch/2/pan": -0.5,
    "/ch/1/eq/2/gain": -6.0, "/ch/1/eq/2/freq": 800.0, "/ch/2/hpf/freq": 60.0,
    "/ch/1/comp/threshold": -30.0, "/master/fader": -8.0, "/ch/2/mute": 1,
}  # fmt: skip


def osc_args(value) -> tuple[str, str]:
    return ("i", str(value)) if isinstance(value, int) else ("f", repr(float(value)))


def clicks_dbfs(y: np.ndarray) -> float:
    """Peak of what lies above 8 kHz (4th-order Butterworth high-pass), in dBFS: the test
    tones (50 Hz, 997 Hz) and smooth gain moves leave nothing there; a step does (a step of
    height h puts a spike of about h/2 there)."""
    sos = signal.butter(4, 8000.0, "highpass", fs=FS, output="sos")
    hf = signal.sosfilt(sos, y, axis=0)[FS // 10 :]  # past the filter's own start
    return 20 * math.log10(max(float(np.max(np.abs(hf))), 1e-12))


@netns
def test_scene_save_change_ten_recall_all_restored_without_a_click(tmp_path):
    assert inside()
    with Rig(tmp_path) as rig, OscClient("127.0.0.1", OSC_PORT) as client:
        for address, value in SCENE.items():
            oscsend(address, *osc_args(value))
        assert studiod("snapshot", "save", "verse").strip() == "scene 'verse' saved"
        assert studiod("snapshot", "list").split("\n")[0] == "verse"

        def move() -> None:
            for address, value in MOVED.items():
                oscsend(address, *osc_args(value))
            for address, value in MOVED.items():
                assert client.ask(address) == [pytest.approx(value, abs=1e-4)], address
            time.sleep(0.3)  # settled in the moved state

        def restored() -> None:
            for address, value in SCENE.items():
                assert client.ask(address) == [pytest.approx(value, abs=1e-4)], address

        # from the command line, with a crossfade of 300 ms (the CLI sets it first)
        move()
        out = studiod("snapshot", "recall", "verse", "--fade", "300")
        assert out.strip() == "scene 'verse' recalled"
        time.sleep(0.5)
        restored()
        assert client.ask("/snapshot/fade") == [300.0]
        # recorded across a recall (sent by liblo's oscsend, a small C program, so that
        # starting a Python CLI does not compete with the audio for the two CPUs)
        y = rig.take(
            1.5,
            prepare=move,
            switch=lambda: oscsend("/snapshot/recall", "s", "verse"),
            at_s=0.5,
        )
        restored()
        # what the recall changed is audible (channel 2 unmuted: its 50 Hz is back) ...
        assert amplitudes(y[:, 0][: FS // 4], (F1, F2))[1] < 1e-5
        assert amplitudes(y[:, 0][-FS // 4 :], (F1, F2))[1] > 0.2 * A2
        # ... and clicks are not: nothing above 8 kHz louder than -60 dBFS
        assert clicks_dbfs(y) < -60.0
        assert rig.daemon.stop() == 0
        log = rig.daemon.log()
        assert "Traceback" not in log and "ERROR" not in log, log
        assert "snapshot 'verse' recalled" in log


CUE_CONFIG = (
    HEAD
    + """
[session.monitor]
talkback_input = 3
[[session.monitor.system]]
name = "studio"
outputs = [1, 2]
[[session.monitor.system]]
name = "phones1"
outputs = [3, 4]
additive = true
cue = true
[[session.monitor.system]]
name = "phones2"
outputs = [5, 6]
additive = true
cue = true
[params]
"/monitor/systems/phones1/on" = 1
"/monitor/systems/phones2/on" = 1
"""
    + TAIL
)
F_MIC = 3001.0
A_MIC = 10 ** (-20 / 20)


@netns
def test_cue_mix_and_talkback_measured_through_jackd(tmp_path):
    assert inside()
    t = np.arange(2 * FS) / FS
    played = np.column_stack([programme(), A_MIC * np.sin(2 * np.pi * F_MIC * t)])  # + the mic
    tones = (F1, F2, F_MIC)
    with Rig(tmp_path, CUE_CONFIG, played, outputs=6) as rig:

        def heard(column: int) -> np.ndarray:
            time.sleep(0.1)  # the parameter ramps and a few periods of latency
            return amplitudes(rig.take(0.5)[:, column], tones)

        studio = heard(0)
        assert studio[0] == pytest.approx(A1 * PAN_CENTRE, rel=0.01) and studio[2] < 1e-5

        # phones1 gets its own mix without the tone; phones2 follows the monitor bus
        oscsend("/monitor/systems/phones1/cue", "i", "1")
        oscsend("/ch/1/cue/phones1/level", "f", "-90")
        phones1, phones2 = heard(2), heard(4)
        assert phones1[0] < 1e-3 * studio[0]  # no tone in this cue mix
        assert phones1[1] == pytest.approx(A2 * PAN_CENTRE, rel=0.01)  # the bass, pre-fader
        assert phones2 == pytest.approx(studio, rel=0.01, abs=1e-6)

        # talkback: the mic on both headphone systems, the studio speakers 20 dB down
        oscsend("/talkback/on", "i", "1")
        for column in (2, 3, 4, 5):
            assert 20 * math.log10(heard(column)[2] / A_MIC) == pytest.approx(0.0, abs=0.2)
        dimmed = heard(0)
        assert 20 * math.log10(dimmed[0] / studio[0]) == pytest.approx(-20.0, abs=0.2)
        assert dimmed[2] < 1e-5  # the mic is not on the speakers
        oscsend("/talkback/on", "i", "0")
        assert heard(0)[0] == pytest.approx(studio[0], rel=0.01)
        assert heard(2)[2] < 1e-5

        assert rig.daemon.stop() == 0
        log = rig.daemon.log()
        assert "Traceback" not in log and "ERROR" not in log, log
