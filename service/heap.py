"""Freed heap handed back to the OS once a model has loaded.

Loading an ORT session allocates and frees far more than it keeps (the graph's protobuf, weights
read and pre-packed on the way), and glibc keeps the freed pages in the worker's heap, counted in
its RSS. With the weights memory-mapped (service/runtime/prepared_graph.py) that leftover is most
of what a second session of a graph costs: DistilBERT-base +18-37 MB before `malloc_trim`, +1.4 MB
after (loadtests/results/memory-2026-12-07). A no-op where libc has no `malloc_trim` (musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Return the heap's free pages to the OS; True if anything was released."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
