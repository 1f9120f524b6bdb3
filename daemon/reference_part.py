"""The reference player component: a commercial track to A/B against the mix.

It builds a :class:`~studiod.daemon.reference.ReferencePlayer` at the session's rate, runs
it in the audio callback (into the external monitor input pair, before the engine), and
loads ``[reference] track`` at start. The monitor source is the A/B switch: while
``/monitor/source`` is "ext" the player plays (from where it paused), loudness-matched to
the mix (the master's short-term loudness, 10 times a second); on "mix" it pauses. A reload
that changes the session or ``[reference]`` builds the player anew. (Transport and track
controls over OSC come with the monitor section's controls.)
"""

from __future__ import annotations

import logging

from studiod.daemon.components import Component, Plan
from studiod.daemon.rtstate import METER_MASTER

log = logging.getLogger("studiod")

MATCH_HZ = 10.0  # ReferencePlayer.update_match wants about 10 Hz (its short-term steps)


class ReferenceComponent(Component):
    name = "reference"
    sections = ("session", "reference")

    def __init__(self, host):
        super().__init__(host)
        self.player = None  # reference.ReferencePlayer
        self._next_match = 0.0

    def prepare(self) -> None:
        self.player = self._build(self.host.config)
        self.host.core.set_player(self.player)

    def _build(self, config):
        from studiod.daemon.audiofile import AudioFileError
        from studiod.daemon.reference import ReferencePlayer

        player = ReferencePlayer(config.session.samplerate)
        player.loop = config.reference.loop
        track = config.reference.track
        if track is not None:
            try:
                info = player.load(track)
            except (AudioFileError, OSError, ValueError) as exc:
                log.error("reference: %s; no reference track loaded", exc)
            else:
                log.info("reference: %s loaded (%.1f s, %.1f LUFS integrated)", track,
                         info["duration_s"], info["integrated_lufs"])  # fmt: skip
        return player

    def stop(self) -> None:
        core = self.host.core
        if core is not None and self.player is not None and core.player is self.player:
            core.set_player(None)
        self.player = None

    def apply(self, plan: Plan) -> str | None:
        if not plan.touches(self.sections):
            return None
        self.stop()
        self.player = self._build(plan.new)
        self.host.core.set_player(self.player)
        return "reference"

    def tick(self, now: float) -> None:
        player = self.player
        if player is None or not len(player.state.audio):
            return
        listening = self.host.param_text("/monitor/source") == "ext"
        if listening and not player.playing:
            player.play()
        elif not listening and player.playing:
            player.stop()
        if now >= self._next_match:
            self._next_match = now + 1.0 / MATCH_HZ
            shortterm = self.host.core.levels(METER_MASTER).shortterm_lufs
            player.update_match(shortterm, 1.0 / MATCH_HZ)

    def status(self) -> dict:
        player = self.player
        if player is None or player.path is None:
            return {}
        return {"reference": str(player.path), "reference_gain_db": player.target_gain_db}
