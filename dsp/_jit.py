"""The one way studiod compiles kernels, and where numba keeps the compiled code.

numba's on-disk cache is keyed by the file that defines a function, not by the files it
calls (nor the module constants it froze in), so a cached engine can silently keep an old
copy of a kernel from another module. The cache therefore lives in a directory named after
a hash of the *compiled* sources: every module that defines compiled code and every studiod
module those import, transitively. An edit to an OSC handler, the CLI or the config loader
(which no kernel imports) keeps the cache; any change a kernel can see gives a fresh one.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from pathlib import Path

import numba
from numba import types
from numba.extending import intrinsic

_PACKAGE_DIR = Path(__file__).resolve().parent


# A module defines compiled code when it imports numba or the ``kernel`` decorator.
_DEFINES_COMPILED = re.compile(
    rb"^\s*(?:import numba|from numba\b|from studiod\.dsp\._jit import [^\n]*\bkernel\b)",
    re.MULTILINE,
)
_FOLDERS = ("dsp", "daemon", "controllers")


def _studiod_imports(source: bytes) -> set[tuple[str, str]]:
    """(folder, module) of every ``studiod.*`` module a source imports, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if len(parts) >= 3 and parts[0] == "studiod" and parts[1] in _FOLDERS:
                found.add((parts[1], parts[2]))
    return found


def compiled_sources() -> list[Path]:
    """The source files the compiled code depends on (see the module docstring), sorted."""
    root = _PACKAGE_DIR.parent
    sources = {(f, p.stem): p.read_bytes() for f in _FOLDERS for p in (root / f).glob("*.py")}
    todo = [key for key, text in sources.items() if _DEFINES_COMPILED.search(text)]
    seen = set(todo)
    while todo:
        for dep in _studiod_imports(sources[todo.pop()]):
            if dep in sources and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return sorted(root / folder / f"{module}.py" for folder, module in seen)


def _source_hash() -> str:
    digest = hashlib.sha256(numba.__version__.encode())
    root = _PACKAGE_DIR.parent
    for path in compiled_sources():
        digest.update(path.relative_to(root).as_posix().encode())
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


@intrinsic
def fence(typingctx):
    """A sequentially consistent memory fence (LLVM ``fence seq_cst``): the ordering point
    between a lock-free writer's data and the index that publishes it, and between a reader's
    index and the data it then reads. Free on x86 for plain loads/stores, needed on ARM."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


@kernel
def publish(ctl, index, value):
    """``ctl[index] = value``, ordered after every earlier store of the calling thread and
    before every later load: the control side's half of a lock-free handshake (the second
    fence keeps a following read of the audio thread's flags from overtaking the store)."""
    fence()
    ctl[index] = value
    fence()
