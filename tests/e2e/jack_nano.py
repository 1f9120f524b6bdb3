"""A Korg nanoKONTROL2 played by a JACK MIDI client: a virtual output (its controls) and a
virtual input (its LEDs) named like the real device's ports.

The LED input is polled, never given a Python callback: python-rtmidi would call that from
the client's JACK process thread (waiting there for the GIL), and cancelling it while the
thread runs crashed the test process (a segfault in close_port, seen once in a full run).
"""

from __future__ import annotations

import rtmidi


class JackNano:
    def __init__(self):
        self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="fakekorg")
        self.out.open_virtual_port("nanoKONTROL2 MIDI 1")
        self.inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="fakekorg-leds")
        self.inp.ignore_types(sysex=False)
        self.inp.open_virtual_port("nanoKONTROL2 MIDI 1 in")
        self._received: list[list[int]] = []

    @property
    def received(self) -> list[list[int]]:
        """Every message the LED port has received so far."""
        while (event := self.inp.get_message()) is not None:
            self._received.append(event[0])
        return self._received

    def send(self, *messages: list[int]) -> None:
        for m in messages:
            self.out.send_message(m)

    def close(self) -> None:
        for m in (self.out, self.inp):
            m.close_port()
            m.delete()
