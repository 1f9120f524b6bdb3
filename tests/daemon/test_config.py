"""Config files: the examples load; every error names the file, the key and the reason."""

from pathlib import Path

import pytest

from studiod.daemon.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
[audio]
backend = "virtual"
[session]
[[session.channel]]
name = "a"
inputs = 1
[[session.monitor.system]]
name = "studio"
outputs = [1, 2]
"""


def write(tmp_path: Path, text: str, name: str = "studiod.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["studio.toml", "jack.toml"])
def test_examples_load(name):
    config = load_config(REPO / "examples" / name)
    names = [m.name for m in config.session.systems]
    assert {"studio", "alt", "headphones", "car"} <= set(names)
    outputs = {m.name: m.outputs for m in config.session.systems}
    # the studio: monitors 1-2, alt 3-4, headphones 5-6, car simulation on 1-2
    assert outputs["studio"] == (1, 2) and outputs["alt"] == (3, 4)
    assert outputs["headphones"] == (5, 6) and outputs["car"] == (1, 2)
    car = next(m for m in config.session.systems if m.name == "car")
    assert car.simulation == "car"
    assert config.audio.block_frames == 64


def test_example_jack_uses_jack():
    assert load_config(REPO / "examples" / "jack.toml").audio.hostapi == "JACK"


def test_minimal_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + '[state]\ndir = "st"\n'))
    assert config.audio.samplerate == 48000 and config.audio.block_frames == 64
    assert config.session.samplerate == 48000
    # a relative state dir is relative to the config file
    assert config.state.dir == tmp_path / "st"
    assert config.osc == {} and config.params == ()


def test_pass_through_sections_are_read_only(tmp_path):
    text = MINIMAL + '[osc]\nport = 9000\nallow = ["127.0.0.1/32"]\n[midi]\n[mdns]\nname = "x"\n'
    config = load_config(write(tmp_path, text))
    assert config.osc["port"] == 9000 and config.osc["allow"] == ("127.0.0.1/32",)
    with pytest.raises(TypeError):
        config.osc["port"] = 1  # type: ignore[index]


def expect_error(tmp_path, text: str, *needles: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for needle in needles:
        assert needle in message, message
    return message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_syntax_error_names_line(tmp_path):
    expect_error(tmp_path, MINIMAL + "\n[audio\n", "TOML syntax error", "line 12")


def test_unknown_section(tmp_path):
    expect_error(tmp_path, MINIMAL + "[mixer]\n", "unknown section", "mixer")


def test_unknown_audio_key(tmp_path):
    expect_error(tmp_path, MINIMAL.replace('"virtual"', '"virtual"\nblocksize = 64'),
                 "[audio]", "blocksize")  # fmt: skip


@pytest.mark.parametrize(
    ("line", "needles"),
    [
        ("block_frames = 100", ("block_frames", "power of two", "100")),
        ("block_frames = 8", ("block_frames", "16 to 8192")),
        ("block_frames = 64.0", ("block_frames", "integer")),
        ("samplerate = 44000", ("samplerate", "44000")),
        ('backend = "pulse"', ("backend", "pulse")),
        ("device = 3", ("device", "string")),
        ("input_map = [1, -2]", ("input_map", "1-based")),
        ("realtime_priority = 120", ("realtime_priority", "0 to 99")),
        ("switch_interval_ms = nan", ("switch_interval_ms",)),
        ('latency = "fast"', ("latency",)),
        ('client_name = "a:b"', ("client_name",)),
    ],
)
def test_audio_errors(tmp_path, line, needles):
    text = MINIMAL.replace('backend = "virtual"', line if "backend" in line else
                           f'backend = "virtual"\n{line}')  # fmt: skip
    expect_error(tmp_path, text, "[audio]", *needles)


def test_map_shorter_than_session(tmp_path):
    text = MINIMAL.replace('"virtual"', '"virtual"\noutput_map = [1]')
    expect_error(tmp_path, text, "[audio] output_map", "2 engine outputs")


def test_session_missing(tmp_path):
    expect_error(tmp_path, '[audio]\nbackend = "virtual"\n', "[session] is missing")


def test_session_error_names_key(tmp_path):
    text = MINIMAL.replace('name = "studio"', 'name = "studio"\nsimulation = "bus"')
    expect_error(tmp_path, text, "[session]", "simulation", "'bus'")


def test_session_unknown_key(tmp_path):
    expect_error(tmp_path, MINIMAL + "[session.mixer]\n", "[session]", "unknown key", "mixer")


def test_session_samplerate_must_match(tmp_path):
    text = MINIMAL.replace("[session]", "[session]\nsamplerate = 96000")
    expect_error(tmp_path, text, "[session] samplerate", "96000", "48000")


def test_params_validated_against_the_registry(tmp_path):
    good = MINIMAL + '[params]\n"/ch/1/fader" = -6.0\n"/monitor/system" = "studio"\n'
    config = load_config(write(tmp_path, good))
    assert config.params == (("/ch/1/fader", -6.0), ("/monitor/system", "studio"))
    expect_error(tmp_path, MINIMAL + '[params]\n"/ch/9/fader" = 0.0\n', "[params]", "/ch/9/fader",
                 "unknown address")  # fmt: skip
    expect_error(tmp_path, MINIMAL + '[params]\n"/ch/1/fader" = 40.0\n', "/ch/1/fader",
                 "out of range")  # fmt: skip
    expect_error(tmp_path, MINIMAL + '[params]\n"/monitor/system" = "car"\n', "/monitor/system",
                 "'car'")  # fmt: skip
    expect_error(tmp_path, MINIMAL + "[params]\n[params.ch]\nx = 1\n", "[params]", "quote")


def test_state_and_log_errors(tmp_path):
    expect_error(tmp_path, MINIMAL + "[state]\nsave_delay_s = -1\n", "[state] save_delay_s")
    expect_error(tmp_path, MINIMAL + "[state]\nsave_delay_s = 5.0\nmax_delay_s = 1.0\n",
                 "[state] max_delay_s")  # fmt: skip
    expect_error(tmp_path, MINIMAL + '[log]\nlevel = "loud"\n', "[log] level", "'loud'")
    expect_error(tmp_path, MINIMAL + "[log]\ncolour = 1\n", "[log]", "colour")


def test_section_must_be_a_table(tmp_path):
    expect_error(tmp_path, "osc = 3\n" + MINIMAL, "[osc] must be a table")


def test_parse_config_without_file():
    import tomllib

    config = parse_config(tomllib.loads(MINIMAL))
    assert config.path is None and config.name == "<built-in>"
    with pytest.raises(ConfigError, match=r"^<config>: "):
        parse_config({"bogus": {}})
