"""The fit loop of the neural codecs: config, loop, losses, schedule, checkpoints and quantisation-aware fitting.

Codecs import `FakeQuant, FitConfig, FitOutput, FitResult, fit` from here; the rest is exported for tests
and tools that inspect a fit (its schedule, data order, losses, checkpoint name).
"""
from nvrloader.fit.checkpoints import CHECKPOINT_NAME
from nvrloader.fit.config import FitConfig, FitResult
from nvrloader.fit.loop import epoch_batches, fit
from nvrloader.fit.losses import LOSSES, FitOutput, fit_loss, pair_loss, ssim_window
from nvrloader.fit.qat import FakeQuant
from nvrloader.fit.schedule import lr_factor, schedule_position

__all__ = ["CHECKPOINT_NAME", "LOSSES", "FakeQuant", "FitConfig", "FitOutput", "FitResult", "epoch_batches", "fit", "fit_loss",
           "lr_factor", "pair_loss", "schedule_position", "ssim_window"]
