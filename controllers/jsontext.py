"""JSON text of studiod's readings: the one place that turns what JSON cannot hold into
what it can. A silent meter reads -inf LUFS and an undefined reading is NaN; JSON (RFC 8259)
has neither, so both become null. NumPy scalars become Python numbers. It lives beside the
controllers because the web server writes it and the daemon may import the controllers, not
the other way round."""

from __future__ import annotations

import json

import numpy as np

from studiod.dsp.loudness import finite_or_none


def jsonable(obj):
    """``obj`` with every non-finite float replaced by None, recursively through dicts,
    lists and tuples (tuples become lists); NumPy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return finite_or_none(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def dumps(obj, indent: int | None = 2) -> str:
    """JSON text of ``obj`` (see :func:`jsonable`); never NaN or Infinity, which JSON
    parsers refuse."""
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)
