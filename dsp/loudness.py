"""BS.1770-4 / EBU R 128 loudness meter: momentary, short-term, integrated, LRA, peaks, correlation.

One jitted kernel, ``loudness_process``, runs the whole meter over a block of audio
(float32 or float64 ``[n, lanes]``) with state preallocated by ``make_state``; the audio
thread calls it every block and the control thread reads the published ``meters`` array.
``LoudnessMeter`` wraps it for offline use and tests; ``measure`` analyses a whole signal,
spreading a long one over the CPUs (time pieces of the K-weighting and the true peak run in
parallel threads, see "whole-signal path" below; same readings to rounding).

Speed (10 min of 48 kHz stereo, benchmarks/bench_loudness.py): streaming, the K-weighting,
mean squares, peaks and correlation sums are one fused loop with the filter state in
registers, two lanes interleaved (``_kweight_pair``); a whole signal runs time pieces of it in
SIMD lanes, up to 32 lanes (16 pieces of stereo) per thread (``_kweight_group``); the true peak
is the vectorised polyphase scan of ``truepeak.truepeak_bank``; the gates are updated from the
histograms once per 100 ms hop.

Signal path (ITU-R BS.1770-4 Annex 1, EBU Tech 3341 V4, EBU Tech 3342 V4):

* K-weighting: the pre-filter (high shelf, +4 dB) and the RLB high-pass, re-derived for any
  sample rate from their analog prototypes (f0, Q, gain) with the bilinear transform, as in
  libebur128 (``ebur128_init_filter``) and B. De Man, "Evaluation of implementations of the
  EBU R128 loudness measurement", AES 145th Convention, 2018. At 48 kHz the coefficients equal
  the BS.1770-4 Tables 1 and 2 to 1e-15. Two refinements keep other rates reading like 48 kHz
  (see ``design_kweighting``): the high-pass keeps the table's pass-band gain at every rate,
  and below 44.1 kHz the shelf is magnitude-matched (Vicanek 2016) instead of bilinear.
* Mean squares are accumulated in sub-blocks of 10 ms (20 or 50 ms at rates where 10 ms is not
  a whole number of samples) into a ring covering 3 s. Every sub-block the 400 ms (momentary)
  and 3 s (short-term) windows are summed from the ring, which gives the maxima a 10 ms
  time resolution (EBU Tech 3341 cases 10, 11, 13 and 14 start tones between 100 ms hops).
* Every 100 ms (10 Hz, EBU Tech 3341 section 2.2) the momentary and short-term values are
  published, the 400 ms window becomes a gating block (BS.1770-4 eq. 3: 400 ms, 75 % overlap)
  and the 3 s window a loudness-range value (EBU Tech 3342 V4: >= 10 Hz sampling).
* Gating blocks and short-term values go into histograms that hold, per 0.01 LU bin from
  -70 to +30 LUFS, the exact sum of the blocks' mean squares and their count (a coarse 1 LU
  level above it makes every update O(200)). Memory is constant for any run length.

Error bound of the histograms. The absolute gate (-70 LUFS) is applied per block, exactly.
The energy sums are exact, so the integrated loudness is exact except for the classification
of the blocks in the one 0.01 LU bin that contains the relative threshold: that bin is kept
as a whole when its mean loudness is above the threshold. The result therefore equals the
exact BS.1770-4 value for a relative threshold moved by less than 0.01 LU (and is identical
to it whenever no block lies within 0.01 LU of the threshold). The loudness-range percentiles
are read as the mean loudness of the bin that holds the percentile's rank (EBU Tech 3342
rank ``round((n - 1) p)``), within 0.01 LU of the exact order statistic, so LRA is within
0.02 LU of the exact value (for the same gate classification as above).

Conventions. Loudness is in LUFS, ``-inf`` where there is no signal energy or the window has
not yet been filled since the last reset (momentary: 400 ms, short-term: 3 s). Integrated
loudness is ``-inf`` until a gating block is above -70 LUFS. LRA is 0.0 until a short-term
value passes both gates. Peaks are linear in the state and dBFS / dBTP in the Python API,
``-inf`` for silence. Correlation (Pearson, of lanes 0 and 1, i.e. L and R, on the unweighted
signal) over the last 400 ms and over the programme is NaN in the state and ``None`` in the
Python API where undefined: mono, before 400 ms, or when either channel is constant (silence).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import NamedTuple

import numpy as np

from studiod.dsp._jit import kernel, stack_empty
from studiod.dsp.filters import DENORMAL_FLUSH, to_sos
from studiod.dsp.truepeak import (
    design_interpolator,
    float_bits,
    make_truepeak_scratch,
    oversampling_factor,
    prefetch_rows,
    truepeak_bank,
)

# --- BS.1770-4 constants -------------------------------------------------------------------
LUFS_OFFSET = -0.691  # BS.1770-4 Annex 1 eq. (2)
ABSOLUTE_GATE_LUFS = -70.0  # BS.1770-4 Annex 1, Gamma_a
RELATIVE_GATE_LU = -10.0  # BS.1770-4 Annex 1, eq. (6)
LRA_RELATIVE_GATE_LU = -20.0  # EBU Tech 3342, relative gate for the short-term values
LRA_LOW_PERCENTILE = 0.10  # EBU Tech 3342: 10th to 95th percentile
LRA_HIGH_PERCENTILE = 0.95

# K-weighting analog prototypes, as derived by B. De Man (AES 145, 2018) and used by
# libebur128: pre-filter high shelf (f0, gain, Q and the band-edge gain exponent) and the
# RLB high-pass (f0, Q). With fs = 48 kHz they reproduce BS.1770-4 Tables 1 and 2.
SHELF_F0_HZ = 1681.974450955533
SHELF_GAIN_DB = 3.999843853973347
SHELF_Q = 0.7071752369554196
SHELF_VB_EXPONENT = 0.4996667741545416
HIGHPASS_F0_HZ = 38.13547087602444
HIGHPASS_Q = 0.5003270373238773

MIN_SAMPLERATE = 8000.0
MAX_SAMPLERATE = 192000.0

# Channel weights G_i, BS.1770-4 Annex 1 Table 3 (Ls, Rs 1.41; LFE excluded).
LAYOUTS = {
    "mono": (1.0,),
    "stereo": (1.0, 1.0),
    "5.0": (1.0, 1.0, 1.0, 1.41, 1.41),  # L R C Ls Rs
    "5.1": (1.0, 1.0, 1.0, 0.0, 1.41, 1.41),  # L R C LFE Ls Rs
}
DEFAULT_LAYOUT = {1: "mono", 2: "stereo", 5: "5.0", 6: "5.1"}

# --- histograms ------------------------------------------------------------------------------
HIST_MIN_LUFS = ABSOLUTE_GATE_LUFS
HIST_BINS_PER_LU = 100  # 0.01 LU bins, like libebur128's histogram mode
HIST_BINS = 10000  # -70 .. +30 LUFS; louder blocks share the top bin (their energy stays exact)
HIST_FINE_PER_COARSE = 100
HIST_COARSE_BINS = HIST_BINS // HIST_FINE_PER_COARSE
HIST_INTEGRATED = 0
HIST_LRA = 1

# --- state layout ----------------------------------------------------------------------------
CFG_SUB_FRAMES = 0  # frames per sub-block
CFG_SUBS_PER_HOP = 1  # sub-blocks per 100 ms
CFG_MOMENTARY_SUBS = 2  # sub-blocks per 400 ms
CFG_SHORTTERM_SUBS = 3  # sub-blocks per 3 s (= ring length)
CFG_TRUE_PEAK = 4  # 1: run the true-peak interpolator
CFG_SIZE = 5

CNT_FRAMES_IN_SUB = 0
CNT_SUBS = 1  # sub-blocks completed since reset
CNT_NONFINITE = 2  # blocks after which a non-finite filter state was cleared
CNT_SIZE = 3

# Columns of the ring: weighted K-filtered energy, then the correlation sums of lanes 0, 1.
RING_COLS = 6

# Published values (read by the control thread) and programme accumulators.
MOMENTARY = 0
SHORTTERM = 1
INTEGRATED = 2
LRA = 3
MOMENTARY_MAX = 4
SHORTTERM_MAX = 5
CORRELATION = 6
PROGRAMME_CORRELATION = 7
LRA_LOW = 8
LRA_HIGH = 9
INTEGRATED_THRESHOLD = 10  # relative gate of the integrated loudness, LUFS
LRA_THRESHOLD = 11
_PROG_N = 16  # frames, sum x, sum y, sum xx, sum yy, sum xy of lanes 0 and 1
METERS_SIZE = 22

# Correlation variance below this fraction of the raw power counts as a constant signal.
_CORR_REL_EPS = 1e-12

DEFAULT_CHUNK_FRAMES = 512

# Below this many seconds a block is not worth spreading over threads.
_PARALLEL_MIN_S = 1.0


def finite_or_none(value) -> float | None:
    """A reading, or None where it is silence (-inf) or undefined (NaN): what a report or a
    JSON reader can hold."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# =============================================================================================
# Coefficients
# =============================================================================================


@kernel
def _shelf_analog_gain_sq(freq_hz):
    """|H(j 2 pi f)|^2 of the analog pre-filter (Vh s^2 + Vb s / Q + 1) / (s^2 + s / Q + 1)."""
    vh = 10.0 ** (SHELF_GAIN_DB / 20.0)
    vb = vh**SHELF_VB_EXPONENT
    x = freq_hz / SHELF_F0_HZ
    num = (1.0 - vh * x * x) ** 2 + (vb * x / SHELF_Q) ** 2
    den = (1.0 - x * x) ** 2 + (x / SHELF_Q) ** 2
    return num / den


@kernel
def _matched_shelf(samplerate, out):
    """Pre-filter by magnitude matching (M. Vicanek, "Matched Second Order Digital Filters",
    2016): impulse-invariant poles, numerator matched to the analog magnitude at DC, at
    min(f0, fs/4) and at Nyquist. Used below 44.1 kHz, where the bilinear transform's
    frequency warping moves the shelf by up to 0.29 dB (at 8 kHz; matched: 0.04 dB)."""
    w0 = 2.0 * math.pi * SHELF_F0_HZ / samplerate
    zeta = 1.0 / (2.0 * SHELF_Q)  # < 1 for this prototype
    a1 = -2.0 * math.exp(-zeta * w0) * math.cos(math.sqrt(1.0 - zeta * zeta) * w0)
    a2 = math.exp(-2.0 * zeta * w0)
    big_a0 = (1.0 + a1 + a2) ** 2
    big_a1 = (1.0 - a1 + a2) ** 2
    big_a2 = -4.0 * a2
    # |A|^2 = A0 phi0 + A1 phi1 + A2 phi2 with phi1 = sin^2(w/2), phi0 = 1 - phi1,
    # phi2 = 4 phi0 phi1; the same form for |B|^2. DC gives B0, Nyquist B1, f_m gives B2.
    b_0 = big_a0 * _shelf_analog_gain_sq(0.0)
    b_1 = big_a1 * _shelf_analog_gain_sq(samplerate / 2.0)
    f_m = min(SHELF_F0_HZ, samplerate / 4.0)
    phi1 = math.sin(math.pi * f_m / samplerate) ** 2
    phi0 = 1.0 - phi1
    phi2 = 4.0 * phi0 * phi1
    a_sq = big_a0 * phi0 + big_a1 * phi1 + big_a2 * phi2
    b_2 = (_shelf_analog_gain_sq(f_m) * a_sq - b_0 * phi0 - b_1 * phi1) / phi2
    w = 0.5 * (math.sqrt(b_0) + math.sqrt(b_1))
    b0 = 0.5 * (w + math.sqrt(max(w * w + b_2, 0.0)))
    out[0] = b0
    out[1] = 0.5 * (math.sqrt(b_0) - math.sqrt(b_1))
    out[2] = -b_2 / (4.0 * b0)
    out[3] = a1
    out[4] = a2


@kernel
def design_kweighting(samplerate, out):
    """K-weighting for ``samplerate`` (Hz) into ``out`` (float64[2, 5], rows [b0 b1 b2 a1 a2]).

    Row 0, pre-filter (high shelf): from 44.1 kHz up the bilinear transform of the analog
    prototype with prewarping at f0 (libebur128, De Man 2018), which at 48 kHz is BS.1770-4
    Table 1; below 44.1 kHz the magnitude-matched design of ``_matched_shelf``.
    Row 1, RLB high-pass: bilinear transform with prewarping; BS.1770-4 Table 2 keeps its
    numerator at [1, -2, 1], i.e. a pass-band gain of 1 + K/Q + K^2 (+0.043 dB at 48 kHz,
    +0.26 dB at 8 kHz). The numerator is scaled so that every rate keeps the 48 kHz gain that
    the -0.691 of BS.1770 eq. 2 is calibrated for (the factor is exactly 1 at 48 kHz).
    """
    if samplerate >= 44100.0:
        k = math.tan(math.pi * SHELF_F0_HZ / samplerate)
        vh = 10.0 ** (SHELF_GAIN_DB / 20.0)
        vb = vh**SHELF_VB_EXPONENT
        a0 = 1.0 + k / SHELF_Q + k * k
        out[0, 0] = (vh + vb * k / SHELF_Q + k * k) / a0
        out[0, 1] = 2.0 * (k * k - vh) / a0
        out[0, 2] = (vh - vb * k / SHELF_Q + k * k) / a0
        out[0, 3] = 2.0 * (k * k - 1.0) / a0
        out[0, 4] = (1.0 - k / SHELF_Q + k * k) / a0
    else:
        _matched_shelf(samplerate, out[0])
    k = math.tan(math.pi * HIGHPASS_F0_HZ / samplerate)
    a0 = 1.0 + k / HIGHPASS_Q + k * k
    k48 = math.tan(math.pi * HIGHPASS_F0_HZ / 48000.0)
    gain = (1.0 + k48 / HIGHPASS_Q + k48 * k48) / a0
    out[1, 0] = gain
    out[1, 1] = -2.0 * gain
    out[1, 2] = gain
    out[1, 3] = 2.0 * (k * k - 1.0) / a0
    out[1, 4] = (1.0 - k / HIGHPASS_Q + k * k) / a0


def kweighting_sos(samplerate: float) -> np.ndarray:
    """The K-weighting filter for ``samplerate`` as scipy ``sos`` (float64[2, 6])."""
    _check_samplerate(samplerate)
    coefs = np.zeros((2, 5))
    design_kweighting(float(samplerate), coefs)
    return to_sos(coefs)


def block_geometry(samplerate: float) -> tuple[int, int]:
    """(frames per sub-block, sub-blocks per 100 ms) for ``samplerate``.

    100 ms is ``round(fs / 10)`` frames (exact at every common rate); it is split into the
    finest of 10, 5, 4, 2 or 1 equal sub-blocks, i.e. 10 ms wherever that is whole samples.
    """
    hop = round(samplerate / 10.0)
    for subs in (10, 5, 4, 2, 1):
        if hop % subs == 0:
            return hop // subs, subs
    return hop, 1


# =============================================================================================
# Kernels
# =============================================================================================


@kernel
def _lufs(energy):
    """Loudness of a weighted mean square (BS.1770-4 eq. 2); -inf for no energy."""
    if energy > 0.0:
        return LUFS_OFFSET + 10.0 * math.log10(energy)
    return -math.inf


@kernel
def _hist_add(fine, coarse, h, energy, lufs):
    """Add one block (mean square ``energy``, loudness ``lufs`` > -70) to histogram ``h``
    (HIST_INTEGRATED or HIST_LRA) of ``fine`` / ``coarse``."""
    pos = (lufs - HIST_MIN_LUFS) * HIST_BINS_PER_LU
    idx = math.floor(pos) if pos < HIST_BINS else HIST_BINS - 1
    idx = min(max(idx, 0), HIST_BINS - 1)
    fine[h, idx, 0] += energy
    fine[h, idx, 1] += 1.0
    c = idx // HIST_FINE_PER_COARSE
    coarse[h, c, 0] += energy
    coarse[h, c, 1] += 1.0


@kernel
def _first_bin_above(fine, threshold_lufs):
    """Lowest bin kept by a gate at ``threshold_lufs``.

    Bins wholly above the threshold are kept; the bin that contains it is kept when its
    mean loudness is above the threshold (the only approximation, see module docstring).
    """
    pos = (threshold_lufs - HIST_MIN_LUFS) * HIST_BINS_PER_LU
    if pos < 0.0:
        return 0
    t = math.floor(pos) if pos < HIST_BINS else HIST_BINS - 1
    if fine[t, 1] > 0.0 and _lufs(fine[t, 0] / fine[t, 1]) > threshold_lufs:
        return t
    return t + 1


@kernel
def _sum_from(fine, coarse, first):
    """(energy, count) of all bins >= ``first``."""
    energy = 0.0
    count = 0.0
    if first >= HIST_BINS:
        return energy, count
    c = first // HIST_FINE_PER_COARSE
    for b in range(first, (c + 1) * HIST_FINE_PER_COARSE):
        energy += fine[b, 0]
        count += fine[b, 1]
    for cc in range(c + 1, HIST_COARSE_BINS):
        energy += coarse[cc, 0]
        count += coarse[cc, 1]
    return energy, count


@kernel
def _bin_at_rank(fine, coarse, first, rank):
    """Index of the bin that holds the ``rank``-th (0-based, ascending) value from ``first``."""
    seen = 0.0
    c = first // HIST_FINE_PER_COARSE
    for b in range(first, (c + 1) * HIST_FINE_PER_COARSE):
        seen += fine[b, 1]
        if seen > rank:
            return b
    for cc in range(c + 1, HIST_COARSE_BINS):
        if seen + coarse[cc, 1] > rank:
            for b in range(cc * HIST_FINE_PER_COARSE, (cc + 1) * HIST_FINE_PER_COARSE):
                seen += fine[b, 1]
                if seen > rank:
                    return b
        seen += coarse[cc, 1]
    return HIST_BINS - 1


@kernel
def _integrated_from_hist(fine, coarse, meters):
    """Gated integrated loudness (BS.1770-4 eqs. 5-7) from the gating-block histogram."""
    total = 0.0
    count = 0.0
    for c in range(HIST_COARSE_BINS):
        total += coarse[c, 0]
        count += coarse[c, 1]
    if count == 0.0:
        meters[INTEGRATED] = -math.inf
        meters[INTEGRATED_THRESHOLD] = -math.inf
        return
    threshold = _lufs(total / count) + RELATIVE_GATE_LU
    energy, kept = _sum_from(fine, coarse, _first_bin_above(fine, threshold))
    meters[INTEGRATED_THRESHOLD] = threshold
    meters[INTEGRATED] = _lufs(energy / kept) if kept > 0.0 else -math.inf


@kernel
def _lra_from_hist(fine, coarse, meters):
    """Loudness range (EBU Tech 3342) from the short-term histogram."""
    total = 0.0
    count = 0.0
    for c in range(HIST_COARSE_BINS):
        total += coarse[c, 0]
        count += coarse[c, 1]
    if count == 0.0:
        meters[LRA] = 0.0
        meters[LRA_LOW] = -math.inf
        meters[LRA_HIGH] = -math.inf
        meters[LRA_THRESHOLD] = -math.inf
        return
    threshold = _lufs(total / count) + LRA_RELATIVE_GATE_LU
    first = _first_bin_above(fine, threshold)
    _, kept = _sum_from(fine, coarse, first)
    meters[LRA_THRESHOLD] = threshold
    if kept == 0.0:
        meters[LRA] = 0.0
        meters[LRA_LOW] = -math.inf
        meters[LRA_HIGH] = -math.inf
        return
    # Tech 3342 reference implementation: sorted index round((n - 1) * p).
    lo = _bin_at_rank(fine, coarse, first, math.floor((kept - 1.0) * LRA_LOW_PERCENTILE + 0.5))
    hi = _bin_at_rank(fine, coarse, first, math.floor((kept - 1.0) * LRA_HIGH_PERCENTILE + 0.5))
    low_lufs = _lufs(fine[lo, 0] / fine[lo, 1])
    high_lufs = _lufs(fine[hi, 0] / fine[hi, 1])
    meters[LRA_LOW] = low_lufs
    meters[LRA_HIGH] = high_lufs
    meters[LRA] = high_lufs - low_lufs


@kernel
def _pearson(n, sx, sy, sxx, syy, sxy):
    """Pearson correlation from raw sums; NaN when either signal is constant."""
    vx = sxx - sx * sx / n
    vy = syy - sy * sy / n
    if n <= 0.0 or vx <= _CORR_REL_EPS * sxx or vy <= _CORR_REL_EPS * syy:
        return math.nan
    r = (sxy - sx * sy / n) / math.sqrt(vx * vy)
    return min(max(r, -1.0), 1.0)


@kernel
def _window_sum(ring, k, newest, subs):
    """Sum of the last ``subs`` entries of quantity ``k`` of the ring (``ring[k]``), ending
    at entry ``newest``."""
    first = newest - subs + 1
    total = 0.0
    kk = np.uint64(k)
    length = ring.shape[1]
    # Unsigned indices: numba wraps a negative signed index around (Python's x[-1]) with a
    # test per element, which kept this loop from plain vector loads (measured: 3.4x
    # faster without it, the same sums).
    if first < 0:  # the window wraps: its older part is at the end of the ring
        for e in range(np.uint64(length + first), np.uint64(length)):
            total += ring[kk, e]
        first = 0
    for e in range(np.uint64(first), np.uint64(newest + 1)):
        total += ring[kk, e]
    return total


@kernel
def _finish_subs(acc, weights, config, counters, ring, hist_fine, hist_coarse, meters, gates):
    """Close one sub-block per row of ``acc`` float64[subs, lanes + RING_COLS - 1] (each
    lane's sum of K-weighted squares, then the correlation sums x, y, xx, yy, xy): fill the
    ring, update the windows, maxima, histograms and published values.

    gates: recompute the integrated loudness and LRA from the histograms at every 100 ms hop
    (False: once at the end, which gives the same result).

    One call for many sub-blocks, and in its loop no array views and no calls with arrays
    that LLVM does not inline: numba counts the references of every view it makes and of
    the arrays a called function receives, each an atomic increment and decrement through a
    call into its runtime. A call per sub-block cost 85 ns before its work (measured on 10
    min of stereo: the parallel path's replay of its 60 000 sub-blocks took 9 ms, now 4.4)."""
    lanes = weights.shape[0]
    frames = config[CFG_SUB_FRAMES]
    per_hop = config[CFG_SUBS_PER_HOP]
    m_subs = config[CFG_MOMENTARY_SUBS]
    s_subs = config[CFG_SHORTTERM_SUBS]
    win_energy = stack_empty(2, np.float64)
    win_lufs = stack_empty(2, np.float64)
    added = 0
    for j in range(acc.shape[0]):
        done = counters[CNT_SUBS]
        row = done % s_subs
        energy = 0.0
        for lane in range(lanes):
            energy += weights[lane] * acc[j, lane]
        ring[0, row] = energy
        finite = True
        for k in range(1, RING_COLS):
            v = acc[j, lanes + k - 1]
            ring[k, row] = v
            finite = finite and math.isfinite(v)
        if lanes >= 2 and finite:
            meters[_PROG_N] += frames
            for k in range(1, RING_COLS):
                meters[_PROG_N + k] += ring[k, row]
        done += 1
        counters[CNT_SUBS] = done

        for w in range(2):  # the momentary (400 ms) and short-term (3 s) windows
            subs = m_subs if w == 0 else s_subs
            top = MOMENTARY_MAX if w == 0 else SHORTTERM_MAX
            win_energy[w] = 0.0
            win_lufs[w] = -math.inf
            if done >= subs:
                win_energy[w] = _window_sum(ring, 0, row, subs) / (subs * frames)
                win_lufs[w] = _lufs(win_energy[w])
                if win_lufs[w] > meters[top]:
                    meters[top] = win_lufs[w]
        m_energy, s_energy = win_energy[0], win_energy[1]
        m_lufs, s_lufs = win_lufs[0], win_lufs[1]

        if done % per_hop != 0:
            continue
        # 100 ms boundary: publish, gate, update integrated and LRA.
        meters[MOMENTARY] = m_lufs
        meters[SHORTTERM] = s_lufs
        hop_added = 0
        if m_lufs > ABSOLUTE_GATE_LUFS:
            _hist_add(hist_fine, hist_coarse, HIST_INTEGRATED, m_energy, m_lufs)
            hop_added |= 1
        if s_lufs > ABSOLUTE_GATE_LUFS:
            _hist_add(hist_fine, hist_coarse, HIST_LRA, s_energy, s_lufs)
            hop_added |= 2
        if gates:
            _update_gates(hist_fine, hist_coarse, meters, hop_added)
        added |= hop_added
        if lanes >= 2:
            meters[CORRELATION] = (
                _window_correlation(ring, row, m_subs, frames) if (done >= m_subs) else math.nan
            )
            meters[PROGRAMME_CORRELATION] = _pearson(
                meters[_PROG_N],
                meters[_PROG_N + 1],
                meters[_PROG_N + 2],
                meters[_PROG_N + 3],
                meters[_PROG_N + 4],
                meters[_PROG_N + 5],
            )
    if not gates:
        _update_gates(hist_fine, hist_coarse, meters, added)


@kernel
def _update_gates(hist_fine, hist_coarse, meters, added):
    """Integrated loudness (``added & 1``) and LRA (``added & 2``) from the histograms."""
    if added & 1:
        _integrated_from_hist(hist_fine[HIST_INTEGRATED], hist_coarse[HIST_INTEGRATED], meters)
    if added & 2:
        _lra_from_hist(hist_fine[HIST_LRA], hist_coarse[HIST_LRA], meters)


@kernel
def _window_correlation(ring, newest, subs, frames):
    """Pearson correlation of lanes 0 and 1 over the last ``subs`` ring entries."""
    return _pearson(
        float(subs * frames),
        _window_sum(ring, 1, newest, subs),
        _window_sum(ring, 2, newest, subs),
        _window_sum(ring, 3, newest, subs),
        _window_sum(ring, 4, newest, subs),
        _window_sum(ring, 5, newest, subs),
    )


# --- K-weighting, mean squares and peaks over a segment ------------------------------------
# The two K-weighting biquads (transposed direct form II, float64 state, the same arithmetic
# as filters.biquad_bank) are specialised here: coefficients and state live in registers for
# a whole segment and two lanes run interleaved, so the recursion of one lane overlaps with
# the other's (the loop is latency-bound; measured 2.5x faster than biquad_bank plus separate
# passes for the mean square and the peak).


@kernel
def _section(kcoefs, section, lane):
    """``(b0, b1, b2, a1, a2)`` of one K-weighting section of one lane."""
    return (
        kcoefs[section, 0, lane],
        kcoefs[section, 1, lane],
        kcoefs[section, 2, lane],
        kcoefs[section, 3, lane],
        kcoefs[section, 4, lane],
    )


@kernel
def _kweight_pair(x, start, stop, lane, kcoefs, kstate, energy, sample_peak, sums):
    """K-weight lanes ``lane`` and ``lane + 1`` of ``x[start:stop]``: add the sums of squares
    to ``energy[lane], energy[lane + 1]``, raise ``sample_peak`` (|x|), update ``kstate``.
    For lanes 0 and 1 also add the correlation sums (x, y, xx, yy, xy of the unweighted
    signal) to ``sums[0:5]``: free here, the loop waits on the filter recursion anyway."""
    la = lane
    lb = lane + 1
    pa0, pa1, pa2, pa3, pa4 = _section(kcoefs, 0, la)
    ha0, ha1, ha2, ha3, ha4 = _section(kcoefs, 1, la)
    pb0, pb1, pb2, pb3, pb4 = _section(kcoefs, 0, lb)
    hb0, hb1, hb2, hb3, hb4 = _section(kcoefs, 1, lb)
    sa0 = kstate[0, 0, la]
    sa1 = kstate[0, 1, la]
    ta0 = kstate[1, 0, la]
    ta1 = kstate[1, 1, la]
    sb0 = kstate[0, 0, lb]
    sb1 = kstate[0, 1, lb]
    tb0 = kstate[1, 0, lb]
    tb1 = kstate[1, 1, lb]
    ea = 0.0
    eb = 0.0
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    peak_a = sample_peak[la]
    peak_b = sample_peak[lb]
    for i in range(start, stop):
        va = float(x[i, la])
        vb = float(x[i, lb])
        # pre-filter (high shelf)
        ua = pa0 * va + sa0
        sa0 = pa1 * va - pa3 * ua + sa1
        sa1 = pa2 * va - pa4 * ua
        ub = pb0 * vb + sb0
        sb0 = pb1 * vb - pb3 * ub + sb1
        sb1 = pb2 * vb - pb4 * ub
        # RLB high-pass
        ya = ha0 * ua + ta0
        ta0 = ha1 * ua - ha3 * ya + ta1
        ta1 = ha2 * ua - ha4 * ya
        yb = hb0 * ub + tb0
        tb0 = hb1 * ub - hb3 * yb + tb1
        tb1 = hb2 * ub - hb4 * yb
        ea += ya * ya
        eb += yb * yb
        sx += va
        sy += vb
        sxx += va * va
        syy += vb * vb
        sxy += va * vb
        # The sample peak ignores NaN (the non-finite counter reports it).
        aa = abs(va)
        ab = abs(vb)
        if aa > peak_a:
            peak_a = aa
        if ab > peak_b:
            peak_b = ab
    kstate[0, 0, la] = _flushed(sa0)
    kstate[0, 1, la] = _flushed(sa1)
    kstate[1, 0, la] = _flushed(ta0)
    kstate[1, 1, la] = _flushed(ta1)
    kstate[0, 0, lb] = _flushed(sb0)
    kstate[0, 1, lb] = _flushed(sb1)
    kstate[1, 0, lb] = _flushed(tb0)
    kstate[1, 1, lb] = _flushed(tb1)
    energy[la] += ea
    energy[lb] += eb
    sample_peak[la] = peak_a
    sample_peak[lb] = peak_b
    if lane == 0:
        sums[0] += sx
        sums[1] += sy
        sums[2] += sxx
        sums[3] += syy
        sums[4] += sxy


@kernel
def _kweight_one(x, start, stop, lane, kcoefs, kstate, energy, sample_peak):
    """``_kweight_pair`` for a single lane."""
    p0, p1, p2, p3, p4 = _section(kcoefs, 0, lane)
    h0, h1, h2, h3, h4 = _section(kcoefs, 1, lane)
    s0 = kstate[0, 0, lane]
    s1 = kstate[0, 1, lane]
    t0 = kstate[1, 0, lane]
    t1 = kstate[1, 1, lane]
    e = 0.0
    peak = sample_peak[lane]
    for i in range(start, stop):
        v = float(x[i, lane])
        u = p0 * v + s0
        s0 = p1 * v - p3 * u + s1
        s1 = p2 * v - p4 * u
        y = h0 * u + t0
        t0 = h1 * u - h3 * y + t1
        t1 = h2 * u - h4 * y
        e += y * y
        a = abs(v)
        if a > peak:
            peak = a
    kstate[0, 0, lane] = _flushed(s0)
    kstate[0, 1, lane] = _flushed(s1)
    kstate[1, 0, lane] = _flushed(t0)
    kstate[1, 1, lane] = _flushed(t1)
    energy[lane] += e
    sample_peak[lane] = peak


@kernel
def _flushed(v):
    """``v``, or 0.0 below the denormal threshold of filters.flush_denormals."""
    return v if abs(v) >= DENORMAL_FLUSH or v != v else 0.0


@kernel
def _kweight_lanes(x, start, stop, kcoefs, kstate, energy, sample_peak, sums):
    """K-weight all lanes of ``x[start:stop]`` two at a time (see ``_kweight_pair``)."""
    end = x.shape[1]
    lane = 0
    while lane + 1 < end:
        _kweight_pair(x, start, stop, lane, kcoefs, kstate, energy, sample_peak, sums)
        lane += 2
    if lane < end:
        _kweight_one(x, start, stop, lane, kcoefs, kstate, energy, sample_peak)


@kernel
def _clear_nonfinite(kstate, counters):
    """A NaN or Inf input poisons the recursive state for good: clear it and count it."""
    bad = False
    for v in kstate.reshape(-1):
        if not math.isfinite(v):
            bad = True
    if bad:
        kstate[:] = 0.0
        counters[CNT_NONFINITE] += 1


@kernel
def loudness_process(
    x,
    kcoefs,
    kstate,
    scratch,
    weights,
    config,
    counters,
    sub_acc,
    ring,
    hist_fine,
    hist_coarse,
    tp_coefs,
    tp_history,
    tp_peak,
    sample_peak,
    meters,
):
    """Meter one block of audio; every argument after ``x`` is a field of ``LoudnessState``.

    x: float32 or float64 [n, lanes] (any n, read only). State is updated in place; the
    published values are ``meters[MOMENTARY ... LRA_THRESHOLD]`` (LUFS / LU, see module
    docstring), ``tp_peak`` and ``sample_peak`` (linear, per lane). Allocates nothing.
    """
    n = x.shape[0]
    lanes = x.shape[1]
    frames = config[CFG_SUB_FRAMES]
    if config[CFG_TRUE_PEAK] != 0 and n > 0:
        # scratch is the true-peak scan's work buffer (any C-contiguous float64 array).
        truepeak_bank(x, tp_coefs, tp_history, tp_peak, scratch.reshape(-1))
    i = 0
    while i < n:
        seg = min(frames - counters[CNT_FRAMES_IN_SUB], n - i)
        prefetch_rows(x, i + 2 * frames, i + 3 * frames)
        _kweight_lanes(x, i, i + seg, kcoefs, kstate, sub_acc, sample_peak, sub_acc[lanes:])
        i += seg
        counters[CNT_FRAMES_IN_SUB] += seg
        if counters[CNT_FRAMES_IN_SUB] == frames:
            counters[CNT_FRAMES_IN_SUB] = 0
            _finish_subs(
                sub_acc.reshape(1, -1),
                weights,
                config,
                counters,
                ring,
                hist_fine,
                hist_coarse,
                meters,
                True,
            )
            sub_acc[:] = 0.0
    # (The true-peak reading of a NaN input stays NaN by design of truepeak_bank.)
    _clear_nonfinite(kstate, counters)


@kernel
def loudness_process_state(x, state):
    """``loudness_process(x, *state)`` for jitted callers (numba cannot star-unpack it)."""
    loudness_process(
        x,
        state.kcoefs,
        state.kstate,
        state.scratch,
        state.weights,
        state.config,
        state.counters,
        state.sub_acc,
        state.ring,
        state.hist_fine,
        state.hist_coarse,
        state.tp_coefs,
        state.tp_history,
        state.tp_peak,
        state.sample_peak,
        state.meters,
    )


# --- whole-signal path: time pieces and true peak in parallel --------------------------------
# A long signal splits into independent jobs that release the GIL: the K-weighting of time
# pieces (whole sub-blocks) into per-sub-block sums of squares and correlation sums, a group
# of pieces per thread in SIMD lanes (below), and the true peak per lane and time chunk (an
# FIR: a chunk only needs the taps - 1 samples before it). A piece that does not start the
# signal first runs its filters over the
# ``settle_frames`` before it from a zero state (output discarded): the K-weighting is
# stable, so the state it reaches differs from the sequential one by the free response of
# the unknown earlier state, decayed below 1e-40 of it (``settle_frames``), i.e. nothing a
# float64 can hold. The sub-block sums are then replayed through ``_finish_subs``, the code of
# the streaming path, so both paths agree to rounding (tests/dsp/test_loudness.py: 1e-9).

SETTLE_DECAY = 1e-40


def settle_frames(kcoefs: np.ndarray) -> int:
    """Frames after which the K-weighting's free response has decayed by ``SETTLE_DECAY``
    (slowest pole radius r: r^n * n < SETTLE_DECAY, the n for a double pole)."""
    kcoefs = np.asarray(kcoefs)  # [sections, 5, lanes]
    radius = 0.0
    for section in kcoefs:
        for a1, a2 in zip(section[3], section[4], strict=True):
            radius = max(radius, float(np.max(np.abs(np.roots([1.0, a1, a2])))))
    if not radius < 1.0:
        raise ValueError("the K-weighting is not stable")
    n = 1
    while n * radius**n >= SETTLE_DECAY:
        n *= 2
    return n


@kernel
def _kweight_piece(
    x, start, stop, settle_from, frames, kcoefs, kstate, energy, sample_peak, sums, spare
):
    """K-weight ``x[start:stop]`` (whole sub-blocks; ``start`` a multiple of ``frames``)
    into ``energy[sub, lane]`` and ``sums[sub, 0:5]`` (added), after settling ``kstate`` on
    ``x[settle_from:start]`` (spare: float64[2 * lanes + 5] for the discarded sums)."""
    lanes = x.shape[1]
    if settle_from < start:
        _kweight_lanes(
            x,
            settle_from,
            start,
            kcoefs,
            kstate,
            spare[:lanes],
            spare[lanes : 2 * lanes],
            spare[2 * lanes :],
        )
    for j in range(start // frames, stop // frames):
        prefetch_rows(x, (j + 2) * frames, (j + 3) * frames)
        _kweight_lanes(
            x, j * frames, (j + 1) * frames, kcoefs, kstate, energy[j], sample_peak, sums[j]
        )


# The K-weighting of a whole signal, with the pieces in SIMD lanes. The recursion of one lane
# is serial (each sample waits on the last), so a loop over time is bound by the latency of
# its multiply-adds, not by the machine's width. Independent time pieces, each lane of each
# piece a "chain", run in lockstep instead: the inner loop goes across the chains, and LLVM
# vectorises it (8 doubles per AVX-512 register, 4 per AVX2 one, 2 per NEON one). Always
# CHAINS chains (unused ones are zeros): a constant count lets the chains' states live in
# stack scratch, which no argument array can alias, so LLVM keeps them in registers from one
# sample to the next. Measured on the 2-vCPU EPYC (AVX-512), ns per row of 32 chains: 6.4,
# against 15-18 with the states in an argument array (a store and a load per state value
# and sample, and the run-time overlap checks); the serial two-lane loop (``_kweight_pair``)
# takes 2.3-2.9 ns per lane-sample.
CHAINS = 32
_CHAIN_STATE_SLOTS = 4 * CHAINS
# A piece is at least this many times as long as the settling run before it (which is
# computed and thrown away), so settling costs at most 1/8 of the work.
_PIECE_PER_SETTLE = 8
# Rows of the chains' work tile: 96 rows of 32 chains are 24 KiB, inside an L1 cache (measured:
# 32, 64, 96 and 160 rows within 10 %, 96 the fastest).
_TILE_ROWS = 96


@kernel(inline=True)
def _kweight_chains(tile, coefs, state, energy):
    """K-weight every column of ``tile`` float64[frames, CHAINS] as a signal of its own:
    ``state`` float64[4, CHAINS] (the pre-filter's and the high-pass's two state values),
    ``energy[chain]`` += the chain's sum of squares. ``coefs``: the ten coefficients (pre-filter
    b0 b1 b2 a1 a2, high-pass b0 b1 b2 a1 a2), the same for every chain."""
    p0, p1, p2, p3, p4 = coefs[0], coefs[1], coefs[2], coefs[3], coefs[4]
    h0, h1, h2, h3, h4 = coefs[5], coefs[6], coefs[7], coefs[8], coefs[9]
    C = CHAINS
    z = stack_empty(_CHAIN_STATE_SLOTS, np.float64)  # s0 s1 t0 t1, CHAINS each
    e = stack_empty(CHAINS, np.float64)
    for c in range(C):
        for r in range(4):
            z[r * C + c] = state[r, c]
        e[c] = energy[c]
    for i in range(tile.shape[0]):
        row = tile[i]
        for c in range(C):
            v = row[c]
            u = p0 * v + z[c]
            z[c] = p1 * v - p3 * u + z[C + c]
            z[C + c] = p2 * v - p4 * u
            y = h0 * u + z[2 * C + c]
            z[2 * C + c] = h1 * u - h3 * y + z[3 * C + c]
            z[3 * C + c] = h2 * u - h4 * y
            e[c] += y * y
    for c in range(C):
        for r in range(4):
            state[r, c] = z[r * C + c]
        energy[c] = e[c]


@kernel(inline=True)
def _frame_stats(x, first, m, corr, peak_bits):
    """Over ``x[first:first + m]``: raise the sample peaks (``peak_bits[lane]``: NaN-sticky
    maximum of |x| as bit patterns, see truepeak) and, for two lanes or more, add the
    correlation sums of lanes 0 and 1 (x, y, xx, yy, xy of the unweighted signal) to
    ``corr[0:5]``. Two passes: each vectorises on its own, fused they do not."""
    lanes = x.shape[1]
    rows = x[first : first + m]
    if lanes == 2:
        # Flat, from 0: a constant stride of 2 from the start, which LLVM vectorises
        # (measured: half the time of indexing rows, or the flat array from ``first``).
        flat = rows.reshape(-1)
        pa = peak_bits[0]
        pb = peak_bits[1]
        for t in range(m):
            pa = max(pa, float_bits(abs(float(flat[2 * t]))))
            pb = max(pb, float_bits(abs(float(flat[2 * t + 1]))))
        peak_bits[0] = pa
        peak_bits[1] = pb
        sx = 0.0
        sy = 0.0
        sxx = 0.0
        syy = 0.0
        sxy = 0.0
        for t in range(m):
            a = float(flat[2 * t])
            b = float(flat[2 * t + 1])
            sx += a
            sy += b
            sxx += a * a
            syy += b * b
            sxy += a * b
        corr[0] += sx
        corr[1] += sy
        corr[2] += sxx
        corr[3] += syy
        corr[4] += sxy
        return
    for lane in range(lanes):
        best = peak_bits[lane]
        for t in range(m):
            best = max(best, float_bits(abs(float(rows[t, lane]))))
        peak_bits[lane] = best
    if lanes > 2:
        for t in range(m):
            a = float(rows[t, 0])
            b = float(rows[t, 1])
            corr[0] += a
            corr[1] += b
            corr[2] += a * a
            corr[3] += b * b
            corr[4] += a * b


@kernel(inline=True)
def _gather(x, first, m, col, tile):
    """``tile[:m, col:col + lanes] = x[first:first + m]`` as float64."""
    lanes = x.shape[1]
    # unsigned indices: no wrap-around test per element (see _window_sum)
    src = np.uint64(first)
    dst = np.uint64(col)
    if lanes == 2:  # stereo without an inner loop per frame
        for t in range(np.uint64(m)):
            tile[t, dst] = x[src + t, 0]
            tile[t, dst + np.uint64(1)] = x[src + t, 1]
    else:
        for t in range(np.uint64(m)):
            for lane in range(np.uint64(lanes)):
                tile[t, dst + lane] = x[src + t, lane]


@kernel
def _kweight_group(
    x, origin, measure_from, stop, frames, coefs, state, energy, sums, peak_bits, end_state, tile
):
    """K-weight pieces of ``x`` in lockstep, lane ``l`` of piece ``p`` as chain ``p * lanes + l``
    of ``_kweight_chains``. Piece ``p`` runs from sub-block ``origin[p]`` to ``stop[p]``
    (exclusive) and adds the sums of squares of its sub-blocks from ``origin[p] +
    measure_from[p]`` on to ``energy[sub, lane]`` and their correlation sums to ``sums[sub,
    0:5]`` (see ``_gather``): the sub-blocks before are its settling run. ``peak_bits``: the
    sample peaks (see ``_gather``). ``state`` float64[4, CHAINS] holds the chains' states at
    the start (zeros in the columns of no piece); ``end_state`` receives them at each piece's
    stop. tile: float64[rows, CHAINS] work buffer (rows <= frames; a tile that stays in the
    L1 cache)."""
    lanes = x.shape[1]
    pieces = origin.shape[0]
    rows = tile.shape[0]
    acc = np.zeros(tile.shape[1])
    corr = np.zeros((pieces, RING_COLS - 1))
    steps = 0
    for p in range(pieces):
        steps = max(steps, stop[p] - origin[p])
    for k in range(steps):
        acc[:] = 0.0
        corr[:] = 0.0
        for p in range(pieces):
            j = origin[p] + k
            if j < stop[p]:
                _frame_stats(x, j * frames, frames, corr[p], peak_bits)
        for t0 in range(0, frames, rows):
            m = min(rows, frames - t0)
            for p in range(pieces):
                j = origin[p] + k
                if j < stop[p]:
                    _gather(x, j * frames + t0, m, p * lanes, tile)
                    # the same rows of the next sub-block, for the next step: spread over
                    # the tiles, the hint keeps up with the 16 streams of the pieces where
                    # one hint per sub-block ahead did not (measured: 3-5 % less time)
                    prefetch_rows(x, (j + 1) * frames + t0, (j + 1) * frames + t0 + m)
                else:  # this piece has stopped; its column only has to stay finite
                    tile[:m, p * lanes : (p + 1) * lanes] = 0.0
            _kweight_chains(tile[:m], coefs, state, acc)
        for r in range(4):
            for c in range(tile.shape[1]):
                state[r, c] = _flushed(state[r, c])
        for p in range(pieces):
            j = origin[p] + k
            col = p * lanes
            if k >= measure_from[p] and j < stop[p]:
                for lane in range(lanes):
                    energy[j, lane] += acc[col + lane]
                if lanes >= 2:
                    for c in range(RING_COLS - 1):
                        sums[j, c] += corr[p, c]
            if j + 1 == stop[p]:
                end_state[:, col : col + lanes] = state[:, col : col + lanes]


def _piece_plan(subs: int, settle_subs: int, groups: int, per_group: int) -> list[tuple]:
    """Split ``subs`` sub-blocks into ``groups`` x ``per_group`` pieces for ``_kweight_group``:
    per group the arrays (origin, measure_from, stop). The first piece starts at sub-block 0
    from the meter's state and measures from its first sub-block; every other piece settles
    on the ``settle_subs`` before its share. All pieces run the same number of steps."""
    count = groups * per_group
    # the first piece measures `steps` sub-blocks, the others `steps - settle_subs`
    steps = -(-(subs + (count - 1) * settle_subs) // count)
    plan = []
    start = 0
    for _ in range(groups):
        origin = np.zeros(per_group, dtype=np.int64)
        measure_from = np.zeros(per_group, dtype=np.int64)
        stop = np.zeros(per_group, dtype=np.int64)
        for p in range(per_group):
            settle = 0 if start == 0 else settle_subs
            origin[p] = start - settle
            measure_from[p] = settle
            stop[p] = min(subs, origin[p] + steps)
            start = max(start, int(stop[p]))
        plan.append((origin, measure_from, stop))
    return plan


@kernel
def loudness_reset(
    kcoefs,
    kstate,
    scratch,
    weights,
    config,
    counters,
    sub_acc,
    ring,
    hist_fine,
    hist_coarse,
    tp_coefs,
    tp_history,
    tp_peak,
    sample_peak,
    meters,
):
    """Start a new measurement (same arguments as ``loudness_process`` without ``x``)."""
    kstate[:] = 0.0
    counters[:] = 0
    sub_acc[:] = 0.0
    ring[:] = 0.0
    hist_fine[:] = 0.0
    hist_coarse[:] = 0.0
    tp_history[:] = 0.0
    tp_peak[:] = 0.0
    sample_peak[:] = 0.0
    meters[:] = 0.0
    for j in (MOMENTARY, SHORTTERM, INTEGRATED, MOMENTARY_MAX, SHORTTERM_MAX):
        meters[j] = -math.inf
    for j in (LRA_LOW, LRA_HIGH, INTEGRATED_THRESHOLD, LRA_THRESHOLD):
        meters[j] = -math.inf
    meters[CORRELATION] = math.nan
    meters[PROGRAMME_CORRELATION] = math.nan


# =============================================================================================
# Python side: state allocation, processor class, offline measurement
# =============================================================================================


class LoudnessState(NamedTuple):
    """Preallocated meter state; pass as ``loudness_process(x, *state)``.

    Shapes (lanes = channels): kcoefs [2, 5, lanes], kstate [2, 2, lanes],
    scratch [chunk, lanes] (the true-peak scan's work buffer), weights [lanes],
    config int64[CFG_SIZE], counters int64[CNT_SIZE],
    sub_acc [lanes + 5], ring [6, 30 * subs_per_100ms], hist_fine [2, 10000, 2],
    hist_coarse [2, 100, 2], tp_coefs [factor, taps], tp_history [taps - 1, lanes],
    tp_peak [lanes], sample_peak [lanes], meters [METERS_SIZE]; all float64 unless noted.
    """

    kcoefs: np.ndarray
    kstate: np.ndarray
    scratch: np.ndarray
    weights: np.ndarray
    config: np.ndarray
    counters: np.ndarray
    sub_acc: np.ndarray
    ring: np.ndarray
    hist_fine: np.ndarray
    hist_coarse: np.ndarray
    tp_coefs: np.ndarray
    tp_history: np.ndarray
    tp_peak: np.ndarray
    sample_peak: np.ndarray
    meters: np.ndarray


def _check_samplerate(samplerate: float) -> None:
    if not isinstance(samplerate, int | float | np.integer | np.floating) or not (
        MIN_SAMPLERATE <= float(samplerate) <= MAX_SAMPLERATE
    ):
        raise ValueError(
            f"samplerate must be a number from {MIN_SAMPLERATE:.0f} to {MAX_SAMPLERATE:.0f} Hz,"
            f" got {samplerate!r}"
        )


def channel_weights(channels: int, layout: str | None = None, weights=None) -> np.ndarray:
    """BS.1770-4 channel weights G_i (float64[channels]) for a layout or an explicit override.

    layout: "mono", "stereo", "5.0" (L R C Ls Rs) or "5.1" (L R C LFE Ls Rs); by default
    chosen from the channel count (1, 2, 5, 6). ``weights`` (one finite value >= 0 per
    channel, at least one > 0) overrides the layout.
    """
    if isinstance(channels, bool) or not isinstance(channels, int | np.integer) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != (channels,):
            raise ValueError(f"weights needs one entry per channel ({channels}), got {w.size}")
        if not np.all(np.isfinite(w)) or np.any(w < 0.0) or not np.any(w > 0.0):
            raise ValueError("weights must be finite, >= 0, and at least one > 0")
        return w.copy()
    if layout is None:
        if channels not in DEFAULT_LAYOUT:
            raise ValueError(f"no default layout for {channels} channels: give layout= or weights=")
        layout = DEFAULT_LAYOUT[channels]
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; one of {sorted(LAYOUTS)}")
    w = np.array(LAYOUTS[layout], dtype=np.float64)
    if w.size != channels:
        raise ValueError(f"layout {layout!r} has {w.size} channels, got {channels}")
    return w


def make_state(
    samplerate: float,
    weights: np.ndarray,
    true_peak: bool = True,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
) -> LoudnessState:
    """Allocate and reset the state of a meter for ``len(weights)`` channels at ``samplerate``.

    chunk_frames: rows of ``scratch``, the work buffer of the true-peak scan (tiles of about
    ``chunk_frames * lanes / 2`` frames); blocks of any size are accepted and the result does
    not depend on it.
    """
    _check_samplerate(samplerate)
    weights = np.ascontiguousarray(weights, dtype=np.float64).reshape(-1)
    lanes = weights.size
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be >= 1")
    coefs = np.zeros((2, 5))
    design_kweighting(float(samplerate), coefs)
    kcoefs = np.ascontiguousarray(np.repeat(coefs[:, :, None], lanes, axis=2))
    sub_frames, per_hop = block_geometry(float(samplerate))
    config = np.zeros(CFG_SIZE, dtype=np.int64)
    config[CFG_SUB_FRAMES] = sub_frames
    config[CFG_SUBS_PER_HOP] = per_hop
    config[CFG_MOMENTARY_SUBS] = 4 * per_hop  # 400 ms
    config[CFG_SHORTTERM_SUBS] = 30 * per_hop  # 3 s
    config[CFG_TRUE_PEAK] = 1 if true_peak else 0
    factor = oversampling_factor(float(samplerate))
    tp_coefs = np.ascontiguousarray(design_interpolator(factor), dtype=np.float64)
    taps = tp_coefs.shape[1]
    state = LoudnessState(
        kcoefs=kcoefs,
        kstate=np.zeros((2, 2, lanes)),
        scratch=np.zeros((int(chunk_frames), lanes)),
        weights=weights.copy(),
        config=config,
        counters=np.zeros(CNT_SIZE, dtype=np.int64),
        sub_acc=np.zeros(lanes + RING_COLS - 1),
        ring=np.zeros((RING_COLS, 30 * per_hop)),
        hist_fine=np.zeros((2, HIST_BINS, 2)),
        hist_coarse=np.zeros((2, HIST_COARSE_BINS, 2)),
        tp_coefs=tp_coefs,
        tp_history=np.zeros((max(taps - 1, 0), lanes)),
        tp_peak=np.zeros(lanes),
        sample_peak=np.zeros(lanes),
        meters=np.zeros(METERS_SIZE),
    )
    loudness_reset(*state)
    return state


def _db(linear: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(linear)


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class LoudnessMeter:
    """Streaming BS.1770-4 / EBU R 128 meter for offline use and tests.

    >>> meter = LoudnessMeter(48000, channels=2)
    >>> meter.process(block)  # (n,) or (n, channels), float32/float64; any n, any split
    >>> meter.integrated_lufs, meter.loudness_range_lu, meter.true_peak_dbtp

    Readings follow the conventions of the module docstring: -inf LUFS where there is no
    energy (or no full window yet), ``None`` for an undefined correlation.
    """

    def __init__(
        self,
        samplerate: float,
        channels: int = 2,
        layout: str | None = None,
        weights=None,
        true_peak: bool = True,
    ):
        self.weights = channel_weights(channels, layout, weights)
        self.samplerate = float(samplerate)
        self.channels = int(channels)
        self.state = make_state(self.samplerate, self.weights, true_peak=true_peak)
        self._settle_frames = settle_frames(self.state.kcoefs)

    def reset(self) -> None:
        """Forget everything measured so far (filters, windows, gates, maxima, peaks)."""
        loudness_reset(*self.state)

    def process(self, x: np.ndarray, workers: int = 1) -> np.ndarray:
        """Meter ``x`` ((n,) or (n, channels)); returns ``x`` unchanged (the meter is a tap).

        workers > 1 spreads a long block (>= 1 s) over that many threads (the kernels release
        the GIL); the readings equal those of one thread to rounding.
        """
        if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        arr = np.asarray(x)
        if arr.ndim == 1:
            frames = arr.reshape(-1, 1)
        elif arr.ndim == 2:
            frames = arr
        else:
            raise ValueError(f"audio must be (n,) or (n, channels), got shape {arr.shape}")
        if frames.shape[1] != self.channels:
            raise ValueError(f"meter has {self.channels} channels, audio has {frames.shape[1]}")
        if frames.dtype not in (np.float32, np.float64):
            frames = frames.astype(np.float64)
        frames = np.ascontiguousarray(frames)
        if workers > 1:
            self._process_parallel(frames, int(workers))
        elif frames.shape[0]:
            loudness_process(frames, *self.state)
        return x

    def _process_parallel(self, frames: np.ndarray, workers: int) -> None:
        """``loudness_process(frames, *state)`` with whole sub-blocks spread over ``workers``
        threads (see "whole-signal path" above); the same readings to rounding."""
        st = self.state
        sub = int(st.config[CFG_SUB_FRAMES])
        head = (sub - int(st.counters[CNT_FRAMES_IN_SUB])) % sub
        subs = (frames.shape[0] - head) // sub
        hist = st.tp_history.shape[0]
        if subs * sub < max(_PARALLEL_MIN_S * self.samplerate, hist):
            loudness_process(frames, *st)
            return
        if head:  # finish the sub-block that an earlier call started
            loudness_process(frames[:head], *st)
        body = frames[head : head + subs * sub]
        lanes = self.channels
        # per sub-block: each lane's sum of K-weighted squares, then the correlation sums
        acc = np.zeros((subs, lanes + RING_COLS - 1))
        energy = acc[:, :lanes]
        sums = acc[:, lanes:]
        start_kstate = st.kstate.copy()
        start_peak = st.sample_peak.copy()
        # K-weighting: `groups` threads, each with up to CHAINS chains in SIMD lanes
        settle_subs = -(-self._settle_frames // sub)
        most = max(1, subs // (_PIECE_PER_SETTLE * settle_subs))
        groups = min(workers, most)
        per_group = max(1, min(CHAINS // lanes, most // groups))
        coefs = np.concatenate([st.kcoefs[0, :, 0], st.kcoefs[1, :, 0]])  # same on every lane
        chains = per_group * lanes
        end_state = np.zeros((4, chains * groups))
        peak_bits = np.zeros((groups, lanes), dtype=np.int64)
        jobs = []
        for g, (origin, measure_from, stop) in enumerate(
            _piece_plan(subs, settle_subs, groups, per_group)
        ):
            state = np.zeros((4, CHAINS))
            if g == 0:  # the first piece goes on from the meter's state
                state[:, :lanes] = start_kstate.reshape(4, lanes)
            jobs.append(
                partial(
                    _kweight_group,
                    body,
                    origin,
                    measure_from,
                    stop,
                    sub,
                    coefs,
                    state,
                    energy,
                    sums,
                    peak_bits[g],
                    end_state[:, g * chains : (g + 1) * chains],
                    np.zeros((min(sub, _TILE_ROWS), CHAINS)),
                )
            )
        tp_peaks = []
        if st.config[CFG_TRUE_PEAK]:
            # Time chunks of all lanes (an FIR: a chunk needs the taps - 1 frames before it).
            step = max(round(self.samplerate), -(-len(body) // (2 * workers)))
            for a in range(0, len(body), step):
                if a == 0:
                    history = st.tp_history.copy()
                else:
                    history = np.array(body[a - hist : a], np.float64)
                peak = np.zeros(lanes)
                tp_peaks.append(peak)
                scratch = make_truepeak_scratch(st.tp_coefs, lanes)
                jobs.append(
                    partial(truepeak_bank, body[a : a + step], st.tp_coefs, history, peak, scratch)
                )
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()
        if np.all(np.isfinite(energy)):
            st.kstate[:] = end_state[:, -lanes:].reshape(st.kstate.shape)
            st.sample_peak[:] = np.maximum(start_peak, peak_bits.view(np.float64).max(axis=0))
        else:
            # A NaN or Inf in the input: redo the K-weighting in one piece so that the filter
            # stays poisoned to the end of this call exactly as in the streaming path.
            st.kstate[:] = start_kstate
            st.sample_peak[:] = start_peak
            acc[:] = 0.0
            _kweight_piece(
                body,
                0,
                len(body),
                0,
                sub,
                st.kcoefs,
                st.kstate,
                energy,
                st.sample_peak,
                sums,
                np.zeros(2 * lanes + RING_COLS - 1),
            )
        for peak in tp_peaks:
            # NaN-sticky maximum, as in truepeak_bank.
            nan = np.isnan(peak) | np.isnan(st.tp_peak)
            st.tp_peak[:] = np.where(nan, np.nan, np.maximum(st.tp_peak, peak))
        if st.config[CFG_TRUE_PEAK] and hist:
            st.tp_history[:] = body[-hist:]
        # the meter's sub_acc is empty here: the head above closed any sub-block begun earlier
        _finish_subs(
            acc,
            st.weights,
            st.config,
            st.counters,
            st.ring,
            st.hist_fine,
            st.hist_coarse,
            st.meters,
            False,
        )
        _clear_nonfinite(st.kstate, st.counters)
        if head + subs * sub < frames.shape[0]:
            loudness_process(frames[head + subs * sub :], *st)

    # --- readings ---------------------------------------------------------------------------
    def _meter(self, index: int) -> float:
        return float(self.state.meters[index])

    @property
    def momentary_lufs(self) -> float:
        """Loudness of the last 400 ms (updated every 100 ms)."""
        return self._meter(MOMENTARY)

    @property
    def shortterm_lufs(self) -> float:
        """Loudness of the last 3 s (updated every 100 ms)."""
        return self._meter(SHORTTERM)

    @property
    def integrated_lufs(self) -> float:
        """Gated programme loudness since the last reset (BS.1770-4)."""
        return self._meter(INTEGRATED)

    @property
    def loudness_range_lu(self) -> float:
        """EBU Tech 3342 loudness range since the last reset."""
        return self._meter(LRA)

    @property
    def momentary_max_lufs(self) -> float:
        """Highest 400 ms loudness (10 ms time resolution)."""
        return self._meter(MOMENTARY_MAX)

    @property
    def shortterm_max_lufs(self) -> float:
        """Highest 3 s loudness (10 ms time resolution)."""
        return self._meter(SHORTTERM_MAX)

    @property
    def relative_gate_lufs(self) -> float:
        """The relative gate of the integrated loudness (-inf before any block)."""
        return self._meter(INTEGRATED_THRESHOLD)

    @property
    def loudness_range_low_lufs(self) -> float:
        return self._meter(LRA_LOW)

    @property
    def loudness_range_high_lufs(self) -> float:
        return self._meter(LRA_HIGH)

    @property
    def true_peak_dbtp_per_channel(self) -> np.ndarray:
        return _db(self.state.tp_peak.copy())

    @property
    def true_peak_dbtp(self) -> float:
        """Highest true peak over all channels (BS.1770-4 Annex 2), dBTP."""
        return float(np.max(self.true_peak_dbtp_per_channel))

    @property
    def sample_peak_dbfs_per_channel(self) -> np.ndarray:
        return _db(self.state.sample_peak.copy())

    @property
    def sample_peak_dbfs(self) -> float:
        return float(np.max(self.sample_peak_dbfs_per_channel))

    @property
    def correlation(self) -> float | None:
        """Pearson correlation of L and R over the last 400 ms; None where undefined."""
        return _none_if_nan(self._meter(CORRELATION))

    @property
    def programme_correlation(self) -> float | None:
        """Pearson correlation of L and R since the last reset; None where undefined."""
        return _none_if_nan(self._meter(PROGRAMME_CORRELATION))

    @property
    def nonfinite_events(self) -> int:
        """How many process calls ended with a NaN/Inf filter state (then cleared)."""
        return int(self.state.counters[CNT_NONFINITE])

    def readings(self) -> dict:
        """Every reading as a plain dict (lists for per-channel values)."""
        return {
            "samplerate": self.samplerate,
            "channels": self.channels,
            "weights": self.weights.tolist(),
            "integrated_lufs": self.integrated_lufs,
            "loudness_range_lu": self.loudness_range_lu,
            "loudness_range_low_lufs": self.loudness_range_low_lufs,
            "loudness_range_high_lufs": self.loudness_range_high_lufs,
            "relative_gate_lufs": self.relative_gate_lufs,
            "momentary_lufs": self.momentary_lufs,
            "shortterm_lufs": self.shortterm_lufs,
            "momentary_max_lufs": self.momentary_max_lufs,
            "shortterm_max_lufs": self.shortterm_max_lufs,
            "true_peak_dbtp": self.true_peak_dbtp,
            "true_peak_dbtp_per_channel": self.true_peak_dbtp_per_channel.tolist(),
            "sample_peak_dbfs": self.sample_peak_dbfs,
            "sample_peak_dbfs_per_channel": self.sample_peak_dbfs_per_channel.tolist(),
            "correlation": self.programme_correlation,
        }


def measure(
    x: np.ndarray,
    samplerate: float,
    layout: str | None = None,
    weights=None,
    true_peak: bool = True,
    workers: int | None = None,
) -> dict:
    """Analyse a whole signal ((n,) or (n, channels)) and return ``LoudnessMeter.readings()``.

    No copy for C-contiguous float32/float64 input; "correlation" is the programme
    correlation and "duration_s" the signal length. workers: threads for a long signal
    (default: the number of CPUs; 1 runs the streaming kernel in the calling thread).
    true_peak=False skips the 4x oversampled true peak, the most expensive part, when only
    the loudness figures are wanted ("true_peak_dbtp" is then -inf).
    """
    arr = np.asarray(x)
    channels = 1 if arr.ndim == 1 else arr.shape[1] if arr.ndim == 2 else -1
    if channels < 1:
        raise ValueError(f"audio must be (n,) or (n, channels), got shape {arr.shape}")
    meter = LoudnessMeter(samplerate, channels, layout, weights, true_peak=true_peak)
    meter.process(arr, workers=os.cpu_count() or 1 if workers is None else workers)
    result = meter.readings()
    result["duration_s"] = arr.shape[0] / float(samplerate)
    return result
