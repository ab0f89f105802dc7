"""Blocks of rows bounded in bytes: how large arrays (a memory-mapped dataset) are read a piece at a time.

A fixed number of rows is a different amount of memory at 28 and at 224 pixels (2,352 vs 150,528 bytes per RGB
image); a byte budget keeps every block the same size whatever the image size, so memory use does not grow with it.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["CHUNK_BYTES", "row_blocks", "rows_per_chunk"]

#: Default bytes per block: small next to the 1 GB memory goal, large enough that per-block overhead does not show.
CHUNK_BYTES = 32 * 2**20


def rows_per_chunk(row_bytes: int, max_bytes: int = CHUNK_BYTES) -> int:
    """How many rows of ``row_bytes`` each fit in ``max_bytes`` (at least one)."""
    return max(1, int(max_bytes) // max(1, int(row_bytes)))


def row_blocks(n: int, row_bytes: int, max_bytes: int = CHUNK_BYTES) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)``, each of at most ``max_bytes`` (or one row)."""
    step = rows_per_chunk(row_bytes, max_bytes)
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))
