"""Process-level settings for decoding: CPU threads per DataLoader worker, host-to-device copies."""
from __future__ import annotations

import ctypes
import ctypes.util
import os

import numpy as np
import torch
from torch.utils.data import get_worker_info


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_threads(num_workers: int) -> int:
    """Intra-op threads for each of ``num_workers`` decoding processes: the cores shared out, at least one.

    More threads than cores per process make OpenMP's spinning threads fight each other, which on
    a busy machine costs several times the decode time."""
    return max(1, available_cores() // max(1, num_workers))


def configure_worker_threads() -> int | None:
    """Inside a DataLoader worker: set torch's intra-op threads to this worker's share of the cores.

    Returns the count set, or None in the main process (left as the user set it: all cores by
    default). Called by `ArchiveDecoder` when it builds its decoder in a new process; usable as a
    DataLoader ``worker_init_fn`` as well."""
    info = get_worker_info()
    if info is None:
        return None
    threads = worker_threads(info.num_workers)
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
