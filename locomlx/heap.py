"""Keep freed memory in the process heap on Linux, so MLX's CPU buffers reuse pages already mapped.

MLX's CPU backend allocates every array with malloc. glibc serves blocks above its mmap threshold
(128 KiB at start) with a fresh mmap and unmaps them on free, so every large intermediate of every
operation is page-faulted in again: for a fast elementwise kernel, the page faults cost about as much
as the arithmetic. Raising the threshold to glibc's maximum (32 MiB on 64-bit)
and not trimming the heap on free keeps those pages for the next operation; the process's resident
memory stays near its high-water mark, which is what locomlx's peak-memory figures report anyway.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit systems
TRIM_THRESHOLD = 2**31 - 1  # never give the heap's top back to the kernel

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds once per process; False where there is no glibc (macOS, musl)."""
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux"):
            mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
            if mallopt is not None:
                _applied = (bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
                            and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    return _applied
