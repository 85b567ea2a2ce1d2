"""`python -m recognition.study SRC -o runs/study`: the D-NeRV paper's Table 8 on one dataset, with seeds.

Builds the raw frames and every codec at every bpp level (neural codecs first, with equal fitting
time; H.264/H.265 at the real bpp of the reference codec's archive, on the same frames), then trains
TSM on the raw frames ("raw / raw") and on every archive ("Train": tested on raw), and scores each
raw model on every archive ("Test"), once per seed. Training decodes its archive on the fly in the
DataLoader. A re-run skips every finished build and row. Writes table.md (mean ± std over seeds,
orderings stated only beyond twice the seed std), results.json and accuracy_bpp.png. Training takes
the synthetic recipe with batches of 8, 40 epochs and lr steps at 30 and 36 unless flags say otherwise.

    python -m nvrloader.synth data/study --mode study
    python -m recognition.study data/study -o runs/study
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from nvrloader.cliargs import comma_list, parse_resolution
from recognition.train_tsm import add_training_arguments, config_from_args


def build_parser() -> argparse.ArgumentParser:
    from recognition.study.options import STUDY_FRAMES, STUDY_TRAINING, StudyOptions

    d = StudyOptions(Path("."), Path("."))
    ap = argparse.ArgumentParser(prog="python -m recognition.study", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="dataset folder (UCF101 layout), e.g. from `python -m nvrloader.synth "
                    "OUT --mode study`")
    ap.add_argument("-o", "--output", type=Path, default=Path("runs/study"), help="study folder (default runs/study)")
    study = ap.add_argument_group("study")
    study.add_argument("--codecs", type=comma_list(str), default=d.codecs,
                       help=f"codecs compared with raw (default {','.join(d.codecs)})")
    study.add_argument("--bpp", type=comma_list(float), default=d.levels,
                       help=f"target bpp levels, the table's columns (default {','.join(map(str, d.levels))})")
    study.add_argument("--seeds", type=comma_list(int), default=d.seeds,
                       help=f"training seeds of every row (default {','.join(map(str, d.seeds))})")
    study.add_argument("--fps", type=float, default=STUDY_FRAMES.fps, help=f"default {STUDY_FRAMES.fps:g}")
    study.add_argument("--resolution", type=parse_resolution, default=STUDY_FRAMES.resolution,
                       help="HxW (default %dx%d)" % STUDY_FRAMES.resolution)
    study.add_argument("--time-budget", type=float, default=d.time_budget,
                       help=f"seconds of fitting per neural build (default {d.time_budget:g})")
    study.add_argument("--size", default=d.size, help=f"neural model preset (default {d.size})")
    study.add_argument("--keyframe-codec", help="D-NeRV keyframes (default: AV1 at frames up to 128x160)")
    study.add_argument("--reference", default=d.reference,
                       help=f"H.264/H.265 take this codec's real bpp at each level (default {d.reference}); "
                            "'none': every codec aims at the level")
    study.add_argument("--jobs", type=int, default=d.jobs,
                       help=f"worker processes running builds and rows side by side (default {d.jobs}; 0: in turn, "
                            "in this process)")
    study.add_argument("--threads", type=int, default=d.threads, help=f"torch threads per worker (default {d.threads})")
    study.add_argument("--cache-dir", type=Path, help="frame stores (default $NVRLOADER_CACHE or ~/.cache/nvrloader)")
    add_training_arguments(ap)
    ap.set_defaults(**STUDY_TRAINING)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.seed is not None:
        ap.error("a study trains every row with each of --seeds; --seed does not apply")
    from nvrloader.build import FrameSpec                 # after parsing: --help stays fast
    from recognition.study.options import StudyOptions
    from recognition.study.run import run_study
    from recognition.study.table import markdown

    try:
        opts = StudyOptions(source=args.src, output=args.output, codecs=args.codecs, levels=args.bpp, seeds=args.seeds,
                            frames=FrameSpec(fps=args.fps, resolution=args.resolution), time_budget=args.time_budget,
                            size=args.size, keyframe_codec=args.keyframe_codec,
                            reference=None if args.reference == "none" else args.reference,
                            train=config_from_args(args), jobs=args.jobs, threads=args.threads,
                            device=args.device, cache_dir=args.cache_dir)
        opts.rd_config()                                   # codecs, levels and budget checked before any work
        if not args.src.is_dir():
            raise ValueError(f"{args.src}: no such dataset folder")
        results = run_study(opts, command=shlex.join(["python", "-m", "recognition.study", *argv]),
                            progress=not args.no_progress)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(results))
    print(f"wrote {args.output}/table.md, results.json, accuracy_bpp.png")
    return 0
