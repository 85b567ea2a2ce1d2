"""Quantisation-aware fitting measured on the demo's frames: PSNR before quantisation, after plain
rounding and after QAT at fixed weight bits, and PSNR at one target bpp with QAT and without.

The frames and recipe are examples/demo.py's (synthetic sample set, 64x80, 2 fps, ``--size tiny``,
a few epochs at lr 1e-3; D-NeRV keyframes as AV1). Each build's report gives ``psnr_float``,
``psnr_rounded`` and ``psnr_qat`` on the training frames as the decoder produces them; ``psnr`` is
the archive's, evaluated. Writes SUMMARY.json and qat.png under --out.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nvrloader.build import FrameSpec, build_archive
from nvrloader.codecs.options import KeyframeOptions, NeuralOptions
from nvrloader.reporting import save_figure, write_json

KEYS = ("codec", "archive", "bpp", "psnr", "psnr_float", "psnr_rounded", "psnr_qat", "params", "train_seconds")


def options(codec: str, epochs: int, lr: float, **extra: object) -> NeuralOptions:
    common = {"size": "tiny", "epochs": epochs, "lr": lr, **extra}
    return KeyframeOptions(**common, keyframe_codec="av1") if codec == "dnerv" else NeuralOptions(**common)


def run(args: argparse.Namespace) -> list[dict]:
    frames = FrameSpec(fps=args.fps, resolution=(64, 80))
    rows = []

    def build(name: str, codec: str, target: float | None, **extra: object) -> None:
        report = build_archive(None, args.out / f"{name}.nvr", codec, options(codec, args.epochs, args.lr, **extra),
                               frames=frames, target_bpp=target, force=True)
        rows.append({"name": name, "target_bpp": target, "qat_epochs": (report.get("qat") or {}).get("epochs", 0),
                     "weight_bits": report["codec_config"]["weights"]["bits"],
                     **{k: report.get(k) for k in KEYS}})
        print({k: rows[-1][k] for k in ("name", "bpp", "weight_bits", "psnr_float", "psnr_rounded", "psnr_qat", "psnr")},
              flush=True)

    for codec in args.codecs:
        for bits in args.bits:
            build(f"{codec}-bits{bits:g}", codec, None, weight_bits=bits)
        if args.target_bpp:
            build(f"{codec}-target-qat", codec, args.target_bpp)
            build(f"{codec}-target-noqat", codec, args.target_bpp, qat_epochs=0)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fixed = [r for r in rows if r["target_bpp"] is None]
    targeted = [r for r in rows if r["target_bpp"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for j, (key, label) in enumerate((("psnr_rounded", "plain rounding"), ("psnr_qat", "after QAT"))):
        ax.bar([i + (j - 0.5) * 0.35 for i in range(len(fixed))], [r[key] - r["psnr_float"] for r in fixed], 0.35,
               label=label)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axhline(-0.2, color="red", linestyle="--", linewidth=0.8, label="-0.2 dB (target at 6 bits)")
    ax.set_xticks(range(len(fixed)), [r["name"] for r in fixed], fontsize=8)
    ax.set_ylabel("PSNR change vs the float model (dB)")
    ax.set_title("fixed weight bits, no target", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax = axes[1]
    colours = {}
    for r in targeted:
        colour = colours.setdefault(r["codec"], f"C{len(colours)}")
        qat = bool(r["qat_epochs"])
        ax.scatter(r["bpp"], r["psnr"], s=40, color=colour, marker="o" if qat else "x",
                   label=f"{r['codec']} {'QAT' if qat else 'no QAT'}: {r['weight_bits']:g} bits, {r['params'] // 1000}k weights")
    ax.set_xlabel("bits per pixel (from archive bytes)")
    ax.set_ylabel("PSNR (dB, archive evaluated)")
    ax.set_title(f"target {targeted[0]['target_bpp']:g} bpp: QAT (o) vs none (x)" if targeted else "no target builds",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/qat"))
    ap.add_argument("--codecs", type=lambda s: s.split(","), default=["dnerv", "nerv"])
    ap.add_argument("--bits", type=lambda s: [float(b) for b in s.split(",")], default=[6.0, 4.0],
                    help="fixed weight bits to build at (no target)")
    ap.add_argument("--target-bpp", type=float, default=0.3, help="0: no equal-bpp builds")
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--replot", action="store_true", help="redraw qat.png from --out/SUMMARY.json, build nothing")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        rows = json.loads((args.out / "SUMMARY.json").read_text())["builds"]
    else:
        rows = run(args)
        write_json(args.out / "SUMMARY.json", {"args": {k: str(v) for k, v in vars(args).items()}, "builds": rows})
    plot(rows, args.out / "qat.png", f"Quantisation-aware fitting, demo frames 64x80 {args.fps:g} fps, "
                                      f"--size tiny --epochs {args.epochs} --lr {args.lr:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
