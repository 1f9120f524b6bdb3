"""studiod: a headless studio controller daemon and its offline tools."""

from __future__ import annotations

import argparse
import importlib
import sys

from studiod.daemon import __version__

# Each command lives in studiod.daemon.cmd_<name> with
#   register(subparsers) -> None   adding its parser with set_defaults(func=run)
# Only the command being run is imported (the offline and demo commands import the numba
# engine): `studiod --help` and `studiod log` start in a fraction of a second. The others
# are listed with their one-line summary (tests/daemon/test_cli.py checks that each agrees
# with the help its module registers).
SUMMARIES = {
    "demo": "run the daemon on the embedded demo session (no hardware needed)",
    "log": "query the loudness log (table, CSV, PNG plot)",
    "learn": "map a parameter to the next control you move on a MIDI surface",
    "analyze": "measure loudness (BS.1770-4 / EBU R 128) of audio files",
    "master": "master a file through the engine's master chain to a loudness target",
    "render": "mix a session's stems through the engine to a premaster (and a master)",
    "album": "master, sequence and deliver an album from an album file",
    "run": "run the daemon with a config file",
    "devices": "list audio devices and MIDI ports",
    "warmup": "compile and cache what a config needs (the first start's minutes, ahead of time)",
    "snapshot": "save, recall, delete or list the scenes of the running daemon",
    "player": "load, A/B, seek or loop the reference track of the running daemon",
}
COMMANDS = tuple(SUMMARIES)


def _command_of(argv: list[str]) -> str | None:
    """The command named on the command line (the first argument that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only its command's module is imported (all without)."""
    parser = argparse.ArgumentParser(prog="studiod", description=__doc__)
    parser.add_argument("--version", action="version", version=f"studiod {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = COMMANDS if argv is None else (_command_of(argv),)
    for name in COMMANDS:
        if name in wanted:
            importlib.import_module(f"studiod.daemon.cmd_{name}").register(commands)
        else:
            commands.add_parser(name, help=SUMMARIES[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    from studiod.daemon.cmd_log import join_relative_times

    argv = join_relative_times(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C in a command that does not handle SIGINT itself
        print(f"studiod {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
