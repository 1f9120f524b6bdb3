"""The shipped controller profiles against each device's documented MIDI implementation,
clear errors for bad profiles, user profiles that extend shipped ones, and packaging."""

import tomllib
from pathlib import Path

import mido
import pytest

from studiod.controllers.mapping import (
    ProfileError,
    Surface,
    apply_intent,
    load_profile,
    load_profiles,
    parse_profile,
    shipped_profile_paths,
)
from tests.controllers.test_mapping import make_hub

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def profiles():
    return {p.id: p for p in (load_profile(path) for path in shipped_profile_paths())}


def test_every_issue_device_is_shipped(profiles):
    assert set(profiles) >= {
        "korg_nanokontrol2",
        "behringer_xtouch_mini",
        "behringer_xtouch_mini_mc",
        "akai_midimix",
        "novation_launch_control_xl",
        "mackie_control_universal",
    }
    for p in profiles.values():
        text = Path(p.path).read_text()
        assert "Source" in text or "Sources" in text  # each file cites its documentation


# What each device sends, from its manufacturer's MIDI implementation (see the comments in
# each profile), and the address the control must reach in a 16-channel session.
# (profile, port name, bytes, address)
DOCUMENTED = [
    ("korg_nanokontrol2", "nanoKONTROL2 MIDI 1", [0xB0, 0, 100], "/ch/1/fader"),
    ("korg_nanokontrol2", "nanoKONTROL2 MIDI 1", [0xB0, 7, 100], "/ch/8/fader"),
    ("korg_nanokontrol2", "nanoKONTROL2 MIDI 1", [0xB0, 23, 0], "/ch/8/pan"),
    ("korg_nanokontrol2", "nanoKONTROL2 MIDI 1", [0xB0, 32, 127], "/ch/1/solo"),
    ("korg_nanokontrol2", "nanoKONTROL2 MIDI 1", [0xB0, 55, 127], "/ch/8/mute"),
    ("korg_nanokontrol2", "nanoKONTROL2 MIDI 1", [0xB0, 65, 127], "/monitor/system"),
    ("behringer_xtouch_mini", "X-TOUCH MINI MIDI 1", [0xBA, 1, 0], "/ch/1/pan"),
    ("behringer_xtouch_mini", "X-TOUCH MINI MIDI 1", [0x9A, 8, 127], "/ch/1/mute"),
    ("behringer_xtouch_mini", "X-TOUCH MINI MIDI 1", [0x9A, 23, 127], "/ch/8/solo"),
    ("behringer_xtouch_mini", "X-TOUCH MINI MIDI 1", [0xBA, 9, 100], "/master/fader"),
    ("behringer_xtouch_mini_mc", "X-TOUCH MINI MIDI 1", [0xB0, 16, 0x45], "/ch/1/pan"),
    ("behringer_xtouch_mini_mc", "X-TOUCH MINI MIDI 1", [0x90, 89, 127], "/ch/1/mute"),
    ("behringer_xtouch_mini_mc", "X-TOUCH MINI MIDI 1", [0x90, 95, 127], "/ch/8/solo"),
    ("akai_midimix", "MIDI Mix MIDI 1", [0xB0, 19, 100], "/ch/1/fader"),
    ("akai_midimix", "MIDI Mix MIDI 1", [0xB0, 61, 100], "/ch/8/fader"),
    ("akai_midimix", "MIDI Mix MIDI 1", [0xB0, 62, 100], "/master/fader"),
    ("akai_midimix", "MIDI Mix MIDI 1", [0x90, 22, 127], "/ch/8/mute"),
    ("akai_midimix", "MIDI Mix MIDI 1", [0x90, 3, 127], "/ch/1/solo"),
    ("akai_midimix", "MIDI Mix MIDI 1", [0xB0, 18, 0], "/ch/1/pan"),
    ("novation_launch_control_xl", "Launch Control XL", [0xB8, 77, 100], "/ch/1/fader"),
    ("novation_launch_control_xl", "Launch Control XL", [0xB8, 84, 100], "/ch/8/fader"),
    ("novation_launch_control_xl", "Launch Control XL", [0xB8, 56, 0], "/ch/8/pan"),
    ("novation_launch_control_xl", "Launch Control XL", [0x98, 41, 127], "/ch/1/mute"),
    ("novation_launch_control_xl", "Launch Control XL", [0x98, 92, 127], "/ch/8/solo"),
    ("mackie_control_universal", "Mackie Control", [0xE0, 0x00, 0x20], "/ch/1/fader"),
    ("mackie_control_universal", "Mackie Control", [0xE7, 0x00, 0x20], "/ch/8/fader"),
    ("mackie_control_universal", "Mackie Control", [0xE8, 0x00, 0x20], "/master/fader"),
    ("mackie_control_universal", "Mackie Control", [0xB0, 16, 0x43], "/ch/1/pan"),
    ("mackie_control_universal", "Mackie Control", [0x90, 8, 127], "/ch/1/solo"),
    ("mackie_control_universal", "Mackie Control", [0x90, 23, 127], "/ch/8/mute"),
]


@pytest.mark.parametrize(("profile_id", "port", "data", "address"), DOCUMENTED)
def test_documented_controls_reach_their_parameters(profiles, profile_id, port, data, address):
    profile = profiles[profile_id]
    assert profile.matches_input(port)
    hub = make_hub()
    surface = Surface(profile, hub)
    # absolute controls must first meet the parameter (soft takeover): start there
    before = hub.get(address)
    msg = mido.Message.from_bytes(data)
    intents = surface.handle(msg, 0.0)
    if not intents:  # a non-motorised control waiting to pick up: bring the value to it
        hub.set(address, hub.registry[address].from_normalized(0.5))
        surface.handle(mido.Message.from_bytes([data[0], data[1], 64]), 0.0)
        before = hub.get(address)
        intents = surface.handle(msg, 0.0)
    assert intents and {i.address for i in intents} == {address}
    for intent in intents:
        apply_intent(hub, intent)
    assert hub.get(address) != before


def test_mackie_feedback_motor_faders_leds_rings_display_meters(profiles):
    hub = make_hub()
    surface = Surface(profiles["mackie_control_universal"], hub)
    hub.subscribe(surface.on_change)
    surface.collect_feedback(0.0, 10**6)
    hub.set("/ch/2/fader", 10.0, source="osc")  # top of travel: pitch bend 16383
    hub.set("/ch/3/mute", 1, source="osc")
    hub.set("/ch/4/pan", 1.0, source="osc")
    sent = surface.collect_feedback(1.0, 10**6)
    assert (0xE1, 0x7F, 0x7F) in sent  # motor fader on channel 2
    assert (0x90, 18, 127) in sent  # MUTE LED of strip 3 (notes 16-23)
    assert (0xB0, 51, 0x1B) in sent  # V-Pot ring 4 at the right end (boost/cut 0x11-0x1B)
    display = [m for m in sent if m[:6] == (0xF0, 0x00, 0x00, 0x66, 0x14, 0x12)]
    assert len(display) == 1 and display[0][6] == 56  # the value line changed
    text = bytes(display[0][7:-1]).decode()
    assert len(text) == 56 and text[7:14].strip() == "10"
    names = surface.collect_feedback(2.0, 10**6)
    assert names == []
    surface.reset_outputs()
    full = surface.collect_feedback(3.0, 10**6)
    line0 = next(m for m in full if m[:7] == (0xF0, 0x00, 0x00, 0x66, 0x14, 0x12, 0))
    assert bytes(line0[7:-1]).decode()[:7].strip() == "ch1"


def test_nanokontrol2_banks_and_shift(profiles):
    hub = make_hub()
    surface = Surface(profiles["korg_nanokontrol2"], hub)
    for data in ([0xB0, 59, 127], [0xB0, 59, 0]):  # TRACK >
        surface.handle(mido.Message.from_bytes(data), 0.0)
    assert surface.bank_offset == 8
    surface.handle(mido.Message.from_bytes([0xB0, 46, 127]), 0.0)  # CYCLE held
    (intent,) = surface.handle(mido.Message.from_bytes([0xB0, 16, 64]), 0.0)
    assert intent.address == "/ch/9/trim"


# --- bad profiles -------------------------------------------------------------------------------
DUPLICATE = '\n[[control]]\ntype = "cc"\nnumber = 7\ntarget = "/monitor/level"\n'
GOOD = """[device]
name = "X"
port = "X"

[[control]]
type = "cc"
number = 7
target = "/master/fader"
"""


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (GOOD.replace('type = "cc"', 'type = "cc'), 6, "syntax"),
        (GOOD.replace("number = 7", 'number = 7\nmode = "absolut"'), 8, "mode"),
        (GOOD.replace("number = 7", "number = 200"), 7, "number"),
        (GOOD.replace("number = 7", "number = 7\nspeed = 2"), 8, "unknown key"),
        (GOOD.replace('target = "/master/fader"', ""), 5, "target"),
        (GOOD.replace('target = "/master/fader"', 'target = "/ch/{n}/fader"'), 8, "placeholder"),
        (GOOD.replace('port = "X"', 'port = "X("'), 3, "regular expression"),
        (
            GOOD + '\n[[control]]\ntype = "cc"\nnumber = 7\ntarget = "/monitor/level"\n',
            10,
            "reuses",
        ),
        (GOOD.replace('port = "X"', 'port = "X"\nextends = "nope"'), 4, "extends"),
        (GOOD + 'feedback = { type = "cc", min = 500 }\n', 9, "feedback"),
    ],
)
def test_bad_profile_names_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert message.startswith(f"{path}:") or f"{path}:" in message
    assert f"line {line}" in message or f"{path}:{line}:" in message
    assert words in message


def test_user_profile_extends_and_overrides_a_shipped_one(tmp_path, profiles):
    (tmp_path / "korg_nanokontrol2.toml").write_text(
        '[device]\nextends = "korg_nanokontrol2"\n\n'
        '[[control]]\ntype = "cc"\nnumber = 0\ntarget = "/monitor/level"\n'
    )
    loaded = {p.id: p for p in load_profiles(tmp_path)}
    mine = loaded["korg_nanokontrol2"]
    assert mine.path.startswith(str(tmp_path))
    hub = make_hub()
    surface = Surface(mine, hub)
    hub.set("/monitor/level", hub.registry["/monitor/level"].from_normalized(50 / 127))
    (intent,) = surface.handle(mido.Message.from_bytes([0xB0, 0, 50]), 0.0)
    assert intent.address == "/monitor/level"
    # everything else is inherited
    (intent,) = surface.handle(mido.Message.from_bytes([0xB0, 48, 127]), 0.0)
    assert intent.address == "/ch/1/mute"
    assert len(mine.controls) == len(profiles["korg_nanokontrol2"].controls)


def test_profiles_are_declared_as_package_data():
    """pyproject.toml's package data covers every profile file, so ``pip install .`` ships
    them (checked by hand with a wheel in a fresh venv; see the README)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "studiod.controllers.profiles" in setuptools["packages"]
    globs = setuptools["package-data"]["studiod.controllers.profiles"]
    folder = REPO / setuptools["package-dir"]["studiod.controllers"] / "profiles"
    covered = {p for g in globs for p in folder.glob(g)}
    assert covered and covered == set(folder.glob("*.toml"))
    assert {p.name for p in covered} == {p.name for p in shipped_profile_paths()}


def test_parse_profile_accepts_the_good_example():
    profile = parse_profile(GOOD, "good.toml")
    assert profile.controls[0].target == "/master/fader"
