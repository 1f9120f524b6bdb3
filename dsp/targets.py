"""Delivery targets: integrated loudness, true-peak ceiling, tolerance, and their sources.

The one table of targets: ``studiod analyze``/``master``/``render`` (as presets), the
loudness log's segment verdicts, ``studiod log --plot`` and the live alerts all read it.
Pure data (no numba): the config and the ``studiod log`` command import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A delivery target: integrated loudness, true-peak ceiling, and where they come from.

    tolerance_lu: how far from the target a measurement may be and still comply (the
    offline analysis, the loudness log's segments, the live ``target`` alert);
    bits / samplerate: the delivery format the preset implies (None: keep the input's).
    """

    name: str
    integrated_lufs: float
    ceiling_dbtp: float
    tolerance_lu: float
    source: str
    bits: str | None = None
    samplerate: int | None = None


# Streaming platforms normalise playback to their reference and tolerate any loudness; the
# ±1 LU compliance window for them is ours (a master within 1 LU is played back nearly as
# mastered). Broadcast tolerances are the standards' own.
TARGETS: dict[str, Target] = {
    p.name: p
    for p in (
        Target(
            "spotify",
            -14.0,
            -1.0,
            1.0,
            "Spotify for Artists, 'Loudness normalization': master at -14 LUFS integrated, "
            "true peak below -1 dBTP",
        ),
        Target(
            "apple",
            -16.0,
            -1.0,
            1.0,
            "Apple Music Sound Check plays at -16 LUFS; Apple Digital Masters guidance: "
            "true peak at most -1 dBTP",
        ),
        Target(
            "youtube",
            -14.0,
            -1.0,
            1.0,
            "YouTube normalises music to about -14 LUFS (no published spec); -1 dBTP as "
            "AES TD1004.1.15-10 recommends for streaming",
        ),
        Target(
            "tidal",
            -14.0,
            -1.0,
            1.0,
            "TIDAL loudness normalisation to -14 LUFS; -1 dBTP per AES TD1004.1.15-10",
        ),
        Target(
            "amazon",
            -14.0,
            -2.0,
            1.0,
            "Amazon Music for Artists loudness guidance: -14 LUFS integrated, -2 dBTP",
        ),
        Target(
            "ebu-r128",
            -23.0,
            -1.0,
            0.5,
            "EBU R 128 (2020): programme loudness -23 LUFS (±0.5 LU), maximum true peak -1 dBTP",
        ),
        Target(
            "atsc",
            -24.0,
            -2.0,
            2.0,
            "ATSC A/85:2013: target -24 LKFS (±2 dB), true peak at most -2 dBTP",
        ),
        Target(
            "cd",
            -10.0,
            -0.3,
            1.0,
            "Red Book CD (IEC 60908) has no loudness norm: studiod's choice of -10 LUFS, "
            "typical of current CD masters, with a -0.3 dBTP ceiling for consumer DACs' "
            "inter-sample overs; 16-bit / 44.1 kHz as IEC 60908 requires",
            bits="16",
            samplerate=44100,
        ),
    )
}


def target(name: str) -> Target:
    """The target called ``name``; ValueError naming the choices otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; one of {', '.join(TARGETS)}") from None
