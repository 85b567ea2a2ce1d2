"""`python -m nvrloader.bench A.nvr [B.nvr ...]`: decode throughput through the real DataLoader path.

Every archive is timed in the same run with the same loader settings, for each worker count asked
(``--num-workers 0,2``), the archives taking turns pass by pass, and reported as clips/s and frames/s with its ratio to the raw and H.264
archives of the list (found by codec; timing on a shared machine is noisy, ratios within one run
are what to compare). The decoder's counters say how many frames it decoded to deliver the clips.
Prints a table; ``-o out.json`` writes the JSON and a bar chart (log scale) beside it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from nvrloader.archive import ArchiveError
from nvrloader.dataset import NVRDataset
from nvrloader.decode import DecodeOptions
from nvrloader.device import resolve_device
from nvrloader.main_decode import request_loader
from nvrloader.reporting import save_figure, to_json, write_json

SAMPLING = {"eval": "TSN segment centres (testing)", "train": "random TSN offsets (training)"}
REFERENCES = ("raw", "h264")  # ratios are given to the first archive of each of these codecs
ON_OFF = {"auto": None, "on": True, "off": False}  # DecodeOptions switches (None: the default rule)
DECODE_IN = ("workers", "main")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches(ds: NVRDataset, batch_size: int, num_workers: int, decode_in: str) -> Iterable[Any]:
    """One pass of (clips, labels) batches: decoded by the workers, or by this process from the
    requests the workers return (`nvrloader.main_decode`, the GPU path)."""
    kwargs: dict[str, Any] = dict(batch_size=batch_size, num_workers=num_workers, shuffle=False,
                                  persistent_workers=num_workers > 0)
    return DataLoader(ds, **kwargs) if decode_in == "workers" else request_loader(ds, **kwargs)


class ArchiveTiming:
    """One archive read through one loader setting; passes are timed on request, so the archives of a
    run can take turns and share whatever load the machine is under."""

    def __init__(self, path: str | Path, batch_size: int, num_workers: int, device: str, num_segments: int,
                 max_batches: int | None, half: bool = False, decode_in: str = "workers",
                 options: DecodeOptions | None = None, sampling: str = "eval") -> None:
        self.path, self.num_workers, self.decode_in, self.max_batches = Path(path), num_workers, decode_in, max_batches
        self.ds = NVRDataset(path, split="all", num_segments=num_segments, device=device, half=half,
                             decode_options=options).train(sampling == "train")
        self.loader = batches(self.ds, batch_size, num_workers, decode_in)
        self.batch_size = batch_size
        self.runs: list[tuple[int, int, float]] = []

    def warm_up(self) -> None:
        """One untimed pass (opens the archive, starts workers, loads models, fills caches as training
        would), then the decoder's counters start from zero."""
        self._pass()
        self.ds.decoder.stats.reset()

    def timed_pass(self) -> None:
        self.runs.append(self._pass())

    def _pass(self) -> tuple[int, int, float]:
        self.ds.set_epoch(len(self.runs) + 1)   # training sampling: new offsets each pass, as each epoch
        clips = frames = 0
        start = time.perf_counter()
        for b, (clip, _) in enumerate(self.loader):
            clips += clip.shape[0]
            frames += clip.shape[0] * clip.shape[1]
            if self.max_batches is not None and b + 1 >= self.max_batches:
                break
        _sync(self.ds.device)
        return clips, frames, time.perf_counter() - start

    def result(self) -> dict[str, Any]:
        """Median clips/s and frames/s of the timed passes, and the decoder's work per pass (frames
        decoded versus delivered, keyframes decoded and encoded)."""
        n = len(self.runs)
        work = {k: v / n for k, v in self.ds.decoder.stats.snapshot().items()}
        clip_rates = [c / s for c, _, s in self.runs]
        # as measured in the processes that decoded (workers set theirs when they open the archive)
        threads = max(self.ds.decoder.stats.threads(), default=0)
        return {"archive": str(self.path), "name": self.path.name, "codec": self.ds.codec,
                "num_workers": self.num_workers, "decode_in": self.decode_in, "threads": threads,
                "batch_size": self.batch_size, "device": str(self.ds.device), "clips_per_pass": self.runs[0][0],
                "clips_per_s": statistics.median(clip_rates),
                "frames_per_s": statistics.median(f / s for _, f, s in self.runs),
                "clips_per_s_min": min(clip_rates), "clips_per_s_max": max(clip_rates), "clips_per_s_all": clip_rates,
                "frames_delivered_per_pass": work["frames_delivered"],
                "frames_decoded_per_pass": work["frames_decoded"],
                "decoded_per_delivered": work["frames_decoded"] / max(1.0, work["frames_delivered"]),
                "keyframes_decoded_per_pass": work["keyframes_decoded"],
                "keyframes_encoded_per_pass": work["keyframes_encoded"]}


def time_archives(paths: list[Path], num_workers: int, repeats: int, **settings: Any) -> list[dict[str, Any]]:
    """Every archive with ``num_workers`` workers: warm-ups first, then ``repeats`` rounds in which each
    archive takes one timed pass in turn."""
    timings = [ArchiveTiming(p, num_workers=num_workers, **settings) for p in paths]
    for t in timings:
        t.warm_up()
    for _ in tqdm(range(repeats), desc=f"bench, {num_workers} workers", unit="round", leave=False):
        for t in timings:
            t.timed_pass()
    return [t.result() for t in timings]


def add_ratios(results: list[dict[str, Any]]) -> None:
    """``ratio_to_raw`` / ``ratio_to_h264``: clips/s over those of the first archive of that codec timed
    with the same worker count (None when the list has none); ``ratio_to_first`` likewise."""
    for r in results:
        peers = [p for p in results if p["num_workers"] == r["num_workers"]]
        r["ratio_to_first"] = r["clips_per_s"] / peers[0]["clips_per_s"]
        for codec in REFERENCES:
            ref = next((p for p in peers if p["codec"] == codec), None)
            r[f"ratio_to_{codec}"] = None if ref is None else r["clips_per_s"] / ref["clips_per_s"]


def table(report: dict[str, Any]) -> str:
    """The results as a fixed-width text table, with the settings they were measured under."""
    def ratio(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    head = (f"decode throughput through DataLoader: device {report['device']}{' fp16' if report['half'] else ''}, "
            f"batch {report['batch_size']}, {report['num_segments']} frames/clip, median of {report['repeats']} "
            f"passes, decode in {report['decode_in']}, frames at {SAMPLING[report['sampling']]}")
    cols = f"{'archive':18} {'codec':6} {'workers':>7} {'threads':>7} {'clips/s':>9} {'frames/s':>9} " \
           f"{'x raw':>6} {'x h264':>6} {'decoded/delivered':>18}"
    lines = [head, cols, "-" * len(cols)]
    for r in report["results"]:
        lines.append(f"{r['name'][:18]:18} {r['codec']:6} {r['num_workers']:>7} {r['threads']:>7} "
                     f"{r['clips_per_s']:9.1f} {r['frames_per_s']:9.0f} {ratio(r['ratio_to_raw']):>6} "
                     f"{ratio(r['ratio_to_h264']):>6} "
                     f"{r['frames_decoded_per_pass']:8.0f}/{r['frames_delivered_per_pass']:<8.0f} ")
    return "\n".join(line.rstrip() for line in lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Grouped bars: clips/s of each archive (log scale, min-max whiskers), one bar per worker count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    names = list(dict.fromkeys(r["name"] for r in results))
    workers = list(dict.fromkeys(r["num_workers"] for r in results))
    width = 0.8 / len(workers)
    fig, ax = plt.subplots(figsize=(1.3 * len(names) * max(1, len(workers)) / 1.5 + 2.5, 4))
    for j, w in enumerate(workers):
        rows = {r["name"]: r for r in results if r["num_workers"] == w}
        xs = [i + (j - (len(workers) - 1) / 2) * width for i, n in enumerate(names) if n in rows]
        med = [rows[n]["clips_per_s"] for n in names if n in rows]
        err = [[rows[n]["clips_per_s"] - rows[n]["clips_per_s_min"] for n in names if n in rows],
               [rows[n]["clips_per_s_max"] - rows[n]["clips_per_s"] for n in names if n in rows]]
        threads = next(r["threads"] for r in rows.values())
        label = f"{w} workers, {threads} thread{'s' if threads > 1 else ''} each" if w else \
            f"main process, {threads} thread{'s' if threads > 1 else ''}"
        bars = ax.bar(xs, med, width, yerr=err, capsize=3, label=label)
        ax.bar_label(bars, labels=[f"{m:.0f}" for m in med], fontsize=7, padding=2)
    ax.set_xticks(range(len(names)), [f"{n}\n({next(r['codec'] for r in results if r['name'] == n)})"
                                      for n in names])
    ax.set_yscale("log")
    ax.set_ylabel("clips / s (median, min-max)")
    ax.set_title(f"decode throughput through DataLoader ({report['device']}, batch {report['batch_size']}, "
                 f"{report['num_segments']} frames/clip)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def parse_workers(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected worker counts like 0,2; got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected worker counts >= 0 like 0,2; got {text!r}")
    return values


def check_same_frames(paths: list[Path]) -> None:
    """Speeds compare only over the same videos, frame counts, fps and size."""
    from nvrloader.decode import ArchiveDecoder

    first = ArchiveDecoder(paths[0], "cpu").metadata
    for path in paths[1:]:
        found = first.differences(ArchiveDecoder(path, "cpu").metadata)
        if found:
            raise ValueError(f"{path} and {paths[0]} do not hold the same frames ({'; '.join(found)}); "
                             "pass --allow-mismatch to time them anyway")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nvrloader.bench", description=__doc__.splitlines()[0])
    ap.add_argument("archives", nargs="+", type=Path, help="archives to time (raw and H.264 among them give the "
                    "ratios); they must hold the same frames unless --allow-mismatch")
    ap.add_argument("--allow-mismatch", action="store_true", help="time archives of different frames anyway")
    ap.add_argument("--batch-size", type=int, default=16, help="clips per DataLoader batch (default 16)")
    ap.add_argument("--num-workers", type=parse_workers, default=[0, 2], help="worker counts, e.g. 0,2")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    ap.add_argument("--num-segments", type=int, default=8, help="TSN segments (frames) per clip (default 8)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes after the warm-up")
    ap.add_argument("--sampling", choices=tuple(SAMPLING), default="eval",
                    help="which frames each clip asks: " + "; ".join(f"{k}: {v}" for k, v in SAMPLING.items())
                         + " (D-NeRV delivers keyframes without its network, so this changes its speed)")
    ap.add_argument("--max-batches", type=int, help="stop each pass after this many batches")
    ap.add_argument("--half", action="store_true", help="fp16 neural decoding (CUDA only)")
    ap.add_argument("--decode-in", choices=("auto", *DECODE_IN), default="auto",
                    help="where batches are decoded: DataLoader workers, or the main process while workers "
                         "only sample (auto: main on CUDA, as CUDA does not run in forked workers)")
    ap.add_argument("--threads", type=int, help="torch threads of the main process (default: torch's)")
    ap.add_argument("--worker-threads", type=int, default=DecodeOptions.worker_threads,
                    help="torch threads in each decoding worker")
    ap.add_argument("--compile", metavar="BACKEND", help="torch.compile backend for neural decoding (e.g. "
                    "inductor on a GPU; default: eager)")
    ap.add_argument("--cache-mb", type=float, default=DecodeOptions.cache_mb,
                    help="per-process cache of decoded side information (D-NeRV keyframe pyramids)")
    ap.add_argument("--channels-last", choices=tuple(ON_OFF), default="auto",
                    help="NHWC convolutions (auto: on CUDA only)")
    ap.add_argument("--keyframes-as-frames", choices=tuple(ON_OFF), default="auto",
                    help="D-NeRV delivers requested keyframes as decoded, without its network (auto: as the "
                         "archive's build chose by PSNR)")
    ap.add_argument("-o", "--output", type=Path, help="JSON output (a bar chart PNG is written beside it)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    options = DecodeOptions(half=args.half, cache_mb=args.cache_mb, worker_threads=args.worker_threads,
                            channels_last=ON_OFF[args.channels_last],
                            keyframes_as_frames=ON_OFF[args.keyframes_as_frames], compile=args.compile)
    try:
        if not args.allow_mismatch:
            check_same_frames(args.archives)
        device = str(resolve_device(args.device))
        decode_in = args.decode_in if args.decode_in != "auto" else ("main" if device.startswith("cuda")
                                                                     else "workers")
        settings = dict(batch_size=args.batch_size, device=args.device, num_segments=args.num_segments,
                        max_batches=args.max_batches, half=args.half, decode_in=decode_in, options=options,
                        sampling=args.sampling)
        results = [r for w in args.num_workers for r in time_archives(args.archives, w, args.repeats, **settings)]
    except (ArchiveError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    add_ratios(results)
    report = {"batch_size": args.batch_size, "num_workers": args.num_workers, "device": device,
              "half": args.half, "decode_in": decode_in, "num_segments": args.num_segments,
              "sampling": args.sampling, "repeats": args.repeats, "cache_mb": args.cache_mb,
              "keyframes_as_frames": args.keyframes_as_frames, "compile": args.compile,
              "reference": str(args.archives[0]),
              "results": results}
    print(table(report))
    if args.output:
        write_json(args.output, report)
        plot(report, args.output.with_suffix(".png"))
        print(f"wrote {args.output} and {args.output.with_suffix('.png')}")
    else:
        print(to_json(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
