"""The OSC API against liblo's command-line tools, an independent OSC implementation.

``oscsend`` cannot receive (it sends from a fresh ephemeral port and exits), so ``oscdump``
listens on port 9100 and ``oscsend`` subscribes that port on its host
(``/subscribe ii 60 9100``): feedback, query answers and /error replies for the host then go
to oscdump, where we read them. Runs in a private network namespace, on loopback only.
"""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from studiod.controllers.hub import ControlHub
from studiod.controllers.osc import METER_FLOOR_DB, OscConfig, OscServer
from studiod.dsp.engine import Engine
from studiod.dsp.session import default_session
from tests.e2e.netns import netns

pytestmark = pytest.mark.e2e

OSC_PORT = 9000
DUMP_PORT = 9100
METERS = {"momentary_lufs": -23.0, "shortterm_lufs": -24.5, "integrated_lufs": -25.0,
          "true_peak_dbtp": -2.0, "channel_peak_dbfs": [-10.0, -float("inf")]}  # fmt: skip


class Dump:
    """``oscdump -L PORT`` in the background; its lines as "/address types values"."""

    def __init__(self, port: int):
        self.proc = subprocess.Popen(
            ["oscdump", "-L", str(port)], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: list[str] = []
        time.sleep(0.2)  # let it bind

    def wait_for(self, prefix: str, timeout: float = 3.0) -> str:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        end = time.monotonic() + timeout
        for line in self.lines:
            if line.startswith(prefix):
                self.lines.remove(line)
                return line
        while time.monotonic() < end:
            if not sel.select(timeout=end - time.monotonic()):
                break
            line = self.proc.stdout.readline().strip()
            # liblo 0.31 prints "<NTP time tag in hex> /address types values"
            if not line.startswith("/"):
                line = line.split(" ", 1)[-1]
            if line.startswith(prefix):
                return line
            self.lines.append(line)
        raise AssertionError(f"oscdump never printed {prefix!r}; it printed {self.lines[-20:]}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


def oscsend(*args: str, url: str | None = None) -> None:
    target = [url] if url else ["127.0.0.1", str(OSC_PORT)]
    subprocess.run(["oscsend", *target, *args], check=True, timeout=10)


@netns
def test_liblo_set_query_subscribe_errors_meters():
    engine = Engine(default_session(2))
    hub = ControlHub(engine)
    config = OscConfig(port=OSC_PORT, tcp=True, meter_hz=10.0)
    with OscServer(hub, config, meters_provider=lambda: METERS):
        dump = Dump(DUMP_PORT)
        try:
            oscsend("/subscribe", "ii", "60", str(DUMP_PORT))
            time.sleep(0.1)

            # set: the engine has it, and the subscriber (oscdump) is told
            oscsend("/ch/1/fader", "f", "-12.5")
            assert dump.wait_for("/ch/1/fader f").split()[-1] == "-12.500000"
            assert engine.get("/ch/1/fader") == -12.5

            # query (no argument): the current value comes back (to the host's reply port)
            oscsend("/monitor/dim/level")
            assert dump.wait_for("/monitor/dim/level f").split()[-1] == "-20.000000"

            # enums by name or index, answered by name; toggles with T and answered i
            oscsend("/monitor/system", "s", "car")
            assert dump.wait_for("/monitor/system s").endswith('"car"')
            oscsend("/monitor/system", "i", "1")
            assert dump.wait_for("/monitor/system s").endswith('"alt"')
            oscsend("/monitor/dim/on", "T")
            assert dump.wait_for("/monitor/dim/on i").split()[-1] == "1"
            oscsend("/monitor/mono", "F")
            oscsend("/monitor/mono")
            assert dump.wait_for("/monitor/mono i").split()[-1] == "0"

            # bad input: /error s address s reason; nothing reaches the engine
            version = hub.version
            oscsend("/ch/1/fader", "s", "loud")
            assert '"/ch/1/fader"' in dump.wait_for("/error ss")
            oscsend("/ch/1/fader", "f", "50")
            assert "out of range" in dump.wait_for("/error ss")
            oscsend("/ch/9/fader", "f", "0")
            assert "unknown address" in dump.wait_for("/error ss")
            oscsend("/ch/1/fader", "f", "nan")
            assert "finite" in dump.wait_for("/error ss")
            assert hub.version == version and engine.get("/ch/1/fader") == -12.5

            # meter streams at the configured rate
            values = [float(v) for v in dump.wait_for("/meters/loudness ffff").split()[2:]]
            assert values == pytest.approx([-23.0, -24.5, -25.0, -2.0])
            chans = [float(v) for v in dump.wait_for("/meters/channels ff").split()[2:]]
            assert chans == pytest.approx([-10.0, METER_FLOOR_DB])

            # TCP: liblo frames with a size prefix (OSC 1.0 streams)
            oscsend("/ch/2/pan", "f", "-0.5", url=f"osc.tcp://127.0.0.1:{OSC_PORT}")
            assert dump.wait_for("/ch/2/pan f").split()[-1] == "-0.500000"
            assert engine.get("/ch/2/pan") == -0.5
        finally:
            dump.close()

    # and the audio: a 1 kHz sine through channel 1 is 12.5 dB lower after the OSC fader move
    # than at 0 dB (the ratio, so the pan law does not enter)
    n = 9600
    x = np.zeros((n, engine.session.n_inputs), np.float32)
    x[:, 0] = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(n) / 48000.0)
    engine.render(x, 64)
    peak_moved = engine.state.ch_peak[0]
    hub.set("/ch/1/fader", 0.0)
    engine.render(x, 64)
    peak_unity = engine.state.ch_peak[0]
    assert 20 * np.log10(peak_moved / peak_unity) == pytest.approx(-12.5, abs=0.05)
