"""What a rate-distortion study reports: Bjøntegaard deltas against an anchor, the table, the plots.

Everything here reads the study's build entries (see `nvrloader.study.rd.run_builds`), so a report
can be redrawn from ``results.json`` without building anything.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from nvrloader.study.bdrate import bd_quality, bd_rate, msssim_db

METRICS = {"psnr": ("PSNR (dB, mean over frames)", "rd_psnr.png"),
           "ms_ssim": ("MS-SSIM (0-1, mean over frames)", "rd_msssim.png")}
DELTAS = {"bd_rate_psnr": "BD-rate (PSNR)", "bd_psnr": "BD-PSNR", "bd_rate_msssim": "BD-rate (MS-SSIM)"}


def curve(entries: list[dict[str, Any]], codec: str) -> list[tuple[float, float, float]]:
    """(achieved bpp, PSNR, MS-SSIM) of a codec's finished builds, by bpp."""
    points = [(float(e["summary"]["bpp"]), float(e["summary"]["psnr"]), float(e["summary"]["ms_ssim"]))
              for e in entries if e["codec"] == codec and e["status"] == "done"]
    return sorted(points)


def deltas(entries: list[dict[str, Any]], codecs: list[str], anchor: str) -> dict[str, dict[str, Any]]:
    """Bjøntegaard deltas of each codec but the anchor against the anchor, at the bpp each build reached.

    BD-rate over MS-SSIM uses MS-SSIM in dB (`msssim_db`). A codec with too few reachable points, or
    with no overlap with the anchor, gets n/a and the reason.
    """
    ref = curve(entries, anchor)
    out: dict[str, dict[str, Any]] = {}
    for codec in codecs:
        if codec == anchor:
            continue
        test = curve(entries, codec)
        rates = ([p[0] for p in ref], [p[0] for p in test])
        psnr = ([p[1] for p in ref], [p[1] for p in test])
        msssim = ([msssim_db(p[2]) for p in ref], [msssim_db(p[2]) for p in test])
        out[codec] = {"points": len(test), "anchor_points": len(ref),
                      "bd_rate_psnr": bd_rate(rates[0], psnr[0], rates[1], psnr[1]).as_dict(),
                      "bd_psnr": bd_quality(rates[0], psnr[0], rates[1], psnr[1]).as_dict(),
                      "bd_rate_msssim": bd_rate(rates[0], msssim[0], rates[1], msssim[1]).as_dict()}
    return out


def _delta_text(result: dict[str, Any], unit: str) -> str:
    if result["value"] is None:
        return f"n/a ({result['note']})"
    value = float(result["value"])
    return f"{value:+.1f}{unit} ({result['fit']})" if unit == " %" else f"{value:+.2f}{unit} ({result['fit']})"


def title(study: dict[str, Any]) -> str:
    """Dataset, resolution, fps and fit time: what a reader needs to compare two studies."""
    h, w = study["frames"]["resolution"]
    videos = next((e["summary"]["num_videos"] for e in study["builds"] if e["status"] == "done"), None)
    count = f"{videos} videos, " if videos is not None else ""
    fit = f", neural fit {study['time_budget']:g} s each" if study["neural"] else ""
    return f"{study['dataset']} ({count}{h}x{w}, {study['frames']['fps']:g} fps){fit}"


def table_markdown(study: dict[str, Any]) -> str:
    """Rows codec, columns bpp level (achieved bpp, PSNR, MS-SSIM), then the deltas against the anchor."""
    levels = study["levels"]
    anchor = study["anchor"]
    by_cell = {(e["codec"], e["target_bpp"]): e for e in study["builds"]}
    notes: list[str] = []
    head = ["codec", *(f"{b:g} bpp" for b in levels), *(f"{v} vs {anchor}" for v in DELTAS.values())]
    lines = [f"# Rate-distortion study: {title(study)}", "",
             f"Command: `{study['command']}`  ",
             f"Wall time: {study['wall_seconds']:.0f} s this run; the builds took {study['build_wall_seconds']:.0f} s "
             "(reused ones when they were made)", "",
             "Cells: achieved bpp (from archive bytes) · PSNR · MS-SSIM. BD-rate: rate change at equal quality "
             "(negative saves bits); BD-PSNR: quality change at equal rate (VCEG-M33, fit in brackets).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for codec in study["codecs"]:
        row = [codec]
        for level in levels:
            e = by_cell.get((codec, level))
            if e is None:
                row.append("—")
            elif e["status"] == "done":
                s = e["summary"]
                row.append(f"{float(s['bpp']):.4f} · {float(s['psnr']):.2f} dB · {float(s['ms_ssim']):.4f}")
            else:
                notes.append(f"{codec} at {level:g} bpp: {e.get('message', '')}")
                row.append(f"{e['status']} [{len(notes)}]")
        d = study["deltas"].get(codec)
        if codec == anchor:
            row += ["anchor"] * len(DELTAS)
        else:
            row += [_delta_text(d["bd_rate_psnr"], " %"), _delta_text(d["bd_psnr"], " dB"),
                    _delta_text(d["bd_rate_msssim"], " %")]
        lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines += ["", *(f"[{i}] {n}" for i, n in enumerate(notes, 1))]
    fits = [e for e in study["builds"] if e["status"] == "done" and e["summary"].get("train_seconds") is not None]
    if fits:
        lines += ["", "Neural fits (s): " + ", ".join(f"{e['name']} {float(e['summary']['train_seconds']):.0f}"
                                                     for e in fits)]
    return "\n".join(lines) + "\n"


def _legend_deltas(d: dict[str, Any] | None, metric: str) -> str:
    """The deltas that exist for this plot's metric: BD-rate, and BD-PSNR on the PSNR plot."""
    parts = []
    rate = (d or {}).get("bd_rate_psnr" if metric == "psnr" else "bd_rate_msssim")
    if rate and rate["value"] is not None:
        parts.append(f"BD-rate {float(rate['value']):+.1f} %")
    quality = (d or {}).get("bd_psnr") if metric == "psnr" else None
    if quality and quality["value"] is not None:
        parts.append(f"BD-PSNR {float(quality['value']):+.2f} dB")
    return ", ".join(parts) or "BD n/a"


def plot(study: dict[str, Any], metric: str, path: Path) -> Path:
    """One line per codec over the bpp each build reached, targets dotted; BD-rate vs the anchor in the legend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from nvrloader.reporting import finish_plot

    label, _ = METRICS[metric]
    column = 1 if metric == "psnr" else 2
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for level in study["levels"]:
        ax.axvline(level, color="0.85", linestyle=":", linewidth=1)
    markers = "osD^v<>ph*"
    for i, codec in enumerate(study["codecs"]):
        points = curve(study["builds"], codec)
        reached = f"{len(points)}/{len(study['levels'])} levels"
        extra = "anchor" if codec == study["anchor"] else _legend_deltas(study["deltas"].get(codec), metric)
        name = f"{codec} ({extra}; {reached})"
        if not points:
            ax.plot([], [], marker=markers[i % len(markers)], label=name)
            continue
        ax.plot([p[0] for p in points], [p[column] for p in points], marker=markers[i % len(markers)], label=name)
    ax.set_xscale("log")   # the axis the Bjøntegaard fits live on
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    return finish_plot(fig, ax, path, "bits per pixel (bpp, log scale, from archive bytes; dotted: targets)", label,
                       f"Rate-distortion: {title(study)}")


def write_outputs(study: dict[str, Any], out: Path) -> list[Path]:
    """results.json, table.md, rd_psnr.png and rd_msssim.png under ``out``, each written atomically."""
    from nvrloader.reporting import write_json, write_text

    paths = [write_json(out / "results.json", study), write_text(out / "table.md", table_markdown(study))]
    paths += [plot(study, metric, out / filename) for metric, (_, filename) in METRICS.items()]
    return paths

