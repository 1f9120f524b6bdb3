"""JACK MIDI port discovery: a client that JACK never wakes, and a server that restarts."""

import time

import pytest
import rtmidi

from studiod.controllers.midi import RtMidiBackend
from tests.e2e.conftest import JackServer

pytestmark = pytest.mark.e2e


def _wait_for(condition, timeout_s: float = 3.0) -> bool:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_port_list_follows_the_server_through_a_restart(monkeypatch):
    server = JackServer(period=256)
    server.start()
    for key, value in server.env.items():
        if key.startswith("JACK_"):
            monkeypatch.setenv(key, value)
    backend = RtMidiBackend("jack", client_name="lister")
    device = None
    try:
        device = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="dev")
        device.open_virtual_port("nano")
        assert _wait_for(lambda: "dev:nano" in backend.input_ports())
        assert "dev:nano" not in backend.output_ports()  # it sends; it does not receive
        device.delete()
        server.kill()
        assert backend.input_ports() == []
        server.start()
        device = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="dev2")
        device.open_virtual_port("nano2")
        assert _wait_for(lambda: "dev2:nano2" in backend.input_ports())
    finally:
        if device is not None and not device.is_deleted:
            device.delete()
        backend.close()
        server.stop()
