"""``studiod run --config FILE``: the daemon."""

from __future__ import annotations

import faulthandler
import sys
from dataclasses import replace
from pathlib import Path

from studiod.daemon.config import ConfigError, control_surfaces, load_config


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


def _surfaces_text(config) -> str:
    s = control_surfaces(config)
    parts = []
    if s.osc is None:
        parts.append("OSC off")
    else:
        tcp = f" + tcp {s.osc.tcp_port or s.osc.port}" if s.osc.tcp else ""
        parts.append(f"OSC udp {s.osc.host}:{s.osc.port}{tcp}")
        parts.append(f"OSCQuery {s.osc.oscquery_port}" if s.osc.oscquery_port else "no OSCQuery")
    parts.append("mDNS on the OSC interface" if s.mdns is not None else "mDNS off")
    midi = s.midi
    parts.append(f"MIDI ({midi.get('api') or 'default API'})" if midi is not None else "MIDI off")
    return ", ".join(parts)


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
        print(f"  control surfaces: {_surfaces_text(config)}")
        return 0
    setup_logging(config.log.level)
    # systemd's SIGABRT (a missed watchdog, a stop past TimeoutStopSec) or a crash leaves
    # every thread's Python stack on stderr, in the journal: where the daemon hung
    faulthandler.enable()
    daemon = Daemon(config, status_out=sys.stdout if sys.stdout.isatty() else None)
    return daemon.serve()
