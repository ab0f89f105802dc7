"""Give freed batch buffers back to the operating system, so resident memory tracks the current batch.

glibc's ``malloc`` serves blocks below its *mmap threshold* from heap arenas, and raises that threshold (up to
32 MB) each time a larger mmapped block is freed. Per-batch buffers of 224-pixel images (19 MB of uint8 for 128 RGB
images) then land in the arenas, where freed blocks stay resident and fragment: on a 4.5 GB dataset a ``fit`` with
batches of 128 peaked at 1.5 GB of anonymous memory, 0.7 GB with the threshold fixed at 1 MB
(``benchmarks/RESULTS.md``). A fixed threshold makes every block from a few MB up an mmap of its own, unmapped when
freed; small objects are unaffected.
"""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["MMAP_THRESHOLD", "return_large_blocks"]

log = logging.getLogger(__name__)

#: Blocks from this size up are mapped on their own (glibc's ``M_MMAP_THRESHOLD``).
MMAP_THRESHOLD = 4 * 2**20
_M_MMAP_THRESHOLD = -3  # glibc's <malloc.h> parameter number
_done: list[bool] = []


def return_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (once); whether it was set.

    A no-op returning ``False`` where ``malloc`` is not glibc's (macOS, Windows, musl).
    """
    if _done:
        return _done[0]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            ok = bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, int(threshold)))
        except (OSError, AttributeError):  # no mallopt: not glibc
            ok = False
    log.debug("malloc mmap threshold %s", f"fixed at {threshold:,} bytes" if ok else "left as it is (not glibc)")
    _done.append(ok)
    return ok
