"""Byte parsing (running status, real-time, SysEx floods, fuzzing), the manager on fake
ports (several devices, hot-plug with feedback restored, floods, loops) and MIDI learn."""

import random
import threading
import time

import mido
import pytest

from studiod.controllers.learn import Learned, capture, classify, save_learned
from studiod.controllers.mapping import load_profile, load_profiles, shipped_profile_paths
from studiod.controllers.midi import MemoryBackend, MidiManager, MidiParser
from tests.controllers.test_mapping import make_hub


def shipped():
    return [load_profile(p) for p in shipped_profile_paths()]


# --- parser ------------------------------------------------------------------------------------
KINDS = ["note_on", "note_off", "control_change", "pitchwheel", "program_change", "aftertouch",
         "polytouch", "sysex", "clock"]  # fmt: skip


def test_parser_agrees_with_mido_on_well_formed_streams():
    """Without running status, mido's own parser is an independent reference."""
    rng = random.Random(5)
    stream = []
    for _ in range(2000):
        kind = rng.choice(KINDS)
        if kind == "sysex":
            msg = mido.Message("sysex", data=[rng.randrange(128) for _ in range(rng.randrange(20))])
        elif kind == "clock":
            msg = mido.Message("clock")
        elif kind == "pitchwheel":
            msg = mido.Message(kind, channel=rng.randrange(16), pitch=rng.randrange(-8192, 8192))
        elif kind == "program_change":
            msg = mido.Message(kind, channel=rng.randrange(16), program=rng.randrange(128))
        elif kind == "aftertouch":
            msg = mido.Message(kind, channel=rng.randrange(16), value=rng.randrange(128))
        elif kind == "polytouch":
            msg = mido.Message(kind, note=rng.randrange(128), value=rng.randrange(128))
        elif kind == "control_change":
            msg = mido.Message(kind, control=rng.randrange(128), value=rng.randrange(128))
        else:
            msg = mido.Message(kind, note=rng.randrange(128), velocity=rng.randrange(128))
        stream += msg.bytes()
    ours = MidiParser().feed(stream)
    reference = mido.Parser()
    reference.feed(stream)
    assert ours == list(reference)


def test_running_status_and_realtime_inside_messages():
    parser = MidiParser()
    got = parser.feed([0x90, 60, 100, 62, 101, 0xF8, 64, 0xFE, 102, 0xB3, 7, 1, 8, 2])
    assert got == [
        mido.Message("note_on", note=60, velocity=100),
        mido.Message("note_on", note=62, velocity=101),
        mido.Message("clock"),
        mido.Message("active_sensing"),
        mido.Message("note_on", note=64, velocity=102),
        mido.Message("control_change", channel=3, control=7, value=1),
        mido.Message("control_change", channel=3, control=8, value=2),
    ]
    # split across calls, as events may arrive
    assert parser.feed([0xE0, 0]) == []
    assert parser.feed([0x40]) == [mido.Message("pitchwheel", pitch=0)]
    # system common cancels running status: the stray data bytes are dropped
    assert parser.feed([0xF1, 0x12, 5, 6]) == [mido.Message("quarter_frame", frame_type=1,
                                                            frame_value=2)]  # fmt: skip
    assert parser.dropped >= 2


def test_sysex_flood_is_bounded_and_the_next_message_is_parsed():
    parser = MidiParser(max_sysex=1024)
    flood = [0xF0] + [0x11] * 1_000_000  # a megabyte of SysEx with no end
    assert parser.feed(flood) == []
    assert len(parser._sysex) <= 1024
    assert parser.feed([0xF7]) == []  # the over-long SysEx is dropped
    assert parser.feed([0xB0, 1, 2]) == [mido.Message("control_change", control=1, value=2)]
    # a status byte ends an unterminated SysEx; the message itself is kept
    assert parser.feed([0xF0, 1, 2, 0x90, 1, 2]) == [mido.Message("note_on", note=1, velocity=2)]


def test_fuzzed_bytes_never_crash_nor_stick():
    rng = random.Random(1234)
    parser = MidiParser(max_sysex=256)
    valid = [0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0]
    for _ in range(300):
        garbage = [rng.randrange(256) for _ in range(rng.randrange(1, 400))]
        parser.feed(garbage)
        assert parser._sysex is None or len(parser._sysex) <= 256
        # whatever came before, a complete message starting with its status byte parses
        status = rng.choice(valid) | rng.randrange(16)
        n = 1 if status & 0xF0 in (0xC0, 0xD0) else 2
        data = [status] + [rng.randrange(128) for _ in range(n)]
        assert parser.feed(data) == [mido.Message.from_bytes(data)]


# --- manager on fake ports ---------------------------------------------------------------------
@pytest.fixture
def rig():
    hub = make_hub()
    backend = MemoryBackend()
    manager = MidiManager(hub, shipped(), backend, poll_interval_s=0.05)
    yield hub, backend, manager
    manager.stop()


def test_several_controllers_at_once(rig):
    hub, backend, manager = rig
    nano = backend.add_device("nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0")
    mix = backend.add_device("MIDI Mix:MIDI Mix MIDI 1 24:0")
    backend.add_device("Some Synth:Synth MIDI 1 28:0")  # no profile: left alone
    manager.poll_ports()
    assert sorted(s.name for s in manager.surfaces) == ["Akai MIDImix", "Korg nanoKONTROL2"]
    nano.send([0xB0, 48, 127])  # M1
    mix.send([0x90, 4, 127])  # MUTE 2
    manager.drain()
    assert hub.get("/ch/1/mute") == 1.0 and hub.get("/ch/2/mute") == 1.0
    manager.service(force=True)
    assert (0xB0, 48, 127) in nano.take()  # nanoKONTROL2 M1 LED
    assert (0x90, 4, 127) in mix.take()  # MIDImix MUTE 2 LED


def test_identical_devices_get_their_own_surfaces(rig):
    hub, backend, manager = rig
    a = backend.add_device("nanoKONTROL2 MIDI 1")
    b = backend.add_device("nanoKONTROL2 MIDI 2")
    manager.poll_ports()
    assert sorted(s.name for s in manager.surfaces) == ["Korg nanoKONTROL2",
                                                        "Korg nanoKONTROL2 #2"]  # fmt: skip
    b.send([0xB0, 59, 127])  # bank > on the second unit only
    b.send([0xB0, 59, 0])
    a.send([0xB0, 48, 127])
    b.send([0xB0, 48, 127])
    manager.drain()
    assert hub.get("/ch/1/mute") == 1.0 and hub.get("/ch/9/mute") == 1.0


def test_hot_plug_reconnects_within_2s_and_restores_feedback(rig):
    hub, backend, manager = rig
    mcu = backend.add_device("Mackie Control Universal")
    manager.start()
    _wait(lambda: manager.surfaces, 2.0)
    hub.set("/ch/2/mute", 1, source="osc")
    hub.set("/ch/1/fader", 10.0, source="osc")
    _wait(lambda: (0x90, 17, 127) in mcu.received, 2.0)
    backend.remove_device("Mackie Control Universal")
    _wait(lambda: not manager.surfaces, 2.0)
    mcu = backend.add_device("Mackie Control Universal")  # plugged back in, LEDs dark
    plugged = time.monotonic()
    _wait(lambda: (0x90, 17, 127) in mcu.received and (0xE0, 0x7F, 0x7F) in mcu.received, 2.0)
    assert time.monotonic() - plugged < 2.0
    assert manager.stats.connects == 2 and manager.stats.disconnects == 1


def test_flood_collapses_to_the_latest_value_and_feedback_is_rate_limited(rig):
    hub, backend, manager = rig
    mcu = backend.add_device("Mackie Control Universal")
    manager.poll_ports()
    manager.service(now=0.0, force=True)
    mcu.take()
    for k in range(5000):
        mcu.send([0xE0, k & 0x7F, (k >> 7) & 0x7F])  # fader 1, 14-bit ramp
    applied = manager.drain()
    assert applied == 1  # one hub change for 5000 messages of one fader
    position = 4999 / 16383
    assert hub.get("/ch/1/fader") == pytest.approx(hub.registry["/ch/1/fader"]
                                                   .from_normalized(position))  # fmt: skip
    # 1 s of changes from elsewhere at 1 kHz: what is sent stays within the byte budget
    profile = manager.surface("Mackie Control Universal").profile
    sent_bytes = 0
    for ms in range(1000):
        hub.set(f"/ch/{1 + ms % 8}/fader", -float(ms % 90), source="osc")
        if ms % 5 == 0:
            manager.service(now=1.0 + ms / 1000)
        sent_bytes += sum(len(m) for m in mcu.take())
    assert 0 < sent_bytes <= profile.max_bytes_per_s * 1.1


def test_garbage_and_sysex_through_a_port_do_not_break_it(rig):
    hub, backend, manager = rig
    nano = backend.add_device("nanoKONTROL2 MIDI 1")
    manager.poll_ports()
    rng = random.Random(7)
    for _ in range(200):
        nano.send([rng.randrange(256) for _ in range(rng.randrange(1, 64))])
    nano.send([0xF0] + [0x7F] * 100_000)
    manager.drain()
    # soft takeover: meet the parameter, then move
    hub.set("/ch/3/fader", hub.registry["/ch/3/fader"].from_normalized(64 / 127))
    nano.send([0xB0, 2, 64, 2, 80])  # running status inside one event
    manager.drain()
    expected = hub.registry["/ch/3/fader"].from_normalized(80 / 127)
    assert hub.get("/ch/3/fader") == pytest.approx(expected)
    assert manager.stats.errors == 0


def test_a_midi_loop_is_detected_and_broken(rig):
    hub, backend, manager = rig
    mcu = backend.add_device("Mackie Control Universal")
    manager.poll_ports()
    manager.service(now=0.0, force=True)

    # route everything the device receives straight back into its output (a cable loop)
    class Loop(list):
        def append(self, data):
            super().append(data)
            mcu.send(list(data))

    mcu.received = Loop()
    changes = []
    hub.subscribe(changes.append)
    for k in range(6):
        hub.set("/ch/1/mute", k % 2, source="osc")
        manager.drain()
        manager.service(force=True)  # feedback now, timed like the port callbacks
        manager.drain()
        time.sleep(0.1)
    surface = manager.surface("Mackie Control Universal")
    assert surface.loopback
    assert [c.source for c in changes] == ["osc"] * 6  # no echo ever reached the hub
    assert hub.get("/ch/1/mute") == 1.0


def test_reloading_the_hub_engine_keeps_the_surface(rig):
    hub, backend, manager = rig
    mix = backend.add_device("MIDI Mix")
    manager.poll_ports()
    mix.send([0x90, 1, 127])
    manager.drain()
    assert hub.get("/ch/1/mute") == 1.0


def _wait(condition, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout_s} s")


# --- learn ---------------------------------------------------------------------------------------
def _registry():
    return make_hub().registry


@pytest.mark.parametrize(
    ("messages", "address", "expected"),
    [
        (
            [[0xB0, 7, v] for v in range(40, 60)],
            "/ch/1/fader",
            {"type": "cc", "number": 7, "mode": "absolute"},
        ),
        (
            [[0xB1, 16, 1], [0xB1, 16, 1], [0xB1, 16, 2], [0xB1, 16, 65]],
            "/ch/1/pan",
            {"type": "cc", "mode": "relative", "encoding": "signed_bit", "center": True},
        ),
        (
            [[0xB0, 20, 1], [0xB0, 20, 1], [0xB0, 20, 127]],
            "/monitor/level",
            {"mode": "relative", "encoding": "twos_complement"},
        ),
        (
            [[0xB0, 21, 65], [0xB0, 21, 65], [0xB0, 21, 63]],
            "/monitor/level",
            {"mode": "relative", "encoding": "binary_offset"},
        ),
        (
            [[0xB0, 3, 10], [0xB0, 35, 5], [0xB0, 3, 11], [0xB0, 35, 0]],
            "/master/fader",
            {"type": "cc14", "number": 3},
        ),
        (
            [[0xB0, 99, 1], [0xB0, 98, 2], [0xB0, 6, 40], [0xB0, 38, 3]],
            "/master/fader",
            {"type": "nrpn", "number": 130},
        ),
        ([[0xE3, 0, 40], [0xE3, 0, 41]], "/ch/4/fader", {"type": "pitchbend", "channel": 4}),
        ([[0x90, 36, 127], [0x80, 36, 0]], "/monitor/dim/on", {"type": "note", "mode": "toggle"}),
        ([[0xB0, 64, 127], [0xB0, 64, 0]], "/monitor/system", {"type": "cc", "mode": "cycle"}),
    ],
)
def test_classify_recognises_each_kind_of_control(messages, address, expected):
    msgs = [mido.Message.from_bytes(m) for m in messages]
    table = classify(msgs, address, _registry()[address])
    assert table["target"] == address
    for key, value in expected.items():
        assert table[key] == value, key


def test_capture_waits_for_the_control_to_settle():
    backend = MemoryBackend()
    knob = backend.add_device("Knobs MIDI 1")
    backend.add_device("Other MIDI 1").send([0x90, 1, 1])  # before listening: ignored

    def move():
        time.sleep(0.1)
        for v in range(30, 40):
            knob.send([0xB2, 9, v])
            time.sleep(0.01)

    threading.Thread(target=move).start()
    port, messages = capture(backend, timeout_s=5.0, settle_s=0.2)
    assert port == "Knobs MIDI 1"
    assert [m.value for m in messages] == list(range(30, 40))


def test_learned_mapping_is_saved_and_used(tmp_path):
    profiles = load_profiles(tmp_path)
    # a device with a shipped profile: the user's file extends it
    learned = Learned("nanoKONTROL2 MIDI 1",
                      {"name": "learned", "channel": 1, "target": "/monitor/level", "type": "cc",
                       "number": 0, "mode": "absolute", "takeover": "pickup"})  # fmt: skip
    path = save_learned(learned, tmp_path, profiles)
    assert path == tmp_path / "korg_nanokontrol2.toml"
    # learning the same message again replaces the mapping instead of adding a duplicate
    learned2 = Learned(learned.port, {**learned.control, "target": "/master/fader"})
    save_learned(learned2, tmp_path, load_profiles(tmp_path))
    mine = {p.id: p for p in load_profiles(tmp_path)}["korg_nanokontrol2"]
    targets = [c.target for c in mine.controls if c.key == ("cc", 0, 0) and not c.layer]
    assert targets == ["/master/fader"]
    # an unknown device gets a profile of its own, matched by its port name
    other = Learned("Gizmo:Gizmo MIDI 1 32:0",
                    {"name": "x", "channel": 2, "target": "/monitor/dim/on", "type": "note",
                     "number": 5, "mode": "toggle", "feedback": True})  # fmt: skip
    path = save_learned(other, tmp_path, load_profiles(tmp_path))
    gizmo = load_profile(path)
    assert gizmo.matches_input("Gizmo:Gizmo MIDI 1 40:0")
    hub = make_hub()
    backend = MemoryBackend()
    device = backend.add_device("Gizmo:Gizmo MIDI 1 40:0")
    manager = MidiManager(hub, load_profiles(tmp_path), backend)
    manager.poll_ports()
    device.send([0x91, 5, 127])
    manager.drain()
    assert hub.get("/monitor/dim/on") == 1.0
    manager.stop()


def test_manager_from_config_selects_profiles(tmp_path):
    from studiod.controllers.midi import manager_from_config

    backend = MemoryBackend()
    backend.add_device("X-TOUCH MINI MIDI 1")
    manager = manager_from_config(
        make_hub(),
        {"profiles": ["behringer_xtouch_mini_mc"], "profile_dir": str(tmp_path)},
        backend,
    )
    manager.poll_ports()
    (surface,) = manager.surfaces
    assert surface.profile.id == "behringer_xtouch_mini_mc"
    first = backend.devices["X-TOUCH MINI MIDI 1"].received[0]
    assert first == (0xB0, 127, 1)  # MC mode requested on connect
    manager.stop()
    with pytest.raises(ValueError, match="unknown"):
        manager_from_config(make_hub(), {"profiles": ["nope"]}, backend)
