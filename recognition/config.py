"""What a TSM run is: the recipes (the TSM authors' UCF101 fine-tune, a CPU-sized one from scratch)
and TrainConfig, the typed options every training and evaluation function takes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nvrloader.training import OptimizerConfig, runtime_field

OPTIMIZERS = ("sgd", "adamw")   # the part of the shared optimiser table TSM training offers

RECIPES: dict[str, dict[str, Any]] = {
    # The TSM authors' UCF101 fine-tune from Kinetics weights (their README command): lr 0.001 for a
    # batch of 64, steps at 10 and 20 of 25 epochs, dropout 0.8, partial BN, 5x lr on the new
    # classifier, gradient norm clipped at 20, evaluated every epoch (they report the best epoch).
    "ucf101": {"backbone": "resnet50", "width_mult": 1.0, "input_size": 224, "optimizer": "sgd",
               "batch_size": 64, "lr": 0.001, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 25,
               "lr_steps": (10, 20), "dropout": 0.8, "partial_bn": True, "fc_init_std": 0.001,
               "fc_lr_mult": 5.0, "clip_grad": 20.0, "eval_every": 1, "flip": True, "val_fraction": 0.0,
               "colour_jitter": 0.0, "channel_shuffle": False, "clip_norm": False, "label_smoothing": 0.0},
    # From scratch on the synthetic set (nvrloader.synth) on CPU: resnet18 at 1/4 width, input = the
    # frames' short side. Nothing pretrained to protect, so every BN layer learns, the classifier is
    # not boosted and starts at PyTorch's init rather than TSN's near-zero one. AdamW: with SGD
    # (lr 0.01-0.05) a random TSM sat at chance for hundreds of steps on these motion-only classes,
    # or diverged in the first epoch. No flips: the classes come in mirror pairs (MoveLeft/MoveRight,
    # clockwise/counterclockwise), as TSM does for Something-Something.
    # Test scenes look like no training scene (other background, object, colours, contrast): with
    # ImageNet normalisation the eval-mode BN statistics of the training scenes put every test clip
    # in one class (16.7% of 6 classes x 12 videos, though batch statistics gave 71%). Per-clip
    # normalisation, colour jitter, random channel order, label smoothing and weight decay 0.05
    # reached 50% after 40 epochs (peak 67% near epoch 28, then over-fitting the two training
    # scenes); dropping the lr at epoch 20 of 30 ended at 58.3 / 37.5 / 58.3% for seeds 0 / 1 / 2
    # (2 threads) and 45.8% for seed 0 on 1 thread: about 50% on average, not in every run (the
    # rotation pair stays at 0%). A validation split is off: 12 videos a class leave two training
    # scenes, and one scene alone trained to chance.
    "synthetic": {"backbone": "resnet18", "width_mult": 0.25, "input_size": None, "optimizer": "adamw",
                  "batch_size": 16, "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.05, "epochs": 30,
                  "lr_steps": (20, 26), "dropout": 0.2, "partial_bn": False, "fc_init_std": None,
                  "fc_lr_mult": 1.0, "clip_grad": 20.0, "eval_every": 5, "flip": False, "val_fraction": 0.0,
                  "colour_jitter": 0.5, "channel_shuffle": True, "clip_norm": True, "label_smoothing": 0.1},
}
# recipes that fine-tune pretrained weights: without --pretrained they train a large model from random init
FINE_TUNE_RECIPES = ("ucf101",)


@dataclass
class TrainConfig:
    """A TSM run. Fields made with `runtime_field` may change on --resume; every other one may not."""
    backbone: str
    width_mult: float
    input_size: int | None      # None: the short side of the training frames
    optimizer: str              # sgd (TSM's, with momentum) | adamw
    batch_size: int             # clips per step over all processes
    lr: float
    momentum: float             # sgd only
    weight_decay: float
    epochs: int = runtime_field()  # may grow on --resume
    lr_steps: tuple[int, ...]   # epochs at which lr is divided by 10
    dropout: float
    partial_bn: bool
    fc_init_std: float | None   # classifier weight init; None: PyTorch's default
    fc_lr_mult: float
    clip_grad: float            # max gradient norm; 0 disables clipping
    eval_every: int = runtime_field()  # evaluate every N epochs; 0: only after the last
    flip: bool                  # random horizontal flips; off when mirroring swaps classes
    # share of the training groups held out to pick the best epoch (UCF groups never straddle the
    # two parts); 0: the best epoch is picked on the test split and reported as optimistic
    val_fraction: float = 0.0
    colour_jitter: float = 0.0  # per-clip brightness/contrast/saturation factors in [1 - x, 1 + x]
    channel_shuffle: bool = False  # random RGB order per training clip (a coarse hue change)
    clip_norm: bool = False     # standardise each clip per channel instead of ImageNet mean/std
    label_smoothing: float = 0.0
    train_data: str | None = None
    test_data: str | None = None
    output_dir: str = runtime_field("runs/tsm")
    recipe: str = "ucf101"
    num_segments: int = 8
    shift_div: int = 8
    pretrained: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    device: str = runtime_field("auto")
    workers: int = runtime_field(0)
    amp: bool | None = runtime_field(None)  # None: on for CUDA only
    seed: int = 0
    progress: bool = runtime_field(True)
    resume: str | None = runtime_field(None)

    def __post_init__(self) -> None:
        self.lr_steps = tuple(self.lr_steps)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction is a share of the training groups in [0, 1), got {self.val_fraction}")

    @classmethod
    def from_recipe(cls, recipe: str = "ucf101", **overrides: Any) -> "TrainConfig":
        """The recipe's values, with every override that is not None on top."""
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{**RECIPES[recipe], "recipe": recipe, **given})

    @classmethod
    def from_saved(cls, saved: dict[str, Any], **overrides: Any) -> "TrainConfig":
        """The config a checkpoint was trained with (fields it lacks take their defaults), then overrides."""
        known = {k: v for k, v in saved.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, **overrides})

    def optimizer_config(self) -> OptimizerConfig:
        return OptimizerConfig(self.optimizer, self.lr, self.weight_decay, momentum=self.momentum)


def recipe_warnings(cfg: TrainConfig) -> list[str]:
    """Settings that run but will not do what the user most likely wants, said before training starts."""
    if cfg.recipe in FINE_TUNE_RECIPES and cfg.pretrained is None:
        return [f"the {cfg.recipe} recipe fine-tunes pretrained weights, but no --pretrained file was given: this "
                f"trains {cfg.backbone} (width x{cfg.width_mult}) from random weights at {cfg.input_size or 'frame'} "
                "px, with partial BN freezing untrained statistics. On CPU, ResNet-50 at 224 px takes about 37 s "
                "per batch, and the result will not approach the paper's accuracy. Pass --pretrained FILE "
                "(ImageNet or Kinetics ResNet-50 weights; nothing is downloaded) or --recipe synthetic "
                "(a small TSM trained from scratch)."]
    return []
