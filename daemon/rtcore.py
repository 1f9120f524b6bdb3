"""The audio callback in compiled code: it runs without the GIL from start to end.

:func:`core_block` is the whole callback: device input -> engine(s) -> device output and
meters. It finds every array through a table of addresses (:mod:`studiod.daemon.native`),
and :func:`pa_process`, compiled as a C function (``numba.cfunc``) with PortAudio's
callback signature, is the one compiled entry every device calls:

* PortAudio's callback thread calls it directly, and :func:`jack_process`, a small C
  function that copies JACK's port buffers, calls it through its address: neither enters
  Python, so no control thread can delay them by holding the GIL;
* :func:`virtual_run`, the virtual device (a thread that keeps time like a sound card),
  calls it through its address too; :meth:`studiod.daemon.audio.AudioCore.callback` calls
  it through ctypes (which releases the GIL) for a single block.

(The machine code of the callback, engine included, is then loaded once per process: each
compiled entry that contains it costs about 24 MB of memory.)

Table (int64): a header (``H_*``), the two meters, then the records the control side swaps:
three engine slots (the one heard, one fading out, one being prepared), two of each of the
shared block, the reference player and the loudness log's tap. The control side writes a
record nobody reads, then publishes its index in ``ctl`` (see ``CTL_*``).
"""

from __future__ import annotations

import ctypes

import numba
import numpy as np
from numba import carray, types

from studiod.daemon._unpack import (
    METER_WIDTH,
    PLAYER_WIDTH,
    SHARED_WIDTH,
    SLOT_WIDTH,
    TAP_WIDTH,
    unpack_meter,
    unpack_player,
    unpack_shared,
    unpack_slot,
    unpack_tap,
)
from studiod.daemon.native import (
    STACK_TOUCH_BYTES,
    address,
    call_get_buffer,
    call_int,
    call_stream_callback,
    clock_ns,
    sleep_until_ns,
    touch_stack,
)
from studiod.daemon.reference import player_fill
from studiod.daemon.rtstate import (
    METER_INTERVAL_DONE,
    METER_INTERVAL_REQ,
    METER_MASTER,
    METER_MONITOR,
    METER_RESET_MASTER,
    METER_RESET_MONITOR,
    SRC_ACTIVE,
    SRC_READ,
    SRC_UNDERRUNS,
    SRC_WRITTEN,
)
from studiod.dsp import loudness as ld
from studiod.dsp._jit import FASTMATH, fence, kernel
from studiod.dsp.engine import process_block
from studiod.dsp.loudtap import tap_process

TIMES_RING = 8192  # callback durations kept for the control thread (~11 s at 64 frames)

# table header
H_CTL = 0  # address of ctl, int64[CTL_SIZE]
H_TIMES = 1  # address of the callback-duration ring, int64[TIMES_RING] (ns, wall clock)
H_CLOCK = 2  # address of clock_gettime (0: durations are not measured)
H_CLOCK_ID = 3  # its clock (CLOCK_MONOTONIC)
H_MAX_FRAMES = 4  # the engines' block limit: a longer device block is cut
H_CPU_TIMES = 5  # address of the ring of the callback's own CPU time, int64[TIMES_RING] (ns)
H_CPU_CLOCK_ID = 6  # the audio thread's CPU clock (CLOCK_THREAD_CPUTIME_ID)
H_GETTID = 7  # address of gettid (0: the audio thread is not identified)
HEADER = 8
# regions
METERS = HEADER  # master, monitor
SLOTS = METERS + 2 * METER_WIDTH
N_SLOTS = 3
SHAREDS = SLOTS + N_SLOTS * SLOT_WIDTH
PLAYERS = SHAREDS + 2 * SHARED_WIDTH
TAPS = PLAYERS + 2 * PLAYER_WIDTH
TABLE_SIZE = TAPS + 2 * TAP_WIDTH

# ctl: record indices (control writes), -1 where there is none
CTL_ENGINES = 0  # engines(heard, fading out): both change in one store
CTL_SHARED = 1
CTL_PLAYER = 2
CTL_TAP = 3
# ctl: written by the audio thread
CTL_IN_BLOCK = 4  # 1 while a block runs
CTL_CALLBACKS = 5  # blocks completed
CTL_XRUNS = 6  # blocks that came with an xrun flag
# ctl: xruns a device reports from another thread (JACK's xrun callback)
CTL_XRUN_REQ = 7
CTL_XRUN_ACK = 8
# ctl: the audio thread's id (gettid), written by its first block; 0 until then (a device
# opening a stream resets it: a new stream may call from a new thread)
CTL_TID = 9
CTL_SIZE = 10


def engines(heard: int, fading: int = -1) -> int:
    """The CTL_ENGINES word for slot ``heard`` crossfading from slot ``fading`` (-1: none).
    The audio thread sets it to ``engines(heard)`` when the crossfade is over."""
    return heard + N_SLOTS * (fading + 1)


# ----------------------------------------------------------------------------------------
# the parts of a block


@kernel(inline=True)
def _io_in(indata, io, sh, player, advance):
    """Engine inputs for one block from the device input, the loop and the monitor-source
    ring, and the reference player (``player``: a reference.PlayerState or None).
    ``advance``: consume the loop and the ring (False for an engine fading out, which hears
    the same block)."""
    n = indata.shape[0]
    n_dev = indata.shape[1]
    eng = io.eng_in
    for c in range(eng.shape[1]):
        col = io.in_map[c]
        if 0 <= col < n_dev:
            for i in range(n):
                eng[i, c] = indata[i, col]
        else:
            for i in range(n):
                eng[i, c] = 0.0
    if sh.loop_ctl[0] != 0:
        loop = sh.loop
        length = loop.shape[0]
        cols = min(loop.shape[1], eng.shape[1])
        pos = sh.loop_ctl[1]
        for i in range(n):
            for c in range(cols):
                eng[i, c] = loop[pos, c]
            pos += 1
            if pos >= length:
                pos = 0
        if advance:
            sh.loop_ctl[1] = pos
    if sh.src_ctl[SRC_ACTIVE] != 0 and io.ext[0] >= 0:
        ring = sh.src
        size = ring.shape[0]
        read = sh.src_ctl[SRC_READ]
        written = sh.src_ctl[SRC_WRITTEN]
        fence()  # the frames before ``written`` were stored before it was published
        take = min(written - read, n)
        for i in range(n):
            if i < take:
                row = (read + i) % size
                eng[i, io.ext[0]] = ring[row, 0]
                eng[i, io.ext[1]] = ring[row, 1]
            else:
                eng[i, io.ext[0]] = 0.0
                eng[i, io.ext[1]] = 0.0
        if advance:
            fence()  # the frames are read before their rows are handed back
            sh.src_ctl[SRC_READ] = read + take
            sh.src_ctl[SRC_UNDERRUNS] += n - take
    if player is not None:
        if io.ext[0] >= 0:
            player_fill(eng, n, io.ext, player)


@kernel
def _map_out(eng, out_map, n, dest):
    dest[:n] = 0.0
    n_dev = dest.shape[1]
    for c in range(out_map.shape[0]):
        col = out_map[c]
        if 0 <= col < n_dev:
            for i in range(n):
                dest[i, col] += eng[i, c]


@kernel
def _meter_interval(sh, k, state):
    for lane in range(2):
        sh.tp_last[k, lane] = state.tp_peak[lane]
        sh.sp_last[k, lane] = state.sample_peak[lane]
        sh.tp_max[k, lane] = max(sh.tp_max[k, lane], state.tp_peak[lane])
        state.tp_peak[lane] = 0.0
        state.sample_peak[lane] = 0.0


@kernel
def _meter_reset(sh, k, s):
    ld.loudness_reset(
        s.kcoefs, s.kstate, s.scratch, s.weights, s.config, s.counters, s.sub_acc, s.ring,
        s.hist_fine, s.hist_coarse, s.tp_coefs, s.tp_history, s.tp_peak, s.sample_peak, s.meters,
    )  # fmt: skip
    for lane in range(2):
        sh.tp_max[k, lane] = 0.0


@kernel(inline=True)
def _io_out(outdata, io, old, sh, m_master, m_monitor, tap):
    """Device output for one block (output map, crossfade from ``old`` after a swap) and
    the meters. ``old`` is ``io`` itself when no crossfade runs; ``tap``: the loudness
    log's loudtap.TapState, or None."""
    n = outdata.shape[0]
    _map_out(io.eng_out, io.out_map, n, outdata)
    pos = sh.fade[0]
    length = sh.fade[1]
    if pos < length:
        _map_out(old.eng_out, old.out_map, n, sh.xfade)
        for i in range(n):
            g = min(1.0, max(0.0, (pos + i) / length))
            for col in range(outdata.shape[1]):
                outdata[i, col] = g * outdata[i, col] + (1.0 - g) * sh.xfade[i, col]
        sh.fade[0] = pos + n
    # meters: requests from the control thread first
    if sh.meter_ctl[METER_RESET_MASTER] != 0:
        _meter_reset(sh, METER_MASTER, m_master)
        sh.meter_ctl[METER_RESET_MASTER] = 0
    if sh.meter_ctl[METER_RESET_MONITOR] != 0:
        _meter_reset(sh, METER_MONITOR, m_monitor)
        sh.meter_ctl[METER_RESET_MONITOR] = 0
    ld.loudness_process_state(io.master[:n], m_master)
    c0 = sh.mon_cols[0]
    c1 = sh.mon_cols[1]
    if 0 <= c0 < io.eng_out.shape[1] and 0 <= c1 < io.eng_out.shape[1]:
        buf = sh.mon_buf[:n]
        for i in range(n):
            buf[i, 0] = io.eng_out[i, c0]
            buf[i, 1] = io.eng_out[i, c1]
        ld.loudness_process_state(buf, m_monitor)
    if sh.meter_ctl[METER_INTERVAL_REQ] != sh.meter_ctl[METER_INTERVAL_DONE]:
        _meter_interval(sh, METER_MASTER, m_master)
        _meter_interval(sh, METER_MONITOR, m_monitor)
        sh.meter_ctl[METER_INTERVAL_DONE] = sh.meter_ctl[METER_INTERVAL_REQ]
    if tap is not None:
        tap_process(io.master, io.eng_out[:n], n, tap)


# ----------------------------------------------------------------------------------------


@kernel(inline=True)
def _engine_pass(indata, slot, sh, tab, player_k, advance):
    """Device input -> one engine's outputs (``slot.io.eng_out``)."""
    io = slot.io
    n = indata.shape[0]
    if player_k >= 0:
        _io_in(indata, io, sh, unpack_player(tab, PLAYERS + player_k * PLAYER_WIDTH), advance)
    else:
        _io_in(indata, io, sh, None, advance)
    process_block(slot.state, slot.lp_head, slot.lp_spectra, slot.lp_ctl, io.eng_in[:n],
                  io.eng_out[:n], slot.q_idx, slot.q_val, slot.q_ctl)  # fmt: skip


@kernel
def core_block(tab, indata, outdata, frames, flagged):
    """One device block: ``indata`` float32[frames, dev_in] -> ``outdata`` float32[frames,
    dev_out], through the engine records that ``tab`` (int64) points at. ``flagged``: the
    device reported an xrun with this block."""
    ctl = carray(address(tab[H_CTL]), (CTL_SIZE,), np.int64)
    t0 = clock_ns(tab[H_CLOCK], tab[H_CLOCK_ID])
    cpu0 = clock_ns(tab[H_CLOCK], tab[H_CPU_CLOCK_ID])
    if ctl[CTL_TID] == 0:  # the first block on this thread
        touch_stack(STACK_TOUCH_BYTES)
        ctl[CTL_TID] = call_int(tab[H_GETTID]) if tab[H_GETTID] != 0 else -1
    ctl[CTL_IN_BLOCK] = 1
    fence()  # the control side sees IN_BLOCK before this block reads the record indices
    req = ctl[CTL_XRUN_REQ]
    if flagged or req != ctl[CTL_XRUN_ACK]:
        ctl[CTL_XRUNS] += 1
        ctl[CTL_XRUN_ACK] = req
    word = ctl[CTL_ENGINES]
    slot_k = word % N_SLOTS
    old_k = word // N_SLOTS - 1
    slot = unpack_slot(tab, SLOTS + slot_k * SLOT_WIDTH)
    player_k = ctl[CTL_PLAYER]
    tap_k = ctl[CTL_TAP]
    sh = unpack_shared(tab, SHAREDS + ctl[CTL_SHARED] * SHARED_WIDTH)
    m_master = unpack_meter(tab, METERS)
    m_monitor = unpack_meter(tab, METERS + METER_WIDTH)
    step = tab[H_MAX_FRAMES]
    for start in range(0, frames, step):
        stop = min(frames, start + step)
        ind = indata[start:stop]
        outd = outdata[start:stop]
        other = slot.io
        if old_k >= 0:
            old = unpack_slot(tab, SLOTS + old_k * SLOT_WIDTH)
            _engine_pass(ind, old, sh, tab, -1, False)  # the same input, not consumed twice
            other = old.io
        _engine_pass(ind, slot, sh, tab, player_k, True)
        if tap_k >= 0:
            tap = unpack_tap(tab, TAPS + tap_k * TAP_WIDTH)
            _io_out(outd, slot.io, other, sh, m_master, m_monitor, tap)
        else:
            _io_out(outd, slot.io, other, sh, m_master, m_monitor, None)
    if old_k >= 0 and sh.fade[0] >= sh.fade[1]:
        ctl[CTL_ENGINES] = slot_k
    count = ctl[CTL_CALLBACKS]
    cpu_times = carray(address(tab[H_CPU_TIMES]), (TIMES_RING,), np.int64)
    cpu_times[count % TIMES_RING] = clock_ns(tab[H_CLOCK], tab[H_CPU_CLOCK_ID]) - cpu0
    times = carray(address(tab[H_TIMES]), (TIMES_RING,), np.int64)
    times[count % TIMES_RING] = clock_ns(tab[H_CLOCK], tab[H_CLOCK_ID]) - t0
    fence()  # everything above happened before the control side sees the block end
    ctl[CTL_CALLBACKS] = count + 1
    ctl[CTL_IN_BLOCK] = 0


# ----------------------------------------------------------------------------------------
# The compiled entry: PortAudio's stream callback

# the entry table (int64) behind pa_process's user data
P_CORE = 0  # address of the core table
P_CORE_SIZE = 1
P_N_IN = 2  # 0: an output-only stream, whose input pointer is NULL
P_N_OUT = 3
P_SIZE = 4

# paInputUnderflow | paInputOverflow | paOutputUnderflow | paOutputOverflow (portaudio.h);
# paPrimingOutput (0x10) is no xrun
PA_XRUN_FLAGS = 0x0F
PA_CONTINUE = 0


def pa_process(input_, output, frames, time_info, status_flags, user_data):
    """``PaStreamCallback`` on interleaved float32 buffers: PortAudio's buffers are the
    callback's arrays, no copy (``user_data``: the entry table, ``P_*``)."""
    pt = carray(user_data, (P_SIZE,), np.int64)
    n = np.int64(frames)
    outdata = carray(output, (n, pt[P_N_OUT]), np.float32)
    if pt[P_N_IN] > 0:
        indata = carray(input_, (n, pt[P_N_IN]), np.float32)
    else:
        indata = carray(output, (n, 0), np.float32)  # no channels: never read
    core = carray(address(pt[P_CORE]), (pt[P_CORE_SIZE],), np.int64)
    core_block(core, indata, outdata, n, (status_flags & PA_XRUN_FLAGS) != 0)
    return PA_CONTINUE


# ----------------------------------------------------------------------------------------
# JACK's process callback

# the device table (int64) behind jack_process's argument
J_ENTRY = 0  # address of pa_process
J_ENTRY_TABLE = 1  # address of its entry table (P_*)
J_GET_BUFFER = 2  # address of jack_port_get_buffer
J_IN = 3  # address of float32[J_CAPACITY frames, n_in]
J_OUT = 4  # address of float32[J_CAPACITY frames, n_out]
J_CAPACITY = 5  # frames those hold (JACK's largest period)
J_N_IN = 6
J_N_OUT = 7
J_PORTS = 8  # the port handles: n_in inputs, then n_out outputs


def jack_process(nframes, arg):
    """``JackProcessCallback``: the ports' buffers through :func:`pa_process` (``arg``: the
    device table, ``J_*``)."""
    head = carray(arg, (J_PORTS,), np.int64)
    n_in = head[J_N_IN]
    n_out = head[J_N_OUT]
    jt = carray(arg, (J_PORTS + n_in + n_out,), np.int64)
    get_buffer = jt[J_GET_BUFFER]
    n = np.int64(nframes)
    if n > jt[J_CAPACITY]:  # beyond any JACK period: silence rather than an overrun
        for c in range(n_out):
            buf = carray(call_get_buffer(get_buffer, jt[J_PORTS + n_in + c], nframes), (n,),
                         np.float32)  # fmt: skip
            buf[:] = 0.0
        return 0
    indata = carray(address(jt[J_IN]), (n, n_in), np.float32)
    outdata = carray(address(jt[J_OUT]), (n, n_out), np.float32)
    for c in range(n_in):
        buf = carray(call_get_buffer(get_buffer, jt[J_PORTS + c], nframes), (n,), np.float32)
        for i in range(n):
            indata[i, c] = buf[i]
    call_stream_callback(jt[J_ENTRY], jt[J_IN], jt[J_OUT], n, 0, jt[J_ENTRY_TABLE])
    for c in range(n_out):
        buf = carray(call_get_buffer(get_buffer, jt[J_PORTS + n_in + c], nframes), (n,),
                     np.float32)  # fmt: skip
        for i in range(n):
            buf[i] = outdata[i, c]
    return 0


# JACK's notifications, compiled too. libjack calls them on the client's notification
# thread, which must never wait for the GIL: jackd waits for that thread to read each
# notification, and a thread holding the GIL may be waiting for jackd (python-rtmidi keeps
# the GIL in jack_port_unregister): a ctypes callback there deadlocked the daemon's stop.

# the notification table (int64) behind their argument
JN_CTL = 0  # address of the core's ctl (a JACK xrun is counted with the next block)
JN_XRUNS = 1  # xruns JACK reported
JN_DEAD = 2  # 1 once the server has shut the client down
JN_CODE = 3  # its jack_status_t
JN_REASON = 4  # its reason, NUL-terminated, in the bytes of the slots from here
JN_REASON_BYTES = 256
JN_SIZE = JN_REASON + JN_REASON_BYTES // 8


def jack_xrun(arg):
    """``JackXRunCallback``."""
    jn = carray(arg, (JN_SIZE,), np.int64)
    jn[JN_XRUNS] += 1
    ctl = carray(address(jn[JN_CTL]), (CTL_SIZE,), np.int64)
    ctl[CTL_XRUN_REQ] += 1
    return 0


def jack_shutdown(code, reason, arg):
    """``JackInfoShutdownCallback``: the server is gone (``reason`` copied, ``code`` kept)."""
    jn = carray(arg, (JN_SIZE,), np.int64)
    text = carray(address(jn.ctypes.data + 8 * JN_REASON), (JN_REASON_BYTES,), np.uint8)
    src = carray(reason, (JN_REASON_BYTES,), np.uint8)
    i = 0
    while i < JN_REASON_BYTES - 1 and src[i] != 0:  # never reads past the string's end
        text[i] = src[i]
        i += 1
    text[i] = 0
    jn[JN_CODE] = code
    fence()  # the reason is stored before the flag that publishes it
    jn[JN_DEAD] = 1


def jack_silent(message):
    """libjack's error and info functions: the daemon logs its own lines."""


# C's unsigned long: 64 bits on LP64 (Linux, macOS), 32 on Windows and 32-bit ARM
_C_ULONG = types.uint64 if ctypes.sizeof(ctypes.c_ulong) == 8 else types.uint32
_SIGNATURES = {
    jack_process: types.int32(types.uint32, types.voidptr),
    jack_xrun: types.int32(types.voidptr),
    jack_shutdown: types.none(types.int32, types.voidptr, types.voidptr),
    jack_silent: types.none(types.voidptr),
    # (input, output, frameCount, timeInfo, statusFlags, userData)
    pa_process: types.int32(
        types.voidptr, types.voidptr, _C_ULONG, types.voidptr, _C_ULONG, types.voidptr
    ),
}
_compiled: dict = {}


def c_callback_address(function) -> int:
    """The address of :func:`pa_process`, :func:`jack_process` or a JACK notification
    compiled as a C function (compiled, or loaded from numba's cache, on first use)."""
    if function not in _compiled:
        compile_ = numba.cfunc(_SIGNATURES[function], nopython=True, cache=True,
                               fastmath=FASTMATH)  # fmt: skip
        _compiled[function] = compile_(function)
    return _compiled[function].address


# ----------------------------------------------------------------------------------------
# The virtual device: a sound card made of a thread, in compiled code

# vctl (int64): the virtual device's switch and counters
V_RUN = 0  # 1 while the device runs; the control side writes 0 to stop it
V_BLOCKS = 1  # blocks handed to the callback
V_LATE_WAKES = 2  # the device thread woke a period or more after its deadline (the OS's)
V_LATE_BLOCKS = 3  # a block's output was ready after its deadline
V_TAPPED = 4  # frames written to the tap
V_SIZE = 5

# PaStreamCallbackFlags (portaudio.h)
PA_INPUT_OVERFLOW = 0x2
PA_OUTPUT_UNDERFLOW = 0x4


@kernel
def virtual_run(vctl, entry, entry_arg, indata, outdata, source, tap, clocks, period_ns):
    """The virtual device's thread, until ``vctl[V_RUN]`` is 0: every ``period_ns`` it loops
    ``source`` (float32[frames, k], may be empty) into ``indata``, calls the compiled entry
    ``entry(indata, outdata, frames, NULL, flags, entry_arg)`` and appends ``outdata`` to the
    ring ``tap`` (may be empty). ``clocks``: (clock_gettime, clock_nanosleep, clock id),
    or clock_nanosleep 0 to run blocks back to back.

    It keeps time like a duplex interface with two periods of buffering: the block for
    period k is handed over when its input is complete (an absolute deadline, so lateness
    never accumulates as drift) and its output is due one period later. A wake-up a period
    or more late is an input overflow, a late output an output underflow: both are reported
    to the callback with the next block, as PortAudio does."""
    n = indata.shape[0]
    cols = min(indata.shape[1], source.shape[1])
    length = source.shape[0]
    size = tap.shape[0]
    clock_fn, sleep_fn, clock_id = clocks[0], clocks[1], clocks[2]
    paced = sleep_fn != 0
    pos = 0
    flags = 0
    deadline = clock_ns(clock_fn, clock_id) + period_ns
    while vctl[V_RUN] != 0:
        if paced:
            sleep_until_ns(sleep_fn, clock_id, deadline)  # EINTR returns early: checked below
            now = clock_ns(clock_fn, clock_id)
            if now < deadline:
                continue  # woken early by a signal: sleep again to the same deadline
            if now - deadline >= period_ns:
                flags |= PA_INPUT_OVERFLOW
                vctl[V_LATE_WAKES] += 1
                deadline = now  # resynchronise, as a device does after an overrun
        if length > 0:
            for i in range(n):
                for c in range(cols):
                    indata[i, c] = source[pos, c]
                pos += 1
                if pos == length:
                    pos = 0
        call_stream_callback(entry, indata.ctypes.data, outdata.ctypes.data, n, flags, entry_arg)
        flags = 0
        if paced and clock_ns(clock_fn, clock_id) > deadline + period_ns:
            flags |= PA_OUTPUT_UNDERFLOW
            vctl[V_LATE_BLOCKS] += 1
        if size > 0:
            start = vctl[V_TAPPED]
            for i in range(n):
                row = (start + i) % size
                for c in range(outdata.shape[1]):
                    tap[row, c] = outdata[i, c]
            fence()  # the rows are stored before the count that publishes them
            vctl[V_TAPPED] = start + n
        vctl[V_BLOCKS] += 1
        deadline += period_ns
