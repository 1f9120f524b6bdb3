"""The reference player as a daemon component: ``[reference] track`` loads at start, the
monitor source is the A/B switch (``ref``), the reference is loudness-matched to the mix,
and the ``/player/*`` commands load, seek and loop it."""

import math

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from studiod.controllers.commands import CommandError
from studiod.daemon.reference import LOOP_XFADE_MS
from tests.daemon.test_runtime import FS, Rig, write_config


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * FS / len(x)


def test_reference_track_plays_on_ref_matched_to_the_mix(tmp_path, started):
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
    daemon.hub.set("/monitor/source", "ref", source="test")
    daemon.run(1.0)
    heard = rig.device.tail(FS // 2)[:, 0].astype(np.float64)
    assert player.playing and abs(dominant_hz(heard) - 440.0) < 5.0
    assert daemon.hub.get("/player/play") == 1.0  # the transport follows the source
    # matched: the reference is turned down to the mix's loudness (K-weighting differs by
    # a fraction of a dB between 440 Hz and 997 Hz)
    level_db = 20 * math.log10(np.sqrt(np.mean(heard**2)) / np.sqrt(np.mean(mix**2)))
    assert abs(level_db) < 1.5
    # the gain is the level difference of the two signals (both stereo, equal channels)
    expected_db = 20 * math.log10(np.sqrt(np.mean(mix**2)) / (0.5 / math.sqrt(2)))
    assert abs(player.target_gain_db - expected_db) < 1.5
    daemon.hub.set("/monitor/source", "mix", source="test")
    daemon.run(0.5)
    assert not player.playing and daemon.hub.get("/player/play") == 0.0
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


def test_player_commands_load_seek_loop_and_match(tmp_path, started):
    t = np.arange(4 * 44100) / 44100
    ramp = np.column_stack([t, t]) / 8.0  # the value says where in the track it is (s / 8)
    sf.write(tmp_path / "ramp.wav", ramp, 44100, subtype="FLOAT")
    tone = 0.25 * np.sin(2 * np.pi * 440.0 * np.arange(3 * FS) / FS)
    sf.write(tmp_path / "tone.wav", np.column_stack([tone, tone]), FS, subtype="FLOAT")
    path = write_config(tmp_path)
    path.write_text(path.read_text() + '\n[reference]\ntracks = ["tone.wav", "ramp.wav"]\n')
    daemon, rig = started(path, rig=Rig())
    hub, player = daemon.hub, daemon.component("reference").player
    assert player.path == tmp_path / "tone.wav"  # the first of the list at start

    # a track from the list, resampled from 44.1 kHz and measured
    path_, duration_s, _, peak_dbtp = hub.run("/player/track", [2])
    assert path_ == str(tmp_path / "ramp.wav") and duration_s == pytest.approx(4.0, abs=1e-3)
    assert peak_dbtp >= 20 * math.log10(0.5)  # the true peak is never below the samples'
    with pytest.raises(CommandError, match="no reference track 3"):
        hub.run("/player/track", [3])
    with pytest.raises(CommandError, match=r"reference: .*nowhere\.wav"):
        hub.run("/player/load", [str(tmp_path / "nowhere.wav")])
    assert player.path == tmp_path / "ramp.wav"  # a failed load keeps the track
    stereo = np.column_stack([tone, tone])
    _, _, lufs, _ = hub.run("/player/load", [str(tmp_path / "tone.wav")])
    assert lufs == pytest.approx(pyloudnorm.Meter(FS).integrated_loudness(stereo), abs=0.05)
    for fmt in ("MP3", "OGG", "AIFF", "FLAC"):  # what /player/load promises to read
        other = tmp_path / f"tone.{fmt.lower()}"
        sf.write(other, stereo, FS, format=fmt)
        assert hub.run("/player/load", [str(other)])[1] == pytest.approx(3.0, abs=0.01), fmt
    hub.run("/player/track", [2])

    # seek, then loop 1.0 ... 1.5 s while listening without matching (unity gain)
    hub.set("/player/match", 0, source="test")
    assert hub.run("/player/position", [2.0]) == (2.0,)
    hub.set("/monitor/source", "ref", source="test")
    rig.play(daemon, 0.3)
    assert hub.run("/player/position")[0] == pytest.approx(2.3, abs=0.1)
    assert hub.run("/player/loop", [1.0, 1.5]) == (1.0, 1.5)
    rig.play(daemon, 1.2)
    heard = rig.device.tail(FS)[:, 0].astype(np.float64)  # the external pair at unity
    # inside the loop: the ramp's values of 1.0 ... 1.5 s, and nothing later
    steady = heard[FS // 10 :]
    assert steady.min() >= 1.0 / 8.0 - 0.01 and steady.max() <= 1.5 / 8.0 + 0.01
    assert 1.0 <= hub.run("/player/position")[0] <= 1.5
    with pytest.raises(CommandError, match="must end after it starts"):
        hub.run("/player/loop", [2.0, 1.0])

    # the loop's seam is a crossfade, not a step: the tone looped half a cycle off its period
    # would jump by up to twice its amplitude; faded, a sample moves at most by the sine's
    # own step plus the fade's share of the difference (2 A / (frames + 1) a sample)
    hub.run("/player/load", [str(tmp_path / "tone.wav")])
    hub.run("/player/loop", [1.0, 1.3 + 0.5 / 440.0])
    rig.play(daemon, 1.5)  # five times round
    y = rig.device.tail(FS)[:, 0].astype(np.float64)
    a, xfade = 0.25, round(LOOP_XFADE_MS * 1e-3 * FS)
    assert np.max(np.abs(y)) == pytest.approx(a, rel=0.01)  # heard at unity (match off)
    bound = 2 * a * math.sin(math.pi * 440.0 / FS) + 2 * a / (xfade + 1)
    assert np.max(np.abs(np.diff(y))) <= bound

    # "ext" is the hardware on those inputs: the player stops and is not heard
    hub.set("/monitor/source", "ext", source="test")
    daemon.run(0.3)
    assert not player.playing and hub.get("/player/play") == 0.0
