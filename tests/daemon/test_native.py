"""The table that hands the audio callback's arrays to compiled code."""

import ctypes
import subprocess
import sys

import numpy as np
import pytest

from studiod.daemon import rtcore
from studiod.daemon._unpack import SHARED_FINGERPRINT, SHARED_WIDTH
from studiod.daemon.native import Layout, describe
from studiod.daemon.rtstate import make_shared


def test_generated_unpackers_are_current():
    """_unpack.py matches the structures it was generated from (a changed EngineState
    would otherwise be read with the old layout)."""
    result = subprocess.run([sys.executable, "-m", "studiod.daemon.native", "--check"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_pack_writes_addresses_and_shapes():
    shared = make_shared(48000, 64, 3)
    table = np.zeros(SHARED_WIDTH + 2, dtype=np.int64)
    Layout("shared", SHARED_FINGERPRINT, SHARED_WIDTH).pack(table, 1, shared)
    assert table[0] == 0 and table[-1] == 0  # nothing outside the region
    assert table[1] == shared.loop.ctypes.data
    assert list(table[2:4]) == list(shared.loop.shape)
    assert table[4] == shared.loop_ctl.ctypes.data and table[5] == 2


def test_pack_refuses_another_type_and_strided_arrays():
    layout = Layout("shared", SHARED_FINGERPRINT, SHARED_WIDTH)
    table = np.zeros(SHARED_WIDTH, dtype=np.int64)
    shared = make_shared(48000, 64, 3)
    with pytest.raises(TypeError, match="differs from the generated layout"):
        layout.pack(table, 0, shared._replace(loop=np.zeros((4, 2))))  # float64, not float32
    strided = np.zeros((4, 4), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        layout.pack(table, 0, shared._replace(loop=strided))
    assert describe(shared).startswith("studiod.daemon.rtstate.Shared(float32[2], int64[1]")


def test_table_regions_do_not_overlap():
    regions = [rtcore.HEADER, rtcore.METERS, rtcore.SLOTS, rtcore.SHAREDS, rtcore.PLAYERS,
               rtcore.TAPS, rtcore.TABLE_SIZE]  # fmt: skip
    assert regions == sorted(regions) and regions[0] >= rtcore.H_MAX_FRAMES + 1


def _core(n_in: int):
    from studiod.daemon.audio import AudioCore
    from studiod.daemon.config import AudioConfig
    from studiod.dsp.engine import Engine
    from studiod.dsp.session import ChannelSpec, MonitorSystemSpec, Session

    session = Session(samplerate=48000, channels=(ChannelSpec("tone", (1,)),),
                      systems=(MonitorSystemSpec("studio", (1, 2)),))  # fmt: skip
    return AudioCore(Engine(session), AudioConfig(block_frames=64), n_in, 2)


def test_portaudio_callback_abi():
    """pa_process called as PortAudio calls it (portaudio.h PaStreamCallback, interleaved
    float32): the same output as core_block called directly, xruns counted from the
    under/overflow flags only, and an output-only stream's NULL input."""
    pa_callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                                   ctypes.c_void_p)  # fmt: skip
    native, direct = _core(1), _core(1)
    call = pa_callback(native.entry_address)
    frames = 64
    t = np.arange(4 * frames) / 48000
    tone = (0.25 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[:, None]
    got = np.zeros((len(tone), 2), np.float32)
    want = np.zeros_like(got)
    # no flag, paOutputUnderflow, paPrimingOutput, paInputOverflow | paPrimingOutput
    flags = [0x0, 0x4, 0x10, 0x12]
    for k, flag in enumerate(flags):
        block = slice(k * frames, (k + 1) * frames)
        indata = np.ascontiguousarray(tone[block])
        outdata = np.zeros((frames, 2), np.float32)
        assert call(indata.ctypes.data, outdata.ctypes.data, frames, None, flag,
                    native.entry_table.ctypes.data) == 0  # fmt: skip
        got[block] = outdata
        rtcore.core_block(direct.table, indata, want[block], frames, False)
    assert np.abs(want).max() > 0.1
    np.testing.assert_array_equal(got, want)
    assert native.callbacks == 4 and native.xruns == 2

    output_only = _core(0)
    outdata = np.ones((frames, 2), np.float32)
    assert call(None, outdata.ctypes.data, frames, None, 0,
                output_only.entry_table.ctypes.data) == 0  # fmt: skip
    assert output_only.callbacks == 1 and not outdata.any()  # the engine's silence


def test_python_entry_checks_the_arrays_it_hands_over():
    core = _core(1)
    frames = 64
    outdata = np.zeros((frames, 2), np.float32)
    core.callback(np.zeros((frames, 1), np.float32), outdata, frames, None, "underflow")
    assert core.callbacks == 1 and core.xruns == 1
    for bad_in, bad_out in [
        (np.zeros((frames, 1), np.float64), outdata),  # another dtype
        (np.zeros((frames, 2), np.float32), outdata),  # another channel count
        (np.zeros((frames, 1), np.float32), np.zeros((2, frames), np.float32).T),  # strided
        (np.zeros((frames // 2, 1), np.float32), outdata),  # fewer frames
    ]:
        with pytest.raises(ValueError, match="C-contiguous float32"):
            core.callback(bad_in, bad_out, frames, None, None)
    assert core.callbacks == 1


def test_jack_notifications_are_compiled_and_keep_what_jack_said():
    """JACK's xrun and shutdown notifications run without Python (a ctypes callback there
    waited for the GIL while jackd waited for it: the daemon's stop deadlocked); what they
    record reaches the device and the next block."""
    from studiod.daemon.audio import JackDevice
    from studiod.daemon.config import AudioConfig

    core = _core(1)
    device = JackDevice(AudioConfig(backend="jack"), core)
    notes = device._notes
    notes[rtcore.JN_CTL] = core.ctl.ctypes.data
    xrun = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(
        rtcore.c_callback_address(rtcore.jack_xrun))  # fmt: skip
    shutdown = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(
        rtcore.c_callback_address(rtcore.jack_shutdown))  # fmt: skip
    assert xrun(notes.ctypes.data) == 0 and xrun(notes.ctypes.data) == 0
    assert device.xruns == 2 and device.error is None
    frames = 64
    core.callback(np.zeros((frames, 1), np.float32), np.zeros((frames, 2), np.float32), frames,
                  None, None)  # fmt: skip
    assert core.xruns == 1  # both reported before this block: one xrun counted with it
    shutdown(0x21, b"JACK server has been closed", notes.ctypes.data)
    assert device.error == "JACK server gone: JACK server has been closed"
    assert not device.active
    shutdown(0x21, b"x" * 1000, notes.ctypes.data)  # a reason longer than the buffer is cut
    assert device.error == "JACK server gone: " + "x" * (rtcore.JN_REASON_BYTES - 1)
