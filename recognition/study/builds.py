"""The study's archives: raw frames, and every codec at every bpp level on the same frames.

Neural codecs are built first, each for the level's bpp with the same fitting time (the builds of
`nvrloader.study.rd`, resumable and recorded); H.264/H.265 then take the real bpp of the reference
codec's archive at that level (D-NeRV by default), as `--match` does, so classical and neural archives
meet at the bpp the neural one actually landed on. Every archive uses one FrameSpec: the same frames.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nvrloader.codecs.options import StreamOptions, codec_options
from nvrloader.reporting import write_json
from nvrloader.study.rd import Cell, StudyConfig, build_cell, finished, parse_variant, read_record, settings
from recognition.study.runner import Skip

RAW = "raw"


def is_classical(codec: str) -> bool:
    """H.264/H.265 (or a variant of one, e.g. ``h264:preset=slow``)."""
    return issubclass(codec_options()[parse_variant(codec)[0]], StreamOptions)


def cell(config: StudyConfig, out: Path, codec: str, level: float, target: float | None = None) -> Cell:
    return Cell(codec, level, out / "builds", target)


def built_bpp(config: StudyConfig, out: Path, codec: str, level: float) -> float | None:
    """The real bpp of a finished neural build (None: it could not reach the level)."""
    record = read_record(cell(config, out, codec, level))
    if record is None or record.get("status") not in ("done", "unreachable"):
        raise Skip(f"{codec} at {level:g} bpp has no finished build")
    return record["summary"]["bpp"] if record["status"] == "done" else None


def target_of(config: StudyConfig, out: Path, codec: str, level: float, reference: str | None) -> float | None:
    """A classical codec's target: the reference codec's real bpp at this level (None: the level itself)."""
    if reference is None or not is_classical(codec):
        return None
    return built_bpp(config, out, reference, level)


def plan_cell(config: StudyConfig, out: Path, codec: str, level: float, reference: str | None,
              progress: bool) -> tuple[Any, tuple] | None:
    """None if the cell is built with the settings it would be built with now, else the build to run."""
    c = cell(config, out, codec, level, target_of(config, out, codec, level, reference))
    wanted = settings(config, c)
    if finished(read_record(c), wanted, c):
        return None
    return build_cell, (config, c, wanted, progress)


def archive_of(config: StudyConfig, out: Path, codec: str, level: float) -> Path:
    """The cell's archive; Skip if the codec could not reach the level's bpp (or the build failed)."""
    c = cell(config, out, codec, level)
    record = read_record(c)
    if record is None or record.get("status") != "done":
        raise Skip(f"{c.name}: {record.get('status') if record else 'not built'}"
                   f"{': ' + record.get('message', '') if record else ''}")
    return c.archive


# ----------------------------------------------------------------------------- raw frames

def raw_paths(out: Path) -> tuple[Path, Path]:
    folder = out / "builds"
    return folder / f"{RAW}.nvr", folder / f"{RAW}.study.json"


def raw_settings(config: StudyConfig) -> dict[str, Any]:
    from nvrloader.training import plain

    return plain({"codec": RAW, "source": str(Path(config.source).resolve()), "frames": config.frames})


def plan_raw(config: StudyConfig, out: Path) -> tuple[Any, tuple] | None:
    archive, record_path = raw_paths(out)
    wanted = raw_settings(config)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = None
    if record and record.get("settings") == wanted and record.get("status") == "done" and archive.is_file():
        return None
    return build_raw, (config, out, wanted)


def build_raw(config: StudyConfig, out: Path, wanted: dict[str, Any]) -> dict[str, Any]:
    """The raw frames as an archive (what every model is tested on in the "train" setting)."""
    from nvrloader.build import build_archive
    from nvrloader.codecs.options import RawOptions

    archive, record_path = raw_paths(out)
    archive.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = build_archive(config.source, archive, RAW, RawOptions(), frames=config.frames, evaluate=False,
                           force=True, cache_dir=config.cache_dir, progress=False)
    record = {"settings": wanted, "status": "done", "summary": {"bpp": report["bpp"]},
              "wall_seconds": round(time.perf_counter() - start, 2)}
    write_json(record_path, record)
    return record
