"""``studiod devices``: audio devices (PortAudio, every host API) and MIDI ports."""

from __future__ import annotations

import contextlib
import json
import os
import sys


@contextlib.contextmanager
def _quiet_stderr():
    """ALSA's library prints to file descriptor 2 when it finds no card or sequencer."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def audio_devices() -> tuple[list[dict], str | None]:
    try:
        with _quiet_stderr():
            from studiod.daemon.audio import list_devices, rescan

            rescan("studiod-devices")
            return list_devices(), None
    except (OSError, ImportError) as exc:
        return [], f"PortAudio unavailable: {exc}"


def midi_ports() -> tuple[dict, str | None]:
    try:
        with _quiet_stderr():
            import mido

            return {"inputs": mido.get_input_names(), "outputs": mido.get_output_names()}, None
    except Exception as exc:  # rtmidi raises its own SystemError types without a sequencer
        return {"inputs": [], "outputs": []}, f"{type(exc).__name__}: {exc}"


def register(commands) -> None:
    devices = commands.add_parser(
        "devices",
        help="list audio devices and MIDI ports",
        description="List the audio devices PortAudio sees (with host API and channel "
        "counts, for [audio] device/hostapi) and the MIDI ports (mido/rtmidi).",
    )
    devices.add_argument("--json", action="store_true", help="print JSON")
    devices.set_defaults(func=main)


def main(args) -> int:
    audio, audio_error = audio_devices()
    midi, midi_error = midi_ports()
    if args.json:
        doc = {"audio": audio, "audio_error": audio_error, "midi": midi, "midi_error": midi_error}
        print(json.dumps(doc, indent=2))
        return 0
    print("Audio devices (PortAudio):")
    if audio_error:
        print(f"  {audio_error}")
    elif not audio:
        print("  none (no sound card; `studiod demo` uses a virtual device, or start JACK)")
    for d in audio:
        mark = "*" if d["default"] else " "
        print(
            f" {mark}{d['index']:3d}  {d['name']:<40} {d['hostapi']:<28} "
            f"{d['inputs']:3d} in {d['outputs']:3d} out  {d['samplerate']:.0f} Hz"
        )
    print("MIDI ports:")
    if midi_error:
        print(f"  unavailable ({midi_error})")
    for kind in ("inputs", "outputs"):
        for name in midi[kind]:
            print(f"  {kind[:-1]:<6}  {name}")
    if not midi_error and not (midi["inputs"] or midi["outputs"]):
        print("  none")
    return 0
