"""The D-NeRV paper's Table 8 on archives that exist: action recognition on raw frames versus each archive.

    python -m recognition.compare raw.nvr h264_lo.nvr h264_hi.nvr dnerv_S.nvr -o runs/compare \\
        --recipe synthetic --seeds 0,1,2

For every archive two settings are scored, as in the paper:
  - "train": TSM trained on the decoded videos, tested on the raw frames;
  - "test":  TSM trained on the raw frames, tested on the decoded videos.
The raw/raw model of each seed is trained once and reused for every "test" row. Archives of one codec
are that codec's levels, lowest bpp first (the table's columns); bpp comes from each archive's real
bytes. Finished rows are reused and interrupted ones resumed, so re-running the same command after a
crash only does what is missing. The rows are those of `recognition.study`, which also builds the
archives; this writes the same table.md, results.json and accuracy_bpp.png.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python recognition/compare.py`: import this checkout, not the script's folder
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from nvrloader.cliargs import comma_list  # noqa: E402
from recognition.config import TrainConfig  # noqa: E402
from recognition.train_tsm import add_training_arguments, config_from_args  # noqa: E402


def compare(raw_path: Path, archives: list[Path], out_dir: Path, cfg: TrainConfig, allow_mismatch: bool = False,
            seeds: tuple[int, ...] | None = None, jobs: int = 0, threads: int = 1, command: str = "",
            progress: bool | None = None) -> dict[str, Any]:
    """Every row of the table over ``seeds`` (default: the config's seed); returns the results it wrote."""
    from recognition.study.rows import Archive, archive_info, check_compatible
    from recognition.study.run import run_rows

    raw = archive_info(Path(raw_path))
    others = [archive_info(Path(p)) for p in archives]
    check_compatible(raw, others, allow_mismatch)
    entries = []
    for codec in dict.fromkeys(o["codec"] for o in others):
        mine = sorted((o for o in others if o["codec"] == codec), key=lambda o: o["bpp"])
        entries += [Archive(o["name"], codec, f"level {rank}", Path(o["archive"])) for rank, o in enumerate(mine, 1)]
    return run_rows(Archive(raw["name"], "raw", "raw", Path(raw_path)), entries, cfg, seeds or (cfg.seed,),
                    Path(out_dir), jobs, threads, command, cfg.progress if progress is None else progress,
                    allow_mismatch)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m recognition.compare", description=__doc__.splitlines()[0])
    ap.add_argument("raw", type=Path, help="archive of the raw frames (codec raw)")
    ap.add_argument("archives", type=Path, nargs="+", help="compressed archives of the same videos (any codecs)")
    ap.add_argument("-o", "--output-dir", type=Path, default=Path("runs/compare"), help="default runs/compare")
    ap.add_argument("--allow-mismatch", action="store_true", help="compare archives whose frames differ "
                    "(videos, frame counts, fps or size); classes must still agree")
    ap.add_argument("--seeds", type=comma_list(int), help="train every row once per seed, e.g. 0,1,2 (default: --seed)")
    ap.add_argument("--jobs", type=int, default=0, help="worker processes running rows side by side (default 0: "
                    "in turn, in this process)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (with --jobs; default 1)")
    add_training_arguments(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    from nvrloader.archive import ArchiveError            # after parsing: --help stays fast
    from recognition.study.table import markdown

    try:
        results = compare(args.raw, args.archives, args.output_dir, config_from_args(args), args.allow_mismatch,
                          args.seeds, args.jobs, args.threads,
                          shlex.join(["python", "-m", "recognition.compare", *argv]))
    except (ArchiveError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
