"""Small output helpers shared by the commands: atomic text, JSON and PNG files, and the default cache folder."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """Frame stores and the generated sample dataset live here ($NVRLOADER_CACHE overrides)."""
    return Path(os.environ.get("NVRLOADER_CACHE", Path.home() / ".cache" / "nvrloader"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf; "inf" keeps the meaning (lossless PSNR)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def to_json(data: Any) -> str:
    """Strict JSON text (no NaN/Infinity literals, which many readers reject)."""
    return json.dumps(_jsonable(data), indent=2, default=str)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write atomically (temporary file, then rename) so a crash never leaves half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, to_json(data) + "\n")


def save_figure(fig: Any, path: str | os.PathLike, dpi: int) -> Path:
    """Save a matplotlib figure as PNG atomically and close it (figures otherwise pile up in memory)."""
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def finish_plot(fig: Any, ax: Any, path: str | os.PathLike, xlabel: str, ylabel: str, title: str,
                title_size: int = 9, legend_size: int = 8, dpi: int = 120) -> Path:
    """Label, title, grid and legend an axes, then save its figure as :func:`save_figure` does."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=title_size)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, loc="best")
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)
