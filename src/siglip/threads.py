"""Process-wide thread pools shared by the tokenizers and image processors, safe across `fork`.

A forked child (a DataLoader worker, a multiprocessing job) inherits the parent's pool objects but none of
their threads: work submitted there would wait forever. The registry is emptied in every forked child, so
the child starts its own pools on first use.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_POOLS: dict[tuple[str, int], ThreadPoolExecutor] = {}
os.register_at_fork(after_in_child=_POOLS.clear)


def default_workers() -> int:
    """Threads for decoding and preprocessing when the caller names none: one per core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def shared_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """The pool of `workers` threads named `name` for this process (created on first use)."""
    key = (name, workers)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"siglip-{name}")
    return _POOLS[key]
