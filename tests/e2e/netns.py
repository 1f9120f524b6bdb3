"""Run tests in a private network namespace: loopback only, nothing reaches a real network.

``unshare -n`` gives the process its own network stack with just a (down) loopback
interface; we bring ``lo`` up, enable multicast on it and route 224.0.0.0/4 there so that
mDNS works between processes of the namespace. Ports are private too, so a test can bind
the daemon's default ports (9000, 9001) without colliding with anything on the machine.

Two ways to use it:

``@netns`` on a test function: outside the namespace the test re-executes itself
(``python -m pytest <its node id>``) under ``unshare -n`` and passes or fails with that run;
inside, the body runs. Fixtures work in both runs (keep them cheap).

``run_in_netns(argv)``: run any command in a fresh namespace.

As root ``unshare -n`` suffices; otherwise ``unshare -rn`` maps the user to root in a new
user namespace (needs unprivileged user namespaces, the default on Debian 12).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = "STUDIOD_IN_NETNS"
REPO = Path(__file__).resolve().parents[2]
_SETUP = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"


def inside() -> bool:
    """True in a namespace made by this module."""
    return os.environ.get(ENV) == "1"


def netns_command(argv: list[str]) -> list[str]:
    """``argv`` wrapped to run in a new network namespace with loopback up."""
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    return [*unshare, "sh", "-c", f'{_SETUP} && exec "$@"', "netns", *argv]


def run_in_netns(
    argv: list[str], timeout: float = 120.0, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run ``argv`` in a private network namespace; returns the completed process."""
    env = {**os.environ, ENV: "1"}
    return subprocess.run(
        netns_command(argv),
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def netns(test):
    """Decorator: run this test's body inside a private network namespace."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        if inside():
            return test(*args, **kwargs)
        current = os.environ["PYTEST_CURRENT_TEST"]
        nodeid = current.rsplit(" (", 1)[0]
        argv = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", nodeid]
        # generous: a cold numba cache compiles the engine in the child (minutes on a Pi)
        proc = run_in_netns(argv, timeout=900.0)
        if proc.returncode != 0:
            pytest.fail(
                f"in the network namespace, {nodeid} failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}",
                pytrace=False,
            )

    return wrapper
