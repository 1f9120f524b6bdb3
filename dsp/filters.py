"""Recursive filters: RBJ biquads, Butterworth high/low-pass, Linkwitz-Riley crossovers.

Coefficients are rows ``[b0, b1, b2, a1, a2]`` (a0 normalised to 1), the same numbers as a
row of scipy's ``sos`` without its ``1.0`` in column 3. The design functions are jitted so
the engine can redesign while it smooths a parameter; from Python they are ordinary
functions. The kernel runs the transposed direct form II with float64 state, like
``scipy.signal.sosfilt``.

Formulas: R. Bristow-Johnson, "Cookbook formulae for audio EQ biquad filter coefficients"
(the W3C Audio EQ Cookbook); Butterworth pole Qs from the pole angles of the analog
prototype; Linkwitz-Riley LR4 as two cascaded Butterworth 2nd-order sections.
"""

from __future__ import annotations

import math

import numpy as np

from studiod.dsp._jit import kernel, stack_empty

# Filter kinds (ints so that jitted code can switch on them).
BYPASS = 0
LOWPASS = 1
HIGHPASS = 2
BANDPASS = 3  # constant 0 dB peak gain
NOTCH = 4
PEAK = 5
LOWSHELF = 6
HIGHSHELF = 7
ALLPASS = 8
LOWPASS1 = 9  # first order, bilinear-transformed one-pole
HIGHPASS1 = 10

KIND_NAMES = {
    "bypass": BYPASS,
    "lowpass": LOWPASS,
    "highpass": HIGHPASS,
    "bandpass": BANDPASS,
    "notch": NOTCH,
    "peak": PEAK,
    "lowshelf": LOWSHELF,
    "highshelf": HIGHSHELF,
    "allpass": ALLPASS,
    "lowpass1": LOWPASS1,
    "highpass1": HIGHPASS1,
}

BUTTERWORTH_Q = 1.0 / math.sqrt(2.0)

# Below this a recursive state is set to zero at the end of a block: denormal arithmetic is
# up to 100x slower on x86, and a value this small is 600 dB below full scale.
DENORMAL_FLUSH = 1e-30

# Highest design frequency as a fraction of the sample rate; the bilinear transform folds
# everything at Nyquist, and RBJ designs degenerate there.
MAX_FREQ_RATIO = 0.49


@kernel
def design_biquad(kind, freq_hz, q, gain_db, samplerate, out):
    """Write one biquad's ``[b0, b1, b2, a1, a2]`` into ``out`` (float64[5]).

    kind: one of the module's kind constants; freq_hz is clamped to 0.49 fs; q > 0 (for
    shelves, q = 1/sqrt(2) is the cookbook's slope S = 1); gain_db for PEAK and shelves.
    """
    freq_hz = min(max(freq_hz, 1e-3), MAX_FREQ_RATIO * samplerate)
    q = max(q, 1e-3)
    w0 = 2.0 * math.pi * freq_hz / samplerate
    cosw = math.cos(w0)
    sinw = math.sin(w0)
    alpha = sinw / (2.0 * q)
    amp = 10.0 ** (gain_db / 40.0)
    b0 = 1.0
    b1 = 0.0
    b2 = 0.0
    a0 = 1.0
    a1 = 0.0
    a2 = 0.0
    if kind == LOWPASS:
        b0 = (1.0 - cosw) / 2.0
        b1 = 1.0 - cosw
        b2 = b0
        a0 = 1.0 + alpha
        a1 = -2.0 * cosw
        a2 = 1.0 - alpha
    elif kind == HIGHPASS:
        b0 = (1.0 + cosw) / 2.0
        b1 = -(1.0 + cosw)
        b2 = b0
        a0 = 1.0 + alpha
        a1 = -2.0 * cosw
        a2 = 1.0 - alpha
    elif kind == BANDPASS:
        b0 = alpha
        b2 = -alpha
        a0 = 1.0 + alpha
        a1 = -2.0 * cosw
        a2 = 1.0 - alpha
    elif kind == NOTCH:
        b1 = -2.0 * cosw
        b2 = 1.0
        a0 = 1.0 + alpha
        a1 = -2.0 * cosw
        a2 = 1.0 - alpha
    elif kind == PEAK:
        b0 = 1.0 + alpha * amp
        b1 = -2.0 * cosw
        b2 = 1.0 - alpha * amp
        a0 = 1.0 + alpha / amp
        a1 = -2.0 * cosw
        a2 = 1.0 - alpha / amp
    elif kind == LOWSHELF:
        k = 2.0 * math.sqrt(amp) * alpha
        b0 = amp * ((amp + 1.0) - (amp - 1.0) * cosw + k)
        b1 = 2.0 * amp * ((amp - 1.0) - (amp + 1.0) * cosw)
        b2 = amp * ((amp + 1.0) - (amp - 1.0) * cosw - k)
        a0 = (amp + 1.0) + (amp - 1.0) * cosw + k
        a1 = -2.0 * ((amp - 1.0) + (amp + 1.0) * cosw)
        a2 = (amp + 1.0) + (amp - 1.0) * cosw - k
    elif kind == HIGHSHELF:
        k = 2.0 * math.sqrt(amp) * alpha
        b0 = amp * ((amp + 1.0) + (amp - 1.0) * cosw + k)
        b1 = -2.0 * amp * ((amp - 1.0) + (amp + 1.0) * cosw)
        b2 = amp * ((amp + 1.0) + (amp - 1.0) * cosw - k)
        a0 = (amp + 1.0) - (amp - 1.0) * cosw + k
        a1 = 2.0 * ((amp - 1.0) - (amp + 1.0) * cosw)
        a2 = (amp + 1.0) - (amp - 1.0) * cosw - k
    elif kind == ALLPASS:
        b0 = 1.0 - alpha
        b1 = -2.0 * cosw
        b2 = 1.0 + alpha
        a0 = 1.0 + alpha
        a1 = -2.0 * cosw
        a2 = 1.0 - alpha
    elif kind == LOWPASS1 or kind == HIGHPASS1:
        # Bilinear transform of 1/(s/w + 1) and (s/w)/(s/w + 1) with prewarping.
        t = math.tan(w0 / 2.0)
        a0 = 1.0 + t
        a1 = t - 1.0
        if kind == LOWPASS1:
            b0 = t
            b1 = t
        else:
            b0 = 1.0
            b1 = -1.0
    out[0] = b0 / a0
    out[1] = b1 / a0
    out[2] = b2 / a0
    out[3] = a1 / a0
    out[4] = a2 / a0


@kernel
def design_butterworth(highpass, order, freq_hz, samplerate, out):
    """Butterworth high- or low-pass of even ``order`` into ``out`` (float64[order // 2, 5]).

    Section k has Q = 1 / (2 cos((2k + 1) pi / (2 order))), the analog pole pair's Q.
    """
    kind = HIGHPASS if highpass else LOWPASS
    for k in range(order // 2):
        q = 1.0 / (2.0 * math.cos((2 * k + 1) * math.pi / (2.0 * order)))
        design_biquad(kind, freq_hz, q, 0.0, samplerate, out[k])


@kernel
def set_bypass(out):
    """Make every section of ``out`` (float64[sections, 5]) pass the signal unchanged."""
    for k in range(out.shape[0]):
        out[k, 0] = 1.0
        out[k, 1] = 0.0
        out[k, 2] = 0.0
        out[k, 3] = 0.0
        out[k, 4] = 0.0


@kernel
def biquad_bank(x, y, coefs, state):
    """Run a cascade of biquads over a block, every lane with its own coefficients.

    x, y: float64[n, lanes] (y may be x); coefs: float64[sections, 5, lanes];
    state: float64[sections, 2, lanes] (transposed direct form II), updated in place.
    Lanes are the innermost axis so the lane loop vectorises.
    """
    n, lanes = x.shape
    sections = coefs.shape[0]
    for i in range(n):
        for k in range(sections):
            src = x[i] if k == 0 else y[i]
            dst = y[i]
            c = coefs[k]
            s = state[k]
            for lane in range(lanes):
                v = src[lane]
                out = c[0, lane] * v + s[0, lane]
                s[0, lane] = c[1, lane] * v - c[3, lane] * out + s[1, lane]
                s[1, lane] = c[2, lane] * v - c[4, lane] * out
                dst[lane] = out
    flush_denormals(state)


# Lanes per pass of the kernels that keep per-lane values in stack scratch (stack_empty):
# 16 float64 are four AVX2 vectors, enough independent work to hide an FMA's latency. A
# whole pass runs its lane loop with the constant STACK_LANES as the trip count (the call
# ``f(..., STACK_LANES, ...)`` of an inlined pass, ``f(..., w, ...)`` for the rest): LLVM
# unrolls it into whole vectors. With a variable count it vectorises for 32 lanes (8 per
# AVX-512 register, 4 registers at a time) and sends 16 lanes down its slow remainder loops.
STACK_LANES = 16
# Sections per pass of biquad_cascade_bank (its scratch holds this many).
CASCADE_SECTIONS = 8
_CASCADE_COEF_SLOTS = CASCADE_SECTIONS * 5 * STACK_LANES
_CASCADE_STATE_SLOTS = CASCADE_SECTIONS * 2 * STACK_LANES
# Frames per tile: a tile of 16 lanes is 32 KB, in L1 for the next pass over other lanes
# (tiles of 64 to 4096 frames measured within this VM's noise of each other).
CASCADE_TILE = 256


@kernel(inline=True)
def _section(v, c, z, ci, zi):
    """One sample of one biquad section (transposed direct form II) in the stack scratch of
    biquad_cascade_bank: coefficient k at c[ci + k * STACK_LANES], the state at z[zi] and
    z[zi + STACK_LANES]."""
    W = STACK_LANES
    out = c[ci] * v + z[zi]
    z[zi] = c[ci + W] * v - c[ci + 3 * W] * out + z[zi + W]
    z[zi + W] = c[ci + 2 * W] * v - c[ci + 4 * W] * out
    return out


@kernel(inline=True)
def _cascade_full(x, i0, i1, l0, count, c, z):
    """Frames ``i0 .. i1 - 1`` of lanes ``l0 .. l0 + STACK_LANES - 1`` through the ``count``
    sections in the scratch of biquad_cascade_bank, one section at a time. The lane loop has
    a constant trip count, so LLVM unrolls it into whole vectors and keeps the section's
    state in registers from frame to frame: the recursion waits on two multiply-adds per
    sample instead of a store and a load (the tile is in the L1 cache for the next
    section)."""
    W = STACK_LANES
    for j in range(count):
        cb = 5 * j * W
        zb = 2 * j * W
        for i in range(i0, i1):
            row = x[i, l0 : l0 + W]
            for lane in range(W):
                row[lane] = _section(row[lane], c, z, cb + lane, zb + lane)


@kernel(inline=True)
def _cascade_part(x, i0, i1, l0, w, count, c, z):
    """As _cascade_full for ``w`` < STACK_LANES lanes, sample by sample through every
    section: with few lanes the sections' recursions then overlap in the CPU."""
    W = STACK_LANES
    for i in range(i0, i1):
        row = x[i, l0 : l0 + w]
        for j in range(count):
            cb = 5 * j * W
            zb = 2 * j * W
            for lane in range(w):
                row[lane] = _section(row[lane], c, z, cb + lane, zb + lane)


@kernel
def biquad_cascade_bank(x, coefs, state, active):
    """Run the sections of a cascade whose ``active[k]`` is set, in place.

    x: float64[n, lanes]; coefs float64[sections, 5, lanes]; state float64[sections, 2,
    lanes]; active: bool[sections]. Equal to calling ``biquad_bank`` per active section.

    Up to STACK_LANES lanes and CASCADE_SECTIONS sections at a time, their coefficients
    and state copied to stack scratch: numba's arrays may alias, so a loop reading the
    state from ``state`` paid LLVM's overlap check on every sample, more than the filter
    itself at 16 lanes. Whole passes of STACK_LANES lanes run section by section
    (_cascade_full), the lanes left over sample by sample (_cascade_part). Measured on the
    2-vCPU EPYC (AVX-512), ns per lane, section and frame with 5 sections: 0.18 at 16 and
    32 lanes (0.48 sample by sample), 1.4 at two lanes (1.8 section by section).
    """
    n, lanes = x.shape
    W = STACK_LANES
    c = stack_empty(_CASCADE_COEF_SLOTS, np.float64)  # the stack arrays need constant sizes
    z = stack_empty(_CASCADE_STATE_SLOTS, np.float64)
    on = stack_empty(CASCADE_SECTIONS, np.int64)  # the active sections of a pass
    for k0 in range(0, coefs.shape[0], CASCADE_SECTIONS):
        count = 0
        for k in range(k0, min(coefs.shape[0], k0 + CASCADE_SECTIONS)):
            if active[k]:
                on[count] = k
                count += 1
        if count == 0:  # a bypassed bank (most systems' EQ) costs no pass over the frames
            continue
        for i0 in range(0, n, CASCADE_TILE):
            i1 = min(n, i0 + CASCADE_TILE)
            for l0 in range(0, lanes, W):
                w = min(W, lanes - l0)
                for j in range(count):
                    for m in range(5):
                        for lane in range(w):
                            c[(5 * j + m) * W + lane] = coefs[on[j], m, l0 + lane]
                    for m in range(2):
                        for lane in range(w):
                            z[(2 * j + m) * W + lane] = state[on[j], m, l0 + lane]
                if w == W:
                    _cascade_full(x, i0, i1, l0, count, c, z)
                else:
                    _cascade_part(x, i0, i1, l0, w, count, c, z)
                for j in range(count):
                    for m in range(2):
                        for lane in range(w):
                            state[on[j], m, l0 + lane] = z[(2 * j + m) * W + lane]
    flush_denormals(state)


@kernel
def flush_denormals(state):
    """Zero the recursive state values that have decayed below DENORMAL_FLUSH."""
    flat = state.reshape(-1)
    for j in range(flat.size):
        if abs(flat[j]) < DENORMAL_FLUSH:
            flat[j] = 0.0


def to_sos(coefs: np.ndarray) -> np.ndarray:
    """Our ``[b0, b1, b2, a1, a2]`` rows as scipy's ``sos`` rows ``[b0, b1, b2, 1, a1, a2]``."""
    coefs = np.atleast_2d(coefs)
    return np.column_stack([coefs[:, :3], np.ones(len(coefs)), coefs[:, 3:]])


def as_frames(x: np.ndarray) -> np.ndarray:
    """A float64 (n, lanes) C-contiguous copy of audio given as (n,) or (n, lanes)."""
    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise ValueError(f"audio must be (n,) or (n, lanes), got shape {x.shape}")
    return np.array(x.reshape(len(x), -1), dtype=np.float64, order="C")


def from_frames(y: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Give ``y`` (n, lanes) back in the shape and float dtype of the input ``like``."""
    like = np.asarray(like)
    dtype = like.dtype if like.dtype in (np.float32, np.float64) else np.float64
    return y.reshape(like.shape).astype(dtype, copy=False)


class IIRFilter:
    """A cascade of biquads with state, for offline use and tests.

    >>> hp = IIRFilter.butterworth("highpass", order=4, freq_hz=80.0, samplerate=48000)
    >>> y = hp.process(x)  # x: (n,) or (n, lanes); keeps state between calls
    """

    def __init__(self, coefs: np.ndarray, lanes: int = 1):
        coefs = np.atleast_2d(np.asarray(coefs, dtype=np.float64))
        if coefs.shape[1] != 5:
            raise ValueError("coefficient rows are [b0, b1, b2, a1, a2]")
        self.coefs = coefs
        self._bank = np.ascontiguousarray(np.repeat(coefs[:, :, None], lanes, axis=2))
        self.state = np.zeros((len(coefs), 2, lanes))

    @classmethod
    def rbj(
        cls,
        kind: str,
        freq_hz: float,
        samplerate: float,
        q: float = BUTTERWORTH_Q,
        gain_db: float = 0.0,
        lanes: int = 1,
    ) -> IIRFilter:
        """One RBJ cookbook biquad; ``kind`` is a key of ``KIND_NAMES``."""
        if kind not in KIND_NAMES:
            raise ValueError(f"unknown filter kind {kind!r}; one of {sorted(KIND_NAMES)}")
        coefs = np.zeros((1, 5))
        design_biquad(KIND_NAMES[kind], freq_hz, q, gain_db, samplerate, coefs[0])
        return cls(coefs, lanes)

    @classmethod
    def butterworth(
        cls, kind: str, order: int, freq_hz: float, samplerate: float, lanes: int = 1
    ) -> IIRFilter:
        """Butterworth ``"highpass"`` or ``"lowpass"`` of even order (2: 12 dB/oct, 4: 24)."""
        if kind not in ("highpass", "lowpass") or order < 2 or order % 2:
            raise ValueError("butterworth takes 'highpass' or 'lowpass' and an even order")
        coefs = np.zeros((order // 2, 5))
        design_butterworth(kind == "highpass", order, freq_hz, samplerate, coefs)
        return cls(coefs, lanes)

    @property
    def sos(self) -> np.ndarray:
        return to_sos(self.coefs)

    def reset(self) -> None:
        self.state[:] = 0.0

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = as_frames(x)
        if frames.shape[1] != self.state.shape[2]:
            raise ValueError(f"filter has {self.state.shape[2]} lanes, audio has {frames.shape[1]}")
        biquad_bank(frames, frames, self._bank, self.state)
        return from_frames(frames, x)
