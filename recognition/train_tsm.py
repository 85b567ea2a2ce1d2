"""Train and evaluate TSM on .nvr archives of any codec: the D-NeRV paper's action-recognition test.

    python recognition/train_tsm.py --train-data raw.nvr --test-data raw.nvr -o runs/raw --recipe synthetic
    torchrun --nproc-per-node 8 -m recognition.train_tsm --train-data raw.nvr --test-data h264.nvr \\
        -o runs/raw --pretrained tsm_kinetics_r50.pth            # the ucf101 recipe is the default
    python -m recognition.train_tsm --eval-only --checkpoint runs/raw/best.pt --test-data h264.nvr -o runs/test

The command line only: the options become a TrainConfig (recognition.config) and the work is done
by recognition.engine. Prints the metrics as JSON (without the per-epoch history and confusion).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python recognition/train_tsm.py`: import this checkout, not the script's folder
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from nvrloader.archive import ArchiveError  # noqa: E402
from nvrloader.reporting import to_json  # noqa: E402
from recognition.config import OPTIMIZERS, RECIPES, TrainConfig  # noqa: E402
from recognition.engine import evaluate_checkpoint, train  # noqa: E402


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like '10,20', got {text!r}") from None


def add_training_arguments(ap: argparse.ArgumentParser) -> None:
    """Recipe, model, optimisation and run flags; shared with recognition.compare."""
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="ucf101",
                    help="defaults for every training flag below: ucf101 = the TSM authors' UCF101 fine-tune "
                         "(use with --pretrained), synthetic = from random weights on the synthetic set")
    model = ap.add_argument_group("model (default: from the recipe)")
    model.add_argument("--backbone", help="timm ResNet name: resnet50, resnet18, resnet34, resnet101, ...")
    model.add_argument("--width-mult", type=float, help="scale every ResNet width (CPU-sized runs; no pretrained)")
    model.add_argument("--num-segments", type=int, help="TSN segments per clip (8)")
    model.add_argument("--shift-div", type=int, help="1/shift_div of the channels shift each way (8)")
    model.add_argument("--dropout", type=float)
    model.add_argument("--partial-bn", action=argparse.BooleanOptionalAction, default=None)
    model.add_argument("--pretrained", help="backbone weights: torch state dict or timm .safetensors file")
    model.add_argument("--input-size", type=int, help="square crop fed to the network (ucf101: 224)")
    model.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                       help="random horizontal flips in training (off when mirroring changes the class)")
    model.add_argument("--colour-jitter", type=float,
                       help="per-clip brightness/contrast/saturation jitter in training (0: off)")
    model.add_argument("--channel-shuffle", action=argparse.BooleanOptionalAction, default=None,
                       help="random RGB channel order per training clip")
    model.add_argument("--clip-norm", action=argparse.BooleanOptionalAction, default=None,
                       help="standardise each clip per channel instead of ImageNet mean/std")
    opt = ap.add_argument_group("optimisation (default: from the recipe)")
    opt.add_argument("--epochs", type=int)
    opt.add_argument("--batch-size", type=int, help="clips per step over all processes")
    opt.add_argument("--lr", type=float)
    opt.add_argument("--lr-steps", type=int_list, help="epochs at which lr drops 10x, e.g. 10,20")
    opt.add_argument("--optimizer", choices=OPTIMIZERS)
    opt.add_argument("--momentum", type=float, help="SGD momentum")
    opt.add_argument("--weight-decay", type=float)
    opt.add_argument("--fc-lr-mult", type=float, help="lr multiplier of the new classifier")
    opt.add_argument("--clip-grad", type=float, help="max gradient norm (0: off)")
    opt.add_argument("--label-smoothing", type=float)
    opt.add_argument("--eval-every", type=int, help="evaluate every N epochs (0: after the last only)")
    opt.add_argument("--val-fraction", type=float,
                     help="share of the training groups held out to pick the best epoch (UCF groups stay whole); "
                          "0: pick on the test split, reported as optimistic")
    opt.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision (CUDA only)")
    opt.add_argument("--seed", type=int)
    run = ap.add_argument_group("run")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]: decoding, augmentation and model")
    run.add_argument("--workers", type=int, help="DataLoader worker processes (0)")
    run.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace, **fixed: Any) -> TrainConfig:
    """The recipe named by --recipe with every flag that was given on top, then ``fixed``."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"recipe"}
    given = {k: v for k, v in vars(args).items() if k in fields}
    return TrainConfig.from_recipe(args.recipe, **{**given, "progress": not args.no_progress, **fixed})


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m recognition.train_tsm", description=__doc__.splitlines()[0])
    ap.add_argument("--train-data", help="archive to train on (.nvr, any codec)")
    ap.add_argument("--test-data", required=True, help="archive to test on (.nvr, any codec)")
    ap.add_argument("-o", "--output-dir", default="runs/tsm",
                    help="checkpoint.pt, best.pt, metrics.json, confusion.png")
    ap.add_argument("--train-split", choices=("train", "test", "all"), help="videos of --train-data used (train)")
    ap.add_argument("--test-split", choices=("train", "test", "all"), help="videos of --test-data used (test)")
    ap.add_argument("--resume", nargs="?", const="auto",
                    help="continue from a checkpoint (default: OUTPUT_DIR/checkpoint.pt)")
    ap.add_argument("--eval-only", action="store_true", help="only score --checkpoint on --test-data")
    ap.add_argument("--checkpoint", help="checkpoint for --eval-only (checkpoint.pt: last epoch, best.pt: best)")
    add_training_arguments(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.eval_only:
            if not args.checkpoint:
                raise ValueError("--eval-only needs --checkpoint")
            result = evaluate_checkpoint(args.checkpoint, args.test_data, args.output_dir, args.test_split or "test",
                                         args.device, args.batch_size, args.workers or 0, not args.no_progress)
        else:
            resume = str(Path(args.output_dir) / "checkpoint.pt") if args.resume == "auto" else args.resume
            result = train(config_from_args(args, resume=resume))
    except (ArchiveError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(to_json({k: v for k, v in result.items() if k not in ("confusion", "history", "config")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
