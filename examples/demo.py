"""The main job on the embedded default: synthetic sample dataset -> build -> evaluate, at equal bpp.

Builds the raw reference, then H.264, H.265, D-NeRV and NeRV all at one target bpp (the D-NeRV
paper's comparison), prints one table (bpp from archive bytes, PSNR, MS-SSIM, decode speed through
the DataLoader relative to raw) and writes it as JSON with a rate-distortion plot under runs/demo/.
Sized for minutes on 2 CPU cores: tiny frames and a few training epochs; on a GPU raise --epochs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nvrloader import bench
from nvrloader.build import FrameSpec, build_archive
from nvrloader.cliargs import parse_resolution
from nvrloader.codecs.options import CodecOptions, KeyframeOptions, NeuralOptions
from nvrloader.reporting import save_figure, write_json


def build_one(out: Path, codec: str, frames: FrameSpec, options: CodecOptions | None = None,
              target_bpp: float | None = None) -> dict:
    return build_archive(None, out / f"{codec}.nvr", codec, options, frames=frames, target_bpp=target_bpp,
                         force=True)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coded = [r for r in rows if r["codec"] != "raw"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in coded:
        ax.scatter(r["bpp"], float(r["psnr"]), s=40, label=f"{r['codec']} ({Path(r['archive']).name})")
        ax.annotate(r["codec"], (r["bpp"], float(r["psnr"])), textcoords="offset points", xytext=(5, 4))
    bpps = [r["bpp"] for r in coded]
    ax.set_xlim(0, max(bpps) * 1.5)   # equal-bpp points: show them against zero, not a 1% window
    ax.set_xlabel("bits per pixel (from archive bytes)")
    ax.set_ylabel("PSNR (dB, mean over frames)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/demo"))
    ap.add_argument("--resolution", type=parse_resolution, default=(64, 80), help="HxW")
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--target-bpp", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=5, help="neural codec training epochs")
    ap.add_argument("--lr", type=float, default=None, help="neural codec peak learning rate (default: each "
                    "model's recipe for its size)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    frames = FrameSpec(fps=args.fps, resolution=args.resolution)
    rows = [build_one(args.out, "raw", frames)]
    for codec in ("h264", "h265"):
        rows.append(build_one(args.out, codec, frames, target_bpp=args.target_bpp))
    neural = {"size": "tiny", "epochs": args.epochs, "lr": args.lr}
    # keyframes: one HEVC or AV1 stream per video; their interval and share of the budget chosen by short fits
    rows.append(build_one(args.out, "dnerv", frames, KeyframeOptions(**neural), args.target_bpp))
    rows.append(build_one(args.out, "nerv", frames, NeuralOptions(**neural), args.target_bpp))
    speed_json = args.out / "bench.json"
    bench.main([str(args.out / f"{r['codec']}.nvr") for r in rows] +
               ["--batch-size", "8", "--repeats", "3", "-o", str(speed_json)])
    speed = {Path(r["archive"]).stem: r for r in json.loads(speed_json.read_text())["results"]}
    table = []
    print(f"\n{'codec':8} {'bpp':>8} {'PSNR':>7} {'MS-SSIM':>8} {'clips/s':>8} {'vs raw':>7}")
    for r in rows:
        s = speed[r["codec"]]
        table.append({k: r[k] for k in ("codec", "archive", "bpp", "psnr", "ms_ssim", "bytes_total")} |
                     {"clips_per_s": s["clips_per_s"], "speed_vs_raw": s["ratio_to_first"]})
        print(f"{r['codec']:8} {r['bpp']:8.4f} {float(r['psnr']):7.2f} {r['ms_ssim']:8.4f} "
              f"{s['clips_per_s']:8.1f} {s['ratio_to_first']:7.2f}")
    write_json(args.out / "summary.json", table)
    h, w = args.resolution
    plot(table, args.out / "rate_distortion.png", f"synthetic sample dataset ({rows[0]['num_videos']} videos, "
         f"{h}x{w}, {args.fps:g} fps): every codec at target {args.target_bpp:g} bpp")
    print(f"\nwrote {args.out / 'summary.json'} and {args.out / 'rate_distortion.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
