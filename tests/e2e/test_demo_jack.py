"""``studiod demo --jack`` where no JACK server runs: it starts a private ``jackd -d dummy``,
plays the demo through it and stops it cleanly; and when jackd cannot start, it says why."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.netns import inside, netns

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
REGISTRY = Path("/dev/shm/jack-shm-registry")  # jack2's registry of the machine's servers


def demo(tmp_path, env: dict, seconds: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studiod.daemon.cli", "demo", "--jack", "--seconds", str(seconds),
         "--state-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip


@netns
def test_demo_on_a_private_jack_server_that_goes_away_cleanly(tmp_path):
    assert inside()  # the demo's OSC, OSCQuery and mDNS stay on this namespace's loopback
    env = dict(os.environ, JACK_DEFAULT_SERVER=f"studiod-e2e-{uuid.uuid4().hex[:8]}")
    done = demo(tmp_path, env, 4.0)
    assert done.returncode == 0, done.stderr
    started = re.search(r"started a private JACK server \((studiod-demo-\d+), dummy driver\)",
                        done.stdout)  # fmt: skip
    assert started, done.stdout
    assert "the demo session on JACK, 64 frames at 48000 Hz for 4 s" in done.stdout
    integrated = re.search(r"integrated\s+(-?\d+\.\d+) LUFS \(master\)", done.stdout)
    assert integrated and -40.0 < float(integrated[1]) < -5.0, done.stdout
    blocks = re.search(r"blocks\s+(\d+) \((\d+) xruns\)", done.stdout)
    assert blocks and int(blocks[1]) > 0.5 * 4.0 * 48000 / 64, done.stdout
    # the summary is the daemon's last word: the figures of its "stopped" log line
    stopped = re.search(r"stopped: (\d+) callbacks, (\d+) xruns", done.stderr)
    assert stopped and stopped.groups() == blocks.groups(), done.stderr
    # the registry names every running server, and every one that died without unregistering
    assert f":{started[1]}:".encode() not in REGISTRY.read_bytes()


def test_demo_says_why_jackd_did_not_start(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "jackd"  # what jack2 prints when its registry is full, then exit 1
    fake.write_text("#!/bin/sh\necho 'Too many servers already active' >&2\n"
                    "echo 'Failed to open server' >&2\nexit 1\n")  # fmt: skip
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               JACK_DEFAULT_SERVER=f"studiod-e2e-{uuid.uuid4().hex[:8]}")  # fmt: skip
    done = demo(tmp_path, env, 1.0)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "studiod demo: no JACK server runs, and jackd did not start "
        "(Too many servers already active; Failed to open server)"
    ), done.stderr
