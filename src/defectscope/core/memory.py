"""Give freed memory back to the operating system (glibc), for long-running processes.

glibc raises its mmap threshold after large blocks are freed, so later large blocks (a decoded
image of hundreds of MB) come from the heap and stay mapped after they are freed: a service's
resident memory grows to its worst request and stays there. Fixing the threshold keeps large
blocks mmapped (returned at once when freed); trimming returns what the heap holds free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") else None


def return_large_blocks_to_the_os() -> bool:
    """Keep blocks above 4 MiB mmapped; False where the C library is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    libc.mallopt(M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES)
    return True


def trim() -> None:
    """Return the heap's free memory to the operating system (glibc ``malloc_trim``)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
