"""Reading and writing audio files, with errors that say what went wrong."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from studiod.controllers.atomic import atomic_path


class AudioFileError(OSError):
    """An audio file that cannot be read or written; the message names the file."""


def read(path: str | Path) -> tuple[np.ndarray, int]:
    """float32 [frames, channels] and the sample rate."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    try:
        data, samplerate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioFileError(f"{path}: cannot read as audio ({exc})") from None
    return data, samplerate


def write_atomic(
    path: str | Path, data: np.ndarray, samplerate: int, subtype: str = "PCM_24"
) -> None:
    """Write through a temporary file in the same directory and rename it into place, so a
    failure never leaves a half-written file or clobbers an existing one."""
    channels = 1 if data.ndim == 1 else data.shape[1]
    with atomic_sound_file(path, samplerate, channels, subtype) as out:
        out.write(data)


@contextlib.contextmanager
def atomic_sound_file(
    path: str | Path, samplerate: int, channels: int, subtype: str = "PCM_24"
) -> Iterator[sf.SoundFile]:
    """An open SoundFile to write block by block (memory flat with length): a temporary file
    in the same directory, fsynced and renamed to ``path`` when the block ends without an
    exception, removed otherwise (the one way studiod writes audio files)."""
    path = Path(path)
    fmt = _format_for(path)
    with (
        atomic_path(path) as tmp,
        sf.SoundFile(
            tmp, "w", samplerate=samplerate, channels=channels, subtype=subtype, format=fmt
        ) as out,
    ):
        yield out


def _format_for(path: Path) -> str:
    formats = {".wav": "WAV", ".flac": "FLAC", ".aif": "AIFF", ".aiff": "AIFF"}
    try:
        return formats[path.suffix.lower()]
    except KeyError:
        raise AudioFileError(
            f"{path}: unsupported output format {path.suffix!r}; use {sorted(formats)}"
        ) from None
