"""``studiod analyze`` on a float file with NaN/Inf samples: a clear error, never a silent
null; with ``--finite-only`` a measurement of the finite samples (checked against
pyloudnorm on the same samples) and the count of bad ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from studiod.daemon.cli import main
from tests.daemon.test_analyze import FS, programme, pyln_lufs


@pytest.fixture
def damaged(tmp_path):
    x = programme(6.0)
    bad = [(FS + 17, 0, np.nan), (2 * FS, 1, np.inf), (3 * FS + 5, 0, -np.inf)]
    for frame, channel, value in bad:
        x[frame, channel] = value
    path = tmp_path / "damaged.wav"
    sf.write(path, x, FS, subtype="FLOAT")
    return path, x, len(bad)


def test_analyze_refuses_nan_and_inf_samples_clearly(damaged, capsys):
    path, _, _ = damaged
    assert main(["analyze", "--json", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no JSON with nulls that could pass for silence
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{path}: sample {FS + 17} of channel 1 is nan" in err
    assert "--finite-only" in err


def test_finite_only_measures_the_rest_and_counts_the_bad_samples(damaged, capsys):
    path, x, n_bad = damaged
    assert main(["analyze", "--json", "--finite-only", str(path)]) == 0
    [r] = json.loads(capsys.readouterr().out)
    assert r["nonfinite_samples"] == n_bad
    clean = np.where(np.isfinite(x), x, 0.0)
    assert r["integrated_lufs"] == pytest.approx(pyln_lufs(clean), abs=0.1)
    assert r["sample_peak_dbfs"] == pytest.approx(20 * np.log10(np.max(np.abs(clean))), abs=1e-4)
    assert main(["analyze", "--finite-only", str(path)]) == 0
    assert f"{path}: {n_bad} NaN/infinite samples measured as silence" in capsys.readouterr().out


def test_master_refuses_the_same_file(damaged, tmp_path, capsys):
    path, _, _ = damaged
    assert main(["master", str(path), str(tmp_path / "out.wav"), "--target", "spotify"]) == 1
    assert "NaN or infinite" in capsys.readouterr().err
