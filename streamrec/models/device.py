"""Device choice: CUDA (with mixed precision) when present, else CPU with bounded threads."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

__all__ = ["autocast", "configure_cpu_threads", "select_device"]

logger = logging.getLogger(__name__)


def configure_cpu_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: the CPUs this process may use) and return it.

    Inter-op threads stay at 1: the models run one graph at a time, and extra pools only
    oversubscribe a shared machine.
    """
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    threads = num_threads or available or os.cpu_count() or 1
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
        torch.set_num_interop_threads(1)
    return threads


def select_device(preferred: str | None = None, *, num_threads: int | None = None) -> torch.device:
    """``preferred`` if given (``cpu``, ``cuda:1``), else CUDA when available, else CPU."""
    if preferred:
        device = torch.device(preferred)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        threads = configure_cpu_threads(num_threads)
        logger.info("device: cpu with %d threads", threads)
    else:
        logger.info("device: %s (mixed precision)", device)
    return device


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """bfloat16/float16 autocast on CUDA; a no-op on CPU (fp32 is faster there for these sizes)."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        with torch.autocast(device_type="cuda", dtype=dtype):
            yield
    else:
        yield
