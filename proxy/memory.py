"""The gate's allocator settings: keep freed socket-read buffers in the heap for reuse.

Each read from a socket gives the gate a new bytes object of up to 256 KiB (uvloop's read size).
glibc serves allocations that large with ``mmap`` and gives them back with ``munmap`` (or, once
its threshold has adapted, trims the heap after each free), so every read lands in fresh memory
the kernel must map and zero. Measured on a 1 MB download through the gate, that page-fault work
cost three times the CPU of moving the bytes. With the mmap threshold above the read size and the
trim threshold well above it, the buffers stay in the heap and are reused read after read, for at
most a few MiB held after a burst. The service the gate starts is not affected (the settings are
per process), a C library other than glibc is left alone, and so is an allocator an admin has
tuned through ``MALLOC_*`` or ``GLIBC_TUNABLES`` variables.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_read_buffers"]

#: allocations below this come from the heap (bytes)
MMAP_THRESHOLD = 1 << 20
#: free memory at the top of the heap kept rather than given back to the kernel (bytes)
TRIM_THRESHOLD = 8 << 20

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_ADMIN_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_read_buffers(environ: Mapping[str, str]) -> bool:
    """Apply the settings unless an admin chose their own; whether the C library took them."""
    if any(name in environ for name in _ADMIN_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # glibc's mallopt returns 1 on success, 0 on error
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
