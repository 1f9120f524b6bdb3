"""The loudness log: what was heard, once a second, in SQLite; programme segments; noise dose.

Design (keeps the audio thread clean)
-------------------------------------
* **Audio thread.** The runtime calls one jitted function per audio callback, right after
  ``engine.process``::

      tap_process(engine.state.mst_buf, outdata, frames, log.tap)

  ``log.tap`` (a :class:`TapState`, preallocated) holds, for every logged bus (the master
  and one per monitor system), a private ``studiod.dsp.loudness`` meter state, an A-weighting
  filter for outputs with an SPL calibration, and a ring of *hop records*. The kernel meters
  the bus in pieces that end on the meter's 100 ms hops and, at each hop, writes one record:
  momentary and short-term loudness (the 400 ms gating block of BS.1770-4 and the 3 s value
  of EBU Tech 3342, both published every 100 ms, EBU Tech 3341 section 2.2), the true and
  sample peak of the last 100 ms, and the A-weighted mean square of the last 100 ms. No
  allocation, no lock, no Python; block size does not matter (records are hop-aligned).
* **Control thread, once a second.** :meth:`LoudnessLog.update` drains the rings (single
  producer, single consumer: the reader stops one record short of the producer's head and
  checks each record's sequence number, so it never reads a record being written, even
  on weakly ordered CPUs), and from the hop records derives everything else:
  the per-second row of each bus, programme segments and their summaries, listening level
  and noise dose. Rows go to a bounded queue; one writer thread owns the SQLite connection.
* **Why hop records and not per-second readings.** A segment's integrated loudness and
  loudness range need every gating block and every short-term value, not one reading a
  second. The hop records *are* those blocks, so a segment's figures are exactly what
  ``dsp.loudness.measure`` gives for the same stretch of audio (the blocks go into the
  meter's own 0.01 LU histograms, so memory stays constant for a programme of any length).

Segments (per bus where ``BusSpec.segments`` is set; the master by default)
---------------------------------------------------------------------------
A programme starts when the momentary loudness stays at or above ``start_lufs`` for
``start_hold_s`` and ends when it stays below ``stop_lufs`` (lower: hysteresis) for
``stop_hold_s``. With hop ``f`` the first loud one and hop ``l`` the last one at or above
``stop_lufs``, the segment is the audio from the start of ``f``'s 400 ms block to the end
of hop ``l``: its gating blocks are exactly those of a measurement of that audio, its
loudness range uses the short-term values whose 3 s window lies inside it (as a meter
reset at the segment start would), its true peak covers all of it. Each segment gets a
summary row (integrated, LRA, max true peak, max momentary / short-term, monitor systems
heard) and a compliance verdict against the configured platform target.

Listening level and noise dose (buses with ``spl_at_minus20dbfs``)
------------------------------------------------------------------
Calibration: ``spl_at_minus20dbfs`` is the A-weighted sound pressure level (dB(A), slow)
at the listening position when pink noise (20 Hz to 20 kHz) with an RMS of -20 dBFS, i.e. a
mean square of 0.01 relative to digital full scale (no AES17 +3 dB sine convention), plays on
ONE channel of the output (each speaker calibrated alike, the SMPTE RP 200 / K-system way).
The listening level of a stretch of audio is then
``L_A = spl_at_minus20dbfs + 10 log10(sum_ch ms_A,ch / ms_A,cal)``: the A-weighted mean
squares of the channels add (loudspeakers with different signals add in power at the
listener; fully correlated content can add up to 3 dB more), ``ms_A,cal`` is the A-weighted
mean square of that calibration noise through the same digital filter. A-weighting is the
IEC 61672-1:2013 analog prototype (Annex E) in three biquads (see ``design_aweighting``),
normalised to 0 dB at 1 kHz; at 44.1 and 48 kHz it is within 0.1 dB of the standard up to
10 kHz and 0.6 dB up to 16 kHz (far inside the class 1 tolerances).
Daily dose per NIOSH (Criteria for a Recommended Standard, Occupational Noise Exposure,
1998, eq. 1-1 and 1-2): criterion 85 dBA for 8 h = 100 %, 3 dB exchange rate, i.e. each
100 ms at ``L`` adds ``100 % * 0.1 s / (8 h / 2 ** ((L - 85) / 3))``. ISO 1999 / ISO 9612
use the same 85 dBA / 8 h energy criterion (exchange rate 10 log10 2 = 3.01 dB; the two
differ by 0.03 % per dB above 85). By default every level counts (energy-equivalent, as ISO
1999); ``dose_threshold_dba`` reproduces a dosimeter threshold (NIOSH dosimeters: 80 dBA).
The dose restarts at local midnight and survives a restart of the daemon (table ``dose``).
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from studiod.dsp import loudness as ld
from studiod.dsp._jit import kernel
from studiod.dsp.filters import biquad_bank

LOG_FILENAME = "loudness.sqlite3"
SCHEMA_VERSION = 1

# --- hop records -----------------------------------------------------------------------------
HOP_SEQ = 0  # hop number since the tap was made (0-based); hop s covers (s, s + 1] * hop
HOP_M = 1  # momentary loudness, LUFS (-inf: no energy, or the first 300 ms)
HOP_S = 2  # short-term loudness, LUFS (-inf: no energy, or the first 2.9 s)
HOP_TP = 3  # true peak of the hop, linear, max over the lanes (BS.1770-4 Annex 2)
HOP_PEAK = 4  # sample peak of the hop, linear
HOP_A_MS = 5  # A-weighted mean square of the hop, summed over the lanes (0 if not calibrated)
HOP_BAD = 6  # meter's count of non-finite events so far
HOP_COLS = 7
DEFAULT_RING_HOPS = 1200  # 2 minutes of records: the control thread may stall that long

SOURCE_MASTER = 0  # engine.state.mst_buf (the master bus)
SOURCE_OUTPUTS = 1  # the output block handed to the audio interface
SOURCES = {"master": SOURCE_MASTER, "outputs": SOURCE_OUTPUTS}

# --- A-weighting, IEC 61672-1:2013 Annex E (E.2 to E.4): pole frequencies in Hz -------------
A_F1_HZ = 20.598997
A_F2_HZ = 107.65265
A_F3_HZ = 737.86223
A_F4_HZ = 12194.217
A_SECTIONS = 3
# Calibration noise: pink, 20 Hz to 20 kHz (SMPTE RP 200), mean square 0.01 (-20 dBFS RMS).
CAL_MEAN_SQUARE = 0.01
CAL_LOW_HZ = 20.0
CAL_HIGH_HZ = 20000.0

# --- noise dose, NIOSH 1998 (DHHS 98-126) ----------------------------------------------------
DOSE_CRITERION_DBA = 85.0
DOSE_CRITERION_S = 8.0 * 3600.0
DOSE_EXCHANGE_DB = 3.0


# =============================================================================================
# A-weighting
# =============================================================================================


@kernel
def _bilinear_pair(hp1, a1, hp2, a2, k, out):
    """Bilinear transform (s = k (1 - 1/z) / (1 + 1/z)) of two first-order factors,
    ``s / (s + a)`` when ``hp`` else ``1 / (s + a)``, multiplied into one biquad row."""
    # each factor: (n0 + n1 z^-1) / (d0 + d1 z^-1)
    n0 = k if hp1 else 1.0
    n1 = -k if hp1 else 1.0
    d0 = k + a1
    d1 = a1 - k
    m0 = k if hp2 else 1.0
    m1 = -k if hp2 else 1.0
    e0 = k + a2
    e1 = a2 - k
    den0 = d0 * e0
    out[0] = n0 * m0 / den0
    out[1] = (n0 * m1 + n1 * m0) / den0
    out[2] = n1 * m1 / den0
    out[3] = (d0 * e1 + d1 * e0) / den0
    out[4] = d1 * e1 / den0


@kernel
def _biquad_gain(c, freq_hz, samplerate):
    """|H| of one biquad row at ``freq_hz``."""
    w = 2.0 * math.pi * freq_hz / samplerate
    cr = math.cos(w)
    ci = -math.sin(w)
    c2r = math.cos(2.0 * w)
    c2i = -math.sin(2.0 * w)
    nr = c[0] + c[1] * cr + c[2] * c2r
    ni = c[1] * ci + c[2] * c2i
    dr = 1.0 + c[3] * cr + c[4] * c2r
    di = c[3] * ci + c[4] * c2i
    return math.sqrt((nr * nr + ni * ni) / (dr * dr + di * di))


@kernel
def _matched_double_lowpass(f0_hz, samplerate, out):
    """``(w0 / (s + w0))^2`` by magnitude matching (M. Vicanek, "Matched Second Order Digital
    Filters", 2016; as ``dsp.loudness`` does for the K-weighting shelf): impulse-invariant
    double pole, numerator matched to the analog magnitude at DC, min(f0, fs/4) and Nyquist.
    The bilinear transform would lose 1.2 dB at 10 kHz (48 kHz) to frequency warping."""
    p = math.exp(-2.0 * math.pi * f0_hz / samplerate)
    a1 = -2.0 * p
    a2 = p * p
    big_a0 = (1.0 + a1 + a2) ** 2
    big_a1 = (1.0 - a1 + a2) ** 2
    big_a2 = -4.0 * a2
    b_0 = big_a0  # analog |H|^2 = 1 at DC
    nyq = samplerate / 2.0
    b_1 = big_a1 * (f0_hz * f0_hz / (nyq * nyq + f0_hz * f0_hz)) ** 2
    f_m = min(f0_hz, samplerate / 4.0)
    phi1 = math.sin(math.pi * f_m / samplerate) ** 2
    phi0 = 1.0 - phi1
    phi2 = 4.0 * phi0 * phi1
    a_sq = big_a0 * phi0 + big_a1 * phi1 + big_a2 * phi2
    g_m = (f0_hz * f0_hz / (f_m * f_m + f0_hz * f0_hz)) ** 2
    b_2 = (g_m * a_sq - b_0 * phi0 - b_1 * phi1) / phi2
    w = 0.5 * (math.sqrt(b_0) + math.sqrt(b_1))
    b0 = 0.5 * (w + math.sqrt(max(w * w + b_2, 0.0)))
    out[0] = b0
    out[1] = 0.5 * (math.sqrt(b_0) - math.sqrt(b_1))
    out[2] = -b_2 / (4.0 * b0)
    out[3] = a1
    out[4] = a2


@kernel
def design_aweighting(samplerate, out):
    """A-weighting (IEC 61672-1:2013 Annex E) for ``samplerate`` (Hz) into ``out``
    (float64[3, 5], rows [b0 b1 b2 a1 a2]); 0 dB at 1 kHz.

    Analog prototype s^4 w4^2 / ((s + w1)^2 (s + w2) (s + w3) (s + w4)^2) as three
    biquads: the high-passes (double at f1; f2 and f3) by the bilinear transform (warping is
    negligible that low), the double low-pass at f4 magnitude-matched; normalised at 1 kHz
    like the standard's A1000 term.
    """
    k = 2.0 * samplerate
    w1 = 2.0 * math.pi * A_F1_HZ
    w2 = 2.0 * math.pi * A_F2_HZ
    w3 = 2.0 * math.pi * A_F3_HZ
    _bilinear_pair(True, w1, True, w1, k, out[0])
    _bilinear_pair(True, w2, True, w3, k, out[1])
    _matched_double_lowpass(A_F4_HZ, samplerate, out[2])
    g = 1.0
    for j in range(A_SECTIONS):
        g *= _biquad_gain(out[j], 1000.0, samplerate)
    out[0, 0] /= g
    out[0, 1] /= g
    out[0, 2] /= g


def aweighting_gain_db(freq_hz, samplerate: float) -> np.ndarray:
    """Gain of the digital A-weighting filter at ``freq_hz`` (array), dB."""
    coefs = np.zeros((A_SECTIONS, 5))
    design_aweighting(float(samplerate), coefs)
    f = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    z1 = np.exp(-2j * np.pi * f / samplerate)
    h = np.ones_like(z1)
    for c in coefs:
        h *= (c[0] + c[1] * z1 + c[2] * z1 * z1) / (1.0 + c[3] * z1 + c[4] * z1 * z1)
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(np.abs(h))


def calibration_mean_square(samplerate: float) -> float:
    """A-weighted mean square of the calibration noise (pink, 20 Hz..20 kHz or 0.45 fs,
    mean square 0.01) through the digital A-weighting at ``samplerate``."""
    high = min(CAL_HIGH_HZ, 0.45 * samplerate)
    f = np.geomspace(CAL_LOW_HZ, high, 20001)
    # pink: equal power per log-frequency, so average |A|^2 uniformly over log f
    gain_sq = 10.0 ** (aweighting_gain_db(f, samplerate) / 10.0)
    lf = np.log(f)
    mean = np.sum(0.5 * (gain_sq[1:] + gain_sq[:-1]) * np.diff(lf)) / (lf[-1] - lf[0])
    return CAL_MEAN_SQUARE * float(mean)


# =============================================================================================
# Noise dose
# =============================================================================================


def allowed_time_s(level_dba):
    """NIOSH reference duration T = 8 h / 2 ** ((L - 85) / 3), seconds (array or float)."""
    return DOSE_CRITERION_S / 2.0 ** ((np.asarray(level_dba, dtype=np.float64)
                                       - DOSE_CRITERION_DBA) / DOSE_EXCHANGE_DB)  # fmt: skip


def dose_percent(level_dba, duration_s, threshold_dba: float | None = None) -> float:
    """Noise dose (%) of exposures at ``level_dba`` for ``duration_s`` each (arrays
    broadcast): 100 * sum(t_i / T_i) (NIOSH 1998 eq. 1-1); levels below ``threshold_dba``
    (if given) do not count, -inf levels (silence) never do."""
    level = np.asarray(level_dba, dtype=np.float64)
    t = np.broadcast_to(np.asarray(duration_s, dtype=np.float64), level.shape)
    keep = np.isfinite(level)
    if threshold_dba is not None:
        keep &= level >= threshold_dba
    if not np.any(keep):
        return 0.0
    return float(100.0 * np.sum(t[keep] / allowed_time_s(level[keep])))


# =============================================================================================
# The tap: audio-thread side
# =============================================================================================


class TapState(NamedTuple):
    """Preallocated state of the loudness taps of ``B`` buses (2 lanes each; a one-column
    output reads its column on both lanes with weights 1 and 0). Every field is an array
    (copy it field by field for a compile probe). The meter fields are those of
    ``dsp.loudness.LoudnessState`` with a leading bus axis (scratch and tp_coefs shared);
    the rest:

    source int64[B] (0: master bus array, 1: output array), columns int64[B, 2] (0-based
    columns in that array), xin float64[chunk, 2] (input copy), a_coefs float64[3, 5, 2],
    a_state float64[B, 3, 2, 2], a_buf float64[chunk, 2], a_on int64[B], a_acc float64[B],
    hops float64[B, ring, HOP_COLS] (records), head int64[B] (records written).
    """

    source: np.ndarray
    columns: np.ndarray
    xin: np.ndarray
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
    a_coefs: np.ndarray
    a_state: np.ndarray
    a_buf: np.ndarray
    a_on: np.ndarray
    a_acc: np.ndarray
    hops: np.ndarray
    head: np.ndarray


_SHARED_METER_FIELDS = ("scratch", "tp_coefs")


@kernel
def _record_hop(tap, b, hop_frames):
    seq = tap.head[b]
    rec = tap.hops[b, seq % tap.hops.shape[1]]
    meters = tap.meters[b]
    rec[HOP_M] = meters[ld.MOMENTARY]
    rec[HOP_S] = meters[ld.SHORTTERM]
    rec[HOP_TP] = max(tap.tp_peak[b, 0], tap.tp_peak[b, 1])
    rec[HOP_PEAK] = max(tap.sample_peak[b, 0], tap.sample_peak[b, 1])
    rec[HOP_A_MS] = tap.a_acc[b] / hop_frames
    rec[HOP_BAD] = tap.counters[b, ld.CNT_NONFINITE]
    rec[HOP_SEQ] = seq
    # the tap's meter is private: its peaks restart every hop (the interpolator keeps its
    # history, so a peak between two hops is still found)
    tap.tp_peak[b, :] = 0.0
    tap.sample_peak[b, :] = 0.0
    tap.a_acc[b] = 0.0
    tap.head[b] = seq + 1


@kernel
def _tap_bus(x, frames, b, tap):
    c0 = tap.columns[b, 0]
    c1 = tap.columns[b, 1]
    sub_frames = tap.config[b, ld.CFG_SUB_FRAMES]
    per_hop = tap.config[b, ld.CFG_SUBS_PER_HOP]
    hop_frames = sub_frames * per_hop
    chunk = tap.xin.shape[0]
    counters = tap.counters[b]
    w0 = tap.weights[b, 0]
    w1 = tap.weights[b, 1]
    pos = 0
    while pos < frames:
        done = (counters[ld.CNT_SUBS] % per_hop) * sub_frames + counters[ld.CNT_FRAMES_IN_SUB]
        to_hop = hop_frames - done
        n = min(to_hop, frames - pos, chunk)
        xin = tap.xin[:n]
        for k in range(n):
            xin[k, 0] = x[pos + k, c0]
            xin[k, 1] = x[pos + k, c1]
        # the fields of dsp.loudness.LoudnessState, in its order, for bus b
        ld.loudness_process(
            xin,
            tap.kcoefs[b],
            tap.kstate[b],
            tap.scratch,
            tap.weights[b],
            tap.config[b],
            counters,
            tap.sub_acc[b],
            tap.ring[b],
            tap.hist_fine[b],
            tap.hist_coarse[b],
            tap.tp_coefs,
            tap.tp_history[b],
            tap.tp_peak[b],
            tap.sample_peak[b],
            tap.meters[b],
        )
        if tap.a_on[b] != 0:
            ya = tap.a_buf[:n]
            biquad_bank(xin, ya, tap.a_coefs, tap.a_state[b])
            acc = 0.0
            for k in range(n):
                acc += w0 * ya[k, 0] * ya[k, 0] + w1 * ya[k, 1] * ya[k, 1]
            if math.isfinite(acc):
                tap.a_acc[b] += acc
            else:
                tap.a_state[b][:] = 0.0
        pos += n
        if n == to_hop:
            _record_hop(tap, b, hop_frames)


@kernel
def tap_process(master, outputs, frames, tap):
    """Meter the first ``frames`` frames of every tapped bus; call once per audio block.

    master: the engine's master bus (``engine.state.mst_buf``, float64[N, 2]); outputs: the
    block written to the interface (float32/float64 [frames, n_outputs]). Each bus reads two
    columns of its source (``tap.columns``). Allocates nothing, releases the GIL.
    """
    for b in range(tap.source.shape[0]):
        if tap.source[b] == SOURCE_MASTER:
            _tap_bus(master, frames, b, tap)
        else:
            _tap_bus(outputs, frames, b, tap)


# =============================================================================================
# Configuration
# =============================================================================================


@dataclass(frozen=True)
class BusSpec:
    """One logged signal.

    name: "master" or a monitor system's name; source: "master" (the engine's master bus)
    or "outputs" (the interface's output block); columns: 1-based columns of that source,
    one (a single speaker) or two; spl_at_minus20dbfs: the output's SPL calibration (see
    the module docstring), None when uncalibrated; segments: detect programme segments.
    """

    name: str
    source: str = "outputs"
    columns: tuple[int, ...] = (1, 2)
    spl_at_minus20dbfs: float | None = None
    segments: bool = False

    def __post_init__(self) -> None:
        if not self.name or "," in self.name:
            raise ValueError(f"bus name {self.name!r} must be non-empty without commas")
        if self.source not in SOURCES:
            raise ValueError(f"bus {self.name}: source must be one of {sorted(SOURCES)}")
        cols = tuple(self.columns)
        if len(cols) not in (1, 2) or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in cols
        ):
            raise ValueError(f"bus {self.name}: columns must be one or two 1-based integers")
        if self.source == "master" and any(c > 2 for c in cols):
            raise ValueError(f"bus {self.name}: the master bus has columns 1 and 2")
        spl = self.spl_at_minus20dbfs
        if spl is not None and not (
            isinstance(spl, int | float) and not isinstance(spl, bool) and 40.0 <= spl <= 130.0
        ):
            raise ValueError(
                f"bus {self.name}: spl_at_minus20dbfs must be a number of dB SPL "
                f"from 40 to 130, got {spl!r}"
            )


@dataclass(frozen=True)
class PlatformTarget:
    """A delivery target: integrated loudness (LUFS) +- tolerance (LU), true-peak ceiling."""

    name: str
    integrated_lufs: float
    tolerance_lu: float
    true_peak_dbtp: float


# Published targets. Streaming platforms normalise playback to these levels; "compliant"
# here means within the tolerance (1 LU, our choice for streaming) and under the ceiling.
PLATFORM_TARGETS = {
    # Spotify for Artists, "Loudness normalization" (-14 LUFS; masters at -1 dBTP or lower)
    "spotify": PlatformTarget("spotify", -14.0, 1.0, -1.0),
    # Apple Digital Masters / Sound Check (-16 LUFS; -1 dBTP)
    "apple": PlatformTarget("apple", -16.0, 1.0, -1.0),
    # YouTube playback normalisation reference (-14 LUFS; -1 dBTP)
    "youtube": PlatformTarget("youtube", -14.0, 1.0, -1.0),
    # TIDAL normalisation (-14 LUFS; -1 dBTP)
    "tidal": PlatformTarget("tidal", -14.0, 1.0, -1.0),
    # Amazon Music (-14 LUFS; -2 dBTP)
    "amazon": PlatformTarget("amazon", -14.0, 1.0, -2.0),
    # EBU R 128 (2020): -23 LUFS, +-0.5 LU where practicable, max -1 dBTP
    "ebu-r128": PlatformTarget("ebu-r128", -23.0, 0.5, -1.0),
    # ATSC A/85:2013: -24 LKFS +-2 dB, max -2 dBTP
    "atsc": PlatformTarget("atsc", -24.0, 2.0, -2.0),
}


def platform_target(target: str | PlatformTarget) -> PlatformTarget:
    if isinstance(target, PlatformTarget):
        return target
    try:
        return PLATFORM_TARGETS[target]
    except KeyError:
        raise ValueError(
            f"unknown platform target {target!r}; one of {sorted(PLATFORM_TARGETS)}"
        ) from None


@dataclass(frozen=True)
class LogConfig:
    """What the log keeps and how it finds programme segments (levels in LUFS, times in s).

    retention_days / max_rows bound the per-second table (both apply); segments and dose
    rows follow retention_days.
    """

    retention_days: float = 31.0
    max_rows: int = 4_000_000
    target: str | PlatformTarget = "spotify"
    start_lufs: float = -50.0
    stop_lufs: float = -60.0
    start_hold_s: float = 1.0
    stop_hold_s: float = 3.0
    min_segment_s: float = 5.0
    dose_threshold_dba: float | None = None
    prune_interval_s: float = 60.0
    ring_hops: int = DEFAULT_RING_HOPS

    def __post_init__(self) -> None:
        platform_target(self.target)
        for name in ("retention_days", "start_hold_s", "min_segment_s", "prune_interval_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"loudness log: {name} must be a positive number, got {v!r}")
        if not (math.isfinite(self.stop_hold_s) and self.stop_hold_s >= 0.5):
            # >= 0.4 s keeps consecutive segments' 400 ms blocks apart
            raise ValueError("loudness log: stop_hold_s must be >= 0.5")
        if not (isinstance(self.max_rows, int) and self.max_rows >= 1):
            raise ValueError("loudness log: max_rows must be a positive integer")
        for name in ("start_lufs", "stop_lufs"):
            v = getattr(self, name)
            if not (math.isfinite(v) and ld.ABSOLUTE_GATE_LUFS <= v <= 0.0):
                raise ValueError(f"loudness log: {name} must be from -70 to 0 LUFS, got {v!r}")
        if self.stop_lufs > self.start_lufs:
            raise ValueError("loudness log: stop_lufs must not be above start_lufs")
        if not (isinstance(self.ring_hops, int) and self.ring_hops >= 20):
            raise ValueError("loudness log: ring_hops must be an integer >= 20")


def buses_for_session(
    session,
    spl_at_minus20dbfs: dict[str, float] | None = None,
    master_segments: bool = True,
) -> list[BusSpec]:
    """The master plus one bus per monitor system of a ``dsp.session.Session``, with the
    given SPL calibrations (system name -> dB SPL)."""
    spl = dict(spl_at_minus20dbfs or {})
    names = {s.name for s in session.systems}
    unknown = sorted(set(spl) - names)
    if unknown:
        raise ValueError(f"SPL calibration for unknown monitor systems: {unknown}")
    buses = [BusSpec("master", "master", (1, 2), None, master_segments)]
    for s in session.systems:
        buses.append(BusSpec(s.name, "outputs", tuple(s.outputs[:2]), spl.get(s.name)))
    return buses


def make_tap_state(
    samplerate: float, buses: Sequence[BusSpec], ring_hops: int = DEFAULT_RING_HOPS
) -> TapState:
    """Allocate the taps of ``buses`` at ``samplerate`` (Hz)."""
    if not buses:
        raise ValueError("the loudness log needs at least one bus")
    names = [b.name for b in buses]
    if len(set(names)) != len(names):
        raise ValueError(f"bus names must be unique, got {names}")
    states = [
        ld.make_state(
            float(samplerate),
            np.array([1.0, 1.0 if len(bus.columns) == 2 else 0.0]),
            true_peak=True,
        )
        for bus in buses
    ]
    stacked = {
        name: np.ascontiguousarray(np.stack([getattr(s, name) for s in states]))
        for name in ld.LoudnessState._fields
        if name not in _SHARED_METER_FIELDS
    }
    shared = {name: getattr(states[0], name).copy() for name in _SHARED_METER_FIELDS}
    chunk = shared["scratch"].shape[0]
    a = np.zeros((A_SECTIONS, 5))
    design_aweighting(float(samplerate), a)
    columns = np.array(
        [[c - 1 for c in b.columns] + [b.columns[0] - 1] * (2 - len(b.columns)) for b in buses],
        dtype=np.int64,
    )
    nb = len(buses)
    hops = np.zeros((nb, int(ring_hops), HOP_COLS))
    hops[:, :, HOP_SEQ] = -1.0
    return TapState(
        source=np.array([SOURCES[b.source] for b in buses], dtype=np.int64),
        columns=columns,
        xin=np.zeros((chunk, 2)),
        a_coefs=np.ascontiguousarray(np.repeat(a[:, :, None], 2, axis=2)),
        a_state=np.zeros((nb, A_SECTIONS, 2, 2)),
        a_buf=np.zeros((chunk, 2)),
        a_on=np.array([b.spl_at_minus20dbfs is not None for b in buses], dtype=np.int64),
        a_acc=np.zeros(nb),
        hops=hops,
        head=np.zeros(nb, dtype=np.int64),
        **stacked,
        **shared,
    )


class TapReader:
    """Control-side consumer of one bus's hop records (single consumer)."""

    def __init__(self, tap: TapState, bus: int):
        self.tap = tap
        self.bus = bus
        self.cursor = 0  # next record to read
        self.lost = 0  # records overwritten before they were read
        self.head_seen = 0  # records the producer had written at the last drain

    def drain(self) -> np.ndarray:
        """New records, float64[n, HOP_COLS], oldest first. Stops one record short of the
        producer so that a record being written is never read."""
        ring = self.tap.hops[self.bus]
        size = ring.shape[0]
        self.head_seen = int(self.tap.head[self.bus])
        head = self.head_seen - 1
        if head - self.cursor > size - 2:
            self.lost += head - self.cursor - (size - 2)
            self.cursor = head - (size - 2)
        if head <= self.cursor:
            return np.empty((0, HOP_COLS))
        idx = np.arange(self.cursor, head) % size
        out = ring[idx].copy()
        good = out[:, HOP_SEQ] == np.arange(self.cursor, head)
        if not np.all(good):  # lapped while copying: keep the consistent prefix
            out = out[: int(np.argmin(good))]
        self.cursor += len(out)
        return out


# =============================================================================================
# Segments
# =============================================================================================


@kernel
def _segment_feed(recs, first_gate_seq, first_lra_seq, first_tp_seq, fine, coarse, acc, meters):
    """Add hop records to a segment: gating blocks (hist 0) from ``first_gate_seq``,
    short-term values (hist 1) from ``first_lra_seq``, peaks from ``first_tp_seq``; then
    update ``meters`` (INTEGRATED, LRA, ...). acc: [max TP, max M, max S, hops]."""
    for i in range(recs.shape[0]):
        seq = recs[i, HOP_SEQ]
        m = recs[i, HOP_M]
        s = recs[i, HOP_S]
        if seq >= first_tp_seq:
            tp = recs[i, HOP_TP]
            if tp > acc[0] or math.isnan(tp):
                acc[0] = tp
        if seq >= first_gate_seq:
            acc[3] += 1.0
            if m > acc[1]:
                acc[1] = m
            if m > ld.ABSOLUTE_GATE_LUFS:
                ld._hist_add(fine[0], coarse[0], 10.0 ** ((m - ld.LUFS_OFFSET) / 10.0), m)
        if seq >= first_lra_seq:
            if s > acc[2]:
                acc[2] = s
            if s > ld.ABSOLUTE_GATE_LUFS:
                ld._hist_add(fine[1], coarse[1], 10.0 ** ((s - ld.LUFS_OFFSET) / 10.0), s)
    ld._integrated_from_hist(fine[0], coarse[0], meters)
    ld._lra_from_hist(fine[1], coarse[1], meters)


def _db_or_none(linear: float) -> float | None:
    if not (linear > 0.0) or not math.isfinite(linear):
        return None
    return 20.0 * math.log10(linear)


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass
class Segment:
    """A programme segment of one bus. ``first_hop``/``end_hop``: the audio is
    [first_hop, end_hop) * hop_frames frames since the tap was made."""

    bus: str
    first_hop: int  # start of the first gating block
    end_hop: int = -1
    start_t: float = 0.0
    end_t: float = 0.0
    row_id: int | None = None
    systems: list[str] = field(default_factory=list)
    fine: np.ndarray = field(default_factory=lambda: np.zeros((2, ld.HIST_BINS, 2)))
    coarse: np.ndarray = field(default_factory=lambda: np.zeros((2, ld.HIST_COARSE_BINS, 2)))
    acc: np.ndarray = field(default_factory=lambda: np.array([0.0, -np.inf, -np.inf, 0.0]))
    meters: np.ndarray = field(default_factory=lambda: np.zeros(ld.METERS_SIZE))
    status: str = "open"

    def feed(self, recs: np.ndarray) -> None:
        if len(recs):
            f = self.first_hop
            # the first gating block ends at hop f + 3; the first 3 s window at hop f + 29
            _segment_feed(recs, f + 3, f + 29, f, self.fine, self.coarse, self.acc, self.meters)

    @property
    def integrated_lufs(self) -> float:
        return float(self.meters[ld.INTEGRATED]) if self.acc[3] > 0 else -math.inf

    @property
    def loudness_range_lu(self) -> float:
        return float(self.meters[ld.LRA]) if self.acc[3] > 0 else 0.0

    @property
    def true_peak_dbtp(self) -> float | None:
        return _db_or_none(float(self.acc[0]))

    def summary(self, target: PlatformTarget, hop_s: float) -> dict:
        integrated = _finite_or_none(self.integrated_lufs)
        tp = self.true_peak_dbtp
        deviation = None if integrated is None else integrated - target.integrated_lufs
        compliant = None
        if deviation is not None:
            compliant = abs(deviation) <= target.tolerance_lu + 1e-9 and (
                tp is None or tp <= target.true_peak_dbtp + 1e-9
            )
        end_hop = self.end_hop
        return {
            "bus": self.bus,
            "start_t": self.start_t,
            "end_t": self.end_t,
            "duration_s": (end_hop - self.first_hop) * hop_s if end_hop >= 0 else None,
            "integrated_lufs": integrated,
            "loudness_range_lu": float(self.loudness_range_lu),
            "true_peak_dbtp": tp,
            "momentary_max_lufs": _finite_or_none(float(self.acc[1])),
            "shortterm_max_lufs": _finite_or_none(float(self.acc[2])),
            "target": target.name,
            "target_lufs": target.integrated_lufs,
            "target_true_peak_dbtp": target.true_peak_dbtp,
            "deviation_lu": deviation,
            "compliant": None if compliant is None else int(compliant),
            "systems": ",".join(self.systems),
            "status": self.status,
        }


class _SegmentDetector:
    """Silence-gated start/stop with hysteresis on the momentary loudness (hop records)."""

    IDLE, PENDING, ACTIVE, RELEASING = range(4)

    def __init__(self, bus: str, config: LogConfig, hop_s: float):
        self.bus = bus
        self.cfg = config
        self.start_hops = max(1, round(config.start_hold_s / hop_s))
        self.stop_hops = max(1, round(config.stop_hold_s / hop_s))
        self.min_hops = round(config.min_segment_s / hop_s)
        self.state = self.IDLE
        self.recent: collections.deque = collections.deque(maxlen=3)  # hops before a start
        self.pending: list[np.ndarray] = []
        self.release: list[np.ndarray] = []
        self.first_loud = -1
        self.last_seq = -1
        self.segment: Segment | None = None

    def feed(self, rec: np.ndarray, system: str, hop_time) -> list[tuple[str, Segment]]:
        """One hop record; returns events ("start", seg) / ("end", seg) / ("discard", seg)."""
        events = []
        m = rec[HOP_M]
        seq = int(rec[HOP_SEQ])
        self.last_seq = seq
        cfg = self.cfg
        if self.state == self.IDLE:
            if m >= cfg.start_lufs:
                self.state = self.PENDING
                self.first_loud = seq
                self.pending = [*self.recent, rec]
            else:
                self.recent.append(rec)
        elif self.state == self.PENDING:
            if m < cfg.stop_lufs:
                self.state = self.IDLE
                self.recent.extend(self.pending[-3:])
                self.recent.append(rec)
                self.pending = []
            else:
                self.pending.append(rec)
                if seq - self.first_loud + 1 >= self.start_hops:
                    seg = Segment(self.bus, first_hop=self.first_loud - 3)
                    seg.start_t = hop_time(seg.first_hop)
                    seg.feed(np.array(self.pending))
                    self.pending = []
                    self.segment = seg
                    self.state = self.ACTIVE
                    events.append(("start", seg))
        elif self.state == self.ACTIVE:
            if m < cfg.stop_lufs:
                self.state = self.RELEASING
                self.release = [rec]
            else:
                self.segment.feed(rec[None, :])
        elif self.state == self.RELEASING:
            if m >= cfg.stop_lufs:
                self.segment.feed(np.array([*self.release, rec]))
                self.release = []
                self.state = self.ACTIVE
            else:
                self.release.append(rec)
                if len(self.release) >= self.stop_hops:
                    events.append(self._close(int(self.release[0][HOP_SEQ]), hop_time))
                    self.recent.clear()
                    self.recent.extend(self.release[-3:])
                    self.release = []
        if self.state in (self.ACTIVE, self.RELEASING) and self.segment is not None:
            if system and system not in self.segment.systems:
                self.segment.systems.append(system)
        return events

    def _close(self, end_hop: int, hop_time) -> tuple[str, Segment]:
        seg = self.segment
        seg.end_hop = end_hop
        seg.end_t = hop_time(end_hop)
        seg.status = "closed"
        self.segment = None
        self.state = self.IDLE
        kind = "end" if end_hop - seg.first_hop >= self.min_hops else "discard"
        return kind, seg

    def flush(self, hop_time) -> list[tuple[str, Segment]]:
        """Close an open segment at the last loud hop (daemon stopping)."""
        if self.segment is None:
            return []
        if self.state == self.RELEASING:
            end = int(self.release[0][HOP_SEQ])
        else:
            end = self.last_seq + 1
        self.release = []
        return [self._close(end, hop_time)]


# =============================================================================================
# SQLite
# =============================================================================================

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,                -- Unix time (s) at the end of the second
    bus TEXT NOT NULL,              -- "master" or a monitor system
    system TEXT,                    -- monitor system in use
    momentary_lufs REAL,            -- latest 400 ms loudness (NULL: no signal)
    momentary_max_lufs REAL,        -- highest of the second's ten momentary values
    shortterm_lufs REAL,            -- latest 3 s loudness
    integrated_lufs REAL,           -- of the open programme segment so far (NULL: none)
    true_peak_dbtp REAL,            -- highest true peak in the second
    sample_peak_dbfs REAL,
    laeq_dba REAL,                  -- listening level, A-weighted Leq of the second
    dose_percent REAL,              -- daily noise dose so far
    segment_id INTEGER
);
CREATE INDEX IF NOT EXISTS readings_t ON readings (t);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    bus TEXT NOT NULL,
    start_t REAL NOT NULL,
    end_t REAL,
    duration_s REAL,
    integrated_lufs REAL,
    loudness_range_lu REAL,
    true_peak_dbtp REAL,
    momentary_max_lufs REAL,
    shortterm_max_lufs REAL,
    target TEXT,
    target_lufs REAL,
    target_true_peak_dbtp REAL,
    deviation_lu REAL,
    compliant INTEGER,
    systems TEXT,
    status TEXT NOT NULL            -- open, closed, interrupted (daemon stopped hard)
);
CREATE INDEX IF NOT EXISTS segments_start ON segments (start_t);
CREATE TABLE IF NOT EXISTS dose (
    day TEXT NOT NULL,              -- local date, YYYY-MM-DD
    bus TEXT NOT NULL,
    seconds REAL NOT NULL,          -- time metered
    energy REAL NOT NULL,           -- sum of 10^(L_A/10) * seconds
    dose_percent REAL NOT NULL,
    laeq_dba REAL,                  -- A-weighted Leq over the metered time
    PRIMARY KEY (day, bus)
);
"""

_READING_COLS = (
    "t",
    "bus",
    "system",
    "momentary_lufs",
    "momentary_max_lufs",
    "shortterm_lufs",
    "integrated_lufs",
    "true_peak_dbtp",
    "sample_peak_dbfs",
    "laeq_dba",
    "dose_percent",
    "segment_id",
)
_SEGMENT_COLS = (
    "bus",
    "start_t",
    "end_t",
    "duration_s",
    "integrated_lufs",
    "loudness_range_lu",
    "true_peak_dbtp",
    "momentary_max_lufs",
    "shortterm_max_lufs",
    "target",
    "target_lufs",
    "target_true_peak_dbtp",
    "deviation_lu",
    "compliant",
    "systems",
    "status",
)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: never corrupt; a power cut may lose the last second(s) of log
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _init_db(path: Path, now: float) -> tuple[tuple[str, dict], int]:
    """Create the schema; mark segments left open by a hard stop as interrupted; return
    (today, today's dose rows: bus -> (seconds, energy, dose)) and the number of such
    segments."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    try:
        conn.executescript(_SCHEMA)
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
        )
        cur = conn.execute("UPDATE segments SET status = 'interrupted' WHERE status = 'open'")
        interrupted = cur.rowcount
        day = _day(now)
        dose = {
            bus: (seconds, energy, percent)
            for bus, seconds, energy, percent in conn.execute(
                "SELECT bus, seconds, energy, dose_percent FROM dose WHERE day = ?", (day,)
            )
        }
    finally:
        conn.close()
    return (day, dose), interrupted


def _day(t: float) -> str:
    return dt.datetime.fromtimestamp(t).date().isoformat()


class _Writer(threading.Thread):
    """The one thread that writes the database: batches whatever is queued per transaction."""

    def __init__(self, path: Path, config: LogConfig):
        super().__init__(name="studiod-loudlog", daemon=True)
        self.path = path
        self.cfg = config
        self.q: queue.Queue = queue.Queue(maxsize=20000)
        self.errors = 0
        self.last_error: str | None = None
        self._last_prune = 0.0
        self._segment_ids: dict[int, int] = {}  # id(Segment) -> rowid

    def run(self) -> None:
        conn = _connect(self.path)
        try:
            while True:
                items = [self.q.get()]
                while True:
                    try:
                        items.append(self.q.get_nowait())
                    except queue.Empty:
                        break
                stop = False
                events = []
                try:
                    conn.execute("BEGIN")
                    for kind, payload in items:
                        if kind == "stop":
                            stop = True
                        elif kind == "flush":
                            events.append(payload)
                        else:
                            self._apply(conn, kind, payload)
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self.errors += 1
                    self.last_error = str(exc)
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                now = time.time()
                if events or stop or now - self._last_prune >= self.cfg.prune_interval_s:
                    self._prune(conn, now)
                for event in events:
                    event.set()
                if stop:
                    return
        finally:
            conn.close()

    def _apply(self, conn, kind, payload) -> None:
        if kind == "readings":
            rows = [
                (*row[:-1], self._segment_ids.get(row[-1]) if row[-1] else None) for row in payload
            ]
            conn.executemany(
                f"INSERT INTO readings ({', '.join(_READING_COLS)}) "
                f"VALUES ({', '.join('?' * len(_READING_COLS))})",
                rows,
            )
        elif kind == "segment":
            key, summary = payload
            values = [summary[c] for c in _SEGMENT_COLS]
            rowid = self._segment_ids.get(key)
            if rowid is None:
                cur = conn.execute(
                    f"INSERT INTO segments ({', '.join(_SEGMENT_COLS)}) "
                    f"VALUES ({', '.join('?' * len(_SEGMENT_COLS))})",
                    values,
                )
                self._segment_ids[key] = cur.lastrowid
            else:
                conn.execute(
                    f"UPDATE segments SET {', '.join(c + ' = ?' for c in _SEGMENT_COLS)} "
                    "WHERE id = ?",
                    [*values, rowid],
                )
                if summary["status"] != "open":
                    del self._segment_ids[key]
        elif kind == "discard":
            rowid = self._segment_ids.pop(payload, None)
            if rowid is not None:
                conn.execute("DELETE FROM segments WHERE id = ?", (rowid,))
                conn.execute("UPDATE readings SET segment_id = NULL WHERE segment_id = ?", (rowid,))
        elif kind == "dose":
            conn.execute(
                "INSERT INTO dose (day, bus, seconds, energy, dose_percent, laeq_dba) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, bus) DO UPDATE SET "
                "seconds = excluded.seconds, energy = excluded.energy, "
                "dose_percent = excluded.dose_percent, laeq_dba = excluded.laeq_dba",
                payload,
            )

    def _prune(self, conn, now: float) -> None:
        self._last_prune = now
        horizon = now - self.cfg.retention_days * 86400.0
        try:
            conn.execute("BEGIN")
            conn.execute("DELETE FROM readings WHERE t < ?", (horizon,))
            conn.execute(
                "DELETE FROM readings WHERE id <= (SELECT MAX(id) FROM readings) - ?",
                (self.cfg.max_rows,),
            )
            conn.execute("DELETE FROM segments WHERE status != 'open' AND start_t < ?", (horizon,))
            conn.execute("DELETE FROM dose WHERE day < ?", (_day(horizon),))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self.errors += 1
            self.last_error = str(exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")


# =============================================================================================
# The log
# =============================================================================================


class _BusLog:
    """Control-side state of one bus."""

    def __init__(self, index, spec: BusSpec, tap, config, hop_s, samplerate, dose_rows):
        self.index = index
        self.spec = spec
        self.reader = TapReader(tap, index)
        self.detector = _SegmentDetector(spec.name, config, hop_s) if spec.segments else None
        self.cal_offset_db = None
        if spec.spl_at_minus20dbfs is not None:
            cal = calibration_mean_square(samplerate)
            self.cal_offset_db = spec.spl_at_minus20dbfs - 10.0 * math.log10(cal)
        self.day = None
        self.dose_seconds = 0.0
        self.dose_energy = 0.0
        self.dose = 0.0
        self._dose_rows = dose_rows

    def level_dba(self, a_ms: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return self.cal_offset_db + 10.0 * np.log10(a_ms)

    def add_dose(self, day: str, levels: np.ndarray, hop_s: float, threshold) -> None:
        if day != self.day:  # first second, or local midnight: continue today's dose
            self.day = day
            saved_day, rows = self._dose_rows
            seconds, energy, percent = (0.0, 0.0, 0.0)
            if saved_day == day:
                seconds, energy, percent = rows.get(self.spec.name, (0.0, 0.0, 0.0))
            self.dose_seconds, self.dose_energy, self.dose = seconds, energy, percent
        finite = np.isfinite(levels)
        self.dose_seconds += hop_s * len(levels)
        self.dose_energy += float(np.sum(10.0 ** (levels[finite] / 10.0)) * hop_s)
        self.dose += dose_percent(levels, hop_s, threshold)

    @property
    def laeq_day_dba(self) -> float | None:
        if self.dose_seconds <= 0 or self.dose_energy <= 0:
            return None
        return 10.0 * math.log10(self.dose_energy / self.dose_seconds)


class LoudnessLog:
    """The loudness log of one engine (see the module docstring).

    >>> log = LoudnessLog(state_dir / LOG_FILENAME, 48000, buses_for_session(session))
    >>> tap_process(engine.state.mst_buf, outdata, frames, log.tap)   # audio callback
    >>> log.update(system="studio")                                   # control, 1 Hz
    >>> log.close()

    ``update`` never blocks on the disk: rows go to a bounded queue (``dropped`` counts
    what did not fit) and one writer thread commits them.
    """

    def __init__(
        self,
        path: str | Path,
        samplerate: float,
        buses: Sequence[BusSpec],
        config: LogConfig | None = None,
        now: float | None = None,
    ):
        self.path = Path(path)
        self.config = config or LogConfig()
        self.target = platform_target(self.config.target)
        self.samplerate = float(samplerate)
        self.buses = tuple(buses)
        self.tap = make_tap_state(self.samplerate, self.buses, self.config.ring_hops)
        sub_frames, per_hop = ld.block_geometry(self.samplerate)
        self.hop_frames = sub_frames * per_hop
        self.hop_s = self.hop_frames / self.samplerate
        now = time.time() if now is None else now
        dose_rows, self.interrupted_segments = _init_db(self.path, now)
        self._bus = [
            _BusLog(i, spec, self.tap, self.config, self.hop_s, self.samplerate, dose_rows)
            for i, spec in enumerate(self.buses)
        ]
        self._anchor: float | None = None  # wall time of hop 0
        self._lock = threading.Lock()
        self.dropped = 0
        self.recent_segments: collections.deque = collections.deque(maxlen=64)
        self.latest: dict[str, dict] = {}
        self._writer = _Writer(self.path, self.config)
        self._writer.start()
        self._closed = False

    # -- control side ---------------------------------------------------------------------
    def hop_time(self, hop: float) -> float:
        """Wall time (Unix s) of the start of hop ``hop`` (end of hop ``hop - 1``)."""
        return (self._anchor or 0.0) + hop * self.hop_s

    def update(self, system: str | None = None, now: float | None = None) -> None:
        """Drain the taps and log one row per bus; call about once a second from a control
        thread. ``system``: the monitor system in use; ``now``: Unix time (default: now)."""
        now = time.time() if now is None else now
        with self._lock:
            if self._closed:
                return
            rows = []
            for bus in self._bus:
                recs = bus.reader.drain()
                if not len(recs):
                    continue
                # hop times follow the audio clock, anchored once to the wall clock: the
                # producer's newest hop ended about now
                if self._anchor is None:
                    self._anchor = now - bus.reader.head_seen * self.hop_s
                rows.append(self._bus_second(bus, recs, system or "", now))
            if rows:
                self._put(("readings", rows))

    def _bus_second(self, bus: _BusLog, recs: np.ndarray, system: str, now: float):
        segment = None
        if bus.detector is not None:
            detector = bus.detector
            for rec in recs:
                for kind, seg in detector.feed(rec, system, self.hop_time):
                    self._segment_event(kind, seg)
            segment = detector.segment
            if segment is not None:
                self._put(("segment", (id(segment), segment.summary(self.target, self.hop_s))))
        m = recs[:, HOP_M]
        laeq = dose = None
        if bus.cal_offset_db is not None:
            levels = bus.level_dba(recs[:, HOP_A_MS])
            bus.add_dose(_day(now), levels, self.hop_s, self.config.dose_threshold_dba)
            mean_ms = float(np.mean(recs[:, HOP_A_MS]))
            laeq = _finite_or_none(float(bus.level_dba(np.array([mean_ms]))[0]))
            dose = bus.dose
            self._put(
                (
                    "dose",
                    (bus.day, bus.spec.name, bus.dose_seconds, bus.dose_energy, bus.dose,
                     bus.laeq_day_dba),
                )
            )  # fmt: skip
        row = (
            round(now, 3),
            bus.spec.name,
            system or None,
            _finite_or_none(float(m[-1])),
            _finite_or_none(float(np.max(m))),
            _finite_or_none(float(recs[-1, HOP_S])),
            _finite_or_none(segment.integrated_lufs) if segment is not None else None,
            _db_or_none(float(np.max(recs[:, HOP_TP]))),
            _db_or_none(float(np.max(recs[:, HOP_PEAK]))),
            laeq,
            dose,
            id(segment) if segment is not None else None,
        )
        self.latest[bus.spec.name] = dict(zip(_READING_COLS, row, strict=True))
        return row

    def _segment_event(self, kind: str, seg: Segment) -> None:
        if kind == "start":
            self._put(("segment", (id(seg), seg.summary(self.target, self.hop_s))))
        elif kind == "end":
            self._put(("segment", (id(seg), seg.summary(self.target, self.hop_s))))
            self.recent_segments.append(seg)
        else:
            self._put(("discard", id(seg)))

    def _put(self, item) -> None:
        try:
            self._writer.q.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def dose(self, bus: str) -> float | None:
        """Today's noise dose (%) of a calibrated bus so far."""
        for b in self._bus:
            if b.spec.name == bus and b.cal_offset_db is not None:
                return b.dose
        return None

    @property
    def lost_hops(self) -> int:
        """Hop records overwritten before the control thread read them (it stalled)."""
        return sum(b.reader.lost for b in self._bus)

    @property
    def write_errors(self) -> int:
        return self._writer.errors

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed (and retention applied)."""
        event = threading.Event()
        try:
            self._writer.q.put(("flush", event), timeout=timeout)
        except queue.Full:
            return False
        return event.wait(timeout)

    def close(self, now: float | None = None) -> None:
        """Log what is left, close open segments, stop the writer thread."""
        with self._lock:
            if self._closed:
                return
        self.update(now=now)
        with self._lock:
            self._closed = True
            for bus in self._bus:
                if bus.detector is not None:
                    for kind, seg in bus.detector.flush(self.hop_time):
                        self._segment_event(kind, seg)
        self._writer.q.put(("stop", None))
        self._writer.join(timeout=30.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# =============================================================================================
# Queries, CSV, plot (for ``studiod log`` and tests)
# =============================================================================================


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection (the daemon may be writing at the same time: WAL)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no loudness log here")
    conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=10.0)
    conn.row_factory = sqlite3.Row
    return conn


def _bus_filter(buses: Iterable[str] | None) -> tuple[str, list]:
    buses = list(buses or [])
    if not buses:
        return "", []
    return f" AND bus IN ({', '.join('?' * len(buses))})", buses


def query_readings(
    path, t_from: float, t_to: float, buses: Iterable[str] | None = None
) -> list[dict]:
    """Per-second rows with t_from <= t <= t_to, oldest first."""
    where, args = _bus_filter(buses)
    with open_readonly(path) as conn:
        cur = conn.execute(
            f"SELECT {', '.join(_READING_COLS)} FROM readings WHERE t >= ? AND t <= ?{where} "
            "ORDER BY t, id",
            [t_from, t_to, *args],
        )
        return [dict(r) for r in cur]


def query_segments(
    path, t_from: float, t_to: float, buses: Iterable[str] | None = None
) -> list[dict]:
    """Segments that overlap [t_from, t_to], oldest first."""
    where, args = _bus_filter(buses)
    with open_readonly(path) as conn:
        cur = conn.execute(
            f"SELECT id, {', '.join(_SEGMENT_COLS)} FROM segments "
            f"WHERE start_t <= ? AND (end_t IS NULL OR end_t >= ? OR status = 'open'){where} "
            "ORDER BY start_t, id",
            [t_to, t_from, *args],
        )
        return [dict(r) for r in cur]


def query_dose(path, t_from: float, t_to: float) -> list[dict]:
    """Daily dose rows for the days from t_from to t_to."""
    with open_readonly(path) as conn:
        cur = conn.execute(
            "SELECT day, bus, seconds, dose_percent, laeq_dba FROM dose "
            "WHERE day >= ? AND day <= ? ORDER BY day, bus",
            (_day(t_from), _day(t_to)),
        )
        return [dict(r) for r in cur]


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


def write_csv(rows: Sequence[dict], out, time_columns=("t", "start_t", "end_t")) -> None:
    """Write rows (dicts with the same keys) as CSV to a text stream; time columns get an
    extra ISO-8601 local-time column next to them; NULL is an empty field."""
    if not rows:
        out.write("")
        return
    keys = list(rows[0].keys())
    header = []
    for k in keys:
        header.append(k)
        if k in time_columns:
            header.append(f"{k}_iso")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        line = []
        for k in keys:
            v = row[k]
            line.append("" if v is None else v)
            if k in time_columns:
                line.append(_iso(v))
        writer.writerow(line)


def plot_png(
    path_png: str | Path,
    readings: Sequence[dict],
    segments: Sequence[dict] = (),
    target: PlatformTarget | None = None,
    title: str = "studiod loudness log",
) -> None:
    """Momentary / short-term loudness and true peak per bus over time (segments shaded,
    the target drawn in), and the listening level and dose where logged; writes a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a server
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(
            "--plot needs matplotlib: install the plot extra "
            "(pip install 'studiod[plot]', or ./run installs it)"
        ) from None

    has_spl = any(r["laeq_dba"] is not None for r in readings)
    n_axes = 3 if has_spl else 2
    fig, axes = plt.subplots(n_axes, 1, figsize=(12, 3.2 * n_axes), sharex=True, squeeze=False)
    axes = axes[:, 0]
    buses = list(dict.fromkeys(r["bus"] for r in readings))
    if has_spl:
        ax_dose = axes[2].twinx()
        ax_dose.set_ylabel("daily noise dose (%, dashed)")

    def series(bus, key):
        pts = [(r["t"], r[key]) for r in readings if r["bus"] == bus]
        t = [dt.datetime.fromtimestamp(p[0]) for p in pts]
        v = [np.nan if p[1] is None else p[1] for p in pts]
        return t, np.array(v, dtype=float)

    for i, bus in enumerate(buses):
        color = f"C{i % 10}"
        t, m = series(bus, "momentary_max_lufs")
        axes[0].plot(t, m, color=color, lw=0.6, alpha=0.5)
        t, s = series(bus, "shortterm_lufs")
        axes[0].plot(t, s, color=color, lw=1.6, label=f"{bus} short-term (thin: momentary max)")
        t, tp = series(bus, "true_peak_dbtp")
        axes[1].plot(t, tp, color=color, lw=1.0, label=f"{bus} true peak")
        if has_spl:
            t, la = series(bus, "laeq_dba")
            if np.any(np.isfinite(la)):
                axes[2].plot(t, la, color=color, lw=1.0, label=f"{bus} LAeq,1s")
                t, d = series(bus, "dose_percent")
                ax_dose.plot(t, d, color=color, lw=1.0, ls="--", label=f"{bus} dose")
    for seg in segments:
        start = dt.datetime.fromtimestamp(seg["start_t"])
        end = dt.datetime.fromtimestamp(seg["end_t"] or readings[-1]["t"])
        ok = seg["compliant"]
        shade = "0.85" if ok is None else ("#c8e6c9" if ok else "#ffcdd2")
        axes[0].axvspan(start, end, color=shade, zorder=0)
        if seg["integrated_lufs"] is not None:
            axes[0].hlines(seg["integrated_lufs"], start, end, colors="k", lw=1.2)
    if target is not None:
        axes[0].axhline(target.integrated_lufs, color="k", ls=":", lw=1.0,
                        label=f"{target.name} {target.integrated_lufs:g} LUFS")  # fmt: skip
        axes[1].axhline(target.true_peak_dbtp, color="r", ls=":", lw=1.0,
                        label=f"{target.name} ceiling {target.true_peak_dbtp:g} dBTP")  # fmt: skip
    axes[0].set_ylabel("loudness (LUFS)")
    axes[0].set_ylim(-60, 0)
    axes[1].set_ylabel("true peak (dBTP)")
    if has_spl:
        axes[2].set_ylabel("listening level (dB(A))")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=7)
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M:%S"))
    axes[0].set_title(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    path_png = Path(path_png)
    path_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = path_png.with_name(f".{path_png.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, path_png)
