"""``studiod analyze`` over a catalog: ``--jobs N`` worker processes and ``--scheduler`` on a
Dask cluster (a ``LocalCluster`` of separate worker processes on 127.0.0.1) print the same
JSON, bit for bit, as a serial run; a bad file, a dead worker, an unreachable scheduler, a
scheduler without workers and a missing Dask are clear one-line errors."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from dask.distributed import LocalCluster

from studiod.daemon import cmd_analyze
from studiod.daemon.cli import main
from studiod.daemon.offline import EXIT_ERROR, EXIT_OK, Progress, analyze_file
from studiod.dsp.demo_session import synthesize

FS = 48000
# Loopback only: the scheduler, the nannies, the workers and the scheduler's HTTP server (on
# a free port, not the shared default 8787) all listen on 127.0.0.1.
CLUSTER = dict(
    processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
)


@pytest.fixture(scope="module")
def cluster():
    """A Dask scheduler and two worker processes (nannies) on 127.0.0.1."""
    with LocalCluster(n_workers=2, **CLUSTER) as c:
        yield c


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> list[str]:
    """Six short files (absolute paths) of different levels, lengths and layouts: stereo
    float, stereo 16-bit, mono and a silent one."""
    root = tmp_path_factory.mktemp("catalog")
    tracks = synthesize(4.0, FS)[:, :8].astype(np.float64)
    names = []
    for k in range(6):
        frames = int(FS * (2.0 + 0.5 * k))
        left = tracks[:frames, [0, 1, 3, 4]].sum(axis=1)
        right = tracks[:frames, [0, 2, 5, 6]].sum(axis=1)
        x = np.stack([left, right], axis=1)
        x *= 10.0 ** (-(1.0 + 2.5 * k) / 20.0) / np.max(np.abs(x))  # peak -1 … -13.5 dBFS
        name = f"track{k}.wav"
        if k == 2:
            sf.write(root / name, x.mean(axis=1).astype(np.float32), FS, subtype="FLOAT")
        elif k == 4:
            sf.write(root / name, np.zeros((frames, 2), np.float32), FS, subtype="PCM_16")
        else:
            sf.write(root / name, x.astype(np.float32), FS, subtype="PCM_16" if k % 2 else "FLOAT")
        names.append(name)
    return [str(root / n) for n in names]


def cli(*args: str, cwd=None, timeout: float = 120.0, env=None) -> subprocess.CompletedProcess:
    """``python -m studiod.daemon.cli analyze ARGS`` in a subprocess (the user's entry)."""
    return subprocess.run(
        [sys.executable, "-m", "studiod.daemon.cli", "analyze", *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env,
    )  # fmt: skip


def test_jobs_and_dask_give_the_serial_json(catalog, cluster):
    # relative paths from the catalog's directory: the Dask workers run elsewhere (their
    # working directory is this test's) and must still find the files
    cwd = os.path.dirname(catalog[0])
    names = [os.path.basename(p) for p in catalog]
    runs = {
        "--jobs 1": cli("--json", "--jobs", "1", *names, cwd=cwd),
        "--jobs 2": cli("--json", "--jobs", "2", *names, cwd=cwd),
        "--scheduler": cli("--json", "--scheduler", cluster.scheduler_address, *names, cwd=cwd),
    }
    for how, proc in runs.items():
        assert proc.returncode == EXIT_OK, (how, proc.stderr)
        assert "Traceback" not in proc.stderr, how
    serial = json.loads(runs["--jobs 1"].stdout)
    assert [r["path"] for r in serial] == names  # as given, in the order given
    assert serial[0]["album"]["integrated_lufs"] is not None
    assert serial[4]["integrated_lufs"] is None  # the silent file
    assert serial[2]["channels"] == 1
    for how in ("--jobs 2", "--scheduler"):
        assert json.loads(runs[how].stdout) == serial, how  # every float identical
        assert runs[how].stdout == runs["--jobs 1"].stdout, how


def test_the_first_run_on_an_empty_cache_prints_what_every_later_one_does(catalog, tmp_path):
    """A process that compiles runs other machine code than one that loads the cache (see
    offline.ensure_analysis_cached): the first run compiles in a child and measures with the
    cached code like every later one, serial or in workers."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "empty-cache")
    first = cli("--json", "--jobs", "1", *catalog, env=env, timeout=600.0)
    again = cli("--json", "--jobs", "1", *catalog, env=env)
    in_workers = cli("--json", "--jobs", "2", *catalog, env=env)
    for proc in (first, again, in_workers):
        assert proc.returncode == EXIT_OK, proc.stderr
    assert first.stdout == again.stdout == in_workers.stdout
    # the compiling is shown as it happens, once
    assert "compiling the DSP kernels for this machine" in first.stderr
    assert "compiled" in first.stderr.splitlines()[-1]
    assert "compil" not in again.stderr + in_workers.stderr


def test_jobs_default_and_one_file(catalog, capsys, monkeypatch):
    """No --jobs: one worker process per core; --jobs 1 and a single file: no workers."""
    pools = []
    in_processes = cmd_analyze._in_processes
    monkeypatch.setattr(
        cmd_analyze, "_in_processes", lambda *a: pools.append(a[2]) or in_processes(*a)
    )
    assert main(["analyze", "--json", *catalog[:3]]) == EXIT_OK
    default = json.loads(capsys.readouterr().out)
    assert pools == [os.cpu_count()]
    assert main(["analyze", "--json", "--jobs", "1", *catalog[:3]]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == default
    assert main(["analyze", "--json", "--jobs", "4", catalog[0]]) == EXIT_OK
    (alone,) = json.loads(capsys.readouterr().out)
    assert "album" not in alone and alone == {k: v for k, v in default[0].items() if k != "album"}
    assert pools == [os.cpu_count()]  # neither of the last two started workers


def test_a_worker_sends_back_the_bins_that_hold_blocks(catalog):
    """What crosses from a worker: the readings and the sparse gating histogram."""
    for path in catalog:
        res = analyze_file(path)
        assert np.all(res.gating.fine[:, 1] > 0)  # only bins that hold blocks
        assert len(pickle.dumps(res)) < 8192  # these files are short: a few kB


@pytest.mark.parametrize("where", ["--jobs", "--scheduler"])
def test_a_bad_file_among_many_is_named(catalog, cluster, tmp_path, where):
    bad = tmp_path / "not-audio.wav"
    bad.write_text("this is not a WAV file\n")
    files = [*catalog[:3], str(bad), *catalog[3:]]
    how = ["--jobs", "2"] if where == "--jobs" else ["--scheduler", cluster.scheduler_address]
    proc = cli("--json", *how, *files)
    assert proc.returncode == EXIT_ERROR
    assert proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("studiod analyze: error: ")
    assert str(bad) in line and "unsupported or unreadable audio format" in line


def _die_in_a_worker(path, progress=None, finite_only=False):
    """analyze_file here; in a worker process, the process dies (as if OOM-killed)."""
    if multiprocessing.parent_process() is not None:
        os._exit(9)
    return analyze_file(path, progress, finite_only)


def test_a_dead_worker_is_a_clear_error(catalog, monkeypatch, capsys):
    monkeypatch.setattr(cmd_analyze, "analyze_file", _die_in_a_worker)
    assert main(["analyze", "--jobs", "2", *catalog[:3]]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("studiod analyze: error: a worker process died")
    assert "Traceback" not in err


def test_workers_from_a_fork_server_when_threads_run(catalog, monkeypatch):
    """A caller that runs other threads gets workers from a fork server (a fork would copy
    locks those threads hold), with the same results."""
    methods = []
    get_context = multiprocessing.get_context
    monkeypatch.setattr(
        multiprocessing, "get_context", lambda m: methods.append(m) or get_context(m)
    )
    serial = cmd_analyze.analyze(catalog, jobs=1)
    parallel = cmd_analyze.analyze(catalog, jobs=2)  # forked if pytest runs no thread now
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        threaded = cmd_analyze.analyze(catalog, jobs=2)
    finally:
        stop.set()
        other.join()
    assert threaded == parallel == serial
    assert methods[-1] == "forkserver"


def test_unreachable_scheduler_fails_fast(catalog):
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    start = time.monotonic()
    proc = cli("--scheduler", address, *catalog[:2], timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == EXIT_ERROR
    reason = f"studiod analyze: error: cannot reach the Dask scheduler at {address}: "
    assert proc.stderr.startswith(reason)
    assert "Traceback" not in proc.stderr
    # the connect timeout and the interpreter's start, with room for a loaded machine
    assert elapsed < cmd_analyze.SCHEDULER_TIMEOUT_S + 10.0


def test_scheduler_without_workers(catalog, capsys):
    with LocalCluster(n_workers=0, **CLUSTER) as empty:
        code = main(["analyze", "--scheduler", empty.scheduler_address, *catalog[:2]])
        address = empty.scheduler_address
    assert code == EXIT_ERROR
    assert f"the Dask scheduler at {address} has no workers" in capsys.readouterr().err


def test_workers_without_studiod(catalog, tmp_path, capsys):
    """Workers whose Python cannot import studiod (a preload hides it before any task; a
    task sent there would never finish): the command names the worker and the cause in one
    line, no traceback."""
    hide = tmp_path / "hide_studiod.py"
    hide.write_text("import sys\nsys.modules['studiod'] = None  # import studiod: ImportError\n")
    with LocalCluster(n_workers=1, preload=[str(hide)], **CLUSTER) as foreign:
        code = main(["analyze", "--scheduler", foreign.scheduler_address, *catalog[:2]])
    assert code == EXIT_ERROR
    err = capsys.readouterr().err
    assert "the Dask worker tcp://127.0.0.1:" in err and "cannot import studiod" in err
    assert "Traceback" not in err


def test_without_dask_says_which_extra(catalog, monkeypatch, capsys):
    for name in ("dask", "dask.distributed", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    assert main(["analyze", "--scheduler", "tcp://127.0.0.1:8786", *catalog[:2]]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "--scheduler needs Dask" in err and "pip install 'studiod[dask]'" in err


@pytest.mark.parametrize(
    "args", [["--jobs", "0"], ["--jobs", "two"], ["--jobs", "2", "--scheduler", "tcp://x:1"]]
)
def test_usage_errors(catalog, capsys, args):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", *args, *catalog[:2]])
    assert exc.value.code == 2


def test_progress_counts_files(catalog):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    with Progress("analyzing", 1, stream=tty) as bar:
        cmd_analyze.analyze(catalog, bar, jobs=2)
    drawn = tty.getvalue()
    assert f"analyzing {len(catalog)} files" in drawn and "100.0 %" in drawn


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


@pytest.mark.parametrize("where", ["jobs", "dask"])
def test_ctrl_c_stops_a_catalog_run_cleanly(catalog, cluster, where):
    """Ctrl-C (SIGINT to the command's process group, as a terminal sends it) during a
    long run: one line, exit 130, no traceback, no worker left behind, and on Dask no task
    left on the scheduler."""
    from dask.distributed import Client

    args = [*(catalog * 40), "--json"]
    args += ["--jobs", "2"] if where == "jobs" else ["--scheduler", cluster.scheduler_address]
    proc = subprocess.Popen(
        [sys.executable, "-m", "studiod.daemon.cli", "analyze", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        # as from a terminal: a shell that starts this run in the background (CI's may)
        # has it ignore SIGINT, and a Python started so never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        with Client(cluster.scheduler_address, set_as_default=False) as client:

            def running() -> bool:
                if where == "jobs":
                    return bool(_children(proc.pid))
                return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) > 0

            deadline = time.monotonic() + 60.0
            while not running():
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
            workers = _children(proc.pid)
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 130, err
            assert err.strip().splitlines() == ["studiod analyze: interrupted"], err
            assert out == ""
            deadline = time.monotonic() + 10.0
            while not all(_gone(pid) for pid in workers):  # the pool's processes go with it
                assert time.monotonic() < deadline, [p for p in workers if not _gone(p)]
                time.sleep(0.05)
            if where == "dask":
                deadline = time.monotonic() + 10.0
                while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
                    assert time.monotonic() < deadline, "tasks left on the scheduler"
                    time.sleep(0.1)
    finally:  # a run that did not stop takes its workers with it
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _gone(pid: int) -> bool:
    """Exited: no such process, or one that only waits to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
