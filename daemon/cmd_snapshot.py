"""``studiod snapshot``: save, recall, delete and list the scenes of a running daemon.

It sends the scene commands (``/snapshot/save`` …) to the daemon's OSC port and prints the
answer; a recall crossfades over the daemon's ``/snapshot/fade`` (``--fade MS`` sets it
first).
"""

from __future__ import annotations

import sys

from studiod.daemon.oscclient import OscClient, OscClientError, add_target_arguments, target

HELP = "save, recall, delete or list the scenes of the running daemon"


def register(commands) -> None:
    cmd = commands.add_parser("snapshot", help=HELP, description=HELP + " (over OSC).")
    cmd.add_argument("action", choices=("save", "recall", "delete", "list"))
    cmd.add_argument("name", nargs="?", help="the scene's name (save, recall, delete)")
    cmd.add_argument("--fade", type=float, metavar="MS",
                     help="recall: set the crossfade time first (/snapshot/fade, ms)")  # fmt: skip
    add_target_arguments(cmd)
    cmd.set_defaults(func=main)


def main(args) -> int:
    from studiod.daemon.config import ConfigError

    if (args.action == "list") != (args.name is None):
        print(f"studiod snapshot {args.action}: "
              + ("takes no name" if args.action == "list" else "needs a NAME"),
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        host, port = target(args)
    except ConfigError as exc:
        print(f"studiod: {exc}", file=sys.stderr)
        return 2
    try:
        with OscClient(host, port, args.timeout) as client:
            if args.action == "list":
                for name in client.ask("/snapshot/list"):
                    print(name)
                return 0
            if args.fade is not None:
                client.set("/snapshot/fade", args.fade)
            reply = client.ask(f"/snapshot/{args.action}", [args.name])
    except (OscClientError, OSError) as exc:
        print(f"studiod snapshot {args.action}: {exc}", file=sys.stderr)
        return 1
    done = {"save": "saved", "recall": "recalled", "delete": "deleted"}[args.action]
    message = f"scene {args.name!r} {done}"
    if args.action == "recall" and reply[1]:
        message += f" ({reply[1]} values refused: see the daemon's log)"
    print(message)
    return 0
