"""HDF5 cache of the decoded frames of a dataset, so every codec (and "raw") decodes the sources once.

One file holds ``videos/{i:06d}``: uint8 [T, H, W, 3], one chunk per frame (random frame access reads
only what it needs), lzf-compressed (cheap to decompress). The file attributes hold a JSON ``meta``
and a ``complete`` flag. A build writes ``<out>.partial`` and renames it when done, so the final path
only ever holds a complete store. Each finished video is flagged, so an interrupted build resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

from nvrloader import video
from nvrloader.sources import SourceIndex, VideoRecord, discover

FORMAT_VERSION = 1
RESIZE_MODES = video.RESIZE_MODES
_DONE = "done"              # per-video attribute, set only after its frames are fully written
_RENUMBERED = "renumbered"  # set before closing the gaps of skipped videos; such a partial is not resumable


class FrameStoreError(RuntimeError):
    """A frame store file that is missing, incomplete or not a frame store."""


class FrameStore:
    """Random access to the frames of a built store; opens the HDF5 file lazily, once per process.

    h5py handles do not survive fork(), so DataLoader workers each open their own on first access.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        try:
            with h5py.File(self.path, "r") as f:
                complete = bool(f.attrs.get("complete", False))
                meta = json.loads(f.attrs["meta"]) if "meta" in f.attrs else None
        except (OSError, ValueError) as exc:
            raise FrameStoreError(f"{self.path}: cannot open as a frame store ({exc})") from exc
        if meta is None or meta.get("format") != FORMAT_VERSION:
            raise FrameStoreError(f"{self.path}: not a frame store (format {FORMAT_VERSION} metadata missing)")
        if not complete:
            raise FrameStoreError(f"{self.path}: frame store is incomplete (its build did not finish)")
        self.meta: dict[str, Any] = meta
        self.records = [_record_from_json(r) for r in meta["records"]]
        self.classes: list[str] = list(meta["classes"])
        self.fps: float | None = meta["fps"]
        self.height: int = meta["height"]
        self.width: int = meta["width"]
        self.resize_mode: str = meta["resize_mode"]
        self.skipped: list[dict[str, str]] = list(meta["skipped"])
        self._num_frames: list[int] = list(meta["num_frames"])

    def __len__(self) -> int:
        return len(self.records)

    def num_frames(self, i: int) -> int:
        return self._num_frames[i]

    def frames(self, i: int, idx: np.ndarray | slice | None = None) -> np.ndarray:
        """Frames of video i as uint8 [T, H, W, 3]; idx may be unsorted, repeated or negative."""
        data = self._handle()[_video_key(i)]
        if idx is None:
            return data[()]
        n = data.shape[0]
        if isinstance(idx, slice):
            start, stop, step = idx.indices(n)
            if step == 1:
                return data[start:max(start, stop)]
            idx = np.arange(start, stop, step)
        idx = np.asarray(idx)
        if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
            raise TypeError(f"{self.path}: frame indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
        if idx.size == 0:
            return np.empty((0, *data.shape[1:]), np.uint8)
        if idx.min() < -n or idx.max() >= n:
            raise IndexError(f"{self.path}: video {i} has {n} frames, frame index out of range in {idx.tolist()}")
        # h5py fancy indexing is slow (about 1 s for 8 frames) and wants sorted unique indices, so read
        # each run of consecutive unique frames as one slice, then expand to the requested order.
        unique, inverse = np.unique(idx % n, return_inverse=True)
        runs = np.split(unique, np.flatnonzero(np.diff(unique) != 1) + 1)
        return np.concatenate([data[run[0]:run[-1] + 1] for run in runs])[inverse]

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None

    def __enter__(self) -> FrameStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": None}


def build_framestore(index: SourceIndex, out: Path, fps: float | None, size: tuple[int, int],
                     resize_mode: str = "stretch", subset: str = "all", skip_bad: bool = False,
                     progress: bool = True) -> FrameStore:
    """Decode the subset into ``out``, reusing a complete store with the same key and resuming a partial one."""
    out = Path(out)
    records = index.subset(subset)
    fps, size = _settings(fps, size, resize_mode)
    if not records:
        raise ValueError(f"{index.root}: no videos in subset {subset!r} of split {index.split}")
    key = _store_key(index, records, fps, size, resize_mode, subset)
    if _complete_key(out) == key:
        return _reuse(out, skip_bad)
    partial = Path(f"{out}.partial")
    meta = {
        "format": FORMAT_VERSION, "key": key, "source": str(index.root), "layout": index.layout,
        "split": index.split, "subset": subset, "classes": index.classes, "fps": fps,
        "height": size[0], "width": size[1], "resize_mode": resize_mode,
        "records": [_record_to_json(r) for r in records],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _open_partial(partial, key) as f:
            f.attrs["meta"] = json.dumps(meta)   # lets a partial file be inspected; completed below
            failures = _decode_all(f, records, fps, size, resize_mode, skip_bad, progress)
            kept = [j for j in range(len(records)) if j not in failures]
            _renumber(f, kept)
            meta["records"] = [meta["records"][j] for j in kept]
            meta["num_frames"] = [int(f[_video_key(i)].shape[0]) for i in range(len(kept))]
            meta["skipped"] = [{"name": records[j].name, "path": str(records[j].path), "error": failures[j]}
                               for j in sorted(failures)]
            f.attrs["meta"] = json.dumps(meta)
            f.attrs["complete"] = True
    except Exception:
        # a failed decode (bad video, full disk) leaves nothing behind; an interrupt (Ctrl-C) or a
        # killed process keeps the partial store, which the next build resumes
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    if failures:
        _warn_skipped(out, meta["skipped"])
    return FrameStore(out)


def open_or_build_framestore(src: str | Path | SourceIndex, cache_dir: Path, fps: float | None,
                             size: tuple[int, int], resize_mode: str = "stretch", split: int = 1,
                             subset: str = "all", skip_bad: bool = False, progress: bool = True) -> FrameStore:
    """The store for these settings in ``cache_dir``, built on first use. A SourceIndex brings its own split."""
    index = src if isinstance(src, SourceIndex) else discover(src, split)
    return build_framestore(index, Path(cache_dir) / store_filename(index, fps, size, resize_mode, subset),
                            fps, size, resize_mode, subset, skip_bad, progress)


def store_filename(index: SourceIndex, fps: float | None, size: tuple[int, int], resize_mode: str,
                   subset: str) -> str:
    """Readable settings plus a short hash of everything that identifies the store."""
    fps, size = _settings(fps, size, resize_mode)
    ident = json.dumps([str(index.root), index.split, subset, fps, list(size), resize_mode])
    digest = hashlib.sha256(ident.encode()).hexdigest()[:10]
    name = re.sub(r"[^a-z0-9]+", "-", index.root.name.lower()).strip("-") or "videos"
    rate = "native" if fps is None else f"{fps:g}fps"
    return f"{name}-{rate}-{size[0]}x{size[1]}-{resize_mode}-{subset}-{digest}.h5"


# ---------------------------------------------------------------- building blocks

def _settings(fps: float | None, size: tuple[int, int], resize_mode: str) -> tuple[float | None, tuple[int, int]]:
    """Validated settings in one canonical form, so 2 and 2.0 fps name the same store."""
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive or None, got {fps!r}")
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be (height, width) in positive whole pixels, got {size!r}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    return (None if fps is None else float(fps)), (int(size[0]), int(size[1]))


def _store_key(index: SourceIndex, records: list[VideoRecord], fps: float | None, size: tuple[int, int],
               resize_mode: str, subset: str) -> str:
    """Settings plus a digest of the video list (paths, labels, file sizes): a changed source is rebuilt."""
    listing = hashlib.sha256()
    for r in records:
        listing.update(f"{r.path}\t{r.label}\t{r.split}\t{r.path.stat().st_size}\n".encode())
    return json.dumps({"format": FORMAT_VERSION, "source": str(index.root), "split": index.split,
                       "subset": subset, "fps": fps, "size": list(size), "resize_mode": resize_mode,
                       "videos": listing.hexdigest()})


def _complete_key(path: Path) -> str | None:
    """The key of a complete store at path, or None when there is none (or it is unreadable)."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs["key"]) if f.attrs.get("complete", False) and "key" in f.attrs else None
    except OSError:
        return None


def _reuse(out: Path, skip_bad: bool) -> FrameStore:
    store = FrameStore(out)
    if store.skipped and not skip_bad:
        first = store.skipped[0]
        raise video.VideoError(f"{first['path']}: left out of {out} by an earlier skip_bad build: {first['error']} "
                               f"({len(store.skipped)} videos skipped; pass skip_bad=True to accept)")
    if store.skipped:
        _warn_skipped(out, store.skipped)
    return store


def _open_partial(partial: Path, key: str) -> h5py.File:
    """Reopen a resumable partial build with the same key; otherwise start a fresh one."""
    if partial.exists():
        try:
            f = h5py.File(partial, "a")
        except OSError as exc:
            if "lock" in str(exc).lower():
                raise FrameStoreError(f"{partial}: locked; another process is building this store") from exc
            warnings.warn(f"{partial}: unreadable partial build ({exc}); starting again", stacklevel=3)
        else:
            if f.attrs.get("key") == key and not f.attrs.get(_RENUMBERED, False):
                return f
            f.close()
        partial.unlink()
    f = h5py.File(partial, "w")
    f.attrs["key"] = key
    f.attrs["complete"] = False
    f.create_group("videos")
    return f


def _decode_all(f: h5py.File, records: list[VideoRecord], fps: float | None, size: tuple[int, int],
                resize_mode: str, skip_bad: bool, progress: bool) -> dict[int, str]:
    """Decode every video not already done into videos/{j}; returns {j: error} for skipped videos."""
    videos = f["videos"]
    for name in list(videos):
        if not videos[name].attrs.get(_DONE, False):
            del videos[name]   # written when the last build stopped; redo it
    todo = [j for j in range(len(records)) if f"{j:06d}" not in videos]
    failures: dict[int, str] = {}
    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc="frame store", unit="video",
               disable=not progress)
    with bar:
        for j in todo:
            bar.set_postfix_str(records[j].name, refresh=False)
            try:
                frames = video.read_video(records[j].path, fps=fps, size=size, resize_mode=resize_mode)
                _check_frames(records[j].path, frames, size)
            except video.VideoError as exc:
                if not skip_bad:
                    raise
                failures[j] = str(exc)
            else:
                data = videos.create_dataset(f"{j:06d}", data=frames, chunks=(1, *frames.shape[1:]),
                                             compression="lzf")
                data.attrs[_DONE] = True
                f.flush()
            bar.update()
    return failures


def _check_frames(path: Path, frames: np.ndarray, size: tuple[int, int]) -> None:
    if frames.shape[0] == 0:
        raise video.VideoError(f"{path}: no frames decoded")
    if frames.dtype != np.uint8 or frames.shape[1:] != (*size, 3):
        raise ValueError(f"{path}: read_video returned {frames.dtype} {frames.shape}, expected uint8 [T, {size[0]}, {size[1]}, 3]")


def _renumber(f: h5py.File, kept: list[int]) -> None:
    """Close the gaps left by skipped videos so store index i is videos/{i:06d}."""
    if kept == list(range(len(kept))):
        return
    f.attrs[_RENUMBERED] = True
    f.flush()
    for i, j in enumerate(kept):
        if i != j:
            f["videos"].move(f"{j:06d}", f"{i:06d}")


def _warn_skipped(out: Path, skipped: list[dict[str, str]]) -> None:
    lines = "\n".join(f"  {s['path']}: {s['error']}" for s in skipped)
    warnings.warn(f"{out}: {len(skipped)} unreadable video(s) left out:\n{lines}", stacklevel=3)


def _video_key(i: int) -> str:
    return f"videos/{i:06d}"


def _record_to_json(r: VideoRecord) -> dict[str, Any]:
    return {"name": r.name, "path": str(r.path), "class_name": r.class_name, "label": r.label,
            "split": r.split, "group": r.group}


def _record_from_json(d: dict[str, Any]) -> VideoRecord:
    return VideoRecord(d["name"], Path(d["path"]), d["class_name"], d["label"], d["split"], d["group"])
