"""The reference player as a daemon component: ``[reference] track`` loads at start, the
monitor source is the A/B switch, and the reference is loudness-matched to the mix."""

import math

import numpy as np
import soundfile as sf

from tests.daemon.test_runtime import FS, Rig, write_config


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * FS / len(x)


def test_reference_track_plays_on_ext_matched_to_the_mix(tmp_path, started):
    t = np.arange(3 * FS) / FS
    ref = 0.5 * np.sin(2 * np.pi * 440.0 * t)  # far louder than the -20 dBFS mix tone
    sf.write(tmp_path / "ref.wav", np.column_stack([ref, ref]), FS, subtype="FLOAT")
    path = write_config(tmp_path)
    path.write_text(path.read_text() + '\n[reference]\ntrack = "ref.wav"\n')
    daemon, rig = started(path, rig=Rig())
    player = daemon.component("reference").player
    assert player.path == tmp_path / "ref.wav" and not player.playing
    daemon.run(4.0)  # the mix's short-term loudness needs 3 s
    mix = rig.device.tail(FS // 2)[:, 0].astype(np.float64)
    assert abs(dominant_hz(mix) - 997.0) < 5.0
    daemon.hub.set("/monitor/source", "ext", source="test")
    daemon.run(1.0)
    heard = rig.device.tail(FS // 2)[:, 0].astype(np.float64)
    assert player.playing and abs(dominant_hz(heard) - 440.0) < 5.0
    # matched: the reference is turned down to the mix's loudness (K-weighting differs by
    # a fraction of a dB between 440 Hz and 997 Hz)
    level_db = 20 * math.log10(np.sqrt(np.mean(heard**2)) / np.sqrt(np.mean(mix**2)))
    assert abs(level_db) < 1.5
    # the gain is the level difference of the two signals (both stereo, equal channels)
    expected_db = 20 * math.log10(np.sqrt(np.mean(mix**2)) / (0.5 / math.sqrt(2)))
    assert abs(player.target_gain_db - expected_db) < 1.5
    daemon.hub.set("/monitor/source", "mix", source="test")
    daemon.run(0.5)
    assert not player.playing
    assert abs(dominant_hz(rig.device.tail(FS // 4)[:, 0].astype(np.float64)) - 997.0) < 5.0
    assert daemon.stats()["reference"].endswith("ref.wav")


def test_a_missing_track_is_one_error_line_and_the_daemon_runs(tmp_path, started, caplog):
    path = write_config(tmp_path)
    path.write_text(path.read_text() + '\n[reference]\ntrack = "nowhere.wav"\n')
    caplog.set_level("ERROR", logger="studiod")
    daemon, _ = started(path)
    daemon.run(0.3)
    assert daemon.device_state == "running"
    lines = [r.getMessage() for r in caplog.records if r.name == "studiod"]
    assert any(m.startswith("reference:") and "nowhere.wav" in m for m in lines), lines
