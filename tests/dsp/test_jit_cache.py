"""The numba cache key: every source compiled code can see, and nothing else."""

from pathlib import Path

from studiod.dsp import _jit

ROOT = Path(_jit.__file__).resolve().parents[1]


def _names() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in _jit.compiled_sources()}


def test_key_covers_every_kernel_module_and_what_they_import():
    names = _names()
    # kernels, and the module constants they freeze in (rtstate's indices)
    for name in ("dsp/engine.py", "dsp/loudness.py", "daemon/rtcore.py", "daemon/rtstate.py",
                 "daemon/_unpack.py", "daemon/native.py", "dsp/loudtap.py"):  # fmt: skip
        assert name in names
    # every module of studiod that defines compiled code is in it
    for path in (p for folder in _jit._FOLDERS for p in (ROOT / folder).glob("*.py")):
        if _jit._DEFINES_COMPILED.search(path.read_bytes()):
            assert path.relative_to(ROOT).as_posix() in names


def test_control_side_edits_keep_the_cache():
    names = _names()
    for name in ("controllers/osc.py", "daemon/cli.py", "daemon/config.py", "daemon/runtime.py",
                 "daemon/loudlog.py", "daemon/logdb.py"):  # fmt: skip
        assert name not in names


def test_studiod_imports_follow_every_spelling():
    src = b"import studiod.dsp.engine\nfrom studiod.daemon import rtstate\n" \
          b"def f():\n    from studiod.dsp.loudness import x\n"  # fmt: skip
    assert _jit._studiod_imports(src) == {("dsp", "engine"), ("daemon", "rtstate"),
                                          ("dsp", "loudness")}  # fmt: skip
