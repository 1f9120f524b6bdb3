"""The [loudness] and [alerts] sections: defaults that work, errors that name the key."""

import pytest

from studiod.daemon.config import ConfigError, parse_config

SESSION = {
    "channel": [{"name": "a", "inputs": 1}],
    "monitor": {"system": [{"name": "studio", "outputs": [1, 2]}]},
}


def _parse(**sections):
    return parse_config({"session": SESSION, **sections})


def test_defaults_log_and_alert_without_any_section():
    cfg = _parse()
    assert cfg.loudness.enabled and cfg.loudness.target == "spotify"
    assert cfg.alerts.enabled and cfg.alerts.reference_dbfs == -18.0
    assert cfg.alerts.dose_steps_percent == (50.0, 80.0, 100.0)


def test_sections_are_read():
    cfg = _parse(
        loudness={"target": "ebu-r128", "retention_days": 7, "spl_at_minus20dbfs": {"studio": 83}},
        alerts={"target_delay_s": 5, "dose_steps_percent": [100, 50]},
    )
    assert cfg.loudness.target == "ebu-r128" and cfg.loudness.retention_days == 7.0
    assert dict(cfg.loudness.spl_at_minus20dbfs) == {"studio": 83.0}
    assert cfg.alerts.target_delay_s == 5.0 and cfg.alerts.dose_steps_percent == (50.0, 100.0)
    assert not _parse(loudness={"enabled": False}).loudness.enabled


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"loudness": {"target": "vinyl"}}, r"\[loudness\] target: 'vinyl' is not one of"),
        ({"loudness": {"spl_at_minus20dbfs": {"car": 80}}}, "no monitor system 'car'"),
        ({"loudness": {"spl_at_minus20dbfs": {"studio": 200}}}, "must be from 40 to 130"),
        ({"loudness": {"stop_lufs": -40}}, "stop_lufs: must not be above start_lufs"),
        ({"loudness": {"colour": 1}}, r"\[loudness\]: unknown key\(s\) 'colour'; known: \["),
        ({"alerts": {"reference_dbfs": 3}}, r"\[alerts\] reference_dbfs: must be from -60 to 0"),
        ({"alerts": {"dose_steps_percent": "50"}}, "dose_steps_percent: must be an array"),
        ({"alerts": {"enabled": "yes"}}, r"\[alerts\] enabled: must be true or false"),
        ({"reference": {"track": 3}}, r"\[reference\] track: must be a string"),
        ({"reference": {"volume": 1}}, r"\[reference\]: unknown key\(s\) 'volume'; known: \["),
    ],
)
def test_bad_values_are_refused_naming_the_key(sections, message):
    with pytest.raises(ConfigError, match=message):
        _parse(**sections)
