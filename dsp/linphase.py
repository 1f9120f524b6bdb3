"""Linear-phase EQ: a biquad cascade's magnitude as a symmetric FIR, run by partitioned FFT.

Design (off the audio thread, :func:`design_linphase_fir`): the magnitude |H| of the biquad
cascade is sampled on a dense grid of ``nfft >= 8 * taps`` points, given zero phase and
inverse-transformed (frequency sampling, Oppenheim & Schafer, *Discrete-Time Signal
Processing*, 3rd ed., sec. 7.6); the zero-phase response is centred, cut to ``taps`` (odd)
and multiplied by a Tukey window with 10 % cosine taper (5 % at each end).

Trade-off of ``taps`` (measured, see tests/dsp/test_linphase.py and the module's report):

* The FIR resolves about ``samplerate / taps`` Hz (11.7 Hz with the default 4095 taps at
  48 kHz; :func:`default_taps` scales the length with the rate so the resolution is the same
  at every rate). Smooth EQ curves (shelves, peaks with Q <= 2 above 60 Hz, a 2nd-order
  high-pass at 25 Hz) stay within 0.1 dB of the biquads from 30 Hz to 20 kHz. Narrow or steep
  features in the bottom octaves cannot be: a Q = 4 peak at 30 Hz is smeared by ~2.4 dB, a
  4th-order high-pass at 20 Hz is 0.36 dB off at 30 Hz. More taps resolve them at the cost
  of latency and CPU.
* Latency is exactly ``(taps - 1) / 2`` samples (42.6 ms at 48 kHz with 4095 taps); the
  impulse response is symmetric, so the group delay is that constant at every frequency.
* The Tukey window keeps the full weight of the centre 90 % of the response (a Hann or
  Blackman window over all taps smooths the response by its main lobe and measured 0.6-1.1 dB
  errors at 40 Hz) and only tapers the ends so that a truncated tail does not step.

Realtime (:func:`linphase_process`): uniformly partitioned convolution with Gardner's
zero-latency split (W. G. Gardner, "Efficient convolution without input-output delay",
JAES 43(3), 1995; partition scheme as in F. Wefers, *Partitioned convolution algorithms for
real-time auralization*, 2015, ch. 5): the first ``block_frames`` taps run as a direct-form
FIR per sample, the other partitions as overlap-save FFTs of size ``2 * block_frames`` on a
frequency-domain delay line (FDL) of past input spectra. Every output sample therefore
depends only on input already received, any call length works, and the latency is exactly
that of the FIR.

FFTs: one radix-2 FFT (:func:`_fft_in_place`) for the design functions and the audio
thread alike. The audio thread's tables are preallocated in its state, so it allocates
nothing (DUCC0 behind rocket-fft made 11-12 heap allocations per ``r2c``/``c2r`` call into
preallocated arrays, counted with an LD_PRELOAD malloc counter, rocket-fft 0.4.1); the design
functions make theirs (:func:`_fft_tables`). numpy.fft inside numba would need rocket-fft,
which numba loads through its extension entry point together with scipy.fft, scipy.linalg and
scipy.special: 40 MB of a daemon's memory for two designs.

Coefficient swaps: the FDL holds input spectra only, so a new ``(head, spectra)`` pair built
off the audio thread can be swapped in by reference at any block: from the next partition
boundary on, the output is exactly the new filter applied to the whole input history (no
filter-state transient). Within the ``block_frames`` samples up to that boundary the tail of
the old filter is still being played out.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from studiod.dsp._jit import kernel
from studiod.dsp.filters import as_frames, from_frames

# Default length at 48 kHz: 4095 taps = 85 ms, resolution ~11.7 Hz, latency 2047 samples.
DEFAULT_TAPS_48K = 4095

# Fraction of the FIR length given to the Tukey window's cosine tapers (both ends together).
TUKEY_ALPHA = 0.1

# Dense design grid: at least this many frequency samples per tap, so that the time-domain
# aliasing of the (infinitely long) ideal zero-phase response is far below the truncation.
GRID_OVERSAMPLING = 8

# Engine block; also the partition size of the FFT part.
DEFAULT_BLOCK_FRAMES = 64


def default_taps(samplerate: float) -> int:
    """Odd FIR length for ``samplerate``: 4095 at 48 kHz, scaled with the rate (8191 at 96k)."""
    return 2 * int((DEFAULT_TAPS_48K + 1) // 2 * samplerate / 48000.0) - 1


@kernel
def _cascade_magnitude(coefs, samplerate, freq_hz):
    """|H| of a biquad cascade ``coefs`` (float64[sections, 5]) at ``freq_hz``."""
    w = 2.0 * math.pi * freq_hz / samplerate
    z1 = complex(math.cos(w), -math.sin(w))
    z2 = z1 * z1
    mag = 1.0
    for k in range(coefs.shape[0]):
        c = coefs[k]
        num = c[0] + c[1] * z1 + c[2] * z2
        den = 1.0 + c[3] * z1 + c[4] * z2
        mag *= abs(num) / abs(den)
    return mag


@kernel
def design_linphase_fir(coefs, samplerate, out):
    """Linear-phase FIR ``out`` (float64[taps], taps odd) with the magnitude of ``coefs``.

    coefs: float64[sections, 5] biquad rows ``[b0, b1, b2, a1, a2]`` (from
    ``filters.design_biquad``); samplerate in Hz. Allocates its design grid: call it off the
    audio thread.
    """
    taps = out.shape[0]
    nfft = 1
    while nfft < GRID_OVERSAMPLING * taps:
        nfft *= 2
    half = nfft // 2 + 1
    mag = np.empty(half)
    for k in range(half):
        mag[k] = _cascade_magnitude(coefs, samplerate, k * samplerate / nfft)
    # the zero-phase impulse response: the inverse FFT of the real, even spectrum
    zero_phase = np.empty(nfft, dtype=np.complex128)
    for k in range(half):
        zero_phase[k] = mag[k]
    for k in range(half, nfft):
        zero_phase[k] = mag[nfft - k]
    twiddle, bitrev = _fft_tables(nfft)
    _fft_in_place(zero_phase, twiddle, bitrev, True)
    centre = (taps - 1) // 2
    taper = TUKEY_ALPHA * (taps - 1) / 2.0
    for i in range(taps):
        # Tukey window (Harris 1978, "On the use of windows...", Proc. IEEE 66(1)).
        d = min(i, taps - 1 - i)
        win = 1.0
        if d < taper:
            win = 0.5 * (1.0 - math.cos(math.pi * d / taper))
        out[i] = zero_phase[(i - centre) % nfft].real / nfft * win


@kernel
def partition_fir(fir, head, spectra):
    """Split ``fir`` (float64[taps, lanes]) for :func:`linphase_process`.

    head: float64[block, lanes] gets the first ``block`` taps (direct form);
    spectra: complex128[partitions - 1, block + 1, lanes] gets the spectra (size 2 * block) of
    the remaining partitions, zero-padded. Allocates a small work array: off the audio thread.
    """
    taps, lanes = fir.shape
    block = head.shape[0]
    head[:] = 0.0
    for i in range(min(block, taps)):
        for lane in range(lanes):
            head[i, lane] = fir[i, lane]
    work = np.zeros(2 * block, dtype=np.complex128)
    twiddle, bitrev = _fft_tables(2 * block)
    for p in range(spectra.shape[0]):
        start = (p + 1) * block
        for lane in range(lanes):
            work[:] = 0.0
            for i in range(block):
                if start + i < taps:
                    work[i] = fir[start + i, lane]
            _fft_in_place(work, twiddle, bitrev, False)
            for k in range(block + 1):
                spectra[p, k, lane] = work[k]


@kernel
def _fft_tables(n):
    """``(twiddle, bitrev)`` for :func:`_fft_in_place` of size ``n`` (a power of two):
    complex128[n / 2] exp(-2j pi k / n) and int64[n] bit-reversed indices. Allocates."""
    twiddle = np.empty(n // 2, dtype=np.complex128)
    for k in range(n // 2):
        angle = -2.0 * math.pi * k / n
        twiddle[k] = complex(math.cos(angle), math.sin(angle))
    bits = 0
    while (1 << bits) < n:
        bits += 1
    bitrev = np.empty(n, dtype=np.int64)
    for i in range(n):
        reversed_i = 0
        for b in range(bits):
            reversed_i |= ((i >> b) & 1) << (bits - 1 - b)
        bitrev[i] = reversed_i
    return twiddle, bitrev


@kernel
def _fft_in_place(buf, twiddle, bitrev, inverse):
    """Unscaled radix-2 DIT FFT of ``buf`` (complex128[N], N a power of two), in place.

    twiddle: complex128[N / 2] = exp(-2j pi k / N); bitrev: int64[N] bit-reversed indices
    (from :func:`_fft_tables`, or preallocated by :func:`make_linphase_state`). ``inverse``
    conjugates the twiddles (no 1/N). Cooley & Tukey 1965; allocates nothing.
    At B = 64 this costs ~7 x 64 butterflies per transform, small next to the partition MACs.
    """
    n = buf.shape[0]
    for i in range(n):
        j = bitrev[i]
        if j > i:
            tmp = buf[i]
            buf[i] = buf[j]
            buf[j] = tmp
    size = 2
    while size <= n:
        half = size // 2
        step = n // size
        for start in range(0, n, size):
            for k in range(half):
                w = twiddle[k * step]
                if inverse:
                    w = w.conjugate()
                a = buf[start + k]
                b = buf[start + k + half] * w
                buf[start + k] = a + b
                buf[start + k + half] = a - b
        size *= 2


@kernel
def linphase_process(x, y, head, spectra, hist, fdl, acc, fftbuf, tail, twiddle, bitrev, counters):
    """Convolve ``x`` with the partitioned FIR into ``y`` (may be ``x``); any block length.

    x, y: float64[n, lanes]. Coefficients from :func:`partition_fir`: head float64[B, lanes],
    spectra complex128[P - 1, B + 1, lanes]. State from :func:`make_linphase_state`:
    hist float64[2B, lanes], fdl complex128[max(P - 1, 1), B + 1, lanes],
    acc complex128[B + 1, lanes], fftbuf complex128[2B], tail float64[B, lanes],
    twiddle complex128[B], bitrev int64[2B], counters int64[2] (position in block, FDL slot).
    Allocates nothing. Latency: (taps - 1) / 2 of the FIR; this function adds none.
    """
    n, lanes = x.shape
    block = head.shape[0]
    size = 2 * block
    parts = spectra.shape[0]
    slots = fdl.shape[0]
    bins = block + 1
    pos = counters[0]
    slot = counters[1]
    for i in range(n):
        cur = block + pos
        for lane in range(lanes):
            hist[cur, lane] = x[i, lane]
        for lane in range(lanes):
            acc_head = 0.0
            for k in range(block):
                acc_head += head[k, lane] * hist[cur - k, lane]
            y[i, lane] = acc_head + tail[pos, lane]
        pos += 1
        if pos == block:
            pos = 0
            if parts > 0:
                # Spectrum of the last two input blocks into the FDL, then the tail of the
                # next output block: sum over partitions p >= 1 of H_p X_(j - p), whose last
                # B samples are the linear convolution (overlap-save).
                slot = (slot + 1) % slots
                for lane in range(lanes):
                    for k in range(size):
                        fftbuf[k] = hist[k, lane]
                    _fft_in_place(fftbuf, twiddle, bitrev, False)
                    for k in range(bins):
                        fdl[slot, k, lane] = fftbuf[k]
                acc[:] = 0.0
                for p in range(parts):
                    src = fdl[(slot - p) % slots]
                    h = spectra[p]
                    for k in range(bins):
                        for lane in range(lanes):
                            acc[k, lane] += h[k, lane] * src[k, lane]
                for lane in range(lanes):
                    # Hermitian extension: the inverse of a real signal's spectrum.
                    for k in range(bins):
                        fftbuf[k] = acc[k, lane]
                    for k in range(1, block):
                        fftbuf[size - k] = acc[k, lane].conjugate()
                    _fft_in_place(fftbuf, twiddle, bitrev, True)
                    for k in range(block):
                        tail[k, lane] = fftbuf[block + k].real / size
            for k in range(block):
                for lane in range(lanes):
                    hist[k, lane] = hist[block + k, lane]
    counters[0] = pos
    counters[1] = slot


class LinphaseState(NamedTuple):
    """Preallocated state of :func:`linphase_process` (pass as ``*state``)."""

    hist: np.ndarray
    fdl: np.ndarray
    acc: np.ndarray
    fftbuf: np.ndarray
    tail: np.ndarray
    twiddle: np.ndarray
    bitrev: np.ndarray
    counters: np.ndarray


def partition_count(taps: int, block_frames: int) -> int:
    """Number of ``block_frames`` partitions that cover ``taps``."""
    return -(-taps // block_frames)


def make_linphase_coefs(
    fir: np.ndarray, block_frames: int = DEFAULT_BLOCK_FRAMES
) -> tuple[np.ndarray, np.ndarray]:
    """``(head[B, lanes], spectra[P - 1, B + 1, lanes])`` for an FIR (taps,) or (taps, lanes).

    Call off the audio thread; the engine designs into the bank the audio thread is not
    using and then selects it.
    """
    frames = as_frames(fir)
    taps, lanes = frames.shape
    parts = partition_count(taps, block_frames)
    head = np.zeros((block_frames, lanes))
    spectra = np.zeros((parts - 1, block_frames + 1, lanes), dtype=np.complex128)
    partition_fir(frames, head, spectra)
    return head, spectra


def make_linphase_state(
    taps: int, lanes: int, block_frames: int = DEFAULT_BLOCK_FRAMES
) -> LinphaseState:
    """Zeroed state for an FIR of ``taps`` on ``lanes`` lanes in ``block_frames`` partitions."""
    slots = max(partition_count(taps, block_frames) - 1, 1)
    size = 2 * block_frames
    bits = size.bit_length() - 1
    bitrev = np.array([int(f"{i:0{bits}b}"[::-1], 2) for i in range(size)], dtype=np.int64)
    return LinphaseState(
        hist=np.zeros((size, lanes)),
        fdl=np.zeros((slots, block_frames + 1, lanes), dtype=np.complex128),
        acc=np.zeros((block_frames + 1, lanes), dtype=np.complex128),
        fftbuf=np.zeros(size, dtype=np.complex128),
        tail=np.zeros((block_frames, lanes)),
        twiddle=np.exp(-2j * np.pi * np.arange(block_frames) / size),
        bitrev=bitrev,
        counters=np.zeros(2, dtype=np.int64),
    )


class LinearPhaseEQ:
    """A biquad EQ's magnitude response with linear phase, for offline use and tests.

    >>> eq = LinearPhaseEQ(coefs, samplerate=48000, lanes=2)  # coefs float64[sections, 5]
    >>> y = eq.process(x)  # delayed by eq.latency_samples; keeps state between calls
    """

    def __init__(
        self,
        coefs: np.ndarray,
        samplerate: float,
        lanes: int = 1,
        taps: int | None = None,
        block_frames: int = DEFAULT_BLOCK_FRAMES,
    ):
        if not (math.isfinite(samplerate) and 8000 <= samplerate <= 768000):
            raise ValueError(f"samplerate must be 8000…768000 Hz, got {samplerate}")
        taps = default_taps(samplerate) if taps is None else int(taps)
        if taps < 3 or taps % 2 == 0:
            raise ValueError(f"taps must be odd and >= 3, got {taps}")
        if block_frames < 1 or block_frames & (block_frames - 1):
            raise ValueError(f"block_frames must be a power of two, got {block_frames}")
        if lanes < 1:
            raise ValueError("lanes must be >= 1")
        self.samplerate = float(samplerate)
        self.taps = taps
        self.lanes = lanes
        self.block_frames = block_frames
        self.state = make_linphase_state(taps, lanes, block_frames)
        self.set_coefs(coefs)

    @property
    def latency_samples(self) -> int:
        """Delay of every frequency through the EQ, in samples: (taps - 1) / 2."""
        return (self.taps - 1) // 2

    def set_coefs(self, coefs: np.ndarray) -> None:
        """Redesign for a new biquad cascade (float64[sections, 5]) and swap it in."""
        coefs = np.atleast_2d(np.asarray(coefs, dtype=np.float64))
        if coefs.ndim != 2 or coefs.shape[1] != 5:
            raise ValueError("coefficient rows are [b0, b1, b2, a1, a2]")
        if not np.all(np.isfinite(coefs)):
            raise ValueError("coefficients must be finite")
        fir = np.zeros(self.taps)
        design_linphase_fir(np.ascontiguousarray(coefs), self.samplerate, fir)
        self.coefs = coefs
        self.fir = fir
        self.head, self.spectra = make_linphase_coefs(
            np.repeat(fir[:, None], self.lanes, axis=1), self.block_frames
        )

    def reset(self) -> None:
        state = self.state
        for array in (state.hist, state.fdl, state.acc, state.fftbuf, state.tail, state.counters):
            array[...] = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = as_frames(x)
        if frames.shape[1] != self.lanes:
            raise ValueError(f"EQ has {self.lanes} lanes, audio has {frames.shape[1]}")
        linphase_process(frames, frames, self.head, self.spectra, *self.state)
        return from_frames(frames, x)
