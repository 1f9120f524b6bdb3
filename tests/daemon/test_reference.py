"""The reference-track player: loudness matching, resampling, the audio-thread fill.

References: EBU Tech 3341 test files of known loudness (cases 1 and 2: -23 and -33 LUFS,
``expected_values.csv``), ``dsp.loudness.measure`` of what the player outputs, closed-form
sines (resampling) and the fill formula written out.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from studiod.daemon.audiofile import AudioFileError
from studiod.daemon.reference import L_FADE, LOOP_XFADE_MS, ReferencePlayer, player_fill
from studiod.dsp.loudness import LoudnessMeter, measure

FS = 48000
EBU = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "ebu"
LOUD = EBU / "ebu-loudness-test-set-v05" / "seq-3341-1-16bit.wav"  # -23 LUFS
QUIET = EBU / "ebu-loudness-test-set-v05" / "seq-3341-2-16bit.wav"  # -33 LUFS


def _expected_integrated(path: Path) -> float:
    with open(EBU / "expected_values.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["measure"] == "I" and (EBU / row["file"]) == path:
                return float(row["expected"])
    raise KeyError(path)


def _play(player, seconds, block=256, width=2):
    out = np.zeros((int(seconds * FS), width))
    for i in range(0, len(out), block):
        player_fill(out[i : i + block], min(block, len(out) - i), np.array([0, 1]), player.state)
    return out


def test_gain_matching_on_files_of_known_loudness():
    mix_lufs = _expected_integrated(QUIET)
    ref_lufs = _expected_integrated(LOUD)
    player = ReferencePlayer(FS, match_time_s=1.0)
    info = player.load(LOUD)
    assert info["integrated_lufs"] == pytest.approx(ref_lufs, abs=0.1)
    # the mix: the -33 LUFS file through a meter, its short-term value every 100 ms
    mix, rate = sf.read(QUIET, dtype="float32", always_2d=True)
    assert rate == FS
    meter = LoudnessMeter(FS, 2)
    player.play()
    assert player.playing
    gains = []
    for h in range(0, 150):  # 15 s of control ticks
        meter.process(mix[h * 4800 : (h + 1) * 4800])
        gains.append(player.update_match(meter.shortterm_lufs, dt_s=0.1))
        _play(player, 0.1)
    # nothing happens before the mix's first 3 s window; then gain = S_mix - S_ref
    assert gains[0] == 0.0
    assert gains[-1] == pytest.approx(mix_lufs - ref_lufs, abs=0.1)
    assert not player.limited
    # what the monitor hears from the player now reads like the mix
    player.seek(0.0)
    heard = _play(player, 8.0)
    got = measure(heard[FS:], FS)["integrated_lufs"]
    assert got == pytest.approx(mix_lufs, abs=0.1)


def test_boost_is_limited_by_the_reference_true_peak(tmp_path):
    # a quiet reference with one loud click: matching to a loud mix wants a big boost
    rng = np.random.default_rng(11)
    x = 0.003 * rng.standard_normal((6 * FS, 2))
    x[3 * FS, 0] = 0.9
    path = tmp_path / "clicky.wav"
    sf.write(path, x, FS, subtype="FLOAT")
    ref = measure(x, FS)
    player = ReferencePlayer(FS, max_boost_db=40.0)
    player.load(path)
    player.play()
    _play(player, 4.0)
    gain = player.update_match(-10.0)
    assert player.limited
    assert gain == pytest.approx(-ref["true_peak_dbtp"], abs=0.05)
    # and the plain boost limit (the same reference without its click)
    x[3 * FS, 0] = 0.0
    sf.write(path, x, FS, subtype="FLOAT")
    player = ReferencePlayer(FS, max_boost_db=6.0)
    player.load(path)
    assert player.update_match(-10.0) == pytest.approx(6.0)
    # silence of the mix holds the gain
    assert player.update_match(float("-inf")) == pytest.approx(6.0)


def test_resampling_a_44k1_file(tmp_path):
    rate = 44100
    t = np.arange(3 * rate) / rate
    amp = 10 ** (-20 / 20)
    tone = amp * np.sin(2 * np.pi * 997.0 * t)
    path = tmp_path / "tone44k1.flac"
    sf.write(path, tone, rate, subtype="PCM_24")  # mono: played on both channels
    player = ReferencePlayer(FS)
    player.load(path)
    audio = player.state.audio
    assert audio.shape == (3 * FS, 2)  # 3 s at 48 kHz (160/147 of the frames)
    # away from the edges, the closed-form sine at the new rate
    k = np.arange(FS // 2, 5 * FS // 2)
    want = amp * np.sin(2 * np.pi * 997.0 * k / FS)
    assert np.max(np.abs(audio[k, 0] - want)) < 1e-4 * amp * 10  # PCM_24 + filter ripple
    np.testing.assert_array_equal(audio[:, 0], audio[:, 1])
    # stereo 1 kHz at -20 dBFS reads -20 LUFS (BS.1770: K-weighting ~0 dB there)
    assert player.analysis.integrated_lufs == pytest.approx(-20.0, abs=0.1)


def test_fill_fades_crossfades_and_is_block_size_invariant(tmp_path):
    rng = np.random.default_rng(2)
    track = (0.5 * rng.standard_normal((2 * FS, 2))).astype(np.float32)
    path = tmp_path / "noise.wav"
    sf.write(path, track, FS, subtype="FLOAT")
    outs = []
    for block in (64, 1000, 4096):
        player = ReferencePlayer(FS, fade_ms=5.0)
        player.load(path)
        player.set_gain_db(-6.0)
        # a hardware source on the same inputs, and a column the player must not touch
        hw = np.full((FS, 3), 0.25)
        before = hw.copy()
        player_fill(hw, 4800, np.array([0, 1]), player.state)
        np.testing.assert_array_equal(hw, before)  # paused: untouched
        player.play()
        for i in range(0, FS, block):
            n = min(block, FS - i)
            player_fill(hw[i : i + n], n, np.array([0, 1]), player.state)
        outs.append(hw)
        np.testing.assert_array_equal(hw[:, 2], 0.25)
    for other in outs[1:]:
        np.testing.assert_allclose(other, outs[0], rtol=0, atol=1e-12)
    out = outs[0]
    # after the fade (25 time constants in): x (1 - f) + f g ref with f = 1, g = -6 dB
    g = 10 ** (-6 / 20)
    tail = slice(FS // 4, FS)
    np.testing.assert_allclose(out[tail, :2], g * track[tail], atol=1e-6)
    # the fade in starts at the hardware level and moves smoothly
    assert abs(out[0, 0] - 0.25) < 0.1
    # loop, seek, stop
    player = ReferencePlayer(FS)
    player.load(path)
    player.loop = True
    player.play()
    _play(player, 2.5)
    # once round the 2 s track: its last 10 ms crossfade into its first, so a time round
    # is the track less the crossfade
    assert player.position_s == pytest.approx(0.5 + LOOP_XFADE_MS / 1000, abs=1e-3)
    player.seek(1.5)
    _play(player, 0.1)
    assert 1.5 < player.position_s < 1.6
    player.stop()
    quiet = _play(player, 0.2)
    # 1e-6 of the level after ln(1e6) = 14 time constants (70 ms), then exactly nothing
    assert np.all(quiet[FS // 10 :] == 0.0) and not player.playing
    assert np.max(np.abs(quiet[FS // 20 : FS // 10])) < 1e-3


def _wait_faded_in(player, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while player.state.live[L_FADE] < 1.0:
        assert time.monotonic() < deadline, "the player did not fade in"
        time.sleep(0.01)


def test_a_load_waits_for_a_late_audio_thread_to_fade_out(tmp_path):
    """An audio thread that runs a 64-frame block every 20 ms (far behind its device) takes
    about a second to finish a 5 ms fade: the new track still comes in only after the old
    one faded out, and nothing heard steps (a swap at a fixed timeout would be a step of up
    to the old track's level, 0.5)."""
    for name, level in (("old.wav", 0.5), ("new.wav", -0.5)):
        sf.write(tmp_path / name, np.full((FS, 2), level), FS, subtype="FLOAT")
    player = ReferencePlayer(FS, fade_ms=5.0)
    player.load(tmp_path / "old.wav")
    player.play()
    heard, running = [], threading.Event()
    running.set()

    def audio_thread():
        while running.is_set():
            heard.append(player.fill(np.zeros((64, 2)))[:, 0].copy())
            time.sleep(0.02)

    thread = threading.Thread(target=audio_thread)
    thread.start()
    try:
        _wait_faded_in(player)
        start = time.monotonic()
        player.load(tmp_path / "new.wav")
        took_s = time.monotonic() - start
        _wait_faded_in(player)
    finally:
        running.clear()
        thread.join()
    y = np.concatenate(heard)
    assert took_s > 0.5  # it waited for the blocks, not for a wall-clock timeout
    assert y.max() == 0.5 and y.min() == -0.5  # both were heard in full
    coef = 1.0 - np.exp(-1.0 / (5e-3 * FS))  # the one-pole fade's largest step, per unit level
    assert np.max(np.abs(np.diff(y))) <= 0.5 * coef + 1e-9


def test_bad_input(tmp_path):
    with pytest.raises(AudioFileError, match="no such file"):
        ReferencePlayer(FS).load(tmp_path / "missing.wav")
    path = tmp_path / "quad.wav"
    sf.write(path, np.zeros((100, 4)), FS)
    with pytest.raises(AudioFileError, match="mono or stereo"):
        ReferencePlayer(FS).load(path)
    with pytest.raises(ValueError):
        ReferencePlayer(FS).seek(-1.0)
    with pytest.raises(ValueError):
        ReferencePlayer(FS, max_boost_db=float("nan"))
