"""State on disk: crash-safe writes (SIGKILL mid-save), restore, debounce, snapshots."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from studiod.daemon.state import (
    StateError,
    StateKeeper,
    StateStore,
    atomic_write,
    decode,
    encode,
)

# -- a hub double: the real ControlHub needs a whole engine; the keeper only uses this much


class FakeParam:
    def __init__(self, address):
        self.address = address


class FakeChange:
    def __init__(self, address, value, source):
        self.param, self.value, self.source = FakeParam(address), value, source


class FakeHub:
    """Records applied values like ControlHub (validates addresses, notifies listeners)."""

    def __init__(self, values):
        self.values = dict(values)
        self.registry = self.values  # `address in hub.registry`
        self.listeners = {}

    def subscribe(self, fn):
        self.listeners[len(self.listeners) + 1] = fn
        return len(self.listeners)

    def unsubscribe(self, token):
        self.listeners.pop(token, None)

    def set(self, address, value, source=None):
        if address not in self.values:
            raise KeyError(address)
        self.values[address] = value
        for fn in list(self.listeners.values()):
            fn(FakeChange(address, value, source))

    def apply(self, values, source=None):
        errors = []
        for a, v in values.items():
            if isinstance(v, float) and v > 100:
                errors.append(f"{a}: out of range")
                continue
            self.set(a, v, source)
        return errors

    def snapshot(self):
        return dict(self.values)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "f.json"
    atomic_write(path, b"one")
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.json"]


def test_encode_decode_roundtrip_and_errors():
    values = {"/ch/1/fader": -6.5, "/monitor/system": "alt"}
    assert decode(encode(values, "params"), "x") == values
    with pytest.raises(StateError, match="x: not valid JSON"):
        decode(b"{", "x")
    with pytest.raises(StateError, match="not a studiod state file"):
        decode(b'{"values": {}}', "x")
    bad_version = json.dumps({"format": "studiod-state", "version": 99, "values": {}}).encode()
    with pytest.raises(StateError, match="version 99"):
        decode(bad_version, "x")


WRITER = textwrap.dedent(
    """
    import sys
    from studiod.daemon.state import StateStore
    store = StateStore(sys.argv[1])
    k = 0
    while True:
        k += 1
        # ~300 kB per version: each save takes long enough to be interrupted mid-write
        values = {f"/p/{i}": float(k) for i in range(12000)}
        values["/version"] = float(k)
        store.save_params(values)
        print(k, flush=True)
    """
)


def test_sigkill_during_save_leaves_old_or_new_file(tmp_path):
    """kill -9 a process that saves in a loop, at random moments: the file always parses
    and is one complete version (every value equal to the version number)."""
    rng = random.Random(4)
    store = StateStore(tmp_path)
    versions_seen = set()
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "1"  # at least one complete save
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        values = store.load_params()
        assert values is not None
        version = values.pop("/version")
        assert len(values) == 12000
        assert set(values.values()) == {version}
        versions_seen.add(version)
    assert len(versions_seen) > 1
    # the killed writers' temp files are cleaned up at the next start
    store.remove_stale_temp_files()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.json"]


def test_broken_file_is_moved_aside(tmp_path):
    store = StateStore(tmp_path)
    store.params_path.write_text("garbage")
    assert store.load_params() is None
    assert [p.name.startswith("params.json.broken-") for p in tmp_path.iterdir()] == [True]


def test_keeper_debounces_and_restores(tmp_path):
    clock = Clock()
    hub = FakeHub({"/a": 0.0, "/b": 1.0, "/monitor/level": 0.0})
    store = StateStore(tmp_path)
    keeper = StateKeeper(hub, store, save_delay_s=1.0, max_delay_s=5.0, clock=clock)
    assert not keeper.service()  # nothing changed
    hub.set("/a", 3.0)
    clock.t += 0.5
    assert not keeper.service()  # still inside the debounce
    clock.t += 0.6
    assert keeper.service()
    assert store.load_params()["/a"] == 3.0
    # a fader that keeps moving is still saved every max_delay_s
    saves = keeper.saves
    for _ in range(60):
        hub.set("/b", clock.t - 100.0)
        clock.t += 0.1
        keeper.service()
    assert keeper.saves - saves == 1
    # restore into a fresh hub: values applied, unknown addresses skipped, refusals listed
    hub.set("/a", 500.0)  # out of range for the fake
    keeper.flush()
    values = store.load_params()
    values["/gone"] = 1.0
    store.save_params(values)
    hub2 = FakeHub({"/a": 0.0, "/b": 0.0, "/monitor/level": 0.0})
    keeper2 = StateKeeper(hub2, store, clock=clock)
    applied, errors = keeper2.restore()
    assert applied == 2 and errors == ["/a: out of range"]
    assert hub2.values["/b"] == values["/b"]
    assert not keeper2.dirty  # restoring is not a change to save


def test_snapshots(tmp_path):
    hub = FakeHub({"/ch/1/fader": -3.0, "/monitor/level": -10.0})
    keeper = StateKeeper(hub, StateStore(tmp_path))
    keeper.save_snapshot("verse 1")
    keeper.save_snapshot("chorus", include_monitor=True)
    assert keeper.store.list_snapshots() == ["chorus", "verse 1"]
    hub.set("/ch/1/fader", -20.0)
    hub.set("/monitor/level", 0.0)
    seen = []
    hub.subscribe(lambda c: seen.append(c.source))
    assert keeper.recall_snapshot("verse 1") == []
    # the mix comes back; the monitor level (speaker safety) is not part of a scene
    assert hub.values == {"/ch/1/fader": -3.0, "/monitor/level": 0.0}
    assert seen == ["snapshot:verse 1"]
    keeper.recall_snapshot("chorus")
    assert hub.values["/monitor/level"] == -10.0
    with pytest.raises(StateError, match="no snapshot named 'nope'"):
        keeper.recall_snapshot("nope")
    for bad in ("", "../x", "a/b", ".hidden", "x" * 65):
        with pytest.raises(StateError, match="snapshot name"):
            keeper.save_snapshot(bad)
    assert keeper.store.delete_snapshot("chorus") and not keeper.store.delete_snapshot("chorus")
    assert keeper.store.list_snapshots() == ["verse 1"]


def test_a_scene_recall_crossfades_along_the_controls_tapers(tmp_path):
    """With a fade, levels and frequencies travel from where they are to the scene's along
    their controls (the fader law, the log frequency taper), one step per service call;
    switches change at once; the end values are the scene's exactly."""
    from tests.controllers.test_mapping import make_hub

    hub, clock = make_hub(), Clock()
    keeper = StateKeeper(hub, StateStore(tmp_path), clock=clock)
    scene = {"/ch/1/fader": -6.0, "/ch/1/eq/2/freq": 2000.0, "/ch/1/mute": 0.0}
    for address, value in scene.items():
        hub.set(address, value)
    hub.set("/snapshot/fade", 500.0)
    hub.set("/player/play", 1)
    keeper.save_snapshot("A")
    saved = json.loads((tmp_path / "snapshots" / "A.json").read_text())["values"]
    # a scene is the mix: not the reference player's transport, not the fade itself
    assert "/ch/1/fader" in saved and "/player/play" not in saved
    assert "/snapshot/fade" not in saved
    moved = {"/ch/1/fader": -30.0, "/ch/1/eq/2/freq": 200.0, "/ch/1/mute": 1.0}
    for address, value in moved.items():
        hub.set(address, value)
    assert keeper.recall_snapshot("A", fade_s=0.5) == []
    assert hub.get("/ch/1/mute") == 0.0  # at once
    assert hub.get("/ch/1/fader") == -30.0 and keeper.fading  # from where it was
    clock.t += 0.25
    keeper.service()
    fader = hub.registry["/ch/1/fader"]
    halfway = (fader.to_normalized(-30.0) + fader.to_normalized(-6.0)) / 2
    assert fader.to_normalized(hub.get("/ch/1/fader")) == pytest.approx(halfway)
    assert hub.get("/ch/1/eq/2/freq") == pytest.approx((200.0 * 2000.0) ** 0.5)  # log taper
    clock.t += 0.3
    keeper.service()
    assert {a: hub.get(a) for a in scene} == scene and not keeper.fading
    # a recall without a fade is immediate (the engine smooths each change)
    for address, value in moved.items():
        hub.set(address, value)
    keeper.recall_snapshot("A")
    assert {a: hub.get(a) for a in scene} == scene and not keeper.fading
