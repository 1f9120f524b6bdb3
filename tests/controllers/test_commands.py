"""Commands (scenes, the reference player): one table, carried out through the hub from MIDI
buttons, listed by OSCQuery and the docs (over OSC: tests/controllers/test_osc.py)."""

from __future__ import annotations

import math
import re

import mido
import pytest

from studiod.controllers.commands import COMMANDS, CommandError, coerce
from studiod.controllers.docs import osc_api_page
from studiod.controllers.mapping import Surface, apply_intent, parse_profile
from studiod.controllers.oscquery import build_tree
from tests.controllers.test_mapping import make_hub


def test_arguments_are_checked_against_the_table():
    save, position, loop = (COMMANDS[a] for a in ("/snapshot/save", "/player/position",
                                                  "/player/loop"))  # fmt: skip
    assert coerce(save, ["verse"]) == ("verse",)
    assert coerce(position, []) == ()  # the query form
    assert coerce(position, [3]) == (3.0,)  # an OSC int for a float, as clients send it
    assert coerce(loop, [1.5, 4]) == (1.5, 4.0)
    assert coerce(COMMANDS["/player/track"], [2.0]) == (2,)
    for command, args, reason in (
        (save, [], "takes s name"),
        (save, [3], "takes s name"),
        (save, ["a", "b"], "takes s name"),
        (position, ["x"], "takes f seconds or (no argument)"),
        (position, [math.nan], "not a finite number"),
        (loop, [1.0, math.inf], "not a finite number"),
        (COMMANDS["/player/track"], [1.5], "not a whole number"),
        (COMMANDS["/player/track"], [True], "takes i number"),
    ):
        with pytest.raises(CommandError, match=re.escape(reason)):
            coerce(command, args)


def test_the_hub_runs_what_is_bound_and_refuses_the_rest():
    hub = make_hub()
    with pytest.raises(CommandError, match="not available in this session"):
        hub.run("/snapshot/list")
    with pytest.raises(CommandError, match="unknown command"):
        hub.run("/snapshot/rename", ["a"])
    with pytest.raises(KeyError):
        hub.bind("/ch/1/fader", print)  # a parameter is not a command
    names = ["a", "b"]
    hub.bind("/snapshot/list", lambda: tuple(names))
    assert hub.run("/snapshot/list") == ("a", "b")
    assert [c.address for c in hub.commands()] == ["/snapshot/list"]

    def newer():
        return ("newer",)

    hub.unbind("/snapshot/list", newer)  # not the bound one: kept
    assert hub.run("/snapshot/list") == ("a", "b")
    hub.bind("/snapshot/list", newer)
    hub.unbind("/snapshot/list", newer)
    assert hub.commands() == []


PROFILE = """
[device]
name = "buttons"
port = "buttons"
[[control]]
name = "scene A"
type = "note"
number = 1
target = "/snapshot/recall"
value = "A"
feedback = true
[[control]]
name = "list"
type = "cc"
number = 20
target = "/snapshot/list"
[[control]]
name = "A/B"
type = "note"
number = 2
target = "/monitor/source"
mode = "toggle"
value = "ref"
feedback = true
"""


def test_midi_buttons_run_commands_and_flip_between_a_value_and_the_default():
    hub = make_hub()
    recalled = []
    hub.bind("/snapshot/recall", lambda name: recalled.append(name) or (name, 0))
    hub.bind("/snapshot/list", lambda: recalled.append("listed") or ())
    surface = Surface(parse_profile(PROFILE, "buttons.toml"), hub)

    clock = [0.0]

    def press(*data):  # a second apart: no message is taken for the echo of feedback
        clock[0] += 1.0
        for intent in surface.handle(mido.Message.from_bytes(list(data)), clock[0]):
            apply_intent(hub, intent)

    press(0x90, 1, 127)  # press: the scene is recalled once ...
    press(0x90, 1, 127)  # (a repeated note-on without release is no second press)
    press(0x80, 1, 0)  # ... release does nothing
    press(0xB0, 20, 127)
    press(0xB0, 20, 0)
    assert recalled == ["A", "listed"]
    assert hub.get("/monitor/source") == 0  # "mix"
    press(0x90, 2, 127)
    press(0x80, 2, 0)
    assert hub.registry["/monitor/source"].format(hub.get("/monitor/source")) == "ref"
    feedback = surface.collect_feedback(clock[0], 1 << 16)
    assert (0x90, 2, 127) in feedback  # the A/B button lit while the reference is heard
    press(0x90, 2, 127)
    assert hub.get("/monitor/source") == 0  # back to the default, the mix


def test_oscquery_lists_bound_commands_as_leaves_without_a_value():
    hub = make_hub()
    hub.bind("/snapshot/recall", lambda name: (name, 0))
    hub.bind("/snapshot/list", tuple)
    _, index = build_tree(hub.registry, None, hub.commands())
    recall = index["/snapshot/recall"]
    # ACCESS 0: no value to read or set (and OSCQuery clients such as python-oscquery hold a
    # node without a VALUE to ACCESS 0); TYPE says what to send
    assert recall["TYPE"] == "s" and recall["ACCESS"] == 0 and "CONTENTS" not in recall
    assert "VALUE" not in recall
    assert "TYPE" not in index["/snapshot/list"]  # no argument
    assert "/player/load" not in index  # not bound: not offered
    assert index["/snapshot/fade"]["ACCESS"] == 3  # the fade time is a parameter beside them
    assert set(index["/snapshot"]["CONTENTS"]) == {"recall", "list", "fade"}


def test_the_osc_api_page_lists_every_command():
    page = osc_api_page()
    for address, command in COMMANDS.items():
        assert f"| `{address}` | {command.usage} |" in page
