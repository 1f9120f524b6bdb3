"""The mix and mastering engine: one jitted call per audio block.

    inputs ─► channel strips ─► groups (glue) ─┐
                   └─ sends ─► FX buses ───────┼─► master chain ─► monitor section ─► outputs
                                               │      (EQ, multiband, width, saturation,
                                               │       fader, true-peak limiter, dither)

The Python side (:class:`Engine`) validates parameter changes against the registry and
puts them on a bounded queue; :func:`_engine_block` drains that queue, smooths parameters,
redesigns coefficients while they move, runs every stage and writes the outputs. It
allocates nothing and releases the GIL.

Smoothing. Every gain the signal meets (trim, polarity, pan, fader, mute, solo, sends,
monitor matrix, system switching) ramps linearly at most full scale per ``GAIN_RAMP_MS``,
sample by sample: a switch is a short fade, never a step, and a fader move is heard one
block plus at most one ramp after it arrives. Parameters that shape filters and dynamics
move toward their targets with a one-pole of ``PARAM_SMOOTH_MS`` advanced every ``TICK``
samples of absolute time, and coefficients are redesigned at those ticks while they move.
Because ticks are counted in absolute samples, the output does not depend on how the
audio is cut into blocks.
"""

from __future__ import annotations

import math
import threading
from collections import namedtuple

import numpy as np

from studiod.dsp import dither, dynamics, effects, linphase, stereo
from studiod.dsp import filters as flt
from studiod.dsp import limiter as lim
from studiod.dsp._jit import fence, kernel, publish, stack_empty
from studiod.dsp.crossover import design_crossover3
from studiod.dsp.filters import STACK_LANES
from studiod.dsp.layout import (
    CH_BUS,
    CH_COMP,
    CH_COMP_ON,
    CH_EQ,
    CH_EQ_ON,
    CH_FADER,
    CH_GATE,
    CH_GATE_ON,
    CH_HPF_FREQ,
    CH_HPF_ON,
    CH_HPF_SLOPE,
    CH_LPF_FREQ,
    CH_LPF_ON,
    CH_LPF_SLOPE,
    CH_MUTE,
    CH_PAN,
    CH_POLARITY,
    CH_SEND,
    CH_SOLO,
    CH_TRIM,
    FX_EQ,
    FX_FADER,
    FX_MUTE,
    FX_PARAMS,
    GRP_COMP,
    GRP_COMP_ON,
    GRP_FADER,
    GRP_MUTE,
    MON_CUT,
    MON_DIM,
    MON_DIM_LEVEL,
    MON_LEVEL,
    MON_MONO,
    MON_POLARITY,
    MON_REFERENCE,
    MON_REFERENCE_LEVEL,
    MON_SIDE,
    MON_SOLO,
    MON_SOURCE,
    MON_SWAP,
    MON_SYSTEM,
    MST_COMP,
    MST_COMP_ON,
    MST_DITHER_BITS,
    MST_DITHER_SHAPE,
    MST_EQ,
    MST_EQ_MODE,
    MST_EQ_ON,
    MST_FADER,
    MST_HPF_FREQ,
    MST_HPF_ON,
    MST_LIM_CEILING,
    MST_LIM_ON,
    MST_LIM_RELEASE,
    MST_MB,
    MST_MB_ON,
    MST_MB_XHIGH,
    MST_MB_XLOW,
    MST_MONOBASS,
    MST_SAT_DRIVE,
    MST_SAT_MIX,
    MST_SAT_ON,
    MST_WIDTH,
    SYS_CUE,
    SYS_DELAY,
    SYS_EQ,
    SYS_LIMIT,
    SYS_ON,
    SYS_SIM,
    SYS_TRIM,
    TB_DIM,
    TB_LEVEL,
    TB_ON,
    Layout,
    build_layout,
)
from studiod.dsp.registry import ENUM, FADER_OFF_DB, Param, Registry
from studiod.dsp.session import MAX_BLOCK_FRAMES, Session
from studiod.dsp.session import SIMULATIONS as SIMULATION_NAMES
from studiod.dsp.simulation import KNEE_DB, SIMULATIONS, design_simulation, makeup_gain_db

TICK = 32  # samples between parameter-smoothing steps (0.67 ms at 48 kHz)
PARAM_SMOOTH_MS = 20.0
GAIN_RAMP_MS = 3.0  # a 0 dB to silence switch takes 3 ms (144 samples at 48 kHz)
MAX_SYSTEM_DELAY_MS = 50.0
# The true-peak limiter's look-ahead is fixed per engine: it sets the master's latency.
LIMITER_LOOKAHEAD_MS = 2.0
LIMITER_OFF_CEILING_DBTP = 40.0  # "off" keeps the limiter in line, never reaching this
SAFETY_LOOKAHEAD_MS = 0.5
SAFETY_RELEASE_MS = 50.0
# Reverb settings the session does not expose (Dattorro's diffusion, gentle modulation).
REVERB_DIFFUSION = 0.7
REVERB_MOD_DEPTH_MS = 0.2
REVERB_MOD_RATE_HZ = 0.5
DELAY_GLIDE_MS = 100.0
FX_REVERB = 0
FX_DELAY = 1
SIM_MAKEUP = 5  # sim_comp's column of the make-up gain on a stereo system; + 1: on a mono one
DITHER_SHAPING = "wannamaker9"  # F-weighted, Wannamaker 1992 (see dsp/dither.py)
QUEUE_SIZE = 4096

# Owners of a parameter slot, for marking what a change makes dirty.
OWN_CHANNEL = 0
OWN_GROUP = 1
OWN_FX = 2
OWN_MASTER = 3
OWN_MONITOR = 4
OWN_SYSTEM = 5

# Channel filter sections: 0-1 high-pass, 2-3 low-pass, 4-7 EQ bands.
CH_SECTIONS = 8
# Master sections: 0-1 subsonic high-pass, 2-5 EQ bands.
MST_SECTIONS = 6
# FX return sections: high-pass, low-pass, low shelf, high shelf.
FX_SECTIONS = 4
# Monitor-system correction EQ sections.
SYS_SECTIONS = 4

# Where a switched-off high-pass/low-pass glides before it is bypassed, so that switching a
# filter in or out is a glide of its cutoff, not a step (as a ratio of the sample rate).
_HPF_PARK_HZ = 5.0
_LPF_PARK_RATIO = 0.45


# An input sample this close to full scale counts as a clip: the converter is at its limit
# (-0.1 dBFS, the "over" threshold of common digital peak meters; a float input above 1.0
# is a clip too).
INPUT_CLIP_DBFS = -0.1
INPUT_CLIP = 10.0 ** (INPUT_CLIP_DBFS / 20.0)


class QueueFull(RuntimeError):
    """The engine's parameter queue is full: the audio thread is not draining it."""


EngineState = namedtuple(
    "EngineState",
    [
        # parameters
        "tgt",  # float64[P] targets, written when the queue is drained
        "cur",  # float64[P] smoothed values
        "continuous",  # bool[P] tick-smoothed, or straight to the target (see _tick_smoothed)
        "owner_kind",  # int64[P]
        "owner_id",  # int64[P]
        "dirty",  # bool[6, max strips] per owner kind
        "blocks",  # int64[6, max strips, 2]: (first slot, count) of each strip's parameters
        "scratch",  # float64[8, 5] coefficient workspace (the audio thread never allocates)
        "active",  # bool[8] which sections of a bank run (workspace of _run_sections)
        "clock",  # int64[2]: absolute sample count, ticks done
        "consts",  # float64[4]: samplerate, tick smoothing coef, gain ramp step, arrival
        # layout
        "ch_base",
        "ch_lane0",  # int64[C] first lane of each channel
        "ch_lanes",  # int64[C] 1 or 2
        "lane_in",  # int64[L] 0-based input column of each lane
        "lane_ch",  # int64[L] channel of each lane
        "grp_base",
        "fx_base",
        "bases",  # int64[2]: master, monitor
        "sys_base",
        "sys_out",  # int64[S, 2] 0-based output columns (-1: none)
        "sys_flags",  # int64[S, 3]: mono, additive, index among exclusive systems (-1)
        "ext_in",  # int64[2] 0-based input columns of the external source (-1: none)
        # channel strips
        "ch_buf",  # float64[N, L]
        "ch_coefs",  # float64[8, 5, L]
        "ch_fstate",  # float64[8, 2, L]
        "ch_in_g",  # float64[2, L] trim*polarity: current, target
        "ch_out_g",  # float64[2, L, 2] lane -> bus left/right: current, target
        "ch_send_g",  # float64[2, L, F + K, 2] lane -> fx bus, then cue bus, left/right
        "ch_dest",  # int64[L] bus index (0 = master, 1 + g = group g)
        "ch_peak",  # float64[L] block peak after the fader
        # float64[L, 3] input meter before trim and fader: the block's peak, then running
        # totals (the control side reads differences): sum of squares, samples at or above
        # INPUT_CLIP (see Engine.input_meters)
        "ch_in_meter",
        "ch_gate",  # dynamics.GateArrays over L lanes (stereo channels linked)
        "ch_comp",  # dynamics.CompressorArrays over L lanes
        "ch_dyn_on",  # bool[2]: any gate, any compressor in (or still releasing)
        "nan_events",  # int64[L + 2] per lane, then ext, then output guard
        # buses
        "bus_buf",  # float64[1 + G, N, 2]
        "fx_buf",  # float64[F + K, N, 2]: the F FX buses, then the K cue mixes
        "grp_g",  # float64[2, G] fader*mute: current, target
        "grp_buf",  # float64[N, 2G] groups side by side for the glue compressors
        "grp_comp",  # dynamics.CompressorArrays over 2G lanes, linked in pairs
        "fx_coefs",  # float64[F, 4, 5, 2]
        "fx_fstate",  # float64[F, 4, 2, 2]
        "fx_g",  # float64[2, F]
        "fx_kind",  # int64[F]: FX_REVERB or FX_DELAY
        "fx_slot",  # int64[F]: index among the FX of its kind
        "rv_coefs",  # float64[R, REVERB_ROWS, 16]
        "rv_state",  # effects.make_reverb_state arrays, each stacked over R
        "dl_coefs",  # float64[D, DELAY_ROWS, 2]
        "dl_state",  # effects.make_delay_state arrays, each stacked over D
        # master
        "mst_coefs",  # float64[6, 5, 2]
        "mst_fstate",  # float64[6, 2, 2]
        "mst_g",  # float64[2]: fader gain current, target
        "mst_width",  # float64[1]: side gain
        "mst_width_coefs",  # float64[2, 5, 1] mono-below side high-pass
        "mst_width_state",  # float64[2, 2, 1]
        "width_scratch",  # float64[WIDTH_CHUNK, 1]
        "mst_sat",  # float64[3]: saturator g, 1/g, mix
        "sat_branch",  # float64[70] halfband polyphase branch
        "sat_hist_x",
        "sat_hist_even",
        "sat_hist_odd",
        "sat_counters",
        "lp_state",  # linphase.LinphaseState of the linear-phase master EQ
        "mst_buf",  # float64[N, 2]
        "mst_dry",  # float64[N, 2] the multiband's input, for its in/out crossfade
        "mst_comp",  # dynamics.CompressorArrays over 2 linked lanes: the bus compressor
        "mst_comp_on",  # bool[1]
        "mst_mb",  # dynamics.MultibandArrays over 2 linked lanes
        "mst_mb_g",  # float64[2]: multiband in/out mix, current, target
        "mst_lim_coefs",  # float64[LIMITER_COEFS]
        "mst_lim",  # limiter state (buf, env, gain)
        "mst_lim_gr",  # float64[1]
        "mst_dither",  # float64[DITHER_COEFS]; dither.D_SCALE 0 = off
        "mst_dither_state",  # (rng, err)
        "mst_dither_shapings",  # int64[2]: shaping ids for flat and shaped dither
        "mst_peak",  # float64[2]
        # monitor
        "mon_src_g",  # float64[2]: ext share current, target
        "mon_m",  # float64[2, 4]: matrix LL, LR, RL, RR current, target
        "mon_buf",  # float64[N, 2]
        "sys_g",  # float64[2, S]: on*trim current, target
        "sys_cue",  # int64[S]: the system's cue mix k (its bus fx_buf[F + k]), -1: none
        "sys_cue_g",  # float64[2, S]: share of the cue mix against the monitor bus
        "tb_in",  # int64[1]: 0-based input column of the talkback mic (-1: none)
        "tb_g",  # float64[2, 2]: current, target of (mic gain into the cues, speaker gain)
        "tb_buf",  # float64[N, 2]: those two gains at each sample of the block
        "sys_coefs",  # float64[S, 4, 5, 2]
        "sys_fstate",  # float64[S, 4, 2, 2]
        "sys_buf",  # float64[N, 2]
        "sys_comp",  # dynamics.CompressorArrays of 2 lanes, each array stacked over S
        "sys_comp_on",  # bool[S]: the system's simulation compresses
        "sim_comp",  # float64[simulations, 7]: threshold, ratio, attack, release, on,
        # make-up dB on a stereo system, on a mono one (SIM_MAKEUP + mono)
        "sys_safety_coefs",  # float64[S, SAFETY_COEFS, 2]
        "sys_safety",  # safety limiter state (buf, gain, nonfinite, write_pos), stacked over S
        "sys_delay",  # float64[S, D, 2] ring buffers
        "sys_delay_pos",  # int64[S]: write position
        "sys_delay_n",  # int64[S]: delay in samples
        "sys_live",  # bool[S]: processed in the last block
        "sim_bank",  # float64[simulations, sections, 5, 2], index 0 = none
        "sim_width",  # float64[simulations]
        "sys_sim",  # int64[S]: simulation the state below belongs to
        "sys_sim_state",  # float64[S, sections, 2, 2]
        "sys_width_state",  # float64[S, 2, 2, 1]
        "bypass_width",  # float64[2, 5, 1] a bypassed side filter
        "out_peak",  # float64[O]
    ],
)


# --------------------------------------------------------------------------------------
# parameter plumbing


@kernel
def _one_pole_coef(time_ms, samplerate, step):
    """Coefficient that moves a one-pole ``1 - 1/e`` of the way in ``time_ms``."""
    return 1.0 - math.exp(-step / (time_ms * 1e-3 * samplerate))


@kernel
def _db_to_gain(db):
    if db <= FADER_OFF_DB:
        return 0.0
    return 10.0 ** (db / 20.0)


@kernel(inline=True)
def _drain(s, q_idx, q_val, start, stop):
    """Apply queued changes [start, stop) to the targets and mark their owners dirty."""
    size = q_idx.shape[0]
    for k in range(start, stop):
        idx = q_idx[k % size]
        s.tgt[idx] = q_val[k % size]
        s.dirty[s.owner_kind[idx], s.owner_id[idx]] = True
        if s.owner_kind[idx] == OWN_CHANNEL:
            # solo of one channel changes every channel's gain
            for c in range(s.ch_base.shape[0]):
                s.dirty[OWN_CHANNEL, c] = True
        elif s.owner_kind[idx] == OWN_MONITOR:
            # the system enum lives in the monitor block and switches every system
            for m in range(s.sys_base.shape[0]):
                s.dirty[OWN_SYSTEM, m] = True


@kernel(inline=True)
def _smooth(s, base, count):
    """Advance parameters [base, base + count) one tick; True when all have arrived."""
    k = s.consts[1]
    settled = True
    for i in range(base, base + count):
        target = s.tgt[i]
        if not s.continuous[i]:
            s.cur[i] = target
            continue
        diff = target - s.cur[i]
        if abs(diff) < 1e-6 * (1.0 + abs(target)):
            s.cur[i] = target
        else:
            s.cur[i] += diff * k
            settled = False
    return settled


# --------------------------------------------------------------------------------------
# coefficient design (at ticks, while a strip is dirty)


@kernel
def _design_pass(out, highpass, on, freq_hz, slope, samplerate):
    """Two sections of a Butterworth high/low-pass of 6…24 dB/oct, gliding off with ``on``.

    ``on`` in 0…1 (smoothed toggle): the cutoff glides log-linearly from a parking
    frequency outside the audio band, and at 0 the sections are bypassed exactly.
    """
    flt.set_bypass(out)
    if on <= 0.0:
        return
    park = _HPF_PARK_HZ if highpass else _LPF_PARK_RATIO * samplerate
    f = math.exp(math.log(park) + on * (math.log(freq_hz) - math.log(park)))
    order = int(slope) + 1
    kind2 = flt.HIGHPASS if highpass else flt.LOWPASS
    if order % 2 == 1:
        flt.design_biquad(
            flt.HIGHPASS1 if highpass else flt.LOWPASS1, f, 1.0, 0.0, samplerate, out[0]
        )
        if order == 3:
            # third-order Butterworth: a first-order section and a pole pair with Q = 1
            flt.design_biquad(kind2, f, 1.0, 0.0, samplerate, out[1])
    else:
        flt.design_butterworth(highpass, order, f, samplerate, out[: order // 2])


@kernel
def _design_eq4(out, cur, base, on, samplerate):
    """Four bands (low shelf, peak, peak, high shelf) from gain/freq/q triples at ``base``."""
    for b in range(4):
        gain_db = cur[base + 3 * b] * on
        if gain_db == 0.0:
            flt.set_bypass(out[b : b + 1])
            continue
        if b == 0:
            kind = flt.LOWSHELF
        elif b == 3:
            kind = flt.HIGHSHELF
        else:
            kind = flt.PEAK
        flt.design_biquad(
            kind, cur[base + 3 * b + 1], cur[base + 3 * b + 2], gain_db, samplerate, out[b]
        )


@kernel
def _pan_gains(pan, lanes, lane):
    """(to-left, to-right) gains of one lane: constant-power pan, -3 dB at centre, for mono;
    a balance control (the far side attenuated along the same law) for stereo."""
    theta = (pan + 1.0) * math.pi / 4.0
    if lanes == 1:
        return math.cos(theta), math.sin(theta)
    if lane == 0:
        return (1.0 if pan <= 0.0 else math.sqrt(2.0) * math.cos(theta)), 0.0
    return 0.0, (1.0 if pan >= 0.0 else math.sqrt(2.0) * math.sin(theta))


@kernel(inline=True)
def _update_channel(s, c, any_solo):
    base = s.ch_base[c]
    cur = s.cur
    fs = s.consts[0]
    lane0 = s.ch_lane0[c]
    lanes = s.ch_lanes[c]
    sec = s.scratch
    _design_pass(
        sec[0:2], True, cur[base + CH_HPF_ON], cur[base + CH_HPF_FREQ], cur[base + CH_HPF_SLOPE], fs
    )
    _design_pass(
        sec[2:4],
        False,
        cur[base + CH_LPF_ON],
        cur[base + CH_LPF_FREQ],
        cur[base + CH_LPF_SLOPE],
        fs,
    )
    _design_eq4(sec[4:8], cur, base + CH_EQ, cur[base + CH_EQ_ON], fs)
    in_g = _db_to_gain(cur[base + CH_TRIM]) * (1.0 - 2.0 * cur[base + CH_POLARITY])
    soloed = cur[base + CH_SOLO] > 0.5
    audible = (1.0 - cur[base + CH_MUTE]) * (1.0 if (soloed or not any_solo) else 0.0)
    fader = _db_to_gain(cur[base + CH_FADER]) * audible
    n_fx = s.fx_base.shape[0]
    gate_on = cur[base + CH_GATE_ON]
    comp_on = cur[base + CH_COMP_ON]
    g = base + CH_GATE
    c = base + CH_COMP
    for j in range(lanes):
        lane = lane0 + j
        # switched out, a gate has no range and a compressor no ratio: they release smoothly
        dynamics.design_gate(
            cur[g],
            cur[g + 1] * gate_on,
            1e6,
            cur[g + 2],
            cur[g + 3],
            cur[g + 4],
            fs,
            s.ch_gate.coefs[:, lane],
        )
        dynamics.design_compressor(
            cur[c],
            1.0 + (cur[c + 1] - 1.0) * comp_on,
            cur[c + 2],
            cur[c + 3],
            cur[c + 4],
            cur[c + 5] * comp_on,
            fs,
            s.ch_comp.coefs[:, lane],
        )
        dynamics.design_sidechain_hpf(cur[c + 6], fs, s.ch_comp.sc_coefs[:, :, lane])
        for k in range(CH_SECTIONS):
            for m in range(5):
                s.ch_coefs[k, m, lane] = sec[k, m]
        s.ch_in_g[1, lane] = in_g
        gl, gr = _pan_gains(cur[base + CH_PAN], lanes, j)
        s.ch_out_g[1, lane, 0] = fader * gl
        s.ch_out_g[1, lane, 1] = fader * gr
        s.ch_dest[lane] = int(cur[base + CH_BUS])
        for f in range(n_fx):
            level = _db_to_gain(cur[base + CH_SEND + 2 * f]) * audible
            if cur[base + CH_SEND + 2 * f + 1] > 0.5:
                # pre-fader: centre-panned mono lanes (-3 dB each side), stereo lanes as-is
                if lanes == 1:
                    pl, pr = math.sqrt(0.5), math.sqrt(0.5)
                else:
                    pl, pr = (1.0, 0.0) if j == 0 else (0.0, 1.0)
                s.ch_send_g[1, lane, f, 0] = level * pl
                s.ch_send_g[1, lane, f, 1] = level * pr
            else:
                s.ch_send_g[1, lane, f, 0] = level * fader * gl
                s.ch_send_g[1, lane, f, 1] = level * fader * gr
        # Cue sends, pan of their own, muted with the channel but deaf to solo (an engineer
        # soloing in the control room does not change the musicians' headphones).
        for k in range(s.ch_send_g.shape[2] - n_fx):
            p = base + CH_SEND + 2 * n_fx + 3 * k
            level = _db_to_gain(cur[p]) * (1.0 - cur[base + CH_MUTE])
            if cur[p + 2] <= 0.5:  # post-fader
                level *= _db_to_gain(cur[base + CH_FADER])
            cl, cr = _pan_gains(cur[p + 1], lanes, j)
            s.ch_send_g[1, lane, n_fx + k, 0] = level * cl
            s.ch_send_g[1, lane, n_fx + k, 1] = level * cr


@kernel(inline=True)
def _update_group(s, g):
    base = s.grp_base[g]
    cur = s.cur
    s.grp_g[1, g] = _db_to_gain(cur[base + GRP_FADER]) * (1.0 - cur[base + GRP_MUTE])
    on = cur[base + GRP_COMP_ON]
    c = base + GRP_COMP
    for side in range(2):
        dynamics.design_compressor(
            cur[c],
            1.0 + (cur[c + 1] - 1.0) * on,
            cur[c + 2],
            cur[c + 3],
            cur[c + 4],
            cur[c + 5] * on,
            s.consts[0],
            s.grp_comp.coefs[:, 2 * g + side],
        )


@kernel(inline=True)
def _update_fx(s, f):
    base = s.fx_base[f]
    cur = s.cur
    fs = s.consts[0]
    eq = base + FX_EQ
    sec = s.scratch[:FX_SECTIONS]
    flt.design_biquad(flt.HIGHPASS, cur[eq], flt.BUTTERWORTH_Q, 0.0, fs, sec[0])
    flt.design_biquad(flt.LOWPASS, cur[eq + 1], flt.BUTTERWORTH_Q, 0.0, fs, sec[1])
    flt.design_biquad(flt.LOWSHELF, cur[eq + 3], flt.BUTTERWORTH_Q, cur[eq + 2], fs, sec[2])
    flt.design_biquad(flt.HIGHSHELF, cur[eq + 5], flt.BUTTERWORTH_Q, cur[eq + 4], fs, sec[3])
    for k in range(FX_SECTIONS):
        for m in range(5):
            for lane in range(2):
                s.fx_coefs[f, k, m, lane] = sec[k, m]
    s.fx_g[1, f] = _db_to_gain(cur[base + FX_FADER]) * (1.0 - cur[base + FX_MUTE])
    p = base + FX_PARAMS
    slot = s.fx_slot[f]
    if s.fx_kind[f] == FX_REVERB:
        # predelay, decay, damping, hfratio, size, width (layout.REVERB)
        effects.design_reverb(
            cur[p + 1],
            cur[p + 3],
            cur[p + 2],
            cur[p + 4],
            cur[p],
            REVERB_DIFFUSION,
            cur[p + 5],
            REVERB_MOD_DEPTH_MS,
            REVERB_MOD_RATE_HZ,
            1.0,
            fs,
            s.rv_coefs[slot],
        )
    else:
        # time/left, time/right, feedback, hicut, locut, pingpong (layout.DELAY)
        effects.design_delay(
            cur[p],
            cur[p + 1],
            cur[p + 2],
            cur[p + 5],
            cur[p + 3],
            cur[p + 4],
            1.0,
            DELAY_GLIDE_MS,
            fs,
            s.dl_coefs[slot],
        )


@kernel(inline=True)
def _update_master(s):
    base = s.bases[0]
    cur = s.cur
    fs = s.consts[0]
    sec = s.scratch[:MST_SECTIONS]
    hpf_on = cur[base + MST_HPF_ON]
    # subsonic filter: fixed 24 dB/oct (slope index 3)
    _design_pass(sec[0:2], True, hpf_on, cur[base + MST_HPF_FREQ], 3.0, fs)
    # in linear-phase mode the bands run as an FIR designed by the control side
    linear = cur[base + MST_EQ_MODE] > 0.5
    _design_eq4(sec[2:6], cur, base + MST_EQ, 0.0 if linear else cur[base + MST_EQ_ON], fs)
    for k in range(MST_SECTIONS):
        for m in range(5):
            for lane in range(2):
                s.mst_coefs[k, m, lane] = sec[k, m]
    s.mst_g[1] = _db_to_gain(cur[base + MST_FADER])
    s.mst_width[0] = cur[base + MST_WIDTH]
    stereo.design_width(cur[base + MST_MONOBASS], fs, s.mst_width_coefs)
    mix = cur[base + MST_SAT_MIX] * cur[base + MST_SAT_ON]
    stereo.design_saturator(cur[base + MST_SAT_DRIVE], mix, s.mst_sat)
    on = cur[base + MST_COMP_ON]
    c = base + MST_COMP
    s.mst_comp_on[0] = on > 0.0
    for side in range(2):
        # switched out, the ratio goes to 1 and the makeup to 0 dB: it releases smoothly
        dynamics.design_compressor(
            cur[c],
            1.0 + (cur[c + 1] - 1.0) * on,
            cur[c + 2],
            cur[c + 3],
            cur[c + 4],
            cur[c + 5] * on,
            fs,
            s.mst_comp.coefs[:, side],
        )
    s.mst_mb_g[1] = cur[base + MST_MB_ON]
    for side in range(2):
        design_crossover3(
            cur[base + MST_MB_XLOW], cur[base + MST_MB_XHIGH], fs, s.mst_mb.xover_coefs[:, :, side]
        )
        for b in range(3):
            # threshold, ratio, attack, release, makeup per band (layout.MASTER)
            k = base + MST_MB + 5 * b
            dynamics.design_compressor(
                cur[k],
                cur[k + 1],
                6.0,
                cur[k + 2],
                cur[k + 3],
                cur[k + 4],
                fs,
                s.mst_mb.comp_coefs[b, :, side],
            )
    ceiling = (
        cur[base + MST_LIM_CEILING] if cur[base + MST_LIM_ON] > 0.5 else LIMITER_OFF_CEILING_DBTP
    )
    lim.design_limiter(
        ceiling, cur[base + MST_LIM_RELEASE], LIMITER_LOOKAHEAD_MS, fs, s.mst_lim_coefs
    )
    bits = int(cur[base + MST_DITHER_BITS])
    if bits == 0:
        s.mst_dither[dither.D_SCALE] = 0.0
    else:
        shaping = s.mst_dither_shapings[1 if cur[base + MST_DITHER_SHAPE] > 0.5 else 0]
        dither.design_dither(24 if bits == 1 else 16, shaping, s.mst_dither)


@kernel(inline=True)
def _update_monitor(s):
    base = s.bases[1]
    cur = s.cur
    # "ext" and "ref" both listen to the external inputs: the reference player plays into them
    s.mon_src_g[1] = min(cur[base + MON_SOURCE], 1.0) if s.ext_in[0] >= 0 else 0.0
    if s.tb_in[0] >= 0:
        talk = cur[base + TB_ON]
        s.tb_g[1, 0] = talk * _db_to_gain(cur[base + TB_LEVEL])
        s.tb_g[1, 1] = 1.0 + talk * (_db_to_gain(cur[base + TB_DIM]) - 1.0)
    # The monitor controls are one 2x2 matrix on (L, R), rows are outputs, built in signal
    # order: polarity, one-side solo, side, mono, swap; smoothed toggles blend each step
    # with identity, so every switch is a short crossfade.
    m = (1.0, 0.0, 0.0, 1.0)
    pol = 1.0 - 2.0 * cur[base + MON_POLARITY]
    m = _premul(m, (pol, 0.0, 0.0, 1.0), 1.0)
    solo = int(cur[base + MON_SOLO])
    if solo == 1:  # the left side on both speakers
        m = _premul(m, (1.0, 0.0, 1.0, 0.0), 1.0)
    elif solo == 2:
        m = _premul(m, (0.0, 1.0, 0.0, 1.0), 1.0)
    m = _premul(m, (0.5, -0.5, 0.5, -0.5), cur[base + MON_SIDE])
    m = _premul(m, (0.5, 0.5, 0.5, 0.5), cur[base + MON_MONO])
    m = _premul(m, (0.0, 1.0, 1.0, 0.0), cur[base + MON_SWAP])
    ref = cur[base + MON_REFERENCE]
    level_db = cur[base + MON_LEVEL] + ref * (
        cur[base + MON_REFERENCE_LEVEL] - cur[base + MON_LEVEL]
    )
    gain = _db_to_gain(level_db)
    gain *= 10.0 ** (cur[base + MON_DIM] * cur[base + MON_DIM_LEVEL] / 20.0)
    gain *= 1.0 - cur[base + MON_CUT]
    for k in range(4):
        s.mon_m[1, k] = gain * m[k]


@kernel
def _premul(m, p, amount):
    """``(I + amount * (P - I)) @ M`` for 2x2 matrices stored row-major as 4-tuples."""
    q0 = 1.0 + amount * (p[0] - 1.0)
    q1 = amount * p[1]
    q2 = amount * p[2]
    q3 = 1.0 + amount * (p[3] - 1.0)
    return (
        q0 * m[0] + q1 * m[2],
        q0 * m[1] + q1 * m[3],
        q2 * m[0] + q3 * m[2],
        q2 * m[1] + q3 * m[3],
    )


@kernel(inline=True)
def _update_system(s, m):
    base = s.sys_base[m]
    cur = s.cur
    fs = s.consts[0]
    if s.sys_flags[m, 1]:
        on = cur[base + SYS_ON]
    else:
        on = 1.0 if int(cur[s.bases[1] + MON_SYSTEM]) == s.sys_flags[m, 2] else 0.0
    sim = int(cur[base + SYS_SIM])
    sc = s.sim_comp[sim]
    # The simulation's make-up gain (its loudness matching, dsp/simulation.py) rides on the
    # system's gliding gain; its compressor's threshold moves up with it, so the compressor
    # acts exactly as it would before the gain (its curve and detector work in dB).
    makeup_db = sc[SIM_MAKEUP + s.sys_flags[m, 0]]
    s.sys_g[1, m] = on * _db_to_gain(cur[base + SYS_TRIM] + makeup_db)
    if s.sys_cue[m] >= 0:
        s.sys_cue_g[1, m] = cur[base + SYS_CUE]
    sec = s.scratch[:SYS_SECTIONS]
    _design_eq4(sec, cur, base + SYS_EQ, 1.0, fs)
    for k in range(SYS_SECTIONS):
        for j in range(5):
            for lane in range(2):
                s.sys_coefs[m, k, j, lane] = sec[k, j]
    s.sys_delay_n[m] = round(cur[base + SYS_DELAY] * 1e-3 * fs)
    s.sys_comp_on[m] = sc[4] > 0.0
    for side in range(2):
        lim.design_safety_limiter(
            cur[base + SYS_LIMIT], SAFETY_RELEASE_MS, fs, s.sys_safety_coefs[m, :, side]
        )
        dynamics.design_compressor(
            sc[0] + makeup_db, sc[1], KNEE_DB, sc[2], sc[3], 0.0, fs, s.sys_comp.coefs[m, :, side]
        )


@kernel
def _tick(s):
    """One control tick: smooth dirty strips' parameters and redesign what they drive."""
    any_solo = False
    for c in range(s.ch_base.shape[0]):
        if s.tgt[s.ch_base[c] + CH_SOLO] > 0.5:
            any_solo = True
    for kind in range(6):
        for i in range(s.dirty.shape[1]):
            if not s.dirty[kind, i] or s.blocks[kind, i, 1] == 0:
                continue
            settled = _smooth(s, s.blocks[kind, i, 0], s.blocks[kind, i, 1])
            if kind == OWN_CHANNEL:
                _update_channel(s, i, any_solo)
            elif kind == OWN_GROUP:
                _update_group(s, i)
            elif kind == OWN_FX:
                _update_fx(s, i)
            elif kind == OWN_MASTER:
                _update_master(s)
            elif kind == OWN_MONITOR:
                _update_monitor(s)
            else:
                _update_system(s, i)
            s.dirty[kind, i] = not settled
    _dynamics_flags(s)


@kernel(inline=True)
def _dynamics_flags(s):
    """Run the channel gates/compressors only while one is in or still releasing."""
    gate = False
    comp = False
    for c in range(s.ch_base.shape[0]):
        gate |= s.cur[s.ch_base[c] + CH_GATE_ON] > 0.0
        comp |= s.cur[s.ch_base[c] + CH_COMP_ON] > 0.0
    for lane in range(s.ch_buf.shape[1]):
        gate |= s.ch_gate.state[dynamics.GATE_REDUCTION, lane] > 0.0
        comp |= s.ch_comp.state[dynamics.COMP_REDUCTION, lane] > 0.0
    s.ch_dyn_on[0] = gate
    s.ch_dyn_on[1] = comp


# --------------------------------------------------------------------------------------
# signal stages, each over frames [n0, n1) of the block


@kernel
def _run_sections(x, coefs, state, active):
    """Run the biquad sections of a bank that are not bypassed in every lane; the state of
    a bypassed section is cleared so that it starts from silence when it comes back."""
    lanes = coefs.shape[2]
    for k in range(coefs.shape[0]):
        active[k] = False
        for lane in range(lanes):
            if (
                coefs[k, 0, lane] != 1.0
                or coefs[k, 1, lane] != 0.0
                or coefs[k, 2, lane] != 0.0
                or coefs[k, 3, lane] != 0.0
                or coefs[k, 4, lane] != 0.0
            ):
                active[k] = True
                break
        if not active[k]:
            state[k] = 0.0
    flt.biquad_cascade_bank(x, coefs, state, active)


@kernel
def _toward(current, target, step, due):
    """One sample of a linear ramp: ``current`` moved toward ``target`` by at most ``step``,
    or, when ``due`` > 0, by 1/due of the way (it arrives in ``due`` samples)."""
    d = target - current
    if due > 0:
        return target if due == 1 else current + d / due
    if abs(d) <= step:
        return target
    return current + step if d > 0.0 else current - step


@kernel
def _glide(g, i, step, due):
    """One ramp step of gain ``g[0, i]`` toward its target ``g[1, i]``."""
    g[0, i] = _toward(g[0, i], g[1, i], step, due)


@kernel
def _due(s, t):
    """:func:`_toward`'s ``due`` at absolute sample ``t``. While the engine renders
    automation (:meth:`Engine.automate`), every gain arrives at its target on the sample
    ``consts[3]``: the samples from ``t`` to there, counting both (1 once there). A gain
    given a lane's value at the end of each block then follows the straight line between
    those values, sample by sample. Otherwise (``consts[3]`` < 0) 0: gains ramp at
    GAIN_RAMP_MS."""
    arrival = s.consts[3]
    if arrival < 0.0:
        return 0
    return max(int(arrival) - t + 1, 1)


@kernel(inline=True)
def _channels(s, n0, n1):
    x = s.ch_buf[n0:n1]
    n, lanes = x.shape
    a = s.consts[2]
    if _settled(s.ch_in_g):
        # the gains in stack scratch: no overlap check per frame
        g = stack_empty(STACK_LANES, np.float64)
        for l0 in range(0, lanes, STACK_LANES):
            w = min(STACK_LANES, lanes - l0)
            for lane in range(w):
                g[lane] = s.ch_in_g[0, l0 + lane]
            if w == STACK_LANES:  # a constant lane count: see filters.STACK_LANES
                _scale_pass(x, l0, STACK_LANES, g)
            else:
                _scale_pass(x, l0, w, g)
    else:
        for i in range(n):
            due = _due(s, s.clock[0] + i)
            for lane in range(lanes):
                _glide(s.ch_in_g, lane, a, due)
                x[i, lane] *= s.ch_in_g[0, lane]
    _run_sections(x, s.ch_coefs, s.ch_fstate, s.active)
    if s.ch_dyn_on[0]:
        g = s.ch_gate
        dynamics.gate_bank(x, x, g.coefs, g.sc_coefs, g.sc_state, g.state, g.link, g.gr_db)
    if s.ch_dyn_on[1]:
        c = s.ch_comp
        dynamics.compressor_bank(x, x, c.coefs, c.sc_coefs, c.sc_state, c.state, c.link, c.gr_db)
    if _settled(s.ch_out_g) and _settled(s.ch_send_g):
        _mix_static(s, x, n0)
    else:
        _mix_gliding(s, x, n0, a)


@kernel(inline=True)
def _scale_pass(x, l0, w, g):
    """``x[:, l0:l0 + w] *= g[:w]`` (``g`` stack scratch)."""
    for i in range(x.shape[0]):
        row = x[i, l0 : l0 + w]
        for lane in range(w):
            row[lane] *= g[lane]


@kernel(inline=True)
def _peak_pass(x, l0, w, peak):
    """``peak[:w]`` raised to the peaks of ``x[:, l0:l0 + w]`` (``peak`` stack scratch)."""
    for i in range(x.shape[0]):
        row = x[i, l0 : l0 + w]
        for lane in range(w):
            peak[lane] = max(peak[lane], abs(row[lane]))


@kernel
def _settled(g):
    """True when every gain of ``g`` (float64[2, ...]: current, target) has arrived."""
    cur = g[0].ravel()
    tgt = g[1].ravel()
    for k in range(cur.size):
        if cur[k] != tgt[k]:
            return False
    return True


@kernel(inline=True)
def _mix_static(s, x, n0):
    """Sum the lanes into their buses and sends with constant gains (the common case).

    Frame by frame, each bus's sum over the lanes (a reduction LLVM vectorises), with the
    gains of a pass of STACK_LANES lanes and a flag for the lanes that feed the bus in stack
    scratch; a loop per lane went through the frames with a stride of a whole frame."""
    n, lanes = x.shape
    W = STACK_LANES
    gl = stack_empty(STACK_LANES, np.float64)
    gr = stack_empty(STACK_LANES, np.float64)
    into = stack_empty(STACK_LANES, np.float64)  # 1.0: the lane feeds the bus
    peak = stack_empty(STACK_LANES, np.float64)
    for l0 in range(0, lanes, W):
        w = min(W, lanes - l0)
        for lane in range(w):
            peak[lane] = 0.0
        if w == W:
            _peak_pass(x, l0, W, peak)
        else:
            _peak_pass(x, l0, w, peak)
        for lane in range(w):
            g = max(abs(s.ch_out_g[0, l0 + lane, 0]), abs(s.ch_out_g[0, l0 + lane, 1]))
            s.ch_peak[l0 + lane] = max(s.ch_peak[l0 + lane], peak[lane] * g)
        # the buses (master and groups), then the sends (effects and cue mixes)
        for d in range(s.bus_buf.shape[0] + s.fx_buf.shape[0]):
            used = False
            for lane in range(w):
                if d < s.bus_buf.shape[0]:
                    gl[lane] = s.ch_out_g[0, l0 + lane, 0]
                    gr[lane] = s.ch_out_g[0, l0 + lane, 1]
                    on = s.ch_dest[l0 + lane] == d
                else:
                    gl[lane] = s.ch_send_g[0, l0 + lane, d - s.bus_buf.shape[0], 0]
                    gr[lane] = s.ch_send_g[0, l0 + lane, d - s.bus_buf.shape[0], 1]
                    on = gl[lane] != 0.0 or gr[lane] != 0.0
                into[lane] = 1.0 if on else 0.0
                used |= on
            if not used:
                continue
            bus = s.bus_buf[d] if d < s.bus_buf.shape[0] else s.fx_buf[d - s.bus_buf.shape[0]]
            seg = bus[n0 : n0 + n]  # rows from 0: see _systems
            for i in range(n):
                row = x[i, l0 : l0 + w]
                left = 0.0
                right = 0.0
                for lane in range(w):
                    # chosen, not multiplied by 0: a lane's overflow stays out of other buses
                    left += row[lane] * gl[lane] if into[lane] != 0.0 else 0.0
                    right += row[lane] * gr[lane] if into[lane] != 0.0 else 0.0
                seg[i, 0] += left
                seg[i, 1] += right


@kernel(inline=True)
def _mix_gliding(s, x, n0, a):
    """As _mix_static while gains move: every gain takes its per-sample step."""
    n, lanes = x.shape
    og = s.ch_out_g
    sg = s.ch_send_g
    for i in range(n):
        due = _due(s, s.clock[0] + i)
        for lane in range(lanes):
            v = x[i, lane]
            dest = s.ch_dest[lane]
            for side in range(2):
                _glide(og[:, lane], side, a, due)
                out = v * og[0, lane, side]
                s.bus_buf[dest, n0 + i, side] += out
                s.ch_peak[lane] = max(s.ch_peak[lane], abs(out))
                for f in range(s.fx_buf.shape[0]):
                    _glide(sg[:, lane, f], side, a, due)
                    s.fx_buf[f, n0 + i, side] += v * sg[0, lane, f, side]


@kernel(inline=True)
def _groups(s, n0, n1):
    a = s.consts[2]
    n_grp = s.grp_base.shape[0]
    if n_grp == 0:
        return
    buf = s.grp_buf[: n1 - n0]
    for g in range(n_grp):
        group = s.bus_buf[1 + g, n0:n1]  # rows from 0: see _systems
        for i in range(n1 - n0):
            for side in range(2):
                buf[i, 2 * g + side] = group[i, side]
    dynamics.compressor_bank(
        buf,
        buf,
        s.grp_comp.coefs,
        s.grp_comp.sc_coefs,
        s.grp_comp.sc_state,
        s.grp_comp.state,
        s.grp_comp.link,
        s.grp_comp.gr_db,
    )
    master = s.bus_buf[0, n0:n1]
    for g in range(n_grp):
        moving = s.grp_g[0, g] != s.grp_g[1, g]
        for i in range(n1 - n0):
            if moving:  # else constant: a test LLVM can unswitch
                _glide(s.grp_g, g, a, _due(s, s.clock[0] + i))
            for side in range(2):
                master[i, side] += buf[i, 2 * g + side] * s.grp_g[0, g]


@kernel(inline=True)
def _fx(s, n0, n1):
    a = s.consts[2]
    for f in range(s.fx_base.shape[0]):
        wet = s.fx_buf[f, n0:n1]
        slot = s.fx_slot[f]
        if s.fx_kind[f] == FX_REVERB:
            r = s.rv_state
            effects.reverb_process(
                wet,
                wet,
                s.rv_coefs[slot],
                r[0][slot],
                r[1][slot],
                r[2][slot],
                r[3][slot],
                r[4][slot],
                r[5][slot],
                r[6][slot],
            )
        else:
            d = s.dl_state
            effects.delay_process(
                wet, wet, s.dl_coefs[slot], d[0][slot], d[1][slot], d[2][slot], d[3][slot]
            )
        _run_sections(wet, s.fx_coefs[f], s.fx_fstate[f], s.active)
        master = s.bus_buf[0, n0:n1]  # rows from 0: see _systems
        moving = s.fx_g[0, f] != s.fx_g[1, f]
        for i in range(n1 - n0):
            if moving:  # else constant: a test LLVM can unswitch
                _glide(s.fx_g, f, a, _due(s, s.clock[0] + i))
            for side in range(2):
                master[i, side] += wet[i, side] * s.fx_g[0, f]


@kernel(inline=True)
def _master(s, lp_head, lp_spectra, n0, n1):
    a = s.consts[2]
    x = s.bus_buf[0, n0:n1]
    _run_sections(x, s.mst_coefs, s.mst_fstate, s.active)
    if s.cur[s.bases[0] + MST_EQ_MODE] > 0.5:
        lp = s.lp_state
        linphase.linphase_process(
            x,
            x,
            lp_head,
            lp_spectra,
            lp.hist,
            lp.fdl,
            lp.acc,
            lp.fftbuf,
            lp.tail,
            lp.twiddle,
            lp.bitrev,
            lp.counters,
        )
    c = s.mst_comp
    if s.mst_comp_on[0] or c.state[dynamics.COMP_REDUCTION, 0] > 0.0:
        dynamics.compressor_bank(x, x, c.coefs, c.sc_coefs, c.sc_state, c.state, c.link, c.gr_db)
    _multiband(s, x, a)
    stereo.stereo_width(x, x, s.mst_width[0], s.mst_width_coefs, s.mst_width_state, s.width_scratch)
    # the saturator always runs (its dry path is a fixed delay) so that switching it never
    # changes the master's latency; with mix 0 it only delays
    stereo.saturate(
        x, x, s.mst_sat, s.sat_branch, s.sat_hist_x, s.sat_hist_even, s.sat_hist_odd, s.sat_counters
    )
    moving = s.mst_g[0] != s.mst_g[1]
    for i in range(n1 - n0):
        if moving:
            s.mst_g[0] = _toward(s.mst_g[0], s.mst_g[1], a, _due(s, s.clock[0] + i))
        for side in range(2):
            x[i, side] *= s.mst_g[0]
    lim.limiter_bank(x, x, s.mst_lim_coefs, s.mst_lim[0], s.mst_lim[1], s.mst_lim[2], s.mst_lim_gr)
    if s.mst_dither[dither.D_SCALE] > 0.0:
        dither.dither_bank(x, x, s.mst_dither, s.mst_dither_state[0], s.mst_dither_state[1])
    dest = s.mst_buf[n0:n1]  # rows from 0: see _systems
    for i in range(n1 - n0):
        for side in range(2):
            v = x[i, side]
            dest[i, side] = v
            if abs(v) > s.mst_peak[side]:
                s.mst_peak[side] = abs(v)


@kernel(inline=True)
def _multiband(s, x, a):
    """The multiband compressor, crossfaded in and out so that its crossover's phase shift
    never switches abruptly; fully out, it costs nothing."""
    g = s.mst_mb_g
    if g[0] == 0.0 and g[1] == 0.0:
        return
    n = x.shape[0]
    dry = s.mst_dry[:n]
    dry[:] = x
    dynamics.multiband_bank(
        x,
        x,
        s.mst_mb.xover_coefs,
        s.mst_mb.xover_state,
        s.mst_mb.comp_coefs,
        s.mst_mb.comp_state,
        s.mst_mb.link,
        s.mst_mb.band_gain,
        s.mst_mb.bands,
        s.mst_mb.gr_db,
    )
    for i in range(n):
        g[0] = _toward(g[0], g[1], a, _due(s, s.clock[0] + i))
        for side in range(2):
            x[i, side] = dry[i, side] + g[0] * (x[i, side] - dry[i, side])


@kernel(inline=True)
def _monitor(s, inp, n0, n1):
    a = s.consts[2]
    m = s.mon_m
    has_ext = s.ext_in[0] >= 0
    # settled gains are constant over the block: a loop-invariant test LLVM can unswitch
    moving = not (_settled(m) and s.mon_src_g[0] == s.mon_src_g[1])
    for i in range(n0, n1):
        if moving:
            due = _due(s, s.clock[0] + i - n0)
            s.mon_src_g[0] = _toward(s.mon_src_g[0], s.mon_src_g[1], a, due)
            for k in range(4):
                _glide(m, k, a, due)
        left = s.mst_buf[i, 0]
        right = s.mst_buf[i, 1]
        if has_ext:
            share = s.mon_src_g[0]
            left += share * (_finite(inp[i, s.ext_in[0]]) - left)
            right += share * (_finite(inp[i, s.ext_in[1]]) - right)
        s.mon_buf[i, 0] = m[0, 0] * left + m[0, 1] * right
        s.mon_buf[i, 1] = m[0, 2] * left + m[0, 3] * right


@kernel
def _finite(v):
    return v if math.isfinite(v) else 0.0


@kernel(inline=True)
def _systems(s, inp, out, n0, n1):
    a = s.consts[2]
    n = n1 - n0
    n_fx = s.fx_base.shape[0]
    talk = s.tb_in[0]
    if talk >= 0:  # the talkback's two gains move once a sample, whatever the systems
        for i in range(n):
            due = _due(s, s.clock[0] + i)
            for k in range(2):
                _glide(s.tb_g, k, a, due)
                s.tb_buf[i, k] = s.tb_g[0, k]
    for m in range(s.sys_base.shape[0]):
        if s.sys_g[0, m] == 0.0 and s.sys_g[1, m] == 0.0:
            if s.sys_live[m]:
                _forget_system(s, m)
            continue
        s.sys_live[m] = True
        buf = s.sys_buf[:n]
        # Views from row 0: numba wraps a negative index around (Python's x[-1]) with a
        # test on every access; a row n0 + i is not known to be >= 0, a row i of range(n) is.
        mon = s.mon_buf[n0:n1]
        talk_in = inp[n0:n1]
        mono = s.sys_flags[m, 0]
        cue = s.sys_cue[m]
        cue_mix = s.fx_buf[n_fx + cue, n0:n1] if cue >= 0 else mon
        moving = s.sys_g[0, m] != s.sys_g[1, m] or s.sys_cue_g[0, m] != s.sys_cue_g[1, m]
        for i in range(n):
            if moving:  # else the gains are constant (a test LLVM can unswitch)
                due = _due(s, s.clock[0] + i)
                _glide(s.sys_g, m, a, due)
                if cue >= 0:
                    _glide(s.sys_cue_g, m, a, due)
            g = s.sys_g[0, m]
            left = mon[i, 0]
            right = mon[i, 1]
            if cue >= 0:  # headphones: the monitor bus or their own mix, and the talkback
                c = s.sys_cue_g[0, m]
                left += c * (cue_mix[i, 0] - left)
                right += c * (cue_mix[i, 1] - right)
                if talk >= 0:
                    mic = s.tb_buf[i, 0] * _finite(talk_in[i, talk])
                    left += mic
                    right += mic
            elif talk >= 0:  # speakers: dimmed while talking back
                g *= s.tb_buf[i, 1]
            left *= g
            right *= g
            if mono:
                left = right = 0.5 * (left + right)
            buf[i, 0] = left
            buf[i, 1] = right
        _run_sections(buf, s.sys_coefs[m], s.sys_fstate[m], s.active)
        sim = int(s.cur[s.sys_base[m] + SYS_SIM])
        if sim != s.sys_sim[m]:
            s.sys_sim_state[m] = 0.0
            s.sys_width_state[m] = 0.0
            s.sys_sim[m] = sim
        if sim > 0:
            _run_sections(buf, s.sim_bank[sim], s.sys_sim_state[m], s.active)
            stereo.stereo_width(
                buf, buf, s.sim_width[sim], s.bypass_width, s.sys_width_state[m], s.width_scratch
            )
        ring = s.sys_delay[m]
        size = ring.shape[0]
        delay = s.sys_delay_n[m]
        pos = s.sys_delay_pos[m]
        # positions wrapped by a test: % compiles to an integer division per sample;
        # unsigned: no wrap-around test per access either (see above)
        upos = np.uint64(pos)
        read = np.uint64(pos - delay if pos >= delay else pos - delay + size)
        usize = np.uint64(size)
        one = np.uint64(1)
        for i in range(n):
            for side in range(2):
                ring[upos, side] = buf[i, side]
                buf[i, side] = ring[read, side]
            upos = upos + one if upos + one < usize else np.uint64(0)
            read = read + one if read + one < usize else np.uint64(0)
        pos = int(upos)
        s.sys_delay_pos[m] = pos
        c = s.sys_comp
        if s.sys_comp_on[m] or c.state[m, dynamics.COMP_REDUCTION, 0] > 0.0:
            dynamics.compressor_bank(
                buf,
                buf,
                c.coefs[m],
                c.sc_coefs[m],
                c.sc_state[m],
                c.state[m],
                c.link[m],
                c.gr_db[m],
            )
        # the speakers' safety limiter: nothing leaves above the system's limit, whatever
        # happened upstream
        f = s.sys_safety
        lim.safety_bank(buf, buf, s.sys_safety_coefs[m], f[0][m], f[1][m], f[2][m], f[3][m])
        speakers = out[n0:n1]
        for side in range(2):
            col = s.sys_out[m, side]
            if col < 0:
                continue
            for i in range(n):
                speakers[i, col] += buf[i, side]


@kernel(inline=True)
def _forget_system(s, m):
    """A system that fell silent forgets its filter, delay and limiter memories, so that the
    next switch to it starts clean instead of replaying an old tail."""
    s.sys_fstate[m] = 0.0
    s.sys_delay[m] = 0.0
    s.sys_sim_state[m] = 0.0
    s.sys_width_state[m] = 0.0
    s.sys_comp.state[m] = 0.0
    s.sys_comp.sc_state[m] = 0.0
    s.sys_safety[0][m] = 0.0  # the safety limiter's look-ahead line (its gain recovers)
    s.sys_live[m] = False


# _input_pass's readings: peak, sum of squares, clips, non-finite samples, per lane of a pass
_INPUT_STATS = 4 * STACK_LANES


@kernel(inline=True)
def _input_pass(s, inp, n, l0, w, cols, stats):
    """Lanes ``l0 .. l0 + w - 1`` of the block from the input columns ``cols[lane]``, and
    their meter readings into ``stats`` (stack scratch, STACK_LANES each, zeroed): the peak
    of the finite samples, their sum of squares, the samples at INPUT_CLIP and above, and
    the non-finite samples. Frame by frame with the lanes innermost, a constant ``w`` for
    whole passes: vector loops (lane by lane the reads went down the input's columns)."""
    W = STACK_LANES
    for i in range(n):
        src = inp[i]
        row = s.ch_buf[i, l0 : l0 + w]
        for lane in range(w):
            row[lane] = src[cols[lane]]
    for i in range(n):
        row = s.ch_buf[i, l0 : l0 + w]
        for lane in range(w):
            v = row[lane]
            finite = math.isfinite(v)
            a = abs(v) if finite else 0.0
            stats[lane] = max(stats[lane], a)
            stats[W + lane] += a * a
            stats[2 * W + lane] += 1.0 if a >= INPUT_CLIP else 0.0
            stats[3 * W + lane] += 0.0 if finite else 1.0


@kernel(inline=True)
def _inputs(s, inp, n):
    """The block's input columns into the lanes (float64), with the input meters. A lane
    with a non-finite sample becomes silence for the block and the event is counted, so a
    broken converter or a bad file can never reach a filter state or a speaker."""
    lanes = s.ch_buf.shape[1]
    W = STACK_LANES
    cols = stack_empty(STACK_LANES, np.int64)
    stats = stack_empty(_INPUT_STATS, np.float64)
    for l0 in range(0, lanes, W):
        w = min(W, lanes - l0)
        stats[:] = 0.0
        for lane in range(w):
            cols[lane] = s.lane_in[l0 + lane]
        if w == W:
            _input_pass(s, inp, n, l0, W, cols, stats)
        else:
            _input_pass(s, inp, n, l0, w, cols, stats)
        for lane in range(w):
            meter = s.ch_in_meter[l0 + lane]
            meter[0] = stats[lane]
            if stats[3 * W + lane] == 0.0:
                meter[1] += stats[W + lane]
                meter[2] += stats[2 * W + lane]
            else:
                s.nan_events[l0 + lane] += 1
                for i in range(n):
                    s.ch_buf[i, l0 + lane] = 0.0


@kernel(inline=True)
def _engine_block(s, lp_head, lp_spectra, inp, out, q_idx, q_val, q_start, q_stop):
    """Process one block: inp float32[n, inputs] -> out float32[n, outputs]."""
    n = inp.shape[0]
    _drain(s, q_idx, q_val, q_start, q_stop)
    lanes = s.ch_buf.shape[1]
    _inputs(s, inp, n)
    if s.ext_in[0] >= 0:
        for i in range(n):
            if not (math.isfinite(inp[i, s.ext_in[0]]) and math.isfinite(inp[i, s.ext_in[1]])):
                s.nan_events[lanes] += 1
                break
    s.bus_buf[:, :n] = 0.0
    s.fx_buf[:, :n] = 0.0
    out[:] = 0.0
    s.ch_peak[:] = 0.0
    s.mst_peak[:] = 0.0
    moving = False
    for kind in range(6):
        for i in range(s.dirty.shape[1]):
            if s.dirty[kind, i]:
                moving = True
    pos = 0
    while pos < n:
        phase = s.clock[0] % TICK
        # automation (consts[3] >= 0) sets values for a block that may start between ticks
        if moving and (phase == 0 or (pos == 0 and s.consts[3] >= 0.0)):
            _tick(s)
        seg = min(n - pos, TICK - phase) if moving else n - pos
        end = pos + seg
        _channels(s, pos, end)
        _groups(s, pos, end)
        _fx(s, pos, end)
        _master(s, lp_head, lp_spectra, pos, end)
        _monitor(s, inp, pos, end)
        _systems(s, inp, out, pos, end)
        s.clock[0] += seg
        pos = end
    # last line of defence: nothing non-finite leaves the engine. One test over the whole
    # block (a reduction LLVM vectorises), the repair only when it fails.
    finite = True
    for i in range(n):
        for col in range(out.shape[1]):
            finite &= math.isfinite(out[i, col])
    if not finite:
        guard = lanes + 1
        for i in range(n):
            for col in range(out.shape[1]):
                if not math.isfinite(out[i, col]):
                    out[i, col] = 0.0
                    s.nan_events[guard] += 1
    for col in range(out.shape[1]):
        peak = 0.0
        for i in range(n):
            peak = max(peak, abs(out[i, col]))
        s.out_peak[col] = peak


# q_ctl slots: the queue's head (producers, under the engine's lock) and tail (audio thread)
Q_HEAD = 0
Q_TAIL = 1
# lp_ctl slots: the linear-phase bank in use (control) and the one the audio thread has taken
LP_SELECTED = 0
LP_TAKEN = 1


@kernel
def process_block(s, lp_head, lp_spectra, lp_ctl, inp, out, q_idx, q_val, q_ctl):
    """One block of an engine whose control arrays are given (what :meth:`Engine.process`
    runs, and what the native audio callback calls): drains the parameter queue, takes the
    selected linear-phase bank, processes ``inp`` float32[n, inputs] into ``out``
    float32[n, outputs]."""
    head = q_ctl[Q_HEAD]
    fence()  # the queue entries before ``head`` were stored before it was published
    sel = lp_ctl[LP_SELECTED]
    lp_ctl[LP_TAKEN] = sel
    _engine_block(s, lp_head[sel], lp_spectra[sel], inp, out, q_idx, q_val, q_ctl[Q_TAIL], head)
    fence()  # the entries are read before their slots are handed back
    q_ctl[Q_TAIL] = head


# --------------------------------------------------------------------------------------
# the Python side


# Parameters that only set a gain the signal meets: those gains ramp per sample, so the tick
# smoothing would only add latency. Keyed by the strip's address prefix.
_GAIN_ONLY = {
    "ch": {"trim", "polarity", "pan", "mute", "solo", "fader"},
    "bus": {"mute", "fader"},
    "fx": {"mute", "fader"},
    "master": {"fader"},
    "monitor": {
        "source",
        "level",
        "dim",
        "dim/level",
        "cut",
        "mono",
        "swap",
        "polarity",
        "side",
        "reference",
        "reference/level",
    },
    "system": {"on", "trim", "cue"},
}


def _tick_smoothed(param: Param, systems: set[str]) -> bool:
    """Whether a parameter moves by the tick smoothing (filters, dynamics) rather than
    straight to its target (enums, and the gain-only parameters that ramp per sample)."""
    if param.kind == ENUM:
        return False
    parts = param.address.strip("/").split("/")
    kind, rest = parts[0], parts[2:]
    if kind == "talkback":
        return False  # gains: the mic's level, the speakers' dim
    if kind == "monitor":
        if parts[1] in systems:
            kind = "system"
        else:
            rest = parts[1:]
    elif kind == "master":
        rest = parts[1:]
    if kind == "ch" and len(rest) == 3 and rest[0] in ("send", "cue"):
        return False  # send level, pan and pre/post
    return "/".join(rest) not in _GAIN_ONLY[kind]


def _stack(states: list[tuple], template: tuple) -> tuple:
    """Per-instance state tuples stacked array by array (leading axis: the instance); with
    no instances, zero-length arrays shaped like ``template``'s."""
    if not states:
        return tuple(np.zeros((0, *a.shape), dtype=a.dtype) for a in template)
    return tuple(np.stack(arrays) for arrays in zip(*states, strict=True))


def _owners(layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Owner kind and id of every engine slot, and (first slot, count) of every strip."""
    starts = [
        (OWN_CHANNEL, layout.ch_base),
        (OWN_GROUP, layout.grp_base),
        (OWN_FX, layout.fx_base),
        (OWN_MASTER, np.array([layout.master_base])),
        (OWN_MONITOR, np.array([layout.monitor_base])),
        (OWN_SYSTEM, layout.sys_base),
    ]
    flat = sorted((int(b), kind, i) for kind, bases in starts for i, b in enumerate(bases))
    width = max(1, max(len(b) for _, b in starts))
    kinds = np.zeros(layout.control_base, dtype=np.int64)
    ids = np.zeros(layout.control_base, dtype=np.int64)
    blocks = np.zeros((6, width, 2), dtype=np.int64)
    for j, (base, kind, i) in enumerate(flat):
        end = flat[j + 1][0] if j + 1 < len(flat) else layout.control_base
        kinds[base:end] = kind
        ids[base:end] = i
        blocks[kind, i] = (base, end - base)
    return kinds, ids, blocks


class Engine:
    """The engine for one session: validated parameter changes in, audio blocks through.

    ``set()`` may be called from any control thread; ``process()`` from one audio thread.
    ``process`` takes float32 ``[frames, inputs]`` and writes float32 ``[frames, outputs]``
    (``frames`` up to ``max_block_frames``), the layout sounddevice's callbacks use.
    """

    def __init__(self, session: Session, max_block_frames: int = MAX_BLOCK_FRAMES):
        self.session = session
        self.layout = build_layout(session)
        self.registry: Registry = self.layout.registry
        self.samplerate = session.samplerate
        self.max_block_frames = int(max_block_frames)
        self._lock = threading.Lock()  # producers only; the audio thread never takes it
        self._q_idx = np.zeros(QUEUE_SIZE, dtype=np.int64)
        self._q_val = np.zeros(QUEUE_SIZE, dtype=np.float64)
        self._q_ctl = np.zeros(2, dtype=np.int64)  # Q_HEAD, Q_TAIL
        self.state = self._build_state()
        self._lp_taps = linphase.default_taps(self.samplerate)
        # Two linear-phase banks: the control side designs into the one the audio thread
        # does not use and then selects it (see service()).
        head, spectra = self._design_linear_phase()
        self._lp_head = np.stack([head, head])
        self._lp_spectra = np.stack([spectra, spectra])
        self._lp_ctl = np.zeros(2, dtype=np.int64)  # LP_SELECTED, LP_TAKEN
        self._lp_dirty = False
        # design everything once from the defaults
        self.state.dirty[:] = self.state.blocks[:, :, 1] > 0
        self.state.tgt[:] = self.registry.values[: self.layout.control_base]
        self.state.cur[:] = self.registry.values[: self.layout.control_base]
        _tick(self.state)
        for g in (
            self.state.ch_in_g,
            self.state.ch_out_g,
            self.state.ch_send_g,
            self.state.grp_g,
            self.state.fx_g,
            self.state.mst_g,
            self.state.mon_src_g,
            self.state.mon_m,
            self.state.sys_g,
        ):
            g[0] = g[1]

    # -- construction ---------------------------------------------------------------
    def _build_state(self) -> EngineState:
        session, layout, reg = self.session, self.layout, self.registry
        n = self.max_block_frames
        fs = float(session.samplerate)
        lane_in, lane_ch, lane0 = [], [], []
        for c, ch in enumerate(session.channels):
            lane0.append(len(lane_in))
            for i in ch.inputs:
                lane_in.append(i - 1)
                lane_ch.append(c)
        lanes = len(lane_in)
        n_grp, n_fx, n_sys = len(session.groups), len(session.fx), len(session.systems)
        n_cue = len(session.cues)
        kinds, ids, blocks = _owners(layout)
        exclusive = [m.name for m in session.systems if not m.additive]
        sys_out = np.full((n_sys, 2), -1, dtype=np.int64)
        sys_flags = np.zeros((n_sys, 3), dtype=np.int64)
        for m, spec in enumerate(session.systems):
            outs = [o - 1 for o in spec.outputs]
            sys_out[m, : len(outs)] = outs
            sys_flags[m] = (
                spec.mono or len(outs) == 1,
                spec.additive,
                exclusive.index(spec.name) if not spec.additive else -1,
            )
        delay_len = math.ceil(MAX_SYSTEM_DELAY_MS * 1e-3 * fs) + 1
        sims = [design_simulation(name, fs) for name in SIMULATION_NAMES[1:]]
        sim_sections = max(len(c) for c in sims)
        sim_bank = np.zeros((len(SIMULATION_NAMES), sim_sections, 5, 2))
        sim_bank[:, :, 0, :] = 1.0  # bypass rows pad the shorter chains
        for k, coefs in enumerate(sims, start=1):
            sim_bank[k, : len(coefs)] = coefs[:, :, None]
        sim_width = np.array([1.0] + [SIMULATIONS[name].width for name in SIMULATION_NAMES[1:]])
        width_coefs, _, width_scratch = stereo.make_width_state()
        sat = stereo.make_saturator_state(2)
        taps = linphase.default_taps(fs)
        ch_comp = dynamics.make_compressor_arrays(lanes)
        ch_gate = dynamics.make_gate_arrays(lanes)
        mst_comp = dynamics.make_compressor_arrays(2)
        mst_comp.link[:] = (1, 0)
        mb = dynamics.make_multiband_arrays(2)
        mb.link[:] = (1, 0)
        for c, lane in enumerate(lane0):
            if session.channels[c].lanes == 2:
                for arrays in (ch_comp, ch_gate):
                    arrays.link[lane : lane + 2] = (lane + 1, lane)
        grp_comp = dynamics.make_compressor_arrays(2 * n_grp)
        grp_comp.link[:] = np.arange(2 * n_grp) ^ 1
        pair = dynamics.make_compressor_arrays(2)
        pair.link[:] = (1, 0)
        sys_comp = dynamics.CompressorArrays(*_stack([pair] * n_sys, pair))
        sim_comp = np.zeros((len(SIMULATION_NAMES), SIM_MAKEUP + 2))
        sim_comp[:, :4] = (0.0, 1.0, 10.0, 100.0)
        for k, name in enumerate(SIMULATION_NAMES[1:], start=1):
            setting = SIMULATIONS[name].compression
            if setting is not None:
                sim_comp[k, :SIM_MAKEUP] = (
                    setting.threshold_db,
                    setting.ratio,
                    setting.attack_ms,
                    setting.release_ms,
                    1.0,
                )
            for mono in (0, 1):
                sim_comp[k, SIM_MAKEUP + mono] = makeup_gain_db(name, fs, mono_input=bool(mono))
        fx_kinds = [f.kind for f in session.fx]
        fx_kind = np.array([FX_REVERB if k == "reverb" else FX_DELAY for k in fx_kinds], np.int64)
        fx_slot = np.array([fx_kinds[:f].count(k) for f, k in enumerate(fx_kinds)], np.int64)
        n_rv, n_dl = fx_kinds.count("reverb"), fx_kinds.count("delay")
        rv_state = _stack(
            [effects.make_reverb_state(fs) for _ in range(n_rv)], effects.make_reverb_state(fs)
        )
        dl_state = _stack(
            [effects.make_delay_state(fs) for _ in range(n_dl)], effects.make_delay_state(fs)
        )
        lim_coefs = np.zeros(lim.LIMITER_COEFS)
        lim.design_limiter(-1.0, 50.0, LIMITER_LOOKAHEAD_MS, fs, lim_coefs)
        safety = (*lim.make_safety_state(2, SAFETY_LOOKAHEAD_MS, fs), np.zeros(1, np.int64))
        safety = _stack([safety] * n_sys, safety)
        ext = [i - 1 for i in session.ext_inputs] or [-1, -1]
        engine_params = list(reg)[: layout.control_base]
        return EngineState(
            tgt=np.zeros(len(engine_params)),
            cur=np.zeros(len(engine_params)),
            continuous=np.array(
                [_tick_smoothed(p, {m.name for m in session.systems}) for p in engine_params],
                np.bool_,
            ),
            owner_kind=kinds,
            owner_id=ids,
            dirty=np.zeros(blocks.shape[:2], dtype=np.bool_),
            blocks=blocks,
            scratch=np.zeros((CH_SECTIONS, 5)),
            active=np.zeros(max(CH_SECTIONS, sim_sections), dtype=np.bool_),
            clock=np.zeros(2, dtype=np.int64),
            consts=np.array(
                [
                    fs,
                    _one_pole_coef(PARAM_SMOOTH_MS, fs, TICK),
                    1.0 / (GAIN_RAMP_MS * 1e-3 * fs),
                    -1.0,
                ]
            ),
            ch_base=layout.ch_base,
            ch_lane0=np.array(lane0, dtype=np.int64),
            ch_lanes=np.array([c.lanes for c in session.channels], dtype=np.int64),
            lane_in=np.array(lane_in, dtype=np.int64),
            lane_ch=np.array(lane_ch, dtype=np.int64),
            grp_base=layout.grp_base,
            fx_base=layout.fx_base,
            bases=np.array([layout.master_base, layout.monitor_base], dtype=np.int64),
            sys_base=layout.sys_base,
            sys_out=sys_out,
            sys_flags=sys_flags,
            ext_in=np.array(ext, dtype=np.int64),
            ch_buf=np.zeros((n, lanes)),
            ch_coefs=np.zeros((CH_SECTIONS, 5, lanes)),
            ch_fstate=np.zeros((CH_SECTIONS, 2, lanes)),
            ch_in_g=np.zeros((2, lanes)),
            ch_out_g=np.zeros((2, lanes, 2)),
            ch_send_g=np.zeros((2, lanes, n_fx + n_cue, 2)),
            ch_dest=np.zeros(lanes, dtype=np.int64),
            ch_peak=np.zeros(lanes),
            ch_in_meter=np.zeros((lanes, 3)),
            ch_gate=ch_gate,
            ch_comp=ch_comp,
            ch_dyn_on=np.zeros(2, dtype=np.bool_),
            nan_events=np.zeros(lanes + 2, dtype=np.int64),
            bus_buf=np.zeros((1 + n_grp, n, 2)),
            fx_buf=np.zeros((n_fx + n_cue, n, 2)),
            grp_g=np.zeros((2, n_grp)),
            grp_buf=np.zeros((n, 2 * n_grp)),
            grp_comp=grp_comp,
            fx_coefs=np.zeros((n_fx, FX_SECTIONS, 5, 2)),
            fx_fstate=np.zeros((n_fx, FX_SECTIONS, 2, 2)),
            fx_g=np.zeros((2, n_fx)),
            fx_kind=fx_kind,
            fx_slot=fx_slot,
            rv_coefs=np.zeros((n_rv, effects.REVERB_ROWS, effects.REVERB_LINES)),
            rv_state=rv_state,
            dl_coefs=np.zeros((n_dl, effects.DELAY_ROWS, 2)),
            dl_state=dl_state,
            mst_coefs=np.zeros((MST_SECTIONS, 5, 2)),
            mst_fstate=np.zeros((MST_SECTIONS, 2, 2)),
            mst_g=np.zeros(2),
            mst_width=np.ones(1),
            mst_width_coefs=width_coefs.copy(),
            mst_width_state=np.zeros((2, 2, 1)),
            width_scratch=width_scratch,
            mst_sat=np.zeros(3),
            sat_branch=stereo.HALFBAND_BRANCH,
            sat_hist_x=sat[0],
            sat_hist_even=sat[1],
            sat_hist_odd=sat[2],
            sat_counters=sat[3],
            lp_state=linphase.make_linphase_state(taps, 2),
            mst_buf=np.zeros((n, 2)),
            mst_dry=np.zeros((n, 2)),
            mst_comp=mst_comp,
            mst_comp_on=np.zeros(1, dtype=np.bool_),
            mst_mb=mb,
            mst_mb_g=np.zeros(2),
            mst_lim_coefs=lim_coefs,
            mst_lim=lim.make_limiter_state(lim_coefs, 2),
            mst_lim_gr=np.zeros(1),
            mst_dither=np.zeros(dither.DITHER_COEFS),
            mst_dither_state=dither.make_dither_state(2),
            mst_dither_shapings=np.array(
                [dither.SHAPING_IDS["none"], dither.SHAPING_IDS[DITHER_SHAPING]], dtype=np.int64
            ),
            mst_peak=np.zeros(2),
            mon_src_g=np.zeros(2),
            mon_m=np.zeros((2, 4)),
            mon_buf=np.zeros((n, 2)),
            sys_g=np.zeros((2, n_sys)),
            sys_cue=np.array(
                [session.cues.index(m) if m.cue else -1 for m in session.systems], np.int64
            ),
            sys_cue_g=np.zeros((2, n_sys)),
            tb_in=np.array([session.talkback_input - 1], dtype=np.int64),
            tb_g=np.array([[0.0, 1.0], [0.0, 1.0]]),
            tb_buf=np.zeros((n, 2)),
            sys_coefs=np.zeros((n_sys, SYS_SECTIONS, 5, 2)),
            sys_fstate=np.zeros((n_sys, SYS_SECTIONS, 2, 2)),
            sys_buf=np.zeros((n, 2)),
            sys_comp=sys_comp,
            sys_comp_on=np.zeros(n_sys, dtype=np.bool_),
            sim_comp=sim_comp,
            sys_safety_coefs=np.zeros((n_sys, lim.SAFETY_COEFS, 2)),
            sys_safety=safety,
            sys_delay=np.zeros((n_sys, delay_len, 2)),
            sys_delay_pos=np.zeros(n_sys, dtype=np.int64),
            sys_delay_n=np.zeros(n_sys, dtype=np.int64),
            sys_live=np.zeros(n_sys, dtype=np.bool_),
            sim_bank=sim_bank,
            sim_width=sim_width,
            sys_sim=np.zeros(n_sys, dtype=np.int64),
            sys_sim_state=np.zeros((n_sys, sim_sections, 2, 2)),
            sys_width_state=np.zeros((n_sys, 2, 2, 1)),
            bypass_width=width_coefs,
            out_peak=np.zeros(session.n_outputs),
        )

    # -- control side -------------------------------------------------------------------
    def set(self, address: str, value: object) -> tuple[Param, float]:
        """Validate ``value`` for ``address`` and queue it for the audio thread (a
        control-side parameter, which the audio thread never reads, is only stored).

        Raises ParamError for a bad address or value, QueueFull when the audio thread has
        fallen behind by QUEUE_SIZE changes; never blocks on the audio thread.
        """
        param = self.registry[address]
        number = param.validate(value)
        if param.index >= self.layout.control_base:  # the audio thread never reads it
            with self._lock:
                self.registry.values[param.index] = number
            return param, number
        with self._lock:
            head = int(self._q_ctl[Q_HEAD])
            if head - self._q_ctl[Q_TAIL] >= QUEUE_SIZE:
                raise QueueFull(f"{QUEUE_SIZE} parameter changes pending; {address} dropped")
            slot = head % QUEUE_SIZE
            self._q_idx[slot] = param.index
            self._q_val[slot] = number
            self.registry.values[param.index] = number
            publish(self._q_ctl, Q_HEAD, head + 1)
            if param.address.startswith(("/master/eq/", "/master/eq/mode")):
                self._lp_dirty = True
        return param, number

    @property
    def clock_samples(self) -> int:
        """Samples processed since the engine was made: the absolute time of the next one."""
        return int(self.state.clock[0])

    def automate(self, arrival_sample: int | None) -> None:
        """Offline renders of automation lanes (daemon.automation). With ``arrival_sample``
        (a :attr:`clock_samples` value): every gain moves in a straight line to arrive at
        its target on that sample, values set before a block take effect at its first
        sample (not at the next control tick), and filter and dynamics parameters skip the
        PARAM_SMOOTH_MS glide. None: a live engine's click-free ramps."""
        consts = self.state.consts
        live = arrival_sample is None
        consts[1] = _one_pole_coef(PARAM_SMOOTH_MS, self.samplerate, TICK) if live else 1.0
        consts[3] = -1.0 if live else float(arrival_sample)

    def service(self) -> None:
        """Control-side upkeep, called from a control thread (the daemon's service loop, or
        ``render`` between blocks): designs the linear-phase master EQ after its parameters
        changed and selects it. The new design goes into the bank the audio thread is not
        using: when it has not yet taken the last selection, the design waits for the next
        call."""
        ctl = self._lp_ctl
        if self._lp_dirty and ctl[LP_TAKEN] == ctl[LP_SELECTED]:
            self._lp_dirty = False
            spare = 1 - int(ctl[LP_SELECTED])
            self._lp_head[spare], self._lp_spectra[spare] = self._design_linear_phase()
            publish(ctl, LP_SELECTED, spare)

    def arrays(self) -> tuple:
        """What :func:`process_block` takes besides the audio: ``(state, lp_head,
        lp_spectra, lp_ctl, q_idx, q_val, q_ctl)``, for native callers."""
        return (self.state, self._lp_head, self._lp_spectra, self._lp_ctl, self._q_idx,
                self._q_val, self._q_ctl)  # fmt: skip

    def _design_linear_phase(self) -> tuple[np.ndarray, np.ndarray]:
        """The master EQ bands as a linear-phase FIR, partitioned for the engine."""
        values = self.registry.values
        base = self.layout.master_base
        coefs = np.zeros((4, 5))
        _design_eq4(coefs, values, base + MST_EQ, values[base + MST_EQ_ON], float(self.samplerate))
        fir = np.zeros(self._lp_taps)
        linphase.design_linphase_fir(coefs, float(self.samplerate), fir)
        return linphase.make_linphase_coefs(np.column_stack([fir, fir]))

    def get(self, address: str) -> float:
        return self.registry.get(address)

    # -- audio side -----------------------------------------------------------------------
    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        """One block: ``inp`` float32[frames, n_inputs] -> ``out`` float32[frames, n_outputs]."""
        process_block(self.state, self._lp_head, self._lp_spectra, self._lp_ctl, inp, out,
                      self._q_idx, self._q_val, self._q_ctl)  # fmt: skip

    def render(self, inp: np.ndarray, block_frames: int = 4096, tap: str = "outputs") -> np.ndarray:
        """Offline: process a whole float32 ``[frames, n_inputs]`` array.

        tap="outputs" returns the interface outputs ``[frames, n_outputs]``; tap="master"
        returns the master bus after limiter and dither ``[frames, 2]`` (what a bounce
        writes), delayed by ``master_latency_samples``.
        """
        if tap not in ("outputs", "master"):
            raise ValueError(f"tap must be 'outputs' or 'master', not {tap!r}")
        inp = np.ascontiguousarray(inp, dtype=np.float32)
        if inp.ndim != 2 or inp.shape[1] != self.session.n_inputs:
            raise ValueError(f"input must be [frames, {self.session.n_inputs}], got {inp.shape}")
        out = np.zeros((len(inp), self.session.n_outputs), dtype=np.float32)
        master = np.zeros((len(inp), 2), dtype=np.float32) if tap == "master" else None
        step = min(block_frames, self.max_block_frames)
        for start in range(0, len(inp), step):
            self.service()
            block = slice(start, start + step)
            self.process(inp[block], out[block])
            if master is not None:
                master[block] = self.state.mst_buf[: len(master[block])]
        return out if master is None else master

    @property
    def master_latency_samples(self) -> int:
        """Delay of the master chain: saturator halfband, limiter look-ahead, and the
        linear-phase EQ when it is in use."""
        linear = self.registry.get("/master/eq/mode") > 0.5
        return (
            stereo.SATURATOR_LATENCY
            + lim.limiter_latency(self.state.mst_lim_coefs)
            + ((self._lp_taps - 1) // 2 if linear else 0)
        )

    @property
    def latency_samples(self) -> int:
        """Delay from an input to the speakers: the master chain and the output safety
        limiters' look-ahead (a system's alignment delay comes on top)."""
        return self.master_latency_samples + self.safety_latency_samples

    @property
    def safety_latency_samples(self) -> int:
        return lim.safety_lookahead_samples(SAFETY_LOOKAHEAD_MS, self.samplerate)

    def channel_peaks(self) -> np.ndarray:
        """Each channel strip's post-fader peak of the last block, linear (the louder lane
        of a stereo strip), float64[C]. Any thread: a meter, read while the audio runs."""
        s = self.state
        lanes = zip(s.ch_lane0, s.ch_lanes, strict=True)
        return np.array([s.ch_peak[a : a + n].max() for a, n in lanes])

    def input_meters(self) -> tuple[np.ndarray, int]:
        """Each channel strip's input before trim and fader, float64[C, 3]: the last block's
        peak (linear, the louder lane), the running sum of squares (mean over its lanes) and
        the running count of clipped samples (``INPUT_CLIP_DBFS`` and above, all lanes);
        and the running count of samples processed. A mean square over an interval is the
        difference of two readings' sums over the difference of their sample counts."""
        s = self.state
        samples = int(s.clock[0])
        m = s.ch_in_meter
        out = np.empty((len(s.ch_lane0), 3))
        for k, (a, n) in enumerate(zip(s.ch_lane0, s.ch_lanes, strict=True)):
            out[k, 0] = m[a : a + n, 0].max()
            out[k, 1] = m[a : a + n, 1].mean()
            out[k, 2] = m[a : a + n, 2].sum()
        return out, samples

    @property
    def nan_events(self) -> int:
        return int(self.state.nan_events.sum())
