"""Passing the audio callback's arrays to native code, so that it never needs the GIL.

A JACK process callback compiled with ``numba.cfunc`` receives one pointer. Behind it is a
*table*: a flat int64 array holding, for every array the callback uses, its address and its
shape. The callback's state is made of (named) tuples of C-contiguous arrays (the engine's
``EngineState``, a loudness meter's ``LoudnessState``…); a :class:`Layout` writes one such
value into a region of the table (:meth:`Layout.pack`), and a generated function rebuilds
the same value in compiled code with ``numba.carray`` (no copy, no allocation).

The rebuilding functions are generated from the structures' types into ``_unpack.py``
(``python -m studiod.daemon.native`` rewrites it, a test checks it is current), so they are
ordinary cached numba functions. The types of these structures do not depend on the
session, only their shapes do; :meth:`Layout.pack` refuses a value of another type.

Also here: the few LLVM-level operations numba has no public spelling for (an address as
a pointer, a call through a C function pointer).
"""

from __future__ import annotations

import ctypes
import hashlib
import sys
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from studiod.daemon.realtime import populate

# ----------------------------------------------------------------------------------------
# intrinsics


@intrinsic
def address(typingctx, addr):
    """An int64 address as a ``void*`` (for ``numba.carray``)."""
    sig = types.voidptr(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return sig, codegen


@intrinsic
def call_get_buffer(typingctx, fn, port, frames):
    """``((void *(*)(void *, uint32_t)) fn)(port, frames)``: libjack's
    ``jack_port_get_buffer`` through its address."""
    sig = types.voidptr(types.int64, types.int64, types.uint32)

    def codegen(context, builder, signature, args):
        fn_addr, port_addr, n = args
        voidp = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(voidp, [voidp, ir.IntType(32)])
        target = builder.inttoptr(fn_addr, fnty.as_pointer())
        return builder.call(target, [builder.inttoptr(port_addr, voidp), n])

    return sig, codegen


@intrinsic
def call_stream_callback(typingctx, fn, input_, output, frames, status_flags, user_data):
    """``((PaStreamCallback *) fn)(input_, output, frames, NULL, status_flags, user_data)``
    (portaudio.h) with every pointer an int64 address: one compiled entry serves every
    device."""
    sig = types.int32(types.int64, types.int64, types.int64, types.int64, types.int64,
                      types.int64)  # fmt: skip

    def codegen(context, builder, signature, args):
        fn_addr, in_addr, out_addr, n, flags, arg_addr = args
        voidp = ir.IntType(8).as_pointer()
        ulong = ir.IntType(8 * ctypes.sizeof(ctypes.c_ulong))
        fnty = ir.FunctionType(ir.IntType(32), [voidp, voidp, ulong, voidp, ulong, voidp])
        target = builder.inttoptr(fn_addr, fnty.as_pointer())

        def c_ulong(value):
            return builder.trunc(value, ulong) if ulong.width < 64 else value

        return builder.call(target, [builder.inttoptr(in_addr, voidp),
                                     builder.inttoptr(out_addr, voidp), c_ulong(n),
                                     ir.Constant(voidp, None), c_ulong(flags),
                                     builder.inttoptr(arg_addr, voidp)])  # fmt: skip

    return sig, codegen


class Timespec(ctypes.Structure):
    """``struct timespec`` as the C library lays it out here (``time_t`` and ``long`` are
    both ``long`` in glibc on every 64-bit target and on 32-bit ones without time64): the
    intrinsics below build their LLVM struct from these fields, and a test checks the two
    agree."""

    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def llvm_struct(struct: type[ctypes.Structure]) -> ir.LiteralStructType:
    """The LLVM type of a ctypes struct of integer fields (same widths, same order)."""
    return ir.LiteralStructType([ir.IntType(8 * ctypes.sizeof(t)) for _, t in struct._fields_])


_TIMESPEC = llvm_struct(Timespec)


def _to_i64(builder, value):
    i64 = ir.IntType(64)
    return value if value.type.width == 64 else builder.sext(value, i64)


@intrinsic
def clock_ns(typingctx, fn, clock_id):
    """Nanoseconds from ``clock_gettime(clock_id, &ts)`` called through its address ``fn``
    (with CLOCK_MONOTONIC the clock of ``time.perf_counter_ns``; with
    CLOCK_THREAD_CPUTIME_ID the calling thread's own CPU time); 0 when ``fn`` is 0."""
    sig = types.int64(types.int64, types.int64)

    def codegen(context, builder, signature, args):
        fn_addr, clk = args
        i64 = ir.IntType(64)
        ts = cgutils.alloca_once(builder, _TIMESPEC)
        builder.store(ir.Constant(_TIMESPEC, None), ts)
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), _TIMESPEC.as_pointer()])
        result = cgutils.alloca_once_value(builder, i64(0))
        with builder.if_then(builder.icmp_unsigned("!=", fn_addr, i64(0))):
            target = builder.inttoptr(fn_addr, fnty.as_pointer())
            builder.call(target, [builder.trunc(clk, ir.IntType(32)), ts])
            sec = _to_i64(builder, builder.load(cgutils.gep_inbounds(builder, ts, 0, 0)))
            nsec = _to_i64(builder, builder.load(cgutils.gep_inbounds(builder, ts, 0, 1)))
            builder.store(builder.add(builder.mul(sec, i64(1_000_000_000)), nsec), result)
        return builder.load(result)

    return sig, codegen


@intrinsic
def sleep_until_ns(typingctx, fn, clock_id, deadline_ns):
    """``clock_nanosleep(clock_id, TIMER_ABSTIME, &deadline, NULL)`` through its address
    ``fn``: sleep until the absolute time ``deadline_ns`` on ``clock_id`` (no drift, however
    late the caller was). Returns its error number (0, or EINTR when a signal woke it)."""
    sig = types.int64(types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        fn_addr, clk, deadline = args
        i32 = ir.IntType(32)
        ts = cgutils.alloca_once(builder, _TIMESPEC)
        billion = ir.Constant(ir.IntType(64), 1_000_000_000)
        fields = (builder.sdiv(deadline, billion), builder.srem(deadline, billion))
        for k, value in enumerate(fields):
            width = _TIMESPEC.elements[k].width
            builder.store(builder.trunc(value, ir.IntType(width)) if width < 64 else value,
                          cgutils.gep_inbounds(builder, ts, 0, k))  # fmt: skip
        tsp = _TIMESPEC.as_pointer()
        fnty = ir.FunctionType(i32, [i32, i32, tsp, tsp])
        target = builder.inttoptr(fn_addr, fnty.as_pointer())
        err = builder.call(target, [builder.trunc(clk, i32), i32(TIMER_ABSTIME), ts,
                                    ir.Constant(tsp, None)])  # fmt: skip
        return builder.sext(err, ir.IntType(64))

    return sig, codegen


@intrinsic
def call_int(typingctx, fn):
    """``((int (*)(void)) fn)()``, e.g. ``gettid`` or ``sched_getcpu`` through its address."""
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        value = builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [])
        return builder.sext(value, ir.IntType(64))

    return sig, codegen


# The stack an audio thread's deepest call may use below the callback's frame (a design on a
# reload: the engine's stages are inlined into few large frames). JACK's threads have 512 KB
# (jack2 JackPosixThread.h THREAD_STACK); PortAudio's and ours the system's default.
STACK_TOUCH_BYTES = 128 * 1024


@intrinsic
def touch_stack(typingctx, nbytes):
    """Write zeros to the ``nbytes`` of stack below the caller's frame, then give them back
    (llvm.stacksave / a dynamic alloca / llvm.stackrestore). Called on an audio thread's first
    block: its later deep calls then find their stack pages present, where a first touch would
    be a page fault on the audio thread (mlockall's MCL_ONFAULT locks a page only when it is
    first touched). A volatile memset, so that no optimisation removes it."""
    sig = types.none(types.int64)

    def codegen(context, builder, signature, args):
        (n,) = args
        i8p = ir.IntType(8).as_pointer()
        module = builder.module
        save = cgutils.get_or_insert_function(module, ir.FunctionType(i8p, []), "llvm.stacksave")
        restore = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [i8p]), "llvm.stackrestore"
        )
        memset = cgutils.get_or_insert_function(
            module,
            ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(8), ir.IntType(64), ir.IntType(1)]),
            "llvm.memset.p0i8.i64",
        )
        top = builder.call(save, [])
        block = builder.alloca(ir.IntType(8), size=n)
        builder.call(memset, [block, ir.IntType(8)(0), n, ir.IntType(1)(1)])
        builder.call(restore, [top])
        return context.get_dummy_value()

    return sig, codegen


TIMER_ABSTIME = 1  # <time.h>, Linux


def libc_address(name: str) -> int:
    """The address of the C library's function ``name`` (0 where it has none)."""
    try:
        return ctypes.cast(getattr(ctypes.CDLL(None), name), ctypes.c_void_p).value or 0
    except (OSError, AttributeError):
        return 0


# ----------------------------------------------------------------------------------------
# layouts


def _leaves(value) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    return [leaf for item in value for leaf in _leaves(item)]


def _dtype_name(dtype: np.dtype) -> str:
    return "bool_" if dtype == np.bool_ else dtype.name


def describe(value) -> str:
    """The type of a nested (named) tuple of arrays as text: what a layout is made for."""
    if isinstance(value, np.ndarray):
        return f"{_dtype_name(value.dtype)}[{value.ndim}]"
    if not isinstance(value, tuple):
        raise TypeError(f"native layouts hold tuples of arrays, not {type(value).__name__}")
    inner = ", ".join(describe(item) for item in value)
    if hasattr(value, "_fields"):
        kind = type(value)
        return f"{kind.__module__}.{kind.__qualname__}({inner})"
    return f"({inner})"


def fingerprint(value) -> str:
    return hashlib.sha256(describe(value).encode()).hexdigest()[:16]


class Layout:
    """Where one kind of value sits in a table: its leaves' addresses and shapes, in order.

    ``width``: the table slots one value takes (1 + ndim per array)."""

    def __init__(self, name: str, fingerprint_: str, width: int):
        self.name = name
        self.fingerprint = fingerprint_
        self.width = width

    def pack(self, table: np.ndarray, base: int, value) -> None:
        """Write ``value``'s addresses and shapes into ``table[base : base + width]``, and
        map every page of its arrays (:func:`~studiod.daemon.realtime.populate`): the audio
        thread that reads the region next never takes the page fault of a first touch.

        The caller keeps ``value`` alive as long as native code may read the region."""
        if fingerprint(value) != self.fingerprint:
            raise TypeError(f"{self.name}: the value's type differs from the generated layout "
                            "(python -m studiod.daemon.native regenerates it)")  # fmt: skip
        pos = base
        for leaf in _leaves(value):
            if not (leaf.flags.c_contiguous and leaf.flags.writeable and leaf.flags.aligned):
                raise ValueError(f"{self.name}: native code needs C-contiguous, writeable, "
                                 "aligned arrays")  # fmt: skip
            populate(leaf)
            table[pos] = leaf.ctypes.data
            table[pos + 1 : pos + 1 + leaf.ndim] = leaf.shape
            pos += 1 + leaf.ndim
        assert pos - base == self.width


# ----------------------------------------------------------------------------------------
# the generator of _unpack.py


class _Generator:
    """Source text of the unpacking functions: one per named-tuple type (shared by every
    structure that nests it), arrays and plain tuples inline."""

    def __init__(self):
        self.helpers: dict[str, tuple[str, int, str]] = {}  # type: function, width, source
        self.classes: set[type] = set()

    def expression(self, value, pos: int) -> tuple[str, int]:
        """The expression rebuilding ``value`` from ``tab[base + pos:]``, and its width."""
        if isinstance(value, np.ndarray):
            dims = ", ".join(f"tab[base + {pos + 1 + d}]" for d in range(value.ndim))
            dtype = _dtype_name(value.dtype)
            return f"carray(address(tab[base + {pos}]), ({dims},), np.{dtype})", 1 + value.ndim
        if hasattr(value, "_fields"):
            function, width = self.named(value)
            return f"{function}(tab, base + {pos})", width
        parts, width = self.parts(value, pos)
        return f"({', '.join(parts)}{',' if len(parts) == 1 else ''})", width

    def parts(self, value, pos: int) -> tuple[list[str], int]:
        parts, width = [], 0
        for item in value:
            text, item_width = self.expression(item, pos + width)
            parts.append(text)
            width += item_width
        return parts, width

    def named(self, value) -> tuple[str, int]:
        """The helper function for ``value``'s type (made on first use), and its width."""
        kind = type(value)
        key = describe(value)
        if key not in self.helpers:
            parts, width = self.parts(value, 0)
            prefix = f"{kind.__module__}.{kind.__qualname__}("
            same_class = sum(1 for k in self.helpers if k.startswith(prefix))
            function = f"_{kind.__name__}" + (f"_{same_class + 1}" if same_class else "")
            args = "".join(f"        {part},\n" for part in parts)
            source = (f"@unpacker\ndef {function}(tab, base):\n"
                      f"    return {kind.__name__}(\n{args}    )\n")  # fmt: skip
            self.helpers[key] = (function, width, source)
            self.classes.add(kind)
        function, width, _ = self.helpers[key]
        return function, width


def generate(templates: dict[str, object]) -> str:
    """The source of ``_unpack.py`` for ``{name: template value}``."""
    gen = _Generator()
    functions = []
    constants = []
    for name, value in templates.items():
        body, width = gen.expression(value, 0)
        upper = name.upper()
        constants.append(f'{upper}_FINGERPRINT = "{fingerprint(value)}"')
        constants.append(f"{upper}_WIDTH = {width}")
        functions.append(
            f"@unpacker\ndef unpack_{name}(tab, base):\n"
            f'    """The {name} packed at ``tab[base:]``."""\n'
            f"    return {body}\n"
        )
    modules: dict[str, list[str]] = {"studiod.daemon.native": ["address", "unpacker"]}
    for kind in gen.classes:
        modules.setdefault(kind.__module__, []).append(kind.__name__)
    imports = [
        f"from {module} import {', '.join(sorted(names))}"
        for module, names in sorted(modules.items())
    ]
    helpers = [source for *_, source in gen.helpers.values()]
    return "\n".join(
        [
            '"""Generated by ``python -m studiod.daemon.native``: do not edit.',
            "",
            "Each ``unpack_*`` rebuilds, in compiled code, a value that ``native.Layout.pack``",
            'wrote into a table (see studiod.daemon.native)."""',
            "",
            "import numpy as np",
            "from numba import carray",
            "",
            *imports,
            "",
            *constants,
            "",
            "",
            "\n\n".join(helpers + functions),
        ]
    )


unpacker = numba.njit(nogil=True, cache=True, inline="always")
"""Decorator of the generated functions (inlined: the table reads fold into the caller)."""


def templates() -> dict[str, object]:
    """One value of every kind the audio callback reads through its table."""
    from studiod.daemon import reference, rtstate
    from studiod.dsp import loudness as ld
    from studiod.dsp import loudtap
    from studiod.dsp.engine import Engine
    from studiod.dsp.session import default_session

    engine = Engine(default_session())
    session = engine.session
    return {
        "slot": rtstate.make_slot(engine, (), (), 64),
        "shared": rtstate.make_shared(session.samplerate, 64, 2),
        "meter": ld.make_state(session.samplerate, np.ones(2)),
        "player": reference.ReferencePlayer(session.samplerate).state,
        "tap": loudtap.make_tap_state(session.samplerate, loudtap.buses_for_session(session, None)),
    }


UNPACK_PATH = Path(__file__).with_name("_unpack.py")


def main(argv: list[str]) -> int:
    """``python -m studiod.daemon.native [--check]``: rewrite (or check) _unpack.py."""
    import subprocess

    source = generate(templates())
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(UNPACK_PATH), "-"],
        input=source, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "--check" in argv:
        current = UNPACK_PATH.read_text() if UNPACK_PATH.exists() else ""
        if current != formatted:
            print(f"{UNPACK_PATH} is out of date: python -m studiod.daemon.native", file=sys.stderr)
            return 1
        return 0
    UNPACK_PATH.write_text(formatted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
