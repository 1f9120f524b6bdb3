"""A synthesised multitrack session: the embedded demo's programme material.

Eight tracks at 120 BPM in A minor, gain-staged like a tracked session: the sustained
tracks around -18 dBFS RMS, the drums by their hits (peaks at -6 dBFS and below, as a
drum track is recorded: an RMS level over the gaps between hits would push a snare's hits
past full scale); kick, snare, hi-hat, bass, a stereo pad, a lead, and a track of room
noise so that a gate has something to do. Deterministic (seeded), so the demo and the
tests hear the same music. Filtered with the engine's own Butterworth biquads.
"""

from __future__ import annotations

import numpy as np

from studiod.dsp.filters import IIRFilter
from studiod.dsp.session import STANDARD_SYSTEMS, ChannelSpec, FxSpec, GroupSpec, Session

BPM = 120.0
TRACKS = ("kick", "snare", "hat", "bass", "pad_l", "pad_r", "lead", "room")
# A minor: i - VI - III - VII
_CHORDS_HZ = ((220.0, 261.63, 329.63), (174.61, 220.0, 261.63), (130.81, 164.81, 196.0),
              (196.0, 246.94, 293.66))  # fmt: skip
_BASS_HZ = (55.0, 43.65, 65.41, 49.0)
_LEAD_HZ = (659.26, 587.33, 523.25, 493.88, 523.25, 587.33, 659.26, 783.99)


def demo_session(samplerate: int = 48000) -> Session:
    """The session the demo's tracks are laid out for (inputs 1-8, ext on 9-10)."""
    return Session(
        samplerate=samplerate,
        channels=(
            ChannelSpec("kick", (1,)),
            ChannelSpec("snare", (2,)),
            ChannelSpec("hat", (3,)),
            ChannelSpec("bass", (4,)),
            ChannelSpec("pad", (5, 6)),
            ChannelSpec("lead", (7,)),
            ChannelSpec("room", (8,)),
        ),
        groups=(GroupSpec("drums"),),
        fx=(FxSpec("reverb", "reverb"), FxSpec("delay", "delay")),
        systems=STANDARD_SYSTEMS,
        ext_inputs=(9, 10),
    )


# A mix a engineer might start from: high-passes, a little EQ, drums grouped, sends.
DEMO_SETTINGS: dict[str, float | str] = {
    "/ch/1/bus": "drums",
    "/ch/2/bus": "drums",
    "/ch/3/bus": "drums",
    "/ch/1/eq/1/gain": 3.0,
    "/ch/1/eq/1/freq": 60.0,
    "/ch/2/fader": 4.0,
    "/ch/2/hpf/on": 1,
    "/ch/2/hpf/freq": 100.0,
    "/ch/2/send/reverb/level": -12.0,
    "/ch/3/hpf/on": 1,
    "/ch/3/hpf/freq": 400.0,
    "/ch/3/pan": 0.3,
    "/ch/3/fader": -6.0,
    "/ch/4/hpf/on": 1,
    "/ch/4/hpf/freq": 30.0,
    "/ch/5/hpf/on": 1,
    "/ch/5/hpf/freq": 150.0,
    "/ch/5/fader": -4.0,
    "/ch/5/send/reverb/level": -10.0,
    "/ch/6/hpf/on": 1,
    "/ch/6/hpf/freq": 200.0,
    "/ch/6/eq/3/gain": 2.0,
    "/ch/6/pan": -0.2,
    "/ch/6/send/delay/level": -14.0,
    "/ch/6/send/reverb/level": -12.0,
    "/ch/7/gate/on": 1,
    "/ch/7/fader": -12.0,
    "/bus/drums/comp/on": 1,
    "/bus/drums/fader": -2.0,
    "/master/fader": -6.0,
}


# Each track's level: kick, snare and hat by their peaks; the others by RMS.
_LEVELS = ((-6.0, "peak"), (-6.0, "peak"), (-6.0, "peak"), (-18.0, "rms"), (-22.0, "rms"),
           (-22.0, "rms"), (-20.0, "rms"), (-60.0, "rms"))  # fmt: skip


def _env(n: int, attack_s: float, decay_s: float, samplerate: int) -> np.ndarray:
    t = np.arange(n) / samplerate
    return np.minimum(t / max(attack_s, 1e-6), 1.0) * np.exp(-t / decay_s)


def _place(track: np.ndarray, sound: np.ndarray, start: int) -> None:
    end = min(len(track), start + len(sound))
    if start < end:
        track[start:end] += sound[: end - start]


def _level(x: np.ndarray, dbfs: float, measure: str) -> np.ndarray:
    """``x`` scaled so that its ``measure`` ("rms" or "peak") is ``dbfs``."""
    now = np.sqrt(np.mean(x**2)) if measure == "rms" else np.max(np.abs(x))
    return x * (10 ** (dbfs / 20.0) / (now or 1.0))


def _saw(phase_cycles: np.ndarray) -> np.ndarray:
    """A sawtooth rising from -1 to 1 once per cycle."""
    return 2.0 * np.mod(phase_cycles, 1.0) - 1.0


def _filtered(x: np.ndarray, samplerate: float, *stages: tuple[str, int, float]) -> np.ndarray:
    """``x`` through Butterworth filters, each ``(kind, order, freq_hz)`` (the engine's own
    biquads, :class:`~studiod.dsp.filters.IIRFilter`)."""
    for kind, order, freq_hz in stages:
        x = IIRFilter.butterworth(kind, order, freq_hz, samplerate).process(x)
    return x


def synthesize(seconds: float = 16.0, samplerate: int = 48000, seed: int = 7) -> np.ndarray:
    """The eight tracks as float32 [frames, 10] (inputs 9-10, the external pair, silent)."""
    rng = np.random.default_rng(seed)
    fs = float(samplerate)  # one type for the filter design (one compiled specialisation)
    n = int(seconds * samplerate)
    beat = int(60.0 / BPM * samplerate)
    tracks = np.zeros((len(TRACKS), n))
    t_hit = np.arange(int(0.5 * samplerate)) / samplerate

    kick = np.sin(2 * np.pi * (45 * t_hit + 60 * (1 - np.exp(-t_hit * 30)) / 30))
    kick *= _env(len(t_hit), 0.001, 0.18, samplerate)
    snare_noise = _filtered(rng.standard_normal(len(t_hit)), fs, ("highpass", 2, 180.0),
                            ("lowpass", 2, 8000.0))  # fmt: skip
    snare = (0.7 * snare_noise + 0.5 * np.sin(2 * np.pi * 190 * t_hit)) * _env(
        len(t_hit), 0.001, 0.09, samplerate
    )
    for k in range(0, n // beat):
        _place(tracks[0], kick, k * beat)
        if k % 2 == 1:
            _place(tracks[1], snare, k * beat)
    for k in range(0, 2 * n // beat):
        hat = _filtered(rng.standard_normal(int(0.08 * samplerate)), fs, ("highpass", 4, 7000.0))
        _place(tracks[2], hat * _env(len(hat), 0.0005, 0.02 if k % 2 else 0.04, samplerate),
               k * beat // 2)  # fmt: skip

    bar = 4 * beat
    for k in range(0, n // bar + 1):
        chord = k % 4
        t_bar = np.arange(bar) / samplerate
        f0 = _BASS_HZ[chord]
        bass = _saw(f0 * t_bar) + 0.6 * np.sin(2 * np.pi * f0 * t_bar)
        bass = _filtered(bass, fs, ("lowpass", 2, 400.0))
        gate = (np.arange(bar) % beat) < 0.8 * beat
        _place(tracks[3], bass * gate * _env(bar, 0.005, 4.0, samplerate), k * bar)
        for side, detune in ((4, 0.997), (5, 1.003)):
            pad = sum(_saw(f * detune * t_bar) for f in _CHORDS_HZ[chord])
            pad = _filtered(pad, fs, ("lowpass", 2, 2500.0))
            _place(tracks[side], pad * _env(bar, 0.25, 6.0, samplerate), k * bar)
        for j in range(8):
            f = _LEAD_HZ[(j + 3 * k) % len(_LEAD_HZ)]
            t_note = np.arange(beat // 2) / samplerate
            vibrato = 0.004 * np.sin(2 * np.pi * 5.5 * t_note)
            lead = np.sin(2 * np.pi * f * t_note * (1 + vibrato)) + 0.3 * np.sin(
                4 * np.pi * f * t_note
            )
            _place(tracks[6], lead * _env(len(t_note), 0.01, 0.3, samplerate),
                   k * bar + j * beat // 2)  # fmt: skip
    tracks[7] = _filtered(rng.standard_normal(n), fs, ("lowpass", 2, 300.0))

    out = np.zeros((n, len(TRACKS) + 2), dtype=np.float32)
    for i, (dbfs, measure) in enumerate(_LEVELS):
        out[:, i] = _level(tracks[i], dbfs, measure)
    return out
