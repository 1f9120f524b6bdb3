"""``studiod analyze FILE...``: BS.1770-4 / EBU R 128 loudness of audio files.

A table by default, ``--json`` for a JSON array with one object per file. With several
files, they are also measured as an album: the album's integrated loudness over the union of
all files' gating blocks, each file's gain to match it, and platform compliance of both.
"""

from __future__ import annotations

from studiod.daemon.audiofile import AudioFileError
from studiod.daemon.offline import (
    EXIT_OK,
    PRESETS,
    OfflineError,
    Progress,
    album_integrated_lufs,
    analyze_file,
    compliance,
    dumps,
    fail,
    fmt,
)


def analyze(
    paths: list[str], progress: Progress | None = None, finite_only: bool = False
) -> list[dict]:
    """One readings dict per file (the ``--json`` objects), album keys when several.
    ``finite_only``: measure files with NaN/Inf samples too (see offline.analyze_file)."""
    results = [analyze_file(p, progress, finite_only) for p in paths]
    objects = []
    for res in results:
        r = res.readings
        r["platforms"] = compliance(r["integrated_lufs"], r["true_peak_dbtp"])
        objects.append(r)
    if len(results) > 1:
        album_lufs = album_integrated_lufs([res.meter for res in results])
        peaks = [r["true_peak_dbtp"] for r in objects if r["true_peak_dbtp"] is not None]
        album_tp = max(peaks) if peaks else None
        album_platforms = compliance(album_lufs, album_tp)
        for r in objects:
            gain = (
                None
                if album_lufs is None or r["integrated_lufs"] is None
                else round(album_lufs - r["integrated_lufs"], 2)
            )
            r["album"] = {
                "integrated_lufs": album_lufs,
                "true_peak_dbtp": album_tp,
                "gain_db": gain,  # this file's gain to match the album's loudness
                "platforms": album_platforms,
            }
    return objects


def _table(objects: list[dict]) -> str:
    head = (
        f"{'file':<32} {'I LUFS':>7} {'LRA LU':>7} {'TP dBTP':>8} {'SP dBFS':>8} "
        f"{'M max':>7} {'S max':>7} {'corr':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in objects:
        name = r["path"] if len(r["path"]) <= 32 else "…" + r["path"][-31:]
        lines.append(
            f"{name:<32} {fmt(r['integrated_lufs']):>7} {fmt(r['loudness_range_lu']):>7} "
            f"{fmt(r['true_peak_dbtp']):>8} {fmt(r['sample_peak_dbfs']):>8} "
            f"{fmt(r['momentary_max_lufs']):>7} {fmt(r['short_term_max_lufs']):>7} "
            f"{fmt(r['correlation'], 2):>6}"
        )
    for r in objects:
        if r["nonfinite_samples"]:
            lines.append(
                f"{r['path']}: {r['nonfinite_samples']} NaN/infinite samples measured as silence"
            )
    if len(objects) > 1:
        album = objects[0]["album"]
        lines += [
            "",
            f"album: integrated {fmt(album['integrated_lufs'])} LUFS, "
            f"true peak {fmt(album['true_peak_dbtp'])} dBTP",
            f"{'file':<32} {'gain to album':>14}",
        ]
        for r in objects:
            name = r["path"] if len(r["path"]) <= 32 else "…" + r["path"][-31:]
            lines.append(f"{name:<32} {fmt(r['album']['gain_db'], 2):>11} dB")
        lines += ["", "platform compliance (album):", *_compliance_rows(album["platforms"])]
    else:
        lines += ["", "platform compliance:", *_compliance_rows(objects[0]["platforms"])]
    return "\n".join(lines)


def _compliance_rows(platforms: dict) -> list[str]:
    rows = [
        f"  {'target':<9} {'LUFS':>6} {'ceiling':>8} {'gain dB':>8} {'TP after':>9}  verdict",
    ]
    for name, c in platforms.items():
        if c["compliant"]:
            verdict = "ok"
        else:
            why = []
            if not c["loudness_ok"]:
                why.append("loudness")
            if not c["true_peak_ok"]:
                why.append("true peak")
            verdict = "off: " + ", ".join(why)
        rows.append(
            f"  {name:<9} {c['target_lufs']:>6.1f} {c['ceiling_dbtp']:>8.1f} "
            f"{fmt(c['gain_db'], 1):>8} {fmt(c['true_peak_after_gain_dbtp'], 1):>9}  {verdict}"
        )
    return rows


def register(commands) -> None:
    parser = commands.add_parser(
        "analyze",
        help="measure loudness (BS.1770-4 / EBU R 128) of audio files",
        description="Integrated loudness, loudness range, true and sample peak, momentary and "
        "short-term maxima and L/R correlation of each FILE, with compliance against the "
        f"delivery targets ({', '.join(PRESETS)}). Several files are also measured as an "
        "album (gating over all files' blocks) with each file's gain to match it.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV, FLAC, …)")
    parser.add_argument(
        "--json", action="store_true", help="print a JSON array, one object per file"
    )
    parser.add_argument(
        "--finite-only",
        action="store_true",
        help="measure a float file that holds NaN or infinite samples (they count as "
        "silence, and their number is reported) instead of refusing it",
    )
    parser.set_defaults(func=main)


def main(args) -> int:
    try:
        with Progress("analyzing", 1) as bar:
            objects = analyze(args.files, bar, args.finite_only)
    except (OfflineError, AudioFileError) as exc:
        return fail("analyze", str(exc))
    print(dumps(objects) if args.json else _table(objects))
    return EXIT_OK
