"""A fair witness for the soak: a JACK client in compiled code that burns a given CPU time
per cycle, as studiod's callback does, in its own process.

    python benchmarks/jack_witness.py NAME BURN_US

Its process callback (a numba cfunc: it never enters Python) spins until its thread has
used BURN_US of its own CPU time (CLOCK_THREAD_CPUTIME_ID), then writes silence to its
output port. It prints "ready TID" (its process thread's id, from that thread's first
cycle) once active, and runs until stdin closes. JACK then blames late cycles on it exactly
as on studiod: what is left over is the machine's share.
"""

from __future__ import annotations

import ctypes
import sys
import time

import numba
import numpy as np
from numba import carray, types

from studiod.daemon.audio import _JACK_AUDIO_TYPE, _JACK_NO_START_SERVER, _Jack
from studiod.daemon.native import call_get_buffer, call_int, clock_ns, libc_address

# the witness's table (int64)
W_CLOCK = 0  # clock_gettime
W_CPU_CLOCK = 1  # CLOCK_THREAD_CPUTIME_ID
W_BURN_NS = 2
W_GET_BUFFER = 3  # jack_port_get_buffer
W_PORT = 4  # its output port
W_GETTID = 5
W_TID = 6  # written by the first cycle
W_CYCLES = 7
W_SIZE = 8
_JACK_PORT_IS_OUTPUT = 0x2


def witness_process(nframes, arg):
    wt = carray(arg, (W_SIZE,), np.int64)
    start = clock_ns(wt[W_CLOCK], wt[W_CPU_CLOCK])
    if wt[W_TID] == 0:
        wt[W_TID] = call_int(wt[W_GETTID])
    while clock_ns(wt[W_CLOCK], wt[W_CPU_CLOCK]) - start < wt[W_BURN_NS]:
        pass
    out = carray(call_get_buffer(wt[W_GET_BUFFER], wt[W_PORT], nframes), (np.int64(nframes),),
                 np.float32)  # fmt: skip
    out[:] = 0.0
    wt[W_CYCLES] += 1
    return 0


def main() -> int:
    name, burn_us = sys.argv[1], float(sys.argv[2])
    jack = _Jack.get()
    lib = jack.lib
    status = ctypes.c_int(0)
    client = lib.jack_client_open(name.encode(), _JACK_NO_START_SERVER, ctypes.byref(status))
    if not client:
        print(f"no JACK server (status 0x{status.value:x})", file=sys.stderr)
        return 1
    port = lib.jack_port_register(client, b"out", _JACK_AUDIO_TYPE, _JACK_PORT_IS_OUTPUT, 0)
    table = np.zeros(W_SIZE, np.int64)
    table[W_CLOCK] = libc_address("clock_gettime")
    table[W_CPU_CLOCK] = time.CLOCK_THREAD_CPUTIME_ID
    table[W_BURN_NS] = round(burn_us * 1000)
    table[W_GET_BUFFER] = jack.get_buffer_address
    table[W_PORT] = port
    table[W_GETTID] = libc_address("gettid")
    process = numba.cfunc(types.int32(types.uint32, types.voidptr), nopython=True,
                          cache=True)(witness_process)  # fmt: skip
    lib.jack_set_process_callback(client, process.address, table.ctypes.data)
    if lib.jack_activate(client) != 0:
        print("jack_activate failed", file=sys.stderr)
        return 1
    while table[W_TID] == 0:
        time.sleep(0.01)
    print(f"ready {table[W_TID]}", flush=True)
    sys.stdin.read()
    lib.jack_deactivate(client)
    lib.jack_client_close(client)
    print(f"cycles {table[W_CYCLES]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
