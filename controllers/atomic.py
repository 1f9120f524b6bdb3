"""The one crash-safe file writer of studiod (state, snapshots, learned MIDI profiles, audio,
JSON reports, plots).

A file is written to a temporary file with a unique name in the same directory, flushed to
disk (fsync), renamed over the target (atomic on POSIX), and the directory is fsynced so the
rename itself survives a power cut. A crash at any point leaves the old file or the new one,
never a mix, and never a stray temp file of a finished write. It lives here, beside the
controllers that save learned profiles, because the daemon may import the controllers but
not the other way round.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".tmp"  # temp files are ".<name>.<random>.tmp" beside the target


def atomic_write(
    path: str | Path, data: bytes | str | Callable[[str], None], encoding: str = "utf-8"
) -> None:
    """Replace ``path`` with ``data``: bytes, text (``encoding``), or a writer that is given
    the temporary file's path and fills it (a sound file, a plot). Creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        if callable(data):
            os.close(fd)
            fd = -1
            data(tmp)
            fd = os.open(tmp, os.O_RDONLY)
        else:
            blob = data.encode(encoding) if isinstance(data, str) else data
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
