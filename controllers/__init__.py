"""studiod.controllers: MIDI surfaces and OSC, the outside world to parameter changes."""
