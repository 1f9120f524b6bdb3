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

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

TEMP_SUFFIX = ".tmp"  # temp files are ".<name>.<random>.tmp" beside the target


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """A temporary file's path beside ``path`` to fill (a sound file written block by
    block, a plot): when the block ends without an exception, the file is fsynced and
    renamed over ``path`` and the folder fsynced; otherwise it is removed. Creates the
    folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write(
    path: str | Path, data: bytes | str | Callable[[str], None], encoding: str = "utf-8"
) -> None:
    """Replace ``path`` with ``data``: bytes, text (``encoding``), or a writer that is given
    the temporary file's path and fills it (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data.encode(encoding) if isinstance(data, str) else data)
