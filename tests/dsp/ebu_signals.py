"""Test signals for the loudness tests: EBU Tech 3341 / 3342 cases and realistic programmes.

The EBU signals that are not in ../shared/testdata are synthesised from their definitions in
EBU Tech 3341 V4 (Nov 2023) Table 1 and EBU Tech 3342 V4 Table 1: stereo (in-phase) 1 kHz
sines whose level is given as dBFS peak per channel. A 1 kHz stereo sine at -23 dBFS reads
-23.0 LUFS (K-weighting gain at 1 kHz ~ +0.69 dB cancels the -0.691 of BS.1770 eq. 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import signal

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
EBU_DIR = SHARED / "testdata" / "ebu"

FS = 48000


def sine(level_dbfs: float | None, seconds: float, fs: int = FS, freq_hz: float = 1000.0):
    """A sine of peak ``level_dbfs`` (None: silence), ``round(seconds * fs)`` samples."""
    n = round(seconds * fs)
    if level_dbfs is None:
        return np.zeros(n)
    return 10.0 ** (level_dbfs / 20.0) * np.sin(2.0 * np.pi * freq_hz * np.arange(n) / fs)


def sequence(parts, fs: int = FS) -> np.ndarray:
    """Concatenate (level_dbfs or None, seconds) parts into one mono signal."""
    return np.concatenate([sine(level, seconds, fs) for level, seconds in parts])


def stereo(x: np.ndarray) -> np.ndarray:
    return np.column_stack([x, x])


# --- EBU Tech 3341 Table 1 -------------------------------------------------------------------
# (case, parts, expected integrated LUFS) for the stereo integrated-loudness cases.
TECH3341_INTEGRATED = [
    (3, [(-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0)], -23.0),
    (4, [(-72.0, 10.0), (-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0), (-72.0, 10.0)], -23.0),
    (5, [(-26.0, 20.0), (-20.0, 20.1), (-26.0, 20.0)], -23.0),
]

# Case 6: 20 s of 1 kHz, L and R at -28, C at -24, Ls and Rs at -30 dBFS: I = -23.0 LUFS.
TECH3341_CASE6_LEVELS = {"L": -28.0, "R": -28.0, "C": -24.0, "Ls": -30.0, "Rs": -30.0}


def tech3341_case6(with_lfe: bool, lfe_level_dbfs: float | None = None) -> np.ndarray:
    """5.0 (L R C Ls Rs) or 5.1 (L R C LFE Ls Rs) version of case 6; LFE silent by default."""
    lv = TECH3341_CASE6_LEVELS
    chans = [sine(lv["L"], 20.0), sine(lv["R"], 20.0), sine(lv["C"], 20.0)]
    if with_lfe:
        chans.append(sine(lfe_level_dbfs, 20.0, freq_hz=60.0))
    chans += [sine(lv["Ls"], 20.0), sine(lv["Rs"], 20.0)]
    return np.column_stack(chans)


def tech3341_case9() -> np.ndarray:
    """20 x (1.34 s at -20, 1.66 s at -30 dBFS): S = -23.0 LUFS, constant after 3 s."""
    return stereo(sequence([(-20.0, 1.34), (-30.0, 1.66)] * 20))


def tech3341_case11() -> np.ndarray:
    """20 segments of 6 s: i * 0.15 s silence, 3 s at (-38 + i) dBFS, then silence to 6 s.

    Max S at the end of segment i = -38 + i LUFS ("-38.0, -37.0, ... -19.0 successive").
    """
    parts = []
    for i in range(20):
        parts += [(None, i * 0.15), (-38.0 + i, 3.0), (None, 3.0 - i * 0.15)]
    return stereo(sequence(parts))


def tech3341_case14() -> np.ndarray:
    """20 segments of 0.8 s: i * 20 ms silence, 0.4 s at (-38 + i) dBFS, silence to 0.8 s.

    Max M at the end of segment i = -38 + i LUFS.
    """
    parts = []
    for i in range(20):
        parts += [(None, i * 0.02), (-38.0 + i, 0.4), (None, 0.4 - i * 0.02)]
    return stereo(sequence(parts))


# --- EBU Tech 3342 Table 1: (case, levels of consecutive 20 s segments, expected LRA) -----
TECH3342_CASES = [
    (1, [-20.0, -30.0], 10.0),
    (2, [-20.0, -15.0], 5.0),
    (3, [-40.0, -20.0], 20.0),
    (4, [-50.0, -35.0, -20.0, -35.0, -50.0], 15.0),
]


def tech3342_signal(levels) -> np.ndarray:
    return stereo(sequence([(level, 20.0) for level in levels]))


# --- realistic programme material ------------------------------------------------------------


def _envelope(n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    """A musical dynamics envelope: phrases with attacks, decays and a slow crescendo."""
    t = np.arange(n) / fs
    env = np.zeros(n)
    onset = 0.0
    while onset < t[-1]:
        length = rng.uniform(0.15, 1.2)
        level = 10.0 ** (rng.uniform(-18.0, 0.0) / 20.0)
        mask = (t >= onset) & (t < onset + length * 3)
        tau = t[mask] - onset
        env[mask] += level * (1.0 - np.exp(-tau / 0.01)) * np.exp(-tau / length)
        onset += length * rng.uniform(0.5, 1.5)
    swell = 0.5 + 0.5 * np.sin(2.0 * np.pi * t / max(t[-1], 1.0) * 1.5) ** 2
    return env * swell


def filtered_noise_programme(
    seconds: float, fs: int = FS, seed: int = 1, band_hz=(60.0, 12000.0), level: float = 0.3
) -> np.ndarray:
    """Stereo band-pass noise (partly correlated L/R) shaped by a musical envelope."""
    rng = np.random.default_rng(seed)
    n = round(seconds * fs)
    common = rng.standard_normal(n)
    noise = np.column_stack([common + 0.5 * rng.standard_normal(n) for _ in range(2)])
    sos = signal.butter(4, band_hz, btype="bandpass", fs=fs, output="sos")
    noise = signal.sosfilt(sos, noise, axis=0)
    env = _envelope(n, fs, rng)
    x = noise * env[:, None]
    return level * x / np.max(np.abs(x))


def chord_programme(seconds: float, fs: int = FS, seed: int = 2, top_hz: float = 8000.0):
    """A sequence of harmonic chords (sawtooth-like partials up to ``top_hz``) with dynamics."""
    rng = np.random.default_rng(seed)
    n = round(seconds * fs)
    t = np.arange(n) / fs
    x = np.zeros((n, 2))
    roots = [110.0, 146.83, 164.81, 130.81, 98.0, 123.47]
    seg = n // len(roots)
    for j, root in enumerate(roots):
        sl = slice(j * seg, n if j == len(roots) - 1 else (j + 1) * seg)
        for ratio, pan in ((1.0, 0.3), (1.2599, 0.6), (1.4983, 0.45)):
            f0 = root * ratio
            k = 1
            while k * f0 < top_hz:
                ph = rng.uniform(0, 2 * np.pi)
                part = np.sin(2 * np.pi * k * f0 * t[sl] + ph) / k
                x[sl, 0] += (1 - pan) * part
                x[sl, 1] += pan * part
                k += 1
    env = _envelope(n, fs, rng)
    x *= env[:, None]
    return 0.5 * x / np.max(np.abs(x))
