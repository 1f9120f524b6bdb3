"""``studiod learn ADDRESS``: move a control on a MIDI surface; the mapping is saved to the
user's profile for that device (``$XDG_CONFIG_HOME/studiod/midi/``)."""

from __future__ import annotations

import sys
from pathlib import Path


def register(commands) -> None:
    learn = commands.add_parser(
        "learn",
        help="map a parameter to the next control you move on a MIDI surface",
        description="Listen on the MIDI inputs, wait until one control has moved and stopped, "
        "work out what it is (fader, knob, encoder and its encoding, 14-bit, NRPN, pitch bend, "
        "button) and save the mapping to ADDRESS in your profile for that device.",
    )
    learn.add_argument("address", help="parameter address, e.g. /ch/3/fader or /monitor/dim/on")
    learn.add_argument("--config", help="daemon config (its session decides the addresses)")
    learn.add_argument("--port", help="only listen on ports matching this pattern")
    learn.add_argument("--api", choices=("alsa", "jack"), help="MIDI API (default: platform's)")
    learn.add_argument("--timeout", type=float, default=20.0, help="seconds to wait (20)")
    learn.add_argument("--profile-dir", help="where user profiles live (default: XDG config)")
    learn.set_defaults(func=main)


def main(args) -> int:
    from studiod.controllers.learn import LearnError, learn
    from studiod.controllers.midi import MidiPortError, RtMidiBackend
    from studiod.dsp.layout import build_layout
    from studiod.dsp.registry import ParamError
    from studiod.dsp.session import default_session

    if args.config:
        from studiod.daemon.config import ConfigError, load_config

        try:
            session = load_config(args.config).session
        except ConfigError as exc:
            print(f"studiod learn: {exc}", file=sys.stderr)
            return 2
    else:
        session = default_session()
    registry = build_layout(session).registry
    try:
        registry[args.address]
    except ParamError as exc:
        print(f"studiod learn: {exc}", file=sys.stderr)
        return 2
    try:
        backend = RtMidiBackend(api=args.api, client_name="studiod-learn")
    except MidiPortError as exc:
        print(f"studiod learn: {exc}", file=sys.stderr)
        return 1
    print(f"Move the control for {args.address} (then let go)…", flush=True)
    try:
        learned, path = learn(
            args.address,
            registry,
            backend,
            Path(args.profile_dir) if args.profile_dir else None,
            args.timeout,
            args.port,
        )
    except (LearnError, MidiPortError) as exc:
        print(f"studiod learn: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    print(f"learned on {learned.port}: {learned.describe()}")
    print(f"saved to {path}")
    return 0
