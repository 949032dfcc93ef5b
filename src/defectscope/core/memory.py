"""Give freed memory back to the operating system (glibc), for long-running processes, and
collect the cyclic garbage a converter leaves while it runs.

glibc raises its mmap threshold after large blocks are freed, so later large blocks (a decoded
image of hundreds of MB) come from the heap and stay mapped after they are freed: a service's
resident memory grows to its worst request and stays there. Fixing the threshold keeps large
blocks mmapped (returned at once when freed); trimming returns what the heap holds free.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import threading
from collections.abc import Iterator

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


@contextlib.contextmanager
def collecting_garbage(every_seconds: float = 2.0) -> Iterator[None]:
    """Collect reference cycles every ``every_seconds`` while the block runs, then once more
    and trim the heap.

    Python's full collections wait until new container objects reach a quarter of the
    long-lived ones; a process holding TensorFlow counts millions of those, so a converter that
    leaves large cyclic garbage (tf2onnx deep-copies its graph, weights included, for every
    optimizer pass) can hold gigabytes of it until it returns.
    """
    if every_seconds <= 0:
        raise ValueError(f"every_seconds must be positive, got {every_seconds!r}")
    stop = threading.Event()

    def collect_until_stopped() -> None:
        while not stop.wait(every_seconds):
            gc.collect()

    collector = threading.Thread(target=collect_until_stopped, name="gc-collector", daemon=True)
    collector.start()
    try:
        yield
    finally:
        stop.set()
        collector.join()
        gc.collect()
        trim()
