"""``studiod demo`` as a new user runs it, in a private network namespace: it runs until
stopped without a terminal, logs the master and every monitor system once a second into the
state directory (``studiod log`` reads it while the demo runs and after), and raises live
alerts that an independent OSC peer (liblo's ``oscdump``, subscribed with ``oscsend``)
receives: ``true_peak`` within 2 s of the limiter going off with the master fader at
+10 dB, ``target`` once the short-term loudness has stayed above the target's tolerance for
the alert's delay. Both are in ``studiod log --alerts``."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import time

import pytest

from studiod.daemon.config import AlertsConfig
from studiod.dsp.demo_session import demo_session
from tests.e2e.netns import REPO, inside, netns
from tests.e2e.test_daemon_control import OSC_PORT, Dump, oscsend

pytestmark = pytest.mark.e2e

DUMP_PORT = 9100
RUN_S = 60.0  # how long the demo runs (from READY) before it is stopped


def studiod(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studiod.daemon.cli", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def alert_line(kind: str):
    return lambda line: f'"{kind}"' in line


@netns
def test_demo_logs_loudness_and_raises_alerts(tmp_path):
    assert inside()
    state = tmp_path / "demo-state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "studiod.daemon.cli", "demo", "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    dump = None
    try:
        port = None
        for line in proc.stdout:
            match = re.match(r"\s+OSC\s+udp 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match[1])
                break
        assert port == OSC_PORT, proc.stderr.read() if proc.poll() is not None else ""
        ready = time.monotonic()
        dump = Dump(DUMP_PORT)
        oscsend("/subscribe", "ii", "120", str(DUMP_PORT))
        time.sleep(20.0)
        # read while the demo writes (WAL): rows are there already
        live = studiod("log", "--state-dir", str(state), "--from", "-5m", "--csv", "-")
        assert live.returncode == 0, live.stderr
        assert len([r for r in csv_rows(live.stdout) if r["bus"] == "master"]) >= 15
        # the limiter off and the master 16 dB up: true peak over the ceiling, too loud
        since = oscsend("/master/limiter/on", "i", "0")
        oscsend("/master/fader", "f", "10")
        tp = dump.wait_for("/alert ssss", since, timeout=2.0, match=alert_line("true_peak"))
        assert '"master"' in tp or '"studio"' in tp
        delay_s = AlertsConfig().target_delay_s
        assert delay_s <= 15.0
        target = dump.wait_for("/alert ssss", since, timeout=delay_s + 3.0,
                               match=alert_line("target"))  # fmt: skip
        assert "above" in target
        time.sleep(max(0.0, RUN_S - (time.monotonic() - ready)))
        assert proc.poll() is None, "the demo stopped by itself"
    finally:
        if dump is not None:
            dump.close()
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    for line in err.splitlines():  # one event per line, no tracebacks
        assert line.startswith(("INFO ", "WARNING ", "ERROR ", "ALSA")), line
    assert "alert true_peak warning" in err and "alert target warning" in err

    done = studiod("log", "--state-dir", str(state), "--from", "-5m", "--csv", "-")
    assert done.returncode == 0, done.stderr
    rows = csv_rows(done.stdout)
    buses = {r["bus"] for r in rows}
    assert len([r for r in rows if r["bus"] == "master"]) >= 50
    assert {m.name for m in demo_session(48000).systems} <= buses
    master = [r for r in rows if r["bus"] == "master" and r["momentary_lufs"]]
    assert master and all(-70.0 < float(r["momentary_lufs"]) < 20.0 for r in master)

    segments = studiod("log", "--state-dir", str(state), "--from", "-5m", "--segments")
    assert segments.returncode == 0, segments.stderr
    assert re.search(r"^\s*\d+ master\s", segments.stdout, re.MULTILINE), segments.stdout

    alerts = studiod("log", "--state-dir", str(state), "--from", "-5m", "--alerts", "--csv", "-")
    assert alerts.returncode == 0, alerts.stderr
    kinds = {(a["kind"], a["severity"]) for a in csv_rows(alerts.stdout)}
    assert ("true_peak", "warning") in kinds and ("target", "warning") in kinds
