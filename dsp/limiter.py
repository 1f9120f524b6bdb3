"""Look-ahead limiters: the master true-peak limiter and the per-output safety limiter.

Both share one gain computer (after the classic look-ahead brickwall design: a sliding
minimum "hold" of the required gain over the look-ahead window, an instant-attack /
exponential-release stage, and a smoothing FIR with non-negative weights whose length equals
the look-ahead, here two cascaded moving averages, i.e. a piecewise-quadratic S-shaped
attack). Because every value the smoother averages is a minimum over a window that contains
the peak, and a mean of values that are each <= r is <= r, the gain applied to a peak sample
is never above the gain that peak needs; the look-ahead delay makes the ramp finish in time.
References: the look-ahead min-hold + moving-average structure is described by
G. Sanfilippo, "Minimum-hold and moving-average look-ahead limiter"; D. Giannoulis,
M. Massberg, J. D. Reiss, "Digital dynamic range compressor design: a tutorial and
analysis", JAES 60(6), 2012 (attack/release smoothing); cascaded box filters for a smooth
ramp as in Signalsmith Audio's limiter write-up ("Designing a straightforward limiter").

Master true-peak limiter (``limiter_bank``, ``TruePeakLimiter``): stereo-linked (one gain for
all lanes). For each input interval [m, m + 1) the detector takes the largest of: the original
sample; an accurate 8x Kaiser-windowed sinc (32 input samples of span, beta 6: flat to
±0.01 dB up to 0.42 fs) at m + p/8; a short 8x Kaiser sinc (20 samples, beta 5, the classic
resampler design) at the same points; and the BS.1770-4 Annex 2 4x filter at m + (2p + 1)/8.
The 8x grid contains the points of any 4x or 8x measurement aligned to the samples. Several
interpolators are needed because the true peak of content above ~0.44 fs (white noise,
abrupt starts and stops, aliased square waves) is not well defined: practical meters differ
there by 0.1-0.2 dB and ideal (FFT) interpolation reads up to ~1 dB above all of them; the
Annex 2 filter also reads up to +0.22 dB high around 0.25 fs (see truepeak.py). The gain a
point needs is held over ``GUARD_SAMPLES`` on each side so that the gain is at most that
value over the interpolation kernels' main support; the target is the ceiling lowered by
``SAFETY_MARGIN_DB``. Measured in tests/dsp/test_limiter.py.

How the detector is evaluated (same points, same maximum, to rounding): the block is cut into
tiles of ``TILE_FRAMES``; a tile's inputs go into the delay line first, then the detector runs
over all of the tile's frames at once (one lane at a time, the frame loop innermost so that it
vectorises), then the gain computer runs frame by frame. All three filters are symmetric
(phase ``8 - p`` is phase ``p`` reversed; Annex 2 phases 3 and 2 are 0 and 1 reversed), so each
pair of phases is evaluated folded: with ``u = x[k] + x[N-1-k]`` and ``v = x[k] - x[N-1-k]``,
``S = sum a u`` and ``D = sum b v`` (``a, b`` the half sum and difference of the mirrored
taps) give the two points ``S + D`` and ``S - D``, and ``max(|S + D|, |S - D|) = |S| + |D|``:
half the multiply-adds. Two exact shortcuts skip work that cannot change the result:
* a point is a weighted sum of at most 33 samples, so it is at most ``max |x|`` over them
  times the largest sum of |weights| of any phase (``_PEAK_BOUND``, 2.48 for the long sinc).
  Where that bound is at or below the target over a run of ``SKIP_FRAMES`` frames, no point
  there can need gain reduction and the detector is not evaluated (its reading would give a
  needed gain of exactly 1);
* while the gain computer is at rest (gain exactly 1, nothing in its windows) and the frames
  need no reduction, its state is advanced in one step and the output is the delayed input.

Output safety limiter (``safety_bank``, ``SafetyLimiter``): per lane, sample peak, short
look-ahead, fast release, then a hard clamp at the threshold as the final guarantee.
Non-finite input samples (NaN, ±Inf) are counted, replaced by silence, and force the gain
to zero around them (it ramps down over the look-ahead and back up with the release), so a
blown-up upstream filter gives silence instead of a full-scale buzz.
"""

from __future__ import annotations

import math

import numpy as np

from studiod.dsp._jit import kernel
from studiod.dsp.filters import as_frames, from_frames
from studiod.dsp.truepeak import design_interpolator, design_sinc_interpolator

# --- master true-peak limiter constants -------------------------------------------------
DETECT_FACTOR = 8
DETECT_SPAN = 32  # input samples spanned by the 8x interpolator; its delay is DETECT_SPAN / 2
DETECT_KAISER_BETA = 6.0
DETECT_DELAY = DETECT_SPAN // 2
ANNEX2_DELAY = 6  # the Annex 2 points of interval m are complete at sample m + 6
# A second, short windowed sinc (20 input samples, Kaiser beta 5): the classic resampler
# design (scipy.signal.resample_poly's default, many DAW meters), whose points differ from the
# long filter's by up to ~0.2 dB on broadband content above 0.44 fs.
SHORT_SPAN = 20
SHORT_KAISER_BETA = 5.0
SHORT_DELAY = SHORT_SPAN // 2
# Samples on each side of a peak over which the gain is held at (at most) its needed value.
GUARD_SAMPLES = 16
# Target = ceiling lowered by this margin. Worst overshoot measured with no margin on the
# test material of tests/dsp/test_limiter.py (white/pink noise +20 dB, near-Nyquist sines,
# bursts, EBU files): +0.006 dB against scipy resample_poly 4x/8x (its firwin prototype is
# DC-normalised, 0.006 dB above unity at some phases); 0.05 dB also covers 16x Kaiser and
# Hann-window resampling references (see the report in the module docstring).
SAFETY_MARGIN_DB = 0.05
# Release: when the released gain is within this many dB of the hold it snaps to it, so the
# gain becomes exactly 1.0 after a release (a 1e-6 dB step is far below audibility).
RELEASE_SNAP_DB = 1e-6
# Gain in dB below which the gain is exactly 0 (silence; the safety limiter's mute).
MUTE_DB = -140.0
_LN10_OVER_20 = math.log(10.0) / 20.0  # 10 ** (db / 20) == exp(db * _LN10_OVER_20)

# Frames per detector tile: the detector's frame loop runs over a tile at once. 256 frames
# of two lanes (4 kB per lane) stay in the L1 cache; longer tiles measured no faster.
TILE_FRAMES = 256
# Frames per decision of the bound test that skips the detector (see the module docstring):
# short enough to catch the quiet gaps of programme material, long enough that the test's
# max |x| scan (SKIP_FRAMES + DETECT_SPAN samples per lane) stays cheap.
SKIP_FRAMES = 32


def _fold(coefs: np.ndarray, span: int, phases: tuple[int, ...], mirror_sum: int):
    """Half sums and half differences ``a, b: float64[len(phases), span // 2]`` of the
    mirrored taps ``coefs[p, k]`` and ``coefs[p, span - 1 - k]`` of each phase ``p``.

    The folded form evaluates phase ``p`` together with phase ``mirror_sum - p`` over the
    first ``span`` taps; this checks that the latter is the former reversed, bit for bit,
    and that both are zero beyond ``span`` taps.
    """
    k = np.arange(span // 2)
    a = np.zeros((len(phases), span // 2))
    b = np.zeros((len(phases), span // 2))
    for row, p in enumerate(phases):
        mirror = mirror_sum - p
        if not (
            np.array_equal(coefs[mirror, span - 1 - np.arange(span)], coefs[p, :span])
            and not np.any(coefs[p, span:])
            and not np.any(coefs[mirror, span:])
        ):
            raise RuntimeError(f"interpolator phase {p} is not the mirror of phase {mirror}")
        a[row] = 0.5 * (coefs[p, k] + coefs[p, span - 1 - k])
        b[row] = 0.5 * (coefs[p, k] - coefs[p, span - 1 - k])
    return a, b


# Global arrays are compile-time constants for numba: the detector tables are baked in.
_DETECT = design_sinc_interpolator(DETECT_FACTOR, DETECT_SPAN, DETECT_KAISER_BETA)
_SHORT = design_sinc_interpolator(DETECT_FACTOR, SHORT_SPAN, SHORT_KAISER_BETA)
_ANNEX2 = design_interpolator(4)
# Folded forms: the 8x sincs' phase pairs (1, 7), (2, 6), (3, 5) over 32 and 20 taps and the
# self-symmetric phase 4 (its first half; the last tap of phases 1-7 is 0); Annex 2's pairs
# (0, 3) and (1, 2) over 12 taps.
_DET_A, _DET_B = _fold(_DETECT, DETECT_SPAN, (1, 2, 3), DETECT_FACTOR)
_DET_MID = _fold(_DETECT, DETECT_SPAN, (4,), DETECT_FACTOR)[0][0]
_SHORT_A, _SHORT_B = _fold(_SHORT, SHORT_SPAN, (1, 2, 3), DETECT_FACTOR)
_SHORT_MID = _fold(_SHORT, SHORT_SPAN, (4,), DETECT_FACTOR)[0][0]
_ANN_A, _ANN_B = _fold(_ANNEX2, 12, (0, 1), 3)
# Largest sum of |weights| of any point the detector evaluates (the original sample's is 1):
# |point| <= _PEAK_BOUND * max |x| over the filter's support. The factor 1 + 1e-9 covers the
# rounding of the evaluated sums (at most ~40 operations, each within 1.1e-16 relative).
_PEAK_BOUND = max(
    1.0,
    float(np.abs(_DETECT).sum(axis=1).max()),
    float(np.abs(_SHORT).sum(axis=1).max()),
    float(np.abs(_ANNEX2).sum(axis=1).max()),
) * (1.0 + 1e-9)

# design_limiter output layout, float64[LIMITER_COEFS]
C_TARGET = 0  # linear target of every detected point (ceiling minus safety margin)
C_CEILING = 1  # linear ceiling as given
C_RELEASE = 2  # release smoothing coefficient per sample (dB domain)
C_LOOKAHEAD = 3  # look-ahead (attack ramp) length in samples
C_DRIVE = 4  # linear input gain
C_LATENCY = 5  # total latency in samples
LIMITER_COEFS = 8

# Master misc state, float64[MASTER_ENV]
E_WRITE = 0  # ring write position
E_COUNT = 1  # samples processed (interval index of the newest sample)
E_NONFINITE = 2  # non-finite input samples replaced by 0 so far
E_LOOKAHEAD = 3  # look-ahead the state was made for
E_PEAKS = 16  # work area: the detector's reading of each frame of the current tile
MASTER_ENV = E_PEAKS + TILE_FRAMES

# Gain computer state layout, float64[GAIN_HEADER + L1 + L2 + 2 * cap]
G_HEAD = 0  # ring index of the deque's oldest entry
G_COUNT = 1  # entries in the deque
G_REL_DB = 2
G_SUM1 = 3
G_NZ1 = 4
G_POS1 = 5
G_SUM2 = 6
G_NZ2 = 7
G_POS2 = 8
G_L1 = 9
G_L2 = 10
G_HOLD = 11
G_CAP = 12
G_S = 13
G_MIN = 14  # the last hold minimum (linear) ...
G_MIN_DB = 15  # ... and its value in dB, so that log10 runs only when the minimum changes
GAIN_HEADER = 16

# Safety limiter coefficient rows, float64[SAFETY_COEFS, lanes]
S_THRESHOLD = 0  # linear threshold (sample peak)
S_RELEASE = 1  # release coefficient per sample (dB domain)
SAFETY_COEFS = 4
SAFETY_MAX_LOOKAHEAD_MS = 1.0


def _gain_size(lookahead: int, guard: int) -> int:
    l1 = (lookahead + 1) // 2
    l2 = lookahead + 1 - l1
    cap = lookahead + 2 * guard + 1
    return GAIN_HEADER + l1 + l2 + 2 * cap


def _init_gain(gain: np.ndarray, lookahead: int, guard: int) -> None:
    """Zero a gain computer for ``lookahead`` samples and a hold of lookahead + 2 guard."""
    gain[:] = 0.0
    l1 = (lookahead + 1) // 2
    gain[G_L1] = l1
    gain[G_L2] = lookahead + 1 - l1
    gain[G_HOLD] = lookahead + 2 * guard
    gain[G_CAP] = lookahead + 2 * guard + 1
    gain[G_MIN] = 1.0
    gain[G_MIN_DB] = 0.0


@kernel
def _box(g, base, length, pos_at, sum_at, nz_at, d):
    """One step of a moving average of d = 1 - gain; exact 0 when the window is all 0."""
    pos = int(g[pos_at])
    old = g[base + pos]
    g[base + pos] = d
    pos += 1
    if pos == length:
        pos = 0
    g[pos_at] = pos
    total = g[sum_at] + d - old
    nz = g[nz_at] + (1.0 if d != 0.0 else 0.0) - (1.0 if old != 0.0 else 0.0)
    if nz <= 0.0:
        # Running sums drift by rounding; an all-zero window is exactly zero again.
        total = 0.0
        nz = 0.0
    g[sum_at] = total
    g[nz_at] = nz
    return total / length


@kernel
def _gain_step(g, r, release):
    """Feed the needed gain r (linear, 0..1) of the newest interval; return the gain for
    the interval L - 1 + guard intervals earlier (L = look-ahead)."""
    cap = int(g[G_CAP])
    hold = g[G_HOLD]
    s = g[G_S]
    vbase = GAIN_HEADER + int(g[G_L1]) + int(g[G_L2])
    pbase = vbase + cap
    # Sliding minimum over the last `hold` intervals: a monotonic deque in a ring of `cap`
    # entries (values and their step numbers; each value pushed and popped once). Ring
    # indices wrap by comparison: an integer division per access cost more than the rest.
    head = int(g[G_HEAD])
    count = int(g[G_COUNT])
    back = head + count - 1
    if back >= cap:
        back -= cap
    while count > 0 and g[vbase + back] >= r:
        count -= 1
        back -= 1
        if back < 0:
            back += cap
    back += 1
    if back == cap:
        back = 0
    g[vbase + back] = r
    g[pbase + back] = s
    count += 1
    # The steps in the deque are distinct and increase by one per step: at most one expires.
    if g[pbase + head] <= s - hold:
        head += 1
        if head == cap:
            head = 0
        count -= 1
    hmin = g[vbase + head]
    g[G_HEAD] = head
    g[G_COUNT] = count
    g[G_S] = s + 1.0
    # Instant attack, exponential release in dB; the released value never exceeds hmin.
    if hmin != g[G_MIN]:
        hmin_db = 0.0
        if hmin < 1.0:
            hmin_db = 20.0 * math.log10(hmin) if hmin > 0.0 else MUTE_DB - 10.0
        g[G_MIN] = hmin
        g[G_MIN_DB] = hmin_db
    hmin_db = g[G_MIN_DB]
    rel_db = g[G_REL_DB]
    if hmin_db <= rel_db:
        rel_db = hmin_db
        held = hmin
    else:
        rel_db += release * (hmin_db - rel_db)
        if hmin_db - rel_db < RELEASE_SNAP_DB:
            rel_db = hmin_db
            held = hmin
        elif rel_db <= MUTE_DB:
            held = 0.0
        else:
            held = min(math.exp(rel_db * _LN10_OVER_20), hmin)
    g[G_REL_DB] = rel_db
    # Two cascaded moving averages (lengths L1 + L2 - 1 = L): an S-shaped attack ramp.
    l1 = int(g[G_L1])
    l2 = int(g[G_L2])
    d1 = _box(g, GAIN_HEADER, l1, G_POS1, G_SUM1, G_NZ1, 1.0 - held)
    d2 = _box(g, GAIN_HEADER + l1, l2, G_POS2, G_SUM2, G_NZ2, d1)
    gain = 1.0 - d2
    if gain > 1.0:
        gain = 1.0
    elif gain < 0.0:
        gain = 0.0
    return gain


@kernel
def _gain_at_rest(g):
    """True when the gain computer is at rest: every needed gain in its hold window is 1
    (the deque's minimum; expired entries are popped after each step), the release is at
    0 dB and both moving averages hold only zeros. Then a step with r = 1 returns exactly 1
    and leaves it at rest."""
    if g[G_COUNT] == 0.0:
        return False
    vbase = GAIN_HEADER + int(g[G_L1]) + int(g[G_L2])
    return (
        g[vbase + int(g[G_HEAD])] >= 1.0
        and g[G_REL_DB] == 0.0
        and g[G_NZ1] == 0.0
        and g[G_NZ2] == 0.0
    )


@kernel
def _gain_skip(g, m):
    """Advance a gain computer at rest by m >= 1 steps of r = 1 (each returning 1.0): the
    state ``_gain_step`` would leave, in O(1)."""
    cap = int(g[G_CAP])
    vbase = GAIN_HEADER + int(g[G_L1]) + int(g[G_L2])
    s = g[G_S]
    # Each push of r = 1 pops every entry >= 1: one entry remains, the newest.
    head = int(g[G_HEAD])
    g[vbase + head] = 1.0
    g[vbase + cap + head] = s + m - 1
    g[G_COUNT] = 1.0
    g[G_S] = s + m
    # The moving averages' windows stay all zero; only their positions move.
    g[G_POS1] = (int(g[G_POS1]) + m) % int(g[G_L1])
    g[G_POS2] = (int(g[G_POS2]) + m) % int(g[G_L2])


@kernel
def _gain_run(g, a, m, threshold, release):
    """The gain computer over m intervals: a[i] (>= 0; the reading to keep at or below
    ``threshold``, inf for "mute") becomes the gain for interval i, exactly as m calls of
    ``_gain_step`` with r = threshold / a[i] (1 when a[i] <= threshold) would give; returns
    the smallest gain. The header lives in local variables for the run (in ``g`` it would be
    reloaded after every store to the rings, which may alias it), and runs of unity gain at
    rest take one ``_gain_skip`` each."""
    cap = int(g[G_CAP])
    hold = g[G_HOLD]
    l1 = int(g[G_L1])
    l2 = int(g[G_L2])
    base2 = GAIN_HEADER + l1
    vbase = base2 + l2
    pbase = vbase + cap
    s = g[G_S]
    head = int(g[G_HEAD])
    count = int(g[G_COUNT])
    rel_db = g[G_REL_DB]
    last_min = g[G_MIN]
    last_min_db = g[G_MIN_DB]
    sum1 = g[G_SUM1]
    nz1 = g[G_NZ1]
    pos1 = int(g[G_POS1])
    sum2 = g[G_SUM2]
    nz2 = g[G_NZ2]
    pos2 = int(g[G_POS2])
    gmin = 1.0
    i = 0
    while i < m:
        if (
            not a[i] > threshold
            and rel_db == 0.0
            and nz1 == 0.0
            and nz2 == 0.0
            and count > 0
            and g[vbase + head] >= 1.0
        ):
            # At rest (see _gain_at_rest) and no reduction needed: as _gain_skip.
            j = i + 1
            while j < m and not a[j] > threshold:
                j += 1
            k = j - i
            g[vbase + head] = 1.0
            g[pbase + head] = s + k - 1
            count = 1
            s += k
            pos1 = (pos1 + k) % l1
            pos2 = (pos2 + k) % l2
            for q in range(i, j):
                a[q] = 1.0
            i = j
            continue
        r = 1.0
        if a[i] > threshold:
            r = threshold / a[i]
        # The sliding minimum, as in _gain_step.
        back = head + count - 1
        if back >= cap:
            back -= cap
        while count > 0 and g[vbase + back] >= r:
            count -= 1
            back -= 1
            if back < 0:
                back += cap
        back += 1
        if back == cap:
            back = 0
        g[vbase + back] = r
        g[pbase + back] = s
        count += 1
        if g[pbase + head] <= s - hold:
            head += 1
            if head == cap:
                head = 0
            count -= 1
        hmin = g[vbase + head]
        s += 1.0
        # Release, as in _gain_step.
        if hmin != last_min:
            last_min_db = 0.0
            if hmin < 1.0:
                last_min_db = 20.0 * math.log10(hmin) if hmin > 0.0 else MUTE_DB - 10.0
            last_min = hmin
        hmin_db = last_min_db
        if hmin_db <= rel_db:
            rel_db = hmin_db
            held = hmin
        else:
            rel_db += release * (hmin_db - rel_db)
            if hmin_db - rel_db < RELEASE_SNAP_DB:
                rel_db = hmin_db
                held = hmin
            elif rel_db <= MUTE_DB:
                held = 0.0
            else:
                held = min(math.exp(rel_db * _LN10_OVER_20), hmin)
        # The two moving averages, as _box.
        d = 1.0 - held
        old = g[GAIN_HEADER + pos1]
        g[GAIN_HEADER + pos1] = d
        pos1 += 1
        if pos1 == l1:
            pos1 = 0
        sum1 = sum1 + d - old
        nz1 = nz1 + (1.0 if d != 0.0 else 0.0) - (1.0 if old != 0.0 else 0.0)
        if nz1 <= 0.0:
            sum1 = 0.0
            nz1 = 0.0
        d = sum1 / l1
        old = g[base2 + pos2]
        g[base2 + pos2] = d
        pos2 += 1
        if pos2 == l2:
            pos2 = 0
        sum2 = sum2 + d - old
        nz2 = nz2 + (1.0 if d != 0.0 else 0.0) - (1.0 if old != 0.0 else 0.0)
        if nz2 <= 0.0:
            sum2 = 0.0
            nz2 = 0.0
        gain = 1.0 - sum2 / l2
        if gain > 1.0:
            gain = 1.0
        elif gain < 0.0:
            gain = 0.0
        a[i] = gain
        if gain < gmin:
            gmin = gain
        i += 1
    g[G_S] = s
    g[G_HEAD] = head
    g[G_COUNT] = count
    g[G_REL_DB] = rel_db
    g[G_MIN] = last_min
    g[G_MIN_DB] = last_min_db
    g[G_SUM1] = sum1
    g[G_NZ1] = nz1
    g[G_POS1] = pos1
    g[G_SUM2] = sum2
    g[G_NZ2] = nz2
    g[G_POS2] = pos2
    return gmin


@kernel
def design_limiter(ceiling_dbtp, release_ms, lookahead_ms, samplerate, out, drive_db=0.0):
    """True-peak limiter coefficients into ``out`` (float64[LIMITER_COEFS]).

    ceiling_dbtp: ceiling (dBTP); release_ms: release time constant (ms, dB domain);
    lookahead_ms: attack ramp length (ms); drive_db: input gain (dB). The look-ahead is
    fixed when a state is made (``make_limiter_state``); the kernel uses the state's.
    """
    lookahead = max(1, int(lookahead_ms * samplerate / 1000.0 + 0.5))
    out[C_TARGET] = 10.0 ** ((ceiling_dbtp - SAFETY_MARGIN_DB) / 20.0)
    out[C_CEILING] = 10.0 ** (ceiling_dbtp / 20.0)
    out[C_RELEASE] = 1.0 - math.exp(-1000.0 / (release_ms * samplerate))
    out[C_LOOKAHEAD] = lookahead
    out[C_DRIVE] = 10.0 ** (drive_db / 20.0)
    out[C_LATENCY] = DETECT_DELAY + lookahead - 1 + GUARD_SAMPLES


def limiter_latency(coefs: np.ndarray) -> int:
    """Latency in samples of a limiter designed into ``coefs``."""
    return int(coefs[C_LATENCY])


def _ring_size(latency: int) -> int:
    # A tile's inputs are written before its outputs are read: the line holds a tile more.
    need = max(latency + TILE_FRAMES + 1, DETECT_SPAN + 1)
    return 1 << (need - 1).bit_length()


def make_limiter_state(coefs: np.ndarray, lanes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeroed state ``(buf, env, gain)`` for ``coefs`` from ``design_limiter``.

    buf: float64[lanes, 2 * ring], per lane the delay line and detector history (written
    twice so every window is contiguous); env: float64[MASTER_ENV], counters and the
    detector's work area; gain: float64[...] the gain computer. The look-ahead (hence the
    latency) is the one in ``coefs``.
    """
    lookahead = int(coefs[C_LOOKAHEAD])
    ring = _ring_size(limiter_latency(coefs))
    buf = np.zeros((int(lanes), 2 * ring))
    env = np.zeros(MASTER_ENV)
    env[E_LOOKAHEAD] = lookahead
    gain = np.zeros(_gain_size(lookahead, GUARD_SAMPLES))
    _init_gain(gain, lookahead, GUARD_SAMPLES)
    return buf, env, gain


@kernel
def _detect(win, m, peak, first):
    """Detector reading of m consecutive frames of one lane.

    win: float64[m + DETECT_SPAN], the lane's samples, win[j + DETECT_SPAN] the newest sample
    of frame j; its interval starts at the sample win[j + DETECT_DELAY]. peak: float64[m],
    set (first lane) or raised to the largest |point| of each interval: the sample, 7 points
    of each 8x sinc, 4 Annex 2 points. The frame loop is outermost and the tap loops are short
    (<= 8 taps, so that LLVM unrolls them completely and vectorises across frames).
    """
    da = _DET_A
    db = _DET_B
    dm = _DET_MID
    sa = _SHORT_A
    sb = _SHORT_B
    sm = _SHORT_MID
    aa = _ANN_A
    ab = _ANN_B
    for j in range(m):
        # Long sinc: taps x[k] = win[j + 32 - k], k = 0..31, folded with x[31 - k].
        s1 = 0.0
        d1 = 0.0
        s2 = 0.0
        d2 = 0.0
        s3 = 0.0
        d3 = 0.0
        s4 = 0.0
        for k in range(8):
            u = win[j + 32 - k] + win[j + 1 + k]
            v = win[j + 32 - k] - win[j + 1 + k]
            s1 += da[0, k] * u
            d1 += db[0, k] * v
            s2 += da[1, k] * u
            d2 += db[1, k] * v
            s3 += da[2, k] * u
            d3 += db[2, k] * v
            s4 += dm[k] * u
        for k in range(8, 16):
            u = win[j + 32 - k] + win[j + 1 + k]
            v = win[j + 32 - k] - win[j + 1 + k]
            s1 += da[0, k] * u
            d1 += db[0, k] * v
            s2 += da[1, k] * u
            d2 += db[1, k] * v
            s3 += da[2, k] * u
            d3 += db[2, k] * v
            s4 += dm[k] * u
        best = abs(win[j + DETECT_DELAY])
        best = max(best, abs(s1) + abs(d1))
        best = max(best, abs(s2) + abs(d2))
        best = max(best, abs(s3) + abs(d3))
        best = max(best, abs(s4))
        # Short sinc for the same interval: x[k] = win[j + 26 - k], k = 0..19.
        s1 = 0.0
        d1 = 0.0
        s2 = 0.0
        d2 = 0.0
        s3 = 0.0
        d3 = 0.0
        s4 = 0.0
        for k in range(5):
            u = win[j + 26 - k] + win[j + 7 + k]
            v = win[j + 26 - k] - win[j + 7 + k]
            s1 += sa[0, k] * u
            d1 += sb[0, k] * v
            s2 += sa[1, k] * u
            d2 += sb[1, k] * v
            s3 += sa[2, k] * u
            d3 += sb[2, k] * v
            s4 += sm[k] * u
        for k in range(5, 10):
            u = win[j + 26 - k] + win[j + 7 + k]
            v = win[j + 26 - k] - win[j + 7 + k]
            s1 += sa[0, k] * u
            d1 += sb[0, k] * v
            s2 += sa[1, k] * u
            d2 += sb[1, k] * v
            s3 += sa[2, k] * u
            d3 += sb[2, k] * v
            s4 += sm[k] * u
        best = max(best, abs(s1) + abs(d1))
        best = max(best, abs(s2) + abs(d2))
        best = max(best, abs(s3) + abs(d3))
        best = max(best, abs(s4))
        # Annex 2 points of the same interval (its delay is 6): x[k] = win[j + 22 - k].
        s1 = 0.0
        d1 = 0.0
        s2 = 0.0
        d2 = 0.0
        for k in range(6):
            u = win[j + 22 - k] + win[j + 11 + k]
            v = win[j + 22 - k] - win[j + 11 + k]
            s1 += aa[0, k] * u
            d1 += ab[0, k] * v
            s2 += aa[1, k] * u
            d2 += ab[1, k] * v
        best = max(best, abs(s1) + abs(d1))
        best = max(best, abs(s2) + abs(d2))
        if first:
            peak[j] = best
        else:
            peak[j] = max(peak[j], best)


@kernel
def _detect_tile(buf, top, m, peak, skip_below):
    """Detector readings of the m frames whose newest samples are buf[:, top .. top + m - 1]
    into peak[:m]; 0 where the bound test shows that no point can exceed ``skip_below`` *
    ``_PEAK_BOUND`` (runs of SKIP_FRAMES frames). Consecutive evaluated runs are evaluated
    in one pass."""
    lanes = buf.shape[0]
    run = 0  # first frame of the pending run of frames to evaluate
    for s0 in range(0, m, SKIP_FRAMES):
        ms = min(SKIP_FRAMES, m - s0)
        lo = top + s0 - DETECT_SPAN
        hi = top + s0 + ms
        loud = False
        for lane in range(lanes):
            row = buf[lane, lo:hi]
            for c in range(hi - lo):
                if abs(row[c]) > skip_below:
                    loud = True
                    break
            if loud:
                break
        if loud:
            continue
        for j in range(s0, s0 + ms):
            peak[j] = 0.0
        if s0 > run:
            for lane in range(lanes):
                _detect(
                    buf[lane, top + run - DETECT_SPAN : top + s0], s0 - run, peak[run:s0], lane == 0
                )
        run = s0 + ms
    if m > run:
        for lane in range(lanes):
            _detect(buf[lane, top + run - DETECT_SPAN : top + m], m - run, peak[run:m], lane == 0)


@kernel
def limiter_bank(x, y, coefs, buf, env, gain, gr_db):
    """Stereo-linked look-ahead true-peak limiter over a block.

    x, y: float64[n, lanes] (y may be x); coefs: float64[LIMITER_COEFS]; buf, env, gain:
    from ``make_limiter_state``, updated in place. y[i] = g[i] * drive * x[i - latency].
    gr_db: float64[1], receives the largest gain reduction of the block in dB (>= 0).
    Non-finite input samples are replaced by 0 (counted in env[E_NONFINITE]).
    """
    n, lanes = x.shape
    ring = buf.shape[1] // 2
    mask = ring - 1
    lookahead = int(env[E_LOOKAHEAD])
    latency = DETECT_DELAY + lookahead - 1 + GUARD_SAMPLES
    target = coefs[C_TARGET]
    release = coefs[C_RELEASE]
    drive = coefs[C_DRIVE]
    skip_below = target / _PEAK_BOUND
    peak = env[E_PEAKS : E_PEAKS + TILE_FRAMES]
    w = int(env[E_WRITE])
    gmin = 1.0
    start = 0
    while start < n:
        wn = (w + 1) & mask
        # A tile stops at the end of the ring so that its columns are consecutive.
        m = min(TILE_FRAMES, n - start, ring - wn)
        for i in range(m):
            for lane in range(lanes):
                v = x[start + i, lane] * drive
                if not math.isfinite(v):
                    v = 0.0
                    env[E_NONFINITE] += 1.0
                buf[lane, wn + i] = v
                buf[lane, wn + ring + i] = v
        top = wn + ring
        _detect_tile(buf, top, m, peak, skip_below)
        gmin = min(gmin, _gain_run(gain, peak, m, target, release))
        src = top - latency
        for i in range(m):
            g = peak[i]
            for lane in range(lanes):
                y[start + i, lane] = g * buf[lane, src + i]
        w = wn + m - 1
        start += m
    env[E_WRITE] = w
    env[E_COUNT] += n
    gr_db[0] = -20.0 * math.log10(gmin) if gmin > 0.0 else -MUTE_DB


# --- safety limiter ----------------------------------------------------------------------


@kernel
def design_safety_limiter(threshold_db, release_ms, samplerate, out):
    """One lane's safety limiter coefficients into ``out`` (float64[SAFETY_COEFS]).

    threshold_db: sample-peak threshold (dBFS); release_ms: release time constant (ms, dB
    domain). The look-ahead is a property of the state (``make_safety_state``).
    """
    out[S_THRESHOLD] = 10.0 ** (threshold_db / 20.0)
    out[S_RELEASE] = 1.0 - math.exp(-1000.0 / (release_ms * samplerate))


def safety_lookahead_samples(lookahead_ms: float, samplerate: float) -> int:
    """Latency of the safety limiter in samples (its attack ramp is one sample longer)."""
    return round(lookahead_ms * samplerate / 1000.0)


def make_safety_state(
    lanes: int, lookahead_ms: float, samplerate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeroed state ``(buf, gain, nonfinite)`` for ``safety_bank``.

    buf: float64[2 * ring, lanes] delay line; gain: float64[lanes, ...] one gain computer
    per lane; nonfinite: int64[lanes], count of NaN/Inf input samples per lane.
    """
    if not (0.0 <= lookahead_ms <= SAFETY_MAX_LOOKAHEAD_MS):
        raise ValueError(f"safety look-ahead must be 0..1 ms, got {lookahead_ms}")
    latency = safety_lookahead_samples(lookahead_ms, samplerate)
    ramp = latency + 1
    ring = 1 << latency.bit_length()  # > latency
    buf = np.zeros((2 * ring, int(lanes)))
    gain = np.zeros((int(lanes), _gain_size(ramp, 0)))
    for lane in range(int(lanes)):
        _init_gain(gain[lane], ramp, 0)
    return buf, gain, np.zeros(int(lanes), dtype=np.int64)


@kernel
def safety_bank(x, y, coefs, buf, gain, nonfinite, write_pos):
    """Per-lane sample-peak look-ahead limiter with a final clamp, over a block.

    x, y: float64[n, lanes] (y may be x); coefs: float64[SAFETY_COEFS, lanes]; buf, gain,
    nonfinite from ``make_safety_state``; write_pos: int64[1] ring position (zero at
    start). |y| <= threshold always; y == 0 around non-finite input.
    """
    n, lanes = x.shape
    ring = buf.shape[0] // 2
    mask = ring - 1
    w0 = write_pos[0]
    for lane in range(lanes):
        g_env = gain[lane]
        latency = int(g_env[G_L1]) + int(g_env[G_L2]) - 2
        thr = coefs[S_THRESHOLD, lane]
        release = coefs[S_RELEASE, lane]
        w = w0
        for s0 in range(0, n, SKIP_FRAMES):
            s1 = min(n, s0 + SKIP_FRAMES)
            # At rest and no sample over the threshold (NaN fails the test): unity gain, the
            # delayed input (the steps of r = 1 would each return exactly 1).
            quiet = _gain_at_rest(g_env)
            if quiet:
                for i in range(s0, s1):
                    if not abs(x[i, lane]) <= thr:
                        quiet = False
                        break
            if quiet:
                for i in range(s0, s1):
                    w = (w + 1) & mask
                    v = x[i, lane]
                    buf[w, lane] = v
                    buf[w + ring, lane] = v
                    out = buf[w + ring - latency, lane]
                    y[i, lane] = min(max(out, -thr), thr)
                _gain_skip(g_env, s1 - s0)
                continue
            for i in range(s0, s1):
                w = (w + 1) & mask
                v = x[i, lane]
                r = 1.0
                if not math.isfinite(v):
                    v = 0.0
                    r = 0.0
                    nonfinite[lane] += 1
                else:
                    a = abs(v)
                    if a > thr:
                        r = thr / a
                buf[w, lane] = v
                buf[w + ring, lane] = v
                g = _gain_step(g_env, r, release)
                out = g * buf[w + ring - latency, lane]
                # The guarantee: whatever rounding did, the output never passes the threshold.
                if out > thr:
                    out = thr
                elif out < -thr:
                    out = -thr
                y[i, lane] = out
        if lane == lanes - 1:
            write_pos[0] = w


# --- processors --------------------------------------------------------------------------


def _check(name: str, value: float, lo: float, hi: float) -> float:
    value = float(value)
    if not (lo <= value <= hi):  # also rejects NaN
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


class TruePeakLimiter:
    """Stereo-linked look-ahead true-peak limiter, for offline use and tests.

    >>> lim = TruePeakLimiter(48000, lanes=2, ceiling_dbtp=-1.0)
    >>> y = lim.process(x)       # (n,) or (n, lanes); output delayed by lim.latency_samples

    The output's true peak (4x or 8x oversampled, or BS.1770 Annex 2) stays at or below
    ceiling_dbtp; below the ceiling the output is the input delayed, bit for bit.
    """

    def __init__(
        self,
        samplerate: float,
        lanes: int = 2,
        ceiling_dbtp: float = -1.0,
        release_ms: float = 100.0,
        lookahead_ms: float = 2.0,
        drive_db: float = 0.0,
    ):
        self.samplerate = _check("samplerate", samplerate, 8000.0, 768000.0)
        if int(lanes) < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self.coefs = np.zeros(LIMITER_COEFS)
        self._lanes = int(lanes)
        self._lookahead_ms = None
        self.set_params(ceiling_dbtp, release_ms, lookahead_ms, drive_db)
        self.gr_db = np.zeros(1)

    def set_params(
        self,
        ceiling_dbtp: float,
        release_ms: float,
        lookahead_ms: float,
        drive_db: float = 0.0,
    ) -> None:
        """Change parameters; a new look-ahead resets the state (the latency changes)."""
        ceiling_dbtp = _check("ceiling_dbtp", ceiling_dbtp, -20.0, 0.0)
        release_ms = _check("release_ms", release_ms, 1.0, 5000.0)
        lookahead_ms = _check("lookahead_ms", lookahead_ms, 0.5, 20.0)
        drive_db = _check("drive_db", drive_db, -24.0, 24.0)
        design_limiter(
            ceiling_dbtp, release_ms, lookahead_ms, self.samplerate, self.coefs, drive_db
        )
        if lookahead_ms != self._lookahead_ms:
            self._lookahead_ms = lookahead_ms
            self.buf, self.env, self.gain = make_limiter_state(self.coefs, self._lanes)

    @property
    def latency_samples(self) -> int:
        return limiter_latency(self.coefs)

    @property
    def nonfinite_count(self) -> int:
        return int(self.env[E_NONFINITE])

    def reset(self) -> None:
        self.buf, self.env, self.gain = make_limiter_state(self.coefs, self._lanes)

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = as_frames(x)
        if frames.shape[1] != self._lanes:
            raise ValueError(f"limiter has {self._lanes} lanes, audio has {frames.shape[1]}")
        limiter_bank(frames, frames, self.coefs, self.buf, self.env, self.gain, self.gr_db)
        return from_frames(frames, x)


class SafetyLimiter:
    """Per-lane output protection: sample-peak brickwall, look-ahead <= 1 ms, hard clamp.

    >>> safe = SafetyLimiter(48000, lanes=2, threshold_db=-0.5)
    >>> y = safe.process(x)       # |y| <= threshold; NaN/Inf -> silence, counted
    """

    def __init__(
        self,
        samplerate: float,
        lanes: int = 2,
        threshold_db: float | np.ndarray = -0.5,
        release_ms: float = 50.0,
        lookahead_ms: float = 0.5,
    ):
        self.samplerate = _check("samplerate", samplerate, 8000.0, 768000.0)
        if int(lanes) < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self.lookahead_ms = _check("lookahead_ms", lookahead_ms, 0.0, SAFETY_MAX_LOOKAHEAD_MS)
        self.coefs = np.zeros((SAFETY_COEFS, int(lanes)))
        self.set_params(threshold_db, release_ms)
        self.buf, self.gain, self.nonfinite = make_safety_state(
            int(lanes), self.lookahead_ms, self.samplerate
        )
        self.write_pos = np.zeros(1, dtype=np.int64)

    def set_params(self, threshold_db: float | np.ndarray, release_ms: float) -> None:
        """threshold_db: one value or one per lane (dBFS, −60..0); release_ms: 1..2000."""
        lanes = self.coefs.shape[1]
        thresholds = np.broadcast_to(np.asarray(threshold_db, dtype=np.float64), (lanes,))
        release_ms = _check("release_ms", release_ms, 1.0, 2000.0)
        for lane in range(lanes):
            t = _check("threshold_db", thresholds[lane], -60.0, 0.0)
            design_safety_limiter(t, release_ms, self.samplerate, self.coefs[:, lane])

    @property
    def latency_samples(self) -> int:
        return safety_lookahead_samples(self.lookahead_ms, self.samplerate)

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = as_frames(x)
        if frames.shape[1] != self.coefs.shape[1]:
            raise ValueError(
                f"limiter has {self.coefs.shape[1]} lanes, audio has {frames.shape[1]}"
            )
        safety_bank(frames, frames, self.coefs, self.buf, self.gain, self.nonfinite, self.write_pos)
        out = from_frames(frames, x)
        if out.dtype == np.float32:
            # Rounding to float32 may land one ulp above the threshold: clamp to the largest
            # float32 at or below it.
            thr = self.coefs[S_THRESHOLD]
            thr32 = thr.astype(np.float32)
            thr32 = np.where(thr32 > thr, np.nextafter(thr32, np.float32(0)), thr32)
            np.clip(out, -thr32, thr32, out=out.reshape(len(out), -1))
        return out
