"""A study's results: mean ± std over seeds per row, the orderings the data supports, table.md in the
layout of the D-NeRV paper's Table 8 (rows: setting x codec; columns: bpp levels), results.json and
accuracy_bpp.png (top-1 against the archives' real bpp, error bars over seeds)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from nvrloader.reporting import save_figure, write_json, write_text
from recognition.config import TrainConfig
from recognition.study.rows import SETTINGS, Archive, Row, read_record

CODEC_NAMES = {"raw": "raw", "h264": "H.264", "h265": "H.265", "nerv": "NeRV", "dnerv": "D-NeRV"}
SETTING_NAMES = {"raw": "raw / raw", "train": "Train", "test": "Test"}


def spread(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (None below two values)."""
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def archive_facts(archive: Archive, out: Path) -> dict[str, Any]:
    """bpp from the archive's bytes; PSNR/MS-SSIM and build status from its build record if there is one."""
    facts: dict[str, Any] = {"name": archive.name, "codec": archive.codec, "level": archive.level,
                             "archive": str(archive.path)}
    record_path = archive.path.with_name(archive.path.stem + ".study.json")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = None
    if record is not None:
        facts["status"] = record.get("status")
        facts.update({k: record.get("summary", {}).get(k) for k in ("bpp", "psnr", "ms_ssim", "target_bpp")})
        if record.get("message"):
            facts["message"] = record["message"]
    if archive.path.is_file() and facts.get("bpp") is None:
        from recognition.study.rows import archive_info
        facts["bpp"] = archive_info(archive.path)["bpp"]
        facts.setdefault("status", "done")
    facts.setdefault("status", "missing")
    return facts


def row_result(setting: str, archive: Archive, seeds: tuple[int, ...], out: Path,
               outcome: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One table row: top-1 per seed, their spread, and seconds per seed (wall time of each run)."""
    per_seed, seconds, cpu, missing = {}, {}, {}, {}
    for seed in seeds:
        row = Row(setting, archive, seed, out)
        record = read_record(row)
        if record and record.get("status") == "done":
            per_seed[seed] = record["summary"]["top1"]
            seconds[seed] = record["wall_seconds"]
            if record.get("cpu_seconds") is not None:
                cpu[seed] = record["cpu_seconds"]
        else:
            missing[seed] = outcome.get(row.id, {"status": "not run"})
    return {"setting": setting, "codec": archive.codec, "level": archive.level, "archive": archive.name,
            "top1": per_seed, **spread(list(per_seed.values())), "seconds": seconds,
            "seconds_mean": statistics.fmean(seconds.values()) if seconds else None, "cpu_seconds": cpu,
            "cpu_seconds_mean": statistics.fmean(cpu.values()) if cpu else None,
            "missing": {s: {"status": m["status"], "message": m.get("message", "")[:500]} for s, m in missing.items()}}


def num_test_clips(raw: Archive) -> int | None:
    """Test clips the accuracies are over (one clip is 100 / this many points)."""
    from nvrloader.archive import open_archive

    if not raw.path.is_file():
        return None
    with open_archive(raw.path) as archive:
        return sum(1 for v in archive.meta["videos"] if v.get("split") == "test")


def claims(rows: list[dict[str, Any]], codecs: list[str], levels: list[str], clip: float) -> list[str]:
    """Orderings the data supports: a gap counts only above twice the larger seed std of the two rows
    (and above one test clip); anything smaller is "within noise". Rows of one seed support none."""
    by = {(r["setting"], r["codec"], r["level"]): r for r in rows}

    def compare(a: dict[str, Any], b: dict[str, Any], name_a: str, name_b: str) -> str | None:
        if a["mean"] is None or b["mean"] is None:
            return None
        if a["std"] is None or b["std"] is None:
            return f"{name_a} vs {name_b}: one seed, no claim"
        if a["mean"] < b["mean"]:
            a, b, name_a, name_b = b, a, name_b, name_a
        gap, bar = a["mean"] - b["mean"], max(2 * max(a["std"], b["std"]), clip)
        if gap > bar:
            return f"{name_a} > {name_b} (gap {gap:.1f} > {bar:.1f})"
        return f"{name_a} ≈ {name_b}: within noise (gap {gap:.1f} ≤ {bar:.1f})"

    lines = []
    for level in levels:
        for setting in ("train", "test"):
            present = [c for c in codecs if (setting, c, level) in by]
            found = [compare(by[(setting, a, level)], by[(setting, b, level)], CODEC_NAMES.get(a, a),
                             CODEC_NAMES.get(b, b)) for i, a in enumerate(present) for b in present[i + 1:]]
            if any(found):
                lines.append(f"- {SETTING_NAMES[setting]}, {level}: " + "; ".join(f for f in found if f))
        versus = [compare(by[("train", c, level)], by[("test", c, level)], f"Train {CODEC_NAMES.get(c, c)}",
                          f"Test {CODEC_NAMES.get(c, c)}") for c in codecs
                  if ("train", c, level) in by and ("test", c, level) in by]
        if any(versus):
            lines.append(f"- Train vs Test, {level}: " + "; ".join(v for v in versus if v))
    return lines


def collect(raw: Archive, archives: list[Archive], seeds: tuple[int, ...], out: Path,
            outcome: dict[str, dict[str, Any]], base: TrainConfig) -> dict[str, Any]:
    """Everything the outputs show, read back from the row and build records on disk."""
    import dataclasses

    codecs = list(dict.fromkeys(a.codec for a in archives))
    levels = list(dict.fromkeys(a.level for a in archives))
    rows = [row_result(s, a, seeds, out, outcome) for s in ("train", "test") for a in archives]
    raw_result = row_result("raw", raw, seeds, out, outcome)
    clips = num_test_clips(raw)
    meta = _frames(raw)
    return {"raw": {**archive_facts(raw, out), "raw_raw": raw_result}, "archives": [archive_facts(a, out) for a in archives],
            "rows": rows, "codecs": codecs, "levels": levels, "seeds": list(seeds), "settings": list(SETTINGS),
            "test_clips": clips, "frames": meta, "config": dataclasses.asdict(base),
            "claims": claims(rows, codecs, levels, 100 / clips if clips else 0.0),
            "tasks": {k: v["status"] for k, v in outcome.items()}}


def _frames(raw: Archive) -> dict[str, Any] | None:
    from nvrloader.archive import open_archive

    if not raw.path.is_file():
        return None
    with open_archive(raw.path) as archive:
        m = archive.meta
        return {"videos": len(m["videos"]), "classes": len(m["classes"]), "height": m["height"], "width": m["width"],
                "fps": m["fps"], "source": m.get("source")}


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "–"
    if r["mean"] is None:
        statuses = sorted({m["status"] for m in r["missing"].values()})
        return "/".join(statuses) or "–"
    text = f"{r['mean']:.1f} ± {r['std']:.1f}" if r["std"] is not None else f"{r['mean']:.1f}"
    return text + (f" ({r['n']} of {r['n'] + len(r['missing'])} seeds)" if r["missing"] else "")


def markdown(results: dict[str, Any]) -> str:
    """table.md: the Table 8 layout, the archives' real bpp and quality, run times, claims and notes."""
    levels, codecs = results["levels"], results["codecs"]
    by = {(r["setting"], r["codec"], r["level"]): r for r in results["rows"]}
    arch = {(a["codec"], a["level"]): a for a in results["archives"]}
    raw = results["raw"]["raw_raw"]
    head = "| setting | codec | " + " | ".join(levels) + " |"
    lines = ["## Top-1 (%) over seeds, mean ± std", "", head, "|---|---|" + "---:|" * len(levels),
             f"| {SETTING_NAMES['raw']} | raw | " + " | ".join(_cell(raw) for _ in levels) + " |"]
    for setting in ("train", "test"):
        for c in codecs:
            lines.append(f"| {SETTING_NAMES[setting]} | {CODEC_NAMES.get(c, c)} | "
                         + " | ".join(_cell(by.get((setting, c, lv))) for lv in levels) + " |")
    lines += ["", "## Archives: real bpp (from archive bytes) · PSNR (dB) · MS-SSIM", "",
              "| codec | " + " | ".join(levels) + " |", "|---|" + "---:|" * len(levels)]
    for c in codecs:
        cells = []
        for lv in levels:
            a = arch.get((c, lv))
            if a is None:
                cells.append("–")
            elif a.get("bpp") is None:
                cells.append(a["status"])
            else:
                quality = (f" · {a['psnr']:.2f} · {a['ms_ssim']:.3f}" if a.get("psnr") is not None
                           and a.get("ms_ssim") is not None else "")
                cells.append(f"{a['bpp']:.4f}{quality}")
        lines.append(f"| {CODEC_NAMES.get(c, c)} | " + " | ".join(cells) + " |")
    lines += ["", "## Seconds per run: wall (CPU of the worker), mean over seeds; training decodes its archive "
              "every epoch", "",
              "| setting | codec | " + " | ".join(levels) + " |",
              "|---|---|" + "---:|" * len(levels),
              f"| {SETTING_NAMES['raw']} | raw | " + " | ".join(_seconds(raw) for _ in levels) + " |"]
    for setting in ("train", "test"):
        for c in codecs:
            lines.append(f"| {SETTING_NAMES[setting]} | {CODEC_NAMES.get(c, c)} | "
                         + " | ".join(_seconds(by.get((setting, c, lv))) for lv in levels) + " |")
    cfg, frames = results["config"], results.get("frames") or {}
    clips = results.get("test_clips")
    rule = ("An ordering is stated only where the gap between two means exceeds twice the larger of their seed "
            "standard deviations" + (f" and one test clip ({100 / clips:.2f} points)" if clips else "")
            + "; otherwise the pair is within noise.")
    lines += ["", "## What the data supports", "", rule, ""]
    lines += results["claims"] or ["- nothing: too few seeds or rows"]
    lines += ["", "## Notes", "",
              "Train: TSM trained on the decoded archive, tested on the raw frames. Test: TSM trained on the raw "
              "frames (the raw / raw model of the same seed), tested on the decoded archive. Top-1 over "
              f"{clips} test clips, {frames.get('classes')} classes (chance {100 / max(frames.get('classes') or 1, 1):.1f}%); "
              f"seeds {', '.join(map(str, results['seeds']))}. Frames: {frames.get('videos')} videos, "
              f"{frames.get('height')}x{frames.get('width')}, {frames.get('fps')} fps, from {frames.get('source')}. "
              f"Recipe {cfg['recipe']}: {cfg['backbone']} x{cfg['width_mult']}, {cfg['epochs']} epochs, batch "
              f"{cfg['batch_size']}, lr {cfg['lr']} ({cfg['optimizer']}); each model is "
              + ("the best epoch on a validation split of the training groups." if cfg["val_fraction"]
                 else "the last epoch.")]
    if results.get("command"):
        lines += ["", f"Command: `{results['command']}`; wall time of this run {results['wall_seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def _seconds(r: dict[str, Any] | None) -> str:
    if r is None or r["seconds_mean"] is None:
        return "–"
    return f"{r['seconds_mean']:.0f}" + (f" ({r['cpu_seconds_mean']:.0f})" if r["cpu_seconds_mean"] is not None else "")


def plot(results: dict[str, Any], path: Path) -> Path:
    """Top-1 against real bpp, one colour per codec; Train solid, Test dashed; error bars: seed std."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bpp = {(a["codec"], a["level"]): a.get("bpp") for a in results["archives"]}
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xs: list[float] = []
    for i, codec in enumerate(results["codecs"]):
        for setting, style in (("train", dict(marker="o", ls="-")), ("test", dict(marker="s", ls="--", mfc="none"))):
            pts = sorted((bpp[(r["codec"], r["level"])], r["mean"], r["std"] or 0.0) for r in results["rows"]
                         if r["setting"] == setting and r["codec"] == codec and r["mean"] is not None
                         and bpp.get((r["codec"], r["level"])))
            if pts:
                x, y, e = zip(*pts)
                ax.errorbar(x, y, yerr=e, capsize=3, color=colours[i % len(colours)],
                            label=f"{CODEC_NAMES.get(codec, codec)} ({SETTING_NAMES[setting]})", **style)
                xs += x
    raw = results["raw"]["raw_raw"]
    if raw["mean"] is not None:
        ax.axhline(raw["mean"], color="black", lw=1, label="raw / raw")
        if raw["std"]:
            ax.axhspan(raw["mean"] - raw["std"], raw["mean"] + raw["std"], color="black", alpha=0.08)
    classes = (results.get("frames") or {}).get("classes")
    if classes:
        ax.axhline(100 / classes, color="grey", lw=1, ls=":", label="chance")
    wide = bool(xs) and max(xs) > 3 * min(xs)
    if wide:
        ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (from archive bytes" + (", log scale)" if wide else ")"))
    ax.set_ylabel("top-1 accuracy (%), mean ± std over seeds")
    f = results.get("frames") or {}
    ax.set_title(f"TSM top-1 vs bpp ({f.get('videos')} videos, {f.get('height')}x{f.get('width')}, "
                 f"{f.get('fps')} fps; seeds {', '.join(map(str, results['seeds']))})\n"
                 "Train: trained on decoded, tested on raw; Test: trained on raw, tested on decoded", fontsize=8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def write_outputs(results: dict[str, Any], out: Path) -> None:
    write_json(out / "results.json", results)
    write_text(out / "table.md", markdown(results))
    plot(results, out / "accuracy_bpp.png")
