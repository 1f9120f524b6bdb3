"""``studiod analyze FILE...``: BS.1770-4 / EBU R 128 loudness of audio files.

A table by default, ``--json`` for a JSON array with one object per file. With several
files, they are also measured as an album: the album's integrated loudness over the union of
all files' gating blocks, each file's gain to match it, and platform compliance of both.

A catalog is measured in parallel: ``--jobs N`` worker processes on this machine (default one
per core), or ``--scheduler ADDRESS`` on an existing Dask cluster (the ``studiod[dask]``
extra). Either way each file goes through the one ``offline.analyze_file`` a serial run calls,
in another process, and sends back its readings and its sparse gating histogram (kilobytes,
not the meter); the album is then summed here in the order of the command line, so that the
JSON is the same, bit for bit, however the files were spread.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import pkgutil
import signal
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import version
from typing import Protocol

from studiod.controllers.jsontext import dumps
from studiod.daemon.audiofile import AudioFileError
from studiod.daemon.offline import (
    EXIT_OK,
    PRESETS,
    FileAnalysis,
    OfflineError,
    Progress,
    album_integrated_lufs,
    analyze_file,
    compliance,
    fail,
    fmt,
)

SCHEDULER_TIMEOUT_S = 5.0  # connecting to a Dask scheduler; then a clear error, not a hang


class _Future(Protocol):
    """A file being measured elsewhere: a concurrent.futures or a Dask future."""

    def result(self) -> FileAnalysis: ...


def analyze(
    paths: list[str],
    progress: Progress | None = None,
    finite_only: bool = False,
    jobs: int = 1,
    scheduler: str | None = None,
) -> list[dict]:
    """One readings dict per file (the ``--json`` objects), album keys when several.
    ``finite_only``: measure files with NaN/Inf samples too (see offline.analyze_file).
    ``jobs``: worker processes on this machine (1: in this process); ``scheduler``: the
    address of a Dask scheduler to run on instead (``tcp://HOST:8786``)."""
    if scheduler is not None:
        results = _on_dask(paths, finite_only, scheduler, progress)
    elif jobs > 1 and len(paths) > 1:
        results = _in_processes(paths, finite_only, jobs, progress)
    else:
        results = [analyze_file(p, progress, finite_only) for p in paths]
    objects = []
    for res in results:
        r = res.readings
        r["platforms"] = compliance(r["integrated_lufs"], r["true_peak_dbtp"])
        objects.append(r)
    if len(results) > 1:
        album_lufs = album_integrated_lufs([res.gating for res in results])
        peaks = [r["true_peak_dbtp"] for r in objects if r["true_peak_dbtp"] is not None]
        album_tp = max(peaks) if peaks else None
        album_platforms = compliance(album_lufs, album_tp)
        for r in objects:
            gain = (
                None
                if album_lufs is None or r["integrated_lufs"] is None
                else round(album_lufs - r["integrated_lufs"], 2)
            )
            r["album"] = {
                "integrated_lufs": album_lufs,
                "true_peak_dbtp": album_tp,
                "gain_db": gain,  # this file's gain to match the album's loudness
                "platforms": album_platforms,
            }
    return objects


def _gather(
    submit: Callable[[str], _Future],
    paths: list[str],
    progress: Progress | None,
    as_completed: Callable[[list[_Future]], Iterable[_Future]],
    cancel: Callable[[list[_Future]], object],
) -> list[FileAnalysis]:
    """Submit every file, collect the results in the order of ``paths`` as they complete
    (one step of ``progress`` per file). The first failure, or Ctrl-C, cancels every
    future (``cancel``) and is raised: its message names the file."""
    futures: dict[_Future, int] = {}
    try:
        # Ctrl-C waits until every file is submitted: raised inside a submit it could leave
        # the pool's locks held, and workers forked meanwhile start with it blocked
        # (_worker_start)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for k, p in enumerate(paths):
                futures[submit(p)] = k
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        results: list[FileAnalysis | None] = [None] * len(paths)
        for future in as_completed(list(futures)):
            results[futures[future]] = future.result()
            if progress:
                progress.update(1)
    except BaseException:
        cancel(list(futures))
        raise
    return results  # type: ignore[return-value]  # every slot is filled or we raised


def _worker_start() -> None:
    """A worker leaves Ctrl-C (which a terminal sends to the whole process group) to the
    command, which cancels the files not started and waits for those being measured."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _in_processes(
    paths: list[str], finite_only: bool, jobs: int, progress: Progress | None
) -> list[FileAnalysis]:
    """``analyze_file`` over ``paths`` (two or more) in ``jobs`` worker processes here.

    This process measures the first file itself: that loads the compiled kernels (about
    0.7 s in a fresh process, as long as measuring a few songs), and workers forked after
    it inherit them instead of each loading its own. Forked only while this process runs
    no other thread (the command line: a fork copies one thread, and a lock another one
    held stays held in the child); otherwise the workers come from a fork server, which
    has imported the offline module, and load the kernels themselves."""
    if progress:
        progress.relabel(f"analyzing {len(paths)} files", len(paths))
    first = analyze_file(paths[0], None, finite_only)
    if progress:
        progress.update(1)
    if threading.active_count() == 1:
        ctx = multiprocessing.get_context("fork")
    else:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["studiod.daemon.offline"])
    pool = cf.ProcessPoolExecutor(
        max_workers=min(jobs, len(paths) - 1), mp_context=ctx, initializer=_worker_start
    )
    try:
        rest = _gather(
            lambda p: pool.submit(analyze_file, p, None, finite_only),
            paths[1:],
            progress,
            cf.as_completed,
            # the files not started; the finally below waits for those being measured
            lambda futures: pool.shutdown(wait=False, cancel_futures=True),
        )
    except cf.process.BrokenProcessPool:
        raise OfflineError(
            "a worker process died while measuring (out of memory? killed?); try fewer --jobs"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [first, *rest]


def _on_dask(
    paths: list[str], finite_only: bool, address: str, progress: Progress | None
) -> list[FileAnalysis]:
    """``analyze_file`` over ``paths`` on the Dask cluster whose scheduler is at ``address``.

    A worker opens each file by its absolute path (its working directory is not ours): the
    files must be at the same paths on the workers (a shared file system), which must run
    the same studiod. The readings keep the paths as given."""
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise OfflineError(
            "--scheduler needs Dask: install the extra, pip install 'studiod[dask]'"
        ) from None
    try:
        client = Client(address, timeout=SCHEDULER_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise OfflineError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        if not client.scheduler_info()["workers"]:
            raise OfflineError(f"the Dask scheduler at {address} has no workers")
        _check_workers(client)
        if progress:
            progress.relabel(f"analyzing {len(paths)} files", len(paths))
        # Dask's own futures, not its concurrent.futures executor: that fetches each result
        # in a callback of its event loop, and a task cancelled (Ctrl-C, a failure) between
        # finishing and being fetched raised there, a traceback on stderr. Here the result
        # is fetched by this thread, and a cancellation is an exception we handle.
        results = _gather(
            lambda p: client.submit(
                analyze_file, os.path.abspath(p), None, finite_only, pure=False
            ),
            paths,
            progress,
            lambda futures: as_completed(futures, loop=client.loop),
            # cancelled on the cluster, so that none of this run's tasks stays there and no
            # result is still awaited when the client closes
            client.cancel,
        )
    finally:
        client.close()
    for path, res in zip(paths, results, strict=True):
        res.readings["path"] = str(path)
    return results


def _check_workers(client) -> None:
    """Every worker imports the offline module and runs this studiod's version. A worker
    that cannot unpickle a task fails on receiving it and the task never ends: asking with
    functions of the standard library first turns that hang into an error."""
    here = version("studiod")
    where = "studiod.daemon.offline:analyze_file.__module__"
    for worker, got in client.run(pkgutil.resolve_name, where, on_error="return").items():
        if isinstance(got, BaseException):
            raise OfflineError(
                f"the Dask worker {worker} cannot import studiod "
                f"({type(got).__name__}: {got}); install studiod {here} there"
            )
    for worker, got in client.run(version, "studiod", on_error="return").items():
        if got != here:
            raise OfflineError(f"the Dask worker {worker} runs studiod {got}, this machine {here}")


def _table(objects: list[dict]) -> str:
    head = (
        f"{'file':<32} {'I LUFS':>7} {'LRA LU':>7} {'TP dBTP':>8} {'SP dBFS':>8} "
        f"{'M max':>7} {'S max':>7} {'corr':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in objects:
        name = r["path"] if len(r["path"]) <= 32 else "…" + r["path"][-31:]
        lines.append(
            f"{name:<32} {fmt(r['integrated_lufs']):>7} {fmt(r['loudness_range_lu']):>7} "
            f"{fmt(r['true_peak_dbtp']):>8} {fmt(r['sample_peak_dbfs']):>8} "
            f"{fmt(r['momentary_max_lufs']):>7} {fmt(r['short_term_max_lufs']):>7} "
            f"{fmt(r['correlation'], 2):>6}"
        )
    for r in objects:
        if r["nonfinite_samples"]:
            lines.append(
                f"{r['path']}: {r['nonfinite_samples']} NaN/infinite samples measured as silence"
            )
    if len(objects) > 1:
        album = objects[0]["album"]
        lines += [
            "",
            f"album: integrated {fmt(album['integrated_lufs'])} LUFS, "
            f"true peak {fmt(album['true_peak_dbtp'])} dBTP",
            f"{'file':<32} {'gain to album':>14}",
        ]
        for r in objects:
            name = r["path"] if len(r["path"]) <= 32 else "…" + r["path"][-31:]
            lines.append(f"{name:<32} {fmt(r['album']['gain_db'], 2):>11} dB")
        lines += ["", "platform compliance (album):", *_compliance_rows(album["platforms"])]
    else:
        lines += ["", "platform compliance:", *_compliance_rows(objects[0]["platforms"])]
    return "\n".join(lines)


def _compliance_rows(platforms: dict) -> list[str]:
    rows = [
        f"  {'target':<9} {'LUFS':>6} {'ceiling':>8} {'gain dB':>8} {'TP after':>9}  verdict",
    ]
    for name, c in platforms.items():
        if c["compliant"]:
            verdict = "ok"
        else:
            why = []
            if not c["loudness_ok"]:
                why.append("loudness")
            if not c["true_peak_ok"]:
                why.append("true peak")
            verdict = "off: " + ", ".join(why)
        rows.append(
            f"  {name:<9} {c['target_lufs']:>6.1f} {c['ceiling_dbtp']:>8.1f} "
            f"{fmt(c['gain_db'], 1):>8} {fmt(c['true_peak_after_gain_dbtp'], 1):>9}  {verdict}"
        )
    return rows


def register(commands) -> None:
    parser = commands.add_parser(
        "analyze",
        help="measure loudness (BS.1770-4 / EBU R 128) of audio files",
        description="Integrated loudness, loudness range, true and sample peak, momentary and "
        "short-term maxima and L/R correlation of each FILE, with compliance against the "
        f"delivery targets ({', '.join(PRESETS)}). Several files are also measured as an "
        "album (gating over all files' blocks) with each file's gain to match it.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV, FLAC, …)")
    parser.add_argument(
        "--json", action="store_true", help="print a JSON array, one object per file"
    )
    parser.add_argument(
        "--finite-only",
        action="store_true",
        help="measure a float file that holds NaN or infinite samples (they count as "
        "silence, and their number is reported) instead of refusing it",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--jobs",
        type=_positive_int,
        metavar="N",
        help="measure N files at a time in worker processes (default: one per core, "
        f"{os.cpu_count()} here; 1 measures them one after the other in this process)",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="measure the files on the Dask cluster whose scheduler is at ADDRESS "
        "(tcp://HOST:8786); the workers must see the files at the same absolute paths. "
        "Needs the optional extra: pip install 'studiod[dask]'",
    )
    parser.set_defaults(func=main)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def main(args) -> int:
    try:
        with Progress("analyzing", 1) as bar:
            jobs = args.jobs or os.cpu_count() or 1  # None when not given (argparse's group)
            objects = analyze(args.files, bar, args.finite_only, jobs, args.scheduler)
    except (OfflineError, AudioFileError) as exc:
        return fail("analyze", str(exc))
    print(dumps(objects) if args.json else _table(objects))
    return EXIT_OK
