"""`python -m nvrloader.bench A.nvr [B.nvr ...]`: decode throughput through the real DataLoader path.

Every archive is timed in the same run with the same loader settings, and reported as a ratio to the
first one (put the raw archive first to get speed relative to reading frames).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from nvrloader.archive import ArchiveError
from nvrloader.dataset import NVRDataset
from nvrloader.reporting import save_figure, to_json, write_json


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_archive(path: str | Path, batch_size: int, num_workers: int, device: str, repeats: int,
                 num_segments: int, max_batches: int | None, half: bool = False) -> dict[str, Any]:
    """Clips/s and frames/s over ``repeats`` timed passes, after one untimed warm-up pass."""
    ds = NVRDataset(path, split="all", num_segments=num_segments, device=device, half=half).eval()
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, shuffle=False,
                        persistent_workers=num_workers > 0)

    def one_pass() -> tuple[int, int, float]:
        clips = frames = 0
        start = time.perf_counter()
        for b, (clip, _) in enumerate(loader):
            clips += clip.shape[0]
            frames += clip.shape[0] * clip.shape[1]
            if max_batches is not None and b + 1 >= max_batches:
                break
        _sync(ds.device)
        return clips, frames, time.perf_counter() - start

    one_pass()  # warm-up: opens archives, spins up workers, loads models, fills nothing timed
    runs = [one_pass() for _ in tqdm(range(repeats), desc=f"bench {Path(path).name}", unit="pass")]
    clip_rates = [c / s for c, _, s in runs]
    frame_rates = [f / s for _, f, s in runs]
    return {"archive": str(path), "codec": ds.codec, "clips_per_pass": runs[0][0],
            "clips_per_s": statistics.median(clip_rates), "frames_per_s": statistics.median(frame_rates),
            "clips_per_s_min": min(clip_rates), "clips_per_s_max": max(clip_rates),
            "clips_per_s_all": clip_rates}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r['codec']}\n{Path(r['archive']).name}" for r in results]
    med = [r["clips_per_s"] for r in results]
    err = [[m - r["clips_per_s_min"] for m, r in zip(med, results)],
           [r["clips_per_s_max"] - m for m, r in zip(med, results)]]
    fig, ax = plt.subplots(figsize=(1.6 * len(results) + 2, 3.5))
    ax.bar(names, med, yerr=err, capsize=4, color="tab:blue")
    ax.set_ylabel("clips / s (median, min-max)")
    ax.set_title("decode throughput through DataLoader")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nvrloader.bench", description=__doc__.splitlines()[0])
    ap.add_argument("archives", nargs="+", type=Path)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--num-segments", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5, help="timed passes after the warm-up")
    ap.add_argument("--max-batches", type=int, help="stop each pass after this many batches")
    ap.add_argument("--half", action="store_true", help="fp16 neural decoding (CUDA only)")
    ap.add_argument("-o", "--output", type=Path, help="JSON output (a bar chart PNG is written beside it)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    try:
        results = [time_archive(p, args.batch_size, args.num_workers, args.device, args.repeats,
                                args.num_segments, args.max_batches, args.half) for p in args.archives]
    except (ArchiveError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in results:
        r["ratio_to_first"] = r["clips_per_s"] / results[0]["clips_per_s"]
    report = {"batch_size": args.batch_size, "num_workers": args.num_workers, "device": args.device,
              "half": args.half, "repeats": args.repeats, "reference": str(args.archives[0]), "results": results}
    print(to_json(report))
    if args.output:
        write_json(args.output, report)
        plot(results, args.output.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
