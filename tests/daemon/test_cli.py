"""`studiod --help` lists every command without importing them; `studiod --help` and
`studiod log` never import numba (they start in a fraction of a second)."""

import argparse
import importlib
import subprocess
import sys

import pytest

from studiod.daemon import cli

PROBE = """
import sys
from studiod.daemon import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exc:  # --help exits
    code = exc.code
print("NUMBA" if "numba" in sys.modules else "NO-NUMBA", code, file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["--help"], ["log", "--from", "-5m"], ["log", "--help"]])
def test_help_and_log_do_not_import_numba(argv, tmp_path):
    if argv[0] == "log" and "--help" not in argv:
        argv = [*argv, "--state-dir", str(tmp_path)]
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert "NO-NUMBA" in out.stderr, out.stderr


def test_the_top_level_summaries_are_the_commands_own_help():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    for name in cli.COMMANDS:
        importlib.import_module(f"studiod.daemon.cmd_{name}").register(commands)
    registered = {a.dest: a.help for a in commands._choices_actions}
    assert registered == cli.SUMMARIES


def test_every_command_parses_its_own_arguments():
    args = cli.build_parser(["log", "--segments"]).parse_args(["log", "--segments"])
    assert args.command == "log" and args.segments and callable(args.func)
    full = cli.build_parser()  # every command's own parser
    assert full.parse_args(["run", "--config", "x.toml", "--check"]).check
