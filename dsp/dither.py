"""TPDF dither with optional error-feedback noise shaping, for 16- and 24-bit output.

The output is float64 on the quantisation grid ``k / 2**(bits - 1)`` (k an integer), clamped
to ``[-1, 1 - 2**(1 - bits)]``, so converting it to integer PCM is exact.

Dither: triangular-PDF (TPDF), the sum of two independent uniform variates of ±0.5 LSB each
(±1 LSB peak in total), added before rounding to nearest. This makes the first two moments
of the total error independent of the signal (no noise modulation, no distortion); the error
is white with variance Δ²/12 (rounding) + 2 Δ²/12 (dither) = Δ²/4. References: S. P.
Lipshitz, R. A. Wannamaker, J. Vanderkooy, "Quantization and dither: a theoretical survey",
JAES 40(5), 1992; R. A. Wannamaker, "Subtractive and nonsubtractive dithering: a mathematical
analysis", JAES 45(12), 1997.

Noise shaping (error feedback): ``v = x - sum_k h_k e[n - k]``, ``q = round(v + d)``,
``e = q - v``; the total error ``q - x`` is the white TPDF error filtered by
``1 - sum_k h_k z^-k``. Coefficients (designed for 44.1 kHz, as used by SoX and FFmpeg's
swresample):

* ``"wannamaker3"``: 3-tap F-weighted, R. A. Wannamaker, "Psychoacoustically optimal noise
  shaping", JAES 40(7/8), 1992: ``1.623, -0.982, 0.109``;
* ``"lipshitz5"``: S. P. Lipshitz, J. Vanderkooy, R. A. Wannamaker, "Minimally audible noise
  shaping", JAES 39(11), 1991: ``2.033, -2.165, 1.959, -1.590, 0.6149``;
* ``"wannamaker9"``: 9-tap F-weighted, Wannamaker 1992: ``2.412, -3.370, 3.937, -4.174,
  3.353, -2.205, 1.281, -0.569, 0.0847``.

The feedback uses the error before the full-scale clamp, so clipping cannot destabilise it.
``shaping_gain_db`` gives the resulting error-power change in a band from the coefficients
(closed form); tests/dsp/test_dither.py checks the measured change in 1–5 kHz against it.

Random numbers: xorshift64* (S. Vigna, "An experimental exploration of Marsaglia's xorshift
generators, scrambled", ACM TOMS 42(4), 2016), one 64-bit state per lane seeded with
splitmix64, so output is reproducible and block-size invariant.
"""

from __future__ import annotations

import numpy as np

from studiod.dsp._jit import kernel
from studiod.dsp.filters import as_frames, from_frames

SHAPINGS = {
    "none": (),
    "wannamaker3": (1.623, -0.982, 0.109),
    "lipshitz5": (2.033, -2.165, 1.959, -1.590, 0.6149),
    "wannamaker9": (2.412, -3.370, 3.937, -4.174, 3.353, -2.205, 1.281, -0.569, 0.0847),
}
SHAPING_IDS = {name: i for i, name in enumerate(SHAPINGS)}
MAX_TAPS = 9
_TABLE = np.zeros((len(SHAPINGS), MAX_TAPS))
_NTAPS = np.zeros(len(SHAPINGS), dtype=np.int64)
for _i, _h in enumerate(SHAPINGS.values()):
    _TABLE[_i, : len(_h)] = _h
    _NTAPS[_i] = len(_h)

# design_dither layout, float64[DITHER_COEFS]: [scale = 2**(bits-1), taps, h_1..h_9]
D_SCALE = 0
D_TAPS = 1
D_H = 2
DITHER_COEFS = D_H + MAX_TAPS

_MUL = np.uint64(0x2545F4914F6CDD1D)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


@kernel
def design_dither(bits, shaping_id, out):
    """Dither coefficients into ``out`` (float64[DITHER_COEFS]).

    bits: 16 or 24 (any 2..32 works); shaping_id: a value of ``SHAPING_IDS``.
    """
    out[D_SCALE] = 2.0 ** (bits - 1)
    taps = _NTAPS[shaping_id]
    out[D_TAPS] = taps
    for k in range(MAX_TAPS):
        out[D_H + k] = _TABLE[shaping_id, k]


@kernel
def _uniform(rng, lane):
    """xorshift64* step on rng[lane]; a uniform variate in [0, 1)."""
    s = rng[lane]
    s ^= s >> np.uint64(12)
    s ^= s << np.uint64(25)
    s ^= s >> np.uint64(27)
    rng[lane] = s
    return float((s * _MUL) >> np.uint64(11)) * _INV53


@kernel
def dither_bank(x, y, coefs, rng, err):
    """Dither and quantise a block.

    x, y: float64[n, lanes] (y may be x); coefs: float64[DITHER_COEFS]; rng: uint64[lanes]
    xorshift states (nonzero); err: float64[MAX_TAPS, lanes] past errors in LSB (err[0] the
    newest), updated in place. y is on the grid k / 2**(bits - 1), clamped to full scale.
    """
    n, lanes = x.shape
    scale = coefs[D_SCALE]
    taps = int(coefs[D_TAPS])
    top = scale - 1.0
    for i in range(n):
        for lane in range(lanes):
            v = x[i, lane] * scale
            for k in range(taps):
                v -= coefs[D_H + k] * err[k, lane]
            d = _uniform(rng, lane) + _uniform(rng, lane) - 1.0
            q = np.floor(v + d + 0.5)
            for k in range(taps - 1, 0, -1):
                err[k, lane] = err[k - 1, lane]
            if taps > 0:
                # An input of NaN/Inf would poison the feedback forever; keep it bounded.
                e = q - v
                err[0, lane] = e if abs(e) < 4.0 else 0.0
            if not (q <= top):  # also NaN
                q = top if q > top else 0.0
            elif q < -scale:
                q = -scale
            y[i, lane] = q / scale


def _splitmix64(seed: int) -> int:
    z = (seed + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) or 1


def make_dither_state(lanes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(rng uint64[lanes], err float64[MAX_TAPS, lanes])``; each lane its own stream."""
    rng = np.array([_splitmix64(int(seed) * 1000003 + lane) for lane in range(lanes)], np.uint64)
    return rng, np.zeros((MAX_TAPS, lanes))


def shaping_gain_db(shaping: str, band_hz: tuple[float, float], samplerate: float) -> float:
    """Mean power gain (dB) of the error filter ``1 - sum h_k z^-k`` over ``band_hz``,
    relative to flat TPDF error (closed form on a 2048-point frequency grid)."""
    h = np.asarray(SHAPINGS[shaping], dtype=np.float64)
    f = np.linspace(band_hz[0], band_hz[1], 2048)
    z = np.exp(-2j * np.pi * f / samplerate)
    resp = 1.0 - sum(h[k] * z ** (k + 1) for k in range(len(h)))
    return float(10.0 * np.log10(np.mean(np.abs(resp) ** 2)))


class Dither:
    """TPDF dither (optionally noise-shaped) to ``bits``, for offline use and tests.

    >>> d = Dither(bits=16, shaping="wannamaker9", lanes=2, seed=1)
    >>> y = d.process(x)   # values k / 32768, clamped to full scale; state kept
    """

    def __init__(self, bits: int = 16, shaping: str = "none", lanes: int = 1, seed: int = 0):
        if int(bits) not in (16, 24):
            raise ValueError(f"bits must be 16 or 24, got {bits}")
        if shaping not in SHAPINGS:
            raise ValueError(f"unknown shaping {shaping!r}; one of {sorted(SHAPINGS)}")
        if int(lanes) < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self.bits = int(bits)
        self.shaping = shaping
        self.coefs = np.zeros(DITHER_COEFS)
        design_dither(self.bits, SHAPING_IDS[shaping], self.coefs)
        self.seed = int(seed)
        self.rng, self.err = make_dither_state(int(lanes), self.seed)

    @property
    def lsb(self) -> float:
        return 1.0 / self.coefs[D_SCALE]

    def reset(self) -> None:
        self.rng, self.err = make_dither_state(self.rng.shape[0], self.seed)

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = as_frames(x)
        if frames.shape[1] != self.rng.shape[0]:
            raise ValueError(f"dither has {self.rng.shape[0]} lanes, audio has {frames.shape[1]}")
        dither_bank(frames, frames, self.coefs, self.rng, self.err)
        # float32 holds every 16- and 24-bit grid value exactly.
        return from_frames(frames, x)
