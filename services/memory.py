"""Keep a streaming service's memory flat and its buffers cheap (glibc only; elsewhere
nothing changes).

Clips pass through in buffers of one to five MiB, allocated and freed many times a second,
in the event loop and in worker threads. With glibc's defaults:
- every thread that allocates gets a malloc arena of its own, and each arena keeps what it
  once held: resident memory then depends on how many threads happened to handle parts;
- a freed buffer of that size is given back to the system (unmapped, or the heap trimmed),
  and the next one is faulted in again page by page, zeroed by the kernel: measured here,
  opening a 1 MiB sealed chunk ran at ~430 MB/s that way against ~1.3 GB/s when the memory
  is reused.
So: one arena, and buffers up to 64 MiB served from the heap, which keeps up to 128 MiB of
freed memory for the next ones instead of trimming it. Resident memory is then the
high-water mark of what is in use, which the services bound (`make bench-ingest`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

# From glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_logger = logging.getLogger("temoin.memory")


def bound_allocator() -> bool:
    """Returns whether the C library took the settings (glibc does; others lack mallopt)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    settings = {_M_ARENA_MAX: 1, _M_MMAP_THRESHOLD: 64 << 20, _M_TRIM_THRESHOLD: 128 << 20}
    if not all(mallopt(option, value) for option, value in settings.items()):
        _logger.warning("mallopt refused the memory settings")
        return False
    return True
