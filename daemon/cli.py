"""studiod: a headless studio controller daemon and its offline tools."""

from __future__ import annotations

import argparse
import importlib
import sys

from studiod.daemon import __version__

# Each command lives in studiod.daemon.cmd_<name> with
#   register(subparsers) -> None   adding its parser with set_defaults(func=run)
# and is imported only when the command line is parsed, so `studiod --help` stays fast.
COMMANDS = ("demo", "log", "learn", "analyze", "master", "render", "run", "devices")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studiod", description=__doc__)
    parser.add_argument("--version", action="version", version=f"studiod {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"studiod.daemon.cmd_{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from studiod.daemon.cmd_log import join_relative_times

    parser = build_parser()
    args = parser.parse_args(join_relative_times(sys.argv[1:] if argv is None else list(argv)))
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
