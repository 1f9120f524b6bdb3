"""The mapping engine: modes, takeover, relative encodings, 14-bit, NRPN, pitch bend, buttons,
banking, layers, feedback and loop detection, through a Surface on the real control hub."""

import math

import mido
import numpy as np
import pytest

from studiod.controllers.hub import ControlHub
from studiod.controllers.mapping import (
    ENCODINGS,
    MidiSource,
    Surface,
    apply_intent,
    decode_relative,
    meter_level,
    parse_profile,
)
from studiod.dsp.layout import build_layout
from studiod.dsp.session import default_session


class ControlEngine:
    """The control side of ``Engine`` (``set`` validates through the registry and stores;
    ``get`` reads it back) without the audio graph: these tests render nothing, and the
    end-to-end test in tests/e2e/test_midi_jack.py runs the real engine."""

    def __init__(self, session=None):
        self.session = session or default_session()
        self.registry = build_layout(self.session).registry

    def set(self, address, value):
        return self.registry.set(address, value)

    def get(self, address):
        return self.registry.get(address)


def make_hub(session=None) -> ControlHub:
    """A hub on a 16-channel session (the demo's), every value at its default."""
    return ControlHub(ControlEngine(session))


def consume(engine) -> None:
    """Nothing to do without an audio thread (kept for symmetry with the real engine)."""


def feed(surface: Surface, hub: ControlHub, *raw: list[int], now: float = 0.0) -> None:
    for data in raw:
        for intent in surface.handle(mido.Message.from_bytes(data), now):
            apply_intent(hub, intent)
    consume(hub.engine)


# The console fader law the registry documents (Behringer X32 OSC: 0.0625 = -60 dB, 0.25 =
# -30 dB, 0.5 = -10 dB, 1.0 = +10 dB, bottom = off at -90 dB), written out independently.
def law_db(position: float) -> float:
    return float(np.interp(position, [0, 0.0625, 0.25, 0.5, 1.0], [-90, -60, -30, -10, 10]))


PROFILE = """
[device]
name = "Test surface"
port = "Test"
bank_size = 8

[[control]]
type = "cc"
number = [0, 1, 2, 3, 4, 5, 6, 7]
target = "/ch/{strip}/fader"

[[control]]
type = "cc"
number = [16, 17, 18, 19, 20, 21, 22, 23]
target = "/ch/{strip}/pan"
center = true
feedback = { type = "cc", channel = 2, min = 1, max = 13 }

[[control]]
type = "cc"
number = [16, 17, 18, 19, 20, 21, 22, 23]
target = "/ch/{strip}/trim"
center = true
layer = "shift"

[[control]]
type = "note"
number = [16, 17, 18, 19, 20, 21, 22, 23]
target = "/ch/{strip}/mute"
mode = "toggle"
feedback = true

[[control]]
type = "note"
channel = 2
number = 1
target = "/monitor/dim/on"
mode = "momentary"
feedback = { type = "note", channel = 2, number = 1, on = 1, off = 0 }

[[control]]
type = "note"
channel = 2
number = [10, 11, 12]
target = "/monitor/system"
mode = "select"
value = ["studio", "alt", "headphones"]
feedback = true

[[control]]
type = "note"
channel = 2
number = 13
target = "/monitor/system"
mode = "cycle"

[[control]]
type = "cc"
channel = 3
number = 1
target = "/master/fader"
mode = "relative"
encoding = "signed_bit"
step = 0.01

[[control]]
type = "cc"
channel = 3
number = 2
target = "/monitor/system"
mode = "relative"
encoding = "twos_complement"

[[control]]
type = "cc14"
channel = 4
number = 7
target = "/master/fader"
takeover = "jump"

[[control]]
type = "nrpn"
channel = 5
number = 300
target = "/monitor/level"
takeover = "jump"

[[control]]
type = "nrpn"
channel = 5
number = 301
bits = 7
target = "/master/limiter/ceiling"
takeover = "jump"

[[control]]
type = "pitchbend"
channel = [1, 2]
target = "/ch/{strip}/fader"
strip_offset = 0
layer = "pb"
takeover = "jump"

[[control]]
type = "pitchbend"
channel = 9
target = "/ch/{strip}/pan"
center = true
takeover = "jump"
feedback = true
touch = { type = "note", channel = 1, number = 104 }

[[control]]
type = "note"
number = 46
action = "bank_prev"

[[control]]
type = "note"
number = 47
action = "bank_next"

[[control]]
type = "note"
number = 70
action = "shift"

[[control]]
type = "note"
number = 50
action = "shift"
shift = "pb"
latch = true
"""


@pytest.fixture
def hub():
    return make_hub()


@pytest.fixture
def surface(hub):
    return Surface(parse_profile(PROFILE, "test.toml"), hub)


# --- relative encodings ---------------------------------------------------------------------------
def _encode(detents: int, encoding: str) -> int:
    """Each encoding from its definition (Ableton Live / Reaper / Mackie documentation)."""
    if encoding == "twos_complement":  # 7-bit two's complement
        return detents & 0x7F
    if encoding == "binary_offset":  # offset binary around 64
        return 64 + detents
    if encoding == "signed_bit":  # sign-magnitude, bit 6 = negative
        return detents if detents > 0 else 0x40 | -detents
    return 0x40 | detents if detents > 0 else -detents  # signed_bit_2: bit 6 = positive


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_relative_encodings_round_trip_their_definitions(encoding):
    for detents in [*range(-63, 0), *range(1, 64)]:
        assert decode_relative(_encode(detents, encoding), encoding) == detents


def test_relative_encoder_nudges_along_the_taper_and_steps_enums(surface, hub):
    start = hub.get("/master/fader")  # 0 dB = position 0.75 on the console law
    feed(surface, hub, [0xB2, 1, 5])  # signed bit: +5 detents of 0.01
    assert hub.get("/master/fader") == pytest.approx(law_db(0.75 + 0.05), abs=1e-9)
    feed(surface, hub, [0xB2, 1, 0x40 | 5])  # and back
    assert hub.get("/master/fader") == pytest.approx(start, abs=1e-9)
    feed(surface, hub, [0xB2, 2, 3])  # an enum steps one choice per message, clamped
    assert hub.get("/monitor/system") == 1
    feed(surface, hub, [0xB2, 2, 127], [0xB2, 2, 127])
    assert hub.get("/monitor/system") == 0


# --- absolute, takeover ------------------------------------------------------------------------
def test_fader_follows_the_console_law_once_picked_up(surface, hub):
    hub.set("/ch/1/fader", law_db(40 / 127))
    feed(surface, hub, [0xB0, 0, 40])
    for value in (0, 1, 8, 32, 63, 64, 100, 127):
        feed(surface, hub, [0xB0, 0, value])
        assert hub.get("/ch/1/fader") == pytest.approx(law_db(value / 127), abs=1e-9)


def test_soft_takeover_waits_for_the_fader_to_reach_the_value(surface, hub):
    assert hub.get("/ch/2/fader") == 0.0  # position 0.75 = CC 95.25
    feed(surface, hub, [0xB0, 1, 10], [0xB0, 1, 30], [0xB0, 1, 60])
    assert hub.get("/ch/2/fader") == 0.0  # far below: nothing happens
    feed(surface, hub, [0xB0, 1, 100])  # crossed the value between two messages: picked up
    assert hub.get("/ch/2/fader") == pytest.approx(law_db(100 / 127), abs=1e-9)
    feed(surface, hub, [0xB0, 1, 90])
    assert hub.get("/ch/2/fader") == pytest.approx(law_db(90 / 127), abs=1e-9)
    # someone else moves the parameter: the fader must pick it up again
    change = hub.set("/ch/2/fader", -30.0, source="osc")
    surface.on_change(change)
    feed(surface, hub, [0xB0, 1, 91])
    assert hub.get("/ch/2/fader") == -30.0
    feed(surface, hub, [0xB0, 1, 32])  # within two steps of position 0.25 (CC 31.75)
    assert hub.get("/ch/2/fader") == pytest.approx(law_db(32 / 127), abs=1e-9)


def test_center_detent_is_exact_for_bipolar_knobs(surface, hub):
    feed(surface, hub, [0xB0, 16, 64])
    assert hub.get("/ch/1/pan") == 0.0
    feed(surface, hub, [0xB0, 16, 65], [0xB0, 16, 127])
    assert hub.get("/ch/1/pan") == 1.0
    feed(surface, hub, [0xB0, 16, 1], [0xB0, 16, 0])
    assert hub.get("/ch/1/pan") == -1.0


def test_cc14_msb_then_lsb_and_msb_alone_clears_the_lsb(surface, hub):
    # MIDI 1.0 Detailed Specification, Control Change: "When an MSB is received, the
    # receiver should set its concept of the LSB to zero."
    feed(surface, hub, [0xB3, 7, 0x50], [0xB3, 39, 0x22])
    value = (0x50 << 7) | 0x22
    assert hub.get("/master/fader") == pytest.approx(law_db(value / 16383), abs=1e-9)
    feed(surface, hub, [0xB3, 7, 0x30])
    assert hub.get("/master/fader") == pytest.approx(law_db((0x30 << 7) / 16383), abs=1e-9)
    feed(surface, hub, [0xB3, 39, 0x7F])
    value = (0x30 << 7) | 0x7F
    assert hub.get("/master/fader") == pytest.approx(law_db(value / 16383), abs=1e-9)


def test_nrpn_14_and_7_bit_and_rpn_does_not_leak(surface, hub):
    level = hub.engine.registry["/monitor/level"]
    feed(surface, hub, [0xB4, 99, 300 >> 7], [0xB4, 98, 300 & 0x7F], [0xB4, 6, 0x60],
         [0xB4, 38, 0x10])  # fmt: skip
    expected = level.from_normalized(((0x60 << 7) | 0x10) / 16383)
    assert hub.get("/monitor/level") == pytest.approx(expected, abs=1e-9)
    # an RPN selection takes data entry away from the NRPN
    feed(surface, hub, [0xB4, 101, 0], [0xB4, 100, 0], [0xB4, 6, 0x10])
    assert hub.get("/monitor/level") == pytest.approx(expected, abs=1e-9)
    ceiling = hub.engine.registry["/master/limiter/ceiling"]
    feed(surface, hub, [0xB4, 99, 2], [0xB4, 98, 301 & 0x7F], [0xB4, 6, 100], [0xB4, 38, 99])
    assert hub.get("/master/limiter/ceiling") == pytest.approx(-20.0 + 20.0 * 100 / 127)
    assert ceiling.minimum == -20.0 and ceiling.maximum == 0.0


def test_pitch_bend_is_14_bit_with_an_exact_centre(surface, hub):
    feed(surface, hub, [0xE8, 0x00, 0x40])  # 8192: the centre
    assert hub.get("/ch/1/pan") == 0.0
    feed(surface, hub, [0xE8, 0x7F, 0x7F])
    assert hub.get("/ch/1/pan") == 1.0
    feed(surface, hub, [0xE8, 0x00, 0x00])
    assert hub.get("/ch/1/pan") == -1.0
    feed(surface, hub, [0x90, 50, 127], [0x90, 50, 0])  # latch the "pb" layer
    feed(surface, hub, [0xE1, 0x00, 0x40])
    assert hub.get("/ch/2/fader") == pytest.approx(law_db(8192 / 16383), abs=1e-9)


# --- buttons -----------------------------------------------------------------------------------
def test_toggle_momentary_select_and_cycle(surface, hub):
    feed(surface, hub, [0x90, 16, 127])
    assert hub.get("/ch/1/mute") == 1.0
    feed(surface, hub, [0x80, 16, 0], [0x90, 16, 0])  # releases do nothing
    assert hub.get("/ch/1/mute") == 1.0
    feed(surface, hub, [0x90, 16, 100], [0x90, 16, 0])
    assert hub.get("/ch/1/mute") == 0.0
    feed(surface, hub, [0x91, 1, 127])
    assert hub.get("/monitor/dim/on") == 1.0
    feed(surface, hub, [0x91, 1, 0])
    assert hub.get("/monitor/dim/on") == 0.0
    feed(surface, hub, [0x91, 12, 127], [0x91, 12, 0])
    assert hub.registry["/monitor/system"].format(hub.get("/monitor/system")) == "headphones"
    n = len(hub.registry["/monitor/system"].choices)
    for k in range(n):
        feed(surface, hub, [0x91, 13, 127], [0x91, 13, 0])
        assert hub.get("/monitor/system") == (2 + k + 1) % n


# --- banks and layers ---------------------------------------------------------------------------
def test_banking_puts_16_channels_on_8_faders(surface, hub):
    assert len(hub.engine.session.channels) == 16
    feed(surface, hub, [0x90, 47, 127], [0x90, 47, 0])
    assert surface.bank_offset == 8
    hub.set("/ch/9/fader", law_db(20 / 127))
    feed(surface, hub, [0xB0, 0, 20], [0xB0, 0, 50])
    assert hub.get("/ch/9/fader") == pytest.approx(law_db(50 / 127), abs=1e-9)
    assert hub.get("/ch/1/fader") == 0.0
    feed(surface, hub, [0x90, 47, 127], [0x90, 47, 0])  # no channel 17: stays
    assert surface.bank_offset == 8
    feed(surface, hub, [0x90, 46, 127], [0x90, 46, 0])
    assert surface.bank_offset == 0


def test_shift_layer_while_held_falls_back_to_base(surface, hub):
    feed(surface, hub, [0x90, 70, 127])
    feed(surface, hub, [0xB0, 16, 64], [0xB0, 16, 127])  # trim in the shift layer
    assert hub.get("/ch/1/trim") == 24.0
    assert hub.get("/ch/1/pan") == 0.0
    hub.set("/ch/1/fader", law_db(10 / 127))
    feed(surface, hub, [0xB0, 0, 10], [0xB0, 0, 12])  # not in the layer: base control
    assert hub.get("/ch/1/fader") == pytest.approx(law_db(12 / 127), abs=1e-9)
    feed(surface, hub, [0x90, 70, 0])
    feed(surface, hub, [0xB0, 16, 64], [0xB0, 16, 0])
    assert hub.get("/ch/1/pan") == -1.0
    assert hub.get("/ch/1/trim") == 24.0


# --- feedback ---------------------------------------------------------------------------------
def _collect(surface, now=0.0, budget=100000):
    return surface.collect_feedback(now, budget)


def test_feedback_follows_changes_made_elsewhere(surface, hub):
    hub.subscribe(surface.on_change)
    _collect(surface)  # the initial full refresh
    hub.set("/ch/3/mute", 1, source="osc")
    assert _collect(surface) == [(0x90, 18, 127)]
    hub.set("/monitor/dim/on", 1, source="osc")
    hub.set("/ch/2/pan", -1.0, source="osc")
    sent = set(_collect(surface))
    assert sent == {(0x91, 1, 1), (0xB1, 17, 1)}
    hub.set("/monitor/system", "alt", source="osc")
    assert set(_collect(surface)) == {(0x91, 10, 0), (0x91, 11, 127)}
    assert _collect(surface) == []  # nothing changed, nothing sent


def test_own_absolute_moves_are_not_echoed_but_remembered(surface, hub):
    hub.subscribe(surface.on_change)
    _collect(surface)
    for intent in surface.handle(mido.Message.from_bytes([0xE8, 0x00, 0x20]), 0.0):
        apply_intent(hub, intent)
    sent = _collect(surface)
    assert sent == [(0xB1, 16, 4)]  # the knob's LED ring shows it; the motor is left alone
    hub.set("/ch/1/pan", 0.0, source="osc")  # back to where the feedback cache was before
    assert (0xE8, 0x00, 0x40) in _collect(surface)


def test_touched_motor_fader_is_left_alone_then_resynced(surface, hub):
    hub.subscribe(surface.on_change)
    _collect(surface)
    feed(surface, hub, [0x90, 104, 127])  # touch
    hub.set("/ch/1/pan", 1.0, source="osc")
    assert [m for m in _collect(surface) if m[0] == 0xE8] == []
    feed(surface, hub, [0x90, 104, 0])  # release: the motor goes to the value
    assert _collect(surface) == [(0xE8, 0x7F, 0x7F)]


def test_feedback_respects_the_byte_budget(surface, hub):
    pending = surface.collect_feedback(0.0, 9)
    assert sum(len(m) for m in pending) <= 9 and pending
    rest = surface.collect_feedback(0.0, 100000)
    assert rest and not set(rest) & set(pending)


def test_bank_change_refreshes_feedback(surface, hub):
    hub.subscribe(surface.on_change)
    hub.set("/ch/9/mute", 1)
    _collect(surface)
    feed(surface, hub, [0x90, 47, 127], [0x90, 47, 0])
    assert (0x90, 16, 127) in _collect(surface)


def test_loopback_echoes_are_dropped_and_detected(surface, hub):
    hub.subscribe(surface.on_change)
    now = 10.0
    for _ in range(5):
        hub.set("/ch/1/mute", 1 - hub.get("/ch/1/mute"), source="osc")
        for message in surface.collect_feedback(now, 10000):
            feed(surface, hub, list(message), now=now + 0.005)  # our output, straight back
        now += 0.1
    assert surface.loopback
    assert hub.get("/ch/1/mute") == 1.0  # the echoed LED notes never toggled the mute
    # a real press a moment later still works
    feed(surface, hub, [0x90, 16, 127], [0x90, 16, 0], now=now + 1.0)
    assert hub.get("/ch/1/mute") == 0.0


def test_change_from_this_surface_is_tagged(surface, hub):
    seen = []
    hub.subscribe(seen.append)
    feed(surface, hub, [0x90, 17, 127])
    assert isinstance(seen[-1].source, MidiSource) and seen[-1].source.surface == "Test surface"


def test_meter_level_is_linear_in_db():
    # 12 steps over -60…0 dB: a step is 5 dB; 0 below the floor, 12 at or above 0 dBFS
    for db, level in ((-70, 0), (-60, 0), (-59.9, 1), (-55, 1), (-54.9, 2), (-30, 6),
                      (-0.1, 12), (0, 12), (6, 12)):  # fmt: skip
        assert meter_level(10 ** (db / 20), 12, -60.0) == level
    assert meter_level(0.0, 12, -60.0) == 0
    assert meter_level(math.nan, 12, -60.0) == 0
