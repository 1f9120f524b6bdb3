"""Three-band Linkwitz-Riley (LR4) crossover for the multiband compressor.

Each crossover point is an LR4 pair: the low-pass is two cascaded 2nd-order Butterworth
low-pass sections and the high-pass two cascaded 2nd-order Butterworth high-passes, all
designed by :func:`studiod.dsp.filters.design_butterworth` (S. Linkwitz, "Active crossover
networks for noncoincident drivers", JAES 24(1), 1976; R. Riley's squared-Butterworth
alignment). LR4 low + high at one point is the 2nd-order allpass with the Butterworth poles,
because (s^2 + sqrt2 w s + w^2)(s^2 - sqrt2 w s + w^2) = s^4 + w^4. The bilinear transform
keeps that identity, so the digital sum is the RBJ allpass at Q = 1/sqrt(2) with the same
prewarping; the low band runs through that allpass of the second crossover so that

    low + mid + high = AP(f_low) * AP(f_high)

which has a flat magnitude (the usual allpass compensation of a 3-way LR crossover).

Section layout of one lane's coefficients ``coefs[XOVER_SECTIONS, 5]``::

    0, 1  LR4 low-pass  at low_hz  -> low band
    2     allpass       at high_hz -> low band (phase match with mid + high)
    3, 4  LR4 high-pass at low_hz  -> shared by mid and high
    5, 6  LR4 low-pass  at high_hz -> mid band
    7, 8  LR4 high-pass at high_hz -> high band
"""

from __future__ import annotations

import math

import numpy as np

from studiod.dsp._jit import kernel
from studiod.dsp.filters import (
    ALLPASS,
    BUTTERWORTH_Q,
    MAX_FREQ_RATIO,
    as_frames,
    biquad_bank,
    design_biquad,
    design_butterworth,
    from_frames,
)

XOVER_SECTIONS = 9
"""Biquad sections per lane of a 3-band crossover (see the module docstring for the layout)."""

# Crossover frequencies the processor accepts. 20 Hz … 20 kHz is the audio band; the upper
# limit is further capped at MAX_FREQ_RATIO * samplerate by filters.design_biquad.
MIN_FREQ_HZ = 20.0
MAX_FREQ_HZ = 20000.0


@kernel
def design_crossover3(low_hz, high_hz, samplerate, out):
    """Write one lane's 3-band LR4 crossover into ``out`` (float64[XOVER_SECTIONS, 5]).

    low_hz < high_hz are the two crossover frequencies in Hz; a ``high_hz`` below ``low_hz``
    is raised to ``low_hz`` (the processor class rejects it before it gets here).
    """
    high_hz = max(high_hz, low_hz)
    # LR4 = a 2nd-order Butterworth section applied twice.
    design_butterworth(False, 2, low_hz, samplerate, out[0:1])
    design_butterworth(False, 2, low_hz, samplerate, out[1:2])
    design_biquad(ALLPASS, high_hz, BUTTERWORTH_Q, 0.0, samplerate, out[2])
    design_butterworth(True, 2, low_hz, samplerate, out[3:4])
    design_butterworth(True, 2, low_hz, samplerate, out[4:5])
    design_butterworth(False, 2, high_hz, samplerate, out[5:6])
    design_butterworth(False, 2, high_hz, samplerate, out[6:7])
    design_butterworth(True, 2, high_hz, samplerate, out[7:8])
    design_butterworth(True, 2, high_hz, samplerate, out[8:9])


@kernel
def crossover3_bank(x, low, mid, high, coefs, state):
    """Split a block into three LR4 bands, every lane with its own crossover.

    x, low, mid, high: float64[n, lanes]; ``low`` may be the same array as ``x`` (in-place),
    ``mid`` and ``high`` must be distinct from ``x`` and from each other.
    coefs: float64[XOVER_SECTIONS, 5, lanes]; state: float64[XOVER_SECTIONS, 2, lanes],
    updated in place.
    """
    # high first: it reads x before an in-place low overwrites it.
    biquad_bank(x, high, coefs[3:5], state[3:5])
    biquad_bank(x, low, coefs[0:3], state[0:3])
    biquad_bank(high, mid, coefs[5:7], state[5:7])
    biquad_bank(high, high, coefs[7:9], state[7:9])


def make_crossover_state(lanes: int) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed ``(coefs, state)`` for ``lanes`` lanes: float64[9, 5, lanes], [9, 2, lanes]."""
    return np.zeros((XOVER_SECTIONS, 5, lanes)), np.zeros((XOVER_SECTIONS, 2, lanes))


def check_crossover_freqs(low_hz: float, high_hz: float, samplerate: float) -> None:
    """Raise ValueError unless 20 Hz <= low_hz < high_hz <= min(20 kHz, 0.49 fs)."""
    if not (math.isfinite(samplerate) and samplerate > 0):
        raise ValueError(f"samplerate must be a positive number, got {samplerate!r}")
    top = min(MAX_FREQ_HZ, MAX_FREQ_RATIO * samplerate)
    for name, value in (("low_hz", low_hz), ("high_hz", high_hz)):
        if not (math.isfinite(value) and MIN_FREQ_HZ <= value <= top):
            raise ValueError(f"{name} must be in [{MIN_FREQ_HZ:g}, {top:g}] Hz, got {value!r}")
    if not low_hz < high_hz:
        raise ValueError(f"low_hz ({low_hz:g}) must be below high_hz ({high_hz:g})")


class Crossover3:
    """A 3-band LR4 crossover with state, for offline use and tests.

    >>> xo = Crossover3(250.0, 2500.0, samplerate=48000, lanes=2)
    >>> low, mid, high = xo.process(x)  # x: (n,) or (n, lanes); each band like x
    """

    def __init__(self, low_hz: float, high_hz: float, samplerate: float, lanes: int = 1):
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self.samplerate = float(samplerate)
        self.lanes = int(lanes)
        self.coefs, self.state = make_crossover_state(self.lanes)
        self.set_freqs(low_hz, high_hz)

    def set_freqs(self, low_hz: float, high_hz: float) -> None:
        """Move both crossover points (Hz); the filter state is kept."""
        check_crossover_freqs(low_hz, high_hz, self.samplerate)
        self.low_hz = float(low_hz)
        self.high_hz = float(high_hz)
        one = np.zeros((XOVER_SECTIONS, 5))
        design_crossover3(self.low_hz, self.high_hz, self.samplerate, one)
        self.coefs[:] = one[:, :, None]

    def reset(self) -> None:
        self.state[:] = 0.0

    def process(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(low, mid, high)``, each in the shape and float dtype of ``x``."""
        frames = as_frames(x)
        if frames.shape[1] != self.lanes:
            raise ValueError(f"crossover has {self.lanes} lanes, audio has {frames.shape[1]}")
        mid = np.empty_like(frames)
        high = np.empty_like(frames)
        crossover3_bank(frames, frames, mid, high, self.coefs, self.state)
        return from_frames(frames, x), from_frames(mid, x), from_frames(high, x)
