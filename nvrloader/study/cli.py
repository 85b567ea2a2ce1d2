"""`python -m nvrloader.study rd [SRC] --codecs h264,h265,nerv,dnerv --bpp 0.1,0.2,0.4 --time-budget 600 -o runs/rd`

Builds every codec at every bpp level (neural codecs each fit for the same number of seconds),
then writes table.md, results.json, rd_psnr.png and rd_msssim.png with Bjøntegaard deltas against
the anchor (H.264). A re-run reuses the builds already made with the same settings.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from nvrloader.build import FrameSpec
from nvrloader.cliargs import comma_list, parse_resolution


def build_parser() -> argparse.ArgumentParser:
    from nvrloader.codecs.options import IMAGE_CODECS
    from nvrloader.reporting import default_cache_dir
    from nvrloader.study.rd import LARGE_EPOCHS

    spec = FrameSpec()
    ap = argparse.ArgumentParser(prog="python -m nvrloader.study", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="study", required=True)
    rd = sub.add_parser("rd", help="rate-distortion curves of several codecs with Bjøntegaard deltas",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    rd.add_argument("src", nargs="?", help="dataset folder; omit for the synthetic sample dataset")
    rd.add_argument("--codecs", type=comma_list(str), default=("h264", "h265", "nerv", "dnerv"),
                    help="comma-separated codecs (default h264,h265,nerv,dnerv); a variant changes options, "
                    "e.g. dnerv:rgb_residual=false+fusion=concat (an ablation: variants of one codec with "
                    "--anchor dnerv)")
    rd.add_argument("--bpp", type=comma_list(float), default=(0.1, 0.2, 0.4),
                    help="comma-separated target bpp levels (default 0.1,0.2,0.4)")
    rd.add_argument("--time-budget", type=float, default=600.0,
                    help="seconds of fitting for every neural build (default 600)")
    rd.add_argument("-o", "--output", type=Path, default=Path("runs/rd"), help="study folder (default runs/rd)")
    rd.add_argument("--fps", type=float, default=spec.fps, help=f"frames per second (default {spec.fps:g})")
    rd.add_argument("--resolution", type=parse_resolution, default=spec.resolution,
                    help="HxW (default %dx%d)" % spec.resolution)
    rd.add_argument("--size", default="tiny", help="neural model preset (default tiny; the width follows the bpp)")
    rd.add_argument("--keyframe-codec", choices=IMAGE_CODECS,
                    help="D-NeRV keyframe codec (default av1 at frames up to 128x160, else avif)")
    rd.add_argument("--epochs", type=int, default=LARGE_EPOCHS,
                    help="epoch cap of neural fits; the time budget ends them first (default %(default)s)")
    rd.add_argument("--anchor", default="h264", help="codec the deltas are measured against (default h264)")
    rd.add_argument("--rebuild", type=comma_list(str), default=(),
                    help="comma-separated codecs to build again even when a finished build is there")
    rd.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    rd.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="frame stores, sample dataset")
    return ap


def main(argv: list[str] | None = None) -> int:
    from nvrloader.study.rd import StudyConfig, run_study
    from nvrloader.study.rdreport import table_markdown

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        config = StudyConfig(codecs=args.codecs, levels=args.bpp, time_budget=args.time_budget,
                             frames=FrameSpec(fps=args.fps, resolution=args.resolution),
                             source=None if args.src is None else Path(args.src), size=args.size,
                             keyframe_codec=args.keyframe_codec, epochs=args.epochs, device=args.device,
                             cache_dir=args.cache_dir)
        stray = sorted(set(args.rebuild) - set(config.codecs))
        if stray:
            raise ValueError(f"--rebuild names codecs the study does not build: {', '.join(stray)}")
        args.output.mkdir(parents=True, exist_ok=True)
        study = run_study(config, args.output, args.anchor, tuple(args.rebuild),
                          command=shlex.join(["python", "-m", "nvrloader.study", *argv]))
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table_markdown(study))
    print(f"wrote {args.output}/table.md, results.json, rd_psnr.png, rd_msssim.png")
    return 0
