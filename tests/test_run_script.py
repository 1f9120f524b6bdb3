"""``./run`` refuses a 32-bit userland before it sets anything up.

The userland is faked: ``getconf`` and ``dpkg`` first on PATH answer as 32-bit Raspberry Pi
OS would (on its 64-bit kernel), and ``dpkg-query``/``apt-get`` record that set-up began.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "run"


def _fake_userland(bin_dir: Path, long_bit: str, arch: str, record: Path) -> None:
    bin_dir.mkdir()
    tools = {
        "getconf": f'[ "$1" = LONG_BIT ] && echo {long_bit}',
        "dpkg": f'[ "$1" = --print-architecture ] && echo {arch}',
        # the first things set-up calls; failing stops ./run before it can touch .venv
        "dpkg-query": f'echo "dpkg-query $*" >>{record}; exit 1',
        "apt-get": f'echo "apt-get $*" >>{record}; exit 1',
    }
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)


def _run(tmp_path: Path, long_bit: str, arch: str) -> tuple[subprocess.CompletedProcess, Path]:
    record = tmp_path / "setup-calls"
    _fake_userland(tmp_path / "bin", long_bit, arch, record)
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    done = subprocess.run(
        [str(RUN), "studiod", "--version"], env=env, capture_output=True, text=True, timeout=60
    )
    return done, record


@pytest.mark.parametrize(
    ("long_bit", "arch"),
    [("32", "armhf"), ("32", "armel"), ("32", "i386"), ("64", "armhf"), ("32", "")],
)
def test_a_32bit_userland_is_refused_before_any_setup(tmp_path, long_bit, arch):
    done, record = _run(tmp_path, long_bit, arch)
    assert done.returncode != 0
    assert "32-bit userland" in done.stderr
    assert "Raspberry Pi OS (64-bit)" in done.stderr
    assert not record.exists(), record.read_text()


def test_a_64bit_userland_goes_on_to_the_setup(tmp_path):
    # The control: the same fakes, a 64-bit answer, and set-up does begin.
    done, record = _run(tmp_path, "64", "arm64")
    assert "32-bit" not in done.stderr
    assert record.read_text().startswith("dpkg-query")
