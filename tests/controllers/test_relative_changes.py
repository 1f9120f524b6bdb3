"""nudge / step / toggle live on the hub: OSC (``/nudge``, ``/step``, ``/toggle``) and MIDI
encoders and buttons make the same relative changes."""

import pytest

from studiod.controllers.hub import ControlHub
from studiod.controllers.mapping import Intent, apply_intent
from studiod.controllers.osc import OscConfig, OscServer
from studiod.dsp.engine import Engine
from studiod.dsp.session import default_session
from tests.controllers.test_osc import Client


@pytest.fixture
def rig():
    hub = ControlHub(Engine(default_session(3)))
    server = OscServer(hub, OscConfig(port=0)).start()
    client = Client(server.udp_port)
    yield hub, client
    client.close()
    server.close()


def test_the_hub_nudges_steps_and_toggles():
    hub = ControlHub(Engine(default_session(3)))
    fader = hub.registry["/ch/1/fader"]
    start = fader.to_normalized(hub.get("/ch/1/fader"))
    hub.nudge("/ch/1/fader", 0.1)
    assert fader.to_normalized(hub.get("/ch/1/fader")) == pytest.approx(start + 0.1, abs=1e-9)
    hub.toggle("/ch/1/mute")
    assert hub.get("/ch/1/mute") == 1.0
    choices = hub.registry["/monitor/system"].choices
    hub.step("/monitor/system", -1)  # clamped at the first choice
    assert hub.get("/monitor/system") == 0
    hub.step("/monitor/system", -1, wrap=True)  # cycles round to the last
    assert hub.get("/monitor/system") == len(choices) - 1


def test_osc_and_midi_intents_take_the_same_path(rig):
    hub, client = rig
    client.send("/toggle", "/ch/2/mute")
    client.send("/nudge", "/ch/2/fader", 0.25)
    client.send("/step", "/monitor/system", 1)
    client.send("/ch/2/mute")  # a query: answered after the three above (one UDP thread)
    assert client.recv_until("/ch/2/mute").params == [1]
    fader = hub.registry["/ch/2/fader"]
    after_osc = hub.get("/ch/2/fader")
    apply_intent(hub, Intent("/ch/2/fader", "nudge", -0.25, "midi"))
    apply_intent(hub, Intent("/ch/2/mute", "toggle", None, "midi"))
    assert hub.get("/ch/2/mute") == 0.0 and hub.get("/monitor/system") == 1
    assert fader.to_normalized(hub.get("/ch/2/fader")) == pytest.approx(
        fader.to_normalized(after_osc) - 0.25, abs=1e-9
    )


@pytest.mark.parametrize(
    ("address", "args", "reason"),
    [
        ("/toggle", [], "takes s address"),
        ("/nudge", ["/ch/1/fader"], "takes s address, f delta"),
        ("/step", ["/no/such", 1], "unknown address"),
        ("/nudge", ["/ch/1/fader", float("nan")], "finite"),
    ],
)
def test_bad_relative_changes_answer_error(rig, address, args, reason):
    hub, client = rig
    before = hub.snapshot()
    client.send(address, *args)
    error = client.recv_until("/error")
    assert error.params[0] == address and reason in error.params[1]
    assert hub.snapshot() == before
