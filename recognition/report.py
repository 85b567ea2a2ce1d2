"""What a TSM run reports: accuracy tables, the epoch selection, the confusion plot and metrics.json."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nvrloader.reporting import save_figure, write_json

SELECTION_NOTES = {
    "val": "best epoch picked on a validation split of the training groups; its test top-1 is unbiased",
    "test": "best epoch picked on the test split itself (the TSM authors' protocol): top1_best is optimistic",
}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in percent over clips (top-k with k = the class count below 5 classes)."""
    k = min(5, logits.shape[1])
    top1 = 100 * (logits.argmax(1) == labels).double().mean().item()
    top5 = 100 * (logits.topk(k, dim=1).indices == labels[:, None]).any(1).double().mean().item()
    return top1, top5


def classification_report(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Top-1/top-5 (percent, over clips), per-class accuracy and the confusion matrix (rows: truth)."""
    pred = logits.argmax(1)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    totals = confusion.sum(1)
    per_class = {c: (100 * confusion[i, i].item() / totals[i].item() if totals[i] else None)
                 for i, c in enumerate(classes)}
    seen = [v for v in per_class.values() if v is not None]
    top1, top5 = accuracy(logits, labels)
    return {"top1": top1, "top5": top5, "mean_class_accuracy": sum(seen) / max(len(seen), 1),
            "num_clips": int(labels.numel()), "per_class": per_class, "confusion": confusion.tolist()}


def scores(logits: torch.Tensor, labels: torch.Tensor, split: str) -> dict[str, float]:
    """The per-epoch figures of one evaluation: `{split}_top1`, `{split}_top5` (percent), `{split}_loss`."""
    top1, top5 = accuracy(logits, labels)
    return {f"{split}_top1": top1, f"{split}_top5": top5,
            f"{split}_loss": F.cross_entropy(logits.float(), labels).item()}


def best_row(history: list[dict[str, Any]], split: str) -> dict[str, Any] | None:
    """The history row of the best evaluated epoch on `split`: highest top-1, then lowest loss, then earliest."""
    rows = [r for r in history if f"{split}_top1" in r]
    return max(rows, key=lambda r: (r[f"{split}_top1"], -r[f"{split}_loss"]), default=None)


def selection(last: dict[str, Any], best: dict[str, Any], split: str, best_epoch: int) -> dict[str, Any]:
    """Last-epoch and best-epoch test accuracy side by side, and how the best epoch was chosen."""
    return {"top1_last": last["top1"], "top5_last": last["top5"], "top1_best": best["top1"],
            "top5_best": best["top5"], "best_epoch": best_epoch, "selection_split": split,
            "top1_best_optimistic": split == "test", "selection_note": SELECTION_NOTES[split]}


def plot_confusion(confusion: list[list[int]], classes: list[str], title: str, path: Path) -> Path:
    """Row-normalised confusion matrix as a PNG (atomic write)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    counts = torch.tensor(confusion, dtype=torch.float64)
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    n = len(classes)
    side = min(4 + 0.35 * n, 30)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    if n <= 40:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def write_outputs(out_dir: Path, report: dict[str, Any], classes: list[str], title: str) -> dict[str, Any]:
    """confusion.png and metrics.json in `out_dir`; returns the report with the plot's path."""
    png = plot_confusion(report["confusion"], classes, title, out_dir / "confusion.png")
    report = {**report, "confusion_png": str(png)}
    write_json(out_dir / "metrics.json", report)
    return report
