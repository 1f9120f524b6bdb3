"""The numba cache key: every source compiled code can see, and nothing else."""

import ast
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
          b"def f():\n    from studiod.dsp.loudness import x\n" \
          b"from studiod.controllers import (\n    hub,  # a comment\n    osc as o,\n)\n" \
          b"import numpy as np\nfrom studiod.daemon import native, rtcore as rt\n"  # fmt: skip
    expected = {("dsp", "engine"), ("daemon", "rtstate"), ("dsp", "loudness"),
                ("controllers", "hub"), ("controllers", "osc"), ("daemon", "native"),
                ("daemon", "rtcore")}  # fmt: skip
    assert _jit._studiod_imports(src) == expected == _imports_by_syntax_tree(src)


def _imports_by_syntax_tree(source: bytes) -> set[tuple[str, str]]:
    """The reference: every ``studiod.F.M`` an import statement names, from Python's parser."""
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
            if len(parts) >= 3 and parts[0] == "studiod" and parts[1] in _jit._FOLDERS:
                found.add((parts[1], parts[2]))
    return found


def test_the_import_scan_finds_what_the_syntax_tree_finds_on_every_file():
    """Never less (a missed import would keep a stale cache); more only where the text of an
    import sits in a string (the benchmarks' child-process scripts): a needless recompile."""
    folders = (*_jit._FOLDERS, "tests", "benchmarks", "tools")
    paths = [p for folder in folders for p in (ROOT / folder).rglob("*.py")]
    assert len(paths) > 100
    for path in paths:
        source = path.read_bytes()
        scanned, reference = _jit._studiod_imports(source), _imports_by_syntax_tree(source)
        if path.parent.name in _jit._FOLDERS:
            assert scanned == reference, path
        else:
            assert scanned >= reference, path
