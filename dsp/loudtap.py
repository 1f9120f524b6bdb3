"""The loudness log's maths: the audio-thread tap, programme segments, A-weighting, noise dose.

Pure computation (no files, no SQLite): :mod:`studiod.daemon.loudlog` keeps the log, the
realtime core (:mod:`studiod.daemon.rtcore`) runs :func:`tap_process` in the callback.

Design (keeps the audio thread clean)
-------------------------------------
* **Audio thread.** The runtime calls one jitted function per audio callback, right after
  ``engine.process``::

      tap_process(master, outdata, frames, tap)

  ``tap`` (a :class:`TapState`, preallocated) holds, for every logged bus (the master
  and one per monitor system), a private ``studiod.dsp.loudness`` meter state, an A-weighting
  filter for outputs with an SPL calibration, and a ring of *hop records*. The kernel meters
  the bus in pieces that end on the meter's 100 ms hops and, at each hop, writes one record:
  momentary and short-term loudness (the 400 ms gating block of BS.1770-4 and the 3 s value
  of EBU Tech 3342, both published every 100 ms, EBU Tech 3341 section 2.2), the true and
  sample peak of the last 100 ms, the A-weighted mean square of the last 100 ms, and the
  sums of L*L, R*R and L*R (the bus's correlation). No
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
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from studiod.dsp import loudness as ld
from studiod.dsp._jit import kernel
from studiod.dsp.filters import biquad_bank
from studiod.dsp.targets import Target

# --- hop records -----------------------------------------------------------------------------
HOP_SEQ = 0  # hop number since the tap was made (0-based); hop s covers (s, s + 1] * hop
HOP_M = 1  # momentary loudness, LUFS (-inf: no energy, or the first 300 ms)
HOP_S = 2  # short-term loudness, LUFS (-inf: no energy, or the first 2.9 s)
HOP_TP = 3  # true peak of the hop, linear, max over the lanes (BS.1770-4 Annex 2)
HOP_PEAK = 4  # sample peak of the hop, linear
HOP_A_MS = 5  # A-weighted mean square of the hop, summed over the lanes (0 if not calibrated)
HOP_BAD = 6  # meter's count of non-finite events so far
# the hop's sums of L*L, R*R and L*R (unweighted): the bus's correlation over any run of
# hops is sum(LR) / sqrt(sum(LL) * sum(RR)) (the phase / correlation meter of IEC 60268-18)
HOP_LL = 7
HOP_RR = 8
HOP_LR = 9
HOP_COLS = 10
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
    c_acc float64[B, 3] (the hop's sums of L*L, R*R, L*R), hops float64[B, ring,
    HOP_COLS] (records), head int64[B] (records written).
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
    c_acc: np.ndarray
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
    rec[HOP_LL] = tap.c_acc[b, 0]
    rec[HOP_RR] = tap.c_acc[b, 1]
    rec[HOP_LR] = tap.c_acc[b, 2]
    rec[HOP_SEQ] = seq
    # the tap's meter is private: its peaks restart every hop (the interpolator keeps its
    # history, so a peak between two hops is still found)
    tap.tp_peak[b, :] = 0.0
    tap.sample_peak[b, :] = 0.0
    tap.a_acc[b] = 0.0
    tap.c_acc[b, :] = 0.0
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
        ll = 0.0
        rr = 0.0
        lr = 0.0
        for k in range(n):
            left = x[pos + k, c0]
            right = x[pos + k, c1]
            xin[k, 0] = left
            xin[k, 1] = right
            ll += left * left
            rr += right * right
            lr += left * right
        if w1 != 0.0 and math.isfinite(ll + rr + lr):  # a one-column bus has no correlation
            tap.c_acc[b, 0] += ll
            tap.c_acc[b, 1] += rr
            tap.c_acc[b, 2] += lr
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
# Buses
# =============================================================================================


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
        c_acc=np.zeros((nb, 3)),
        hops=hops,
        head=np.zeros(nb, dtype=np.int64),
        **stacked,
        **shared,
    )


def correlation(recs: np.ndarray) -> float | None:
    """The L/R correlation (-1..1) over hop records ``recs`` (float64[n, HOP_COLS]):
    sum(LR) / sqrt(sum(LL) sum(RR)); None when either side is silent (or a one-column bus).
    +1: mono-compatible (identical), 0: unrelated, -1: out of phase (cancels in mono)."""
    ll = float(np.sum(recs[:, HOP_LL]))
    rr = float(np.sum(recs[:, HOP_RR]))
    if not (ll > 1e-20 and rr > 1e-20):  # below -200 dBFS: no signal to correlate
        return None
    return max(-1.0, min(1.0, float(np.sum(recs[:, HOP_LR])) / math.sqrt(ll * rr)))


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
                ld._hist_add(
                    fine, coarse, ld.HIST_INTEGRATED, 10.0 ** ((m - ld.LUFS_OFFSET) / 10.0), m
                )
        if seq >= first_lra_seq:
            if s > acc[2]:
                acc[2] = s
            if s > ld.ABSOLUTE_GATE_LUFS:
                ld._hist_add(fine, coarse, ld.HIST_LRA, 10.0 ** ((s - ld.LUFS_OFFSET) / 10.0), s)
    ld._integrated_from_hist(fine[0], coarse[0], meters)
    ld._lra_from_hist(fine[1], coarse[1], meters)


def db_or_none(linear: float) -> float | None:
    if not (linear > 0.0) or not math.isfinite(linear):
        return None
    return 20.0 * math.log10(linear)


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
        return db_or_none(float(self.acc[0]))

    def summary(self, target: Target, hop_s: float) -> dict:
        integrated = ld.finite_or_none(self.integrated_lufs)
        tp = self.true_peak_dbtp
        deviation = None if integrated is None else integrated - target.integrated_lufs
        compliant = None
        if deviation is not None:
            compliant = abs(deviation) <= target.tolerance_lu + 1e-9 and (
                tp is None or tp <= target.ceiling_dbtp + 1e-9
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
            "momentary_max_lufs": ld.finite_or_none(float(self.acc[1])),
            "shortterm_max_lufs": ld.finite_or_none(float(self.acc[2])),
            "target": target.name,
            "target_lufs": target.integrated_lufs,
            "target_true_peak_dbtp": target.ceiling_dbtp,
            "deviation_lu": deviation,
            "compliant": None if compliant is None else int(compliant),
            "systems": ",".join(self.systems),
            "status": self.status,
        }


class SegmentDetector:
    """Silence-gated start/stop with hysteresis on the momentary loudness (hop records).

    ``config``: anything with start_lufs, stop_lufs, start_hold_s, stop_hold_s and
    min_segment_s (``daemon.loudlog.LogConfig``)."""

    IDLE, PENDING, ACTIVE, RELEASING = range(4)

    def __init__(self, bus: str, config, hop_s: float):
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
