"""Stereo master tools: M/S width with mono bass, and an oversampled soft saturator.

Width (M/S gain law). With ``M = (L + R) / 2`` and ``S = (L - R) / 2``::

    L' = M + width * HP(S)        R' = M - width * HP(S)

``width`` is the linear gain of the side signal, 0…2: 0 gives ``L' = R' = (L + R) / 2``
(mono), 1 gives ``L' = L, R' = R``, 2 doubles the side (+6 dB). The mid is never scaled, so
the mono sum ``L' + R' = L + R`` is the same at every width: widening cannot change what a
mono listener hears (the property mastering engineers check a width control for), at the
price of up to +6 dB more level in the difference signal at width 2. ``HP`` is the "mono
below" filter: a Linkwitz-Riley 4th-order high-pass (two cascaded 2nd-order Butterworth
sections at the same frequency, -6 dB at ``freq_hz``, 24 dB/octave; S. Linkwitz, "Active
crossover networks for noncoincident drivers", JAES 24(1), 1976) on the side signal only,
so everything below ``freq_hz`` (20…500 Hz; 0 = off) is mono and the mid is untouched.

Saturation: ``f(v) = tanh(g v) / g`` with ``g = 10^(drive_db / 20)``, the hyperbolic tangent
waveshaper that is the standard smooth odd-symmetric static curve for tube/tape-style
saturation (J. Pakarinen and D. T. Yeh, "A review of digital techniques for modeling
vacuum-tube guitar amplifiers", Computer Music Journal 33(2), 2009, sec. 3). Dividing by
``g`` makes the slope at zero exactly 1: small signals pass at unity gain at every drive,
and the ceiling is ``1 / g`` (-drive_db dBFS). Output = ``(1 - mix) * dry + mix * f(x)``.

Aliasing: the curve runs at twice the sample rate. Up- and down-sampling share one
linear-phase FIR halfband (139 taps, Kaiser-windowed sinc, beta for 100 dB: J. F. Kaiser,
"Nonrecursive digital filter design using the I0-sinh window function", Proc. IEEE ISCAS
1974; length from Kaiser's formula N = (A - 7.95) / (14.36 df) + 1 for a 20 kHz passband at
44.1 kHz: ripple < 0.001 dB to 20 kHz, >= 99.9 dB rejection above fs - 20 kHz), run
polyphase (only the 70 non-zero even taps and the centre tap). Harmonics that land between
the original Nyquist and the 2x Nyquist are removed before decimation; harmonics above the
2x Nyquist still fold back (tanh has an infinite series). Worst non-harmonic component re
the fundamental, 48 kHz, 0 dBFS sine (2x here / same curve at 1x; tests/dsp/test_stereo.py
checks the 5 kHz, 12 dB case): 5 kHz at 6/12/24 dB drive -51/-41/-27 dB against
-28/-19/-14 dB; 1 kHz at 12/24 dB drive -109/-58 dB against -86/-36 dB. 2x buys about
22 dB; strongly driven high treble still aliases audibly, as with any 2x design. The dry
path is delayed to match, so ``mix`` blends time-aligned signals; the total latency is
``SATURATOR_LATENCY`` = 69 samples at every rate.
"""

from __future__ import annotations

import math

import numpy as np

from studiod.dsp._jit import kernel
from studiod.dsp.filters import (
    BUTTERWORTH_Q,
    HIGHPASS,
    as_frames,
    biquad_bank,
    design_biquad,
    from_frames,
    set_bypass,
)

# --- width -----------------------------------------------------------------------------

WIDTH_MIN = 0.0
WIDTH_MAX = 2.0
MONO_BELOW_MIN_HZ = 20.0
MONO_BELOW_MAX_HZ = 500.0

# Frames of side signal filtered per biquad_bank call; the side scratch buffer has this size.
WIDTH_CHUNK = 64


@kernel
def design_width(freq_hz, samplerate, out):
    """LR4 high-pass for the side signal into ``out`` (float64[2, 5, 1]); freq_hz 0 = bypass."""
    if freq_hz <= 0.0:
        set_bypass(out[:, :, 0])
        return
    for k in range(2):
        design_biquad(HIGHPASS, freq_hz, BUTTERWORTH_Q, 0.0, samplerate, out[k, :, 0])


@kernel
def _is_bypass(coefs):
    for k in range(coefs.shape[0]):
        if not (
            coefs[k, 0, 0] == 1.0
            and coefs[k, 1, 0] == 0.0
            and coefs[k, 2, 0] == 0.0
            and coefs[k, 3, 0] == 0.0
            and coefs[k, 4, 0] == 0.0
        ):
            return False
    return True


@kernel
def stereo_width(x, y, width, coefs, state, scratch):
    """M/S width on a stereo block; see the module docstring for the gain law.

    x, y: float64[n, 2] (y may be x); width 0…2 (linear side gain); coefs float64[2, 5, 1]
    from :func:`design_width`; state float64[2, 2, 1] (the side high-pass, in place);
    scratch float64[WIDTH_CHUNK, 1]. At width 1 with the filter off the output is the input,
    bit for bit.
    """
    n = x.shape[0]
    if width == 1.0 and _is_bypass(coefs):
        for i in range(n):
            y[i, 0] = x[i, 0]
            y[i, 1] = x[i, 1]
        return
    chunk = scratch.shape[0]
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        side = scratch[:m]
        for i in range(m):
            side[i, 0] = 0.5 * (x[start + i, 0] - x[start + i, 1])
        biquad_bank(side, side, coefs, state)
        for i in range(m):
            mid = 0.5 * (x[start + i, 0] + x[start + i, 1])
            s = width * side[i, 0]
            y[start + i, 0] = mid + s
            y[start + i, 1] = mid - s


def make_width_state() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(coefs[2, 5, 1], state[2, 2, 1], scratch[WIDTH_CHUNK, 1])``, coefs set to bypass."""
    coefs = np.zeros((2, 5, 1))
    design_width(0.0, 48000.0, coefs)
    return coefs, np.zeros((2, 2, 1)), np.zeros((WIDTH_CHUNK, 1))


def _check_stereo(frames: np.ndarray) -> None:
    if frames.shape[1] != 2:
        raise ValueError(f"stereo tools need (n, 2) audio, got {frames.shape[1]} lanes")


class StereoWidth:
    """M/S width with optional mono bass, for offline use and tests.

    >>> w = StereoWidth(width=1.3, mono_below_hz=120.0, samplerate=48000)
    >>> y = w.process(x)  # x: (n, 2); keeps filter state between calls
    """

    def __init__(self, width: float = 1.0, mono_below_hz: float = 0.0, samplerate: float = 48000):
        if not (math.isfinite(samplerate) and samplerate > 0):
            raise ValueError(f"samplerate must be positive, got {samplerate}")
        self.samplerate = float(samplerate)
        self.coefs, self.state, self.scratch = make_width_state()
        self.set_width(width)
        self.set_mono_below(mono_below_hz)

    def set_width(self, width: float) -> None:
        width = float(width)
        if not WIDTH_MIN <= width <= WIDTH_MAX:  # also rejects NaN
            raise ValueError(f"width must be {WIDTH_MIN}…{WIDTH_MAX}, got {width}")
        self.width = width

    def set_mono_below(self, freq_hz: float) -> None:
        freq_hz = float(freq_hz)
        if not (freq_hz == 0.0 or MONO_BELOW_MIN_HZ <= freq_hz <= MONO_BELOW_MAX_HZ):
            raise ValueError(
                f"mono_below_hz must be 0 (off) or {MONO_BELOW_MIN_HZ}…{MONO_BELOW_MAX_HZ}, "
                f"got {freq_hz}"
            )
        self.mono_below_hz = freq_hz
        design_width(freq_hz, self.samplerate, self.coefs)

    def reset(self) -> None:
        self.state[:] = 0.0

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = as_frames(x)
        _check_stereo(frames)
        stereo_width(frames, frames, self.width, self.coefs, self.state, self.scratch)
        return from_frames(frames, x)


# --- saturation ------------------------------------------------------------------------

DRIVE_MIN_DB = 0.0
DRIVE_MAX_DB = 24.0


def _kaiser_halfband(taps: int, attenuation_db: float) -> np.ndarray:
    """Kaiser-windowed ideal halfband (cutoff fs/4) of ``taps`` = 4k + 3, DC gain exactly 1."""
    # beta for A > 50 dB: Kaiser 1974, as in Oppenheim & Schafer, DTSP 3rd ed., eq. 7.62.
    beta = 0.1102 * (attenuation_db - 8.7)
    centre = (taps - 1) // 2
    offset = np.arange(taps) - centre
    h = 0.5 * np.sinc(offset / 2.0) * np.kaiser(taps, beta)
    h[offset % 2 == 0] = 0.0
    h[centre] = 0.5
    odd = offset % 2 != 0
    h[odd] *= 0.5 / h[odd].sum()  # exact DC gain 1, so the static curve is exact at DC
    return h


HALFBAND_TAPS = 139
HALFBAND = _kaiser_halfband(HALFBAND_TAPS, 100.0)
"""The 2x halfband, float64[139]; every other tap is 0 except the centre (0.5)."""

# The non-zero taps away from the centre (indices 0, 2, …, 138), as the polyphase branch.
HALFBAND_BRANCH = np.ascontiguousarray(HALFBAND[0::2])

# Up- plus down-sampler delay: (taps - 1) samples at 2x = (taps - 1) / 2 at the base rate.
SATURATOR_LATENCY = (HALFBAND_TAPS - 1) // 2

# Ring length of the saturator's histories (power of two > branch length and latency).
_RING = 128


@kernel
def design_saturator(drive_db, mix, out):
    """Saturator parameters into ``out`` (float64[3]): ``[g, 1 / g, mix]``, g from drive_db."""
    g = 10.0 ** (drive_db / 20.0)
    out[0] = g
    out[1] = 1.0 / g
    out[2] = mix


@kernel
def saturate(x, y, params, branch, hist_x, hist_even, hist_odd, counters):
    """2x-oversampled ``tanh(g x) / g`` with dry/wet mix, latency SATURATOR_LATENCY samples.

    x, y: float64[n, lanes] (y may be x); params float64[3] from :func:`design_saturator`;
    branch: HALFBAND_BRANCH float64[70]; state from :func:`make_saturator_state`:
    hist_x, hist_even, hist_odd float64[128, lanes], counters int64[1] (ring position).
    """
    n, lanes = x.shape
    g = params[0]
    inv_g = params[1]
    mix = params[2]
    taps = branch.shape[0]
    mask = hist_x.shape[0] - 1
    centre = taps - 1  # the halfband's centre index (69), odd
    odd_up_delay = (centre - 1) // 2
    odd_down_delay = (centre + 1) // 2
    pos = counters[0]
    if mix == 0.0:
        # Bypassed: only the dry delay runs (the latency stays the same, so switching the
        # saturator never shifts the signal in time); the wet histories restart from
        # silence when it is switched back in. Unsigned ring rows: numba tests a signed
        # index for being negative (Python's x[-1]) on every access.
        at = np.uint64(pos)
        umask = np.uint64(mask)
        latency = np.uint64(SATURATOR_LATENCY)
        for i in range(n):
            for lane in range(lanes):
                hist_x[at, lane] = x[i, lane]
                hist_even[at, lane] = 0.0
                hist_odd[at, lane] = 0.0
                y[i, lane] = hist_x[(at - latency) & umask, lane]
            at = (at + np.uint64(1)) & umask
        counters[0] = at
        return
    for i in range(n):
        for lane in range(lanes):
            hist_x[pos, lane] = x[i, lane]
        for lane in range(lanes):
            # Upsampler, polyphase: the even 2x sample is the branch FIR (x2 for the zero
            # stuffing), the odd one is the centre tap (0.5 x 2) on a delayed input.
            even = 0.0
            for k in range(taps):
                even += branch[k] * hist_x[(pos - k) & mask, lane]
            even *= 2.0
            odd = hist_x[(pos - odd_up_delay) & mask, lane]
            hist_even[pos, lane] = math.tanh(g * even) * inv_g
            hist_odd[pos, lane] = math.tanh(g * odd) * inv_g
        for lane in range(lanes):
            # Downsampler, polyphase: keep the even outputs of the halfband at 2x.
            wet = 0.0
            for k in range(taps):
                wet += branch[k] * hist_even[(pos - k) & mask, lane]
            wet += 0.5 * hist_odd[(pos - odd_down_delay) & mask, lane]
            dry = hist_x[(pos - SATURATOR_LATENCY) & mask, lane]
            y[i, lane] = dry + mix * (wet - dry)
        pos = (pos + 1) & mask
    counters[0] = pos


def make_saturator_state(lanes: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(hist_x, hist_even, hist_odd, counters)`` for :func:`saturate`, zeroed."""
    return (
        np.zeros((_RING, lanes)),
        np.zeros((_RING, lanes)),
        np.zeros((_RING, lanes)),
        np.zeros(1, dtype=np.int64),
    )


def saturation_curve(x: np.ndarray, drive_db: float) -> np.ndarray:
    """The static curve ``tanh(g x) / g`` in numpy (no oversampling, no delay)."""
    g = 10.0 ** (drive_db / 20.0)
    return np.tanh(g * np.asarray(x, dtype=np.float64)) / g


class Saturator:
    """Soft saturation for a stereo master (any lane count), for offline use and tests.

    >>> sat = Saturator(drive_db=6.0, mix=1.0)
    >>> y = sat.process(x)  # delayed by sat.latency_samples
    """

    latency_samples = SATURATOR_LATENCY

    def __init__(self, drive_db: float = 0.0, mix: float = 1.0, lanes: int = 2):
        if lanes < 1:
            raise ValueError("lanes must be >= 1")
        self.lanes = lanes
        self.params = np.zeros(3)
        self.state = make_saturator_state(lanes)
        self.drive_db = 0.0
        self.mix = 1.0
        self.set(drive_db, mix)

    def set(self, drive_db: float | None = None, mix: float | None = None) -> None:
        drive_db = self.drive_db if drive_db is None else float(drive_db)
        mix = self.mix if mix is None else float(mix)
        if not DRIVE_MIN_DB <= drive_db <= DRIVE_MAX_DB:
            raise ValueError(f"drive_db must be {DRIVE_MIN_DB}…{DRIVE_MAX_DB}, got {drive_db}")
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"mix must be 0…1, got {mix}")
        self.drive_db, self.mix = drive_db, mix
        design_saturator(drive_db, mix, self.params)

    def reset(self) -> None:
        for array in self.state:
            array[...] = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = as_frames(x)
        if frames.shape[1] != self.lanes:
            raise ValueError(f"saturator has {self.lanes} lanes, audio has {frames.shape[1]}")
        saturate(frames, frames, self.params, HALFBAND_BRANCH, *self.state)
        return from_frames(frames, x)
