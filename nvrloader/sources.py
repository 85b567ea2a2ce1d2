"""Find the videos of a dataset folder and give each a label and a train/test split.

Three layouts are recognised:
- ``ucf101``: the official UCF101 layout, ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` with the
  ``ucfTrainTestlist`` folder (classInd.txt, trainlist0K.txt, testlist0K.txt), official splits 1-3;
- ``class_folders``: one sub-folder per class, no lists; the split is derived from the file names;
- ``flat``: loose videos, unlabelled.
A layout that fits none of these raises one ``SourceError`` saying what was expected and what was found.
"""

from __future__ import annotations

import hashlib
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")
SPLITS = ("train", "test")
UCF_SPLITS = (1, 2, 3)
UCF_VIDEO_DIR = "UCF-101"
UCF_LIST_DIR = "ucfTrainTestlist"
UCF_GROUPS_PER_SPLIT = 7      # UCF101 split k tests groups 7(k-1)+1 .. 7k
HASH_TEST_FRACTION = 4        # 1 in 4 files goes to test when names carry no group
_UCF_NAME = re.compile(r"^v_(?P<cls>.+)_g(?P<group>\d+)_c(?P<clip>\d+)$")
_SHOW = 5                     # how many offending items an error message lists


class SourceError(ValueError):
    """A dataset folder that does not match any supported layout."""


@dataclass(frozen=True)
class VideoRecord:
    name: str
    path: Path
    class_name: str | None
    label: int
    split: str
    group: int | None


@dataclass
class SourceIndex:
    root: Path
    layout: str
    classes: list[str]
    split: int
    records: list[VideoRecord]
    unlisted: list[Path] = field(default_factory=list)  # ucf101 only: videos on disk named by no list

    def subset(self, which: str) -> list[VideoRecord]:
        if which == "all":
            return list(self.records)
        if which not in SPLITS:
            raise ValueError(f"subset must be 'train', 'test' or 'all', got {which!r}")
        return [r for r in self.records if r.split == which]


def discover(src: str | Path, split: int = 1) -> SourceIndex:
    """Index a dataset folder; see the module docstring for the layouts."""
    root = Path(src).expanduser()
    if not root.exists():
        raise SourceError(f"{root}: source folder does not exist")
    if not root.is_dir():
        raise SourceError(f"{root}: expected a folder of videos, found a file")
    root = root.resolve()
    if isinstance(split, bool) or not isinstance(split, numbers.Integral) or split < 1:
        raise SourceError(f"{root}: split must be a positive integer, got {split!r}")
    split = int(split)
    list_dir = _find_list_dir(root)
    if list_dir is not None:
        return _discover_ucf(root, list_dir, split)
    return _discover_folders(root, split)


def ucf_group(name: str) -> int | None:
    """The UCF group number (gXX) of a file stem, or None when the name does not follow the pattern."""
    match = _UCF_NAME.match(name)
    return int(match["group"]) if match else None


def _is_video(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_video(p))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _sorted_records(records: list[VideoRecord]) -> list[VideoRecord]:
    return sorted(records, key=lambda r: (r.label, r.class_name or "", r.name, str(r.path)))


def _preview(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else "")


# ---------------------------------------------------------------- official UCF101 layout

def _find_list_dir(root: Path) -> Path | None:
    """Where classInd.txt lives: SRC/ucfTrainTestlist, SRC itself, or beside SRC when SRC is UCF-101/."""
    for candidate in (root / UCF_LIST_DIR, root, root.parent / UCF_LIST_DIR):
        if (candidate / "classInd.txt").is_file():
            return candidate
    return None


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; tolerant of CRLF endings and a UTF-8 BOM."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: expected a UTF-8 text list, found undecodable bytes ({exc})") from exc
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _read_class_index(path: Path) -> list[str]:
    by_index: dict[int, str] = {}
    for n, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise SourceError(f"{path}, line {n}: expected '<index> <ClassName>', found {line!r}")
        index, name = int(parts[0]), parts[1]
        if index in by_index or name in by_index.values():
            raise SourceError(f"{path}, line {n}: class index or name repeated in {line!r}")
        by_index[index] = name
    if not by_index:
        raise SourceError(f"{path}: expected one '<index> <ClassName>' line per class, found none")
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        missing = sorted(set(range(1, max(by_index) + 1)) - set(by_index))
        raise SourceError(
            f"{path}: expected class indices 1..{len(by_index)} without gaps, "
            f"found {len(by_index)} classes with indices up to {max(by_index)} (missing {_preview([str(i) for i in missing])})"
        )
    return [by_index[i] for i in range(1, len(by_index) + 1)]


def _read_split_list(path: Path, video_root: Path, classes: list[str], split_name: str) -> list[VideoRecord]:
    label_of = {name: i for i, name in enumerate(classes)}
    records, missing = [], []
    for n, line in _read_lines(path):
        parts = line.split()
        if len(parts) not in (1, 2) or (len(parts) == 2 and not parts[1].isdigit()):
            raise SourceError(f"{path}, line {n}: expected '<Class>/<video file> [<label>]', found {line!r}")
        rel = Path(parts[0].replace("\\", "/"))
        if len(rel.parts) < 2:
            raise SourceError(f"{path}, line {n}: expected '<Class>/<video file>', found {parts[0]!r} (no class folder)")
        class_name = rel.parts[0]
        if class_name not in label_of:
            raise SourceError(
                f"{path}, line {n}: class {class_name!r} is not in classInd.txt "
                f"(it lists {len(classes)} classes: {_preview(classes)})"
            )
        label = label_of[class_name]
        if len(parts) == 2 and int(parts[1]) - 1 != label:
            raise SourceError(
                f"{path}, line {n}: label {parts[1]} contradicts classInd.txt, which gives "
                f"{class_name!r} index {label + 1}"
            )
        video = video_root / rel
        if not video.is_file():
            missing.append(f"line {n}: {parts[0]}")
            continue
        records.append(VideoRecord(video.stem, video, class_name, label, split_name, ucf_group(video.stem)))
    if missing:
        raise SourceError(
            f"{path} names {len(missing)} video(s) that do not exist under {video_root}: {_preview(missing)}"
        )
    return records


def _discover_ucf(root: Path, list_dir: Path, split: int) -> SourceIndex:
    if split not in UCF_SPLITS:
        raise SourceError(f"{list_dir}: UCF101 lists define splits 1, 2 and 3, got split {split}")
    list_files = {s: list_dir / f"{s}list{split:02d}.txt" for s in SPLITS}
    absent = [p.name for p in list_files.values() if not p.is_file()]
    if absent:
        present = sorted(p.name for p in list_dir.glob("*.txt"))
        raise SourceError(
            f"{list_dir}: expected {', '.join(absent)} for split {split} beside classInd.txt, "
            f"found only {_preview(present)}"
        )
    video_root = root / UCF_VIDEO_DIR if (root / UCF_VIDEO_DIR).is_dir() else root
    classes = _read_class_index(list_dir / "classInd.txt")
    records = [r for s in SPLITS for r in _read_split_list(list_files[s], video_root, classes, s)]
    seen: dict[Path, VideoRecord] = {}
    for record in records:
        if record.path in seen:
            where = " and ".join(sorted({list_files[seen[record.path].split].name, list_files[record.split].name}))
            raise SourceError(f"{record.path} is listed twice (in {where}); each video belongs to one split")
        seen[record.path] = record
    on_disk = {v for d in _subdirs(video_root) for v in _videos_in(d)}
    unlisted = sorted(on_disk - seen.keys())
    return SourceIndex(root, "ucf101", classes, split, _sorted_records(records), unlisted)


# ---------------------------------------------------------------- folders without lists

def _hash_split(name: str, split: int) -> str:
    """A stable split that does not change between runs or machines (unlike Python's hash())."""
    digest = hashlib.sha256(f"{split}:{name}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % HASH_TEST_FRACTION == 0 else "train"


def _name_split(name: str, split: int) -> tuple[str, int | None]:
    """UCF-named files follow the official group rule so no group lands in both splits; others hash."""
    group = ucf_group(name)
    if group is None:
        return _hash_split(name, split), None
    first = UCF_GROUPS_PER_SPLIT * (split - 1) + 1
    return ("test" if first <= group < first + UCF_GROUPS_PER_SPLIT else "train"), group


def _discover_folders(root: Path, split: int) -> SourceIndex:
    scan = root / UCF_VIDEO_DIR if (root / UCF_VIDEO_DIR).is_dir() else root
    loose = _videos_in(scan)
    by_class = {d.name: videos for d in _subdirs(scan) if (videos := _videos_in(d))}
    if loose and by_class:
        raise SourceError(
            f"{scan}: expected either class sub-folders of videos or loose videos, found both "
            f"({len(by_class)} class folders: {_preview(list(by_class))}; "
            f"{len(loose)} loose videos: {_preview([v.name for v in loose])}); move the loose videos into a class folder"
        )
    if not loose and not by_class:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in scan.iterdir())
        found = f"{len(entries)} entries without videos: {_preview(entries)}" if entries else "an empty folder"
        raise SourceError(
            f"{scan}: expected videos ({', '.join(VIDEO_EXTENSIONS)}) directly in the folder or in class "
            f"sub-folders, or the UCF101 layout ({UCF_VIDEO_DIR}/ + {UCF_LIST_DIR}/classInd.txt); found {found}"
        )
    videos = loose or [v for vs in by_class.values() for v in vs]
    if split not in UCF_SPLITS and any(ucf_group(v.stem) is not None for v in videos):
        raise SourceError(f"{scan}: files named like UCF101 (v_X_gXX_cYY) use splits 1, 2 or 3, got split {split}")
    if loose:
        records = [VideoRecord(v.stem, v, None, -1, *_name_split(v.stem, split)) for v in loose]
        return SourceIndex(root, "flat", [], split, _sorted_records(records))
    # Case-insensitive order first: this reproduces UCF101's classInd numbering from its folder names.
    classes = sorted(by_class, key=lambda s: (s.lower(), s))
    records = [
        VideoRecord(v.stem, v, name, label, *_name_split(v.stem, split))
        for label, name in enumerate(classes)
        for v in by_class[name]
    ]
    return SourceIndex(root, "class_folders", classes, split, _sorted_records(records))
