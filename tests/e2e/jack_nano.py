"""A Korg nanoKONTROL2 played by a JACK MIDI client: a virtual output (its controls) and a
virtual input (its LEDs) named like the real device's ports.

The client lives in a child process, and closing the device kills it: JACK drops a dead
client's ports, as when the device is unplugged. In the test process, python-rtmidi's
``close_port`` unregisters a JACK port while JACK's process thread may still be reading it,
and twice that segfaulted the whole test run (once with a Python callback on the LED port,
once on a polled port, after about 1 in 6 full runs). The LED port is polled in the child.

Closing waits until the server has dropped the dead client. A server stopped before that
still sends the client notifications when it shuts down, and jack2 dies of the SIGPIPE of
its socket (jackd 1.9.21: every time, exit status -13); a server that dies without
unregistering leaves its entry in JACK's server registry in /dev/shm, which has 8 of them
per machine (jack2 shm.c MAX_SERVERS), and from the ninth on no jackd on the machine starts
("Too many servers already active"): that is how a whole CI run of the JACK tests failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.e2e.conftest import jack_ports

_CLIENTS = ("fakekorg:", "fakekorg-leds:")

_CHILD = r"""
import json, sys
import rtmidi
out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="fakekorg")
out.open_virtual_port("nanoKONTROL2 MIDI 1")
leds = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="fakekorg-leds")
leds.ignore_types(sysex=False)
leds.open_virtual_port("nanoKONTROL2 MIDI 1 in")
print("ready", flush=True)
for line in sys.stdin:
    verb, messages = json.loads(line)
    if verb == "send":
        for m in messages:
            out.send_message(m)
    else:  # "received": the LED messages since the last request
        events = []
        while (event := leds.get_message()) is not None:
            events.append(event[0])
        print(json.dumps(events), flush=True)
"""


class JackNano:
    def __init__(self):
        # the JACK server is the one os.environ names (JACK_DEFAULT_SERVER), inherited
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("the fake nanoKONTROL2 did not open its JACK ports")
        self._received: list[list[int]] = []

    def _ask(self, verb: str, messages: list) -> None:
        self._proc.stdin.write(json.dumps([verb, messages]) + "\n")
        self._proc.stdin.flush()

    @property
    def received(self) -> list[list[int]]:
        """Every message the LED port has received so far."""
        self._ask("received", [])
        answer = self._proc.stdout.readline()
        if not answer:
            raise RuntimeError("the fake nanoKONTROL2 has exited")
        self._received.extend(json.loads(answer))
        return self._received

    def send(self, *messages: list[int]) -> None:
        self._ask("send", [list(m) for m in messages])

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._proc.stdin.close()
        self._proc.stdout.close()
        deadline = time.monotonic() + 5.0
        while any(port.startswith(_CLIENTS) for port in jack_ports()):
            if time.monotonic() > deadline:
                raise TimeoutError("JACK still lists the fake nanoKONTROL2 5 s after its "
                                   "client was killed")  # fmt: skip
            time.sleep(0.01)
