"""`python -m nvrloader.eval ARCHIVE [--reference SRC]`: decode everything, score it against the source frames.

Quality is measured on what a user of the archive gets (the decoder's uint8 output) against the
frame store the archive was built from; bpp comes from the archive's own payload bytes.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nvrloader.archive import Archive, ArchiveError, open_archive
from nvrloader.decode import open_decoder
from nvrloader.device import resolve_device
from nvrloader.framestore import FrameStore, open_or_build_framestore
from nvrloader.metrics import bpp, ms_ssim, psnr
from nvrloader.rate import byte_split
from nvrloader.reporting import default_cache_dir, to_json, write_json

PAYLOAD_FIELDS = ("model", "keyframes", "embeddings", "streams", "frames", "meta", "config")


def size_report(archive: Archive) -> dict[str, Any]:
    """Bytes per part (meta and codec config apart) and bpp, from the archive's real bytes."""
    meta = archive.meta
    parts = byte_split(archive)
    num_frames = sum(int(v["num_frames"]) for v in meta["videos"])
    total = sum(parts.values())
    report = {"codec": archive.codec, "num_videos": len(meta["videos"]), "num_frames": num_frames,
              "height": meta["height"], "width": meta["width"], "fps": meta["fps"], "bytes_total": total}
    report.update({f"bytes_{g}": int(parts.get(g, 0)) for g in PAYLOAD_FIELDS})
    report["bpp"] = bpp(total, meta["height"], meta["width"], num_frames)
    return report


def quality_report(archive: Archive, store: FrameStore, device: torch.device,
                   progress: bool = True) -> dict[str, Any]:
    """PSNR and MS-SSIM of every decoded frame against the frame store, overall and per video.

    Overall figures are means over all frames of the per-frame values, as the papers average.
    """
    by_name = {r.name: i for i, r in enumerate(store.records)}
    decoder = open_decoder(archive, device)
    frame_psnr: list[float] = []
    frame_msssim: list[float] = []
    per_video = []
    for vid, video in enumerate(tqdm(archive.meta["videos"], desc="eval: decoding", unit="video",
                                     disable=not progress)):
        if video["name"] not in by_name:
            raise ArchiveError(f"{archive.path}: video {video['name']!r} is not in the reference {store.path}")
        ref = torch.from_numpy(store.frames(by_name[video["name"]])).permute(0, 3, 1, 2)
        out = decoder.decode([(vid, np.arange(video["num_frames"]))])[0].cpu()
        if out.shape != ref.shape:
            raise ArchiveError(f"{archive.path}: video {video['name']!r} decodes to {tuple(out.shape)}, "
                               f"reference has {tuple(ref.shape)}")
        p = psnr(out, ref).tolist()
        s = ms_ssim(out, ref).tolist()
        frame_psnr += p
        frame_msssim += s
        per_video.append({"name": video["name"], "frames": len(p), "psnr": float(np.mean(p)),
                          "ms_ssim": float(np.mean(s))})
    return {"psnr": float(np.mean(frame_psnr)), "ms_ssim": float(np.mean(frame_msssim)), "per_video": per_video}


def reference_store(archive: Archive, reference: str | os.PathLike | None, cache_dir: Path) -> FrameStore:
    """A frame store file, or the source folder turned into one at the archive's fps/resolution
    (default: the source folder the archive records)."""
    if reference is None:
        reference = archive.meta.get("source")
        if not reference or not Path(reference).is_dir():
            raise ArchiveError(f"{archive.path}: the source it was built from ({reference!r}) is not here; "
                               "give the reference folder or frame store")
    ref = Path(reference)
    if ref.is_file():
        return FrameStore(ref)
    meta = archive.meta
    return open_or_build_framestore(ref, cache_dir, meta["fps"], (meta["height"], meta["width"]),
                                    meta.get("resize_mode", "stretch"), split=meta.get("split", 1),
                                    subset=meta.get("subset", "all"))


def evaluate(archive_path: str | os.PathLike, store: FrameStore, device: str = "auto",
             progress: bool = True) -> dict[str, Any]:
    with open_archive(archive_path) as archive:
        return {**size_report(archive), **quality_report(archive, store, resolve_device(device), progress)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nvrloader.eval", description=__doc__.splitlines()[0])
    ap.add_argument("archive", help=".nvr archive to score")
    ap.add_argument("--reference", help="source dataset folder or frame store (.h5); default: the source "
                    "folder the archive records")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]: where neural codecs decode")
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="frame stores ($NVRLOADER_CACHE)")
    ap.add_argument("-o", "--output", type=Path, help="write the JSON here as well as printing it")
    args = ap.parse_args(argv)
    try:
        with open_archive(args.archive) as archive:
            store = reference_store(archive, args.reference, args.cache_dir)
        report = evaluate(args.archive, store, args.device)
    except (ArchiveError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(to_json({k: v for k, v in report.items() if k != "per_video"}))
    if args.output:
        write_json(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
