"""Process-level settings for decoding: CPU threads per DataLoader worker, host-to-device copies."""
from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import torch
from torch.utils.data import get_worker_info


def configure_worker_threads(threads: int = 1) -> int | None:
    """Inside a DataLoader worker: ``threads`` intra-op torch threads (one by default).

    Workers already run side by side on the cores; more threads per worker than cores per worker make
    OpenMP's spinning threads fight each other, which on a busy machine costs several times the
    decode time. Returns the count set, or None in the main process, which keeps the user's setting
    (all cores by default). `ArchiveDecoder` calls this when it builds its decoder in a new process."""
    if get_worker_info() is None:
        return None
    torch.set_num_threads(threads)
    return threads


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader(..., worker_init_fn=worker_init_fn)`` for datasets that decode without `ArchiveDecoder`."""
    configure_worker_threads()


# glibc mallopt parameters; 32 MB is the largest mmap threshold glibc accepts on 64-bit systems
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 256 << 20
_malloc_tuned = False


def tune_malloc() -> bool:
    """Let glibc keep freed tensor memory for reuse, once per process; False where it cannot (not glibc).

    By default every tensor over ~128 kB is a fresh mmap that the kernel zero-fills page by page and
    unmaps when freed: decoding allocates such activations hundreds of times a batch, which cost a
    third of D-NeRV's CPU time in page faults (the effect jemalloc/tcmalloc are preloaded for)."""
    global _malloc_tuned
    if _malloc_tuned:
        return True
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    _malloc_tuned = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                        _TRIM_THRESHOLD))
    return _malloc_tuned


def host_to_device(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host array on ``device``: through pinned memory and an asynchronous copy when it is a GPU."""
    tensor = torch.as_tensor(array)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
