"""``studiod warmup``: compile and cache the machine code a config needs, before it is needed.

numba compiles the engine and the audio callback for this machine on their first use and
caches the result (:mod:`studiod.dsp._jit`). ``warmup`` runs the daemon's start-up up to the
point where it would open the audio device (the engine, its state, the compiled callback,
the loudness meters) without opening the device or any socket, so that the service's first
start, under a systemd watchdog, loads everything from the cache; then it compiles what
``studiod analyze`` runs (see ``offline.ensure_analysis_cached``). The set-up (``./run``),
``systemd/install.sh`` and the unit's ``ExecStartPre=`` run it; on a warm cache it takes a
couple of seconds.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from studiod.daemon.config import ConfigError, load_config


def register(commands) -> None:
    cmd = commands.add_parser(
        "warmup",
        help="compile and cache what a config needs (the first start's minutes, ahead of time)",
        description="Compile the engine and the audio callback for a config (the demo's "
        "without --config) into numba's cache, showing progress, without opening the audio "
        "device or any socket. A no-op in seconds when the cache is warm.",
    )
    cmd.add_argument("--config", type=Path, help="TOML config file (default: the demo's)")
    cmd.set_defaults(func=main)


def main(args) -> int:
    from studiod.daemon.notify import Notifier
    from studiod.daemon.offline import compile_analysis_kernels
    from studiod.daemon.runtime import Daemon, setup_logging
    from studiod.dsp._jit import CACHE_DIR, CompileProgress

    if args.config is None:
        from studiod.daemon.cmd_demo import demo_config

        config, what = demo_config(), "the demo"
    else:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"studiod: {exc}", file=sys.stderr)
            return 2
        what = str(args.config)
    setup_logging("warning")  # the start-up's own lines would name the throw-away state
    logging.getLogger("studiod.compile").setLevel(logging.INFO)
    started = time.monotonic()
    # The daemon's own start-up, on a throw-away state folder: nothing of the real state
    # (parameter values, the loudness log) is read or written.
    with tempfile.TemporaryDirectory(prefix="studiod-warmup-") as state_dir:
        # systemd's ExecStartPre= is not the service's main process: no sd_notify from here
        daemon = Daemon(
            replace(config, state=replace(config.state, dir=Path(state_dir))),
            notifier=Notifier(environ={}),
        )
        try:
            daemon.prepare()
        finally:
            daemon.close()
    with CompileProgress(logging.getLogger("studiod.compile").info):
        compile_analysis_kernels()
    print(
        f"warm: the compiled code for {what} is in {CACHE_DIR} "
        f"({time.monotonic() - started:.1f} s)",
        file=sys.stderr,
    )
    return 0
