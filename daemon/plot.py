"""Loudness-over-time plots (PNG) for ``studiod master --plot``.

matplotlib is an optional extra (``pip install 'studiod[plot]'``): everything else works
without it, and asking for a plot without it gives a clear error.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studiod.dsp.loudness import LoudnessMeter
from studiod.dsp.truepeak import TruePeakMeter, linear_to_dbtp

HOP_S = 0.1  # EBU Tech 3341: momentary and short-term are published at >= 10 Hz
FLOOR_LUFS = -70.0  # plotted for silence (the absolute gate of BS.1770-4)


class PlotError(RuntimeError):
    """A plot that cannot be made (matplotlib missing, file not writable)."""


@dataclass(frozen=True)
class LoudnessSeries:
    """Readings every 100 ms: time of the reading (s), momentary and short-term LUFS (-inf
    before their windows fill or in silence), and the true peak of each 100 ms (dBTP)."""

    time_s: np.ndarray
    momentary_lufs: np.ndarray
    shortterm_lufs: np.ndarray
    true_peak_dbtp: np.ndarray


def loudness_series(x: np.ndarray, samplerate: int) -> LoudnessSeries:
    """Meter ``x`` [frames, channels] in 100 ms hops (the meter's own update rate)."""
    x = np.ascontiguousarray(x)
    channels = x.shape[1]
    meter = LoudnessMeter(samplerate, channels, true_peak=False)
    tp = TruePeakMeter(samplerate, lanes=channels)
    hop = max(1, round(HOP_S * samplerate))
    times, mom, short, peaks = [], [], [], []
    for start in range(0, len(x), hop):
        block = x[start : start + hop]
        meter.process(block)
        tp.peak[:] = 0.0  # the peak of this hop only (the interpolator history is kept)
        tp.process(block)
        times.append((start + len(block)) / samplerate)
        mom.append(meter.momentary_lufs)
        short.append(meter.shortterm_lufs)
        peaks.append(float(linear_to_dbtp(np.max(tp.peak))))
    return LoudnessSeries(np.array(times), np.array(mom), np.array(short), np.array(peaks))


def plot_loudness(
    path: str | Path,
    series: LoudnessSeries,
    target_lufs: float | None,
    ceiling_dbtp: float | None,
    title: str,
) -> None:
    """Write a PNG: momentary and short-term loudness (LUFS) and true peak (dBTP) over time,
    with the loudness target and the true-peak ceiling drawn in. Temp file and rename."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a server
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(
            "--plot needs matplotlib: install the plot extra "
            "(pip install 'studiod[plot]', or ./run installs it)"
        ) from None
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise PlotError(f"{path}: the plot is a PNG file; name it *.png")

    def floor(v: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(v), v, np.nan)

    fig, (ax_l, ax_p) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    try:
        t = series.time_s
        ax_l.plot(t, floor(series.momentary_lufs), lw=0.8, color="#8aa9d6", label="momentary")
        ax_l.plot(t, floor(series.shortterm_lufs), lw=1.6, color="#1f4e9c", label="short-term")
        if target_lufs is not None:
            ax_l.axhline(target_lufs, color="#c0392b", ls="--", lw=1.2)
            ax_l.annotate(
                f"target {target_lufs:g} LUFS",
                (t[-1] if len(t) else 0.0, target_lufs),
                color="#c0392b",
                ha="right",
                va="bottom",
            )
        ax_l.set_ylabel("loudness (LUFS)")
        finite = np.concatenate(
            [series.momentary_lufs[np.isfinite(series.momentary_lufs)], [target_lufs or -23.0]]
        )
        ax_l.set_ylim(max(FLOOR_LUFS, float(np.min(finite)) - 6.0), float(np.max(finite)) + 3.0)
        ax_l.grid(alpha=0.3)
        ax_l.legend(loc="lower left")
        ax_l.set_title(title)
        ax_p.plot(t, floor(series.true_peak_dbtp), lw=0.8, color="#2e7d32", label="true peak")
        if ceiling_dbtp is not None:
            ax_p.axhline(ceiling_dbtp, color="#c0392b", ls="--", lw=1.2)
            ax_p.annotate(
                f"ceiling {ceiling_dbtp:g} dBTP",
                (t[-1] if len(t) else 0.0, ceiling_dbtp),
                color="#c0392b",
                ha="right",
                va="bottom",
            )
        ax_p.set_ylabel("true peak (dBTP)")
        ax_p.set_xlabel("time (s)")
        ax_p.set_ylim(-30.0, 1.0)
        ax_p.grid(alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, format="png", dpi=100)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise PlotError(f"{path}: cannot write the plot ({exc})") from None
    finally:
        plt.close(fig)
