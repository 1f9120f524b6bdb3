"""Live alerts through the daemon on a virtual device: a true peak over the target's
ceiling, the device lost and back, hysteresis; each in the journal, the status text and
the loudness log (``studiod log --alerts``)."""

import math
import time

import numpy as np
import pytest

from studiod.daemon import logdb
from studiod.daemon.alerts import _Condition
from tests.daemon.test_runtime import FS, Rig, write_config


def test_condition_raises_after_its_delay_and_clears_after_clear_s():
    cond = _Condition(delay_s=2.0, clear_s=3.0)
    assert [cond.update(True, t) for t in (0.0, 1.0)] == [None, None]
    assert cond.update(True, 2.0) == "raise"
    assert cond.update(False, 3.0) is None  # gone, but not long enough
    assert cond.update(True, 4.0) is None  # back before clear_s: still the same alert
    assert [cond.update(False, t) for t in (5.0, 7.0, 8.0)] == [None, None, "clear"]
    assert cond.update(True, 8.5) is None and cond.raised is False


def loud(seconds=2.0) -> np.ndarray:
    """A 997 Hz sine at -0.5 dBFS peak on input 1 (its true peak is over -1 dBTP)."""
    t = np.arange(int(seconds * FS)) / FS
    x = np.zeros((len(t), 6), np.float32)
    x[:, 0] = 10 ** (-0.5 / 20) * np.sin(2 * np.pi * 997.0 * t)
    return x


def test_true_peak_and_device_alerts_reach_the_journal_status_and_log(tmp_path, started, caplog):
    # pan hard left, limiter off: the sine reaches the master at its own peak
    params = '"/ch/1/pan" = -1.0\n"/master/limiter/on" = 0'
    rig = Rig(loud())
    daemon, _ = started(write_config(tmp_path, params=params), rig=rig)
    caplog.set_level("INFO", logger="studiod")
    end = time.monotonic() + 3.0
    while ("true_peak", "master") not in daemon.alerts.active and time.monotonic() < end:
        daemon.run(0.1)
    alert = daemon.alerts.active[("true_peak", "master")]
    assert alert.severity == "warning" and "over the spotify ceiling -1.0 dBTP" in alert.message
    tp = float(alert.message.split()[2])
    assert -1.0 < tp <= 0.0 and math.isfinite(tp)
    assert "ALERT" in daemon.status_text() and "true_peak:master" in daemon.status_text()
    assert any("alert true_peak warning master" in r.getMessage() for r in caplog.records)

    rig.broken = True
    rig.device.fail("unplugged")
    daemon.run(1.5)
    assert daemon.alerts.active[("device", "device")].severity == "critical"
    rig.broken = False
    daemon.run(1.0)
    assert ("device", "device") not in daemon.alerts.active
    db = daemon.loudness.log.path
    daemon.close()
    rows = logdb.query_alerts(db, 0, 2e9)
    assert ("true_peak", "warning", "master") in {
        (r["kind"], r["severity"], r["bus"]) for r in rows
    }
    device = [(r["severity"], r["message"].split(":")[0]) for r in rows if r["kind"] == "device"]
    assert device == [("critical", "audio device lost"), ("clear", "audio device back")]


def test_out_of_phase_master_raises_mono_and_reads_minus_one(tmp_path, started):
    """Input 2 is input 1 inverted, panned hard right against hard left: the master's
    correlation is -1 (it cancels in mono)."""
    t = np.arange(2 * FS) / FS
    x = np.zeros((len(t), 6), np.float32)
    x[:, 0] = 0.1 * np.sin(2 * np.pi * 997.0 * t)
    x[:, 1] = -x[:, 0]
    path = write_config(tmp_path, params='"/ch/1/pan" = -1.0\n"/ch/2/pan" = 1.0')
    path.write_text(path.read_text() + "\n[alerts]\nmono_delay_s = 1.0\n")
    daemon, _ = started(path, rig=Rig(x))
    end = time.monotonic() + 5.0
    while ("mono", "master") not in daemon.alerts.active and time.monotonic() < end:
        daemon.run(0.1)
    alert = daemon.alerts.active[("mono", "master")]
    assert alert.message.startswith("correlation -1.00 below -0.30")
    assert daemon.loudness.log.latest["master"]["correlation"] == pytest.approx(-1.0, abs=1e-6)
    assert daemon.component("osc").meters()["correlation"] == pytest.approx(-1.0, abs=1e-6)


def test_gain_staging_reads_inputs_against_the_reference_and_clips_alert(tmp_path, started):
    """Input 1 at -18 dBFS RMS (the reference) with two full-scale samples a second (they
    add 0.01 dB to the RMS)."""
    t = np.arange(FS) / FS
    x = np.zeros((FS, 6), np.float32)
    x[:, 0] = 10 ** (-18 / 20) * math.sqrt(2) * np.sin(2 * np.pi * 997.0 * t)
    x[24000:24002, 0] = 1.0
    daemon, _ = started(write_config(tmp_path), rig=Rig(x))
    osc = daemon.component("osc")
    osc.meters()  # start the stream's interval
    daemon.run(1.0)
    peak, rms, re_ref, clips = osc.meters()["inputs"][0]
    assert rms == pytest.approx(-18.0, abs=0.05) and re_ref == pytest.approx(0.0, abs=0.05)
    assert peak <= 0.0 and clips >= 2
    assert osc.meters()["inputs"][1][1] == -math.inf  # channel b: silent input
    end = time.monotonic() + 3.0
    while ("clip", "a") not in daemon.alerts.active and time.monotonic() < end:
        daemon.run(0.1)
    alert = daemon.alerts.active[("clip", "a")]
    assert alert.severity == "warning" and "samples at or above -0.1 dBFS" in alert.message
    assert "in a +0.0 dB re -18 dBFS" in daemon.status_text()


def test_a_segment_outside_the_target_alerts_once(tmp_path):
    """Closed programme segments are judged once each, also when the log keeps only its
    last 64 and when a reload brings a new log."""
    from collections import deque
    from types import SimpleNamespace

    from studiod.daemon.alerts import AlertsComponent
    from studiod.daemon.config import parse_config
    from studiod.dsp import loudness as ld
    from studiod.dsp.loudtap import Segment

    def segment(lufs):
        seg = Segment("master", first_hop=0)
        seg.acc[3] = 10.0  # hops fed
        seg.meters[ld.INTEGRATED] = lufs
        return seg

    log = SimpleNamespace(recent_segments=deque(maxlen=64), calibrated_buses=lambda: [],
                          alert=lambda *a: None)  # fmt: skip
    session = {"channel": [{"name": "a", "inputs": 1}],
               "monitor": {"system": [{"name": "studio", "outputs": [1, 2]}]}}  # fmt: skip
    config = parse_config({"session": session})
    host = SimpleNamespace(config=config, loudness=SimpleNamespace(log=log),
                           component=lambda name: None, core=None)  # fmt: skip
    alerts = AlertsComponent(host)
    for lufs in [-14.2] + [-20.0] * 70:  # within the spotify tolerance, then 70 too quiet
        log.recent_segments.append(segment(lufs))
        alerts._check_loudness_log(0.0)
    quiet = [a for a in alerts.history if a.kind == "target"]
    assert len(quiet) == 70 and "integrated -20.0 LUFS" in quiet[0].message
    alerts._check_loudness_log(0.0)  # nothing new: nothing raised
    assert len([a for a in alerts.history if a.kind == "target"]) == 70
    log.recent_segments = deque([segment(-8.0)], maxlen=64)  # a new log after a reload
    alerts._check_loudness_log(0.0)
    assert alerts.history[-1].message.startswith("programme segment integrated -8.0 LUFS")
