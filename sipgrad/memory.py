"""Giving freed heap memory back to the operating system.

A forward and backward pass frees tens of MB of temporaries that glibc's allocator keeps
for reuse rather than returning (89 MiB after one EfficientNet-Lite0 pass of a 224 x 224
input, benchmarks/trim_memory.py). Before the full-size work on a large photo (the map at
the original size, the overlay) that retained heap would sit under the run's memory peak,
so the explain path hands it back first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Return freed heap pages to the OS where the C library supports it; True if it did."""
    trim = _malloc_trim()
    return bool(trim is not None and trim(0) is not None)
