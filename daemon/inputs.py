"""Gain staging: each channel strip's input level before trim and fader, against a reference.

The engine keeps, per channel, the last block's peak and running totals of the sum of
squares and of clipped samples (:meth:`studiod.dsp.engine.Engine.input_meters`); a
:class:`InputMeterReader` turns two readings into the RMS level of the interval between
them (exact: every sample counts) and the clips in it. Mixing practice stages inputs at an
average of about -18 dBFS RMS (the digital level that calibrated analogue 0 VU meets on most
converters, EBU R 68 / SMPTE RP 155 alignment levels of -18 and -20 dBFS): ``reference_dbfs``
(``[alerts] reference_dbfs``) is that level, and the meters report each input against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from studiod.dsp.engine import INPUT_CLIP_DBFS

INPUT_CLIP_DBFS = INPUT_CLIP_DBFS  # re-exported: a sample at or above this is a clip


@dataclass(frozen=True)
class InputLevel:
    """One channel's input over one interval: ``peak_dbfs`` the last block's peak,
    ``rms_dbfs`` the interval's RMS, ``re_reference_db`` that RMS minus the reference,
    ``clips`` the clipped samples in the interval, ``clips_total`` since the engine started."""

    channel: str
    peak_dbfs: float
    rms_dbfs: float
    re_reference_db: float
    clips: int
    clips_total: int


def _db(power_or_amplitude: float, power: bool) -> float:
    if power_or_amplitude <= 0.0:
        return -math.inf
    return (10.0 if power else 20.0) * math.log10(power_or_amplitude)


class InputMeterReader:
    """Per-channel input levels since this reader's previous :meth:`read` (one reader per
    consumer: the OSC stream, the alerts). ``engine`` is a callable returning the engine
    in use (it changes on a session reload: the reader starts anew)."""

    def __init__(self, engine, reference_dbfs: float = -18.0):
        self._engine = engine
        self.reference_dbfs = reference_dbfs
        self._last_engine = None
        self._last: tuple[np.ndarray, int] | None = None

    def read(self) -> list[InputLevel]:
        engine = self._engine()
        meters, samples = engine.input_meters()
        if engine is not self._last_engine or self._last is None:
            self._last_engine, self._last = engine, (np.zeros_like(meters), 0)
        before, before_samples = self._last
        self._last = (meters, samples)
        frames = samples - before_samples
        out = []
        for k, channel in enumerate(engine.session.channels):
            ms = (meters[k, 1] - before[k, 1]) / frames if frames > 0 else 0.0
            rms_dbfs = _db(ms, power=True)
            out.append(
                InputLevel(
                    channel=channel.name,
                    peak_dbfs=_db(float(meters[k, 0]), power=False),
                    rms_dbfs=rms_dbfs,
                    re_reference_db=rms_dbfs - self.reference_dbfs,
                    clips=int(meters[k, 2] - before[k, 2]),
                    clips_total=int(meters[k, 2]),
                )
            )
        return out
