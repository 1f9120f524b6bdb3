"""Independent filter references: analog prototypes through scipy's bilinear transform.

The RBJ cookbook filters are bilinear transforms of simple analog prototypes with the
frequency prewarped to the design frequency; here the prototypes are written in the
analog domain and scipy does the transform, so no line of the cookbook's digital
formulas is shared with the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal as ss


def rbj_reference_ba(kind: str, freq_hz: float, q: float, gain_db: float, samplerate: float):
    """(b, a) of the digital filter, from the analog prototype in s/w0."""
    amp = 10.0 ** (gain_db / 40.0)
    sq = math.sqrt(amp)
    proto = {
        "lowpass": ([1.0], [1.0, 1.0 / q, 1.0]),
        "highpass": ([1.0, 0.0, 0.0], [1.0, 1.0 / q, 1.0]),
        "bandpass": ([1.0 / q, 0.0], [1.0, 1.0 / q, 1.0]),
        "notch": ([1.0, 0.0, 1.0], [1.0, 1.0 / q, 1.0]),
        "allpass": ([1.0, -1.0 / q, 1.0], [1.0, 1.0 / q, 1.0]),
        "peak": ([1.0, amp / q, 1.0], [1.0, 1.0 / (amp * q), 1.0]),
        "lowshelf": ([amp, amp * sq / q, amp * amp], [amp, sq / q, 1.0]),
        "highshelf": ([amp * amp, amp * sq / q, amp], [1.0, sq / q, amp]),
    }[kind]
    # prewarp: the analog frequency that the bilinear transform maps onto freq_hz
    w0 = 2.0 * samplerate * math.tan(math.pi * freq_hz / samplerate)
    b, a = proto
    # substitute s -> s / w0 (scale the coefficient of s^k by w0^-k)
    b = np.array([c / w0 ** (len(b) - 1 - k) for k, c in enumerate(b)])
    a = np.array([c / w0 ** (len(a) - 1 - k) for k, c in enumerate(a)])
    return ss.bilinear(b, a, fs=samplerate)


def response_db(sos_or_ba, freqs_hz, samplerate: float) -> np.ndarray:
    """Magnitude in dB at freqs_hz of an sos array or a (b, a) pair."""
    if isinstance(sos_or_ba, tuple):
        _, h = ss.freqz(*sos_or_ba, worN=freqs_hz, fs=samplerate)
    else:
        _, h = ss.sosfreqz(sos_or_ba, worN=freqs_hz, fs=samplerate)
    return 20.0 * np.log10(np.maximum(np.abs(h), 1e-300))
