"""The reference player component: a commercial track to A/B against the mix.

It builds a :class:`~studiod.daemon.reference.ReferencePlayer` at the session's rate, runs
it in the audio callback (into the external monitor input pair, before the engine), and
loads the first of ``[reference] tracks`` at start. The monitor source is the A/B switch:
``/monitor/source ref`` starts the transport (``/player/play``) and listens to the player,
loudness-matched to the mix (the master's short-term loudness, 10 times a second, while
``/player/match`` is on; unity gain while it is off); back on "mix" (or "ext", the hardware
on those inputs) the transport pauses, so the next A/B picks up where it stopped. The
transport plays only while it is heard. The commands ``/player/load``, ``/player/track``,
``/player/position`` and ``/player/loop`` (:mod:`studiod.controllers.commands`) are bound
here. A reload that changes the session or ``[reference]`` builds the player anew.
"""

from __future__ import annotations

import logging
from pathlib import Path

from studiod.controllers.commands import CommandError
from studiod.daemon.audiofile import AudioFileError
from studiod.daemon.components import Component, Plan
from studiod.daemon.rtstate import METER_MASTER

log = logging.getLogger("studiod")

MATCH_HZ = 10.0  # ReferencePlayer.update_match wants about 10 Hz (its short-term steps)
SOURCE, PLAY, MATCH = "/monitor/source", "/player/play", "/player/match"


class ReferenceComponent(Component):
    name = "reference"
    sections = ("session", "reference")

    def __init__(self, host):
        super().__init__(host)
        self.player = None  # reference.ReferencePlayer
        self._next_match = 0.0
        self._source = "mix"

    def prepare(self) -> None:
        self._start(self.host.config)

    def _start(self, config) -> None:
        self.player = self._build(config)
        self.host.core.set_player(self.player)
        for address, handler in self._commands().items():
            self.host.hub.bind(address, handler)

    def _build(self, config):
        from studiod.daemon.reference import ReferencePlayer

        player = ReferencePlayer(config.session.samplerate)
        player.loop = config.reference.loop
        if config.reference.tracks:
            track = config.reference.tracks[0]
            try:
                self._load(player, track)
            except (AudioFileError, OSError, ValueError) as exc:
                log.error("reference: %s; no reference track loaded", exc)
        return player

    @staticmethod
    def _load(player, path: Path) -> dict:
        info = player.load(path)
        log.info("reference: %s loaded (%.1f s, %.1f LUFS integrated, %.1f dBTP)", path,
                 info["duration_s"], info["integrated_lufs"], info["true_peak_dbtp"])  # fmt: skip
        return info

    def stop(self) -> None:
        for address, handler in self._commands().items():
            self.host.hub.unbind(address, handler)
        core = self.host.core
        if core is not None and self.player is not None and core.player is self.player:
            core.set_player(None)
        self.player = None

    def apply(self, plan: Plan) -> str | None:
        if not plan.touches(self.sections):
            return None
        self.stop()
        self._start(plan.new)  # the host still holds the old config while plans apply
        return "reference"

    def tick(self, now: float) -> None:
        player, hub = self.player, self.host.hub
        if player is None:
            return
        source = self.host.param_text(SOURCE)
        if source != self._source:  # A/B: the transport follows the source
            self._source = source
            if (hub.get(PLAY) >= 0.5) != (source == "ref"):
                hub.set(PLAY, 1.0 if source == "ref" else 0.0, source=self)
        heard = hub.get(PLAY) >= 0.5 and source == "ref" and len(player.state.audio) > 0
        if heard and not player.playing:
            player.play()
        elif not heard and player.playing:
            player.stop()
        matching = hub.get(MATCH) >= 0.5
        if matching != player.auto_match:
            if matching:
                player.auto_match = True
            else:
                player.set_gain_db(0.0)
        if matching and now >= self._next_match:
            self._next_match = now + 1.0 / MATCH_HZ
            shortterm = self.host.core.levels(METER_MASTER).shortterm_lufs
            player.update_match(shortterm, 1.0 / MATCH_HZ)

    def status(self) -> dict:
        player = self.player
        if player is None or player.path is None:
            return {}
        return {"reference": str(player.path), "reference_gain_db": player.matched_gain_db}

    # -- commands (OSC, MIDI buttons, the CLI) ------------------------------------------------
    def _commands(self) -> dict:
        return {
            "/player/load": self._cmd_load,
            "/player/track": self._cmd_track,
            "/player/position": self._cmd_position,
            "/player/loop": self._cmd_loop,
        }

    def _cmd_load(self, path: str) -> tuple:
        """Read, resample and measure on the calling thread (a control thread: the audio
        thread keeps playing the old track until the new one is swapped in)."""
        try:
            info = self._load(self.player, Path(path).expanduser())
        except (AudioFileError, OSError, ValueError) as exc:
            raise CommandError(f"reference: {exc}") from None
        return (info["path"], info["duration_s"], info["integrated_lufs"], info["true_peak_dbtp"])

    def _cmd_track(self, number: int) -> tuple:
        tracks = self.host.config.reference.tracks
        if not 1 <= number <= len(tracks):
            raise CommandError(f"no reference track {number}: [reference] tracks has {len(tracks)}")
        return self._cmd_load(str(tracks[number - 1]))

    def _cmd_position(self, seconds: float | None = None) -> tuple:
        player = self.player
        if seconds is not None:
            try:
                player.seek(seconds)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            return (min(seconds, player.duration_s),)
        return (player.position_s,)

    def _cmd_loop(self, start_s: float, end_s: float) -> tuple:
        try:
            return self.player.set_loop(start_s, end_s)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
