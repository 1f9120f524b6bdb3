"""FX-bus effects: a stereo delay and an algorithmic (feedback delay network) reverb.

Both return the wet signal only (the FX bus return adds it to the mix). Stereo in, stereo
out: ``x``, ``y`` are float64 ``[n, 2]``; ``y`` may be ``x``. Every delay memory is allocated
by ``make_delay_state`` / ``make_reverb_state``; the kernels allocate nothing.

Delay memories are stored line-major (``[lines, capacity]``), unlike audio buffers: each
line then reads and writes sequential addresses, which keeps the 16 reverb lines in cache.

Fractional reads use 3rd-order Lagrange interpolation (T. I. Laakso, V. Välimäki,
M. Karjalainen, U. K. Laine, "Splitting the unit delay", IEEE Signal Processing Magazine
13(1), 1996), centred so the fractional position lies between the middle two of the four
taps; at an integer delay it is exact (one tap of weight 1).

Delay times glide instead of jumping: a one-pole smoother moves the read position towards
the target with its per-sample step limited to a fixed rate (``*_MAX_GLIDE_RATE``), so a
time change sounds like a tape-speed change and never like a click.

Reverb after J.-M. Jot and A. Chaigne, "Digital delay networks for designing artificial
reverberators", 90th AES Convention, 1991, preprint 3030: 16 delay lines of mutually prime
lengths, an orthogonal (therefore lossless, see S. J. Schlecht and E. A. P. Habets, "On
lossless feedback delay networks", IEEE Trans. Signal Processing 65(6), 2017) Hadamard
feedback matrix, a per-line gain ``g_i = 10^(-3 m_i / (T60 fs))`` so that every line loses
60 dB per T60 seconds, and a per-line high shelf that makes the high-frequency T60 a set
fraction of the low-frequency T60. The input is diffused by Schroeder allpasses with
J. Dattorro's lengths and coefficients ("Effect design part 1: reverberator and other
filters", J. Audio Eng. Soc. 45(9), 1997: the plate reverberator's input diffusers).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from studiod.dsp._jit import kernel
from studiod.dsp.filters import (
    BUTTERWORTH_Q,
    HIGHPASS1,
    HIGHSHELF,
    LOWPASS1,
    MAX_FREQ_RATIO,
    design_biquad,
    flush_denormals,
)

# Values written into a delay memory are flushed to zero below this (denormals are up to
# 100x slower on x86; same threshold as filters.DENORMAL_FLUSH, 600 dB below full scale).
_FLUSH = 1e-30

# Input samples that are NaN, infinite or beyond +120 dBFS are taken as silence before they
# reach a delay memory: one bad sample would otherwise recirculate in the feedback forever.
_INPUT_LIMIT = 1e6

# --------------------------------------------------------------------------------------------
# Stereo delay
# --------------------------------------------------------------------------------------------

# Rows of the delay coefficient array float64[DELAY_ROWS, 2] (column = left, right line).
DELAY_TIME = 0  # target delay, samples
DELAY_FEEDBACK = 1  # linear gain per repeat
DELAY_MIX = 2  # linear gain of the wet output
DELAY_PINGPONG = 3  # 0 = straight, 1 = ping-pong (the engine may smooth between the two)
DELAY_GLIDE = 4  # one-pole coefficient of the delay-time smoother, per sample
DELAY_RATE = 5  # largest change of the delay per sample, samples
DELAY_HIGHCUT = 6  # rows 6..10: first-order low-pass [b0, b1, b2, a1, a2] in the feedback
DELAY_LOWCUT = 11  # rows 11..15: first-order high-pass in the feedback
DELAY_ROWS = 16

DELAY_MIN_TIME_MS = 1.0
DELAY_MAX_TIME_MS = 2000.0
DELAY_MAX_FEEDBACK = 0.95  # 20 log10(0.95) = -0.45 dB per repeat
# A read position that moves at most 0.5 samples per sample plays back at 0.5x..1.5x speed:
# a time change bends the pitch by at most an octave down or a fifth up while it glides.
DELAY_MAX_GLIDE_RATE = 0.5
DELAY_DEFAULT_GLIDE_MS = 100.0

# The centred 4-tap interpolator reads one sample newer than the integer part of the delay,
# and the feedback loop reads before it writes, so the shortest delay is 2 samples.
_MIN_FEEDBACK_DELAY = 2.0


@kernel
def _glide_coef(time_ms, samplerate):
    """One-pole smoothing coefficient for a time constant in ms (0 ms: no smoothing)."""
    if time_ms <= 0.0:
        return 1.0
    return 1.0 - math.exp(-1000.0 / (time_ms * samplerate))


@kernel
def _set_bypass_column(out, row, lane):
    out[row, lane] = 1.0
    out[row + 1, lane] = 0.0
    out[row + 2, lane] = 0.0
    out[row + 3, lane] = 0.0
    out[row + 4, lane] = 0.0


@kernel
def design_delay(
    time_l_ms,
    time_r_ms,
    feedback,
    ping_pong,
    highcut_hz,
    lowcut_hz,
    mix,
    glide_ms,
    samplerate,
    out,
):
    """Write the stereo delay's coefficients into ``out`` (float64[DELAY_ROWS, 2]).

    time_l_ms, time_r_ms: 1..2000 ms; feedback: linear gain per repeat 0..0.95 (-inf..-0.45
    dB); ping_pong: 0.0 straight, 1.0 ping-pong (in between crossfades the routing);
    highcut_hz / lowcut_hz: corner of the first-order low-pass / high-pass in the feedback
    path, 0.0 = off; mix: linear wet gain 0..1; glide_ms: time constant of the delay-time
    glide. Values are clamped to their ranges (validation happens at the edge).
    """
    nyquist_limit = MAX_FREQ_RATIO * samplerate
    for lane in range(2):
        time_ms = time_l_ms if lane == 0 else time_r_ms
        time_ms = min(max(time_ms, DELAY_MIN_TIME_MS), DELAY_MAX_TIME_MS)
        out[DELAY_TIME, lane] = time_ms * samplerate / 1000.0
        out[DELAY_FEEDBACK, lane] = min(max(feedback, 0.0), DELAY_MAX_FEEDBACK)
        out[DELAY_MIX, lane] = min(max(mix, 0.0), 1.0)
        out[DELAY_PINGPONG, lane] = min(max(ping_pong, 0.0), 1.0)
        out[DELAY_GLIDE, lane] = _glide_coef(glide_ms, samplerate)
        out[DELAY_RATE, lane] = DELAY_MAX_GLIDE_RATE
        if highcut_hz > 0.0 and highcut_hz < nyquist_limit:
            highcut = out[DELAY_HIGHCUT : DELAY_HIGHCUT + 5, lane]
            design_biquad(LOWPASS1, highcut_hz, BUTTERWORTH_Q, 0.0, samplerate, highcut)
        else:
            _set_bypass_column(out, DELAY_HIGHCUT, lane)
        if lowcut_hz > 0.0:
            lowcut = out[DELAY_LOWCUT : DELAY_LOWCUT + 5, lane]
            design_biquad(HIGHPASS1, lowcut_hz, BUTTERWORTH_Q, 0.0, samplerate, lowcut)
        else:
            _set_bypass_column(out, DELAY_LOWCUT, lane)


def make_delay_state(samplerate: float, max_time_ms: float = DELAY_MAX_TIME_MS) -> tuple:
    """Preallocated state for ``delay_process``, in its argument order.

    Returns ``(buffer float64[2, capacity], filter_state float64[2, 2, 2],
    glide float64[2], position int64[1])``; capacity = ceil(max_time_ms fs / 1000) + 4.
    ``glide`` holds the current (smoothed) delay in samples, -1 until the first block.
    """
    _check_samplerate(samplerate)
    _check("max_time_ms", max_time_ms, DELAY_MIN_TIME_MS, DELAY_MAX_TIME_MS)
    capacity = math.ceil(max_time_ms * samplerate / 1000.0) + 4
    return (
        np.zeros((2, capacity)),
        np.zeros((2, 2, 2)),
        np.full(2, -1.0),
        np.zeros(1, dtype=np.int64),
    )


@kernel
def _sanitize(v):
    """The sample itself, or 0.0 if it is NaN, infinite or beyond _INPUT_LIMIT."""
    if abs(v) <= _INPUT_LIMIT:  # False for NaN
        return v
    return 0.0


@kernel
def _flushed(v):
    if abs(v) < _FLUSH:
        return 0.0
    return v


@kernel
def _glide(current, target, coef, max_rate):
    """One step of the rate-limited one-pole delay-time smoother (-1: jump to target)."""
    if current < 0.0:
        return target
    step = coef * (target - current)
    step = min(max(step, -max_rate), max_rate)
    current += step
    # Land exactly on the target so a settled integer delay reads one exact tap again.
    if abs(target - current) < 1e-6:
        current = target
    return current


@kernel
def _read_lagrange(buf, line, pos, delay):
    """Read ``buf[line]`` (a circular line written at ``pos``) ``delay`` samples back.

    3rd-order Lagrange interpolation over the taps at integer delays base..base + 3 with
    base = floor(delay) - 1 (>= 0): the point lies between the middle taps (Laakso et al.
    1996). delay >= 0; the caller keeps base + 3 < capacity.
    """
    capacity = buf.shape[1]
    whole = int(delay)
    base = whole - 1 if whole >= 1 else 0
    mu = delay - base
    d1 = mu - 1.0
    d2 = mu - 2.0
    d3 = mu - 3.0
    h0 = -d1 * d2 * d3 * (1.0 / 6.0)
    h1 = mu * d2 * d3 * 0.5
    h2 = -mu * d1 * d3 * 0.5
    h3 = mu * d1 * d2 * (1.0 / 6.0)
    j = pos - base
    if j < 0:
        j += capacity
    # np.uint64(j): see reverb_process
    acc = h0 * buf[line, np.uint64(j)]
    j = j - 1 if j > 0 else capacity - 1
    acc += h1 * buf[line, np.uint64(j)]
    j = j - 1 if j > 0 else capacity - 1
    acc += h2 * buf[line, np.uint64(j)]
    j = j - 1 if j > 0 else capacity - 1
    acc += h3 * buf[line, np.uint64(j)]
    return acc


@kernel
def _biquad_tick(coefs, row, state, section, lane, v):
    """One sample of a TDF-II biquad (as filters.biquad_bank) for use inside a feedback loop.

    coefs[row .. row + 4, lane] = [b0, b1, b2, a1, a2]; state[section, 0..1, lane].
    """
    out = coefs[row, lane] * v + state[section, 0, lane]
    state[section, 0, lane] = (
        coefs[row + 1, lane] * v - coefs[row + 3, lane] * out + state[section, 1, lane]
    )
    state[section, 1, lane] = coefs[row + 2, lane] * v - coefs[row + 4, lane] * out
    return out


@kernel
def delay_process(x, y, coefs, buffer, filter_state, glide, position):
    """Run the stereo delay over one block; returns nothing, writes the wet signal into ``y``.

    x, y: float64[n, 2] (y may be x); coefs: float64[DELAY_ROWS, 2] from ``design_delay``;
    buffer, filter_state, glide, position: from ``make_delay_state``, updated in place.
    Each line is written with its input plus feedback x (low-cut(high-cut(its own tap)));
    in ping-pong mode the left line takes the mono sum (L + R) / 2 plus the right line's
    feedback, and the right line only the left line's feedback, so echoes alternate sides.
    """
    n = x.shape[0]
    capacity = buffer.shape[1]
    max_delay = capacity - 4.0
    pos = position[0]
    for i in range(n):
        xl = _sanitize(x[i, 0])
        xr = _sanitize(x[i, 1])
        tap_l = 0.0
        tap_r = 0.0
        fb_l = 0.0
        fb_r = 0.0
        for lane in range(2):
            target = min(max(coefs[DELAY_TIME, lane], _MIN_FEEDBACK_DELAY), max_delay)
            d = _glide(glide[lane], target, coefs[DELAY_GLIDE, lane], coefs[DELAY_RATE, lane])
            glide[lane] = d
            tap = _read_lagrange(buffer, lane, pos, d)
            f = _biquad_tick(coefs, DELAY_HIGHCUT, filter_state, 0, lane, tap)
            f = _biquad_tick(coefs, DELAY_LOWCUT, filter_state, 1, lane, f)
            f *= coefs[DELAY_FEEDBACK, lane]
            if lane == 0:
                tap_l = tap
                fb_l = f
            else:
                tap_r = tap
                fb_r = f
        p = coefs[DELAY_PINGPONG, 0]
        mono = 0.5 * (xl + xr)
        write_l = (1.0 - p) * (xl + fb_l) + p * (mono + fb_r)
        write_r = (1.0 - p) * (xr + fb_r) + p * fb_l
        buffer[0, pos] = _flushed(write_l)
        buffer[1, pos] = _flushed(write_r)
        y[i, 0] = coefs[DELAY_MIX, 0] * tap_l
        y[i, 1] = coefs[DELAY_MIX, 1] * tap_r
        pos += 1
        if pos == capacity:
            pos = 0
    position[0] = pos
    flush_denormals(filter_state)


# --------------------------------------------------------------------------------------------
# Reverb
# --------------------------------------------------------------------------------------------

REVERB_LINES = 16

# Rows of the reverb coefficient array float64[REVERB_ROWS, REVERB_LINES].
REVERB_LENGTH = 0  # target length of each delay line, samples (mutually prime integers)
REVERB_FILTER = 1  # rows 1..5: per-line absorption biquad [b0, b1, b2, a1, a2], g_i included
REVERB_IN_L = 6  # injection gain of the diffused left input into each line
REVERB_IN_R = 7
REVERB_OUT_L = 8  # output tap gains
REVERB_OUT_R = 9
REVERB_LFO_COS = 10  # per-sample rotation of each line's modulation oscillator
REVERB_LFO_SIN = 11
REVERB_MOD_DEPTH = 12  # modulation depth, samples
REVERB_DIFFUSER_LENGTH = 13  # columns 0..3 left, 4..7 right: allpass delays, samples
REVERB_DIFFUSER_GAIN = 14  # columns 0..7: allpass coefficients
REVERB_GLOBAL = 15  # columns: see the _G_* constants
REVERB_ROWS = 16

_G_PREDELAY = 0  # target pre-delay, samples
_G_PREDELAY_GLIDE = 1  # one-pole coefficient of the pre-delay glide
_G_PREDELAY_RATE = 2  # largest pre-delay change per sample
_G_LINE_GLIDE = 3  # one-pole coefficient of the line-length glide (size changes)
_G_LINE_RATE = 4  # largest line-length change per sample
_G_WIDTH = 5  # side gain of the output (0 mono, 1 as generated)
_G_MIX = 6  # linear wet gain

REVERB_MIN_DECAY_S = 0.1
REVERB_MAX_DECAY_S = 20.0
REVERB_MAX_PREDELAY_MS = 250.0
REVERB_MIN_SIZE = 0.25
REVERB_MAX_SIZE = 2.0
REVERB_MIN_HF_RATIO = 0.05
REVERB_MAX_MOD_DEPTH_MS = 2.0
REVERB_MAX_MOD_RATE_HZ = 5.0

# Delay-line lengths at size 1.0: geometric from 15 ms to 75 ms (mean 38 ms, total 0.60 s).
# An FDN's modal density is its total delay in seconds (modes per Hz); Schroeder's criterion
# of at least 0.15 T60 modes per Hz (quoted by Jot & Chaigne 1991) is met at size 1.0 up to
# T60 = 4 s, beyond that modulation smears the modes; size scales every line.
_LINE_MS = 15.0 * (75.0 / 15.0) ** (np.arange(REVERB_LINES) / (REVERB_LINES - 1.0))

# Dattorro 1997, plate input diffusers: 142, 107, 379, 277 samples at 29761 Hz, with
# coefficients 0.75, 0.75, 0.625, 0.625 (scaled here by the diffusion parameter). The right
# channel uses the same chain 7 % longer so the two inputs are diffused differently.
_DIFFUSER_MS = np.array([142.0, 107.0, 379.0, 277.0]) * 1000.0 / 29761.0
_DIFFUSER_GAIN = np.array([0.75, 0.75, 0.625, 0.625])
_DIFFUSER_RIGHT_STRETCH = 1.07

# Injection and output sign patterns (+-1 / 4, unit norm). OUT_R is OUT_L times a balanced
# +-1 pattern, so the two output taps are orthogonal: with line signals of equal energy and
# little mutual correlation the left and right outputs are decorrelated.
_IN_L = np.array([1, 1, -1, 1, -1, -1, 1, -1, 1, -1, 1, 1, -1, 1, -1, -1]) / 4.0
_IN_R = np.array([1, -1, 1, 1, -1, 1, -1, -1, 1, 1, -1, 1, 1, -1, -1, 1]) / 4.0
_OUT_L = np.array([1, -1, -1, 1, 1, 1, -1, -1, -1, 1, 1, -1, 1, -1, 1, 1]) / 4.0
_OUT_R = _OUT_L * np.array([1, 1, -1, -1, 1, -1, 1, -1, -1, 1, -1, 1, 1, -1, 1, -1])

# Modulation: each line's oscillator runs at mod_rate_hz times its own factor (0.7..1.3),
# starting at a golden-ratio spread of phases, so no two lines move together.
_MOD_RATE_FACTOR = 0.7 + 0.6 * ((np.arange(REVERB_LINES) * 0.6180339887) % 1.0)

# Pre-delay glides like the stereo delay; line lengths (size changes) glide slowly, at most
# 0.05 samples per sample (a pitch bend below one semitone) so the tail morphs without a jump.
_PREDELAY_GLIDE_MS = 50.0
_LINE_GLIDE_MS = 50.0
_LINE_MAX_GLIDE_RATE = 0.05
# Per-pass shelf cut is limited here; below it the band is inaudible after one pass anyway.
_MIN_SHELF_GAIN_DB = -240.0


@kernel
def _next_prime(n):
    """Smallest prime >= n (trial division; n is at most a few 10^5 here)."""
    if n <= 2:
        return 2
    c = n if n % 2 == 1 else n + 1
    while True:
        f = 3
        prime = True
        while f * f <= c:
            if c % f == 0:
                prime = False
                break
            f += 2
        if prime:
            return c
        c += 2


@kernel
def _line_lengths(size, samplerate, out):
    """Mutually prime (distinct prime) line lengths in samples into out[REVERB_LINES]."""
    previous = 0
    for i in range(REVERB_LINES):
        m = _next_prime(max(int(_LINE_MS[i] * size * samplerate / 1000.0 + 0.5), 3))
        if m <= previous:
            m = _next_prime(previous + 1)
        out[i] = m
        previous = m


@kernel
def _diffuser_lengths(samplerate, out):
    """The 8 input-allpass delays (left 0..3, right 4..7), distinct primes, into out."""
    for ch in range(2):
        stretch = 1.0 if ch == 0 else _DIFFUSER_RIGHT_STRETCH
        for k in range(4):
            m = _next_prime(max(int(_DIFFUSER_MS[k] * stretch * samplerate / 1000.0 + 0.5), 2))
            for j in range(ch * 4 + k):  # keep all eight distinct
                if out[j] == m:
                    m = _next_prime(m + 1)
            out[ch * 4 + k] = m


@kernel
def design_reverb(
    decay_s,
    hf_ratio,
    damping_hz,
    size,
    predelay_ms,
    diffusion,
    width,
    mod_depth_ms,
    mod_rate_hz,
    mix,
    samplerate,
    out,
):
    """Write the reverb's coefficients into ``out`` (float64[REVERB_ROWS, REVERB_LINES]).

    decay_s: T60 at low frequencies, 0.1..20 s; hf_ratio: T60 above damping_hz divided by
    decay_s, 0.05..1 (1 = no damping); damping_hz: centre of the per-line high shelf;
    size: scale of the line lengths 0.25..2 (1 = 15..75 ms); predelay_ms: 0..250;
    diffusion: 0..1 (input allpass gains, 1 = Dattorro's 0.75/0.625); width: 0 mono .. 1;
    mod_depth_ms: 0..2, mod_rate_hz: 0..5 (line modulation); mix: linear wet gain 0..1.
    """
    decay_s = min(max(decay_s, REVERB_MIN_DECAY_S), REVERB_MAX_DECAY_S)
    hf_ratio = min(max(hf_ratio, REVERB_MIN_HF_RATIO), 1.0)
    size = min(max(size, REVERB_MIN_SIZE), REVERB_MAX_SIZE)
    predelay_ms = min(max(predelay_ms, 0.0), REVERB_MAX_PREDELAY_MS)
    diffusion = min(max(diffusion, 0.0), 1.0)
    mod_depth_ms = min(max(mod_depth_ms, 0.0), REVERB_MAX_MOD_DEPTH_MS)
    mod_rate_hz = min(max(mod_rate_hz, 0.0), REVERB_MAX_MOD_RATE_HZ)

    _line_lengths(size, samplerate, out[REVERB_LENGTH])
    for i in range(REVERB_LINES):
        m = out[REVERB_LENGTH, i]
        # Jot & Chaigne 1991: g_i = 10^(-3 m_i / (T60 fs)), i.e. -60 dB per T60 seconds.
        low_db = -60.0 * m / (decay_s * samplerate)
        shelf_db = max(low_db / hf_ratio - low_db, _MIN_SHELF_GAIN_DB)
        filt = out[REVERB_FILTER : REVERB_FILTER + 5, i]
        design_biquad(HIGHSHELF, damping_hz, BUTTERWORTH_Q, shelf_db, samplerate, filt)
        g = 10.0 ** (low_db / 20.0)
        filt[0] *= g
        filt[1] *= g
        filt[2] *= g
        out[REVERB_IN_L, i] = _IN_L[i]
        out[REVERB_IN_R, i] = _IN_R[i]
        out[REVERB_OUT_L, i] = _OUT_L[i]
        out[REVERB_OUT_R, i] = _OUT_R[i]
        w = 2.0 * math.pi * mod_rate_hz * _MOD_RATE_FACTOR[i] / samplerate
        out[REVERB_LFO_COS, i] = math.cos(w)
        out[REVERB_LFO_SIN, i] = math.sin(w)
        out[REVERB_MOD_DEPTH, i] = mod_depth_ms * samplerate / 1000.0

    out[REVERB_DIFFUSER_LENGTH] = 0.0
    _diffuser_lengths(samplerate, out[REVERB_DIFFUSER_LENGTH])
    out[REVERB_DIFFUSER_GAIN] = 0.0
    for k in range(8):
        out[REVERB_DIFFUSER_GAIN, k] = diffusion * _DIFFUSER_GAIN[k % 4]

    out[REVERB_GLOBAL] = 0.0
    out[REVERB_GLOBAL, _G_PREDELAY] = predelay_ms * samplerate / 1000.0
    out[REVERB_GLOBAL, _G_PREDELAY_GLIDE] = _glide_coef(_PREDELAY_GLIDE_MS, samplerate)
    out[REVERB_GLOBAL, _G_PREDELAY_RATE] = DELAY_MAX_GLIDE_RATE
    out[REVERB_GLOBAL, _G_LINE_GLIDE] = _glide_coef(_LINE_GLIDE_MS, samplerate)
    out[REVERB_GLOBAL, _G_LINE_RATE] = _LINE_MAX_GLIDE_RATE
    out[REVERB_GLOBAL, _G_WIDTH] = min(max(width, 0.0), 1.0)
    out[REVERB_GLOBAL, _G_MIX] = min(max(mix, 0.0), 1.0)


# Rows of the reverb's per-line state float64[_LS_ROWS, REVERB_LINES].
_LS_LENGTH = 0  # current (gliding) line length, samples; -1 until the first block
_LS_LFO_COS = 1  # modulation oscillator, unit phasor
_LS_LFO_SIN = 2
_LS_ALLPASS = 3  # previous output of each line's allpass interpolator
_LS_TAP = 4  # scratch: this sample's line outputs
_LS_WORK = 5  # scratch: the feedback-matrix product
_LS_ROWS = 6


def make_reverb_state(samplerate: float) -> tuple:
    """Preallocated state for ``reverb_process``, in its argument order.

    Returns ``(predelay float64[2, P], diffusers float64[8, A], lines float64[16, C],
    line_state float64[6, 16], filter_state float64[1, 2, 16], scalars float64[1],
    positions int64[3])``: P holds 250 ms, A the longest input allpass, C the longest line at
    size 2 plus the largest modulation depth. ``scalars[0]`` is the current pre-delay.
    """
    _check_samplerate(samplerate)
    lengths = np.zeros(REVERB_LINES)
    _line_lengths(REVERB_MAX_SIZE, float(samplerate), lengths)
    line_capacity = int(lengths.max()) + math.ceil(REVERB_MAX_MOD_DEPTH_MS * samplerate / 1e3) + 8
    diffusers = np.zeros(8)
    _diffuser_lengths(float(samplerate), diffusers)
    predelay_capacity = math.ceil(REVERB_MAX_PREDELAY_MS * samplerate / 1000.0) + 8
    line_state = np.zeros((_LS_ROWS, REVERB_LINES))
    line_state[_LS_LENGTH] = -1.0
    phase = 2.0 * np.pi * ((np.arange(REVERB_LINES) * 0.6180339887) % 1.0)
    line_state[_LS_LFO_COS] = np.cos(phase)
    line_state[_LS_LFO_SIN] = np.sin(phase)
    return (
        np.zeros((2, predelay_capacity)),
        np.zeros((8, int(diffusers.max()) + 1)),
        np.zeros((REVERB_LINES, line_capacity)),
        line_state,
        np.zeros((1, 2, REVERB_LINES)),
        np.full(1, -1.0),
        np.zeros(3, dtype=np.int64),
    )


@kernel
def _hadamard16(w):
    """In-place w <- H16 w / 4: the orthonormal Sylvester-Hadamard matrix (fast transform)."""
    h = 1
    while h < 16:
        for start in range(0, 16, 2 * h):
            for j in range(start, start + h):
                a = w[j]
                b = w[j + h]
                w[j] = a + b
                w[j + h] = a - b
        h *= 2
    for j in range(16):
        w[j] *= 0.25


@kernel
def _lines_settled(line_state, coefs):
    """True when every line sits exactly at its target length (no glide to compute)."""
    for line in range(REVERB_LINES):
        if line_state[_LS_LENGTH, line] != coefs[REVERB_LENGTH, line]:
            return False
    return True


@kernel
def reverb_process(
    x, y, coefs, predelay, diffusers, lines, line_state, filter_state, scalars, positions
):
    """Run the reverb over one block; writes the wet signal into ``y``.

    x, y: float64[n, 2] (y may be x); coefs: float64[REVERB_ROWS, 16] from
    ``design_reverb``; the remaining arguments are ``make_reverb_state``'s arrays, updated
    in place. Signal flow per sample: pre-delay -> 4 allpasses per channel -> injection into
    16 lines -> line outputs through their absorption filters -> output taps (left, right)
    and Hadamard feedback -> back into the lines; width (mid/side) and mix at the output.

    The lines are read with first-order allpass interpolation (Laakso et al. 1996, Thiran
    allpass; discussed for modulated lines in Dattorro, "Effect design part 2: delay-line
    modulation and chorus", J. AES 45(10), 1997): its magnitude is flat, so modulation does
    not shorten the high-frequency T60 the way a Lagrange interpolator (-0.14 dB per pass
    at fs/6) would. The fractional part is kept in [0.5, 1.5) so the coefficient stays
    within -1/5..1/3; at an integer length it is 0 and the read is exact.
    """
    n = x.shape[0]
    pre_capacity = predelay.shape[1]
    ap_capacity = diffusers.shape[1]
    line_capacity = lines.shape[1]
    max_length = line_capacity - 3.0
    g = coefs[REVERB_GLOBAL]
    pre_target = min(max(g[_G_PREDELAY], 0.0), pre_capacity - 4.0)
    width = g[_G_WIDTH]
    mix = g[_G_MIX]
    lfo_cos = line_state[_LS_LFO_COS]
    lfo_sin = line_state[_LS_LFO_SIN]
    lengths = line_state[_LS_LENGTH]
    allpass = line_state[_LS_ALLPASS]
    tap = line_state[_LS_TAP]
    work = line_state[_LS_WORK]
    rot_cos = coefs[REVERB_LFO_COS]
    rot_sin = coefs[REVERB_LFO_SIN]
    depth = coefs[REVERB_MOD_DEPTH]
    out_gain_l = coefs[REVERB_OUT_L]
    out_gain_r = coefs[REVERB_OUT_R]
    in_gain_l = coefs[REVERB_IN_L]
    in_gain_r = coefs[REVERB_IN_R]
    b0 = coefs[REVERB_FILTER]
    b1 = coefs[REVERB_FILTER + 1]
    b2 = coefs[REVERB_FILTER + 2]
    a1 = coefs[REVERB_FILTER + 3]
    a2 = coefs[REVERB_FILTER + 4]
    s1 = filter_state[0, 0]
    s2 = filter_state[0, 1]
    settled = _lines_settled(line_state, coefs)
    pre_pos = positions[0]
    ap_pos = positions[1]
    line_pos = positions[2]
    # Ring positions index as np.uint64 (the same bits: they are never negative): numba
    # tests a signed index for being negative (Python's x[-1]) on every access, about 70
    # accesses a sample here (measured: 3 % of the standard session's instructions).
    for i in range(n):
        # Pre-delay: write first, then read, so 0 ms is no delay at all.
        predelay[0, np.uint64(pre_pos)] = _flushed(_sanitize(x[i, 0]))
        predelay[1, np.uint64(pre_pos)] = _flushed(_sanitize(x[i, 1]))
        d = _glide(scalars[0], pre_target, g[_G_PREDELAY_GLIDE], g[_G_PREDELAY_RATE])
        scalars[0] = d
        in_l = _read_lagrange(predelay, 0, pre_pos, d)
        in_r = _read_lagrange(predelay, 1, pre_pos, d)
        pre_pos += 1
        if pre_pos == pre_capacity:
            pre_pos = 0

        # Input diffusion: Schroeder allpasses v = u + g v[-M], out = v[-M] - g v.
        for ch in range(2):
            u = in_l if ch == 0 else in_r
            for k in range(ch * 4, ch * 4 + 4):
                j = ap_pos - int(coefs[REVERB_DIFFUSER_LENGTH, k])
                if j < 0:
                    j += ap_capacity
                delayed = diffusers[k, np.uint64(j)]
                gain = coefs[REVERB_DIFFUSER_GAIN, k]
                v = u + gain * delayed
                diffusers[k, np.uint64(ap_pos)] = _flushed(v)
                u = delayed - gain * v
            if ch == 0:
                in_l = u
            else:
                in_r = u
        ap_pos += 1
        if ap_pos == ap_capacity:
            ap_pos = 0

        # Modulation oscillators: rotate each phasor; the first-order correction
        # (3 - |p|^2) / 2 keeps it on the unit circle, so it never drifts.
        for line in range(REVERB_LINES):
            c = lfo_cos[line] * rot_cos[line] - lfo_sin[line] * rot_sin[line]
            s = lfo_sin[line] * rot_cos[line] + lfo_cos[line] * rot_sin[line]
            norm = 1.5 - 0.5 * (c * c + s * s)
            lfo_cos[line] = c * norm
            lfo_sin[line] = s * norm

        if not settled:
            for line in range(REVERB_LINES):
                lengths[line] = _glide(
                    lengths[line], coefs[REVERB_LENGTH, line], g[_G_LINE_GLIDE], g[_G_LINE_RATE]
                )
            settled = _lines_settled(line_state, coefs)

        # Line outputs (read before this sample is written), allpass-interpolated:
        # y = eta (x[-k] - y[-1]) + x[-k-1], eta = (1 - f) / (1 + f), length = k + f.
        for line in range(REVERB_LINES):
            m = min(max(lengths[line] + depth[line] * lfo_sin[line], 1.5), max_length)
            k = int(m - 0.5)
            f = m - k
            eta = (1.0 - f) / (1.0 + f)
            j = line_pos - k
            if j < 0:
                j += line_capacity
            newer = lines[line, np.uint64(j)]
            j = j - 1 if j > 0 else line_capacity - 1
            v = eta * (newer - allpass[line]) + lines[line, np.uint64(j)]
            allpass[line] = v
            tap[line] = v

        # Absorption filters (transposed direct form II, as filters.biquad_bank).
        out_l = 0.0
        out_r = 0.0
        for line in range(REVERB_LINES):
            v = tap[line]
            o = b0[line] * v + s1[line]
            s1[line] = b1[line] * v - a1[line] * o + s2[line]
            s2[line] = b2[line] * v - a2[line] * o
            work[line] = o
            out_l += out_gain_l[line] * o
            out_r += out_gain_r[line] * o

        _hadamard16(work)
        for line in range(REVERB_LINES):
            v = work[line] + in_gain_l[line] * in_l + in_gain_r[line] * in_r
            lines[line, np.uint64(line_pos)] = _flushed(v)
        line_pos += 1
        if line_pos == line_capacity:
            line_pos = 0

        mid = 0.5 * (out_l + out_r)
        side = 0.5 * width * (out_l - out_r)
        y[i, 0] = mix * (mid + side)
        y[i, 1] = mix * (mid - side)
    positions[0] = pre_pos
    positions[1] = ap_pos
    positions[2] = line_pos
    flush_denormals(filter_state)
    # The interpolators' outputs recirculate too; flush them like filter state.
    for line in range(REVERB_LINES):
        if abs(allpass[line]) < _FLUSH:
            allpass[line] = 0.0


# --------------------------------------------------------------------------------------------
# Python processors
# --------------------------------------------------------------------------------------------


def _check(name: str, value: float, low: float, high: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (low <= value <= high):  # also rejects NaN
        raise ValueError(f"{name} must be within {low:g}..{high:g}, got {value!r}")
    return value


def _check_samplerate(samplerate: float) -> float:
    return _check("samplerate", samplerate, 8000.0, 768000.0)


def _stereo_frames(x: np.ndarray) -> np.ndarray:
    """Audio (n,), (n, 1) or (n, 2) as a float64 (n, 2) C-contiguous copy (mono duplicated)."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] not in (1, 2):
        raise ValueError(f"audio must be (n,), (n, 1) or (n, 2), got shape {x.shape}")
    return np.array(np.broadcast_to(x, (len(x), 2)), dtype=np.float64, order="C")


def _out_dtype(x: np.ndarray):
    dtype = np.asarray(x).dtype
    return dtype if dtype in (np.float32, np.float64) else np.float64


class StereoDelay:
    """Stereo delay with feedback damping and ping-pong, for offline use and tests.

    >>> dly = StereoDelay(48000, time_l_ms=375, time_r_ms=500, feedback=0.4)
    >>> wet = dly.process(x)  # x: (n,) or (n, 1) mono, or (n, 2); returns (n, 2) wet only
    >>> dly.set(time_l_ms=250)  # glides to the new time, no click

    feedback is a linear gain per repeat, 0..0.95 (-inf..-0.45 dB); highcut_hz / lowcut_hz
    (None = off) are first-order filters in the feedback path, so each repeat is darker /
    thinner than the one before; mix is the linear gain of the wet output.
    """

    _NAMES = ("time_l_ms", "time_r_ms", "feedback", "ping_pong", "highcut_hz", "lowcut_hz")
    _NAMES += ("mix", "glide_ms")

    def __init__(
        self,
        samplerate: float,
        time_l_ms: float = 375.0,
        time_r_ms: float = 500.0,
        feedback: float = 0.4,
        ping_pong: bool = False,
        highcut_hz: float | None = None,
        lowcut_hz: float | None = None,
        mix: float = 1.0,
        glide_ms: float = DELAY_DEFAULT_GLIDE_MS,
        max_time_ms: float = DELAY_MAX_TIME_MS,
    ):
        self.samplerate = _check_samplerate(samplerate)
        self.max_time_ms = _check("max_time_ms", max_time_ms, DELAY_MIN_TIME_MS, DELAY_MAX_TIME_MS)
        self.state = make_delay_state(self.samplerate, self.max_time_ms)
        self.coefs = np.zeros((DELAY_ROWS, 2))
        self.params: dict = {}
        self.set(
            time_l_ms=time_l_ms,
            time_r_ms=time_r_ms,
            feedback=feedback,
            ping_pong=ping_pong,
            highcut_hz=highcut_hz,
            lowcut_hz=lowcut_hz,
            mix=mix,
            glide_ms=glide_ms,
        )

    def set(self, **params) -> None:
        """Change parameters (names as in the constructor); validated, then redesigned."""
        unknown = set(params) - set(self._NAMES)
        if unknown:
            raise ValueError(f"unknown delay parameter(s): {sorted(unknown)}")
        new = {**self.params, **params}
        nyquist_limit = MAX_FREQ_RATIO * self.samplerate
        for name in ("time_l_ms", "time_r_ms"):
            _check(name, new[name], DELAY_MIN_TIME_MS, self.max_time_ms)
        _check("feedback", new["feedback"], 0.0, DELAY_MAX_FEEDBACK)
        _check("mix", new["mix"], 0.0, 1.0)
        _check("glide_ms", new["glide_ms"], 0.0, 10000.0)
        for name in ("highcut_hz", "lowcut_hz"):
            if new[name] is not None:
                _check(name, new[name], 10.0, nyquist_limit)
        if not isinstance(new["ping_pong"], bool | np.bool_):
            raise ValueError(f"ping_pong must be a bool, got {new['ping_pong']!r}")
        self.params = new
        design_delay(
            float(new["time_l_ms"]),
            float(new["time_r_ms"]),
            float(new["feedback"]),
            1.0 if new["ping_pong"] else 0.0,
            0.0 if new["highcut_hz"] is None else float(new["highcut_hz"]),
            0.0 if new["lowcut_hz"] is None else float(new["lowcut_hz"]),
            float(new["mix"]),
            float(new["glide_ms"]),
            self.samplerate,
            self.coefs,
        )

    def reset(self) -> None:
        """Silence the delay memory; the next block starts at the target times."""
        buffer, filter_state, glide, position = self.state
        buffer[:] = 0.0
        filter_state[:] = 0.0
        glide[:] = -1.0
        position[:] = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = _stereo_frames(x)
        delay_process(frames, frames, self.coefs, *self.state)
        return frames.astype(_out_dtype(x), copy=False)


class Reverb:
    """Feedback-delay-network reverb (16 lines), for offline use and tests.

    >>> rev = Reverb(48000, decay_s=2.0, predelay_ms=20.0)
    >>> wet = rev.process(x)  # x: (n,) or (n, 1) mono, or (n, 2); returns (n, 2) wet only

    decay_s is the low-frequency T60; hf_ratio the T60 above damping_hz as a fraction of it
    (1.0 = no damping); size scales the room (line lengths 15..75 ms at 1.0); diffusion
    0..1 smears the onset; width 0 (mono) .. 1; mod_depth_ms / mod_rate_hz gently move the
    line lengths to break up metallic modes; mix is the linear wet gain.
    """

    _RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "decay_s": (REVERB_MIN_DECAY_S, REVERB_MAX_DECAY_S),
        "hf_ratio": (REVERB_MIN_HF_RATIO, 1.0),
        "size": (REVERB_MIN_SIZE, REVERB_MAX_SIZE),
        "predelay_ms": (0.0, REVERB_MAX_PREDELAY_MS),
        "diffusion": (0.0, 1.0),
        "width": (0.0, 1.0),
        "mod_depth_ms": (0.0, REVERB_MAX_MOD_DEPTH_MS),
        "mod_rate_hz": (0.0, REVERB_MAX_MOD_RATE_HZ),
        "mix": (0.0, 1.0),
    }

    def __init__(
        self,
        samplerate: float,
        decay_s: float = 2.0,
        hf_ratio: float = 0.5,
        damping_hz: float = 4000.0,
        size: float = 1.0,
        predelay_ms: float = 0.0,
        diffusion: float = 0.7,
        width: float = 1.0,
        mod_depth_ms: float = 0.2,
        mod_rate_hz: float = 0.5,
        mix: float = 1.0,
    ):
        self.samplerate = _check_samplerate(samplerate)
        self.state = make_reverb_state(self.samplerate)
        self.coefs = np.zeros((REVERB_ROWS, REVERB_LINES))
        self.params: dict = {}
        self.set(
            decay_s=decay_s,
            hf_ratio=hf_ratio,
            damping_hz=damping_hz,
            size=size,
            predelay_ms=predelay_ms,
            diffusion=diffusion,
            width=width,
            mod_depth_ms=mod_depth_ms,
            mod_rate_hz=mod_rate_hz,
            mix=mix,
        )

    def set(self, **params) -> None:
        """Change parameters (names as in the constructor); validated, then redesigned."""
        unknown = set(params) - {*self._RANGES, "damping_hz"}
        if unknown:
            raise ValueError(f"unknown reverb parameter(s): {sorted(unknown)}")
        new = {**self.params, **params}
        for name, (low, high) in self._RANGES.items():
            new[name] = _check(name, new[name], low, high)
        new["damping_hz"] = _check(
            "damping_hz", new["damping_hz"], 100.0, MAX_FREQ_RATIO * self.samplerate
        )
        self.params = new
        design_reverb(
            new["decay_s"],
            new["hf_ratio"],
            new["damping_hz"],
            new["size"],
            new["predelay_ms"],
            new["diffusion"],
            new["width"],
            new["mod_depth_ms"],
            new["mod_rate_hz"],
            new["mix"],
            self.samplerate,
            self.coefs,
        )

    @property
    def line_lengths(self) -> np.ndarray:
        """The 16 target delay-line lengths in samples (distinct primes)."""
        return self.coefs[REVERB_LENGTH].astype(np.int64)

    def reset(self) -> None:
        """Silence every delay memory; the next block starts at the target lengths."""
        fresh = make_reverb_state(self.samplerate)
        for old, new in zip(self.state, fresh, strict=True):
            old[...] = new

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = _stereo_frames(x)
        reverb_process(frames, frames, self.coefs, *self.state)
        return frames.astype(_out_dtype(x), copy=False)
