"""`python -m nvrloader.study rd [SRC] --codecs h264,h265,nerv,dnerv --bpp 0.1,0.2,0.4 --time-budget 600 -o runs/rd`

Builds every codec at every bpp level (neural codecs each fit for the same number of seconds),
then writes table.md, results.json, rd_psnr.png and rd_msssim.png with Bjøntegaard deltas against
the anchor (H.264). A re-run reuses the builds already made with the same settings.

`python -m nvrloader.study keyframes [SRC] --codecs hevc,av1 --quality 10,25,40,55,70 -o runs/keyframes`
measures D-NeRV's keyframe coding alone: one image at a time against one stream per video and
per class, bytes against keyframe PSNR (table.md, results.json, keyframes_rd.png).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from nvrloader.build import FrameSpec
from nvrloader.cliargs import comma_list, parse_resolution


def build_parser() -> argparse.ArgumentParser:
    from nvrloader.codecs.options import AUTO_KEYFRAME_CODEC, KEYFRAME_CODECS
    from nvrloader.study.keyframes import CODINGS
    from nvrloader.study.rd import LARGE_EPOCHS

    spec = FrameSpec()
    ap = argparse.ArgumentParser(prog="python -m nvrloader.study", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="study", required=True)
    rd = sub.add_parser("rd", help="rate-distortion curves of several codecs with Bjøntegaard deltas",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _frame_arguments(rd, spec)
    rd.add_argument("--codecs", type=comma_list(str), default=("h264", "h265", "nerv", "dnerv"),
                    help="comma-separated codecs (default h264,h265,nerv,dnerv); a variant changes options, "
                    "e.g. dnerv:rgb_residual=false+fusion=concat (an ablation: variants of one codec with "
                    "--anchor dnerv)")
    rd.add_argument("--bpp", type=comma_list(float), default=(0.1, 0.2, 0.4),
                    help="comma-separated target bpp levels (default 0.1,0.2,0.4)")
    rd.add_argument("--time-budget", type=float, default=600.0,
                    help="seconds of fitting for every neural build (default 600)")
    rd.add_argument("--size", default="tiny", help="neural model preset (default tiny; the width follows the bpp)")
    rd.add_argument("--keyframe-codec", choices=(AUTO_KEYFRAME_CODEC, *KEYFRAME_CODECS),
                    help="D-NeRV keyframe codec (default auto: HEVC or AV1 streams, whichever codes the keyframe "
                    "budget better)")
    rd.add_argument("--epochs", type=int, default=LARGE_EPOCHS,
                    help="epoch cap of neural fits; the time budget ends them first (default %(default)s)")
    rd.add_argument("--anchor", default="h264", help="codec the deltas are measured against (default h264)")
    rd.add_argument("--rebuild", type=comma_list(str), default=(),
                    help="comma-separated codecs to build again even when a finished build is there")
    rd.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    kf = sub.add_parser("keyframes", help="D-NeRV keyframes: image coding against one stream per video and per class",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _frame_arguments(kf, spec)
    kf.add_argument("--codecs", type=comma_list(str), default=("hevc", "av1"),
                    help="comma-separated keyframe encoders: hevc, av1 (images and streams), avif, png (images) "
                    "(default hevc,av1; the first is the anchor)")
    kf.add_argument("--quality", type=comma_list(int), default=(10, 25, 40, 55, 70),
                    help="comma-separated qualities 0..100 (default 10,25,40,55,70)")
    kf.add_argument("--codings", type=comma_list(str), default=CODINGS,
                    help=f"comma-separated codings (default {','.join(CODINGS)})")
    kf.add_argument("--clip-len", type=int, default=8, help="D-NeRV clip length: keyframes every clip_len frames")
    return ap


def _frame_arguments(parser: argparse.ArgumentParser, spec: FrameSpec) -> None:
    """The frames a study reads, and where its outputs and the frame stores go."""
    from nvrloader.reporting import default_cache_dir

    parser.add_argument("src", nargs="?", help="dataset folder; omit for the synthetic sample dataset")
    parser.add_argument("-o", "--output", type=Path, default=Path(f"runs/{parser.prog.split()[-1]}"),
                        help="study folder (default runs/<study>)")
    parser.add_argument("--fps", type=float, default=spec.fps, help=f"frames per second (default {spec.fps:g})")
    parser.add_argument("--resolution", type=parse_resolution, default=spec.resolution,
                        help="HxW (default %dx%d)" % spec.resolution)
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="frame stores, sample dataset")


def keyframes_main(args: argparse.Namespace) -> int:
    from nvrloader.build import frame_store
    from nvrloader.compress.images import CODECS as IMAGE_CODECS
    from nvrloader.study.keyframes import CODINGS, run_keyframe_study, table_markdown, write_outputs

    try:
        unknown = sorted(set(args.codecs) - set(IMAGE_CODECS)) + sorted(set(args.codings) - set(CODINGS))
        if unknown:
            raise ValueError(f"unknown codecs or codings: {', '.join(unknown)}")
        if not all(0 <= q <= 100 for q in args.quality):
            raise ValueError(f"qualities must be in 0..100, got {args.quality}")
        src, store = frame_store(args.src, FrameSpec(fps=args.fps, resolution=args.resolution), args.cache_dir)
        study = run_keyframe_study(store, args.codecs, args.codings, args.quality, args.clip_len)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    study = {"dataset": "synthetic sample dataset" if args.src is None else Path(src).name,
             "command": shlex.join(["python", "-m", "nvrloader.study", *sys.argv[1:]]), **study}
    print(table_markdown(study))
    paths = write_outputs(study, args.output)
    print("wrote " + ", ".join(map(str, paths)))
    return 0


def main(argv: list[str] | None = None) -> int:
    from nvrloader.study.rd import StudyConfig, run_study
    from nvrloader.study.rdreport import table_markdown

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.study == "keyframes":
        return keyframes_main(args)
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
