"""Monitor-section simulations: how the mix will sound in a car, on earbuds, a phone, a laptop,
a TV, in a club.

Each simulation is data (:class:`SimulationSpec`): EQ biquads ``(kind, freq_hz, q, gain_db)``,
Butterworth band limits, a stereo width (0 = mono sum), optional light-compression settings
(applied later by the engine's compressor from ``dsp/dynamics.py``), and the TARGET POINTS
that the filters are fitted to. The curves are the device's response relative to the studio
monitors, i.e. what changes when the same mix is played there. They change tone, not level:
a make-up gain, designed per sample rate, matches every chain's loudness to no chain at all
(see "Loudness matching" below).

The target points are representative values that we chose inside the ranges and shapes the
cited sources report; they are not digitised from one measured device (device-to-device
spread in every class is several dB). tests/dsp/test_simulation.py checks that the biquads
hit every target within ±1 dB at 44.1, 48 and 96 kHz (fitted worst case 0.65 dB, car; tv
0.43, club 0.61).

========  ==================================================  =================================
chain     target points (Hz: dB re chain input)              basis
========  ==================================================  =================================
car       30: +8, 50: +10, 100: +6, 200: +2, 1k: 0, 10k: -2  bass lift of in-car targets and
                                                              preferences; flat mids; -2 dB
                                                              treble [1][2][3]
earbuds   30: -14, 50: -9, 100: -5, 200: +1, 1k: 0,          low-frequency loss of an unsealed
          6.5k: +4, 12k: -1                                   fit; upper-bass hump; insert
                                                              canal resonance [4][5][6]
phone     300: -18, 500: -5, 800: +3, 2k: +1.5, 4k: +2,       micro-speaker resonance 0.6-1 kHz
          10k: -1 (mono)                                      in a sealed back volume, 12 dB/oct
                                                              below plus a protection high-pass
                                                              [7][8][9]
laptop    100: -16, 150: -6, 200: 0, 1k: +1, 2.5k: +3,        small drivers, f3 ~ 170 Hz,
          10k: 0 (width 0.6)                                  presence peak; narrow speaker
                                                              spacing [7][9][10]
tv        70: -20, 100: -11, 150: -4, 200: -1, 1k: 0,         small drivers in a thin cabinet,
          3k: -3, 5k: -1, 10k: -6 (width 0.5)                 f3 ~ 175 Hz; down/rear-firing:
                                                              boundary dip, HF off axis; DSP
                                                              limiting [7][9][11][12][13][14]
club      30: +6, 45: +9, 63: +9, 100: +5, 200: +1, 1k: 0,    subwoofers run ~10 dB hot; air
          4k: -0.6, 8k: -2.6, 12k: -5.5, 16k: -9.1 (mono)     absorption over 25 m; system
                                                              limiters [9][15][16]
========  ==================================================  =================================

Realisation (what the filters are):

* car: low shelf 120 Hz Q 0.7 +10 dB (cabin gain plus the tuning's bass lift), high shelf
  5 kHz -2 dB, 2nd-order Butterworth high-pass at 25 Hz (door woofers, cabin leakage). Width
  0.8: the driver sits ~0.35 m off the centre line, so the near door dominates and the
  phantom image collapses toward it (our approximation, not a measured value). Light
  compression (threshold -20 dB, 2:1, 10/200 ms) stands for listening over road noise.
* earbuds: 2nd-order high-pass 40 Hz and low shelf 120 Hz -8 dB (bass lost through the leak
  of a non-sealing earbud), peak 200 Hz +2 dB Q 0.9, peak 6.5 kHz +4 dB Q 2.5 (the occluded
  canal's resonance), 2nd-order low-pass 14 kHz. Width 1: headphones have no acoustic
  crosstalk; a crossfeed would be needed to model that, not a width.
* phone: high-pass 750 Hz Q 1.3 (the resonance peak and 12 dB/octave below it), 2nd-order
  Butterworth high-pass 300 Hz (the excursion-protection filter of the phone's smart amp),
  peak 4 kHz +2 dB Q 1.2, 2nd-order low-pass 12 kHz. Mono sum. Compression -12 dB, 4:1,
  1/100 ms for the smart amplifier's limiter.
* laptop: high-pass 240 Hz Q 1.3, 2nd-order Butterworth high-pass 80 Hz, peak 2.5 kHz +3 dB
  Q 1, 2nd-order low-pass 15 kHz. Width 0.6: speakers ~0.3 m apart at ~0.5 m span about
  ±17° instead of the ±30° of a standard stereo triangle; by the stereophonic law of sines
  [10] every phantom image shrinks by sin(17°)/sin(30°) = 0.58. Compression -10 dB, 3:1,
  2/150 ms for the laptop's output limiter.
* tv: high-pass 175 Hz Q 0.8 (small drivers in a cabinet a few cm deep: a sealed-box
  2nd-order roll-off [7], the low-frequency extension of 150-200 Hz typical of flat panels
  in [11]), 2nd-order Butterworth high-pass 80 Hz (the audio DSP's excursion protection
  [9]), peak 3 kHz -3 dB Q 3 (drivers fire down or back, so the listener hears them via the
  stand or wall: the interference dip of a nearby boundary [12] and the facing-direction
  dependence measured in [14]; the frequency is our choice), 2nd-order low-pass 8 kHz (the
  listener is far off the drivers' axis, where small cones lose the top octave). Width 0.5:
  speakers ~1.1 m apart at 3 picture heights (2.05 m for a 55-inch panel [13]) span ±15°,
  so by the law of sines [10] sin(15°)/sin(30°) = 0.52. Compression -15 dB, 3:1, 5/200 ms
  for the TV's dynamic range control and limiter ([11] measures it at high volume).
* club: low shelf 100 Hz Q 0.7 +10 dB (subwoofers run about 10 dB above the tops, as
  measured in a dance club in [15]), 4th-order Butterworth high-pass 31 Hz (the subwoofers'
  tuning and their processor's subsonic filter [9]), high shelf 10 kHz Q 0.6 -8 dB and
  2nd-order low-pass 16.5 kHz (air absorption over 25 m at 20 °C and 50 % relative
  humidity, ISO 9613-1 [16], re 1 kHz: -0.6 dB at 4k, -2.6 at 8k, -5.5 at 12k, -9.1 at
  16k; the horns themselves are equalised flat on axis by the system processor). Mono:
  off the centre line one stack dominates (the car's argument, stronger), and dance
  systems are commonly run in mono - our representative choice. Compression -18 dB, 4:1,
  3/250 ms for the system processor's limiters, run hard at club levels [9].

Sources:
[1] F. E. Toole, "The measurement and calibration of sound reproducing systems", JAES
    63(7/8), 2015, sec. 4.2 and Fig. 15: in-car curves (Olive & Welti; Clark; Binelli &
    Farina; five luxury cars) all boost the bass, agree with a good room through the mids.
[2] P. Dennis, "In-vehicle audio system sound quality preference study", AES Convention
    Paper 9393, 139th Convention, 2015: listeners preferred +13 dB bass and -2 dB treble
    relative to a flat in-car response.
[3] Cabin gain: below the cabin's lowest axial mode (roughly 50-70 Hz in a passenger car)
    the closed cabin acts as a pressure chamber and the level rises toward low frequencies;
    the same rise is visible in the measured car curves of [1].
[4] S. Olive, T. Welti and O. Khonsaripour, "A statistical model that predicts listeners'
    preference ratings of in-ear headphones: Part 1", AES Convention Paper 9840, 143rd
    Convention, 2017 (Harman in-ear target; the role of fit and leakage in the bass).
[5] D. Hammershøi and H. Møller, "Sound transmission to and within the human ear canal",
    JASA 100(1), 1996 (ear-canal resonances; the occluded canal shifts them upward).
[6] J. Rämö and V. Välimäki, "Digital augmented reality audio headset", Journal of
    Electrical and Computer Engineering, 2012 (measures how the leakage of insert earphones
    attenuates the low frequencies).
[7] R. H. Small, "Closed-box loudspeaker systems, Part 1: Analysis", JAES 20(10), 1972
    (2nd-order high-pass of a sealed box at its resonance, Q set by the box).
[8] Micro-speaker data sheets (rectangular micro-speakers of ~1-2 cm in back volumes of
    ~1 cm³): resonance in the enclosure of roughly 0.6-1 kHz; no single datasheet is
    reproduced here.
[9] W. Klippel, "Loudspeaker nonlinearities - causes, parameters, symptoms", JAES 54(10),
    2006 (why small transducers are high-passed and limited: excursion).
[10] B. B. Bauer, "Phasor analysis of some stereophonic phenomena", JASA 33(11), 1961
    (stereophonic law of sines).
[11] RTINGS.com, "Frequency response of TVs", test methodology and results
    (https://www.rtings.com/tv/tests/sound-quality/frequency-response): low-frequency
    extension, response error and dynamic range compression of TV speakers measured at
    70 dB SPL, 80 dB SPL and maximum volume.
[12] F. E. Toole, "Sound Reproduction: Loudspeakers and Rooms", Focal Press, 2008, chapter
    "Adjacent-boundary and loudspeaker mounting effects"; R. F. Allison, "The influence of
    room boundaries on loudspeaker power output", JAES 22(5), 1974.
[13] ITU-R BT.500, "Methodology for the subjective assessment of the quality of television
    pictures": preferred viewing distance about 3 picture heights for 1080-line HDTV.
[14] "Effect analysis of loudspeaker's placement angle and direction on frequency response
    and sound pressure level in TV applications", Archives of Acoustics
    (https://acoustics.ippt.pan.pl/index.php/aa/article/view/2777): a flat-panel TV's
    speaker measured facing down, back and forward.
[15] S. Berkow, "Interaction of low frequency drivers and subwoofers in dance systems",
    SIA-Smaart Pro case study #9, SIA Software: a 1000-person club whose subwoofers ran
    about 10 dB hotter than the rest of the system, "not uncommon in dance clubs".
[16] ISO 9613-1:1993, "Acoustics - Attenuation of sound during propagation outdoors - Part
    1: Calculation of the absorption of sound by the atmosphere" (eqs. 3 to 5).

Loudness matching
-----------------

The ear takes louder for better, so a simulation that changes level as well as tone biases
the comparison. Each chain therefore ends in a make-up gain chosen so that the REFERENCE
PROGRAMME has the same K-weighted loudness (ITU-R BS.1770-4: K-weighting, channel powers
summed with weight 1) through the whole chain - filters, band limits, width or mono sum,
compressor in steady state, make-up - as without it.

Reference programme: pink noise, 20 Hz to 20 kHz (or 0.45 fs), -20 dBFS RMS on each channel
(mean square 0.01: the calibration noise of dsp/loudtap.py, SMPTE RP 200), the channels
correlated 0.5 (MATCH_CORRELATION): each is a common pink part plus an independent one of
equal power. Identical channels would make width and mono sums free, independent ones would
charge them in full; mixed programme lies between (centre-panned vocals, bass and kick carry
most of the energy; reverbs, doubled and panned parts are decorrelated), and 0.5 splits the
difference, a representative choice, not a measurement. Programme at the extremes hears the
narrowed chains this much away from matched (dB, correlation 1 / 0): car +0.4/-0.5, laptop
+0.8/-0.9, tv +0.9/-1.1, phone and club +1.3/-1.8, earbuds 0/0.

Design (per sample rate, in :func:`design_makeup_db`; done ahead at every session rate into
``dsp/_makeup.py`` by ``python -m studiod.dsp.simulation``, which :func:`makeup_gain_db`
reads):

* filters and width, in closed form (:func:`filter_change_db`): the pink spectrum is flat
  in log frequency, so the K-weighted power is the mean over ln f of ``|K|^2 |H|^2``; the
  width keeps the mid's share of the power, ``(1 + rho) / 2``, and scales the side's,
  ``(1 - rho) / 2``, by ``width^2``.
* compressor (:func:`compressor_change_db`): its peak detector has no closed form on noise,
  so the engine's compressor kernel (knee KNEE_DB, lanes linked) runs at design time on 4 s
  of seeded reference programme after the chain's filters, and the K-weighted powers after
  the first 0.5 s are compared. The noise is a random-phase multisine with the exact pink
  amplitude in every bin (near-Gaussian samples, no spectral scatter); from seed to seed the
  result scatters by 0.06 dB (club), 0.03 (car) and 0.01 or less for the others.
* on a mono system (one speaker, or ``mono = true``) the system sums L and R before the
  chain, so there is no side left for the width to take and the compressor sees the mono
  sum: each chain has a second make-up for that case, matched against the same mono system
  without a chain. A system's own level (one speaker or two, its speakers' sensitivity) is
  its calibration trim's business, not the simulation's.

The engine adds the make-up to the system's gliding trim gain and raises the chain
compressor's threshold by the same amount, which leaves the compressor's behaviour exactly
as before the gain (its gain curve and detector work in dB). The match holds at the
reference level: louder programme drives the compressors harder (car and club, with
thresholds of -20 and -18 dB, take 3 to 4 dB off -20 dBFS noise already) and will sound
quieter through them than through no chain.

Measured residuals: loudness through the chain minus through no chain on the same system,
in LU by studiod.dsp.loudness, in Engine.render with the system's ``sim`` parameter set;
Gaussian pink noise (an independent realisation, not the design's), -20 dBFS, correlation
0.5, measured for 10 s after 4 s of settling. pyloudnorm agrees with our meter within
0.004 LU on every entry. ``.venv/bin/python -m pytest tests/dsp/test_simulation.py -k engine
-s`` prints them and holds them to ±0.5 LU. The last column is the same test with
``makeup_gain_db`` patched to 0 dB: 8 of its 12 cases fail (earbuds and laptop move less
than 0.5 LU even unmatched).

=======  =======================  =======================  ====================
chain    stereo system, LU at     mono system, LU at       without the make-up
         44.1 / 48 / 96 kHz       44.1 / 48 / 96 kHz       (48 kHz, st. / mono)
=======  =======================  =======================  ====================
car       0.00 / +0.03 / -0.03    +0.02 / +0.05 / -0.06    -3.28 / -1.97
earbuds  -0.01 /  0.00 /  0.00    -0.01 /  0.00 /  0.00    +0.04 / +0.03
phone     0.00 / -0.01 /  0.00    -0.01 / -0.01 / +0.01    -1.89 / -0.64
laptop    0.00 / -0.01 / +0.01    -0.01 / -0.01 / +0.01    -0.36 / +0.44
tv        0.00 / -0.01 /  0.00     0.00 / -0.01 / +0.01    -3.48 / -2.46
club     +0.04 / -0.01 / -0.04    +0.04 / -0.01 / -0.03    -5.01 / -3.76
=======  =======================  =======================  ====================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from studiod.dsp._jit import kernel
from studiod.dsp._makeup import MAKEUP_DB
from studiod.dsp.dynamics import Compressor
from studiod.dsp.filters import (
    KIND_NAMES,
    IIRFilter,
    as_frames,
    biquad_bank,
    design_biquad,
    design_butterworth,
    from_frames,
)
from studiod.dsp.loudness import design_kweighting
from studiod.dsp.loudtap import CAL_HIGH_HZ, CAL_LOW_HZ, CAL_MEAN_SQUARE
from studiod.dsp.stereo import make_width_state, stereo_width


@dataclass(frozen=True)
class CompressionSettings:
    """Light compression for a simulation, applied by the engine's compressor."""

    threshold_db: float
    ratio: float
    attack_ms: float
    release_ms: float


@dataclass(frozen=True)
class SimulationSpec:
    """One monitor simulation as data (see the module docstring for sources).

    filters: RBJ biquads ``(kind, freq_hz, q, gain_db)``, kind a key of filters.KIND_NAMES;
    highpass_hz/lowpass_hz: Butterworth band limits of even ``*_order`` (None = none);
    width: side gain of stereo.stereo_width (0 = mono sum, 1 = unchanged);
    targets: ``(freq_hz, gain_db)`` points the filter chain is fitted to.
    """

    description: str
    filters: tuple[tuple[str, float, float, float], ...]
    highpass_hz: float | None
    highpass_order: int
    lowpass_hz: float | None
    lowpass_order: int
    width: float
    compression: CompressionSettings | None
    targets: tuple[tuple[float, float], ...]

    @property
    def mono(self) -> bool:
        return self.width == 0.0

    @property
    def sections(self) -> int:
        count = len(self.filters)
        if self.highpass_hz is not None:
            count += self.highpass_order // 2
        if self.lowpass_hz is not None:
            count += self.lowpass_order // 2
        return count


SIMULATIONS: dict[str, SimulationSpec] = {
    "car": SimulationSpec(
        description="car cabin, driver's seat",
        filters=(("lowshelf", 120.0, 0.7, 10.0), ("highshelf", 5000.0, 0.707, -2.0)),
        highpass_hz=25.0,
        highpass_order=2,
        lowpass_hz=None,
        lowpass_order=2,
        width=0.8,
        compression=CompressionSettings(-20.0, 2.0, 10.0, 200.0),
        targets=((30, 8.0), (50, 10.0), (100, 6.0), (200, 2.0), (1000, 0.0), (10000, -2.0)),
    ),
    "earbuds": SimulationSpec(
        description="consumer earbuds, unsealed fit",
        filters=(
            ("lowshelf", 120.0, 0.7, -8.0),
            ("peak", 200.0, 0.9, 2.0),
            ("peak", 6500.0, 2.5, 4.0),
        ),
        highpass_hz=40.0,
        highpass_order=2,
        lowpass_hz=14000.0,
        lowpass_order=2,
        width=1.0,
        compression=None,
        targets=(
            (30, -14.0),
            (50, -9.0),
            (100, -5.0),
            (200, 1.0),
            (1000, 0.0),
            (6500, 4.0),
            (12000, -1.0),
        ),
    ),
    "phone": SimulationSpec(
        description="phone loudspeaker, mono",
        filters=(("highpass", 750.0, 1.3, 0.0), ("peak", 4000.0, 1.2, 2.0)),
        highpass_hz=300.0,
        highpass_order=2,
        lowpass_hz=12000.0,
        lowpass_order=2,
        width=0.0,
        compression=CompressionSettings(-12.0, 4.0, 1.0, 100.0),
        targets=((300, -18.0), (500, -5.0), (800, 3.0), (2000, 1.5), (4000, 2.0), (10000, -1.0)),
    ),
    "laptop": SimulationSpec(
        description="laptop speakers",
        filters=(("highpass", 240.0, 1.3, 0.0), ("peak", 2500.0, 1.0, 3.0)),
        highpass_hz=80.0,
        highpass_order=2,
        lowpass_hz=15000.0,
        lowpass_order=2,
        width=0.6,
        compression=CompressionSettings(-10.0, 3.0, 2.0, 150.0),
        targets=((100, -16.0), (150, -6.0), (200, 0.0), (1000, 1.0), (2500, 3.0), (10000, 0.0)),
    ),
    "tv": SimulationSpec(
        description="flat-panel TV speakers",
        filters=(("highpass", 175.0, 0.8, 0.0), ("peak", 3000.0, 3.0, -3.0)),
        highpass_hz=80.0,
        highpass_order=2,
        lowpass_hz=8000.0,
        lowpass_order=2,
        width=0.5,
        compression=CompressionSettings(-15.0, 3.0, 5.0, 200.0),
        targets=(
            (70, -20.0),
            (100, -11.0),
            (150, -4.0),
            (200, -1.0),
            (1000, 0.0),
            (3000, -3.0),
            (5000, -1.0),
            (10000, -6.0),
        ),
    ),
    "club": SimulationSpec(
        description="club / PA, on the dance floor",
        filters=(("lowshelf", 100.0, 0.7, 10.0), ("highshelf", 10000.0, 0.6, -8.0)),
        highpass_hz=31.0,
        highpass_order=4,
        lowpass_hz=16500.0,
        lowpass_order=2,
        width=0.0,
        compression=CompressionSettings(-18.0, 4.0, 3.0, 250.0),
        targets=(
            (30, 6.0),
            (45, 9.0),
            (63, 9.0),
            (100, 5.0),
            (200, 1.0),
            (1000, 0.0),
            (4000, -0.6),
            (8000, -2.6),
            (12000, -5.5),
            (16000, -9.1),
        ),
    ),
}


def design_simulation(name: str, samplerate: float) -> np.ndarray:
    """The chain's biquads, float64[sections, 5] (EQ first, then the band limits)."""
    if name not in SIMULATIONS:
        raise ValueError(f"unknown simulation {name!r}; one of {sorted(SIMULATIONS)}")
    if not (math.isfinite(samplerate) and samplerate > 0):
        raise ValueError(f"samplerate must be positive, got {samplerate}")
    spec = SIMULATIONS[name]
    coefs = np.zeros((spec.sections, 5))
    row = 0
    for kind, freq_hz, q, gain_db in spec.filters:
        design_biquad(KIND_NAMES[kind], freq_hz, q, gain_db, float(samplerate), coefs[row])
        row += 1
    for freq_hz, order, highpass in (
        (spec.highpass_hz, spec.highpass_order, True),
        (spec.lowpass_hz, spec.lowpass_order, False),
    ):
        if freq_hz is not None:
            design_butterworth(
                highpass, order, freq_hz, float(samplerate), coefs[row : row + order // 2]
            )
            row += order // 2
    return coefs


@kernel
def simulation_process(x, y, coefs, state, width, width_coefs, width_state, scratch):
    """A simulation's filters, then its width/mono sum, on a stereo block.

    x, y: float64[n, 2] (y may be x); coefs float64[sections, 5, 2], state
    float64[sections, 2, 2] (biquad_bank layout); width 0…1 (0 = mono sum); width_coefs,
    width_state, scratch from stereo.make_width_state (the width's side filter is bypassed).
    """
    biquad_bank(x, y, coefs, state)
    stereo_width(y, y, width, width_coefs, width_state, scratch)


def make_simulation_state(name: str, samplerate: float) -> tuple[np.ndarray, np.ndarray]:
    """``(coefs[sections, 5, 2], state[sections, 2, 2])`` for :func:`simulation_process`."""
    coefs = design_simulation(name, samplerate)
    bank = np.ascontiguousarray(np.repeat(coefs[:, :, None], 2, axis=2))
    return bank, np.zeros((len(coefs), 2, 2))


class Simulation:
    """One monitor simulation (filters + width/mono) on stereo audio, for offline use and tests.

    Compression (``spec.compression``) and the make-up gain (:func:`makeup_gain_db`) are not
    applied here; the engine runs them afterwards.

    >>> sim = Simulation("phone", samplerate=48000)
    >>> y = sim.process(x)  # x: (n, 2)
    """

    def __init__(self, name: str, samplerate: float):
        self.coefs = design_simulation(name, samplerate)
        self.name = name
        self.spec = SIMULATIONS[name]
        self.samplerate = float(samplerate)
        self._bank, self.state = make_simulation_state(name, samplerate)
        self._width_coefs, self._width_state, self._scratch = make_width_state()

    def reset(self) -> None:
        self.state[:] = 0.0
        self._width_state[:] = 0.0

    def process(self, x: np.ndarray) -> np.ndarray:
        frames = as_frames(x)
        if frames.shape[1] != 2:
            raise ValueError(f"simulations take (n, 2) audio, got {frames.shape[1]} lanes")
        simulation_process(
            frames,
            frames,
            self._bank,
            self.state,
            self.spec.width,
            self._width_coefs,
            self._width_state,
            self._scratch,
        )
        return from_frames(frames, x)


# ---------------------------------------------------------------------------------------------
# Loudness matching (see "Loudness matching" in the module docstring)
# ---------------------------------------------------------------------------------------------

# Inter-channel correlation of the reference programme: each channel is a common pink part
# plus an independent one of equal power (a representative choice, see the docstring).
MATCH_CORRELATION = 0.5
MATCH_SECONDS = 4.0  # deterministic noise the compressors run on at design time…
MATCH_SETTLE_S = 0.5  # …of which the start (attack transient, > 2 release times) is skipped
MATCH_SEED = 1770  # any fixed seed: the design must be reproducible
KNEE_DB = 6.0  # the simulations' compressor knee; the engine designs its compressors with it


def match_noise(
    samplerate: float, seconds: float, seed: int, correlation: float = MATCH_CORRELATION
) -> np.ndarray:
    """The matching reference, float64[n, 2]: pink noise between CAL_LOW_HZ and CAL_HIGH_HZ
    (or 0.45 fs) at CAL_MEAN_SQUARE (-20 dBFS RMS) on each channel, the channels correlated
    by ``correlation`` (0…1). A random-phase multisine with the exact pink amplitude in
    every FFT bin: near-Gaussian samples without the spectral scatter of noise; seeded."""
    n = round(seconds * samplerate)
    rng = np.random.default_rng(seed)
    freq_hz = np.fft.rfftfreq(n, 1.0 / samplerate)
    band = (freq_hz >= CAL_LOW_HZ) & (freq_hz <= min(CAL_HIGH_HZ, 0.45 * samplerate))
    amplitude = np.zeros_like(freq_hz)
    amplitude[band] = 1.0 / np.sqrt(freq_hz[band])  # power density 1/f: pink
    spectra = np.exp(2j * np.pi * rng.random((3, len(freq_hz))))
    common, left, right = np.fft.irfft(spectra * amplitude, n, axis=1)
    common_gain, own_gain = math.sqrt(correlation), math.sqrt(1.0 - correlation)
    x = np.column_stack([common_gain * common + own_gain * left,
                         common_gain * common + own_gain * right])  # fmt: skip
    return x * np.sqrt(CAL_MEAN_SQUARE / np.mean(x * x, axis=0))


def _power_response(coefs: np.ndarray, freq_hz: np.ndarray, samplerate: float) -> np.ndarray:
    """|H|^2 of biquad rows ``[b0, b1, b2, a1, a2]`` at ``freq_hz``."""
    z1 = np.exp(-2j * np.pi * freq_hz / samplerate)
    z2 = z1 * z1
    power = np.ones(len(freq_hz))
    for b0, b1, b2, a1, a2 in coefs:
        power *= np.abs((b0 + b1 * z1 + b2 * z2) / (1.0 + a1 * z1 + a2 * z2)) ** 2
    return power


def _kweighting(samplerate: float) -> np.ndarray:
    coefs = np.zeros((2, 5))
    design_kweighting(float(samplerate), coefs)
    return coefs


def filter_change_db(name: str, samplerate: float, mono_input: bool = False) -> float:
    """K-weighted loudness change (dB) of the chain's filters and width on the reference noise,
    in closed form: the pink spectrum is flat in log f, so the K-weighted power is the mean
    over ln f of ``|K|^2 |H|^2`` (trapezoids on 2001 log-spaced points, within 1e-6 dB of
    20001); the width scales the side's power (``(1 - rho) / 2`` of each channel's) by
    ``width^2`` and leaves the mid (``(1 + rho) / 2``). ``mono_input``: the system already
    sums to mono (no side left)."""
    spec = SIMULATIONS[name]
    freq_hz = np.geomspace(CAL_LOW_HZ, min(CAL_HIGH_HZ, 0.45 * samplerate), 2001)
    log_f = np.log(freq_hz)
    weighted = _power_response(_kweighting(samplerate), freq_hz, samplerate)
    through = weighted * _power_response(design_simulation(name, samplerate), freq_hz, samplerate)

    def mean_log(power):
        return np.sum(0.5 * (power[1:] + power[:-1]) * np.diff(log_f))

    rho = 1.0 if mono_input else MATCH_CORRELATION
    width_power = 0.5 * (1.0 + rho) + spec.width**2 * 0.5 * (1.0 - rho)
    return 10.0 * math.log10(mean_log(through) / mean_log(weighted) * width_power)


def _kweighted_power(x: np.ndarray, samplerate: float, skip: int) -> float:
    """BS.1770 power sum (L and R weigh 1) of the K-weighted ``x`` after ``skip`` frames."""
    y = IIRFilter(_kweighting(samplerate), lanes=x.shape[1]).process(x)[skip:]
    return float(np.sum(np.mean(y * y, axis=0)))


def _compressor(spec: SimulationSpec, samplerate: float) -> Compressor:
    """The engine's simulation compressor (its lanes linked as a stereo pair)."""
    c = spec.compression
    return Compressor(samplerate, 2, threshold_db=c.threshold_db, ratio=c.ratio, knee_db=KNEE_DB,
                      attack_ms=c.attack_ms, release_ms=c.release_ms, link="stereo")  # fmt: skip


@lru_cache(maxsize=8)
def _compressor_changes_db(samplerate: float) -> dict[tuple[str, bool], float]:
    """compressor_change_db for every compressing simulation, on one noise per rate."""
    noise = match_noise(samplerate, MATCH_SECONDS, MATCH_SEED)
    mono = np.repeat(noise.mean(axis=1, keepdims=True), 2, axis=1)
    skip = round(MATCH_SETTLE_S * samplerate)
    changes = {}
    for name, spec in SIMULATIONS.items():
        for mono_input, x in ((False, noise), (True, mono)):
            if spec.compression is None:
                changes[name, mono_input] = 0.0
                continue
            if mono_input and spec.mono:  # a mono chain sums anyway: the same signal as above
                changes[name, True] = changes[name, False]
                continue
            shaped = Simulation(name, samplerate).process(x)
            before = _kweighted_power(shaped, samplerate, skip)
            compressed = _compressor(spec, samplerate).process(shaped)
            after = _kweighted_power(compressed, samplerate, skip)
            changes[name, mono_input] = 10.0 * math.log10(after / before)
    return changes


def compressor_change_db(name: str, samplerate: float, mono_input: bool = False) -> float:
    """K-weighted loudness change (dB, <= 0) of the chain's compressor in steady state on the
    reference noise after the chain's filters and width: the compressor kernel itself runs on
    MATCH_SECONDS of seeded noise and the first MATCH_SETTLE_S are skipped. 0 without one."""
    if name not in SIMULATIONS:
        raise ValueError(f"unknown simulation {name!r}; one of {sorted(SIMULATIONS)}")
    return _compressor_changes_db(float(samplerate))[name, bool(mono_input)]


@lru_cache(maxsize=64)
def design_makeup_db(name: str, samplerate: float, mono_input: bool = False) -> float:
    """The make-up gain (dB) that gives the reference noise through the whole chain (filters,
    width, compressor, then this gain) the K-weighted loudness it has without the chain.

    mono_input: the chain sits on a mono system (the system sums L and R before it)."""
    return -(
        filter_change_db(name, samplerate, mono_input)
        + compressor_change_db(name, samplerate, mono_input)
    )


def makeup_gain_db(name: str, samplerate: float, mono_input: bool = False) -> float:
    """:func:`design_makeup_db`, from the table designed ahead (``dsp/_makeup.py``) at every
    rate a session may run at: building an engine then runs no compressor on noise (0.4 s at
    48 kHz, several times that on a Pi). Designed here at any other rate."""
    gains = MAKEUP_DB.get(samplerate, {}).get(name)
    if gains is None:
        return design_makeup_db(name, samplerate, mono_input)
    return gains[1 if mono_input else 0]


def makeup_table_source(samplerates) -> str:
    """The text of ``dsp/_makeup.py``: the make-up gains designed at ``samplerates``."""
    lines = [
        '"""Generated by ``python -m studiod.dsp.simulation``: do not edit.',
        "",
        "The simulations' make-up gains in dB, (on a stereo system, on a mono system), at every",
        "session rate: studiod.dsp.simulation.design_makeup_db, designed ahead so that building",
        'an engine does not (tests/dsp/test_simulation.py holds the table to the design)."""',
        "",
        "MAKEUP_DB = {",
    ]
    for fs in samplerates:
        lines.append(f"    {fs}: {{")
        for name in SIMULATIONS:
            stereo, mono = (design_makeup_db(name, fs, m) for m in (False, True))
            lines.append(f'        "{name}": ({stereo:.6f}, {mono:.6f}),')
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from pathlib import Path

    from studiod.dsp.session import SAMPLERATES

    Path(__file__).with_name("_makeup.py").write_text(makeup_table_source(SAMPLERATES))
