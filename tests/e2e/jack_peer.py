"""A JACK client for the end-to-end tests: plays a signal into the daemon's inputs and
records its outputs (PortAudio through sounddevice, in its own process, at the server's
rate).

    python -m tests.e2e.jack_peer NAME INPUTS OUTPUTS

Commands on stdin, one per line; each answers one line on stdout:
    play PATH.npy          loop float32 [frames, OUTPUTS] from now on      -> "ok"
    record SECONDS PATH    record the next SECONDS of input to PATH (.npy) -> "done"
    quit
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from studiod.daemon.audio import find_device, list_devices, rescan


def main() -> int:
    name, n_in, n_out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    import sounddevice as sd

    rescan(name)
    dev = find_device(list_devices(), None, "JACK", 0, 0)
    state = {"play": np.zeros((1, n_out), np.float32), "pos": 0, "rec": None, "n": 0}
    done = threading.Event()

    def callback(indata, outdata, frames, time_info, status):
        play = state["play"]
        pos = state["pos"]
        idx = (pos + np.arange(frames)) % len(play)
        outdata[:] = play[idx]
        state["pos"] = (pos + frames) % len(play)
        rec = state["rec"]
        if rec is not None:
            k = min(frames, len(rec) - state["n"])
            rec[state["n"] : state["n"] + k] = indata[:k]
            state["n"] += k
            if state["n"] >= len(rec):
                state["rec"] = None
                done.set()

    rate = int(dev["samplerate"])  # the JACK server's: a JACK client runs at no other
    stream = sd.Stream(device=(dev["index"], dev["index"]), channels=(n_in, n_out),
                       samplerate=rate, dtype="float32", callback=callback)  # fmt: skip
    stream.start()
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "play":
            state["play"] = np.load(words[1]).astype(np.float32)
            state["pos"] = 0
            print("ok", flush=True)
        elif words[0] == "record":
            buf = np.zeros((int(float(words[1]) * rate), n_in), np.float32)
            done.clear()
            state["n"] = 0
            state["rec"] = buf
            done.wait(float(words[1]) + 10.0)
            np.save(words[2], buf)
            print("done", flush=True)
        elif words[0] == "quit":
            break
    stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
