"""The rows of the D-NeRV paper's Table 8, each run once per seed and recorded, so a re-run skips them.

  - raw:   TSM trained and tested on the raw frames;
  - train: trained on a decoded archive, tested on the raw frames;
  - test:  the raw model of the same seed, tested on a decoded archive.

Training decodes every clip of every epoch from its archive in the DataLoader, as a user would.
Each (setting, archive, seed) writes its run folder (checkpoints, metrics.json, confusion.png) and a
record ``rows/<id>.json`` (settings, status, summary, wall seconds), both atomically. A record with
the same settings (the training recipe and the archives' contents) is reused; an interrupted training
with the same settings resumes from its checkpoint; anything else is run again from scratch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvrloader.reporting import write_json
from recognition.config import TrainConfig

SETTINGS = ("raw", "train", "test")
SUMMARY_KEYS = ("top1", "top5", "mean_class_accuracy", "top1_last", "top1_best", "best_epoch", "selection_split")


@dataclass(frozen=True)
class Archive:
    """An archive of the study: its codec, the column (bpp level) it belongs to, and its file."""

    name: str       # unique: names the run folders
    codec: str
    level: str      # column label
    path: Path


def archive_info(path: Path) -> dict[str, Any]:
    """Codec, bpp (from the archive's bytes) and what its frames are (for the comparability check)."""
    from nvrloader.archive import open_archive
    from nvrloader.decode import ArchiveMetadata
    from nvrloader.eval import size_report

    with open_archive(path) as archive:
        size = size_report(archive)
        return {"archive": str(path), "name": path.stem, "codec": archive.codec, "bpp": size["bpp"],
                "metadata": ArchiveMetadata.from_meta(archive.codec, archive.meta)}


def check_compatible(raw: dict[str, Any], others: list[dict[str, Any]], allow_mismatch: bool = False) -> None:
    """Unique names (they name the run folders) and the same frames everywhere: same videos, frame
    counts, fps, size and classes, unless ``allow_mismatch`` (classes must agree even then)."""
    names = [raw["name"]] + [o["name"] for o in others]
    if len(set(names)) != len(names):
        raise ValueError(f"archive names must be unique (they name the run folders): {names}")
    for other in others:
        found = raw["metadata"].differences(other["metadata"])
        if raw["metadata"].classes != other["metadata"].classes or (found and not allow_mismatch):
            raise ValueError(f"{other['archive']} and {raw['archive']} do not hold the same frames "
                             f"({'; '.join(found)}); build it with --match {raw['archive']}, or pass "
                             "--allow-mismatch to compare anyway")


def digest(path: str | Path) -> str:
    """sha256 of an archive's bytes: a row trained on an archive since rebuilt is run again."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Row:
    """One (setting, archive, seed) of the table: where it runs and what it depends on."""

    setting: str        # raw | train | test
    archive: Archive    # the archive trained on (raw, train) or tested on (test)
    seed: int
    out: Path           # the study folder

    @property
    def id(self) -> str:
        return f"{self.setting}-{self.archive.name}-seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        return self.out / "runs" / f"{self.setting}-{self.archive.name}" / f"seed{self.seed}"

    @property
    def record(self) -> Path:
        return self.out / "rows" / f"{self.id}.json"


def raw_row(row: Row, raw: Archive) -> Row:
    """The raw/raw row whose model a "test" row scores."""
    return Row("raw", raw, row.seed, row.out)


def row_config(base: TrainConfig, row: Row, raw: Archive) -> TrainConfig:
    """The training a raw or train row runs: always tested on the raw frames."""
    return dataclasses.replace(base, train_data=str(row.archive.path), test_data=str(raw.path), train_split="train",
                               test_split="test", seed=row.seed, output_dir=str(row.run_dir), resume=None,
                               progress=False)


def row_settings(base: TrainConfig, row: Row, raw: Archive, digests: dict[str, str]) -> dict[str, Any]:
    """Everything a row's result depends on: the recipe (runtime fields too: epochs change the model),
    the seed, and the contents of the archives it reads."""
    from nvrloader.training import plain

    cfg = row_config(base, row, raw)
    recipe = {k: v for k, v in dataclasses.asdict(cfg).items()
              if k not in ("train_data", "test_data", "output_dir", "progress", "resume", "device", "workers")}
    return plain({"setting": row.setting, "seed": row.seed, "recipe": recipe,
                  "archive": digests[row.archive.name], "raw": digests[raw.name]})


def read_record(row: Row) -> dict[str, Any] | None:
    try:
        return json.loads(row.record.read_text())
    except (OSError, ValueError):
        return None


def finished(row: Row, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The row's record if it finished with these settings."""
    record = read_record(row)
    if record and record.get("status") == "done" and record.get("settings") == wanted:
        return record
    return None


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """A run's figures for the table: top-1 of the model it delivers, and last/best-epoch detail if trained."""
    return {k: result[k] for k in SUMMARY_KEYS if k in result}


def _train(cfg: TrainConfig, resume: bool) -> dict[str, Any]:
    from recognition.engine import train

    checkpoint = Path(cfg.output_dir) / "checkpoint.pt"
    return train(dataclasses.replace(cfg, resume=str(checkpoint) if resume and checkpoint.is_file() else None))


def run_row(base: TrainConfig, row: Row, raw: Archive, wanted: dict[str, Any]) -> dict[str, Any]:
    """Run one row (in a worker process) and write its record; returns the record.

    The "running" record written first lets an interrupted row resume its training next time; the
    run's epoch lines go to log.txt in its folder."""
    previous = read_record(row)
    resume = previous is not None and previous.get("status") == "running" and previous.get("settings") == wanted
    if not resume:
        shutil.rmtree(row.run_dir, ignore_errors=True)   # another setting's run: never mix with it
    write_json(row.record, {"settings": wanted, "status": "running"})
    row.run_dir.mkdir(parents=True, exist_ok=True)
    with open(row.run_dir / "log.txt", "a", buffering=1) as log, contextlib.redirect_stdout(log):   # the epoch lines
        record = _run(base, row, raw, wanted, resume)
    write_json(row.record, record)
    return record


def _run(base: TrainConfig, row: Row, raw: Archive, wanted: dict[str, Any], resume: bool) -> dict[str, Any]:
    from recognition.engine import evaluate_checkpoint

    start, cpu = time.perf_counter(), time.process_time()
    if row.setting == "test":
        model = read_record(raw_row(row, raw))["checkpoint"]
        result = evaluate_checkpoint(model, row.archive.path, row.run_dir, device=base.device, workers=base.workers,
                                     progress=False)
        extra = {"checkpoint_tested": model}
    else:
        result = _train(row_config(base, row, raw), resume)
        extra = {"checkpoint": result["selected_checkpoint"],
                 "epoch_seconds": round(sum(r["seconds"] for r in result["history"]), 2)}
    return {"settings": wanted, "status": "done", "summary": summary(result), **extra,
            "wall_seconds": round(time.perf_counter() - start, 2),
            "cpu_seconds": round(time.process_time() - cpu, 2), "run_dir": str(row.run_dir)}
