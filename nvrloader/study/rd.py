"""The builds of a rate-distortion study: every codec at every bpp level, resumable, equal fit time.

Each (codec, level) cell is one `build_archive` call writing ``<out>/builds/<codec>_<level>bpp.nvr``
(and its report JSON), plus a small record ``….study.json`` with the settings it was built with and
its outcome. A re-run reuses a cell whose record has the same settings (a finished build, or a
target the codec cannot reach), so an interrupted study picks up where it stopped; a neural fit
cut short by the interruption resumes from its checkpoint and keeps its time budget.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nvrloader.build import FrameSpec
from nvrloader.codecs.options import CodecOptions, KeyframeOptions, NeuralOptions, StreamOptions, codec_options
from nvrloader.reporting import write_json

LARGE_EPOCHS = 1_000_000          # the time budget, not the epoch count, ends every neural fit
REPORT_DROP = ("per_video", "fit")  # bulky report parts left out of the study's summaries


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``"dnerv:rgb_residual=false+fusion=concat"`` -> ("dnerv", {"rgb_residual": False, "fusion": "concat"}):
    a codec with some options changed, so an ablation is a study whose curves are variants of one codec."""
    from nvrloader.codecs.options import option_value

    codec, _, rest = spec.partition(":")
    known = codec_options()
    if codec not in known:
        raise ValueError(f"unknown codec {codec!r} in {spec!r}; choose from {', '.join(known)}")
    overrides: dict[str, Any] = {}
    for item in filter(None, rest.split("+")):
        key, eq, text = item.partition("=")
        if not eq:
            raise ValueError(f"{spec!r}: options of a variant look like key=value, got {item!r}")
        overrides[key] = option_value(known[codec], key, text)
    return codec, overrides


@dataclass(frozen=True)
class StudyConfig:
    """What a study builds; two runs with equal configs build identical cells."""

    codecs: tuple[str, ...]
    levels: tuple[float, ...]               # target bpp of each point on a curve
    time_budget: float                      # seconds of fitting per neural build
    frames: FrameSpec = FrameSpec()
    source: Path | None = None              # None: the synthetic sample dataset
    size: str = "tiny"                      # neural model preset
    keyframe_codec: str | None = None       # D-NeRV keyframes; None: the options' default
    epochs: int = LARGE_EPOCHS
    device: str = "auto"
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        known = codec_options()
        for spec in self.codecs:
            codec, _ = parse_variant(spec)
            if not issubclass(known[codec], (StreamOptions, NeuralOptions)):
                raise ValueError(f"codec {codec!r} has no rate setting, so it has no curve over bpp levels")
            self.options(spec)   # a variant's values are checked now, not after the first builds
        if not self.codecs or len(set(self.codecs)) != len(self.codecs):
            raise ValueError(f"codecs must be distinct and at least one, got {self.codecs}")
        if not self.levels or any(not (b > 0) for b in self.levels) or len(set(self.levels)) != len(self.levels):
            raise ValueError(f"bpp levels must be distinct positive numbers, got {self.levels}")
        if not self.time_budget > 0:
            raise ValueError(f"the time budget must be > 0 seconds, got {self.time_budget}")

    def options(self, spec: str) -> CodecOptions:
        """A codec's (or variant's) options: defaults for streams; preset, fit time (budget-bounded) and
        keyframes for neural codecs; then the variant's own values."""
        codec, overrides = parse_variant(spec)
        cls = codec_options()[codec]
        common: dict[str, Any] = {}
        if issubclass(cls, NeuralOptions):
            common = {"size": self.size, "epochs": self.epochs, "time_budget": self.time_budget}
        if issubclass(cls, KeyframeOptions) and self.keyframe_codec is not None:
            common["keyframe_codec"] = self.keyframe_codec
        return cls(**{**common, **overrides})

    def dataset_label(self) -> str:
        return "synthetic sample dataset" if self.source is None else Path(self.source).name


@dataclass(frozen=True)
class Cell:
    """One build of the study: a codec at a bpp level (its name), built for the level's bpp or for
    ``target``, e.g. the real bpp of another codec's archive at that level (as ``--match`` would)."""

    codec: str
    level: float
    folder: Path
    target: float | None = None

    @property
    def target_bpp(self) -> float:
        return self.level if self.target is None else self.target

    @property
    def name(self) -> str:
        variant = self.codec.replace(":", "-").replace("+", "-").replace("=", "")
        return f"{variant}_{self.level:g}bpp"

    @property
    def archive(self) -> Path:
        return self.folder / f"{self.name}.nvr"

    @property
    def report(self) -> Path:
        return self.archive.with_suffix(".json")    # where build_archive writes it

    @property
    def record(self) -> Path:
        return self.folder / f"{self.name}.study.json"

    @property
    def checkpoint(self) -> Path:
        return self.archive.with_name(self.archive.name + ".ckpt")


def cells(config: StudyConfig, out: Path) -> list[Cell]:
    return [Cell(c, b, out / "builds") for c in config.codecs for b in config.levels]


def settings(config: StudyConfig, cell: Cell) -> dict[str, Any]:
    """Everything a cell's result depends on, as JSON: a record with other settings is rebuilt."""
    from nvrloader.device import resolve_device

    source = "sample" if config.source is None else str(Path(config.source).resolve())
    return {"codec": cell.codec, "target_bpp": cell.target_bpp, "source": source,
            "frames": _plain(dataclasses.asdict(config.frames)),
            "options": _plain(dataclasses.asdict(config.options(cell.codec))),
            "device": resolve_device(config.device).type}


def _plain(value: Any) -> Any:
    """Tuples as lists, so settings compare equal to what JSON gives back."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_record(cell: Cell) -> dict[str, Any] | None:
    try:
        return json.loads(cell.record.read_text())
    except (OSError, ValueError):
        return None


def finished(record: dict[str, Any] | None, wanted: dict[str, Any], cell: Cell) -> bool:
    """A record with these settings whose outcome still stands (a built cell's archive is still there).

    A "failed" cell (refused for a reason other than its rate) is never finished: a re-run retries it."""
    if record is None or record.get("settings") != wanted:
        return False
    if record.get("status") == "unreachable":
        return True
    return record.get("status") == "done" and cell.archive.exists() and cell.report.exists()


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """A build report without its bulky per-video and fit-history parts."""
    return {k: v for k, v in report.items() if k not in REPORT_DROP}


def build_cell(config: StudyConfig, cell: Cell, wanted: dict[str, Any], progress: bool,
               fresh: bool = False) -> dict[str, Any]:
    """Build one cell and write its record; returns the record.

    A fit this cell started with the same settings and was interrupted in resumes from its
    checkpoint (its time budget counts across the resume), unless ``fresh``.
    """
    from nvrloader.build import build_archive
    from nvrloader.codecs import CodecError
    from nvrloader.rate import RateError

    previous = read_record(cell)
    resume = (not fresh and previous is not None and previous.get("status") == "running"
              and previous.get("settings") == wanted and cell.checkpoint.exists())
    if not resume:
        shutil.rmtree(cell.checkpoint, ignore_errors=True)   # another setting's fit: never mix with it
    cell.folder.mkdir(parents=True, exist_ok=True)
    write_json(cell.record, {"settings": wanted, "status": "running"})
    start = time.perf_counter()
    try:
        report = build_archive(config.source, cell.archive, parse_variant(cell.codec)[0], config.options(cell.codec),
                               frames=config.frames, target_bpp=cell.target_bpp, device=config.device, force=True,
                               resume=resume, cache_dir=config.cache_dir, progress=progress)
    except (CodecError, RateError, ValueError) as err:
        # a target the codec cannot reach is a result; any other refusal is a failure a re-run retries
        status = "unreachable" if isinstance(err, (CodecError, RateError)) else "failed"
        record = {"settings": wanted, "status": status, "message": str(err),
                  "wall_seconds": round(time.perf_counter() - start, 2)}
        for stale in (cell.archive, cell.report):
            stale.unlink(missing_ok=True)
    else:
        record = {"settings": wanted, "status": "done", "summary": summary(report),
                  "wall_seconds": round(time.perf_counter() - start, 2)}
    shutil.rmtree(cell.checkpoint, ignore_errors=True)       # the cell is settled; its fit needs no resume
    write_json(cell.record, record)
    return record


def run_builds(config: StudyConfig, out: Path, rebuild: tuple[str, ...] = (), progress: bool = True,
               note: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Build every cell not already finished with the same settings (cells of ``rebuild`` codecs always).

    Returns one entry per cell: codec, target bpp, status ("done", "unreachable" or "failed"),
    whether it was reused, and its summary or the message saying why it has none.
    """
    from tqdm import tqdm

    entries = []
    todo = cells(config, out)
    bar = tqdm(todo, desc="rd study", unit="build", disable=not progress)
    note = note or tqdm.write   # a print would tear the bar
    for cell in bar:
        bar.set_postfix(codec=cell.codec, bpp=f"{cell.level:g}")
        wanted = settings(config, cell)
        record = read_record(cell)
        reused = cell.codec not in rebuild and finished(record, wanted, cell)
        if reused:
            note(f"skip {cell.name}: {record['status']} with the same settings ({cell.record})")
        else:
            record = build_cell(config, cell, wanted, progress, fresh=cell.codec in rebuild)
        entries.append({"codec": cell.codec, "target_bpp": cell.level, "name": cell.name,
                        "status": record["status"], "reused": reused, "archive": str(cell.archive),
                        "wall_seconds": record.get("wall_seconds"),
                        **({"summary": record["summary"]} if record["status"] == "done"
                           else {"message": record.get("message", "")})})
    bar.close()
    return entries



def run_study(config: StudyConfig, out: str | os.PathLike, anchor: str = "h264", rebuild: tuple[str, ...] = (),
              command: str = "", progress: bool = True) -> dict[str, Any]:
    """Build (or reuse) every cell, compute the deltas against ``anchor`` and write the four outputs.

    Returns the study as written to ``results.json``.
    """
    from nvrloader.study.rdreport import deltas, write_outputs

    if anchor not in config.codecs:
        raise ValueError(f"the anchor {anchor!r} must be one of the study's codecs {list(config.codecs)}")
    out = Path(out)
    start = time.perf_counter()
    builds = run_builds(config, out, rebuild, progress)
    study = {"command": command, "dataset": config.dataset_label(),
             "source": None if config.source is None else str(Path(config.source).resolve()),
             "codecs": list(config.codecs), "levels": list(config.levels), "anchor": anchor,
             "time_budget": config.time_budget, "frames": _plain(dataclasses.asdict(config.frames)),
             "neural": {"size": config.size, "epochs": config.epochs,
                        "keyframe_codec": config.keyframe_codec or KeyframeOptions().keyframe_codec}
             if any(isinstance(config.options(c), NeuralOptions) for c in config.codecs) else None,
             "builds": builds, "deltas": deltas(builds, list(config.codecs), anchor)}
    study["wall_seconds"] = round(time.perf_counter() - start, 1)   # this run (reused cells cost nothing)
    study["build_wall_seconds"] = round(sum(b["wall_seconds"] or 0 for b in builds), 1)  # every cell's own build
    write_outputs(study, out)
    return study
