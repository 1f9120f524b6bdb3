"""studiod: a headless studio controller daemon and its offline tools."""

from __future__ import annotations

import argparse
import sys

from studiod.daemon import __version__


def _demo(args: argparse.Namespace) -> int:
    from studiod.daemon import demo

    return demo.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studiod", description=__doc__)
    parser.add_argument("--version", action="version", version=f"studiod {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="play the embedded demo session through the engine (no hardware needed)",
        description="Render the synthesised demo session through the engine in 64-frame "
        "blocks, print its loudness and write what the monitor system hears to a WAV file.",
    )
    demo.add_argument("--seconds", type=float, default=16.0, help="length (default 16)")
    demo.add_argument("--system", default="studio", help="monitor system (default studio)")
    demo.add_argument("--out", default="out/demo.wav", help="WAV file (default out/demo.wav)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
