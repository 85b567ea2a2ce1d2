"""Run a study's tasks (builds, trainings, evaluations) in a few worker processes, each when what it
needs is done: on 2 cores two single-threaded workers keep both busy, where one process with two
threads loses most of its time to OpenMP waiting whenever another job holds a core.
"""
from __future__ import annotations

import multiprocessing
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable

from tqdm import tqdm


class Skip(Exception):
    """Raised by a task's plan: the task cannot run (say, its archive's bpp is out of reach) and why."""


@dataclass(frozen=True)
class Task:
    """A unit of work. `plan` runs in the main process once every dependency is done and returns
    None when a record shows the task finished already, or the (function, arguments) a worker runs."""

    id: str
    deps: tuple[str, ...]
    plan: Callable[[], tuple[Callable[..., Any], tuple] | None]


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def _call(fn: Callable[..., Any], args: tuple) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(*args), time.perf_counter() - start


def _failure(err: BaseException) -> str:
    """The error and, for a worker's, the traceback it had there (chained as the cause)."""
    return "".join(traceback.format_exception(err)).rstrip()


def run_tasks(tasks: list[Task], jobs: int, threads: int, progress: bool = True,
              note: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Run every task whose dependencies succeeded; returns {id: {"status": done | reused | failed |
    skipped, "message": ...}}. A failure is reported and its dependants skipped; the rest go on.

    jobs=0 runs the tasks in this process, one after the other (tests, debugging)."""
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"task ids must be unique: {ids}")
    unknown = sorted({d for t in tasks for d in t.deps} - set(ids))
    if unknown:
        raise ValueError(f"tasks depend on unknown tasks: {unknown}")
    note = note or tqdm.write
    outcome: dict[str, dict[str, Any]] = {}
    pending = list(tasks)
    running: dict[Future, Task] = {}
    bar = tqdm(total=len(tasks), desc="study", unit="task", disable=not progress)
    pool = (ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                initargs=(threads,)) if jobs > 0 else None)

    def settle(task: Task, status: str, message: str = "") -> None:
        outcome[task.id] = {"status": status, "message": message}
        bar.update(1)
        if status != "reused":
            note(f"{status} {task.id}" + (f": {message}" if message else ""))

    try:
        while pending or running:
            for task in list(pending):
                failed = [d for d in task.deps if d in outcome and outcome[d]["status"] in ("failed", "skipped")]
                if failed:
                    pending.remove(task)
                    settle(task, "skipped", f"needs {', '.join(failed)}")
                    continue
                if not all(d in outcome for d in task.deps) or (pool and len(running) >= jobs):
                    continue
                pending.remove(task)
                try:
                    work = task.plan()
                except Skip as why:
                    settle(task, "skipped", str(why))
                    continue
                if work is None:
                    settle(task, "reused")
                elif pool is None:
                    try:
                        _, seconds = _call(*work)
                    except Exception as err:   # noqa: BLE001 - one task's failure must not stop the others
                        settle(task, "failed", _failure(err))
                    else:
                        settle(task, "done", f"{seconds:.0f} s")
                else:
                    running[pool.submit(_call, *work)] = task
            bar.set_postfix_str(", ".join(t.id for t in running.values())[:120])
            if not running:
                if pending and not any(all(d in outcome for d in t.deps) for t in pending):
                    raise RuntimeError(f"tasks wait on each other: {[t.id for t in pending]}")
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                try:
                    _, seconds = future.result()
                except Exception as err:   # noqa: BLE001
                    settle(task, "failed", _failure(err))
                else:
                    settle(task, "done", f"{seconds:.0f} s")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
    return outcome
