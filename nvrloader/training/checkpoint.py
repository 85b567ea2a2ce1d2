"""Checkpoint files and the one rule that decides whether a run may resume from one.

Files are written atomically (temporary file, then rename), so a crash leaves the previous
checkpoint intact, and read with `weights_only=True`, so loading one never runs pickled code.

Resume rule: a config dataclass marks the fields a resumed run may change (device, workers,
output folder, ...) with `runtime_field(...)`; every other field defines the experiment and must
equal the checkpoint's value. A field missing from an older checkpoint counts as different.
"""
from __future__ import annotations

import json
import os
from dataclasses import MISSING, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

_ABSENT = "<missing>"


def runtime_field(default: Any = MISSING, **kwargs: Any) -> Any:
    """A dataclass field a resumed run may change freely (it does not shape the optimisation)."""
    return field(default=default, metadata={"runtime": True}, **kwargs)


def plain(data: Any) -> Any:
    """JSON round trip: tuples become lists and paths strings, so saved and live values compare."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def experiment(config: Any, saved: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The experiment-defining fields of the dataclass `config`, as plain data.

    With `saved` (a config saved as a dict by an earlier run), the same fields are read from it
    instead, "<missing>" standing for those it lacks: the two results compare key by key.
    """
    if not is_dataclass(config):
        raise TypeError(f"expected a config dataclass, got {type(config).__name__}")
    names = [f.name for f in fields(config) if not f.metadata.get("runtime")]
    source = saved if saved is not None else {n: getattr(config, n) for n in names}
    return plain({n: source.get(n, _ABSENT) for n in names})


def differences(saved: Mapping[str, Any], live: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved value, live value) for every key whose values differ, sorted by key."""
    return [(k, saved.get(k, _ABSENT), live.get(k, _ABSENT)) for k in sorted(saved.keys() | live.keys())
            if saved.get(k, _ABSENT) != live.get(k, _ABSENT)]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` (tensors and plain data only) atomically; the folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint onto the CPU without unpickling; a missing or damaged file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or foreign files
        raise ValueError(f"checkpoint at {path} cannot be read ({e}); delete it or run without resume") from e
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint at {path} holds a {type(state).__name__}, not a checkpoint dict")
    return state
