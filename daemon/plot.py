"""The plots (PNG): loudness over time of a file (``studiod master --plot``) and of the
loudness log (``studiod log --plot``), and an album's report (``studiod album``).

matplotlib is an optional extra (``pip install 'studiod[plot]'``): everything else works
without it, and asking for a plot without it gives a clear error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studiod.controllers.atomic import atomic_write

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


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display on a server), or PlotError."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(
            "--plot needs matplotlib: install the plot extra "
            "(pip install 'studiod[plot]', or ./run installs it)"
        ) from None
    return plt


def _save(fig, path: str | Path) -> None:
    """Write ``fig`` as a PNG through the one atomic writer."""
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    except OSError as exc:
        raise PlotError(f"{path}: cannot write the plot ({exc})") from None


def loudness_series(x: np.ndarray, samplerate: int) -> LoudnessSeries:
    """Meter ``x`` [frames, channels] in 100 ms hops (the meter's own update rate)."""
    # imported here: the log's plot (plot_log) needs no numba
    from studiod.dsp.loudness import LoudnessMeter
    from studiod.dsp.truepeak import TruePeakMeter, linear_to_dbtp

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
    plt = _pyplot()
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
        _save(fig, path)
    finally:
        plt.close(fig)


def plot_log(
    path_png: str | Path,
    readings: Sequence[dict],
    segments: Sequence[dict] = (),
    target=None,
    title: str = "studiod loudness log",
) -> None:
    """Momentary / short-term loudness and true peak per bus over time (segments shaded,
    the target (a ``dsp.targets.Target``) drawn in), and the listening level and dose where
    logged; writes a PNG."""
    plt = _pyplot()
    import matplotlib.dates as mdates

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
        axes[1].axhline(target.ceiling_dbtp, color="r", ls=":", lw=1.0,
                        label=f"{target.name} ceiling {target.ceiling_dbtp:g} dBTP")  # fmt: skip
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
    try:
        _save(fig, path_png)
    finally:
        plt.close(fig)


def plot_album(path: str | Path, report: dict) -> None:
    """Write a PNG of an album's report (``studiod album``): per track, the integrated
    loudness against its target and the album's, the true peak against the ceiling, the
    gain applied and the limiter's largest reduction."""
    plt = _pyplot()
    tracks = report["tracks"]
    target = report["album"]["target"]
    labels = [f"{t['number']:02d} {t['title'][:18]}" for t in tracks]
    x = np.arange(len(tracks))
    fig, (ax_l, ax_p, ax_g) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    try:
        ax_l.bar(x, [t["integrated_lufs"] for t in tracks], color="#1f4e9c", label="integrated")
        ax_l.scatter(x, [t["target_lufs"] for t in tracks], color="#c0392b", zorder=3,
                     label="track target")  # fmt: skip
        ax_l.axhline(target["integrated_lufs"], color="#c0392b", ls="--", lw=1.0)
        ax_l.set_ylabel("LUFS")
        ax_l.set_ylim(min(t["integrated_lufs"] for t in tracks) - 6.0, 0.0)
        ax_l.legend(loc="lower left")
        ax_l.set_title(f"{report['album']['artist']} - {report['album']['title']} "
                       f"({report['album']['mode']} mode, {target['preset']})")  # fmt: skip
        ax_p.bar(x, [t["true_peak_dbtp"] for t in tracks], color="#2e7d32")
        ax_p.axhline(target["ceiling_dbtp"], color="#c0392b", ls="--", lw=1.0)
        ax_p.set_ylabel("true peak (dBTP)")
        ax_p.set_ylim(min(-12.0, min(t["true_peak_dbtp"] for t in tracks) - 1.0), 1.0)
        width = 0.4
        ax_g.bar(x - width / 2, [t["gain_db"] for t in tracks], width, color="#8aa9d6",
                 label="gain (dB)")  # fmt: skip
        ax_g.bar(x + width / 2, [-t["limiter_max_reduction_db"] for t in tracks], width,
                 color="#e67e22", label="limiter, largest reduction (dB)")  # fmt: skip
        ax_g.axhline(0.0, color="black", lw=0.8)
        ax_g.legend(loc="lower left")
        ax_g.set_xticks(x, labels, rotation=20, ha="right")
        for ax in (ax_l, ax_p, ax_g):
            ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
