"""The loudness monitor component: the live loudness log of ``studiod run`` and ``demo``.

It builds a :class:`~studiod.daemon.loudlog.LoudnessLog` for the running session (the master
and one bus per monitor system, ``[loudness] spl_at_minus20dbfs`` calibrations, the
segment thresholds and delivery target of ``[loudness]``) in the state directory
(``loudness.sqlite3``), feeds it from the audio callback (its tap runs after the engine,
without a lock or an allocation) and drains it once a second on the control thread with
the meters' reading, so ``studiod log`` (a WAL reader) shows it while the daemon runs. A
reload that changes the session, ``[loudness]`` or the state directory closes the log
(its open segments end) and opens a new one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from studiod.daemon.components import Component, Plan

log = logging.getLogger("studiod")


class LoudnessMonitor(Component):
    name = "loudness"
    sections = ("session", "loudness", "state")

    def __init__(self, host):
        super().__init__(host)
        self.log = None  # loudlog.LoudnessLog
        self._reported_drops = 0

    def prepare(self) -> None:
        self.log = self._open(self.host.config)
        self.host.core.set_tap(self.log.tap)

    def _open(self, config):
        from studiod.daemon.logdb import LOG_FILENAME
        from studiod.daemon.loudlog import LoudnessLog
        from studiod.dsp.loudtap import buses_for_session

        cfg = config.loudness  # a logdb.LogConfig with the SPL calibrations
        buses = buses_for_session(config.session, dict(cfg.spl_at_minus20dbfs))
        path = Path(config.state.dir) / LOG_FILENAME
        opened = LoudnessLog(path, config.session.samplerate, buses, cfg)
        log.info(
            "loudness log: %s (%s), target %s", path, ", ".join(b.name for b in buses), cfg.target
        )
        if opened.interrupted_segments:
            log.warning("loudness log: %d segment(s) left open by a hard stop marked "
                        "interrupted", opened.interrupted_segments)  # fmt: skip
        return opened

    def stop(self) -> None:
        old, self.log = self.log, None
        if old is None:
            return
        core = self.host.core
        if core is not None and core.tap is old.tap:
            core.set_tap(None)
        try:
            old.close()
        except Exception:
            log.exception("loudness log: close failed")

    def apply(self, plan: Plan) -> str | None:
        if not plan.touches(self.sections):
            return None
        self.stop()
        self.log = self._open(plan.new)
        self.host.core.set_tap(self.log.tap)
        return "loudness log"

    def on_reading(self, reading) -> None:
        current = self.log
        if current is None:
            return
        current.update(system=reading.system, now=reading.time)
        if current.dropped > self._reported_drops:
            log.warning("loudness log: %d rows dropped (the disk is not keeping up)",
                        current.dropped - self._reported_drops)  # fmt: skip
            self._reported_drops = current.dropped

    def status(self) -> dict:
        current = self.log
        if current is None:
            return {}
        return {"loudness_log": str(current.path), "loudness_lost_hops": current.lost_hops}
