"""The reference-track player: a commercial track to A/B against the mix at matched loudness.

Audio thread. ``player_fill(inp, frames, columns, player.state)`` crossfades the player into
two columns of the engine's input block, before ``engine.process``: the engine's external
input (``session.ext_inputs``), which the monitor section plays on the source "ref" (and on
"ext", the hardware on those inputs, while the player is silent); the engine's own
smoothing makes the switch click-free. A loop region (``set_loop``) repeats a passage.
While the player is silent the columns are left untouched (a hardware source on those
inputs still works); starting, stopping, seeking and loading fade (``fade_ms``, a
one-pole, i.e. about 5 time constants to silence), and the matched gain moves smoothly
(``gain_smooth_ms``). The kernel allocates nothing and releases the GIL; loading a file
builds a new :class:`PlayerState` off the audio thread and swaps it in by reference.

Control side. ``load`` reads the file (soundfile), converts it to stereo and to the
engine's rate (``scipy.signal.resample_poly``, a Kaiser-windowed polyphase FIR), and
measures it with ``dsp.loudness``: its short-term loudness every 100 ms (EBU Tech 3341), its
integrated loudness and true peak. ``update_match(mix_shortterm_lufs)`` (call it ~10 Hz
with the mix's short-term loudness, e.g. the master tap of the loudness log) computes

    gain_dB = S_mix - S_ref(playing position)

holds it while either side is below the -70 LUFS absolute gate (silence, a pause), limits
it to [-max_cut_db, min(max_boost_db, -true_peak_ref)] (a boost never pushes the
reference's true peak over 0 dBTP), and smooths it with a one-pole of ``match_time_s``
(so the reference's own dynamics are not flattened: it follows the mix's level on the
scale of seconds, the way an engineer rides a reference by ear).
"""

from __future__ import annotations

import math
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np

from studiod.daemon.audiofile import AudioFileError, read
from studiod.dsp import loudness as ld
from studiod.dsp._jit import kernel

# control values (written by the control thread only)
C_PLAY = 0  # 1: play, 0: pause
C_LOOP = 1  # 1: loop at the end
C_GAIN = 2  # linear gain target (matched or manual)
C_SEEK_FRAME = 3  # where the last seek request goes
C_SEEK_SEQ = 4  # seek requests made
C_FADE_COEF = 5  # one-pole coefficient of the play/stop fade
C_GAIN_COEF = 6  # one-pole coefficient of the gain smoothing
C_LOOP_START = 7  # the loop's first frame
C_LOOP_END = 8  # the frame after the loop's last (0: the end of the track)
C_LOOP_XFADE = 9  # frames of the crossfade from the loop's end into its start
CTRL_SIZE = 10
# live values (written by the audio thread only)
L_FADE = 0  # current fade, 0..1
L_GAIN = 1  # current gain, linear
L_SEEK_DONE = 2  # seek requests carried out
L_ENDED = 3  # 1: reached the end without loop
LIVE_SIZE = 4

_SNAP = 1e-6  # a fade this close to its target is at it (exact 0 leaves the input untouched)
LOOP_XFADE_MS = 10.0  # long enough to hide the seam, short enough not to smear a downbeat


class PlayerState(NamedTuple):
    """audio float32[n, 2] at the engine rate; pos int64[1] next frame; ctrl
    float64[CTRL_SIZE] (control writes); live float64[LIVE_SIZE] (audio writes)."""

    audio: np.ndarray
    pos: np.ndarray
    ctrl: np.ndarray
    live: np.ndarray


@kernel
def player_fill(x, frames, columns, st):
    """Crossfade the player into ``x[:frames, columns[0]]`` and ``x[:frames, columns[1]]``
    (x: float32/float64 [frames, n_inputs], in place): ``x = x (1 - f) + f g ref`` with the
    fade ``f`` and matched gain ``g``. Leaves ``x`` untouched while the player is silent."""
    audio = st.audio
    ctrl = st.ctrl
    live = st.live
    n = audio.shape[0]
    c0 = columns[0]
    c1 = columns[1]
    fade = live[L_FADE]
    gain = live[L_GAIN]
    g_target = ctrl[C_GAIN]
    a_fade = ctrl[C_FADE_COEF]
    a_gain = ctrl[C_GAIN_COEF]
    loop = ctrl[C_LOOP] > 0.5
    loop_start = int(ctrl[C_LOOP_START])
    loop_end = int(ctrl[C_LOOP_END])
    if loop_end <= loop_start or loop_end > n:
        loop_end = n
    stop = loop_end if loop else n
    # The loop's last ``xfade`` frames fade into its first ones (equal gain: a sum of the two
    # never exceeds the track's own peak, which the matched gain is limited by), and the
    # wrap goes on after them: the seam is a crossfade, never a step.
    xfade = min(int(ctrl[C_LOOP_XFADE]), (loop_end - loop_start) // 2) if loop else 0
    pos = st.pos[0]
    seek_pending = ctrl[C_SEEK_SEQ] != live[L_SEEK_DONE]
    if fade == 0.0 and seek_pending:  # silent: seek at once
        pos = min(max(int(ctrl[C_SEEK_FRAME]), 0), n)
        live[L_SEEK_DONE] = ctrl[C_SEEK_SEQ]
        live[L_ENDED] = 0.0
        seek_pending = False
    playing = ctrl[C_PLAY] > 0.5 and n > 0
    target = 1.0 if (playing and not seek_pending and pos < n) else 0.0
    if fade == 0.0 and target == 0.0:
        live[L_GAIN] = g_target
        st.pos[0] = pos
        return
    for k in range(frames):
        fade += a_fade * (target - fade)
        if abs(target - fade) < _SNAP:
            fade = target
        gain += a_gain * (g_target - gain)
        left = 0.0
        right = 0.0
        if pos < n:
            left = audio[pos, 0]
            right = audio[pos, 1]
            into = pos - (stop - xfade)
            if 0 <= into < xfade:
                w = (into + 1.0) / (xfade + 1.0)
                left += w * (audio[loop_start + into, 0] - left)
                right += w * (audio[loop_start + into, 1] - right)
            pos += 1
            if loop and pos == stop:
                pos = loop_start + xfade
            elif pos >= n:  # the end (looping: past a loop set behind, a seek on its way)
                if loop:
                    pos = loop_start
                else:
                    live[L_ENDED] = 1.0
                    target = 0.0
        g = fade * gain
        x[k, c0] = x[k, c0] * (1.0 - fade) + g * left
        x[k, c1] = x[k, c1] * (1.0 - fade) + g * right
        if fade == 0.0:
            if seek_pending:
                pos = min(max(int(ctrl[C_SEEK_FRAME]), 0), n)
                live[L_SEEK_DONE] = ctrl[C_SEEK_SEQ]
                live[L_ENDED] = 0.0
                seek_pending = False
                target = 1.0 if (playing and pos < n) else 0.0
            if target == 0.0:
                break  # the rest of the block keeps the input as it is
    live[L_FADE] = fade
    live[L_GAIN] = gain
    st.pos[0] = pos


def _one_pole(time_ms: float, samplerate: float) -> float:
    """Per-sample coefficient of a one-pole with time constant ``time_ms``."""
    return 1.0 - math.exp(-1.0 / (time_ms * 1e-3 * samplerate))


def to_stereo(data: np.ndarray) -> np.ndarray:
    """[n, ch] -> [n, 2]: mono is duplicated, stereo kept; more channels are refused."""
    if data.shape[1] == 1:
        return np.repeat(data, 2, axis=1)
    if data.shape[1] == 2:
        return data
    raise AudioFileError(f"a reference track must be mono or stereo, got {data.shape[1]} channels")


def resample(data: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """float32 [n, ch] from ``from_hz`` to ``to_hz`` with scipy's polyphase resampler
    (up/down reduced by their GCD; Kaiser window, beta 5: default of resample_poly)."""
    if from_hz == to_hz:
        return np.ascontiguousarray(data, dtype=np.float32)
    from scipy.signal import resample_poly  # ~60 MB: only when a file needs it

    ratio = Fraction(int(to_hz), int(from_hz))
    y = resample_poly(data.astype(np.float64), ratio.numerator, ratio.denominator, axis=0)
    return np.ascontiguousarray(y, dtype=np.float32)


class ReferenceAnalysis(NamedTuple):
    shortterm_lufs: np.ndarray  # every 100 ms of the (resampled) track; see analyse()
    integrated_lufs: float
    true_peak_dbtp: float


def analyse(audio: np.ndarray, samplerate: float) -> ReferenceAnalysis:
    """Short-term loudness of ``audio`` at each 100 ms hop (index h: the 3 s ending at
    (h + 1) * 100 ms; the first 29 hops, where no full 3 s window exists, take the value of
    hop 29; a track shorter than 3 s gets its integrated loudness throughout)."""
    meter = ld.LoudnessMeter(samplerate, 2)
    sub, per_hop = ld.block_geometry(samplerate)
    hop = sub * per_hop
    hops = len(audio) // hop
    values = np.full(max(hops, 1), -np.inf)
    for h in range(hops):
        meter.process(audio[h * hop : (h + 1) * hop])
        values[h] = meter.shortterm_lufs
    meter.process(audio[hops * hop :])
    integrated = meter.integrated_lufs
    if hops >= 30:
        values[:29] = values[29]
    else:
        values[:] = integrated
    return ReferenceAnalysis(values, integrated, meter.true_peak_dbtp)


class ReferencePlayer:
    """Control side of the reference player; ``state`` is what the audio thread reads.
    (The A/B switch is the monitor source: daemon/reference_part.py.)"""

    def __init__(
        self,
        samplerate: int,
        *,
        fade_ms: float = 5.0,
        gain_smooth_ms: float = 50.0,
        match_time_s: float = 2.0,
        max_boost_db: float = 12.0,
        max_cut_db: float = 40.0,
    ):
        for name, v in (("fade_ms", fade_ms), ("gain_smooth_ms", gain_smooth_ms),
                        ("match_time_s", match_time_s)):  # fmt: skip
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"reference player: {name} must be a positive number")
        for name, v in (("max_boost_db", max_boost_db), ("max_cut_db", max_cut_db)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"reference player: {name} must be a number >= 0")
        self.samplerate = int(samplerate)
        self.fade_ms = float(fade_ms)
        self.gain_smooth_ms = float(gain_smooth_ms)
        self.match_time_s = float(match_time_s)
        self.max_boost_db = float(max_boost_db)
        self.max_cut_db = float(max_cut_db)
        self.path: Path | None = None
        self.analysis: ReferenceAnalysis | None = None
        self.auto_match = True
        self.matched_gain_db = 0.0
        self.target_gain_db = 0.0
        self.limited = False
        self._matched_once = False
        self._lock = threading.Lock()
        self.state = self._new_state(np.zeros((0, 2), np.float32))
        self.on_state = None  # called with each new state (set by AudioCore.set_player)

    def _new_state(self, audio: np.ndarray) -> PlayerState:
        ctrl = np.zeros(CTRL_SIZE)
        ctrl[C_GAIN] = 1.0
        ctrl[C_FADE_COEF] = _one_pole(self.fade_ms, self.samplerate)
        ctrl[C_GAIN_COEF] = _one_pole(self.gain_smooth_ms, self.samplerate)
        ctrl[C_LOOP_XFADE] = round(LOOP_XFADE_MS * 1e-3 * self.samplerate)
        live = np.zeros(LIVE_SIZE)
        live[L_GAIN] = 1.0
        return PlayerState(audio, np.zeros(1, dtype=np.int64), ctrl, live)

    # -- loading -------------------------------------------------------------------------
    def load(self, path: str | Path, wait_s: float = 0.1) -> dict:
        """Read, convert and analyse a track, then swap it in (paused at its start). A
        playing track fades out first: the swap waits for the audio thread to finish the
        fade, however late it runs, and gives up only when the fade has not moved for
        ``wait_s`` (no stream runs, so nothing is heard). Returns ``info()``."""
        data, rate = read(path)
        audio = resample(to_stereo(data), rate, self.samplerate)
        analysis = analyse(audio, self.samplerate)
        state = self._new_state(audio)
        with self._lock:
            old = self.state
            was_playing = old.ctrl[C_PLAY] > 0.5
            old.ctrl[C_PLAY] = 0.0
            # a swap during the fade would be a step from the old track to the new one
            last, moved = old.live[L_FADE], time.monotonic()
            while (fade := old.live[L_FADE]) > 0.0:
                now = time.monotonic()
                if fade != last:
                    last, moved = fade, now
                elif now - moved > wait_s:
                    break
                time.sleep(0.002)
            state.ctrl[C_LOOP] = old.ctrl[C_LOOP]  # a new track loops whole
            state.ctrl[C_GAIN] = old.ctrl[C_GAIN]
            state.live[L_GAIN] = old.ctrl[C_GAIN]
            state.ctrl[C_PLAY] = 1.0 if was_playing else 0.0
            self.path = Path(path)
            self.analysis = analysis
            self.state = state
            if self.on_state is not None:  # the audio callback's table (AudioCore)
                self.on_state(state)
        return self.info()

    # -- transport -----------------------------------------------------------------------
    def play(self) -> None:
        st = self.state
        if st.live[L_ENDED] > 0.5 or st.pos[0] >= len(st.audio):
            self.seek(0.0)
        st.ctrl[C_PLAY] = 1.0

    def stop(self) -> None:
        """Pause (fade out); ``play`` resumes where it stopped."""
        self.state.ctrl[C_PLAY] = 0.0

    def seek(self, seconds: float) -> None:
        """Jump to ``seconds`` (fades out, jumps, fades back in when playing)."""
        if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seek position must be a number of seconds >= 0, got {seconds!r}")
        st = self.state
        st.ctrl[C_SEEK_FRAME] = min(round(seconds * self.samplerate), len(st.audio))
        st.ctrl[C_SEEK_SEQ] += 1.0

    @property
    def loop(self) -> bool:
        return bool(self.state.ctrl[C_LOOP] > 0.5)

    @loop.setter
    def loop(self, on: bool) -> None:
        self.state.ctrl[C_LOOP] = 1.0 if on else 0.0

    def set_loop(self, start_s: float, end_s: float) -> tuple[float, float]:
        """Loop between ``start_s`` and ``end_s`` (0, 0: the whole track; an end past the
        track's is its end) and turn looping on; returns the region in seconds."""
        for v in (start_s, end_s):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"loop points must be numbers of seconds >= 0, got {v!r}")
        n = len(self.state.audio)
        start = min(round(start_s * self.samplerate), n)
        end = min(round(end_s * self.samplerate), n)
        if end_s == 0.0:
            start, end = (0, 0) if start_s == 0.0 else (start, n)
        elif end <= start:
            raise ValueError(f"the loop must end after it starts ({start_s:g} s, {end_s:g} s)")
        st = self.state
        outside = not start <= st.pos[0] < (end or n)
        st.ctrl[C_LOOP_START] = start
        st.ctrl[C_LOOP_END] = end
        st.ctrl[C_LOOP] = 1.0
        if outside:  # into the loop as a seek does: fade out, jump, fade in
            self.seek(start / self.samplerate)
        return start / self.samplerate, (end or n) / self.samplerate

    @property
    def playing(self) -> bool:
        st = self.state
        return bool(st.ctrl[C_PLAY] > 0.5 and st.live[L_ENDED] < 0.5 and len(st.audio) > 0)

    @property
    def position_s(self) -> float:
        return float(self.state.pos[0]) / self.samplerate

    @property
    def duration_s(self) -> float:
        return len(self.state.audio) / self.samplerate

    # -- A/B and loudness matching ---------------------------------------------------------
    def set_gain_db(self, gain_db: float) -> None:
        """Manual gain (turns automatic matching off)."""
        if not (isinstance(gain_db, int | float) and math.isfinite(gain_db)):
            raise ValueError(f"gain must be a finite number of dB, got {gain_db!r}")
        self.auto_match = False
        self.matched_gain_db = float(gain_db)
        self.state.ctrl[C_GAIN] = 10.0 ** (gain_db / 20.0)

    def reference_shortterm_lufs(self) -> float:
        """The reference's short-term loudness at the playing position."""
        if self.analysis is None:
            return -math.inf
        values = self.analysis.shortterm_lufs
        hop_s = 0.1
        h = int(self.position_s / hop_s)
        return float(values[min(max(h, 0), len(values) - 1)])

    def gain_limits_db(self) -> tuple[float, float]:
        """(lowest, highest) matched gain: the boost keeps the true peak <= 0 dBTP."""
        upper = self.max_boost_db
        if self.analysis is not None and math.isfinite(self.analysis.true_peak_dbtp):
            upper = min(upper, -self.analysis.true_peak_dbtp)
        return -self.max_cut_db, upper

    def update_match(self, mix_shortterm_lufs: float, dt_s: float = 0.1) -> float:
        """One matching step (control thread, ~10 Hz): see the module docstring. Returns
        the matched gain (dB) now applied."""
        if not self.auto_match:
            return self.matched_gain_db
        ref = self.reference_shortterm_lufs()
        gate = ld.ABSOLUTE_GATE_LUFS
        if not (mix_shortterm_lufs > gate and ref > gate):
            return self.matched_gain_db  # hold through silence and pauses
        low, high = self.gain_limits_db()
        wanted = mix_shortterm_lufs - ref
        target = min(max(wanted, low), high)
        self.limited = target != wanted
        self.target_gain_db = target
        if not self._matched_once:
            self.matched_gain_db = target
            self._matched_once = True
        else:
            a = 1.0 - math.exp(-max(dt_s, 0.0) / self.match_time_s)
            self.matched_gain_db += a * (target - self.matched_gain_db)
        self.state.ctrl[C_GAIN] = 10.0 ** (self.matched_gain_db / 20.0)
        return self.matched_gain_db

    def info(self) -> dict:
        a = self.analysis
        return {
            "path": None if self.path is None else str(self.path),
            "duration_s": self.duration_s,
            "position_s": self.position_s,
            "playing": self.playing,
            "loop": self.loop,
            "auto_match": self.auto_match,
            "matched_gain_db": self.matched_gain_db,
            "limited": self.limited,
            "integrated_lufs": None if a is None else a.integrated_lufs,
            "true_peak_dbtp": None if a is None else a.true_peak_dbtp,
        }

    # -- offline / tests -------------------------------------------------------------------
    def fill(self, block: np.ndarray, columns=(0, 1)) -> np.ndarray:
        """Python wrapper of ``player_fill`` for a whole ``[frames, >= 2]`` array (in place;
        float32 or float64, C-contiguous); returns it."""
        if block.ndim != 2 or not block.flags.c_contiguous:
            raise ValueError("block must be a C-contiguous [frames, columns] array")
        cols = np.asarray(columns, dtype=np.int64)
        if cols.shape != (2,) or cols.min() < 0 or cols.max() >= block.shape[1]:
            raise ValueError(f"columns must be two indices below {block.shape[1]}")
        player_fill(block, block.shape[0], cols, self.state)
        return block
