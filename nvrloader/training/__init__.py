"""Training plumbing shared by the codec fit loop (`nvrloader.fit`) and TSM training (`recognition`).

Nothing here knows a model: where a run executes (device, torchrun/DDP, mixed precision), how an
optimiser is named and built, and how a checkpoint is written, read and matched to a resumed run.
"""
from nvrloader.training.checkpoint import (differences, experiment, load_checkpoint, plain, runtime_field,
                                           save_checkpoint)
from nvrloader.training.optim import OPTIMIZERS, OptimizerConfig, make_optimizer
from nvrloader.training.runtime import (AMP_DTYPES, Runtime, apply_gradients, autocast, autocast_dtype,
                                        grad_scaler, setup_runtime, wrap_ddp)

__all__ = ["AMP_DTYPES", "OPTIMIZERS", "OptimizerConfig", "Runtime", "apply_gradients", "autocast",
           "autocast_dtype", "differences", "experiment", "grad_scaler", "load_checkpoint", "make_optimizer",
           "plain", "runtime_field", "save_checkpoint", "setup_runtime", "wrap_ddp"]
