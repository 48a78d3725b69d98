"""Process-wide runtime settings: threads, seeds, device choice.

``ARKPOSE_THREADS`` (default 2) is the one thread setting: it drives ``torch.set_num_threads``.
On the shared 2-core machines this project targets, a second busy process slows 2-thread
training 3-10x, so DataLoader workers default to 0 and nothing else spawns threads.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import torch

THREADS_ENV = "ARKPOSE_THREADS"
DEFAULT_THREADS = 2


def num_threads() -> int:
    raw = os.environ.get(THREADS_ENV, str(DEFAULT_THREADS))
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{THREADS_ENV}={raw!r} is not an integer") from None
    if n < 1:
        raise ValueError(f"{THREADS_ENV} must be >= 1, got {n}")
    return n


def configure_threads() -> int:
    """Apply ``ARKPOSE_THREADS`` to torch; returns the number used."""
    n = num_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def use_threads(n: int) -> None:
    """Set ``ARKPOSE_THREADS`` to ``n`` in this process (and the processes it starts) and
    apply it: the initializer of worker processes that get a share of the threads."""
    os.environ[THREADS_ENV] = str(n)
    configure_threads()


def fp32_ceiling(repeats: int = 3, size: int = 2048) -> float:
    """G multiply-adds per second of the best of ``repeats`` fp32 ``size``³ matmuls on the
    current threads: the most any conv reaches here, so timings compare across machines as
    ratios to it (tests/benchmarks/bench_model.py; ``arkpose ablate`` records it)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return size**3 / best / 1e9


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available here")
    return device
