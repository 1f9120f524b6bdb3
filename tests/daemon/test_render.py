"""``studiod render``: stems through the engine to a premaster that equals an independent
numpy mix, peak-normalised; the example session with a mastered file; errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from studiod.daemon.cli import main
from studiod.dsp.demo_session import synthesize
from tests.daemon.test_analyze import FS, programme, pyln_lufs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "session.toml"
TAIL_S = 0.5


def _stems(directory: Path, seconds: float = 4.0, samplerate: int = FS) -> dict[str, Path]:
    tracks = synthesize(seconds, samplerate)
    directory.mkdir(parents=True, exist_ok=True)
    stems = {
        "kick": tracks[:, 0],
        "snare": tracks[:, 1],
        "bass": tracks[:, 3],
        "pad": tracks[:, 4:6],
        "lead": tracks[:, 6][: len(tracks) // 2],  # a shorter stem: padded with silence
    }
    paths = {}
    for name, audio in stems.items():
        paths[name] = directory / f"{name}.wav"
        sf.write(paths[name], audio, samplerate, subtype="FLOAT")
    return paths


def _write_session(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


SIMPLE = """
samplerate = 48000

[[channel]]
name = "kick"
stem = "stems/kick.wav"

[[channel]]
name = "pad"
stem = "stems/pad.wav"

[[channel]]
name = "lead"
stem = "stems/lead.wav"

[mix]
"/ch/1/fader" = -6.0
"/ch/1/pan" = -1.0
"/ch/2/fader" = -3.0
"/ch/3/pan" = 0.5
"/ch/3/mute" = false

[render]
tail_s = 0.5
"""


def _reference_mix(stems: dict[str, Path]) -> np.ndarray:
    """The same mix in numpy, from the registry's documented laws: faders in dB, constant-power
    pan of mono channels (cos/sin of (pan + 1) pi / 4), stereo channels as they are."""
    kick, _ = sf.read(stems["kick"], dtype="float64")
    pad, _ = sf.read(stems["pad"], dtype="float64")
    lead, _ = sf.read(stems["lead"], dtype="float64")
    n = max(len(kick), len(pad), len(lead)) + int(TAIL_S * FS)
    mix = np.zeros((n, 2))

    def pan(pos: float) -> np.ndarray:
        theta = (pos + 1.0) * math.pi / 4.0
        return np.array([math.cos(theta), math.sin(theta)])

    mix[: len(kick)] += 10 ** (-6 / 20) * kick[:, None] * pan(-1.0)
    mix[: len(pad)] += 10 ** (-3 / 20) * pad
    mix[: len(lead)] += lead[:, None] * pan(0.5)
    return mix


def render(*args) -> int:
    return main(["render", *map(str, args)])


def test_premaster_equals_the_mix_peak_normalised(tmp_path, capsys):
    stems = _stems(tmp_path / "stems")
    session = _write_session(tmp_path / "s.toml", SIMPLE)
    out, report = tmp_path / "premaster.wav", tmp_path / "r.json"
    assert render(session, out, "--report", report) == 0, capsys.readouterr().err
    info = sf.info(out)
    assert (info.samplerate, info.subtype) == (FS, "PCM_24")
    y, _ = sf.read(out, dtype="float64")
    ref = _reference_mix(stems)
    assert y.shape == ref.shape
    # default premaster: sample peak at -6 dBFS
    assert 20 * np.log10(np.max(np.abs(y))) == pytest.approx(-6.0, abs=0.001)
    ref *= 10 ** (-6 / 20) / np.max(np.abs(ref))
    # float32 engine I/O and 24-bit TPDF dither: a few 24-bit LSB (1.2e-7)
    assert np.max(np.abs(y - ref)) < 2e-6
    r = json.loads(report.read_text())
    assert r["premaster"]["sample_peak_dbfs"] == pytest.approx(-6.0, abs=0.001)
    assert r["premaster"]["integrated_lufs"] == pytest.approx(pyln_lufs(y), abs=0.1)


def test_options_16_bit_and_no_normalisation(tmp_path, capsys):
    _stems(tmp_path / "stems")
    session = _write_session(tmp_path / "s.toml", SIMPLE)
    out = tmp_path / "p16.wav"
    assert render(session, out, "--bits", "16", "--peak", "-1") == 0, capsys.readouterr().err
    assert sf.info(out).subtype == "PCM_16"
    y, _ = sf.read(out, dtype="float64")
    assert 20 * np.log10(np.max(np.abs(y))) == pytest.approx(-1.0, abs=0.01)
    raw = tmp_path / "raw.wav"
    assert render(session, raw, "--no-normalize", "--bits", "32f") == 0
    z, _ = sf.read(raw, dtype="float64")
    ref = _reference_mix(_stems(tmp_path / "stems"))
    assert np.max(np.abs(z - ref)) < 1e-5 * max(1.0, np.max(np.abs(ref)))


def test_example_session_with_master(tmp_path, capsys):
    """examples/session.toml as shipped, with synthesised stems, premaster and a master."""
    shutil.copy(EXAMPLE, tmp_path / "session.toml")
    _stems(tmp_path / "stems", seconds=6.0)
    out = tmp_path / "mix.wav"
    code = render(tmp_path / "session.toml", out, "--master", "spotify", "--report",
                  tmp_path / "r.json")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    y, _ = sf.read(out, dtype="float64")
    assert 20 * np.log10(np.max(np.abs(y))) == pytest.approx(-6.0, abs=0.001)
    mastered = tmp_path / "mix-master.wav"
    z, fs = sf.read(mastered, dtype="float64")
    assert fs == FS
    assert pyln_lufs(z) == pytest.approx(-14.0, abs=0.5)
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["master"]["output"]["true_peak_dbtp"] <= -1.0
    assert r["master"]["output"]["path"] == str(mastered)


BAD_CASES = [
    ('[mix]\n"/ch/9/fader" = 0.0\n', "unknown address '/ch/9/fader'"),
    ('[mix]\n"/ch/1/fader" = 40.0\n', "/ch/1/fader: 40 dB is out of range"),
    ('[mix]\n"/ch/1/bus" = "drums"\n', "'drums' is not one of"),
    ('[render]\nbits = "8"\n', "bit depth '8' is not one of"),
    ('[render]\nmaster = "vinyl"\n', "unknown preset 'vinyl'"),
    ("[render]\nloudness = 3\n", "[render]: unknown key(s) ['loudness']"),
    ("[mixer]\n", "unknown key(s) ['mixer']"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_CASES)
def test_bad_sessions(extra, message, tmp_path, capsys):
    _stems(tmp_path / "stems", seconds=1.0)
    body = SIMPLE.replace("[mix]", "[mix_old]").replace("[render]", "[render_old]")
    body = body.split("[mix_old]")[0] + extra
    session = _write_session(tmp_path / "s.toml", body)
    out = tmp_path / "out.wav"
    out.write_bytes(b"keep me")
    assert render(session, out) == 1
    err = capsys.readouterr().err
    assert err.startswith("studiod render: error:") and message in err, err
    assert out.read_bytes() == b"keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_stem_errors(tmp_path, capsys):
    stems = _stems(tmp_path / "stems", seconds=1.0)
    session = _write_session(tmp_path / "s.toml", SIMPLE)
    out = tmp_path / "out.wav"
    # a stem at another sample rate
    sf.write(stems["pad"], programme(1.0, 44100), 44100)
    assert render(session, out) == 1
    err = capsys.readouterr().err
    assert "pad.wav: sample rate 44100 Hz does not match the session's samplerate 48000" in err
    # a missing stem
    stems["pad"].unlink()
    assert render(session, out) == 1
    assert "pad.wav: no such file" in capsys.readouterr().err
    # an unreadable one
    stems["pad"].write_bytes(b"not audio at all" * 100)
    assert render(session, out) == 1
    assert "unsupported or unreadable audio format" in capsys.readouterr().err
    assert not out.exists()
    # no session, broken TOML, no channels
    assert render(tmp_path / "none.toml", out) == 1
    assert "none.toml: no such session file" in capsys.readouterr().err
    assert render(_write_session(tmp_path / "b.toml", "[[channel]\n"), out) == 1
    assert "not valid TOML" in capsys.readouterr().err
    assert render(_write_session(tmp_path / "e.toml", "samplerate = 48000\n"), out) == 1
    assert "needs at least one [[channel]]" in capsys.readouterr().err
    assert not out.exists()


def test_mismatched_rates_without_session_rate(tmp_path, capsys):
    stems = _stems(tmp_path / "stems", seconds=1.0)
    sf.write(stems["lead"], programme(1.0, 96000)[:, 0], 96000)
    session = _write_session(tmp_path / "s.toml", SIMPLE.replace("samplerate = 48000", ""))
    assert render(session, tmp_path / "out.wav") == 1
    err = capsys.readouterr().err
    assert "lead.wav: sample rate 96000 Hz does not match" in err and "kick.wav" in err
