"""The loudness log: hop taps, per-second rows, segments, retention, dose, CSV and PNG.

References: ``dsp.loudness.measure`` of the same audio (segment loudness), the IEC 61672-1
closed-form A-weighting and a numerical integral of it over pink noise (listening level),
the NIOSH closed form T = 8 h / 2^((L - 85) / 3) (dose), Python's csv module and the PNG
file signature (exports).
"""

from __future__ import annotations

import csv
import math
import struct
import time

import numpy as np
import pytest
from scipy.integrate import quad

from studiod.daemon import cli, logdb
from studiod.daemon.logdb import LogConfig
from studiod.daemon.loudlog import LoudnessLog
from studiod.dsp import loudtap
from studiod.dsp.loudness import measure
from studiod.dsp.loudtap import BusSpec, tap_process
from studiod.dsp.targets import TARGETS

FS = 48000
T0 = float(int(time.time()) - 7200)  # the tests' clock: recent (retention keeps 31 days)


def _iec_aweighting_db(f):
    """IEC 61672-1:2013 eq. (E.6), with A1000 = -2.000 dB."""
    f = np.asarray(f, dtype=float)
    f1, f2, f3, f4 = 20.598997, 107.65265, 737.86223, 12194.217
    ra = f4**2 * f**4 / ((f**2 + f1**2) * np.sqrt((f**2 + f2**2) * (f**2 + f3**2)) * (f**2 + f4**2))
    return 20.0 * np.log10(ra) + 2.0


def _programme(rng, seconds, level_db):
    """Noise with a slow level swing (so LRA is not zero), stereo float32."""
    n = int(seconds * FS)
    env = 10 ** ((level_db + 4.0 * np.sin(2 * np.pi * np.arange(n) / (7.3 * FS))) / 20)
    x = rng.standard_normal((n, 2)) * env[:, None]
    x[:, 1] = 0.6 * x[:, 0] + 0.8 * x[:, 1]
    return x.astype(np.float32)


def _feed(log, audio, block, start_now=T0, outputs=None):
    """Play ``audio`` through the taps as the audio thread would, calling update() once a
    second of audio (fake clock). Returns the clock at the end."""
    mst = np.zeros((8192, 2))
    outputs = audio if outputs is None else outputs
    now = start_now
    next_update = FS
    for i in range(0, len(audio), block):
        n = min(block, len(audio) - i)
        mst[:n] = audio[i : i + n]
        tap_process(mst, outputs[i : i + n], n, log.tap)
        if i + n >= next_update:
            now += 1.0
            next_update += FS
            log.update(system="studio", now=now)
    return now


def test_aweighting_against_iec61672():
    f = np.array([31.5, 63, 125, 250, 500, 1000, 2000, 4000, 8000, 10000, 12500, 16000])
    for fs in (44100, 48000, 96000):
        err = loudtap.aweighting_gain_db(f, fs) - _iec_aweighting_db(f)
        assert np.all(np.abs(err[f <= 10000]) < 0.1), err
        assert np.all(np.abs(err) < 0.6), err
        # IEC 61672-1:2013 Table 3, class 1 limits at 8, 10, 12.5, 16 kHz
        lower = np.array([-2.5, -3.0, -5.0, -16.0])
        upper = np.array([1.5, 2.0, 2.0, 2.5])
        assert np.all(err[-4:] > lower) and np.all(err[-4:] < upper), err


def test_calibration_noise_level_against_closed_form():
    # A-weighted mean square of pink noise (20 Hz..20 kHz, mean square 0.01), from the analog
    # curve: 0.01 * mean over ln f of |A|^2
    integral, _ = quad(
        lambda u: 10 ** (_iec_aweighting_db(math.exp(u)) / 10),
        math.log(20.0),
        math.log(20000.0),
        limit=200,
    )
    analog = 0.01 * integral / math.log(1000.0)
    digital = loudtap.calibration_mean_square(FS)
    assert abs(10 * math.log10(digital / analog)) < 0.05


def test_dose_closed_form():
    # NIOSH 1998: 85 dBA 8 h, 88 dBA 4 h, 94 dBA 1 h, 100 dBA 15 min are each 100 %
    for level, seconds in ((85, 8 * 3600), (88, 4 * 3600), (94, 3600), (100, 900)):
        assert loudtap.dose_percent(level, seconds) == pytest.approx(100.0, rel=1e-12)
    levels = np.array([80.0, 91.0, -np.inf, 70.0])
    t = np.array([3600.0, 1800.0, 600.0, 7200.0])

    def closed_form(pairs):
        return 100.0 * sum(ti / (28800 / 2 ** ((li - 85) / 3)) for li, ti in pairs)

    every = closed_form([(80.0, 3600.0), (91.0, 1800.0), (70.0, 7200.0)])
    assert loudtap.dose_percent(levels, t) == pytest.approx(every, rel=1e-12)
    # an 80 dBA dosimeter threshold drops the 70 dBA part only
    above = closed_form([(80.0, 3600.0), (91.0, 1800.0)])
    assert loudtap.dose_percent(levels, t, threshold_dba=80.0) == pytest.approx(above, rel=1e-12)


def test_tap_records_do_not_depend_on_block_size(tmp_path):
    rng = np.random.default_rng(3)
    audio = _programme(rng, 4.0, -20.0)
    buses = [BusSpec("master", "master", (1, 2), segments=True),
             BusSpec("mono", "outputs", (2,), spl_at_minus20dbfs=80.0)]  # fmt: skip
    records = []
    for blocks in ([64], [4800], [1, 333, 4799, 64, 8192, 17]):
        log = LoudnessLog(tmp_path / f"b{len(records)}.sqlite3", FS, buses, now=T0)
        mst = np.zeros((8192, 2))
        i = k = 0
        while i < len(audio):
            n = min(blocks[k % len(blocks)], len(audio) - i)
            mst[:n] = audio[i : i + n]
            tap_process(mst, audio[i : i + n], n, log.tap)
            i += n
            k += 1
        assert log.tap.head.tolist() == [40, 40]
        records.append(log.tap.hops[:, :40].copy())
        log.close(now=T0 + 5)
    for other in records[1:]:
        np.testing.assert_allclose(other, records[0], rtol=1e-9, atol=1e-12)
    # the mono bus reads column 2 alone: BS.1770 of that one channel
    mono = measure(audio[:, 1], FS)
    assert records[0][1, 39, loudtap.HOP_S] == pytest.approx(mono["shortterm_lufs"], abs=1e-9)


def test_rows_segments_and_compliance(tmp_path):
    rng = np.random.default_rng(7)
    silence = np.zeros((5 * FS, 2), np.float32)
    # programme 1 at about -14 LUFS (spotify target), 2 at about -30 LUFS, 4 s gaps
    p1 = _programme(rng, 16.0, -14.0)
    p2 = _programme(rng, 12.0, -29.0)
    audio = np.concatenate([silence[: 3 * FS], p1, silence[: 4 * FS], p2, silence])
    edges = [(3.0, 19.0), (23.0, 35.0)]
    db = tmp_path / "loudness.sqlite3"
    log = LoudnessLog(db, FS, [BusSpec("master", "master", (1, 2), segments=True),
                               BusSpec("studio", "outputs", (1, 2))], LogConfig())  # fmt: skip
    seconds = len(audio) // FS
    end = _feed(log, audio, 960)
    log.close(now=end + 1)

    rows = logdb.query_readings(db, 0, 2e9)
    for bus in ("master", "studio"):
        mine = [r for r in rows if r["bus"] == bus]
        # one row per bus per second of audio (the last hop is read at close)
        assert len(mine) in (seconds, seconds + 1)
        assert all(r["system"] == "studio" for r in mine)
        assert np.all(np.diff([r["t"] for r in mine]) > 0)
    loud = [r for r in rows if r["bus"] == "master" and T0 + 6 <= r["t"] <= T0 + 18]
    assert all(r["integrated_lufs"] is not None and r["segment_id"] is not None for r in loud)
    quiet = [r for r in rows if r["bus"] == "master" and T0 + 41 <= r["t"] <= T0 + seconds]
    assert all(r["momentary_lufs"] is None and r["segment_id"] is None for r in quiet)

    segs = logdb.query_segments(db, 0, 2e9)
    assert [s["bus"] for s in segs] == ["master", "master"]
    assert len(log.recent_segments) == 2
    target = TARGETS["spotify"]
    for seg, row, (start_s, end_s) in zip(log.recent_segments, segs, edges, strict=True):
        # boundaries: the start of the first loud 400 ms block (up to 0.4 s before the
        # programme) and the end of the last loud one (filter ringing: up to 0.5 s after)
        assert -0.4 - 1e-9 <= seg.first_hop * 0.1 - start_s <= 0.0
        assert 0.0 <= seg.end_hop * 0.1 - end_s <= 0.5
        ref = measure(audio[seg.first_hop * 4800 : seg.end_hop * 4800], FS)
        assert row["integrated_lufs"] == pytest.approx(ref["integrated_lufs"], abs=0.005)
        assert row["loudness_range_lu"] == pytest.approx(ref["loudness_range_lu"], abs=0.02)
        assert row["true_peak_dbtp"] == pytest.approx(ref["true_peak_dbtp"], abs=0.01)
        assert row["duration_s"] == pytest.approx((seg.end_hop - seg.first_hop) * 0.1)
        assert row["start_t"] == pytest.approx(T0 + seg.first_hop * 0.1, abs=1e-6)
        assert row["status"] == "closed" and row["systems"] == "studio"
        dev = ref["integrated_lufs"] - target.integrated_lufs
        assert row["deviation_lu"] == pytest.approx(dev, abs=0.005)
        ok = abs(dev) <= target.tolerance_lu and ref["true_peak_dbtp"] <= target.ceiling_dbtp
        assert row["compliant"] == int(ok)
    assert segs[1]["compliant"] == 0  # -29 LUFS is far from -14


def test_listening_level_and_dose(tmp_path):
    # a 1 kHz sine (A-weighting: 0 dB) on both channels of a calibrated output
    cal_spl = 83.0
    amplitude = 0.25
    seconds = 30
    t = np.arange(seconds * FS) / FS
    sine = (amplitude * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    audio = np.column_stack([sine, sine])
    db = tmp_path / "loudness.sqlite3"
    log = LoudnessLog(db, FS, [BusSpec("studio", "outputs", (1, 2), spl_at_minus20dbfs=cal_spl)])
    end = _feed(log, audio, 1024)
    log.close(now=end + 1)
    # independent expectation: both channels' power over the pink-noise calibration (analog)
    integral, _ = quad(lambda u: 10 ** (_iec_aweighting_db(math.exp(u)) / 10),
                       math.log(20.0), math.log(20000.0), limit=200)  # fmt: skip
    cal_ms = 0.01 * integral / math.log(1000.0)
    level = cal_spl + 10 * math.log10(2 * amplitude**2 / 2 / cal_ms)
    rows = logdb.query_readings(db, 0, 2e9)
    steady = [r["laeq_dba"] for r in rows[2:]]
    assert np.allclose(steady, level, atol=0.1)
    metered_s = 0.1 * (int(log.tap.head[0]) - 1)  # the reader stays one hop behind
    expected = 100.0 * metered_s / (8 * 3600 / 2 ** ((level - 85.0) / 3.0))
    assert rows[-1]["dose_percent"] == pytest.approx(expected, rel=0.025)
    dose = logdb.query_dose(db, 0, 2e9)
    assert len(dose) == 1 and dose[0]["seconds"] == pytest.approx(metered_s)
    assert dose[0]["dose_percent"] == pytest.approx(rows[-1]["dose_percent"])
    # the dose of the day continues after a restart
    log2 = LoudnessLog(db, FS, [BusSpec("studio", "outputs", (1, 2), spl_at_minus20dbfs=cal_spl)],
                       now=end + 2)  # fmt: skip
    end2 = _feed(log2, audio[: 5 * FS], 1024, start_now=end + 2)
    log2.close(now=end2 + 1)
    after = logdb.query_dose(db, 0, 2e9)[0]
    assert after["seconds"] == pytest.approx(metered_s + 4.9)  # again one hop behind
    assert after["dose_percent"] > dose[0]["dose_percent"]


def test_retention_by_rows_and_age(tmp_path):
    db = tmp_path / "loudness.sqlite3"
    audio = _programme(np.random.default_rng(1), 12.0, -20.0)
    cfg = LogConfig(max_rows=5, prune_interval_s=1e9)
    log = LoudnessLog(db, FS, [BusSpec("master", "master", (1, 2))], cfg)
    _feed(log, audio, 4800)
    assert log.flush()
    rows = logdb.query_readings(db, 0, 2e9)
    assert [r["t"] for r in rows] == pytest.approx([T0 + s for s in range(8, 13)])
    log.close(now=T0 + 13)
    # age: with a retention of one day, rows of three days ago go, today's stay
    cfg = LogConfig(retention_days=1.0, prune_interval_s=1e9)
    log = LoudnessLog(db, FS, [BusSpec("master", "master", (1, 2))], cfg)
    _feed(log, audio[: 3 * FS], 4800, start_now=T0 - 3 * 86400)
    assert log.flush()
    assert len(logdb.query_readings(db, 0, 2e9)) == 5
    log.close(now=T0 - 3 * 86400 + 4)
    log = LoudnessLog(db, FS, [BusSpec("master", "master", (1, 2))], cfg)
    log.close()  # close() flushes, and every flush applies retention
    assert [r["t"] for r in logdb.query_readings(db, 0, 2e9)] == pytest.approx(
        [T0 + s for s in range(8, 13)]
    )


def test_hard_stop_marks_open_segment_interrupted(tmp_path):
    db = tmp_path / "loudness.sqlite3"
    audio = _programme(np.random.default_rng(2), 8.0, -18.0)
    log = LoudnessLog(db, FS, [BusSpec("master", "master", (1, 2), segments=True)])
    _feed(log, audio, 4800)
    assert log.flush()
    assert [s["status"] for s in logdb.query_segments(db, 0, 2e9)] == ["open"]
    # a SIGKILL leaves the row open; the next start marks it
    log2 = LoudnessLog(db, FS, [BusSpec("master", "master", (1, 2), segments=True)])
    assert log2.interrupted_segments == 1
    assert [s["status"] for s in logdb.query_segments(db, 0, 2e9)] == ["interrupted"]
    log2.close()
    log.close()


def test_stalled_reader_counts_lost_hops(tmp_path):
    cfg = LogConfig(ring_hops=20)
    log = LoudnessLog(tmp_path / "l.sqlite3", FS, [BusSpec("master", "master", (1, 2))], cfg)
    audio = _programme(np.random.default_rng(4), 5.0, -20.0)
    mst = np.zeros((8192, 2))
    for i in range(0, len(audio), 4800):
        mst[:4800] = audio[i : i + 4800]
        tap_process(mst, audio[i : i + 4800], 4800, log.tap)
    log.update(now=T0)
    assert log.lost_hops == 50 - 1 - 18
    log.close(now=T0 + 1)


def test_csv_and_png_through_the_command(tmp_path, capsys):
    db = tmp_path / "state" / logdb.LOG_FILENAME
    spec = [BusSpec("master", "master", (1, 2), segments=True),
            BusSpec("studio", "outputs", (1, 2), spl_at_minus20dbfs=85.0)]  # fmt: skip
    rng = np.random.default_rng(5)
    audio = np.concatenate([_programme(rng, 10.0, -16.0), np.zeros((5 * FS, 2), np.float32)])
    log = LoudnessLog(db, FS, spec, LogConfig(min_segment_s=2.0))
    end = _feed(log, audio, 2400)
    log.close(now=end + 1)
    rows = logdb.query_readings(db, 0, 2e9)
    out_csv = tmp_path / "rows.csv"
    png = tmp_path / "plot.png"
    args = ["log", "--state-dir", str(db.parent), "--from", str(int(T0 - 10)),
            "--to", str(int(end + 10)), "--csv", str(out_csv), "--plot", str(png)]  # fmt: skip
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "master" in text and "studio" in text
    with open(out_csv, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows)
    assert {"t", "t_iso", "bus", "momentary_lufs", "dose_percent"} <= set(table[0])
    for got, want in zip(table, rows, strict=True):
        assert float(got["t"]) == pytest.approx(want["t"])
        assert got["bus"] == want["bus"]
        if want["shortterm_lufs"] is None:
            assert got["shortterm_lufs"] == ""
        else:
            assert float(got["shortterm_lufs"]) == pytest.approx(want["shortterm_lufs"])
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    assert width >= 800 and height >= 600
    # segments as CSV, on stdout
    assert cli.main(["log", "--db", str(db), "--from", str(int(T0 - 10)), "--to",
                     str(int(end + 10)), "--segments", "--csv", "-"]) == 0  # fmt: skip
    segs = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(segs) == 1 and segs[0]["bus"] == "master" and segs[0]["status"] == "closed"
    # errors: no database, bad time
    assert cli.main(["log", "--db", str(tmp_path / "none.sqlite3")]) == 1
    assert cli.main(["log", "--db", str(db), "--from", "yesterday-ish"]) == 2


def test_parse_time():
    from studiod.daemon.cmd_log import parse_time

    now = 1_700_000_000.0
    assert parse_time("now", now) == now
    assert parse_time("-2h", now) == now - 7200
    assert parse_time("-30m", now) == now - 1800
    assert parse_time("1700000123", now) == 1700000123.0
    import datetime as dt

    assert parse_time("2024-05-01T14:30", now) == dt.datetime(2024, 5, 1, 14, 30).timestamp()
    with pytest.raises(ValueError):
        parse_time("soon", now)


def test_bad_configuration_is_refused(tmp_path):
    with pytest.raises(ValueError, match="spl_at_minus20dbfs"):
        BusSpec("studio", spl_at_minus20dbfs=float("nan"))
    with pytest.raises(ValueError, match="columns"):
        BusSpec("studio", columns=(0, 1))
    with pytest.raises(ValueError, match="source"):
        BusSpec("studio", source="aux")
    with pytest.raises(ValueError, match="stop_lufs"):
        LogConfig(start_lufs=-60.0, stop_lufs=-50.0)
    with pytest.raises(ValueError, match="unknown target"):
        LogConfig(target="vinyl")
    with pytest.raises(ValueError, match="unique"):
        loudtap.make_tap_state(FS, [BusSpec("a"), BusSpec("a")])


def test_tap_state_copies_field_by_field(tmp_path):
    # the runtime compiles its callback on a field-by-field copy of the tap (a probe)
    log = LoudnessLog(tmp_path / "l.sqlite3", FS, [BusSpec("master", "master", (1, 2))])
    probe = log.tap._replace(**{f: getattr(log.tap, f).copy() for f in log.tap._fields})
    block = np.full((64, 2), 0.1)
    tap_process(block, block.astype(np.float32), 64, probe)
    assert int(log.tap.head[0]) == 0 and log.tap.counters[0, 1] == 0
    assert probe.counters[0, 0] + probe.counters[0, 1] * probe.config[0, 0] == 64
    log.close()


def test_correlation_per_second_against_numpy(tmp_path):
    """The logged correlation of each second is numpy's Pearson coefficient of the raw
    samples (zero-mean signals: sum(LR) / sqrt(sum(LL) sum(RR)))."""
    rng = np.random.default_rng(11)
    n = 4 * FS  # 4 s per case: identical (mono), out of phase, half related
    left = 0.1 * rng.standard_normal(3 * n)
    other = 0.1 * rng.standard_normal(n)
    right = np.concatenate([left[:n], -left[n : 2 * n], 0.5 * left[2 * n :] + other])
    audio = np.column_stack([left, right]).astype(np.float32)
    db = tmp_path / "corr.sqlite3"
    buses = [BusSpec("master", "master", (1, 2)), BusSpec("mono", "outputs", (1,))]
    log = LoudnessLog(db, FS, buses)
    end = _feed(log, audio, 64)
    log.close(now=end + 1)
    rows = [r for r in logdb.query_readings(db, 0, 2e9) if r["bus"] == "master"]
    for case in range(3):
        x, y = audio[case * n : (case + 1) * n, 0], audio[case * n : (case + 1) * n, 1]
        expected = float(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y)))
        # rows 4c + 1 and 4c + 2 hold hops of case c only (a row ends a hop short of 1 s)
        for row in rows[4 * case + 1 : 4 * case + 3]:
            assert row["correlation"] == pytest.approx(expected, abs=0.02), case
    assert rows[1]["correlation"] > 0.999 and rows[5]["correlation"] < -0.999
    mono = [r for r in logdb.query_readings(db, 0, 2e9) if r["bus"] == "mono"]
    assert all(r["correlation"] is None for r in mono)  # one column: nothing to correlate
