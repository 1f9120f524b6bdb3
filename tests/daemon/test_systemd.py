"""The systemd unit: ``systemd-analyze verify`` accepts it as installed, and it asks for
what the issue lists (notify, watchdog, dedicated user, directories, realtime, hardening).

``systemd-analyze`` comes from Debian's systemd package (in ``./run``'s SYSTEM_PACKAGES).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "systemd" / "install.sh"
VENV_STUDIOD = REPO / ".venv" / "bin" / "studiod"


def _render(prefix: Path) -> str:
    done = subprocess.run(
        ["bash", str(INSTALL), "--render-unit", "--prefix", str(prefix)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.fixture
def installed_unit(tmp_path) -> Path:
    """The unit as install.sh writes it, for a prefix whose venv holds a real studiod."""
    prefix = tmp_path / "opt" / "studiod"
    (prefix / "venv" / "bin").mkdir(parents=True)
    # verify checks that ExecStart's program exists and is executable
    studiod = VENV_STUDIOD if VENV_STUDIOD.exists() else Path(sys.executable)
    (prefix / "venv" / "bin" / "studiod").symlink_to(studiod)
    unit = tmp_path / "studiod.service"
    unit.write_text(_render(prefix))
    return unit


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2).strip())
    return out


def test_systemd_analyze_verify(installed_unit):
    done = subprocess.run(
        ["systemd-analyze", "verify", str(installed_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "studiod.service" not in done.stderr, done.stderr  # no warning about our unit


def test_security_exposure_is_low(installed_unit):
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(installed_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    m = re.search(r"Overall exposure level for studiod\.service: ([0-9.]+)", done.stdout)
    assert m, done.stdout[-500:]
    assert float(m.group(1)) <= 2.5  # "OK" on systemd's 0 (safe) .. 10 (unsafe) scale


def test_unit_asks_for_what_the_daemon_needs(installed_unit):
    d = _directives(installed_unit.read_text())
    assert d["Type"] == ["notify"]
    assert d["Restart"] == ["on-failure"]
    assert "WatchdogSec" in d and "TimeoutStartSec" in d
    assert d["TimeoutStopFailureMode"] == ["abort"]  # a hung stop leaves the stacks
    assert d["User"] == ["studiod"] and d["SupplementaryGroups"] == ["audio"]
    assert d["StateDirectory"] == ["studiod"] and d["CacheDirectory"] == ["studiod"]
    # studiod.dsp._jit keeps compiled kernels in $NUMBA_CACHE_DIR: the CacheDirectory
    assert "NUMBA_CACHE_DIR=%C/studiod/numba" in d["Environment"]
    assert d["LimitRTPRIO"] and d["LimitMEMLOCK"] == ["infinity"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID"):
        assert d[key] == ["yes"], key
    assert d["ProtectSystem"] == ["strict"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    assert "char-alsa rw" in d["DeviceAllow"]
    # must stay off: numba writes machine code; realtime threads; the audio group
    for key in ("MemoryDenyWriteExecute", "RestrictRealtime", "PrivateUsers", "PrivateDevices"):
        assert key not in d, key
    assert d["ExecStart"][0].split()[0].endswith("/opt/studiod/venv/bin/studiod")


def test_install_script_refuses_what_the_unit_cannot_run():
    assert subprocess.run(["bash", "-n", str(INSTALL)]).returncode == 0
    bad = subprocess.run(
        ["bash", str(INSTALL), "--render-unit", "--prefix", "/home/pi/studiod"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "ProtectHome" in bad.stderr
