"""How studiod compiles: one specialisation per argument type, and progress while it works."""

import subprocess
import sys
import threading

import numba
import numpy as np

from studiod.daemon import offline
from studiod.dsp import _jit


@_jit.kernel
def _pick(x, k):
    return x[k]


@_jit.kernel
def _two_constants(x):
    return _pick(x, 0) + _pick(x, 1)


def test_a_constant_argument_does_not_make_a_specialisation_of_its_own():
    assert _two_constants(np.arange(3.0)) == 1.0
    # A second run of the suite loads _two_constants from numba's cache (keyed by the source's
    # contents), which never looks at _pick: compile it afresh, resolving its calls.
    _two_constants.recompile()
    # numba alone compiles _pick for Literal[int](0) and for Literal[int](1)
    assert [tuple(map(str, s)) for s in _pick.signatures] == [("array(float64, 1d, C)", "int64")]


def test_progress_reports_stages_a_heartbeat_and_the_total():
    lines: list[str] = []
    slow_started = threading.Event()

    @numba.njit  # not cached: it compiles on every run of this test
    def inner(x):
        return x + 1.0

    @numba.njit
    def outer(x):
        return inner(x) * 2.0

    def report(text: str) -> None:
        lines.append(text)
        if "compiled in" in text or "functions compiled" in text:
            slow_started.set()

    progress = _jit.CompileProgress(report, every_s=0.05)
    with progress:
        # hold the compile open long enough for a heartbeat: a listener that waits
        waiter = _Waiter(slow_started)
        numba.core.event.register("numba:compile", waiter)
        try:
            assert outer(1.0) == 4.0
        finally:
            numba.core.event.unregister("numba:compile", waiter)
    assert lines[0].startswith("compiling the DSP kernels for this machine")
    assert str(_jit.CACHE_DIR) in lines[0]
    assert any(line.endswith(".outer") and line.startswith("compiling ") for line in lines)
    assert not any(line.endswith(".inner") and line.startswith("compiling ") for line in lines)
    assert any("functions compiled in" in line for line in lines), lines
    assert lines[-1].startswith(f"compiled {progress.functions} functions in ")
    assert progress.functions >= 2


class _Waiter(numba.core.event.Listener):
    """Keeps the outer compile going until the heartbeat has spoken (at most 5 s)."""

    def __init__(self, spoken: threading.Event):
        self.spoken = spoken

    def on_start(self, event) -> None:
        pass

    def on_end(self, event) -> None:
        if event.data["dispatcher"].py_func.__name__ == "inner":
            self.spoken.wait(5.0)


def test_nothing_is_reported_when_nothing_compiles():
    _two_constants(np.arange(3.0))  # compiled (or loaded) above
    lines: list[str] = []
    with _jit.CompileProgress(lines.append, every_s=0.01):
        _two_constants(np.arange(3.0))
    assert lines == []


def test_warmup_prepares_the_demo_without_touching_its_state(tmp_path):
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "XDG_STATE_HOME": str(tmp_path / "s")}
    env["NUMBA_CACHE_DIR"] = str(_jit.CACHE_DIR.parent)  # this run's cache: warm or not
    done = subprocess.run([sys.executable, "-m", "studiod.daemon.cli", "warmup"], env=env,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warm: the compiled code for the demo is in" in done.stderr
    assert not (tmp_path / "s").exists()  # the demo's state folder was never made
    # and `studiod analyze` finds its kernels cached (offline.ensure_analysis_cached)
    assert (_jit.CACHE_DIR / offline._ANALYSIS_CACHED).exists()
