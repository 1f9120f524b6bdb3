"""The one way studiod compiles kernels, and where numba keeps the compiled code.

numba's on-disk cache is keyed by the file that defines a function, not by the files it
calls (nor the module constants it froze in), so a cached engine can silently keep an old
copy of a kernel from another module. The cache therefore lives in a directory named after
a hash of the *compiled* sources: every module that defines compiled code and every studiod
module those import, transitively. An edit to an OSC handler, the CLI or the config loader
(which no kernel imports) keeps the cache; any change a kernel can see gives a fresh one.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numba
from numba import types
from numba.core import cgutils
from numba.core.event import Listener, register, unregister
from numba.core.registry import CPUDispatcher
from numba.extending import intrinsic

_PACKAGE_DIR = Path(__file__).resolve().parent


# A module defines compiled code when it imports numba or the ``kernel`` decorator.
_DEFINES_COMPILED = re.compile(
    rb"^\s*(?:import numba|from numba\b|from studiod\.dsp\._jit import [^\n]*\bkernel\b)",
    re.MULTILINE,
)
_FOLDERS = ("dsp", "daemon", "controllers")


# ``import studiod.F.M``, ``from studiod.F.M import ...`` and ``from studiod.F import M, N``
# (a parenthesised list may span lines), at any indentation. A regular expression rather than
# the syntax tree: this runs at every start, and parsing the compiled modules took 0.28 s of
# it (tests/dsp/test_jit_cache.py holds it to the syntax tree's answer on every file).
_IMPORT = re.compile(
    rb"^[ \t]*(?:import[ \t]+studiod\.(\w+)\.(\w+)"
    rb"|from[ \t]+studiod\.(\w+)(?:\.(\w+))?[ \t]+import[ \t]+(\([^)]*\)|[^\n]*))",
    re.MULTILINE,
)


def _studiod_imports(source: bytes) -> set[tuple[str, str]]:
    """(folder, module) of every ``studiod.*`` module a source imports, at any depth."""
    found = set()
    for match in _IMPORT.finditer(source):
        folder, module, names = match[1] or match[3], match[2] or match[4], match[5]
        if module:
            found.add((folder.decode(), module.decode()))
            continue
        for part in re.sub(rb"#[^\n]*", b"", names).strip(b"() \t\n\\").split(b","):
            words = part.split()  # "name" or "name as alias"
            if words:
                found.add((folder.decode(), words[0].decode()))
    return {(folder, module) for folder, module in found if folder in _FOLDERS}


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


class _Kernel(CPUDispatcher):
    """numba's dispatcher, minus one specialisation: a kernel called from compiled code with
    a constant argument (``f(x, 0)``, ``g(y, False)``) is compiled for the argument's type,
    not for that one value. numba types constants as literals and compiles a callee once per
    literal it is called with, each copy with its whole call tree: the daemon's first start
    compiled the engine's inner stages two to seven times over (numba 0.68, ``numba:compile``
    events counted per function)."""

    def get_call_template(self, args, kws):
        args = tuple(types.unliteral(a) for a in args)
        kws = {k: types.unliteral(v) for k, v in kws.items()}
        return super().get_call_template(args, kws)


def kernel(func=None, *, inline: bool = False):
    """Decorator for every audio kernel: nopython, releases the GIL, cached on disk.

    ``@kernel(inline=True)`` marks a stage with a single caller: numba puts its code into
    the caller's before compiling (``inline="always"``) instead of compiling it on its own.
    numba optimises every compiled function again with everything it calls linked in, in
    each function that calls it; the engine's stages were optimised five times over
    (``process_block`` -> ``_engine_block`` -> ``_channels`` -> ...), most of a first
    start. Called from Python, an inline kernel compiles as any other."""
    if func is None:
        return lambda f: kernel(f, inline=inline)
    options = {"nopython": True, "nogil": True, "fastmath": FASTMATH, "boundscheck": None}
    if inline:
        options["inline"] = "always"
    dispatcher = _Kernel(py_func=func, locals={}, targetoptions=options)
    dispatcher.enable_caching()
    return dispatcher


@intrinsic
def fence(typingctx):
    """A sequentially consistent memory fence (LLVM ``fence seq_cst``): the ordering point
    between a lock-free writer's data and the index that publishes it, and between a reader's
    index and the data it then reads. Free on x86 for plain loads/stores, needed on ARM."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def stack_empty(typingctx, size, dtype):
    """``np.empty(size, dtype)`` on the stack, ``size`` a constant: scratch that LLVM knows
    no argument array can alias, so loops over it vectorise without a run-time overlap check
    (numba's arrays carry no such guarantee) and need no allocation. Aligned to 64 bytes,
    a cache line: a vector stored across two lines is not forwarded to the load that reads
    it back, which then waits for the store to reach the cache (measured: the filter
    cascade's state round trip 1.4x slower on an 8-byte-aligned stack)."""
    if not isinstance(size, types.IntegerLiteral) or not isinstance(dtype, types.NumberClass):
        return None
    length = size.literal_value
    array = types.Array(dtype.instance_type, 1, "C")

    def codegen(context, builder, signature, args):
        intp = context.get_value_type(types.intp)
        item = context.get_value_type(dtype.instance_type)
        itemsize = context.get_abi_sizeof(item)
        data = cgutils.alloca_once(builder, item, size=length)
        data.align = 64
        out = context.make_array(array)(context, builder)
        context.populate_array(
            out,
            data=data,
            shape=[intp(length)],
            strides=[intp(itemsize)],
            itemsize=intp(itemsize),
            meminfo=None,
        )
        return out._getvalue()

    return array(size, dtype), codegen


@kernel
def publish(ctl, index, value):
    """``ctl[index] = value``, ordered after every earlier store of the calling thread and
    before every later load: the control side's half of a lock-free handshake (the second
    fence keeps a following read of the audio thread's flags from overtaking the store)."""
    fence()
    ctl[index] = value
    fence()


# What people waiting on a first start read: the kernels Python calls directly, by the name of
# the part of studiod they are (a kernel missing here is shown as module.function).
_STAGES = {
    "process_block": "the engine",
    "_tick": "the engine's parameter path",
    "core_block": "the audio callback",
    "tap_process": "the loudness log's meters",
    "loudness_reset": "the loudness meters",
    "partition_fir": "the linear-phase EQ",
    "design_linphase_fir": "the linear-phase EQ",
}


class CompileProgress(Listener):
    """Reports numba's compiling while it happens, so that a first start (minutes on a Pi)
    never looks like a hang: ``report(text)`` when a kernel called from Python starts
    compiling (a stage), every ``every_s`` while compiling goes on (functions done, numba's
    own helpers among them; seconds), and once at the end. Nothing is reported when
    everything comes from the cache. A context manager; ``report`` is called from a helper
    thread too."""

    def __init__(self, report: Callable[[str], None], every_s: float = 5.0):
        self.report = report
        self.every_s = every_s
        self.functions = 0  # compiled (cache loads are not compiles), numba's helpers too
        self._depth = 0
        self._current = ""
        self._stage: str | None = None
        self._started: float | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _name(event) -> tuple[str, str]:
        func = event.data["dispatcher"].py_func
        short = func.__qualname__
        return short, f"{func.__module__.rsplit('.', 1)[-1]}.{short}"

    def on_start(self, event) -> None:
        short, full = self._name(event)
        ours = event.data["dispatcher"].py_func.__module__.startswith("studiod.")
        with self._lock:
            first = self._started is None
            if first:
                self._started = time.monotonic()
            self._depth += 1
            if ours:  # not numba's own helpers, compiled on the way
                self._current = full
            stage = _STAGES.get(short, full) if self._depth == 1 else None
            if stage == self._stage:
                stage = None  # two kernels of one stage: one line
            elif stage is not None:
                self._stage = stage
        if first:
            self.report(
                "compiling the DSP kernels for this machine (once: the machine code is "
                f"cached in {CACHE_DIR})"
            )
        if stage is not None:
            self.report(f"compiling {stage}")

    def on_end(self, event) -> None:
        with self._lock:
            self._depth -= 1
            self.functions += 1

    def _heartbeat(self) -> None:
        while not self._done.wait(self.every_s):
            with self._lock:
                started, functions, current = self._started, self.functions, self._current
                busy = self._depth > 0
            if started is not None and busy:
                elapsed_s = time.monotonic() - started
                where = f" (in {current})" if current else ""
                self.report(f"{functions} functions compiled in {elapsed_s:.0f} s{where}")

    def __enter__(self) -> CompileProgress:
        register("numba:compile", self)
        self._thread = threading.Thread(target=self._heartbeat, name="studiod-compile-progress",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        unregister("numba:compile", self)
        self._done.set()
        self._thread.join()
        if self._started is not None:
            elapsed_s = time.monotonic() - self._started
            self.report(f"compiled {self.functions} functions in {elapsed_s:.0f} s")
