"""Property-based test (Hypothesis) of the config loader: any TOML document built from the
config's own vocabulary and hostile values either loads or is refused with one ConfigError
line naming the file; nothing else escapes."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studiod.daemon.config import ConfigError, load_config, parse_config
from tests.daemon.test_config import MINIMAL

REPO = Path(__file__).resolve().parents[2]
BASE = tomllib.loads((REPO / "examples" / "studio.toml").read_text())
KEYS = sorted(
    {k for section in BASE.values() for k in section}
    | {"inputs", "outputs", "name", "kind", "simulation", "mono", "additive", "ext_inputs"}
    | {"channel", "group", "fx", "monitor", "system", "dir", "tcp_port", "input_map"}
)
SECTIONS = sorted(BASE)

scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, 2, 7, 64, 256, 257, 48000, 2**31 - 1]),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 0.5]),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(["studio", "reverb", "car", "/ch/1/fader", "\0", "x" * 300, "info"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    ),
    max_leaves=20,
)
tables = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([*SECTIONS, "mixer"]), tables, max_size=5))
def test_any_document_loads_or_is_refused_in_one_line(tmp_path_factory, doc):
    _check(doc, tmp_path_factory.mktemp("cfg"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SECTIONS), st.sampled_from(KEYS), values)
def test_one_hostile_value_in_a_good_config(tmp_path_factory, section, key, value):
    """The example config with one key of one section replaced (or added)."""
    doc = {name: dict(table) for name, table in BASE.items()}
    doc["state"] = {"dir": "state"}
    doc[section][key] = value
    _check(doc, tmp_path_factory.mktemp("cfg"))


def _check(doc: dict, folder: Path) -> None:
    path = folder / "studiod.toml"
    try:
        parse_config(doc, path)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(str(path)), message


def test_minimal_still_loads(tmp_path):
    """(The properties above are not vacuous: the base documents load.)"""
    (tmp_path / "studiod.toml").write_text(MINIMAL)
    load_config(tmp_path / "studiod.toml")
    parse_config({**BASE, "state": {"dir": "state"}}, tmp_path / "studiod.toml")
