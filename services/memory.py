"""Keep a streaming service's memory flat (glibc only; elsewhere nothing changes).

Clips pass through in buffers of one to five MiB, allocated in the event loop and in worker
threads. With glibc's defaults every thread that allocates gets a malloc arena of its own, and
each arena keeps the memory it once held: a vault's resident memory then depends on how many
threads happened to handle parts rather than on the clip in hand. One arena keeps it to what
is in use (`make bench-ingest`: about 140 MiB against 146-151 MiB for the vault process, at
the same speed; the buffers are large, so threads seldom contend for the arena).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

_M_ARENA_MAX = -8  # from glibc's malloc.h

_logger = logging.getLogger("temoin.memory")


def bound_allocator(arenas: int = 1) -> bool:
    """Returns whether the C library took the setting (glibc does; others lack mallopt)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    if not mallopt(_M_ARENA_MAX, arenas):
        _logger.warning("mallopt refused M_ARENA_MAX")
        return False
    return True
