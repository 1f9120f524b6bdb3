"""The arrays the audio callback works on, and the numbers that index them.

Everything here is made by the control side and read (or written) by the compiled callback
in :mod:`studiod.daemon.rtcore`, which finds these arrays through a table of addresses
(:mod:`studiod.daemon.native`). Records are named tuples of C-contiguous arrays.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

SOURCE_RING_S = 1.0  # monitor-source ring length

# meter indices
METER_MASTER = 0
METER_MONITOR = 1
# Shared.meter_ctl slots
METER_RESET_MASTER = 0
METER_RESET_MONITOR = 1
METER_INTERVAL_REQ = 2
METER_INTERVAL_DONE = 3
# Shared.src_ctl slots
SRC_ACTIVE = 0
SRC_WRITTEN = 1
SRC_READ = 2
SRC_UNDERRUNS = 3

IoState = namedtuple(
    "IoState",
    [
        "in_map",  # int64[n_eng_in]: device input column of each engine input (-1: silence)
        "out_map",  # int64[n_eng_out]: device output column of each engine output (-1: none)
        "ext",  # int64[2]: engine input columns of the external monitor pair (-1: none)
        "eng_in",  # float32[max_frames, n_eng_in]
        "eng_out",  # float32[max_frames, n_eng_out]
        "master",  # float64[N, 2]: the engine's master bus after a block (metered)
    ],
)

Shared = namedtuple(
    "Shared",
    [
        "loop",  # float32[L, k]: a programme played into engine inputs 1…k (the demo)
        "loop_ctl",  # int64[2]: on, position
        "src",  # float32[R, 2]: monitor-source ring (SPSC: control thread writes)
        "src_ctl",  # int64[4]: active, frames written, frames read, underrun frames
        "fade",  # int64[2]: crossfade position, length (frames)
        "xfade",  # float32[max_frames, dev_out]: the old engine's mapped output
        "mon_cols",  # int64[2]: engine output columns of the metered monitor system
        "mon_buf",  # float64[max_frames, 2]
        "meter_ctl",  # int64[4]: reset master, reset monitor, interval requested, done
        "tp_last",  # float64[2, 2]: true peak per meter and lane, last interval
        "sp_last",  # float64[2, 2]: sample peak, last interval
        "tp_max",  # float64[2, 2]: true peak since the meter's reset
    ],
)

# One engine as the callback runs it: Engine.arrays() and the engine's I/O state.
SlotRecord = namedtuple(
    "SlotRecord", ["state", "lp_head", "lp_spectra", "lp_ctl", "q_idx", "q_val", "q_ctl", "io"]
)


def make_io(engine, input_map, output_map, max_frames: int) -> IoState:
    """The I/O state of one engine: 1-based device channels per engine input and output
    (empty: in order), and buffers of ``max_frames``."""
    session = engine.session
    n_in, n_out = session.n_inputs, session.n_outputs
    in_map = np.array([m - 1 for m in input_map[:n_in]] if input_map else range(n_in), np.int64)
    out_map = np.array(
        [m - 1 for m in output_map[:n_out]] if output_map else range(n_out), np.int64
    )
    ext = np.array([i - 1 for i in session.ext_inputs] or [-1, -1], dtype=np.int64)
    return IoState(
        in_map=in_map,
        out_map=out_map,
        ext=ext,
        eng_in=np.zeros((max_frames, n_in), np.float32),
        eng_out=np.zeros((max_frames, n_out), np.float32),
        master=engine.state.mst_buf,
    )


def make_slot(engine, input_map, output_map, max_frames: int) -> SlotRecord:
    return SlotRecord(*engine.arrays(), make_io(engine, input_map, output_map, max_frames))


def make_shared(samplerate: int, max_frames: int, dev_out: int) -> Shared:
    return Shared(
        loop=np.zeros((1, 1), np.float32),
        loop_ctl=np.zeros(2, dtype=np.int64),
        src=np.zeros((int(SOURCE_RING_S * samplerate), 2), np.float32),
        src_ctl=np.zeros(4, dtype=np.int64),
        fade=np.zeros(2, dtype=np.int64),
        xfade=np.zeros((max_frames, dev_out), np.float32),
        mon_cols=np.full(2, -1, dtype=np.int64),
        mon_buf=np.zeros((max_frames, 2)),
        meter_ctl=np.zeros(4, dtype=np.int64),
        tp_last=np.zeros((2, 2)),
        sp_last=np.zeros((2, 2)),
        tp_max=np.zeros((2, 2)),
    )
