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

# Global arrays are compile-time constants for numba: the detector tables are baked in.
_DETECT = design_sinc_interpolator(DETECT_FACTOR, DETECT_SPAN, DETECT_KAISER_BETA)
_SHORT = design_sinc_interpolator(DETECT_FACTOR, SHORT_SPAN, SHORT_KAISER_BETA)
_ANNEX2 = design_interpolator(4)

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
E_ANNEX = 16  # 16-slot ring of Annex 2 interval peaks
MASTER_ENV = 32

# Gain computer state layout, float64[GAIN_HEADER + L1 + L2 + 2 * cap]
G_HEAD = 0
G_TAIL = 1
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
    # Sliding minimum over the last `hold` intervals: a monotonic deque in a ring
    # (each value pushed and popped once).
    head = int(g[G_HEAD])
    tail = int(g[G_TAIL])
    while tail > head and g[vbase + (tail - 1) % cap] >= r:
        tail -= 1
    g[vbase + tail % cap] = r
    g[pbase + tail % cap] = s
    tail += 1
    while g[pbase + head % cap] <= s - hold:
        head += 1
    hmin = g[vbase + head % cap]
    g[G_HEAD] = head
    g[G_TAIL] = tail
    g[G_S] = s + 1.0
    # Instant attack, exponential release in dB; the released value never exceeds hmin.
    hmin_db = 0.0
    if hmin < 1.0:
        hmin_db = 20.0 * math.log10(hmin) if hmin > 0.0 else MUTE_DB - 10.0
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
            held = min(10.0 ** (rel_db / 20.0), hmin)
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
    need = max(latency + 1, DETECT_SPAN + 1)
    return 1 << (need - 1).bit_length()


def make_limiter_state(coefs: np.ndarray, lanes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeroed state ``(buf, env, gain)`` for ``coefs`` from ``design_limiter``.

    buf: float64[2 * ring, lanes], the delay line and detector history (written twice so
    every window is contiguous); env: float64[MASTER_ENV]; gain: float64[...] the gain
    computer. The look-ahead (hence the latency) is the one in ``coefs``.
    """
    lookahead = int(coefs[C_LOOKAHEAD])
    ring = _ring_size(limiter_latency(coefs))
    buf = np.zeros((2 * ring, int(lanes)))
    env = np.zeros(MASTER_ENV)
    env[E_LOOKAHEAD] = lookahead
    gain = np.zeros(_gain_size(lookahead, GUARD_SAMPLES))
    _init_gain(gain, lookahead, GUARD_SAMPLES)
    return buf, env, gain


@kernel
def limiter_bank(x, y, coefs, buf, env, gain, gr_db):
    """Stereo-linked look-ahead true-peak limiter over a block.

    x, y: float64[n, lanes] (y may be x); coefs: float64[LIMITER_COEFS]; buf, env, gain:
    from ``make_limiter_state``, updated in place. y[i] = g[i] * drive * x[i - latency].
    gr_db: float64[1], receives the largest gain reduction of the block in dB (>= 0).
    Non-finite input samples are replaced by 0 (counted in env[E_NONFINITE]).
    """
    n, lanes = x.shape
    ring = buf.shape[0] // 2
    mask = ring - 1
    lookahead = int(env[E_LOOKAHEAD])
    latency = DETECT_DELAY + lookahead - 1 + GUARD_SAMPLES
    target = coefs[C_TARGET]
    release = coefs[C_RELEASE]
    drive = coefs[C_DRIVE]
    det = _DETECT
    ann = _ANNEX2
    det_taps = det.shape[1]
    ann_taps = ann.shape[1]
    short = _SHORT
    short_taps = short.shape[1]
    w = int(env[E_WRITE])
    count = env[E_COUNT]
    gmin = 1.0
    for i in range(n):
        w = (w + 1) & mask
        for lane in range(lanes):
            v = x[i, lane] * drive
            if not math.isfinite(v):
                v = 0.0
                env[E_NONFINITE] += 1.0
            buf[w, lane] = v
            buf[w + ring, lane] = v
        top = w + ring
        # Interval count - DETECT_DELAY: its original sample and 7 points of the 8x sinc.
        peak = 0.0
        for lane in range(lanes):
            a = abs(buf[top - DETECT_DELAY, lane])
            if a > peak:
                peak = a
            for p in range(1, DETECT_FACTOR):
                acc = 0.0
                for k in range(det_taps):
                    acc += det[p, k] * buf[top - k, lane]
                a = abs(acc)
                if a > peak:
                    peak = a
        # Interval count - ANNEX2_DELAY: the 4 Annex 2 points, kept until that interval
        # reaches the 8x detector (DETECT_DELAY - ANNEX2_DELAY = 10 < 16 ring slots).
        apeak = 0.0
        for lane in range(lanes):
            for p in range(4):
                acc = 0.0
                for k in range(ann_taps):
                    acc += ann[p, k] * buf[top - k, lane]
                a = abs(acc)
                if a > apeak:
                    apeak = a
        # Interval count - SHORT_DELAY: 7 points of the short sinc, merged into the ring slot
        # the Annex 2 detector wrote 4 samples ago.
        speak = 0.0
        for lane in range(lanes):
            for p in range(1, DETECT_FACTOR):
                acc = 0.0
                for k in range(short_taps):
                    acc += short[p, k] * buf[top - k, lane]
                a = abs(acc)
                if a > speak:
                    speak = a
        ic = int(count)
        env[E_ANNEX + ((ic - ANNEX2_DELAY) & 15)] = apeak
        slot = E_ANNEX + ((ic - SHORT_DELAY) & 15)
        if speak > env[slot]:
            env[slot] = speak
        a = env[E_ANNEX + ((ic - DETECT_DELAY) & 15)]
        if a > peak:
            peak = a
        r = 1.0
        if peak > target:
            r = target / peak
        g = _gain_step(gain, r, release)
        if g < gmin:
            gmin = g
        src = top - latency
        for lane in range(lanes):
            y[i, lane] = g * buf[src, lane]
        count += 1.0
    env[E_WRITE] = w
    env[E_COUNT] = count
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
        for i in range(n):
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
