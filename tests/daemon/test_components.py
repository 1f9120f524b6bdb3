"""The daemon as a supervisor of components: the reload plan and the size of its parts."""

import ast
from pathlib import Path

from studiod.daemon.components import config_diff
from studiod.daemon.config import parse_config

BASE = {
    "audio": {"backend": "virtual", "block_frames": 64},
    "session": {
        "channel": [{"name": "a", "inputs": 1}],
        "monitor": {"system": [{"name": "studio", "outputs": [1, 2]}]},
    },
    "params": {"/ch/1/fader": -6.0},
    "state": {"dir": "/tmp/studiod-test-state"},
}


def _config(**changes):
    data = {k: dict(v) for k, v in BASE.items()}
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data)


def test_config_diff_names_the_changed_sections_and_what_the_device_must_do():
    old = _config()
    assert config_diff(old, _config()).changed == frozenset()
    plan = config_diff(old, _config(params={"/ch/1/fader": -3.0}))
    assert plan.changed == {"params"} and not plan.reopen_device and not plan.session
    plan = config_diff(old, _config(audio={"block_frames": 128}))
    assert plan.changed == {"audio"} and plan.reopen_device
    two = {"channel": [{"name": "a", "inputs": 1}, {"name": "b", "inputs": 1}]}
    plan = config_diff(old, _config(session=two))
    # a second channel on the same input: new engine, same stream (crossfade, no reopen)
    assert plan.session and not plan.reopen_device
    plan = config_diff(old, _config(osc={"port": 9100}))
    assert plan.changed == {"osc"} and plan.touches(("osc", "mdns"))


def test_no_class_in_the_daemon_is_over_300_lines():
    folder = Path(__file__).resolve().parents[2] / "daemon"
    for path in folder.glob("*.py"):
        if path.name == "_unpack.py":  # generated
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                lines = node.end_lineno - node.lineno + 1
                assert lines <= 300, f"{path.name}: class {node.name} has {lines} lines"
