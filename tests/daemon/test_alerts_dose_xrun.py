"""The dose and xrun alerts on their own (a stand-in host: the loudness log's dose and the
core's xrun counter are the only inputs these conditions read)."""

from collections import deque
from types import SimpleNamespace

from studiod.daemon.alerts import AlertsComponent
from studiod.daemon.config import parse_config

SESSION = {"channel": [{"name": "a", "inputs": 1}],
           "monitor": {"system": [{"name": "studio", "outputs": [1, 2]}]}}  # fmt: skip


def _alerts(doses=None, core=None):
    doses = doses if doses is not None else {}
    log = SimpleNamespace(recent_segments=deque(), calibrated_buses=lambda: list(doses),
                          dose=lambda bus: doses[bus], alert=lambda *a: None)  # fmt: skip
    host = SimpleNamespace(config=parse_config({"session": SESSION}), core=core,
                           loudness=SimpleNamespace(log=log),
                           component=lambda name: None)  # fmt: skip
    return AlertsComponent(host), doses


def test_dose_steps_raise_once_each_with_rising_severity():
    alerts, doses = _alerts({"studio": 10.0})
    seen = []
    for dose in (10.0, 55.0, 60.0, 85.0, 99.0, 120.0, 130.0):
        doses["studio"] = dose
        alerts._check_loudness_log(0.0)
        seen = [(a.severity, a.bus) for a in alerts.history if a.kind == "dose"]
    assert seen == [("info", "studio"), ("warning", "studio"), ("critical", "studio")]
    assert "120 % of the daily 85 dBA / 8 h dose" in alerts.history[-1].message


def test_an_xrun_burst_raises_and_quiet_clears():
    core = SimpleNamespace(xruns=0)
    alerts, _ = _alerts(core=core)
    window, clear = alerts.cfg.xrun_window_s, alerts.cfg.clear_s
    alerts._check_xruns(0.0)
    core.xruns = 2
    alerts._check_xruns(1.0)
    assert ("xrun", "device") not in alerts.active  # 2 < the burst of 3
    core.xruns = 3
    alerts._check_xruns(2.0)
    assert alerts.active[("xrun", "device")].message == f"3 xruns in the last {window:g} s"
    alerts._check_xruns(2.0 + window + 0.5)  # the burst has left the window
    assert ("xrun", "device") in alerts.active  # hysteresis: not yet clear_s without one
    alerts._check_xruns(2.0 + window + 0.5 + clear)
    assert ("xrun", "device") not in alerts.active
    assert alerts.history[-1].severity == "clear"
