"""The D-NeRV paper's Table 8: action recognition on raw frames versus compressed archives.

    python -m recognition.compare raw.nvr h264_lo.nvr h264_hi.nvr dnerv_S.nvr -o runs/compare \\
        --recipe synthetic --backbone resnet18 --width-mult 0.25 --device cpu

For every codec archive two settings are scored, as in the paper:
  - "train": TSM trained on the decoded videos, tested on the raw frames;
  - "test":  TSM trained on the raw frames, tested on the decoded videos.
The raw/raw model is trained once and reused for every "test" row. bpp comes from each archive's
real payload bytes. Finished runs are reused and interrupted ones resumed, so re-running the same
command after a crash only does what is missing. Writes table.md, results.json and accuracy_bpp.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python recognition/compare.py`: import this checkout, not the script's folder
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from nvrloader.reporting import save_figure, write_json, write_text  # noqa: E402
from recognition.config import TrainConfig  # noqa: E402
from recognition.train_tsm import add_training_arguments, config_from_args  # noqa: E402


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
        raise ValueError(f"archive file names must be unique (they name the run folders): {names}")
    for other in others:
        found = raw["metadata"].differences(other["metadata"])
        if raw["metadata"].classes != other["metadata"].classes or (found and not allow_mismatch):
            raise ValueError(f"{other['archive']} and {raw['archive']} do not hold the same frames "
                             f"({'; '.join(found)}); build it with --match {raw['archive']}, or pass "
                             "--allow-mismatch to compare anyway")


def train_or_reuse(cfg: TrainConfig) -> dict[str, Any]:
    """A finished run of the same experiment is reused; an interrupted one resumes from its checkpoint."""
    from recognition.engine import check_resumable, train

    out = Path(cfg.output_dir)
    done = out / "metrics.json"
    if done.is_file():
        previous = json.loads(done.read_text())
        if previous.get("mode") == "train" and previous.get("epochs") == cfg.epochs:
            check_resumable(cfg, previous["config"], str(done))
            return previous
    checkpoint = out / "checkpoint.pt"
    return train(dataclasses.replace(cfg, resume=str(checkpoint) if checkpoint.is_file() else None))


def summary(result: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A run's figures for the table: top-1 of the model it delivers, and last/best-epoch detail if trained."""
    keys = ("top1", "top5", "mean_class_accuracy", "top1_last", "top1_best", "best_epoch", "selection_split")
    return {**{k: result[k] for k in keys if k in result}, "run_dir": str(run_dir)}


def compare(raw_path: Path, archives: list[Path], out_dir: Path, cfg: TrainConfig,
            allow_mismatch: bool = False) -> dict[str, Any]:
    """Train/evaluate every row of the table; returns the results (rank 0 also writes them)."""
    from nvrloader.distributed import is_main_process
    from recognition.engine import evaluate_checkpoint

    raw = archive_info(raw_path)
    others = [archive_info(p) for p in archives]
    check_compatible(raw, others, allow_mismatch)
    if cfg.input_size is None:
        cfg = dataclasses.replace(cfg, input_size=min(raw["metadata"].height, raw["metadata"].width))
    base = dataclasses.replace(cfg, train_data=str(raw_path), test_data=str(raw_path), train_split="train",
                               test_split="test", resume=None)
    raw_dir = out_dir / f"raw-{raw['name']}"
    raw_run = train_or_reuse(dataclasses.replace(base, output_dir=str(raw_dir)))
    rows = []
    for other in others:
        train_dir, test_dir = out_dir / f"train-{other['name']}", out_dir / f"test-{other['name']}"
        trained = train_or_reuse(dataclasses.replace(base, train_data=other["archive"], output_dir=str(train_dir)))
        tested = evaluate_checkpoint(raw_run["selected_checkpoint"], other["archive"], test_dir, device=cfg.device,
                                     workers=cfg.workers, progress=cfg.progress)
        rows.append({**{k: other[k] for k in ("codec", "name", "archive", "bpp")},
                     "train": summary(trained, train_dir), "test": summary(tested, test_dir)})
    rows.sort(key=lambda r: (r["codec"], r["bpp"]))
    m = raw["metadata"]
    raw_row = {**{k: raw[k] for k in ("codec", "name", "archive", "bpp")}, "raw_raw": summary(raw_run, raw_dir),
               "frames": f"({len(m.videos)} videos, {m.height}x{m.width}, {m.fps:g} fps)"}
    results = {"raw": raw_row, "rows": rows, "num_classes": len(raw["metadata"].classes), "config": dataclasses.asdict(cfg),
               "chance_top1": 100 / max(len(raw["metadata"].classes), 1)}
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text(out_dir / "table.md", markdown_table(results))
        write_json(out_dir / "results.json", results)
        plot(results, out_dir / "accuracy_bpp.png")
    return results


def markdown_table(results: dict[str, Any]) -> str:
    """One row per archive: the paper's Train and Test columns (top-1 %), plus bpp and top-5."""
    raw = results["raw"]
    lines = ["| codec | archive | bpp | Train top-1 | Test top-1 | Train top-5 | Test top-5 |",
             "|---|---|---:|---:|---:|---:|---:|",
             f"| raw | {raw['name']} | {raw['bpp']:.3f} | {raw['raw_raw']['top1']:.1f} | {raw['raw_raw']['top1']:.1f} "
             f"| {raw['raw_raw']['top5']:.1f} | {raw['raw_raw']['top5']:.1f} |"]
    for r in results["rows"]:
        lines.append(f"| {r['codec']} | {r['name']} | {r['bpp']:.4f} | {r['train']['top1']:.1f} | "
                     f"{r['test']['top1']:.1f} | {r['train']['top5']:.1f} | {r['test']['top5']:.1f} |")
    notes = [f"Train: TSM trained on the decoded archive, tested on raw frames. Test: TSM trained on raw "
             f"frames ({raw['name']}), tested on the decoded archive. Raw row: raw/raw. Top-1/top-5 in % over "
             f"test clips; {results['num_classes']} classes (chance {results['chance_top1']:.1f}%); "
             f"backbone {results['config']['backbone']}, {results['config']['epochs']} epochs; each model is "
             f"{'the best epoch on a validation split of the training groups' if results['config']['val_fraction'] else 'the last epoch'}."]
    return "\n".join(lines + [""] + notes) + "\n"


def plot(results: dict[str, Any], path: Path) -> Path:
    """Top-1 against bpp: one colour per codec, "train" filled circles and "test" hollow squares set
    slightly apart (equal accuracies stay visible), each point named by its archive."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.8))
    codecs = sorted({r["codec"] for r in results["rows"]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, codec in enumerate(codecs):
        rows = sorted((r for r in results["rows"] if r["codec"] == codec), key=lambda r: r["bpp"])
        colour = colours[i % len(colours)]
        for setting, shift, style in (("train", 0.97, dict(marker="o", ls="-")),
                                      ("test", 1.03, dict(marker="s", ls="--", mfc="none", ms=8))):
            ax.plot([r["bpp"] * shift for r in rows], [r[setting]["top1"] for r in rows], color=colour,
                    label=f"{codec} ({setting})", **style)
        for r in rows:
            ax.annotate(r["name"], (r["bpp"], max(r["train"]["top1"], r["test"]["top1"])), fontsize=6,
                        textcoords="offset points", xytext=(0, 6), ha="center", color=colour)
    ax.axhline(results["raw"]["raw_raw"]["top1"], color="black", lw=1, label="raw / raw")
    ax.axhline(results["chance_top1"], color="grey", lw=1, ls=":", label="chance")
    if results["rows"]:
        ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (from archive bytes, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    meta = results["raw"].get("frames", "")
    ax.set_title(f"TSM top-1 vs bpp {meta}\ntrain: trained on decoded, tested on raw; test: trained on raw, "
                 "tested on decoded", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m recognition.compare", description=__doc__.splitlines()[0])
    ap.add_argument("raw", type=Path, help="archive of the raw frames (codec raw)")
    ap.add_argument("archives", type=Path, nargs="+", help="compressed archives of the same videos (any codecs)")
    ap.add_argument("-o", "--output-dir", type=Path, default=Path("runs/compare"), help="default runs/compare")
    ap.add_argument("--allow-mismatch", action="store_true", help="compare archives whose frames differ "
                    "(videos, frame counts, fps or size); classes must still agree")
    add_training_arguments(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nvrloader.archive import ArchiveError            # after parsing: --help stays fast
    from nvrloader.distributed import is_main_process

    try:
        results = compare(args.raw, args.archives, args.output_dir, config_from_args(args), args.allow_mismatch)
    except (ArchiveError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if is_main_process():
        print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
