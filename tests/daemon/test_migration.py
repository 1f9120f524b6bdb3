"""What an older studiod wrote still loads: its state file, scenes, config and MIDI profiles.

Before every OSC method was a leaf of the address tree, ``/monitor/dim`` and
``/monitor/reference`` were toggles and containers at once, and the monitor systems sat
beside the monitor controls (``/monitor/alt/trim``). A daemon started on such files reads
each old address by its new name and says so in the log.
"""

from __future__ import annotations

import logging

import mido
import pytest

from studiod.controllers.mapping import Surface, apply_intent, parse_profile
from studiod.daemon.state import StateStore
from studiod.dsp.layout import migrate_values, renamed_address
from studiod.dsp.registry import Param, Registry, check_leaves
from tests.daemon.test_runtime import write_config

OLD_PROFILE = """
[device]
name = "old desk"
port = "old desk"

[[control]]
type = "note"
number = 1
target = "/monitor/dim"
mode = "toggle"
"""


def test_old_state_scenes_config_and_profile_load_under_the_new_names(tmp_path, started, caplog):
    store = StateStore(tmp_path / "state")
    store.save_params({"/monitor/dim": 1.0, "/monitor/alt/trim": -4.0, "/ch/1/fader": -3.0})
    store.save_snapshot("old", {"/monitor/reference": 1.0, "/monitor/car/delay": 2.5})
    config = write_config(tmp_path, params='"/monitor/studio/trim" = -2.0')
    with caplog.at_level(logging.WARNING):
        daemon, _ = started(config)
        hub = daemon.hub
        assert hub.get("/monitor/dim/on") == 1.0
        assert hub.get("/monitor/systems/alt/trim") == -4.0
        assert hub.get("/ch/1/fader") == -3.0
        assert hub.get("/monitor/systems/studio/trim") == -2.0
        assert daemon.recall_snapshot("old") == []
        assert hub.get("/monitor/reference/on") == 1.0
        assert hub.get("/monitor/systems/car/delay") == 2.5

        surface = Surface(parse_profile(OLD_PROFILE, "old.toml"), hub)
        for intent in surface.handle(mido.Message("note_on", note=1, velocity=127)):
            apply_intent(hub, intent)
        assert hub.get("/monitor/dim/on") == 0.0  # the toggle flipped it back off
    for old, new in (
        ("/monitor/dim", "/monitor/dim/on"),
        ("/monitor/alt/trim", "/monitor/systems/alt/trim"),
        ("/monitor/studio/trim", "/monitor/systems/studio/trim"),
        ("/monitor/reference", "/monitor/reference/on"),
        ("/monitor/car/delay", "/monitor/systems/car/delay"),
    ):
        assert f"{old} -> {new}" in caplog.text
    assert "MIDI profile 'old desk' (old.toml)" in caplog.text
    daemon.close()
    # what the daemon saves from then on is today's names only
    saved = store.load_params()
    assert "/monitor/dim/on" in saved and "/monitor/dim" not in saved
    assert not any(renamed_address(a) for a in saved if a not in daemon.hub.registry)


def test_renamed_addresses_and_what_is_left_alone():
    assert renamed_address("/monitor/dim") == "/monitor/dim/on"
    assert renamed_address("/monitor/reference") == "/monitor/reference/on"
    assert renamed_address("/monitor/mono/trim") == "/monitor/systems/mono/trim"
    for today in ("/monitor/dim/level", "/monitor/mono", "/monitor/systems/car/on", "/ch/1/fader"):
        assert renamed_address(today) is None


def test_a_value_under_the_new_name_wins_over_the_old_one():
    registry = Registry([Param("/monitor/dim/on", 0, "", 0.0, 1.0, 0.0)])
    for values in ({"/monitor/dim": 0.0, "/monitor/dim/on": 1.0},
                   {"/monitor/dim/on": 1.0, "/monitor/dim": 0.0}):  # fmt: skip
        migrated, renamed = migrate_values(values, registry)
        assert migrated == {"/monitor/dim/on": 1.0}
        assert renamed == [("/monitor/dim", "/monitor/dim/on")]


def test_a_method_cannot_be_a_container():
    with pytest.raises(ValueError, match="/monitor/dim is a method and the container of"):
        check_leaves(["/monitor/dim", "/monitor/dim/level"])
    check_leaves(["/monitor/dim/on", "/monitor/dim/level", "/monitor/mono"])
