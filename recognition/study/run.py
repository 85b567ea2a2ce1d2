"""The study from end to end: tasks for every build and row, run in workers, then the outputs.

`run_study` builds the archives itself; `run_rows` (what `recognition.compare` runs) takes archives
that exist. Both write table.md, results.json and accuracy_bpp.png into the output folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from recognition.config import TrainConfig
from recognition.study import builds
from recognition.study.options import StudyOptions
from recognition.study.rows import (Archive, Row, archive_info, check_compatible, digest, finished, raw_row,
                                    row_settings, run_row)
from recognition.study.runner import Skip, Task, run_tasks


def row_tasks(base: TrainConfig, raw: Archive, archives: list[Archive], seeds: tuple[int, ...], out: Path,
              needs: Callable[[Archive], tuple[str, ...]], ready: Callable[[Archive], None],
              allow_mismatch: bool = False) -> list[Task]:
    """raw/raw per seed, then "train" and "test" per archive and seed. ``needs`` names the tasks an
    archive waits for (its build); ``ready`` raises Skip when the archive did not come to exist. An
    archive whose frames differ from the raw archive's is skipped unless ``allow_mismatch``."""
    digests: dict[str, str] = {}

    def plan(row: Row) -> Callable[[], tuple[Any, tuple] | None]:
        def make() -> tuple[Any, tuple] | None:
            for a in (raw, row.archive):
                ready(a)
                if a.name not in digests:
                    if a is not raw:
                        try:
                            check_compatible(archive_info(raw.path), [archive_info(a.path)], allow_mismatch)
                        except ValueError as err:
                            raise Skip(str(err)) from None
                    digests[a.name] = digest(a.path)
            wanted = row_settings(base, row, raw, digests)
            return None if finished(row, wanted) else (run_row, (base, row, raw, wanted))
        return make

    tasks = []
    for seed in seeds:
        r = Row("raw", raw, seed, out)
        tasks.append(Task(r.id, needs(raw), plan(r)))
    for archive in archives:
        for seed in seeds:
            r = Row("train", archive, seed, out)
            tasks.append(Task(r.id, needs(raw) + needs(archive), plan(r)))
            t = Row("test", archive, seed, out)
            tasks.append(Task(t.id, needs(archive) + (raw_row(t, raw).id,), plan(t)))
    return tasks


def study_archives(opts: StudyOptions) -> tuple[Archive, list[Archive], dict[str, float]]:
    """The raw archive and one per (codec, level), named and placed as the builds name and place them,
    and the bpp level of each by name."""
    config = opts.rd_config()
    raw = Archive("raw", "raw", "raw", builds.raw_paths(opts.output)[0])
    cells = [builds.cell(config, opts.output, c, level) for c in opts.codecs for level in opts.levels]
    return (raw, [Archive(c.name, c.codec, f"{c.level:g} bpp", c.archive) for c in cells],
            {c.name: c.level for c in cells})


def study_tasks(opts: StudyOptions, progress: bool = False) -> list[Task]:
    """Every build (raw; neural at each level; classical at the reference's real bpp) and every row."""
    config, out = opts.rd_config(), opts.output
    raw, archives, level_of = study_archives(opts)

    def build_id(archive: Archive) -> str:
        return f"build-{archive.name}"

    def build_task(archive: Archive) -> Task:
        level, codec = level_of[archive.name], archive.codec
        ref = opts.reference if builds.is_classical(codec) else None
        # after the raw build, which makes the frame store every build reads (two would race for it)
        deps = (build_id(raw),) + ((f"build-{builds.cell(config, out, ref, level).name}",) if ref else ())
        return Task(build_id(archive), deps,
                    lambda: builds.plan_cell(config, out, codec, level, ref, progress))

    def ready(archive: Archive) -> None:
        if archive.codec != "raw":
            builds.archive_of(config, out, archive.codec, level_of[archive.name])

    tasks = [Task(build_id(raw), (), lambda: builds.plan_raw(config, out))]
    tasks += sorted((build_task(a) for a in archives), key=lambda t: len(t.deps))   # neural builds first
    longest_first = sorted(archives, key=lambda a: builds.is_classical(a.codec))   # neural rows decode more
    return tasks + row_tasks(opts.train, raw, longest_first, opts.seeds, out, lambda a: (build_id(a),), ready)


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """One study at a time in a folder: two would retrain and evaluate each other's half-written runs."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{out}: another study is running in this folder") from None
        yield


def run_study(opts: StudyOptions, command: str = "", progress: bool = True) -> dict[str, Any]:
    """Build, train and evaluate whatever is not finished yet; write and return the results."""
    from recognition.study.table import collect, write_outputs

    start = time.perf_counter()
    with exclusive(opts.output):
        outcome = run_tasks(study_tasks(opts), opts.jobs, opts.threads, progress)
        raw, archives, _ = study_archives(opts)
        results = collect(raw, archives, opts.seeds, opts.output, outcome, opts.train)
        results.update(command=command, wall_seconds=round(time.perf_counter() - start, 1),
                       options=_plain_options(opts))
        write_outputs(results, opts.output)
    return results


def run_rows(raw: Archive, archives: list[Archive], base: TrainConfig, seeds: tuple[int, ...], out: Path,
             jobs: int = 0, threads: int = 1, command: str = "", progress: bool = True,
             allow_mismatch: bool = False) -> dict[str, Any]:
    """The rows on archives that exist (no builds); writes and returns the results."""
    from recognition.study.table import collect, write_outputs

    start = time.perf_counter()

    def ready(archive: Archive) -> None:
        if not archive.path.is_file():
            raise Skip(f"{archive.path}: no such archive")

    with exclusive(out):
        tasks = row_tasks(base, raw, archives, seeds, out, lambda a: (), ready, allow_mismatch)
        outcome = run_tasks(tasks, jobs, threads, progress)
        results = collect(raw, archives, seeds, out, outcome, base)
        results.update(command=command, wall_seconds=round(time.perf_counter() - start, 1))
        write_outputs(results, out)
    return results


def _plain_options(opts: StudyOptions) -> dict[str, Any]:
    from nvrloader.training import plain

    return plain({f.name: getattr(opts, f.name) for f in dataclasses.fields(opts) if f.name != "train"})
