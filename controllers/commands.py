"""Commands: the OSC methods that act rather than hold a value.

A parameter (the registry) is a value with a range that a fader can sit on; a command is a
verb with arguments: save a scene under a name, load a reference track from a path, seek.
Each command is declared here once — address, OSC type tags of its arguments, what it
answers, and what it does — so that OSC, MIDI buttons, the CLI, OSCQuery and the docs all
read the one table, as they read the registry for parameters. The parts of the daemon that
carry a command out bind a handler to its address on the hub (:meth:`ControlHub.bind`);
a command nothing has bound (no reference player in this session) is refused with a reason.

Arguments arrive as OSC gives them; :func:`coerce` checks their number and types (an ``f``
accepts an OSC int too, as every OSC client sends ``1`` for ``1.0``) and refuses NaN.
A handler returns the values of its reply (sent back to the sender as an OSC message on
the command's address), or None for no reply.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

Handler = Callable[..., "tuple | None"]


class CommandError(ValueError):
    """A command that cannot be carried out: wrong arguments, or nothing bound to do it."""


@dataclass(frozen=True)
class Command:
    """address; types: the OSC type tags of the arguments ("" none, "s" a string, "ff" two
    floats); alternatives: further accepted type strings (a query form, e.g. ""); args: the
    arguments' names for usage lines; replies: what the answer carries ("" none);
    reads: the type strings with which it only reads (a client that may not change anything
    may still send those)."""

    address: str
    types: str
    args: str
    description: str
    replies: str = ""
    alternatives: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()

    def changes(self, types: str) -> bool:
        """Whether the command sent with these OSC type tags changes anything."""
        return types not in self.reads

    @property
    def usage(self) -> str:
        forms = [
            " ".join(f"{t} {name}" for t, name in zip(types, self.args.split(), strict=False))
            or "(no argument)"
            for types in (self.types, *self.alternatives)
        ]
        return " or ".join(forms)


COMMANDS: dict[str, Command] = {
    c.address: c
    for c in (
        Command("/snapshot/save", "s", "name",
                "save every mix value (not the monitor section) as the scene NAME",
                replies="s name"),
        Command("/snapshot/recall", "s", "name",
                "recall the scene NAME, crossfaded over /snapshot/fade ms",
                replies="s name, i values refused"),
        Command("/snapshot/delete", "s", "name", "delete the scene NAME", replies="s name"),
        Command("/snapshot/list", "", "", "the scenes saved", replies="s name ...",
                reads=("",)),
        Command("/player/load", "s", "path",
                "load a reference track (WAV, FLAC, AIFF, OGG, MP3) from a path on the "
                "daemon's machine, resampled to the engine's rate and measured",
                replies="s path, f duration s, f integrated LUFS, f true peak dBTP"),
        Command("/player/track", "i", "number",
                "load the configured reference track NUMBER ([reference] tracks, from 1)",
                replies="s path, f duration s, f integrated LUFS, f true peak dBTP"),
        Command("/player/position", "f", "seconds",
                "seek the reference to SECONDS (no argument: ask where it is)",
                replies="f seconds", alternatives=("",), reads=("",)),
        Command("/player/loop", "ff", "start end",
                "loop the reference between START and END seconds (0 0: the whole track)",
                replies="f start s, f end s"),
    )
}  # fmt: skip


def coerce(command: Command, args: list | tuple) -> tuple:
    """The arguments as the handler takes them (str, int, float), or CommandError."""
    for types in (command.types, *command.alternatives):
        if len(types) == len(args):
            break
    else:
        raise CommandError(f"{command.address}: takes {command.usage}")
    out = []
    for tag, arg in zip(types, args, strict=True):
        if isinstance(arg, bool) or (tag == "s") != isinstance(arg, str):
            raise CommandError(f"{command.address}: takes {command.usage}")
        if tag == "i":
            if isinstance(arg, float) and not arg.is_integer():
                raise CommandError(f"{command.address}: {arg!r} is not a whole number")
            arg = int(arg)
        elif tag == "f":
            arg = float(arg)
            if not math.isfinite(arg):
                raise CommandError(f"{command.address}: {arg!r} is not a finite number")
        out.append(arg)
    return tuple(out)
