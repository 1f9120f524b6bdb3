"""``studiod master`` block by block: the file read once per pass and the output written as
the final pass runs give the same samples and report as the whole-signal path; an input
that fails mid-file leaves no output behind. (Memory against length: benchmarks/
bench_master_memory.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from studiod.daemon.cmd_master import MasterOptions, master_audio, master_file
from studiod.daemon.offline import PRESETS, READ_BLOCK_FRAMES, OfflineError
from tests.daemon.test_analyze import FS, programme


@pytest.mark.parametrize("channels", [1, 2])
def test_block_by_block_equals_the_whole_signal_path(tmp_path, channels):
    # longer than several read blocks, with an odd length, so fades cross block edges
    x = programme(3 * READ_BLOCK_FRAMES / FS + 0.37)[:, :channels]
    src = tmp_path / "in.wav"
    sf.write(src, x, FS, subtype="FLOAT")
    opts = MasterOptions(
        preset=PRESETS["spotify"], bits="24", dither=False, fade_in_s=1.1, fade_out_s=1.9
    )
    out = tmp_path / "out.wav"
    report = master_file(src, out, opts)
    whole = master_audio(x, FS, opts)
    y, fs = sf.read(out, dtype="float32", always_2d=True)
    assert fs == FS and y.shape == whole.audio.shape == x.shape
    np.testing.assert_array_equal(y, whole.audio)
    assert report["passes"] == whole.report["passes"]
    assert report["output"] == whole.report["output"]


def test_a_bad_sample_mid_file_leaves_the_old_output(tmp_path):
    x = programme(2 * READ_BLOCK_FRAMES / FS + 1.0)
    x[READ_BLOCK_FRAMES + 10, 1] = np.nan  # in the second block: found while streaming
    src, out = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, FS, subtype="FLOAT")
    out.write_bytes(b"the previous master")
    with pytest.raises(OfflineError, match="NaN or infinite"):
        master_file(src, out, MasterOptions(preset=PRESETS["spotify"]))
    assert out.read_bytes() == b"the previous master"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.wav"]


def test_render_leaves_no_scratch_file_and_refuses_a_nan_stem(tmp_path, capsys):
    """``render`` mixes to a scratch file beside OUT (two passes, memory flat with length):
    gone after success and after a failure; a NaN in a stem is refused by name."""
    from studiod.daemon.cli import main
    from tests.daemon.test_render import SIMPLE, _stems, _write_session

    stems = _stems(tmp_path / "stems")
    session = _write_session(tmp_path / "s.toml", SIMPLE)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = ["render", str(session), str(out_dir / "pre.wav"), "--master", "spotify"]
    assert main(args) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out_dir.iterdir()) == ["pre-master.wav", "pre.wav"]
    kick, fs = sf.read(stems["kick"], dtype="float32")
    kick[len(kick) // 2] = np.nan
    sf.write(stems["kick"], kick, fs, subtype="FLOAT")
    (out_dir / "pre.wav").unlink()
    (out_dir / "pre-master.wav").unlink()
    assert main(args) == 1
    assert f"{stems['kick']}: contains NaN or infinite samples" in capsys.readouterr().err
    assert list(out_dir.iterdir()) == []
