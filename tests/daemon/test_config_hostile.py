"""Hostile configs: what a half-written config at 2 a.m. (or a fuzzer) can put in a file gets
one clear line naming the file, the key and the reason, never a traceback."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from studiod.daemon.config import MAX_TOML_DEPTH, ConfigError, load_config
from tests.daemon.test_config import MINIMAL

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = (REPO / "examples" / "studio.toml").read_text()


def _load(tmp_path: Path, text: str, name: str = "studiod.toml"):
    path = tmp_path / name
    path.write_text(text)
    return load_config(path)


def _refused(tmp_path: Path, text: str, *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(str(tmp_path / "studiod.toml")), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# -- the five causes of tracebacks the issue found -------------------------------------------
def test_deeply_nested_values_are_refused(tmp_path):
    for depth in (MAX_TOML_DEPTH + 1, 200, 5000):
        text = MINIMAL + "[osc]\nallow = " + "[" * depth + "]" * depth + "\n"
        _refused(tmp_path, text, "nested too deeply")
    inline = MINIMAL + "[mdns]\nname = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n"
    _refused(tmp_path, inline, "nested too deeply")


@pytest.mark.parametrize(
    "value", ["nan", "inf", "-inf", "+nan", "1.5", "1e300", "9223372036854775807"]
)
def test_enum_and_toggle_params_take_no_nan_inf_or_fractions(tmp_path, value):
    for address in ("/monitor/system", "/monitor/dim/on"):
        _refused(tmp_path, MINIMAL + f'[params]\n"{address}" = {value}\n', "[params]", address)


@pytest.mark.parametrize(
    "state_dir, reason",
    [
        ("a\\u0000b", "NUL"),
        ("x" * 300, "longer than 255 bytes"),
        ("/" + "d/" * 2100, "longer than 4096 bytes"),
        ("studiod.toml/state", "is not a directory"),
    ],
)
def test_state_dirs_are_checked_before_use(tmp_path, state_dir, reason):
    _refused(tmp_path, MINIMAL + f'[state]\ndir = "{state_dir}"\n', "[state] dir", reason)


@pytest.mark.parametrize("raw, reason", [("m\\u0000", "NUL"), ("m" * 300, "longer than 255")])
def test_midi_profile_dir_is_checked(tmp_path, raw, reason):
    _refused(tmp_path, MINIMAL + f'[midi]\nprofile_dir = "{raw}"\n', "[midi] profile_dir", reason)


@pytest.mark.parametrize("inputs", ["0x7fffffff", "257", "0", "-1", "[1, 1000000]"])
def test_channel_inputs_are_bounded(tmp_path, inputs):
    text = MINIMAL.replace("inputs = 1", f"inputs = {inputs}")
    _refused(tmp_path, text, "channel[0].inputs")


def test_unknown_keys_everywhere_name_the_closest_key(tmp_path):
    typo_channel = MINIMAL.replace("inputs = 1", "inputs = 1\ninptus = 2")
    typo_system = MINIMAL.replace("outputs = [1, 2]", "outputs = [1, 2]\nmnoo = true")
    typo_audio = MINIMAL.replace('backend = "virtual"', 'backend = "virtual"\nblock_frame = 64')
    cases = [
        (typo_channel, "'inptus' (did you mean 'inputs'?)"),
        (typo_system, "did you mean 'mono'?"),
        (MINIMAL + "[session.monitor]\next_input = [3, 4]\n", "did you mean 'ext_inputs'?"),
        (MINIMAL + "[[session.fx]]\nname = 'r'\nkidn = 'reverb'\n", "did you mean 'kind'?"),
        (MINIMAL + "[[session.group]]\nname = 'g'\ncolour = 'red'\n", "'colour'"),
        (MINIMAL + "[audio2]\n", "unknown section(s) 'audio2' (did you mean 'audio'?)"),
        (typo_audio, "did you mean 'block_frames'?"),
        (MINIMAL + "[osc]\nprot = 9000\n", "did you mean 'port'?"),
        (MINIMAL + "[state]\nsave_delay = 1\n", "did you mean 'save_delay_s'?"),
        (MINIMAL + '[params]\n"/ch/1/fadr" = 0\n', "did you mean '/ch/1/fader'?"),
    ]  # fmt: skip
    for text, hint in cases:
        _refused(tmp_path, text, hint)


def test_names_must_be_strings(tmp_path):
    _refused(tmp_path, MINIMAL.replace('name = "a"', 'name = ["a"]'), "channel[0].name", "string")
    _refused(tmp_path, MINIMAL.replace('name = "studio"', "name = 7"), "system[0].name")
    _refused(tmp_path, MINIMAL.replace('name = "a"', 'name = "a\\u0007"'), "printable")


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("osc", "feedback_hz", "1e9"),
        ("osc", "burst", "100000000000"),
        ("osc", "max_subscribers", "0x7fffffff"),
        ("osc", "port", "70000"),
        ("osc", "meter_hz", "nan"),
        ("audio", "realtime_priority", "1000"),
        ("log", "stats_interval_s", "inf"),
        ("midi", "poll_s", "1e-9"),
    ],
)
def test_every_number_is_bounded(tmp_path, section, key, value):
    if section == "audio":  # MINIMAL has its [audio] table already
        text = MINIMAL.replace('backend = "virtual"', f'backend = "virtual"\n{key} = {value}')
    else:
        text = MINIMAL + f"[{section}]\n{key} = {value}\n"
    _refused(tmp_path, text, f"[{section}] {key}")


def test_run_check_reports_one_line_and_exit_status_2(tmp_path):
    """Through the entry a user types: ``studiod run --config FILE --check``."""
    path = tmp_path / "studiod.toml"
    path.write_text(MINIMAL.replace("inputs = 1", "inputs = 0x7fffffff"))
    done = subprocess.run(
        [sys.executable, "-m", "studiod.daemon.cli", "run", "--config", str(path), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "channel[0].inputs: channel numbers are 1…256" in done.stderr


# -- mutation fuzzing ---------------------------------------------------------------------------
HOSTILE_VALUES = [
    "nan", "+inf", "-inf", "0x7fffffff", "-9223372036854775808", "9223372036854775807", "1e308",
    "-0.0", "0", "-1", "true", '""', '"\\u0000"', '"' + "x" * 300 + '"', "[]", '["a"]', "[1, [2]]",
    "{}", "{ a = 1 }", "[" * 40 + "]" * 40, "1979-05-27T07:32:00Z", "'/'", '"*"', '"../../.."',
    '"/dev/null"', "[1, 2, 3, 4, 5, 6, 7, 8, 9]",
]  # fmt: skip
_ASSIGNMENT = re.compile(r"^(\s*)([\"\w./-]+)(\s*=\s*)(.*)$")


def _mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        match = _ASSIGNMENT.match(lines[i])
        action = rng.randrange(7)
        if action <= 2 and match:  # a hostile value
            lines[i] = match.group(1) + match.group(2) + match.group(3) + rng.choice(HOSTILE_VALUES)
        elif action == 3 and match:  # a typo in the key
            key = list(match.group(2))
            j = rng.randrange(len(key))
            key[j] = rng.choice("abcdefghijklmnopqrstuvwxyz_")
            lines[i] = match.group(1) + "".join(key) + match.group(3) + match.group(4)
        elif action == 4:
            del lines[i]
        elif action == 5:
            lines.insert(i, lines[rng.randrange(len(lines))])
        else:  # a character flipped anywhere
            line = lines[i]
            if line:
                j = rng.randrange(len(line))
                lines[i] = (
                    line[:j] + chr(rng.choice([0x22, 0x5B, 0x5D, 0x3D, 0x30, 0x2C])) + line[j + 1 :]
                )
    return "\n".join(lines) + "\n"


def test_a_thousand_mutated_configs_load_or_fail_in_one_line(tmp_path):
    rng = random.Random(12)
    base = EXAMPLE.replace("[state]\n", '[state]\ndir = "state"\n')
    outcomes = {"loaded": 0, "refused": 0}
    for k in range(1000):
        text = _mutate(base, rng)
        path = tmp_path / "studiod.toml"
        path.write_text(text)
        try:
            load_config(path)
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith(str(path)), (k, message)
            outcomes["refused"] += 1
        else:
            outcomes["loaded"] += 1
    # both sides are exercised: this is no test of a parser that refuses everything
    assert outcomes["loaded"] > 100 and outcomes["refused"] > 300, outcomes
