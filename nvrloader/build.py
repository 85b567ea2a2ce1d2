"""`python -m nvrloader.build SRC -o OUT.nvr --codec ...`: compress a video dataset into one archive.

With no SRC (or --demo) the synthetic sample dataset is generated and used, so the whole chain runs
on a fresh machine with nothing downloaded. `build_archive` is the same build as a Python call.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nvrloader.cliargs import parse_resolution
from nvrloader.sources import SPLITS as VIDEO_SPLITS, UCF_SPLITS
from nvrloader.video import RESIZE_MODES

if TYPE_CHECKING:
    from nvrloader.framestore import FrameStore

DEMO = {"classes": 6, "videos_per_class": 12, "seed": 0}
DEFAULT_CODEC = "dnerv"
SUBSETS = (*VIDEO_SPLITS, "all")


@dataclass(frozen=True)
class FrameSpec:
    """Which frames a build takes from the source: two archives compare only if these agree."""

    fps: float = 2.0                          # frames per second taken from each video (papers: 2)
    resolution: tuple[int, int] = (256, 320)  # HxW (papers: 256x320)
    resize_mode: str = "stretch"
    split: int = 1                            # UCF101 train/test list
    subset: str = "all"                       # videos to compress

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"FrameSpec.fps must be > 0, got {self.fps}")
        if len(self.resolution) != 2 or min(self.resolution) <= 0:
            raise ValueError(f"FrameSpec.resolution must be (height, width) > 0, got {self.resolution}")
        object.__setattr__(self, "resolution", tuple(int(v) for v in self.resolution))
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"FrameSpec.resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.split not in UCF_SPLITS or self.subset not in SUBSETS:
            raise ValueError(f"FrameSpec.split must be in {UCF_SPLITS} and subset in {SUBSETS}, "
                             f"got {self.split!r}, {self.subset!r}")

    @classmethod
    def of_meta(cls, m: dict[str, Any]) -> "FrameSpec":
        """The frames an archive with this meta was built from (what `--match` copies)."""
        return cls(float(m["fps"]), (int(m["height"]), int(m["width"])), m.get("resize_mode", "stretch"),
                   int(m.get("split", 1)), m.get("subset", "all"))

    @classmethod
    def of_archive(cls, path: str | os.PathLike) -> "FrameSpec":
        from nvrloader.archive import open_archive

        with open_archive(path) as archive:
            return cls.of_meta(archive.meta)


def demo_source(cache_dir: Path) -> Path:
    """The synthetic sample dataset, generated once into the cache."""
    from nvrloader import synth

    root = cache_dir / "synth-c{classes}-v{videos_per_class}-s{seed}".format(**DEMO)
    if not root.exists():
        synth.generate(root, **DEMO)
    return root


def _check_output(output: Path, force: bool) -> None:
    """Refuse an output we cannot or should not write, before any work is done."""
    if output.is_dir():
        raise ValueError(f"{output}: output is a directory; give an archive file name such as {output / 'x.nvr'}")
    if not output.parent.exists():
        raise ValueError(f"{output}: folder {output.parent} does not exist")
    if output.exists() and not force:
        raise ValueError(f"{output}: archive exists; pass force=True (--force) to overwrite it")


def _main_process_first(fn: Callable[[], Any]) -> Any:
    """Rank 0 does ``fn`` (e.g. building the frame store) while the other ranks wait, then they reuse it."""
    from nvrloader.distributed import barrier, is_main_process

    if not is_main_process():
        barrier()
    result = fn()
    if is_main_process():
        barrier()
    return result


def frame_store(source: str | os.PathLike | None, frames: FrameSpec, cache_dir: Path, skip_bad: bool = False,
                progress: bool = True) -> tuple[Path, FrameStore]:
    """The source folder (None: the synthetic sample dataset) and its FrameStore for ``frames``,
    built into ``cache_dir`` on first use (by the main process first under torchrun)."""
    from nvrloader.framestore import open_or_build_framestore
    from nvrloader.sources import discover

    src = _main_process_first(lambda: demo_source(cache_dir)) if source is None else Path(source)
    index = discover(src, split=frames.split)
    store = _main_process_first(lambda: open_or_build_framestore(
        index, cache_dir, frames.fps, frames.resolution, frames.resize_mode, split=frames.split,
        subset=frames.subset, skip_bad=skip_bad, progress=progress))
    return src, store


def build_archive(source: str | os.PathLike | None, output: str | os.PathLike, codec: str = DEFAULT_CODEC,
                  options: Any = None, *, frames: FrameSpec | None = None, target_bpp: float | None = None,
                  match: str | os.PathLike | None = None, device: str = "auto", resume: bool = False,
                  evaluate: bool = True, report: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None, skip_bad: bool = False, force: bool = False,
                  keep_checkpoint: bool = False, progress: bool = True) -> dict[str, Any] | None:
    """Sources -> frame store -> codec -> archive -> report JSON; returns the report.

    ``source`` None builds on the synthetic sample dataset. ``options`` is the codec's options
    dataclass (`nvrloader.codecs.options`; default: its defaults). ``match`` takes the frames
    (fps, resolution, resize mode, split, subset) and the bpp of an existing archive; ``frames``
    or ``target_bpp`` given with it must agree. Under torchrun only rank 0 writes and reports (the
    others return None).
    """
    from nvrloader.archive import ArchiveWriter, open_archive
    from nvrloader.codecs import EncodeJob, get_codec
    from nvrloader.codecs.options import codec_options
    from nvrloader.device import resolve_device
    from nvrloader.distributed import init_distributed, is_main_process
    from nvrloader.eval import evaluate as evaluate_archive, size_report
    from nvrloader.rate import Budget
    from nvrloader.reporting import default_cache_dir, write_json

    output = Path(output)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    coder = get_codec(codec)
    options_cls = codec_options()[codec]
    options = options_cls() if options is None else options
    if not isinstance(options, options_cls):
        raise ValueError(f"codec {codec!r} takes {options_cls.__name__}, got {type(options).__name__}")
    if match is not None:
        with open_archive(match) as other:
            matched, matched_bpp = FrameSpec.of_meta(other.meta), size_report(other)["bpp"]
        if frames is not None and frames != matched:
            raise ValueError(f"frames {frames} contradict the matched archive {match} ({matched})")
        if target_bpp is not None and abs(target_bpp / matched_bpp - 1) > 1e-9:
            raise ValueError(f"target bpp {target_bpp} contradicts the matched archive {match} ({matched_bpp:.6g})")
        frames, target_bpp = matched, matched_bpp
    frames = frames or FrameSpec()
    if target_bpp is not None and not coder.rate_controlled:
        raise ValueError(f"codec {codec!r} has no rate setting, so a target bpp ({target_bpp}) cannot be honoured")
    _check_output(output, force or resume)
    coder.validate(options, frames.resolution)

    _, world, _ = init_distributed()
    if world > 1 and not coder.distributed:
        raise ValueError(f"codec {codec!r} does not use several processes; run it without torchrun")
    src, store = frame_store(source, frames, cache_dir, skip_bad, progress)
    dev = resolve_device(device)
    video_ids = list(range(len(store)))
    if not video_ids:
        raise ValueError(f"{src}: no videos in subset {frames.subset!r}")
    meta: dict[str, Any] = {
        "videos": [{"name": r.name, "class_name": r.class_name, "label": r.label, "split": r.split,
                    "group": r.group, "num_frames": store.num_frames(i)} for i, r in enumerate(store.records)],
        "classes": list(store.classes), "fps": frames.fps, "height": store.height, "width": store.width,
        "resize_mode": frames.resize_mode, "source": str(Path(src).resolve()), "split": frames.split,
        "subset": frames.subset, "codec": codec,
    }
    budget = Budget(sum(store.num_frames(v) for v in video_ids) * store.height * store.width, target_bpp, meta)
    checkpoint_dir = output.with_name(output.name + ".ckpt")
    job = EncodeJob(store, video_ids, None, options, budget, dev, checkpoint_dir, resume, progress)
    start = time.perf_counter()
    if not is_main_process():  # the other ranks only share the fitting
        coder.encode(job)
        return None
    with ArchiveWriter(output, codec) as writer:
        job.writer = writer
        config = coder.encode(job)
        extras = config.pop("report", {})
        writer.set_meta({**meta, "codec_config": config})
    seconds = time.perf_counter() - start
    if not keep_checkpoint and not extras.get("stopped_early"):  # a budget-stopped fit can be resumed
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if evaluate:
        result = evaluate_archive(output, store, str(dev), progress)
    else:
        with open_archive(output) as archive:
            result = size_report(archive)
    result = {"codec": codec, "archive": str(output), "options": dataclasses.asdict(options),
              "frames": dataclasses.asdict(frames), **result, "encode_seconds": round(seconds, 2),
              "codec_config": config, **extras}
    write_json(report or output.with_suffix(".json"), result)
    return result


# ----------------------------------------------------------------------------- command line

def build_parser() -> tuple[argparse.ArgumentParser, dict[str, set[str]]]:
    from nvrloader.codecs.options import add_option_arguments, codec_options
    from nvrloader.reporting import default_cache_dir

    spec = FrameSpec()
    ap = argparse.ArgumentParser(prog="python -m nvrloader.build", description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", help="dataset folder (UCF101 layout, class folders or loose videos); "
                    "omit for the synthetic sample dataset")
    ap.add_argument("-o", "--output", type=Path, help="archive to write (default: <codec>.nvr)")
    ap.add_argument("--codec", default=DEFAULT_CODEC, choices=list(codec_options()), help=f"codec to build (default {DEFAULT_CODEC})")
    ap.add_argument("--demo", action="store_true", help="build on the synthetic sample dataset")
    # frame flags default to None so that --match can tell an explicit value from a default
    ap.add_argument("--fps", type=float, help=f"frames per second taken from each video (default {spec.fps:g}, "
                    "the papers')")
    ap.add_argument("--resolution", type=parse_resolution, help="HxW (default %dx%d, the papers')" % spec.resolution)
    ap.add_argument("--resize-mode", choices=RESIZE_MODES, help=f"default {spec.resize_mode}")
    ap.add_argument("--split", type=int, choices=UCF_SPLITS, help=f"UCF101 train/test list (default {spec.split})")
    ap.add_argument("--subset", choices=SUBSETS, help=f"videos to compress (default {spec.subset})")
    ap.add_argument("--skip-bad", action="store_true", help="leave unreadable videos out and list them")
    ap.add_argument("--target-bpp", type=float, help="size the codec so the archive lands at this bpp")
    ap.add_argument("--match", type=Path, help="take the frames (fps, resolution, resize mode, split, subset) "
                    "and the bpp of an existing archive")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto: the GPU if there is one)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted build")
    ap.add_argument("--force", action="store_true", help="overwrite an existing archive")
    ap.add_argument("--keep-checkpoint", action="store_true", help="keep OUT.ckpt/ (fit checkpoints) after a "
                    "completed fit (a fit stopped by --time-budget always keeps it, to --resume)")
    ap.add_argument("--report", type=Path, help="report JSON (default: OUT.json next to the archive)")
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="frame stores and the sample dataset "
                    "(default $NVRLOADER_CACHE or ~/.cache/nvrloader: %(default)s)")
    ap.add_argument("--no-eval", action="store_true", help="skip the PSNR/MS-SSIM pass in the report")
    owners = add_option_arguments(ap, codec_options())
    return ap, owners


FRAME_FLAGS = tuple(f.name for f in dataclasses.fields(FrameSpec))


def frames_from_args(args: argparse.Namespace) -> FrameSpec | None:
    """A FrameSpec from the frame flags; with --match, None unless each given flag agrees with the archive."""
    given = {k: getattr(args, k) for k in FRAME_FLAGS if getattr(args, k) is not None}
    if args.match is None:
        return FrameSpec(**given)
    matched = dataclasses.asdict(FrameSpec.of_archive(args.match))
    clash = [f"--{k.replace('_', '-')} {v} (archive: {matched[k]})" for k, v in given.items()
             if (tuple(v) if k == "resolution" else v) != (tuple(matched[k]) if k == "resolution" else matched[k])]
    if clash:
        raise ValueError(f"--match {args.match}: these flags contradict it: {', '.join(clash)}")
    return None


def main(argv: list[str] | None = None) -> int:
    from nvrloader.archive import ArchiveError
    from nvrloader.codecs import CodecError
    from nvrloader.codecs.options import codec_options, options_from_values
    from nvrloader.distributed import shutdown_distributed
    from nvrloader.reporting import to_json
    from nvrloader.sources import SourceError
    from nvrloader.video import VideoError

    ap, owners = build_parser()
    args = ap.parse_args(argv)
    try:
        options = options_from_values(args.codec, codec_options()[args.codec], vars(args), owners)
        report = build_archive(None if args.demo else args.src, args.output or Path(f"{args.codec}.nvr"),
                               args.codec, options, frames=frames_from_args(args), target_bpp=args.target_bpp,
                               match=args.match, device=args.device, resume=args.resume,
                               evaluate=not args.no_eval, report=args.report, cache_dir=args.cache_dir,
                               skip_bad=args.skip_bad, force=args.force, keep_checkpoint=args.keep_checkpoint)
    except (SourceError, VideoError, ArchiveError, CodecError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    if report is None:
        return 0
    print(to_json({k: v for k, v in report.items() if k != "per_video"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
