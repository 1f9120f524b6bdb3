"""Realistic synthesised programme material for the benchmarks (no downloads).

The demo multitrack (kick, snare, hat, bass, stereo pad, lead, room; see
``studiod.dsp.demo_session.synthesize``) is rendered once as a 32 s loop (16 bars at 120 BPM)
and arranged into sections (intro, verse, chorus, breakdown, outro) with per-track levels,
so that the result has the dynamics and loudness range of a produced track, not of a test tone.
"""

from __future__ import annotations

import numpy as np

from studiod.dsp.demo_session import synthesize

LOOP_S = 32.0  # 16 bars at 120 BPM: whole bars, so sections join on the beat

# Pan of each demo track (-1 left … +1 right); the pad is already a stereo pair.
_PANS = {"kick": 0.0, "snare": 0.05, "hat": 0.35, "bass": 0.0, "lead": -0.25, "room": 0.0}

# Per-section track levels in dB (None: muted): kick, snare, hat, bass, pad, lead, room.
_SECTIONS = {
    "intro": (None, None, -6.0, None, -3.0, None, 0.0),
    "verse": (0.0, -2.0, -3.0, 0.0, -6.0, None, 0.0),
    "chorus": (1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
    "breakdown": (None, None, None, -6.0, 0.0, -4.0, 0.0),
    "outro": (-4.0, -6.0, -6.0, -4.0, -6.0, None, 0.0),
}
_FORM = ("intro", "verse", "chorus", "verse", "chorus", "breakdown", "chorus", "outro")


def loop_tracks(samplerate: int = 48000, seed: int = 7) -> np.ndarray:
    """The demo multitrack loop, float32 [frames, 8] (kick … room; pad as columns 4, 5)."""
    return np.ascontiguousarray(synthesize(LOOP_S, samplerate, seed)[:, :8])


def _pan(pan: float) -> tuple[float, float]:
    """Constant-power pan law (-3 dB centre)."""
    angle = (pan + 1.0) * np.pi / 4.0
    return float(np.cos(angle)), float(np.sin(angle))


def _section_mix(tracks: np.ndarray, levels_db) -> np.ndarray:
    n = len(tracks)
    mix = np.zeros((n, 2))
    names = ("kick", "snare", "hat", "bass", "pad", "lead", "room")
    for name, level in zip(names, levels_db, strict=True):
        if level is None:
            continue
        gain = 10.0 ** (level / 20.0)
        if name == "pad":
            mix[:, 0] += gain * tracks[:, 4]
            mix[:, 1] += gain * tracks[:, 5]
            continue
        column = {"kick": 0, "snare": 1, "hat": 2, "bass": 3, "lead": 6, "room": 7}[name]
        left, right = _pan(_PANS[name])
        mix[:, 0] += gain * left * tracks[:, column]
        mix[:, 1] += gain * right * tracks[:, column]
    return mix


def stereo_programme(seconds: float, samplerate: int = 48000, seed: int = 7) -> np.ndarray:
    """A produced-sounding stereo track of ``seconds``, float32 [frames, 2], peaks ~ -1 dBFS.

    Sections follow a pop form (repeated to length), each a whole number of loops, with a
    small random level offset per section and a fade-in and fade-out.
    """
    rng = np.random.default_rng(seed)
    tracks = loop_tracks(samplerate, seed).astype(np.float64)
    mixes = {name: _section_mix(tracks, levels) for name, levels in _SECTIONS.items()}
    n = round(seconds * samplerate)
    out = np.empty((n, 2))
    pos = 0
    k = 0
    while pos < n:
        name = _FORM[k % len(_FORM)]
        piece = mixes[name] * 10.0 ** (rng.uniform(-1.5, 1.5) / 20.0)
        take = min(len(piece), n - pos)
        out[pos : pos + take] = piece[:take]
        pos += take
        k += 1
    fade = min(n // 4, round(4.0 * samplerate))
    ramp = np.linspace(0.0, 1.0, fade)
    out[:fade] *= ramp[:, None]
    out[n - fade :] *= ramp[::-1, None]
    out *= 10.0 ** (-1.0 / 20.0) / np.max(np.abs(out))
    return out.astype(np.float32)


def multitrack(seconds: float, channels: int, samplerate: int = 48000, seed: int = 7) -> np.ndarray:
    """``channels`` mono input tracks of ``seconds``, float32 [frames, channels]: the demo
    tracks, each further copy shifted by a few bars and at another level (a second take)."""
    tracks = loop_tracks(samplerate, seed)
    n = round(seconds * samplerate)
    reps = -(-n // len(tracks)) + 1
    long = np.tile(tracks, (reps, 1))
    out = np.empty((n, channels), dtype=np.float32)
    bar = round(2.0 * samplerate)  # 4 beats at 120 BPM
    for c in range(channels):
        take, column = divmod(c, tracks.shape[1])
        shift = take * 3 * bar
        gain = 10.0 ** (-2.0 * take / 20.0)
        out[:, c] = gain * long[shift : shift + n, column]
    # An interface input clips at 0 dBFS: keep every track's peak at or below -1 dBFS.
    out *= np.minimum(1.0, 10.0 ** (-1.0 / 20.0) / np.maximum(np.abs(out).max(axis=0), 1e-9))
    return out
