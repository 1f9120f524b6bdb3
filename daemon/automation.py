"""Automation lanes for offline renders: a registry address's value over time.

A render session (``studiod render``) carries them as

    [[automation]]
    address = "/ch/3/fader"
    points = [[0.0, -60.0], [2.0, 0.0]]   # [time in s, value], times increasing
    curve = "linear"                       # "linear" (default), "step" or "exponential"

Before its first point a lane holds the first value, after its last point the last.
``linear`` is a straight line in the parameter's own unit (dB for a fader, Hz for a
frequency); ``exponential`` is a constant ratio per second (a frequency sweep that sounds
even; every value of the lane then has one sign and none is zero); ``step`` holds each
point's value until the next point. Toggles and choices take ``step`` only.

The values reach the audio through the engine's own parameter path (:meth:`Engine.set`)
in pieces of at most a control tick (``engine.TICK`` samples, 0.67 ms at 48 kHz), cut
also at each point's first sample and the sample after it: each piece is given the value
the lanes have at its last sample, and the engine in its automation mode
(:meth:`Engine.automate`) moves every gain in a straight line to arrive there on that
sample, while filters and dynamics take the value at the piece's start. No piece straddles
a corner or a step, so a lane straight in the gain (a send level, a toggle) is followed
exactly on every sample, a fader's straight line in dB within the chord of its exponential
over one tick (2.6e-6 for a 60 dB/s fade at 48 kHz), and a step lands on the first sample
at or after its time (a gain that jumps clicks as drawn: draw a short ramp for a fade).
A lane's time is the stems' timeline: a lane whose stage hears the stems later (the master
fader behind the saturator's half-band and the linear-phase EQ, the monitor section behind
the whole master chain) is played that many samples later.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from studiod.daemon.offline import OfflineError, check_table
from studiod.dsp import limiter
from studiod.dsp.engine import QUEUE_SIZE, TICK, Engine
from studiod.dsp.registry import ENUM, TOGGLE, ParamError

CURVES = ("linear", "step", "exponential")
LANE_KEYS = ("address", "points", "curve")


@dataclass(frozen=True)
class Lane:
    address: str
    times_s: np.ndarray  # float64[P], strictly increasing
    values: np.ndarray  # float64[P], engine values (a choice's index)
    curve: str

    def at(self, t_s: np.ndarray) -> np.ndarray:
        """The lane's values at the times ``t_s`` (seconds)."""
        t = np.asarray(t_s, dtype=np.float64)
        if self.curve == "step":
            k = np.searchsorted(self.times_s, t, side="right") - 1
            return self.values[np.maximum(k, 0)]
        if self.curve == "linear":
            v = np.interp(t, self.times_s, self.values)
        else:
            sign = math.copysign(1.0, self.values[0])
            v = sign * np.exp(np.interp(t, self.times_s, np.log(np.abs(self.values))))
        # between two points, not a rounding beyond them (nor the parameter's range)
        return np.clip(v, self.values.min(), self.values.max())


def parse_lanes(
    tables: object, engine: Engine, where: str, reserved: Collection[str] = ()
) -> list[Lane]:
    """The ``[[automation]]`` tables of a session, validated against ``engine``'s registry
    (``reserved``: addresses the caller sets itself); errors name ``where``, the lane and
    the reason."""
    if not isinstance(tables, list):
        raise OfflineError(f"{where}: automation must be an array of [[automation]] tables")
    if len(tables) > QUEUE_SIZE:
        raise OfflineError(f"{where}: {len(tables)} lanes; at most {QUEUE_SIZE}")
    lanes, seen = [], set()
    for i, table in enumerate(tables):
        key = f"{where}: automation[{i}]"
        check_table(table, key, LANE_KEYS)
        address = table.get("address")
        if not isinstance(address, str) or address not in engine.registry:
            raise OfflineError(f"{key}: address {address!r} is not a parameter")
        param = engine.registry[address]
        if param.index >= engine.layout.control_base:
            raise OfflineError(f"{key}: {address} is not heard in a render (control side)")
        if address in reserved:
            raise OfflineError(f"{key}: {address} is the render's own setting")
        if address in seen:
            raise OfflineError(f"{key}: {address} has a lane already")
        seen.add(address)
        key = f"{key} ({address})"
        curve = table.get("curve", "linear")
        if curve not in CURVES:
            raise OfflineError(f"{key}: curve {curve!r} is not one of {CURVES}")
        if param.kind in (ENUM, TOGGLE) and curve != "step":
            raise OfflineError(f"{key}: a toggle or choice takes curve = 'step' only")
        points = table.get("points")
        if not isinstance(points, list) or not points:
            raise OfflineError(f"{key}: points must be a non-empty array of [time_s, value]")
        times, values = [], []
        for k, point in enumerate(points):
            if not (isinstance(point, list) and len(point) == 2):
                raise OfflineError(f"{key}: point {k} must be [time_s, value]")
            t = point[0]
            if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
                raise OfflineError(f"{key}: point {k}: time {t!r} is not a number of seconds")
            if t < 0 or (times and t <= times[-1]):
                raise OfflineError(
                    f"{key}: point {k}: times start at 0 s or later and increase ({t:g} s)"
                )
            try:
                values.append(param.validate(point[1]))
            except ParamError as exc:
                raise OfflineError(f"{key}: point {k}: {exc}") from None
            times.append(float(t))
        if curve == "exponential":
            signs = {math.copysign(1.0, v) for v in values}
            if 0.0 in values or len(signs) > 1:
                raise OfflineError(
                    f"{key}: an exponential lane's values have one sign and none is 0"
                )
        lanes.append(Lane(address, np.array(times), np.array(values), curve))
    return lanes


def _stage_delay_samples(engine: Engine, address: str) -> int:
    """Samples from the engine's input to the stage ``address`` acts on: the master chain's
    fader, limiter and dither come after its saturator and linear-phase EQ (the master's
    latency without the limiter's look-ahead), the monitor section after the whole chain;
    every stage before them hears the input as it comes."""
    parts = address.strip("/").split("/")
    master = engine.master_latency_samples
    if parts[0] == "master" and parts[1] in ("fader", "limiter", "dither"):
        return master - limiter.limiter_latency(engine.state.mst_lim_coefs)
    if parts[0] in ("monitor", "talkback"):
        return master
    return 0


class Automation:
    """Plays lanes into an engine while it renders (``offline.run_engine_blocks``): the
    lanes' values at time 0 queued before the engine settles on its parameters, then
    :meth:`start`, then :meth:`process` in place of ``engine.process``."""

    def __init__(self, lanes: list[Lane], engine: Engine):
        self.lanes = lanes
        self.engine = engine
        fs = engine.samplerate
        self._delays = np.array([_stage_delay_samples(engine, lane.address) for lane in lanes])
        # a point's first sample (the first at or after its time) is a piece of its own:
        # then no straight piece straddles a corner or a step
        times = np.concatenate([lane.times_s for lane in lanes])
        firsts = np.ceil(times * fs)  # then the rounding of times * fs undone
        firsts[(firsts - 1) / fs >= times] -= 1
        firsts[firsts / fs < times] += 1
        firsts += np.repeat(self._delays, [len(lane.times_s) for lane in lanes])
        self._points = np.unique(np.concatenate([firsts, firsts + 1])).astype(np.int64)
        self._sent = np.full(len(lanes), np.nan)
        self._send(np.array([lane.at(0.0) for lane in lanes]))
        self._clock0 = 0

    def start(self) -> None:
        """The engine's next input sample is the lanes' time 0."""
        self._clock0 = self.engine.clock_samples

    def _send(self, values: np.ndarray) -> None:
        for k in np.flatnonzero(values != self._sent):
            self.engine.set(self.lanes[k].address, float(values[k]))
        self._sent = values

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        """``engine.process(inp, out)`` in pieces: at most a control tick long, and cut at
        every point's first sample and the one after it. Each piece ends on the lanes'
        values at its last sample, where the gains arrive in a straight line."""
        engine, n = self.engine, len(inp)
        clock = engine.clock_samples
        frame = clock - self._clock0  # the lanes' time of inp[0], in samples
        ticks = np.arange(TICK - clock % TICK, n, TICK)
        points = self._points - frame
        starts = np.unique(np.concatenate([[0], ticks, points[(points > 0) & (points < n)]]))
        ends = np.append(starts[1:], n)
        last = frame + ends - 1  # the input sample each piece ends on
        values = np.array(
            [
                lane.at((last - delay) / engine.samplerate)
                for lane, delay in zip(self.lanes, self._delays, strict=True)
            ]
        )
        # pieces whose values do not change from the piece before go with it: one call
        changed = np.flatnonzero(np.any(values[:, 1:] != values[:, :-1], axis=0)) + 1
        runs = [0, *changed.tolist()]
        for first, last in zip(runs, [*runs[1:], len(starts)], strict=True):
            a, b = int(starts[first]), int(ends[last - 1])
            self._send(values[:, first])
            engine.automate(clock + int(ends[first]) - 1)
            engine.process(inp[a:b], out[a:b])
