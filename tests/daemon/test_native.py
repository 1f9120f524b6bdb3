"""The table that hands the audio callback's arrays to compiled code."""

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
