"""Device choice shared by every command: "auto" means the GPU when there is one."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn "auto" | "cpu" | "cuda[:N]" into a torch.device, refusing CUDA where there is none."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but no CUDA device is available here; "
                         "use device=\"cpu\" or \"auto\" (--device on the command line)")
    return dev
