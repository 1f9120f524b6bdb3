"""``studiod player``: the reference player of a running daemon.

Load a reference track, listen to it (A/B against the mix at matched loudness), seek, loop,
match on or off — through the daemon's OSC port (``/player/*``, ``/monitor/source``), the
way an OSC surface or a MIDI button does it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from studiod.daemon.oscclient import OscClient, OscClientError, add_target_arguments, target

HELP = "load, A/B, seek or loop the reference track of the running daemon"
ACTIONS = {
    "load": "FILE: load a track (a path on this machine)",
    "track": "N: load the N-th of the config's [reference] tracks",
    "ref": "listen to the reference (the monitor source), loudness-matched",
    "mix": "back to the mix",
    "seek": "SECONDS: jump there",
    "where": "print the playing position",
    "loop": "START END: loop between two times in seconds (0 0: the whole track)",
    "match": "on|off: loudness matching",
}


def register(commands) -> None:
    cmd = commands.add_parser(
        "player", help=HELP,
        description=HELP + ". Actions: " + "; ".join(f"{k} {v}" for k, v in ACTIONS.items()),
    )  # fmt: skip
    cmd.add_argument("action", choices=tuple(ACTIONS))
    cmd.add_argument("values", nargs="*", help="the action's arguments")
    add_target_arguments(cmd)
    cmd.set_defaults(func=main)


def _request(action: str, values: list[str]) -> tuple[str, str, list]:
    """(kind "ask"/"set", address, OSC arguments) or ValueError with the usage."""
    want = {"load": 1, "track": 1, "seek": 1, "loop": 2, "match": 1}.get(action, 0)
    if len(values) != want:
        raise ValueError(f"{action} {ACTIONS[action]}")
    try:
        return _arguments(action, values)
    except ValueError:
        raise ValueError(f"{action} {ACTIONS[action]}") from None


def _arguments(action: str, values: list[str]) -> tuple[str, str, list]:
    if action == "load":  # the daemon's working directory is not ours
        return "ask", "/player/load", [str(Path(values[0]).expanduser().resolve())]
    if action == "track":
        return "ask", "/player/track", [int(values[0])]
    if action in ("ref", "mix"):
        return "set", "/monitor/source", [action]
    if action == "seek":
        return "ask", "/player/position", [float(values[0])]
    if action == "where":
        return "ask", "/player/position", []
    if action == "loop":
        return "ask", "/player/loop", [float(v) for v in values]
    if values[0] not in ("on", "off"):
        raise ValueError(f"match {ACTIONS['match']}")
    return "set", "/player/match", [int(values[0] == "on")]


def main(args) -> int:
    from studiod.daemon.config import ConfigError

    try:
        kind, address, osc_args = _request(args.action, args.values)
        host, port = target(args)
    except ValueError as exc:  # ConfigError is one
        prefix = "studiod" if isinstance(exc, ConfigError) else "studiod player"
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 2
    try:
        with OscClient(host, port, args.timeout) as client:
            if kind == "set":
                reply = client.set(address, osc_args[0])
            else:
                reply = client.ask(address, osc_args)
    except (OscClientError, OSError) as exc:
        print(f"studiod player {args.action}: {exc}", file=sys.stderr)
        return 1
    if address in ("/player/load", "/player/track"):
        path, duration_s, lufs, peak = reply
        print(f"loaded {path}: {duration_s:.1f} s, {lufs:.1f} LUFS integrated, {peak:.1f} dBTP")
    elif address == "/player/position":
        print(f"{reply[0]:.2f} s")
    elif address == "/player/loop":
        print(f"looping {reply[0]:.2f} s to {reply[1]:.2f} s")
    else:
        print(f"{address} {reply[0]}")
    return 0
