"""Dynamics: feed-forward compressor, gate/expander and a 3-band multiband compressor.

Compressor (D. Giannoulis, M. Massberg, J. D. Reiss, "Digital Dynamic Range Compressor
Design — A Tutorial and Analysis", JAES 60(6), 2012; "Giannoulis" below):

    side chain -> [optional 12 dB/oct Butterworth high-pass] -> |.| -> max over linked lanes
    -> level in dBFS -> soft-knee gain computer (Giannoulis eq. 4) -> gain reduction in dB
    -> one-pole smoothing, attack while the reduction grows, release while it shrinks
       (Giannoulis Sec. 3, the "smooth branching" peak detector in the log domain, placed after
       the gain computer) -> gain = makeup * 10^(-reduction / 20) -> y = x * gain

Levels are instantaneous sample peaks in dBFS (a sine of amplitude 1 is 0 dBFS). The peak
detector is the branching smoother itself: the reduction rises towards a peak's target with
the attack time and falls back with the release time, so the steady-state reduction of a
sine sits at the static curve evaluated at its peak (release >> period).

Time constants (the definition used for every attack/hold/release here): a time ``tau`` gives
the one-pole coefficient ``alpha = exp(-1 / (tau * fs))`` (Giannoulis Sec. 3). For a step of
the target gain reduction, the reduction in dB covers 1 - 1/e (63 %) of the step after
``tau`` seconds; 10 %…90 % takes 2.2 tau. Attack and release are independent (no coupling
between them, unlike the "decoupled" detector).

Speed: per 64-frame chunk the kernel runs a few simple passes over [chunk, lanes] scratch
(linked peak levels, gain computer, smoother + dB-to-gain, multiply); each pass is
branch-free with the lane loop innermost, so LLVM vectorises it. Instead of libm log/exp
(scalar calls; our numba has no SVML) the level and the gain go through ``_fast_log2`` /
``_fast_exp2``: exponent/mantissa split by bit casting plus a short polynomial, accurate to
~1e-9 dB — far below a 24-bit LSB. When no lane of a chunk is above its knee and nothing is
releasing, the chunk skips the log/exp passes altogether (the result is identical).

Gate / expander: the same detector, with an open/closed state and hysteresis; when open the
gain target is 0 dB, when closed it is the downward-expander curve below the threshold,
floored at ``-range_db``. See ``gate_bank``.

Multiband: ``studiod.dsp.crossover`` splits into three LR4 bands, each band runs through
``compressor_bank`` (band signal as its own side chain, lanes linked as given), and the bands
are summed with a per-band weight (solo/mute).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import ClassVar, NamedTuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from studiod.dsp._jit import kernel
from studiod.dsp.crossover import (
    XOVER_SECTIONS,
    check_crossover_freqs,
    crossover3_bank,
    design_crossover3,
)
from studiod.dsp.filters import (
    as_frames,
    biquad_bank,
    design_butterworth,
    from_frames,
    set_bypass,
)

# ---------------------------------------------------------------------------------------------
# Layout constants
# ---------------------------------------------------------------------------------------------

CHUNK = 64
"""Frames per inner pass: the side chain is filtered CHUNK frames at a time into scratch rows
of the state array (the kernels allocate nothing)."""

# Compressor coefficient rows: coefs[row, lane].
COMP_THRESHOLD_DB = 0
COMP_KNEE_START_DB = 1  # threshold - knee / 2
COMP_KNEE_DB = 2  # knee width W
COMP_INV_2KNEE = 3  # 1 / (2 W), 0 for a hard knee
COMP_SLOPE = 4  # 1 - 1 / ratio
COMP_ATTACK_COEF = 5
COMP_RELEASE_COEF = 6
COMP_MAKEUP = 7  # linear makeup gain
COMP_QUIET_LIN = 8  # linear peak level safely below the knee's start (see _is_quiet)
COMP_NCOEF = 9

# Compressor state rows: state[row, lane].
COMP_REDUCTION = 0  # smoothed gain reduction in dB (>= 0)
COMP_SIDECHAIN = 1  # rows 1 … CHUNK: side-chain filter output (scratch)
COMP_LEVELS = 1 + CHUNK  # next CHUNK rows: levels, then target reductions (scratch)
COMP_STATE_ROWS = 1 + 2 * CHUNK

SC_SECTIONS = 1
"""Biquad sections of the side-chain high-pass (one 2nd-order Butterworth, 12 dB/oct)."""

# Gate coefficient rows: coefs[row, lane].
GATE_OPEN_LIN = 0  # threshold as a linear peak level
GATE_CLOSE_LIN = 1  # threshold - hysteresis, linear
GATE_THRESHOLD_DB = 2
GATE_SLOPE = 3  # ratio - 1, capped at GATE_MAX_SLOPE
GATE_RANGE_DB = 4
GATE_ATTACK_COEF = 5
GATE_RELEASE_COEF = 6
GATE_HOLD1 = 7  # hold time in samples + 1
GATE_UNITY = 8  # 1.0: the gate has no output gain of its own
GATE_NCOEF = 9

# Gate state rows.
GATE_REDUCTION = 0  # smoothed attenuation in dB (>= 0)
GATE_COUNTER = 1  # samples left before the gate closes; > 0 means open
GATE_SIDECHAIN = 2  # CHUNK rows of side-chain scratch
GATE_LEVELS = 2 + CHUNK  # CHUNK rows of level / target scratch
GATE_STATE_ROWS = 2 + 2 * CHUNK

# The gate closes GATE_HYSTERESIS_DB below the level at which it opens. A design choice (no
# standard): wide enough that a level hovering at the threshold with a dB or two of ripple
# (room decay, tremolo, the crest of a low note) does not chatter, narrow enough that the
# close point stays near the threshold the user set.
GATE_HYSTERESIS_DB = 3.0
# An "infinite" expander ratio is a gate; 1e6 dB/dB makes the curve a vertical step.
GATE_MAX_SLOPE = 1.0e6
# What an open gate's level is replaced with: +200 dBFS, above every threshold.
_OPEN_LEVEL = 1.0e10

MB_BANDS = 3

# A reduction that has released below this is set to exactly 0 at the end of a chunk. The
# step (1e-10 relative gain) is far below a 24-bit LSB; it keeps denormals away and lets the
# quiet-chunk shortcut of compressor_bank start (otherwise the exponential tail of a 100 ms
# release would take 7 s to reach the denormal range).
REDUCTION_SNAP_DB = 1e-9

# Levels are clamped to this before the log (-300 dBFS): far below every threshold, keeps
# log2 away from 0 and denormals.
LEVEL_FLOOR = 1.0e-15

# 20 log10(2): dB per octave of amplitude, to turn log2 into dB.
DB_PER_LOG2 = 20.0 * math.log10(2.0)
_LOG2_PER_DB = 1.0 / DB_PER_LOG2
_INV_LN2 = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)

# Parameter ranges (the brief of the channel strip / bus compressor; the registry uses these).
THRESHOLD_RANGE_DB = (-60.0, 0.0)
RATIO_RANGE = (1.0, 100.0)  # and inf
KNEE_RANGE_DB = (0.0, 24.0)
ATTACK_RANGE_MS = (0.05, 500.0)
RELEASE_RANGE_MS = (5.0, 5000.0)
MAKEUP_RANGE_DB = (-12.0, 24.0)
SIDECHAIN_HPF_RANGE_HZ = (10.0, 20000.0)  # and 0 = off; also capped at 0.49 fs
GATE_THRESHOLD_RANGE_DB = (-90.0, 0.0)
GATE_RANGE_RANGE_DB = (0.0, 90.0)
HOLD_RANGE_MS = (0.0, 2000.0)


# ---------------------------------------------------------------------------------------------
# Fast, vectorisable log2 / exp2
# ---------------------------------------------------------------------------------------------


@intrinsic
def _bits_of(typingctx, x):
    """The IEEE-754 bits of a float64 as an int64 (a register move, no memory)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _float_of(typingctx, i):
    """The float64 whose IEEE-754 bits are the int64 ``i``."""
    if i != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _fdiv(typingctx, a, b):
    """a / b for float64 without numba's ZeroDivisionError check (which stops LLVM from
    vectorising a loop); callers guarantee b != 0."""
    if a != types.float64 or b != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.fdiv(args[0], args[1])

    return types.float64(types.float64, types.float64), codegen


# Bits of sqrt(0.5): subtracting them splits x = 2^k * z with z in [sqrt(0.5), sqrt(2)), the
# reduction used by musl's log() (musl src/math/log.c).
_SQRT_HALF_BITS = 0x3FE6A09E667F3BCD
_EXPONENT_MASK = -(1 << 52)  # 0xFFF0000000000000 as an int64
# 2^52 + 2^51: for an integer |k| < 2^51, the bits of (k + _MAGIC) are _MAGIC_BITS + k. This
# converts between small integers and doubles with plain integer adds, because packed
# int64 <-> float64 conversion instructions exist only with AVX-512 (AVX2 PCs would fall
# back to scalar code).
_MAGIC = 6755399441055744.0
_MAGIC_BITS = 0x4338000000000000


@kernel
def _fast_log2(x):
    """log2(x) for a positive normal float64, to ~2e-11 absolute (callers clamp x > 0)."""
    bits = _bits_of(x)
    tmp = bits - _SQRT_HALF_BITS
    k = tmp >> 52  # arithmetic shift: the exponent, one lower when the mantissa < sqrt(0.5)
    z = _float_of(bits - (tmp & _EXPONENT_MASK))
    # ln z = 2 atanh(t), t = (z - 1) / (z + 1), |t| <= 0.1716 (Abramowitz & Stegun 4.1.28).
    # The series to t^11 leaves 2 t^13 / 13 / (1 - t^2) < 1.7e-11 (1.5e-10 dB).
    t = _fdiv(z - 1.0, z + 1.0)
    s = t * t
    p = 1.0 / 9.0 + s * (1.0 / 11.0)
    p = 1.0 / 7.0 + s * p
    p = 1.0 / 5.0 + s * p
    p = 1.0 / 3.0 + s * p
    p = 1.0 + s * p
    return (_float_of(k + _MAGIC_BITS) - _MAGIC) + (2.0 * _INV_LN2) * t * p


@kernel
def _fast_exp2(z):
    """2^z to ~1e-10 relative; z is clamped to [-1020, 1020] so the result stays normal."""
    z = min(max(z, -1020.0), 1020.0)
    k = np.floor(z + 0.5)  # np.floor stays float (math.floor would round-trip an int)
    # e^u with u = (z - k) ln2 in [-0.347, 0.347]: Taylor series to u^9, remainder below
    # 0.347^10 / 10! * 1.05 = 7.5e-11 relative (6.5e-10 dB).
    u = (z - k) * _LN2
    p = 1.0 / 362880.0
    p = 1.0 / 40320.0 + u * p
    p = 1.0 / 5040.0 + u * p
    p = 1.0 / 720.0 + u * p
    p = 1.0 / 120.0 + u * p
    p = 1.0 / 24.0 + u * p
    p = 1.0 / 6.0 + u * p
    p = 0.5 + u * p
    p = 1.0 + u * p
    p = 1.0 + u * p
    # 2^k built from its exponent bits; k is integral, so k + _MAGIC is exact.
    return p * _float_of((_bits_of(k + _MAGIC) - _MAGIC_BITS + 1023) << 52)


@kernel
def _time_coef(time_ms, samplerate):
    """One-pole coefficient exp(-1 / (tau fs)) for tau = time_ms (Giannoulis Sec. 3).

    time_ms <= 0 gives 0: the smoother follows its target at once."""
    if time_ms <= 0.0:
        return 0.0
    return math.exp(-1000.0 / (time_ms * samplerate))


@kernel
def _reset_nonfinite(row):
    """Zero entries of a state row that are NaN/inf (garbage input must not stick forever)."""
    for lane in range(row.shape[0]):
        v = row[lane]
        if not (abs(v) < math.inf):
            row[lane] = 0.0


# The per-chunk passes below are separate loops on purpose: each touches few arrays, so LLVM
# can prove (or check once) that they do not overlap and vectorise the lane loop; one fused
# loop over a dozen arrays, or with the partner gather inside, stays scalar (measured 3-4x
# slower).


@kernel
def _peak_levels(src, lev, link):
    """lev[j, lane] = max(|src[j, lane]|, |src[j, link[lane]]|): the linked peak level."""
    m, lanes = lev.shape
    for j in range(m):
        srow = src[j]
        lrow = lev[j]
        for lane in range(lanes):
            lrow[lane] = max(abs(srow[lane]), abs(srow[link[lane]]))


@kernel
def _uniform(v):
    """True when every lane has the same value of the parameter ``v`` (float64[lanes])."""
    for lane in range(1, v.shape[0]):
        if v[lane] != v[0]:
            return False
    return True


@kernel
def _reduction_db(level, knee_start, knee, inv_2knee, slope):
    """Giannoulis eq. 4 for one linear peak level: the target gain reduction in dB."""
    level_db = DB_PER_LOG2 * _fast_log2(max(level, LEVEL_FLOOR))
    # Eq. 4 as a reduction x_G - y_G, branch-free: d is the distance above the knee's start;
    # its part dk clamped to the knee follows the quadratic dk^2 / (2W), the rest the
    # straight line; both scaled by 1 - 1/R. W = 0 has inv_2knee = 0.
    d = level_db - knee_start
    dk = min(max(d, 0.0), knee)
    return slope * (dk * dk * inv_2knee + max(d - knee, 0.0))


@kernel
def _compressor_curve(lev, knee_start, knee, inv_2knee, slope):
    """Peak levels -> target gain reduction in dB (>= 0), in place; Giannoulis eq. 4.

    With the same parameters on every lane (a linked stereo bus) one flat loop over the
    chunk: it vectorises over time, where a loop across two lanes stays scalar (measured:
    the master compressor cost as much as 16 channels' ones)."""
    m, lanes = lev.shape
    if _uniform(knee_start) and _uniform(knee) and _uniform(inv_2knee) and _uniform(slope):
        flat = lev.reshape(-1)
        ks, kn, inv, sl = knee_start[0], knee[0], inv_2knee[0], slope[0]
        for e in range(flat.shape[0]):
            flat[e] = _reduction_db(flat[e], ks, kn, inv, sl)
        return
    for j in range(m):
        row = lev[j]
        for lane in range(lanes):
            row[lane] = _reduction_db(
                row[lane], knee_start[lane], knee[lane], inv_2knee[lane], slope[lane]
            )


@kernel
def _smooth_to_gain(target, reduction, rise, fall, gain):
    """Smooth the reduction towards ``target`` (one-pole, coefficient ``rise`` while it grows,
    ``fall`` while it shrinks); replace ``target`` in place by the linear gain
    gain[lane] * 10^(-reduction / 20). The recursion runs across the lanes; the conversion
    to a gain (no recursion) over the flat chunk when ``gain`` is the same on every lane, as
    in _compressor_curve."""
    m, lanes = target.shape
    for j in range(m):
        row = target[j]
        for lane in range(lanes):
            t = row[lane]
            r = reduction[lane]
            # both candidates, then one chosen: a choice between two loads (the coefficient)
            # compiles to a load from a chosen address, which keeps the loop scalar
            up = t + rise[lane] * (r - t)
            down = t + fall[lane] * (r - t)
            r = up if t > r else down
            reduction[lane] = r
            row[lane] = r
    if _uniform(gain):
        flat = target.reshape(-1)
        g = gain[0]
        for e in range(flat.shape[0]):
            flat[e] = g * _fast_exp2(-_LOG2_PER_DB * flat[e])
        return
    for j in range(m):
        row = target[j]
        for lane in range(lanes):
            row[lane] = gain[lane] * _fast_exp2(-_LOG2_PER_DB * row[lane])


@kernel
def _multiply(x, y, g):
    """y = x * g elementwise, all [m, lanes]."""
    m, lanes = x.shape
    if x.ctypes.data == y.ctypes.data:
        # In place: one array, so LLVM vectorises without the overlap check that a distinct
        # x and y pointer pair would fail (measured 1.7x slower for the whole compressor).
        for j in range(m):
            yrow = y[j]
            grow = g[j]
            for lane in range(lanes):
                yrow[lane] *= grow[lane]
    else:
        for j in range(m):
            xrow = x[j]
            yrow = y[j]
            grow = g[j]
            for lane in range(lanes):
                yrow[lane] = xrow[lane] * grow[lane]


@kernel
def _multiply_lanes(x, y, gain):
    """y = x * gain[lane], x and y [m, lanes]."""
    m, lanes = x.shape
    if x.ctypes.data == y.ctypes.data:
        for j in range(m):
            yrow = y[j]
            for lane in range(lanes):
                yrow[lane] *= gain[lane]
    else:
        for j in range(m):
            xrow = x[j]
            yrow = y[j]
            for lane in range(lanes):
                yrow[lane] = xrow[lane] * gain[lane]


@kernel
def _is_quiet(lev, quiet_lin, reduction):
    """True when no lane reduces and every level of the chunk is below its knee: then the
    target reduction is 0 dB everywhere and the gain is exactly the makeup."""
    m, lanes = lev.shape
    for lane in range(lanes):
        if reduction[lane] != 0.0:
            return False
    loud = 0  # a count rather than an early exit, so the loop vectorises
    for j in range(m):
        row = lev[j]
        for lane in range(lanes):
            loud += row[lane] >= quiet_lin[lane]
    return loud == 0


@kernel
def _end_block(reduction, sc_state, gr_db):
    """Snap a released reduction to 0, drop NaN/inf from the state, publish the reduction."""
    _reset_nonfinite(reduction)
    for lane in range(reduction.shape[0]):
        if reduction[lane] < REDUCTION_SNAP_DB:
            reduction[lane] = 0.0
        gr_db[lane] = reduction[lane]
    for k in range(sc_state.shape[0]):
        for c in range(2):
            _reset_nonfinite(sc_state[k, c])


# ---------------------------------------------------------------------------------------------
# Compressor
# ---------------------------------------------------------------------------------------------


@kernel
def design_compressor(
    threshold_db, ratio, knee_db, attack_ms, release_ms, makeup_db, samplerate, out
):
    """Write one lane's compressor coefficients into ``out`` (float64[COMP_NCOEF]).

    threshold_db in dBFS peak, ratio >= 1 (inf = limiter), knee_db >= 0 (full width),
    attack_ms / release_ms time constants (see the module docstring), makeup_db.
    """
    ratio = max(ratio, 1.0)
    knee_db = max(knee_db, 0.0)
    out[COMP_THRESHOLD_DB] = threshold_db
    out[COMP_KNEE_START_DB] = threshold_db - 0.5 * knee_db
    out[COMP_KNEE_DB] = knee_db
    out[COMP_INV_2KNEE] = 0.5 / knee_db if knee_db > 0.0 else 0.0
    out[COMP_SLOPE] = 1.0 - 1.0 / ratio
    out[COMP_ATTACK_COEF] = _time_coef(attack_ms, samplerate)
    out[COMP_RELEASE_COEF] = _time_coef(release_ms, samplerate)
    out[COMP_MAKEUP] = 10.0 ** (makeup_db / 20.0)
    # 1e-9 relative (9e-9 dB) below the knee's start: more than the error of _fast_log2, so
    # a level under it gives exactly 0 dB of target reduction on the full path as well.
    out[COMP_QUIET_LIN] = 10.0 ** ((threshold_db - 0.5 * knee_db) / 20.0) * (1.0 - 1e-9)


@kernel
def design_sidechain_hpf(freq_hz, samplerate, out):
    """Side-chain high-pass into ``out`` (float64[SC_SECTIONS, 5]): 2nd-order Butterworth
    (12 dB/oct) at freq_hz, or a pass-through section when freq_hz <= 0 (off)."""
    if freq_hz > 0.0:
        design_butterworth(True, 2, freq_hz, samplerate, out)
    else:
        set_bypass(out)


@kernel
def _is_bypass(sc_coefs):
    """True when every section of every lane is [1, 0, 0, 0, 0] (the side chain is off)."""
    for k in range(sc_coefs.shape[0]):
        for lane in range(sc_coefs.shape[2]):
            if sc_coefs[k, 0, lane] != 1.0:
                return False
            for c in range(1, 5):
                if sc_coefs[k, c, lane] != 0.0:
                    return False
    return True


@kernel
def compressor_bank(x, y, coefs, sc_coefs, sc_state, state, link, gr_db):
    """Compress a block, every lane with its own parameters.

    x, y: float64[n, lanes] (y may be x). coefs: float64[COMP_NCOEF, lanes] from
    ``design_compressor``. sc_coefs: float64[SC_SECTIONS, 5, lanes] from
    ``design_sidechain_hpf`` and sc_state float64[SC_SECTIONS, 2, lanes]; when the filter is
    off on every lane it is skipped (arrays with 0 sections work too).
    state: float64[COMP_STATE_ROWS, lanes] (row 0 the smoothed gain reduction, the rest
    scratch). link: int64[lanes], each lane's partner (itself when unlinked); linked lanes
    share the max of their detector levels. gr_db: float64[lanes] receives the gain
    reduction at the end of the block in dB (>= 0, 6.0 means 6 dB down before makeup).
    """
    n = x.shape[0]
    reduction = state[COMP_REDUCTION]
    # With the filter off on every lane, skip it (saves ~1.4 ns per lane-sample).
    filtered = not _is_bypass(sc_coefs)
    for i0 in range(0, n, CHUNK):
        m = min(CHUNK, n - i0)
        xc = x[i0 : i0 + m]
        # Levels go to scratch first, so an in-place y == x cannot disturb the partner lane.
        lev = state[COMP_LEVELS : COMP_LEVELS + m]
        if filtered:
            det = state[COMP_SIDECHAIN : COMP_SIDECHAIN + m]
            biquad_bank(xc, det, sc_coefs, sc_state)
            _peak_levels(det, lev, link)
        else:
            _peak_levels(xc, lev, link)
        if _is_quiet(lev, coefs[COMP_QUIET_LIN], reduction):
            # Below the knee with nothing to release: no log, no exp (same result).
            _multiply_lanes(xc, y[i0 : i0 + m], coefs[COMP_MAKEUP])
        else:
            _compressor_curve(
                lev,
                coefs[COMP_KNEE_START_DB],
                coefs[COMP_KNEE_DB],
                coefs[COMP_INV_2KNEE],
                coefs[COMP_SLOPE],
            )
            _smooth_to_gain(
                lev,
                reduction,
                coefs[COMP_ATTACK_COEF],
                coefs[COMP_RELEASE_COEF],
                coefs[COMP_MAKEUP],
            )
            _multiply(xc, y[i0 : i0 + m], lev)
        _end_block(reduction, sc_state, gr_db)


class CompressorArrays(NamedTuple):
    """Everything ``compressor_bank`` needs after x and y, in its argument order."""

    coefs: np.ndarray  # float64[COMP_NCOEF, lanes]
    sc_coefs: np.ndarray  # float64[SC_SECTIONS, 5, lanes]
    sc_state: np.ndarray  # float64[SC_SECTIONS, 2, lanes]
    state: np.ndarray  # float64[COMP_STATE_ROWS, lanes]
    link: np.ndarray  # int64[lanes]
    gr_db: np.ndarray  # float64[lanes]


def make_compressor_arrays(lanes: int) -> CompressorArrays:
    """Zeroed arrays for ``lanes`` lanes: unlinked, side chain pass-through, no coefficients."""
    sc_coefs = np.zeros((SC_SECTIONS, 5, lanes))
    sc_coefs[:, 0, :] = 1.0
    return CompressorArrays(
        coefs=np.zeros((COMP_NCOEF, lanes)),
        sc_coefs=sc_coefs,
        sc_state=np.zeros((SC_SECTIONS, 2, lanes)),
        state=np.zeros((COMP_STATE_ROWS, lanes)),
        link=np.arange(lanes, dtype=np.int64),
        gr_db=np.zeros(lanes),
    )


# ---------------------------------------------------------------------------------------------
# Gate / expander
# ---------------------------------------------------------------------------------------------


@kernel
def design_gate(threshold_db, range_db, ratio, attack_ms, hold_ms, release_ms, samplerate, out):
    """Write one lane's gate/expander coefficients into ``out`` (float64[GATE_NCOEF]).

    threshold_db: the gate opens when the peak level reaches it and closes when the level has
    stayed below threshold_db - GATE_HYSTERESIS_DB for hold_ms. range_db >= 0: the largest
    attenuation. ratio >= 1: downward-expansion ratio below the threshold (inf = gate).
    attack_ms: opening time constant; release_ms: closing time constant.
    """
    out[GATE_OPEN_LIN] = 10.0 ** (threshold_db / 20.0)
    out[GATE_CLOSE_LIN] = 10.0 ** ((threshold_db - GATE_HYSTERESIS_DB) / 20.0)
    out[GATE_THRESHOLD_DB] = threshold_db
    out[GATE_SLOPE] = min(max(ratio - 1.0, 0.0), GATE_MAX_SLOPE)
    out[GATE_RANGE_DB] = max(range_db, 0.0)
    out[GATE_ATTACK_COEF] = _time_coef(attack_ms, samplerate)
    out[GATE_RELEASE_COEF] = _time_coef(release_ms, samplerate)
    out[GATE_HOLD1] = math.floor(max(hold_ms, 0.0) * 1e-3 * samplerate + 0.5) + 1.0
    out[GATE_UNITY] = 1.0


@kernel
def _gate_hold(lev, counter, open_lin, close_lin, hold1):
    """Run the open/hold counter over a chunk of peak levels, in place: a lane's level is
    replaced by OPEN_LEVEL while the gate is open, so the expander curve then gives 0 dB."""
    m, lanes = lev.shape
    for j in range(m):
        row = lev[j]
        for lane in range(lanes):
            level = row[lane]
            count = counter[lane]
            reload = (level >= open_lin[lane]) | ((count > 0.0) & (level >= close_lin[lane]))
            count = hold1[lane] if reload else max(count - 1.0, 0.0)
            counter[lane] = count
            row[lane] = _OPEN_LEVEL if count > 0.0 else level


@kernel
def _expander_curve(lev, threshold, slope, range_db):
    """Peak levels -> target attenuation in dB, in place: (threshold - level) * (ratio - 1),
    0 above the threshold, at most range_db."""
    m, lanes = lev.shape
    for j in range(m):
        row = lev[j]
        for lane in range(lanes):
            level_db = DB_PER_LOG2 * _fast_log2(max(row[lane], LEVEL_FLOOR))
            row[lane] = min(max(threshold[lane] - level_db, 0.0) * slope[lane], range_db[lane])


@kernel
def gate_bank(x, y, coefs, sc_coefs, sc_state, state, link, gr_db):
    """Gate / expand a block, every lane with its own parameters.

    Arguments as ``compressor_bank`` with coefs float64[GATE_NCOEF, lanes] from
    ``design_gate`` and state float64[GATE_STATE_ROWS, lanes]; gr_db receives the
    attenuation at the end of the block in dB (>= 0).

    Per lane and sample: the gate is open while a hold counter is positive. The counter is
    reloaded with hold + 1 samples when the peak level reaches the threshold, or, while open,
    the threshold minus the hysteresis; otherwise it counts down. Open: the target attenuation
    is 0 dB. Closed: (threshold - level) * (ratio - 1) dB, at most range_db. The attenuation
    moves to the target with the attack time when it falls (opening) and the release time
    when it rises (closing). Hold also bridges the zero crossings of low notes: keep it above
    half a period of the lowest note (10 ms for 50 Hz), or the gate may chatter.
    """
    n = x.shape[0]
    reduction = state[GATE_REDUCTION]
    filtered = not _is_bypass(sc_coefs)
    for i0 in range(0, n, CHUNK):
        m = min(CHUNK, n - i0)
        xc = x[i0 : i0 + m]
        lev = state[GATE_LEVELS : GATE_LEVELS + m]
        if filtered:
            det = state[GATE_SIDECHAIN : GATE_SIDECHAIN + m]
            biquad_bank(xc, det, sc_coefs, sc_state)
            _peak_levels(det, lev, link)
        else:
            _peak_levels(xc, lev, link)
        _gate_hold(
            lev,
            state[GATE_COUNTER],
            coefs[GATE_OPEN_LIN],
            coefs[GATE_CLOSE_LIN],
            coefs[GATE_HOLD1],
        )
        _expander_curve(lev, coefs[GATE_THRESHOLD_DB], coefs[GATE_SLOPE], coefs[GATE_RANGE_DB])
        # The attenuation grows when the gate closes (release) and shrinks when it opens.
        _smooth_to_gain(
            lev,
            reduction,
            coefs[GATE_RELEASE_COEF],
            coefs[GATE_ATTACK_COEF],
            coefs[GATE_UNITY],
        )
        _multiply(xc, y[i0 : i0 + m], lev)
        _end_block(reduction, sc_state, gr_db)


class GateArrays(NamedTuple):
    """Everything ``gate_bank`` needs after x and y, in its argument order."""

    coefs: np.ndarray  # float64[GATE_NCOEF, lanes]
    sc_coefs: np.ndarray  # float64[SC_SECTIONS, 5, lanes]
    sc_state: np.ndarray  # float64[SC_SECTIONS, 2, lanes]
    state: np.ndarray  # float64[GATE_STATE_ROWS, lanes]
    link: np.ndarray  # int64[lanes]
    gr_db: np.ndarray  # float64[lanes]


def make_gate_arrays(lanes: int) -> GateArrays:
    """Zeroed arrays for ``lanes`` lanes: unlinked, side chain pass-through, no coefficients."""
    sc_coefs = np.zeros((SC_SECTIONS, 5, lanes))
    sc_coefs[:, 0, :] = 1.0
    return GateArrays(
        coefs=np.zeros((GATE_NCOEF, lanes)),
        sc_coefs=sc_coefs,
        sc_state=np.zeros((SC_SECTIONS, 2, lanes)),
        state=np.zeros((GATE_STATE_ROWS, lanes)),
        link=np.arange(lanes, dtype=np.int64),
        gr_db=np.zeros(lanes),
    )


# ---------------------------------------------------------------------------------------------
# Multiband compressor
# ---------------------------------------------------------------------------------------------


@kernel
def multiband_bank(
    x, y, xover_coefs, xover_state, comp_coefs, comp_state, link, band_gain, bands, gr_db
):
    """3-band compressor: LR4 split, a compressor per band, weighted sum.

    x, y: float64[n, lanes] (y may be x). xover_coefs / xover_state: float64[XOVER_SECTIONS,
    5 / 2, lanes] (``crossover.design_crossover3``). comp_coefs: float64[MB_BANDS,
    COMP_NCOEF, lanes] (``design_compressor`` per band), comp_state: float64[MB_BANDS,
    COMP_STATE_ROWS, lanes]. link: int64[lanes] as for ``compressor_bank``. band_gain:
    float64[MB_BANDS, lanes], linear weight of each band in the sum (1 normal, 0 muted, for
    solo). bands: float64[MB_BANDS, CHUNK, lanes] scratch. gr_db: float64[MB_BANDS, lanes]
    receives each band's gain reduction in dB.
    """
    n, lanes = x.shape
    # Zero-section views: the band compressors have no side-chain filter.
    no_sc = xover_coefs[0:0]
    no_sc_state = xover_state[0:0]
    for i0 in range(0, n, CHUNK):
        m = min(CHUNK, n - i0)
        low = bands[0, :m]
        mid = bands[1, :m]
        high = bands[2, :m]
        crossover3_bank(x[i0 : i0 + m], low, mid, high, xover_coefs, xover_state)
        for b in range(MB_BANDS):
            band = bands[b, :m]
            compressor_bank(
                band, band, comp_coefs[b], no_sc, no_sc_state, comp_state[b], link, gr_db[b]
            )
        g0 = band_gain[0]
        g1 = band_gain[1]
        g2 = band_gain[2]
        for j in range(m):
            yrow = y[i0 + j]
            lrow = low[j]
            mrow = mid[j]
            hrow = high[j]
            for lane in range(lanes):
                yrow[lane] = g0[lane] * lrow[lane] + g1[lane] * mrow[lane] + g2[lane] * hrow[lane]


class MultibandArrays(NamedTuple):
    """Everything ``multiband_bank`` needs after x and y, in its argument order."""

    xover_coefs: np.ndarray  # float64[XOVER_SECTIONS, 5, lanes]
    xover_state: np.ndarray  # float64[XOVER_SECTIONS, 2, lanes]
    comp_coefs: np.ndarray  # float64[MB_BANDS, COMP_NCOEF, lanes]
    comp_state: np.ndarray  # float64[MB_BANDS, COMP_STATE_ROWS, lanes]
    link: np.ndarray  # int64[lanes]
    band_gain: np.ndarray  # float64[MB_BANDS, lanes]
    bands: np.ndarray  # float64[MB_BANDS, CHUNK, lanes]
    gr_db: np.ndarray  # float64[MB_BANDS, lanes]


def make_multiband_arrays(lanes: int) -> MultibandArrays:
    """Zeroed arrays for ``lanes`` lanes (unlinked, every band weight 1)."""
    return MultibandArrays(
        xover_coefs=np.zeros((XOVER_SECTIONS, 5, lanes)),
        xover_state=np.zeros((XOVER_SECTIONS, 2, lanes)),
        comp_coefs=np.zeros((MB_BANDS, COMP_NCOEF, lanes)),
        comp_state=np.zeros((MB_BANDS, COMP_STATE_ROWS, lanes)),
        link=np.arange(lanes, dtype=np.int64),
        band_gain=np.ones((MB_BANDS, lanes)),
        bands=np.zeros((MB_BANDS, CHUNK, lanes)),
        gr_db=np.zeros((MB_BANDS, lanes)),
    )


# ---------------------------------------------------------------------------------------------
# Validation (Python side)
# ---------------------------------------------------------------------------------------------


def _per_lane(name: str, value, lanes: int) -> np.ndarray:
    """A scalar or per-lane sequence as float64[lanes]; NaN is refused."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number or one number per lane, got {value!r}") from exc
    if arr.ndim == 0:
        arr = np.full(lanes, float(arr))
    if arr.shape != (lanes,):
        raise ValueError(f"{name} needs one value or {lanes} values, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    return arr


def _check_range(
    name: str, value, lanes: int, bounds: tuple[float, float], *, allow_inf=False, allow_zero=False
) -> np.ndarray:
    arr = _per_lane(name, value, lanes)
    lo, hi = bounds
    ok = (arr >= lo) & (arr <= hi)
    if allow_inf:
        ok |= arr == np.inf
    if allow_zero:
        ok |= arr == 0.0
    if not ok.all():
        extra = (" or inf" if allow_inf else "") + (" or 0 (off)" if allow_zero else "")
        bad = arr[~ok][0]
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}]{extra}, got {bad!r}")
    return arr


def _check_samplerate(samplerate: float) -> float:
    samplerate = float(samplerate)
    if not (math.isfinite(samplerate) and samplerate > 0):
        raise ValueError(f"samplerate must be a positive number, got {samplerate!r}")
    return samplerate


def make_link(link, lanes: int) -> np.ndarray:
    """The link array for ``lanes`` lanes.

    None: unlinked; "stereo": pairs (0, 1), (2, 3) … (an odd last lane stays alone); or a
    sequence naming each lane's partner, which must be symmetric (partner of partner = self).
    """
    if link is None:
        return np.arange(lanes, dtype=np.int64)
    if isinstance(link, str):
        if link != "stereo":
            raise ValueError(f"link must be None, 'stereo' or a partner per lane, got {link!r}")
        out = np.arange(lanes, dtype=np.int64) ^ 1
        if lanes % 2:
            out[-1] = lanes - 1
        return out
    arr = np.asarray(link)
    if arr.shape != (lanes,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"link needs one integer partner per lane ({lanes}), got {link!r}")
    arr = arr.astype(np.int64)
    if ((arr < 0) | (arr >= lanes)).any():
        raise ValueError(f"link partners must be lane numbers 0…{lanes - 1}, got {link!r}")
    if (arr[arr] != np.arange(lanes)).any():
        raise ValueError(f"link must be symmetric (partner of partner = self), got {link!r}")
    return arr


def _check_lanes(lanes: int) -> int:
    if int(lanes) != lanes or lanes < 1:
        raise ValueError(f"lanes must be a positive integer, got {lanes!r}")
    return int(lanes)


def _check_audio(x: np.ndarray, lanes: int) -> np.ndarray:
    frames = as_frames(x)
    if frames.shape[1] != lanes:
        raise ValueError(f"processor has {lanes} lanes, audio has {frames.shape[1]}")
    return frames


# ---------------------------------------------------------------------------------------------
# Processor classes
# ---------------------------------------------------------------------------------------------


class _Dynamics:
    """What the compressor and the gate classes share: per-lane parameters checked against
    ranges, the side-chain filter and the link, the kernel call and the state."""

    _what = ""  # "compressor" / "gate", for error messages
    # parameter name: (bounds, allow_inf)
    _ranges: ClassVar[Mapping[str, tuple[tuple[float, float], bool]]] = {}

    def __init__(self, samplerate: float, lanes: int, arrays, **params):
        self.samplerate = _check_samplerate(samplerate)
        self.lanes = _check_lanes(lanes)
        self.arrays = arrays(self.lanes)
        self.params: dict[str, np.ndarray] = {}
        self.set(**params)

    def set(self, **params) -> None:
        """Change parameters (any of the constructor's keywords); the state is kept."""
        checked = dict(self.params)
        link = params.pop("link", self.arrays.link)
        hpf_bounds = (
            SIDECHAIN_HPF_RANGE_HZ[0],
            min(SIDECHAIN_HPF_RANGE_HZ[1], 0.49 * self.samplerate),
        )
        for name, value in params.items():
            if name == "sidechain_hpf_hz":
                bounds, allow_inf, allow_zero = hpf_bounds, False, True
            elif name in self._ranges:
                (bounds, allow_inf), allow_zero = self._ranges[name], False
            else:
                known = sorted([*self._ranges, "sidechain_hpf_hz", "link"])
                raise ValueError(f"unknown {self._what} parameter {name!r}; one of {known}")
            checked[name] = _check_range(
                name, value, self.lanes, bounds, allow_inf=allow_inf, allow_zero=allow_zero
            )
        link_arr = make_link(link, self.lanes)
        self.params = checked
        self.arrays.link[:] = link_arr
        for lane in range(self.lanes):
            self._design(lane)
            design_sidechain_hpf(
                checked["sidechain_hpf_hz"][lane],
                self.samplerate,
                self.arrays.sc_coefs[:, :, lane],
            )

    def _design(self, lane: int) -> None:
        raise NotImplementedError

    @property
    def gain_reduction_db(self) -> np.ndarray:
        """Gain reduction (attenuation) per lane in dB (>= 0) at the end of the last block."""
        return self.arrays.gr_db.copy()

    def reset(self) -> None:
        self.arrays.state[:] = 0.0
        self.arrays.sc_state[:] = 0.0
        self.arrays.gr_db[:] = 0.0


class Compressor(_Dynamics):
    """Feed-forward peak compressor with state, for offline use and tests.

    >>> comp = Compressor(48000, lanes=2, threshold_db=-18, ratio=4, link="stereo")
    >>> y = comp.process(x)  # x: (n,) or (n, lanes), float32/float64; keeps state
    >>> comp.gain_reduction_db  # per lane, dB >= 0, at the end of the last block

    Every parameter is a scalar (all lanes) or one value per lane. Ranges: threshold_db
    -60…0, ratio 1…100 or inf, knee_db 0…24, attack_ms 0.05…500, release_ms 5…5000,
    makeup_db -12…+24, sidechain_hpf_hz 0 (off) or 10…20000 (and <= 0.49 fs); link None,
    "stereo" or a partner per lane.
    """

    _what = "compressor"
    _ranges: ClassVar[Mapping[str, tuple[tuple[float, float], bool]]] = {
        "threshold_db": (THRESHOLD_RANGE_DB, False),
        "ratio": (RATIO_RANGE, True),
        "knee_db": (KNEE_RANGE_DB, False),
        "attack_ms": (ATTACK_RANGE_MS, False),
        "release_ms": (RELEASE_RANGE_MS, False),
        "makeup_db": (MAKEUP_RANGE_DB, False),
    }

    def __init__(
        self,
        samplerate: float,
        lanes: int = 1,
        *,
        threshold_db=-20.0,
        ratio=4.0,
        knee_db=6.0,
        attack_ms=10.0,
        release_ms=100.0,
        makeup_db=0.0,
        sidechain_hpf_hz=0.0,
        link=None,
    ):
        super().__init__(
            samplerate,
            lanes,
            make_compressor_arrays,
            threshold_db=threshold_db,
            ratio=ratio,
            knee_db=knee_db,
            attack_ms=attack_ms,
            release_ms=release_ms,
            makeup_db=makeup_db,
            sidechain_hpf_hz=sidechain_hpf_hz,
            link=link,
        )

    def _design(self, lane: int) -> None:
        p = self.params
        design_compressor(
            p["threshold_db"][lane],
            p["ratio"][lane],
            p["knee_db"][lane],
            p["attack_ms"][lane],
            p["release_ms"][lane],
            p["makeup_db"][lane],
            self.samplerate,
            self.arrays.coefs[:, lane],
        )

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = _check_audio(x, self.lanes)
        compressor_bank(frames, frames, *self.arrays)
        return from_frames(frames, x)


class Gate(_Dynamics):
    """Gate / downward expander with hold and hysteresis, for offline use and tests.

    >>> gate = Gate(48000, lanes=1, threshold_db=-50, range_db=60, ratio=math.inf)
    >>> y = gate.process(x)

    The gate opens at threshold_db and closes GATE_HYSTERESIS_DB (3 dB) lower, after
    hold_ms; see ``gate_bank``. Ranges: threshold_db -90…0, range_db 0…90, ratio 1…100 or
    inf, attack_ms 0.05…500, hold_ms 0…2000, release_ms 5…5000, sidechain_hpf_hz 0 (off) or
    10…20000.
    """

    _what = "gate"
    _ranges: ClassVar[Mapping[str, tuple[tuple[float, float], bool]]] = {
        "threshold_db": (GATE_THRESHOLD_RANGE_DB, False),
        "range_db": (GATE_RANGE_RANGE_DB, False),
        "ratio": (RATIO_RANGE, True),
        "attack_ms": (ATTACK_RANGE_MS, False),
        "hold_ms": (HOLD_RANGE_MS, False),
        "release_ms": (RELEASE_RANGE_MS, False),
    }

    def __init__(
        self,
        samplerate: float,
        lanes: int = 1,
        *,
        threshold_db=-50.0,
        range_db=80.0,
        ratio=math.inf,
        attack_ms=0.5,
        hold_ms=20.0,
        release_ms=100.0,
        sidechain_hpf_hz=0.0,
        link=None,
    ):
        super().__init__(
            samplerate,
            lanes,
            make_gate_arrays,
            threshold_db=threshold_db,
            range_db=range_db,
            ratio=ratio,
            attack_ms=attack_ms,
            hold_ms=hold_ms,
            release_ms=release_ms,
            sidechain_hpf_hz=sidechain_hpf_hz,
            link=link,
        )

    def _design(self, lane: int) -> None:
        p = self.params
        design_gate(
            p["threshold_db"][lane],
            p["range_db"][lane],
            p["ratio"][lane],
            p["attack_ms"][lane],
            p["hold_ms"][lane],
            p["release_ms"][lane],
            self.samplerate,
            self.arrays.coefs[:, lane],
        )

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = _check_audio(x, self.lanes)
        gate_bank(frames, frames, *self.arrays)
        return from_frames(frames, x)


_BAND_PARAMS = {
    "threshold_db": THRESHOLD_RANGE_DB,
    "ratio": RATIO_RANGE,
    "knee_db": KNEE_RANGE_DB,
    "attack_ms": ATTACK_RANGE_MS,
    "release_ms": RELEASE_RANGE_MS,
    "makeup_db": MAKEUP_RANGE_DB,
}


class MultibandCompressor:
    """3-band compressor (LR4 crossover, compressor per band, bands summed), for offline use.

    >>> mb = MultibandCompressor(48000, lanes=2, low_hz=200, high_hz=2500, link="stereo",
    ...                          threshold_db=(-24, -18, -18), ratio=(3, 2, 2))
    >>> y = mb.process(x)
    >>> mb.gain_reduction_db  # float64[3, lanes]

    Band parameters (threshold_db, ratio, knee_db, attack_ms, release_ms, makeup_db) are a
    scalar for all three bands or a sequence of three; all lanes share them. ``set_solo`` and
    ``set_bypass`` switch bands; a bypassed band's gain reduction releases with its release
    time (no click) and its makeup goes to 0 dB.
    """

    def __init__(
        self,
        samplerate: float,
        lanes: int = 2,
        *,
        low_hz: float = 200.0,
        high_hz: float = 2000.0,
        link="stereo",
        threshold_db=-20.0,
        ratio=3.0,
        knee_db=6.0,
        attack_ms=10.0,
        release_ms=150.0,
        makeup_db=0.0,
    ):
        self.samplerate = _check_samplerate(samplerate)
        self.lanes = _check_lanes(lanes)
        self.arrays = make_multiband_arrays(self.lanes)
        self.band_params: dict[str, np.ndarray] = {}
        self.solo: set[int] = set()
        self.bypassed: set[int] = set()
        self.arrays.link[:] = make_link(link, self.lanes)
        self.set_crossover(low_hz, high_hz)
        self.set_bands(
            threshold_db=threshold_db,
            ratio=ratio,
            knee_db=knee_db,
            attack_ms=attack_ms,
            release_ms=release_ms,
            makeup_db=makeup_db,
        )

    def set_crossover(self, low_hz: float, high_hz: float) -> None:
        """Move the crossover points (Hz): 20 <= low_hz < high_hz <= min(20000, 0.49 fs)."""
        check_crossover_freqs(low_hz, high_hz, self.samplerate)
        self.low_hz, self.high_hz = float(low_hz), float(high_hz)
        one = np.zeros((XOVER_SECTIONS, 5))
        design_crossover3(self.low_hz, self.high_hz, self.samplerate, one)
        self.arrays.xover_coefs[:] = one[:, :, None]

    def set_bands(self, **params) -> None:
        """Set band parameters: each a scalar (all bands) or three values (low, mid, high)."""
        checked = dict(self.band_params)
        for name, value in params.items():
            if name not in _BAND_PARAMS:
                raise ValueError(f"unknown band parameter {name!r}; one of {sorted(_BAND_PARAMS)}")
            checked[name] = _check_range(
                name, value, MB_BANDS, _BAND_PARAMS[name], allow_inf=(name == "ratio")
            )
        self.band_params = checked
        self._design()

    def set_band(self, band: int, **params) -> None:
        """Set parameters of one band (0 low, 1 mid, 2 high)."""
        self._check_band(band)
        merged = {}
        for name, value in params.items():
            if name not in _BAND_PARAMS:
                raise ValueError(f"unknown band parameter {name!r}; one of {sorted(_BAND_PARAMS)}")
            values = self.band_params[name].copy()
            values[band] = value
            merged[name] = values
        self.set_bands(**merged)

    def set_solo(self, bands: Iterable[int] = ()) -> None:
        """Hear only these bands (empty: all bands)."""
        bands = set(bands)
        for band in bands:
            self._check_band(band)
        self.solo = bands
        for band in range(MB_BANDS):
            self.arrays.band_gain[band] = 1.0 if not bands or band in bands else 0.0

    def set_bypass(self, band: int, bypassed: bool = True) -> None:
        """Take a band out of compression (ratio 1, makeup 0 dB) or put it back."""
        self._check_band(band)
        if bypassed:
            self.bypassed.add(band)
        else:
            self.bypassed.discard(band)
        self._design()

    @staticmethod
    def _check_band(band: int) -> None:
        if band not in range(MB_BANDS):
            raise ValueError(f"band must be 0 (low), 1 (mid) or 2 (high), got {band!r}")

    def _design(self) -> None:
        p = self.band_params
        one = np.zeros(COMP_NCOEF)
        for band in range(MB_BANDS):
            bypassed = band in self.bypassed
            design_compressor(
                p["threshold_db"][band],
                1.0 if bypassed else p["ratio"][band],
                p["knee_db"][band],
                p["attack_ms"][band],
                p["release_ms"][band],
                0.0 if bypassed else p["makeup_db"][band],
                self.samplerate,
                one,
            )
            self.arrays.comp_coefs[band] = one[:, None]

    @property
    def gain_reduction_db(self) -> np.ndarray:
        """Gain reduction per band and lane in dB (>= 0), float64[3, lanes]."""
        return self.arrays.gr_db.copy()

    def reset(self) -> None:
        self.arrays.xover_state[:] = 0.0
        self.arrays.comp_state[:] = 0.0
        self.arrays.gr_db[:] = 0.0

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = _check_audio(x, self.lanes)
        multiband_bank(frames, frames, *self.arrays)
        return from_frames(frames, x)


__all__ = [
    "COMP_NCOEF",
    "COMP_STATE_ROWS",
    "GATE_HYSTERESIS_DB",
    "GATE_NCOEF",
    "GATE_STATE_ROWS",
    "MB_BANDS",
    "SC_SECTIONS",
    "Compressor",
    "CompressorArrays",
    "Gate",
    "GateArrays",
    "MultibandArrays",
    "MultibandCompressor",
    "compressor_bank",
    "design_compressor",
    "design_gate",
    "design_sidechain_hpf",
    "gate_bank",
    "make_compressor_arrays",
    "make_gate_arrays",
    "make_link",
    "make_multiband_arrays",
    "multiband_bank",
]
