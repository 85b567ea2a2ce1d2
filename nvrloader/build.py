"""`python -m nvrloader.build SRC -o OUT.nvr --codec ...`: compress a video dataset into one archive.

With no SRC (or --demo) the synthetic sample dataset is generated and used, so the whole chain runs
on a fresh machine with nothing downloaded.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from nvrloader import synth
from nvrloader.archive import ArchiveError, ArchiveWriter, open_archive
from nvrloader.codecs import CodecError, codec_classes, codec_names, get_codec
from nvrloader.device import resolve_device
from nvrloader.distributed import barrier, init_distributed, is_main_process, shutdown_distributed
from nvrloader.eval import evaluate, size_report
from nvrloader.framestore import open_or_build_framestore
from nvrloader.reporting import default_cache_dir, to_json, write_json
from nvrloader.sources import SourceError, discover
from nvrloader.video import VideoError

DEMO = {"classes": 6, "videos_per_class": 12, "seed": 0}


def parse_resolution(text: str) -> tuple[int, int]:
    """'256x320' -> (256, 320): height first, as the papers write it."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must look like 256x320 (HxW), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"resolution must be positive, got {text!r}")
    return h, w


def demo_source(cache_dir: Path) -> Path:
    """The synthetic sample dataset, generated once into the cache."""
    root = cache_dir / "synth-c{classes}-v{videos_per_class}-s{seed}".format(**DEMO)
    if not root.exists():
        synth.generate(root, **DEMO)
    return root


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, set[str]]]:
    ap = argparse.ArgumentParser(prog="python -m nvrloader.build", description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", help="dataset folder (UCF101 layout, class folders or loose videos); "
                    "omit for the synthetic sample dataset")
    ap.add_argument("-o", "--output", type=Path, help="archive to write (default: <codec>.nvr)")
    ap.add_argument("--codec", default="dnerv" if "dnerv" in codec_names() else "h264", choices=codec_names())
    ap.add_argument("--demo", action="store_true", help="build on the synthetic sample dataset")
    ap.add_argument("--fps", type=float, default=2.0, help="frames per second taken from each video (papers: 2)")
    ap.add_argument("--resolution", type=parse_resolution, default=(256, 320), help="HxW (papers: 256x320)")
    ap.add_argument("--resize-mode", choices=("stretch", "crop"), default="stretch")
    ap.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="UCF101 train/test list")
    ap.add_argument("--subset", choices=("train", "test", "all"), default="all", help="videos to compress")
    ap.add_argument("--skip-bad", action="store_true", help="leave unreadable videos out and list them")
    ap.add_argument("--target-bpp", type=float, help="size the codec so the archive lands at this bpp")
    ap.add_argument("--match", type=Path, help="shortcut for --target-bpp of an existing archive")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted build")
    ap.add_argument("--report", type=Path, help="report JSON (default: OUT.json next to the archive)")
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="frame stores, sample dataset")
    ap.add_argument("--no-eval", action="store_true", help="skip the PSNR/MS-SSIM pass in the report")
    owners: dict[str, set[str]] = {}
    for cls in codec_classes():
        group = ap.add_argument_group(f"{'/'.join(cls.names)} options")
        before = {a.dest for a in ap._actions}
        cls.add_arguments(group)
        for dest in {a.dest for a in ap._actions} - before:
            owners.setdefault(dest, set()).update(cls.names)
    return ap, owners


def check_options(args: argparse.Namespace, owners: dict[str, set[str]]) -> None:
    """Refuse options that belong to another codec, so a typo'd build never silently ignores them."""
    stray = [d for d, names in owners.items() if getattr(args, d) is not None and args.codec not in names]
    if stray:
        flags = ", ".join("--" + d.replace("_", "-") for d in sorted(stray))
        raise ValueError(f"{flags} do(es) not apply to codec {args.codec!r}")


def main_process_first(fn: Callable[[], Any]) -> Any:
    """Rank 0 does ``fn`` (e.g. building the frame store) while the other ranks wait, then they reuse it."""
    if not is_main_process():
        barrier()
    result = fn()
    if is_main_process():
        barrier()
    return result


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Sources -> frame store -> codec -> archive -> report. Under torchrun only rank 0 writes and reports."""
    _, world, _ = init_distributed()
    codec = get_codec(args.codec)
    if world > 1 and not codec.distributed:
        raise ValueError(f"codec {args.codec!r} does not use several processes; run it without torchrun")
    src = main_process_first(lambda: demo_source(args.cache_dir)) if args.demo or not args.src else Path(args.src)
    output = args.output or Path(f"{args.codec}.nvr")
    if args.match is not None:
        if args.target_bpp is not None:
            raise ValueError("give either --target-bpp or --match, not both")
        with open_archive(args.match) as other:
            args.target_bpp = size_report(other)["bpp"]
    device = resolve_device(args.device)
    index = discover(src, split=args.split)
    store = main_process_first(lambda: open_or_build_framestore(
        index, args.cache_dir, args.fps, args.resolution, args.resize_mode, split=args.split, subset=args.subset,
        skip_bad=args.skip_bad))
    video_ids = list(range(len(store)))
    if not video_ids:
        raise ValueError(f"{src}: no videos in subset {args.subset!r}")
    meta: dict[str, Any] = {
        "videos": [{"name": r.name, "class_name": r.class_name, "label": r.label, "split": r.split,
                    "group": r.group, "num_frames": store.num_frames(i)} for i, r in enumerate(store.records)],
        "classes": list(store.classes), "fps": args.fps, "height": store.height, "width": store.width,
        "resize_mode": args.resize_mode, "source": str(Path(src).resolve()), "split": args.split,
        "subset": args.subset, "codec": args.codec,
    }
    options = dict(vars(args))
    options["checkpoint_dir"] = output.with_name(output.name + ".ckpt")
    start = time.perf_counter()
    meta_bytes = len(json.dumps(meta).encode())
    if not is_main_process():  # the other ranks only share the fitting
        codec.encode(store, video_ids, None, options, device, meta_bytes)
        return None
    with ArchiveWriter(output, args.codec) as writer:
        config = codec.encode(store, video_ids, writer, options, device, meta_bytes)
        extras = config.pop("report", {})
        writer.set_meta({**meta, "codec_config": config})
    seconds = time.perf_counter() - start
    if args.no_eval:
        with open_archive(output) as archive:
            report = size_report(archive)
    else:
        report = evaluate(output, store, str(device))
    report = {"codec": args.codec, "archive": str(output), "size": options.get("size"), "params": 0,
              "train_seconds": 0.0, **report, "encode_seconds": round(seconds, 2), "codec_config": config, **extras}
    write_json(args.report or output.with_suffix(".json"), report)
    return report


def main(argv: list[str] | None = None) -> int:
    ap, owners = build_parser()
    args = ap.parse_args(argv)
    try:
        check_options(args, owners)
        report = run(args)
    except (SourceError, VideoError, ArchiveError, CodecError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    if report is None:
        return 0
    summary = {k: v for k, v in report.items() if k != "per_video"}
    print(to_json(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
