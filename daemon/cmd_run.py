"""``studiod run --config FILE``: the daemon."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from studiod.daemon.config import ConfigError, load_config


def register(commands) -> None:
    run = commands.add_parser(
        "run",
        help="run the daemon with a config file",
        description="Run the studio daemon: open the audio device, restore the parameter "
        "values, and process audio until SIGINT/SIGTERM. SIGHUP reloads the config.",
    )
    run.add_argument("--config", required=True, type=Path, help="TOML config file")
    run.add_argument("--state-dir", type=Path, help="override [state] dir")
    run.add_argument("--check", action="store_true", help="validate the config and exit")
    run.set_defaults(func=main)


def main(args) -> int:
    from studiod.daemon.runtime import Daemon, setup_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"studiod: {exc}", file=sys.stderr)
        return 2
    if args.state_dir is not None:
        config = replace(config, state=replace(config.state, dir=args.state_dir.resolve()))
    if args.check:
        s = config.session
        print(
            f"{args.config}: OK: {len(s.channels)} channels, {s.n_inputs} inputs, "
            f"{s.n_outputs} outputs, systems {[m.name for m in s.systems]}, "
            f"{config.audio.backend} {config.audio.device or 'default device'} "
            f"@ {config.audio.samplerate} Hz / {config.audio.block_frames} frames"
        )
        return 0
    setup_logging(config.log.level)
    daemon = Daemon(config, status_out=sys.stdout if sys.stdout.isatty() else None)
    return daemon.serve()
