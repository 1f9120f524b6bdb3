"""The one way studiod compiles kernels, and where numba keeps the compiled code.

numba's on-disk cache is keyed by the file that defines a function, not by the files it
calls, so a cached engine can silently keep an old copy of a kernel from another module.
The cache therefore lives in a directory named after a hash of every source file of
studiod: any change to any kernel gives a fresh cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numba

_PACKAGE_DIR = Path(__file__).resolve().parent


def _source_hash() -> str:
    # Every folder of studiod: the daemon's callback kernels call into dsp kernels too.
    digest = hashlib.sha256(numba.__version__.encode())
    for folder in ("dsp", "daemon", "controllers"):
        for path in sorted((_PACKAGE_DIR.parent / folder).glob("*.py")):
            digest.update(f"{folder}/{path.name}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _cache_root() -> Path:
    # systemd's CacheDirectory= sets NUMBA_CACHE_DIR; otherwise follow XDG.
    explicit = os.environ.get("NUMBA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "studiod" / "numba"


CACHE_DIR = _cache_root() / _source_hash()
numba.config.CACHE_DIR = str(CACHE_DIR)

# Reassociation and contraction let LLVM vectorise the lane loops (measured 1.5x on the
# biquad bank); "nnan" and "ninf" stay off so that NaN/Inf checks keep their meaning.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

kernel = numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
"""Decorator for every audio kernel: nopython, releases the GIL, cached on disk."""
