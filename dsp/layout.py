"""Which parameters a session has, and where each lives in the engine's value array.

Every strip kind (channel, group bus, FX bus, master, monitor, monitor system) has a
template: an ordered tuple of parameter declarations. A strip instance gets a contiguous
block of the flat value array; a parameter's slot is the block's base plus its position
in the template. The ``CH_*``, ``GRP_*``, ``FX_*``, ``MST_*``, ``MON_*`` and ``SYS_*``
constants below are those positions, read by the jitted engine as compile-time constants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from studiod.dsp.registry import (
    ENUM,
    FADER,
    FADER_OFF_DB,
    FLOAT,
    LINEAR,
    LOG,
    TOGGLE,
    Param,
    Registry,
)
from studiod.dsp.session import SIMULATIONS, Session

V = TypeVar("V")


@dataclass(frozen=True)
class _T:
    """A parameter template: the address suffix and everything but the slot."""

    suffix: str
    unit: str
    minimum: float
    maximum: float
    default: float
    taper: str = LINEAR
    kind: str = FLOAT
    choices: tuple[str, ...] = ()
    description: str = ""


def _toggle(suffix: str, default: bool, description: str) -> _T:
    return _T(suffix, "", 0.0, 1.0, float(default), kind=TOGGLE, description=description)


def _enum(suffix: str, choices: tuple[str, ...], default: str, description: str) -> _T:
    return _T(
        suffix,
        "",
        0.0,
        float(len(choices) - 1),
        float(choices.index(default)),
        kind=ENUM,
        choices=choices,
        description=description,
    )


def _fader(suffix: str, default_db: float, description: str, top_db: float = 10.0) -> _T:
    return _T(suffix, "dB", FADER_OFF_DB, top_db, default_db, FADER, description=description)


SLOPES = ("6", "12", "18", "24")  # dB/octave: Butterworth orders 1…4


def _eq_bands(prefix: str, bands: tuple[tuple[str, float, float], ...]) -> tuple[_T, ...]:
    """4-band EQ templates; bands are (shape, freq_hz, q) for bands 1…4."""
    out: list[_T] = []
    for b, (shape, freq_hz, q) in enumerate(bands, start=1):
        out += [
            _T(f"{prefix}/{b}/gain", "dB", -18.0, 18.0, 0.0, description=f"{shape} band gain"),
            _T(
                f"{prefix}/{b}/freq", "Hz", 20.0, 20000.0, freq_hz, LOG, description=f"{shape} band"
            ),
            _T(f"{prefix}/{b}/q", "", 0.1, 10.0, q, LOG, description=f"{shape} band Q"),
        ]
    return tuple(out)


# Band shapes are fixed: low shelf, two peaks, high shelf (the classic console layout).
EQ_SHAPES = ("lowshelf", "peak", "peak", "highshelf")
_CHANNEL_EQ = (("low shelf", 100.0, 0.707), ("peak", 400.0, 1.0), ("peak", 2500.0, 1.0),
               ("high shelf", 8000.0, 0.707))  # fmt: skip
_MASTER_EQ = (("low shelf", 60.0, 0.707), ("peak", 300.0, 0.7), ("peak", 3000.0, 0.7),
              ("high shelf", 12000.0, 0.707))  # fmt: skip
_SYSTEM_EQ = (("low shelf", 80.0, 0.707), ("peak", 120.0, 4.0), ("peak", 2000.0, 2.0),
              ("high shelf", 10000.0, 0.707))  # fmt: skip


def _index(templates: tuple[_T, ...]) -> dict[str, int]:
    return {t.suffix: i for i, t in enumerate(templates)}


# --- channel strip ---------------------------------------------------------------------
CHANNEL = (
    _T("trim", "dB", -24.0, 24.0, 0.0, description="input trim (gain staging)"),
    _toggle("polarity", False, "invert polarity"),
    _toggle("hpf/on", False, "high-pass filter in"),
    _T("hpf/freq", "Hz", 20.0, 2000.0, 80.0, LOG, description="high-pass cutoff"),
    _enum("hpf/slope", SLOPES, "12", "high-pass slope, dB/octave (Butterworth)"),
    _toggle("lpf/on", False, "low-pass filter in"),
    _T("lpf/freq", "Hz", 500.0, 20000.0, 18000.0, LOG, description="low-pass cutoff"),
    _enum("lpf/slope", SLOPES, "12", "low-pass slope, dB/octave (Butterworth)"),
    _toggle("eq/on", True, "parametric EQ in"),
    *_eq_bands("eq", _CHANNEL_EQ),
    _toggle("gate/on", False, "gate/expander in"),
    _T("gate/threshold", "dB", -80.0, 0.0, -50.0, description="gate threshold"),
    _T("gate/range", "dB", 0.0, 90.0, 40.0, description="maximum attenuation"),
    _T("gate/attack", "ms", 0.05, 50.0, 0.5, LOG, description="opening time"),
    _T("gate/hold", "ms", 0.0, 2000.0, 50.0, description="hold before release"),
    _T("gate/release", "ms", 5.0, 4000.0, 150.0, LOG, description="closing time"),
    _toggle("comp/on", False, "compressor in"),
    _T("comp/threshold", "dB", -60.0, 0.0, -18.0, description="compressor threshold"),
    _T("comp/ratio", "", 1.0, 20.0, 3.0, LOG, description="compression ratio"),
    _T("comp/knee", "dB", 0.0, 24.0, 6.0, description="soft knee width"),
    _T("comp/attack", "ms", 0.05, 300.0, 10.0, LOG, description="attack time constant"),
    _T("comp/release", "ms", 5.0, 5000.0, 150.0, LOG, description="release time constant"),
    _T("comp/makeup", "dB", -12.0, 24.0, 0.0, description="makeup gain"),
    _T("comp/schpf", "Hz", 0.0, 500.0, 0.0, description="side-chain high-pass (0 = off)"),
    _T("pan", "", -1.0, 1.0, 0.0, description="pan (balance on stereo channels), -1 = left"),
    _toggle("mute", False, "mute"),
    _toggle("solo", False, "solo in place"),
    _fader("fader", 0.0, "channel fader"),
)
CH = _index(CHANNEL)
CH_TRIM = CH["trim"]
CH_POLARITY = CH["polarity"]
CH_HPF_ON = CH["hpf/on"]
CH_HPF_FREQ = CH["hpf/freq"]
CH_HPF_SLOPE = CH["hpf/slope"]
CH_LPF_ON = CH["lpf/on"]
CH_LPF_FREQ = CH["lpf/freq"]
CH_LPF_SLOPE = CH["lpf/slope"]
CH_EQ_ON = CH["eq/on"]
CH_EQ = CH["eq/1/gain"]  # band b (0-based) at CH_EQ + 3*b: gain, freq, q
CH_GATE_ON = CH["gate/on"]
CH_GATE = CH["gate/threshold"]  # threshold, range, attack, hold, release
CH_COMP_ON = CH["comp/on"]
CH_COMP = CH["comp/threshold"]  # threshold, ratio, knee, attack, release, makeup, schpf
CH_PAN = CH["pan"]
CH_MUTE = CH["mute"]
CH_SOLO = CH["solo"]
CH_FADER = CH["fader"]
CH_BUS = len(CHANNEL)  # the routing enum follows (its choices depend on the session)
CH_SEND = CH_BUS + 1  # then per FX bus: level, pre; then per cue system: level, pan, pre
CH_FIXED = CH_SEND

# --- group bus ---------------------------------------------------------------------------
GROUP = (
    _toggle("comp/on", False, "glue compressor in"),
    _T("comp/threshold", "dB", -40.0, 0.0, -12.0, description="glue threshold"),
    _T("comp/ratio", "", 1.0, 10.0, 2.0, LOG, description="glue ratio"),
    _T("comp/knee", "dB", 0.0, 24.0, 6.0, description="glue knee"),
    _T("comp/attack", "ms", 0.1, 100.0, 10.0, LOG, description="glue attack"),
    _T("comp/release", "ms", 10.0, 2000.0, 300.0, LOG, description="glue release"),
    _T("comp/makeup", "dB", -12.0, 24.0, 0.0, description="glue makeup"),
    _toggle("mute", False, "mute"),
    _fader("fader", 0.0, "group fader"),
)
GRP = _index(GROUP)
GRP_COMP_ON = GRP["comp/on"]
GRP_COMP = GRP["comp/threshold"]  # threshold, ratio, knee, attack, release, makeup
GRP_MUTE = GRP["mute"]
GRP_FADER = GRP["fader"]

# --- FX bus (return EQ, level; then the effect's own parameters) ---------------------------
FX_COMMON = (
    _T("eq/hpf", "Hz", 20.0, 2000.0, 100.0, LOG, description="return high-pass"),
    _T("eq/lpf", "Hz", 1000.0, 20000.0, 12000.0, LOG, description="return low-pass"),
    _T("eq/low/gain", "dB", -18.0, 18.0, 0.0, description="return low shelf gain"),
    _T("eq/low/freq", "Hz", 40.0, 1000.0, 250.0, LOG, description="return low shelf"),
    _T("eq/high/gain", "dB", -18.0, 18.0, 0.0, description="return high shelf gain"),
    _T("eq/high/freq", "Hz", 1000.0, 16000.0, 5000.0, LOG, description="return high shelf"),
    _toggle("mute", False, "mute the return"),
    _fader("fader", 0.0, "return level"),
)
FXC = _index(FX_COMMON)
FX_EQ = FXC["eq/hpf"]  # hpf, lpf, low gain, low freq, high gain, high freq
FX_MUTE = FXC["mute"]
FX_FADER = FXC["fader"]
FX_PARAMS = len(FX_COMMON)  # the effect's own parameters start here

REVERB = (
    _T("predelay", "ms", 0.0, 250.0, 20.0, description="pre-delay"),
    _T("decay", "s", 0.1, 20.0, 1.8, LOG, description="reverb time T60"),
    _T("damping", "Hz", 1000.0, 20000.0, 6000.0, LOG, description="damping corner frequency"),
    _T("hfratio", "", 0.05, 1.0, 0.5, LOG, description="decay above the damping corner / T60"),
    _T("size", "", 0.5, 2.0, 1.0, LOG, description="room size (delay-line scale)"),
    _T("width", "", 0.0, 1.0, 1.0, description="stereo width of the tail"),
)
DELAY = (
    _T("time/left", "ms", 1.0, 2000.0, 375.0, LOG, description="left delay time"),
    _T("time/right", "ms", 1.0, 2000.0, 500.0, LOG, description="right delay time"),
    _T("feedback", "", 0.0, 0.95, 0.35, description="feedback gain (linear)"),
    _T("hicut", "Hz", 1000.0, 20000.0, 6000.0, LOG, description="feedback high-cut"),
    _T("locut", "Hz", 20.0, 1000.0, 100.0, LOG, description="feedback low-cut"),
    _toggle("pingpong", False, "ping-pong between sides"),
)
FX_KIND_PARAMS = {"reverb": REVERB, "delay": DELAY}

# --- master ------------------------------------------------------------------------------
MASTER = (
    _toggle("eq/on", True, "master EQ in"),
    _enum("eq/mode", ("minimum", "linear"), "minimum", "EQ phase: minimum or linear phase"),
    _toggle("hpf/on", False, "subsonic high-pass in"),
    _T("hpf/freq", "Hz", 10.0, 200.0, 25.0, LOG, description="subsonic high-pass (24 dB/oct)"),
    *_eq_bands("eq", _MASTER_EQ),
    _toggle("comp/on", False, "bus compressor in (glue, before the multiband)"),
    _T("comp/threshold", "dB", -40.0, 0.0, -12.0, description="bus compressor threshold"),
    _T("comp/ratio", "", 1.0, 10.0, 2.0, LOG, description="bus compressor ratio"),
    _T("comp/knee", "dB", 0.0, 24.0, 6.0, description="bus compressor knee"),
    _T("comp/attack", "ms", 0.1, 100.0, 30.0, LOG, description="bus compressor attack"),
    _T("comp/release", "ms", 10.0, 2000.0, 300.0, LOG, description="bus compressor release"),
    _T("comp/makeup", "dB", -12.0, 24.0, 0.0, description="bus compressor makeup"),
    _toggle("mb/on", False, "multiband compressor in"),
    _T("mb/xover/low", "Hz", 40.0, 1000.0, 200.0, LOG, description="low/mid crossover (LR4)"),
    _T("mb/xover/high", "Hz", 1000.0, 12000.0, 3000.0, LOG, description="mid/high crossover"),
    *(
        t
        for b, (attack_ms, release_ms) in enumerate(((30.0, 250.0), (15.0, 150.0), (5.0, 80.0)), 1)
        for t in (
            _T(f"mb/{b}/threshold", "dB", -60.0, 0.0, -12.0, description=f"band {b} threshold"),
            _T(f"mb/{b}/ratio", "", 1.0, 20.0, 2.0, LOG, description=f"band {b} ratio"),
            _T(f"mb/{b}/attack", "ms", 0.1, 300.0, attack_ms, LOG, description=f"band {b} attack"),
            _T(f"mb/{b}/release", "ms", 10.0, 2000.0, release_ms, LOG, description=f"band {b}"),
            _T(f"mb/{b}/makeup", "dB", -12.0, 12.0, 0.0, description=f"band {b} makeup"),
        )
    ),
    _T("width", "", 0.0, 2.0, 1.0, description="stereo width (0 mono, 1 unchanged, 2 wide)"),
    _T("monobass", "Hz", 0.0, 500.0, 0.0, description="mono below this frequency (0 = off)"),
    _toggle("sat/on", False, "soft saturation in"),
    _T("sat/drive", "dB", 0.0, 24.0, 3.0, description="saturation drive"),
    _T("sat/mix", "", 0.0, 1.0, 1.0, description="saturation wet/dry"),
    _fader("fader", 0.0, "master fader"),
    _toggle("limiter/on", True, "true-peak limiter in"),
    _T("limiter/ceiling", "dBTP", -20.0, 0.0, -1.0, description="true-peak ceiling"),
    _T("limiter/release", "ms", 1.0, 1000.0, 50.0, LOG, description="limiter release"),
    _enum("dither/bits", ("off", "24", "16"), "off", "TPDF dither to this word length"),
    _toggle("dither/shape", False, "noise-shaped dither"),
)
MST = _index(MASTER)
MST_EQ_ON = MST["eq/on"]
MST_EQ_MODE = MST["eq/mode"]
MST_HPF_ON = MST["hpf/on"]
MST_HPF_FREQ = MST["hpf/freq"]
MST_EQ = MST["eq/1/gain"]
MST_COMP_ON = MST["comp/on"]
MST_COMP = MST["comp/threshold"]  # threshold, ratio, knee, attack, release, makeup
MST_MB_ON = MST["mb/on"]
MST_MB_XLOW = MST["mb/xover/low"]
MST_MB_XHIGH = MST["mb/xover/high"]
MST_MB = MST["mb/1/threshold"]  # band b at MST_MB + 5*b: threshold, ratio, attack, release, makeup
MST_WIDTH = MST["width"]
MST_MONOBASS = MST["monobass"]
MST_SAT_ON = MST["sat/on"]
MST_SAT_DRIVE = MST["sat/drive"]
MST_SAT_MIX = MST["sat/mix"]
MST_FADER = MST["fader"]
MST_LIM_ON = MST["limiter/on"]
MST_LIM_CEILING = MST["limiter/ceiling"]
MST_LIM_RELEASE = MST["limiter/release"]
MST_DITHER_BITS = MST["dither/bits"]
MST_DITHER_SHAPE = MST["dither/shape"]

# --- monitor section ------------------------------------------------------------------------
MONITOR = (
    _enum(
        "source",
        ("mix", "ext", "ref"),
        "mix",
        "what is monitored: the mix, the external input or the reference player",
    ),
    _fader("level", 0.0, "monitor level", top_db=12.0),
    _toggle("dim/on", False, "dim"),
    _T("dim/level", "dB", -40.0, 0.0, -20.0, description="attenuation when dimmed"),
    _toggle("cut", False, "cut all speakers"),
    _toggle("mono", False, "mono sum (L+R)/2 on both sides"),
    _toggle("swap", False, "swap left and right"),
    _enum("solo", ("off", "left", "right"), "off", "listen to one side on both speakers"),
    _toggle("polarity", False, "invert the left side's polarity"),
    _toggle("side", False, "listen to the side signal (L-R)/2"),
    _toggle("reference/on", False, "jump to the calibrated reference level"),
    _T("reference/level", "dB", -40.0, 0.0, -20.0, description="the reference position"),
)
MON = _index(MONITOR)
MON_SOURCE = MON["source"]
MON_LEVEL = MON["level"]
MON_DIM = MON["dim/on"]
MON_DIM_LEVEL = MON["dim/level"]
MON_CUT = MON["cut"]
MON_MONO = MON["mono"]
MON_SWAP = MON["swap"]
MON_SOLO = MON["solo"]
MON_POLARITY = MON["polarity"]
MON_SIDE = MON["side"]
MON_REFERENCE = MON["reference/on"]
MON_REFERENCE_LEVEL = MON["reference/level"]
MON_SYSTEM = len(MONITOR)  # the system enum follows (choices from the session)

SYSTEM = (
    _toggle("on", False, "additive systems: on (exclusive ones follow /monitor/system)"),
    _T("trim", "dB", -24.0, 12.0, 0.0, description="calibration trim"),
    _T("delay", "ms", 0.0, 50.0, 0.0, description="alignment delay"),
    *_eq_bands("eq", _SYSTEM_EQ),
    _enum("sim", SIMULATIONS, "none", "simulation chain"),
    _T("limit", "dBFS", -30.0, 0.0, -0.3, description="output safety limiter threshold"),
)
# A cue (headphone) system has one more: which mix it plays.
SYS_CUE = len(SYSTEM)
CUE_SYSTEM = (
    *SYSTEM,
    _toggle("cue", False, "play this system's own cue mix instead of following the monitor bus"),
)
# The talkback (a session with a talkback input): after the monitor section's controls, so
# that it is the monitor strip's (TB_ON is counted from the monitor base).
TALKBACK = (
    _toggle("on", False, "talkback: the mic to the cue systems, the speakers dimmed"),
    _T("dim", "dB", -60.0, 0.0, -20.0, description="speaker attenuation while talking back"),
    _T("level", "dB", -40.0, 12.0, 0.0, description="the talkback mic's level in the cues"),
)
TB_ON = MON_SYSTEM + 1
TB_DIM = TB_ON + 1
TB_LEVEL = TB_ON + 2
SYS = _index(SYSTEM)
SYS_ON = SYS["on"]
SYS_TRIM = SYS["trim"]
SYS_DELAY = SYS["delay"]
SYS_EQ = SYS["eq/1/gain"]
SYS_SIM = SYS["sim"]
SYS_LIMIT = SYS["limit"]


# Each monitor system's controls live in a container of their own, so that a system's name
# (the user's choice; "mono" is a standard one) never meets the monitor section's controls:
# in OSC 1.0 methods are the leaves of the address tree, and /monitor/mono is a method.
SYSTEMS_PREFIX = "/monitor/systems"


def system_prefix(name: str) -> str:
    return f"{SYSTEMS_PREFIX}/{name}"


# --- addresses of older releases ----------------------------------------------------------
# Before every method was a leaf, /monitor/dim and /monitor/reference were toggles and
# containers at once, and the systems sat beside the monitor controls (/monitor/car/trim).
# State files, scenes, MIDI profiles, configs and OSC clients of that time still say so.
_RENAMED = {"/monitor/dim": "/monitor/dim/on", "/monitor/reference": "/monitor/reference/on"}
_MONITOR_CONTAINERS = ("dim", "reference", "systems")


def renamed_address(address: str) -> str | None:
    """Today's name of an address as an older release wrote it; None if it was not one."""
    new = _RENAMED.get(address)
    if new is not None:
        return new
    parts = address.split("/")
    if len(parts) >= 4 and parts[1] == "monitor" and parts[2] not in _MONITOR_CONTAINERS:
        return f"{SYSTEMS_PREFIX}/{'/'.join(parts[2:])}"
    return None


def migrate_values(
    values: Mapping[str, V], registry: Registry
) -> tuple[dict[str, V], list[tuple[str, str]]]:
    """``values`` (keyed by address) with each older release's address that ``registry``
    knows by its new name renamed; returns them and the (old, new) pairs renamed. A value
    stored under the new name as well wins over the old one."""
    out: dict[str, V] = {}
    renamed: list[tuple[str, str]] = []
    for address, value in values.items():
        new = None if address in registry else renamed_address(address)
        if new is not None and new in registry:
            renamed.append((address, new))
            out.setdefault(new, value)
        else:
            out[address] = value
    return out, renamed


def describe_renames(where: str, renamed: list[tuple[str, str]]) -> str:
    """The log's note on what :func:`migrate_values` renamed in ``where``."""
    pairs = ", ".join(f"{old} -> {new}" for old, new in renamed)
    return f"{where} names {len(renamed)} address(es) of an older studiod, read as today's: {pairs}"


# --- control side -----------------------------------------------------------------------------
# Parameters the audio thread never reads: they come after every engine slot (the engine
# stores them and queues nothing). The reference player's transport exists only in a session
# with external monitor inputs (where the player plays).
PLAYER = (
    _toggle("play", False, "the reference player's transport (hear it: /monitor/source ref)"),
    _toggle("match", True, "match the reference's loudness to the mix's"),
)
SCENES = (
    _T("fade", "ms", 0.0, 10000.0, 0.0,
       description="scene recall crossfade (0: at once, smoothed like any change)"),
)  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """Where each strip's block starts in the flat value array, for one session."""

    session: Session
    registry: Registry
    ch_base: np.ndarray  # int64[channels]
    ch_stride: int
    grp_base: np.ndarray  # int64[groups]
    fx_base: np.ndarray  # int64[fx]
    master_base: int
    monitor_base: int
    sys_base: np.ndarray  # int64[systems]
    control_base: int  # the first control-side slot (the audio thread reads those before it)


def build_layout(session: Session) -> Layout:
    """Declare every parameter of ``session`` and assign the slots."""
    params: list[Param] = []

    def add(prefix: str, templates: tuple[_T, ...]) -> int:
        base = len(params)
        for t in templates:
            params.append(
                Param(
                    address=f"{prefix}/{t.suffix}",
                    index=len(params),
                    unit=t.unit,
                    minimum=t.minimum,
                    maximum=t.maximum,
                    default=t.default,
                    taper=t.taper,
                    kind=t.kind,
                    choices=t.choices,
                    description=t.description,
                )
            )
        return base

    buses = ("master", *(g.name for g in session.groups))
    per_channel = (
        *CHANNEL,
        _enum("bus", buses, "master", "where the channel is summed: master or a group"),
        *(
            t
            for f in session.fx
            for t in (
                _fader(f"send/{f.name}/level", FADER_OFF_DB, f"send to {f.name}"),
                _toggle(f"send/{f.name}/pre", False, f"send to {f.name} before the fader"),
            )
        ),
        # cue sends at unity, before the fader: a new cue mix starts as the whole band
        *(
            t
            for m in session.cues
            for t in (
                _fader(f"cue/{m.name}/level", 0.0, f"level in the {m.name} cue mix"),
                _T(f"cue/{m.name}/pan", "", -1.0, 1.0, 0.0, description=f"pan in {m.name}"),
                _toggle(f"cue/{m.name}/pre", True, f"send to {m.name} before the fader"),
            )
        ),
    )
    ch_base = [add(f"/ch/{i}", per_channel) for i in range(1, len(session.channels) + 1)]
    grp_base = [add(f"/bus/{g.name}", GROUP) for g in session.groups]
    fx_base = [add(f"/fx/{f.name}", FX_COMMON + FX_KIND_PARAMS[f.kind]) for f in session.fx]
    master_base = add("/master", MASTER)
    exclusive = tuple(m.name for m in session.systems if not m.additive)
    monitor_base = add(
        "/monitor",
        (*MONITOR, _enum("system", exclusive, exclusive[0], "the monitor system in use")),
    )
    if session.talkback_input:
        add("/talkback", TALKBACK)
    sys_base = []
    for m in session.systems:
        templates = tuple(
            _enum("sim", SIMULATIONS, m.simulation, t.description) if t.suffix == "sim" else t
            for t in (CUE_SYSTEM if m.cue else SYSTEM)
        )
        sys_base.append(add(system_prefix(m.name), templates))
    control_base = len(params)
    if session.ext_inputs:
        add("/player", PLAYER)
    add("/snapshot", SCENES)
    return Layout(
        session=session,
        registry=Registry(params),
        ch_base=np.array(ch_base, dtype=np.int64),
        ch_stride=len(per_channel),
        grp_base=np.array(grp_base, dtype=np.int64).reshape(-1),
        fx_base=np.array(fx_base, dtype=np.int64).reshape(-1),
        master_base=master_base,
        monitor_base=monitor_base,
        sys_base=np.array(sys_base, dtype=np.int64),
        control_base=control_base,
    )
