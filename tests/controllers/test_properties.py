"""Property-based tests (Hypothesis) of the parsers that face the outside world: OSC packets,
OSC address patterns (against python-osc's dispatcher), and the MIDI byte-stream parser."""

from __future__ import annotations

import logging
import math

import mido
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message import OscMessage
from pythonosc.osc_packet import OscPacket

from studiod.controllers.hub import ControlHub
from studiod.controllers.midi import MidiParser
from studiod.controllers.osc import (
    MAX_BUNDLE_DEPTH,
    OscConfig,
    OscServer,
    PacketError,
    Peer,
    packet_messages,
)
from studiod.controllers.oscpattern import AddressPattern, AddressTree, WorkBudget
from studiod.dsp.engine import Engine
from studiod.dsp.session import default_session
from tests.controllers.osc_fuzz import bundle, message

ENGINE = Engine(default_session(3))
ADDRESSES = [p.address for p in ENGINE.registry]
TREE = AddressTree(ADDRESSES)
DISPATCHER = Dispatcher()
for _address in ADDRESSES:
    DISPATCHER.map(_address, print, _address)  # the handler carries its address
SEGMENTS = sorted({s for a in ADDRESSES for s in a[1:].split("/")})
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- OSC packets -------------------------------------------------------------------------------
_ASCII = st.characters(codec="ascii", exclude_characters="\0")
osc_args = st.lists(
    st.one_of(
        st.tuples(st.integers(-(2**31), 2**31 - 1), st.just("i")),
        st.tuples(st.floats(width=32, allow_nan=False), st.just("f")),
        st.tuples(st.floats(), st.just("d")),
        st.tuples(st.integers(-(2**63), 2**63 - 1), st.just("h")),
        st.tuples(st.text(_ASCII, max_size=20), st.just("s")),
        st.tuples(st.booleans(), st.sampled_from("TF")),
    ),
    max_size=4,
)  # fmt: skip
osc_messages = st.builds(lambda a, args: message(a, args), st.sampled_from(ADDRESSES), osc_args)
osc_packets = st.recursive(
    osc_messages, lambda inner: st.lists(inner, min_size=1, max_size=4).map(bundle), max_leaves=12
)


@FAST
@given(osc_packets)
def test_packet_walk_yields_what_python_osc_parses_in_order(packet):
    """Immediate bundles of any shape: the same messages as python-osc, in the same order."""
    try:
        ours = [OscMessage(d) for _, d in packet_messages(packet, MAX_BUNDLE_DEPTH)]
    except PacketError as exc:
        assert "nested more than" in str(exc)
        return
    theirs = [t.message for t in OscPacket(packet).messages]
    assert [m.address for m in ours] == [m.address for m in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert len(a.params) == len(b.params)
        for x, y in zip(a.params, b.params, strict=True):
            assert x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))


@FAST
@given(st.binary(max_size=300), osc_packets, st.integers(0, 400), st.binary(max_size=8))
def test_the_server_survives_any_bytes(noise, packet, cut, splice):
    """Random bytes, and valid packets cut and spliced: handled, answered, never raised."""
    server = _server()
    peer = Peer("udp", "127.0.0.1", 9)  # the discard port: replies go nowhere
    for data in (noise, packet[:cut] + splice + packet[cut:], packet[: max(cut, 1)]):
        server.handle_packet(data, peer)


_SERVER: list[OscServer] = []


def _server() -> OscServer:
    if not _SERVER:
        config = OscConfig(port=0, rate_limit_hz=1e6, burst=1_000_000)
        _SERVER.append(OscServer(ControlHub(Engine(default_session(3))), config))
        logging.getLogger("studiod.osc").setLevel(logging.ERROR)
    return _SERVER[0]


# -- OSC address patterns ------------------------------------------------------------------------
_class = st.builds(
    lambda neg, body: "[" + ("!" if neg else "") + body + "]",
    st.booleans(),
    st.sampled_from(["a-z", "0-9", "abc", "1-3", "a-f0-9", "sfm", "x"]),
)
_alternation = st.lists(st.sampled_from([*SEGMENTS, "", "x"]), min_size=1, max_size=4).map(
    lambda words: "{" + ",".join(words) + "}"
)
_token = st.one_of(
    st.sampled_from(["*", "?", "**", "*?"]),
    _class,
    _alternation,
    st.sampled_from(SEGMENTS).flatmap(lambda s: st.integers(0, len(s)).map(lambda n: s[:n])),
)
_segment = st.one_of(
    st.sampled_from(SEGMENTS), st.lists(_token, min_size=1, max_size=5).map("".join)
)
_random_patterns = st.lists(_segment, min_size=1, max_size=5).map(lambda s: "/" + "/".join(s))


@st.composite
def _blurred(draw) -> str:
    """A registry address with wildcards that still match it (and usually others)."""
    out = []
    for seg in draw(st.sampled_from(ADDRESSES))[1:].split("/"):
        i = draw(st.integers(0, len(seg) - 1))
        other = draw(st.sampled_from(SEGMENTS))
        c = seg[i]
        out.append(
            draw(
                st.sampled_from([
                    seg, "*", seg[:i] + "*", "*" + seg[i:], seg[:i] + "?" + seg[i + 1 :],
                    "{" + f"{other},{seg}" + "}", "{" + f"{seg[:i]},{other[:1]}" + "}*",
                    seg[:i] + f"[{c}x]" + seg[i + 1 :], seg[:i] + f"[!{c}]" + seg[i + 1 :],
                    seg[:i] + "[a-z0-9]" + seg[i + 1 :], "*" + c + "*", "?" * len(seg),
                ])
            )
        )  # fmt: skip
    return "/" + "/".join(out)


patterns = st.one_of(_blurred(), _random_patterns)


# derandomize: the same examples on every run, so that the check after it is a fact about
# them and not a draw (about a third of random examples match something)
@settings(max_examples=500, deadline=None, derandomize=True)
@given(patterns)
def test_pattern_matching_agrees_with_python_osc(pattern):
    """The same addresses as python-osc's dispatcher (a regex per pattern), except those it
    matches by letting ``[!...]`` swallow a '/' (an address with more segments than the
    pattern), which the OSC 1.0 spec rules out."""
    try:
        parsed = AddressPattern.parse(pattern)
    except ValueError:
        assume(False)
    ours = set(TREE.match(parsed, WorkBudget(10**9), 10**6))
    theirs = {h.args[0] for h in DISPATCHER.handlers_for_address(pattern)}
    theirs = {a for a in theirs if a.count("/") == pattern.count("/")}
    assert ours == theirs
    MATCHED.append(bool(ours))


MATCHED: list[bool] = []


def test_the_pattern_property_saw_matches():
    """(After the property above, in file order:) most examples matched something, so the
    comparison was not between two empty sets."""
    if MATCHED:
        assert sum(MATCHED) >= len(MATCHED) // 3, (sum(MATCHED), len(MATCHED))


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from("/*?[]{}!-,ab1"), max_size=80))
def test_any_pattern_text_parses_or_is_refused_with_a_reason(text):
    try:
        parsed = AddressPattern.parse("/" + text)
    except ValueError as exc:
        assert str(exc)
        return
    TREE.match(parsed, WorkBudget(10**9), 10**6)


# -- MIDI ------------------------------------------------------------------------------------------
_channel_messages = st.one_of(
    st.builds(lambda c, n, v: mido.Message("note_on", channel=c, note=n, velocity=v),
              st.integers(0, 15), st.integers(0, 127), st.integers(0, 127)),
    st.builds(lambda c, n, v: mido.Message("control_change", channel=c, control=n, value=v),
              st.integers(0, 15), st.integers(0, 127), st.integers(0, 127)),
    st.builds(lambda c, p: mido.Message("pitchwheel", channel=c, pitch=p),
              st.integers(0, 15), st.integers(-8192, 8191)),
    st.builds(lambda c, p: mido.Message("program_change", channel=c, program=p),
              st.integers(0, 15), st.integers(0, 127)),
    st.builds(lambda d: mido.Message("sysex", data=d), st.lists(st.integers(0, 127), max_size=20)),
)  # fmt: skip
_realtime = st.sampled_from([0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF])


@FAST
@given(st.lists(st.tuples(_channel_messages, st.lists(_realtime, max_size=2)), max_size=20))
def test_midi_messages_survive_interleaved_real_time_bytes(items):
    """Each message's bytes, with real-time bytes inserted after its status byte (MIDI 1.0:
    allowed anywhere), parse back to the message, and the real-time ones come out too."""
    stream, expected = [], []
    for msg, realtime in items:
        data = msg.bytes()
        stream += data[:1] + realtime + data[1:]
        expected += [mido.Message.from_bytes([b]) for b in realtime] + [msg]
    assert MidiParser().feed(stream) == expected


@FAST
@given(st.binary(max_size=200), st.lists(st.integers(1, 50), max_size=10), _channel_messages)
def test_midi_parser_is_chunk_invariant_and_never_stuck(noise, cuts, msg):
    """Any bytes: the same messages whether fed at once or in pieces; and after any garbage,
    a complete message with its status byte parses (a SysEx or a message in progress is
    ended by it)."""
    data = list(noise)
    whole = MidiParser().feed(data)
    parser, pieces, pos = MidiParser(), [], 0
    for cut in cuts:
        pieces += parser.feed(data[pos : pos + cut])
        pos += cut
    pieces += parser.feed(data[pos:])
    assert pieces == whole
    assert parser.feed(msg.bytes())[-1:] == [msg]
