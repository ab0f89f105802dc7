"""Where group codes come from: a CSV of sample id → group, exact-duplicate clusters, and their union.

Groups keep related samples (same patient, same subject, pixel-identical copies) on one side of every
split (see :mod:`medmnist_lit.splits.strategies`). All functions return ``int64`` codes numbered ``0..G-1`` in order
of first appearance, so equal inputs always give equal codes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medmnist_lit.splits.near_duplicates import first_appearance
from medmnist_lit.splits.near_duplicates import near_duplicate_groups as near_duplicate_groups  # re-exported
from medmnist_lit.utils.chunks import CHUNK_BYTES, rows_per_chunk
from medmnist_lit.utils.files import read_user_text

log = logging.getLogger(__name__)

#: Accepted header names (case-insensitive) for the id and group columns of a group CSV, in priority order.
ID_COLUMNS = ("id", "sample_id", "sample", "file", "filename", "path")
GROUP_COLUMNS = ("group", "group_id", "subject", "subject_id", "patient", "patient_id")


class GroupFileError(ValueError):
    """A group CSV that cannot be used; the message names the file and what is wrong."""


def _pick(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def read_group_csv(path: str | os.PathLike[str], ids: np.ndarray) -> np.ndarray:
    """Read group codes for ``ids`` from a CSV with a header.

    The id column may be named any of :data:`ID_COLUMNS` and the group column any of :data:`GROUP_COLUMNS`
    (case-insensitive). Comma, semicolon and tab delimiters are detected. Rows for ids absent from the
    dataset are ignored, since the dataset may be a subset; repeated rows are fine if they agree.

    Args:
        path: CSV file.
        ids: Sample ids of the dataset (compared as strings).

    Returns:
        ``int64`` group code per entry of ``ids``.

    Raises:
        GroupFileError: A missing or unreadable file, missing columns, dataset ids missing from the CSV, or an id
            with conflicting groups.
    """
    path = Path(path)
    given = "check the path given to --data.groups (a CSV with columns id,group)"
    text = read_user_text(path, "group file", given, GroupFileError, encoding="utf-8-sig")
    try:
        dialect: Any = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t")
    except csv.Error:  # a single-column or empty header: let the column check report it
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        raise GroupFileError(f"{path} is empty; expected a header with columns id,group")
    header, body = rows[0], rows[1:]
    id_col, group_col = _pick(header, ID_COLUMNS), _pick(header, GROUP_COLUMNS)
    if id_col is None or group_col is None:
        missing = [kind for kind, col in (("id", id_col), ("group", group_col)) if col is None]
        raise GroupFileError(
            f"{path} lacks the {' and '.join(missing)} column(s): header is {header}; name the id column "
            f"one of {list(ID_COLUMNS)} and the group column one of {list(GROUP_COLUMNS)}"
        )
    mapping: dict[str, str] = {}
    conflicts: dict[str, set[str]] = {}
    width = max(id_col, group_col)
    for line, row in enumerate(body, start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank lines are harmless
        if len(row) <= width:
            raise GroupFileError(f"{path} line {line} has {len(row)} field(s), expected at least {width + 1}")
        key, group = row[id_col].strip(), row[group_col].strip()
        if not key or not group:  # a blank group would silently lump unrelated samples together
            raise GroupFileError(f"{path} line {line} has an empty id or group; fill it in or drop the row")
        if mapping.setdefault(key, group) != group:
            conflicts.setdefault(key, {mapping[key]}).add(group)
    if conflicts:
        shown = ", ".join(f"{k!r} in {sorted(v)}" for k, v in list(conflicts.items())[:5])
        raise GroupFileError(
            f"{path} gives {len(conflicts)} id(s) conflicting groups, e.g. {shown}; keep one group per id"
        )
    keys = [str(i) for i in np.asarray(ids).tolist()]
    missing_ids = [k for k in keys if k not in mapping]
    if missing_ids:
        raise GroupFileError(
            f"{path} has no group for {len(missing_ids)} of the {len(keys)} dataset ids, e.g. "
            f"{missing_ids[:5]}; add rows for them (ids look like 'CXR/000123.jpeg' or 'train/000123')"
        )
    codes = first_appearance(np.array([mapping[k] for k in keys], dtype=str))
    log.info("read %d groups for %d samples from %s", len(np.unique(codes)), len(codes), path)
    return codes


def _verified(images: np.ndarray, codes: np.ndarray, chunk: int) -> bool:
    """Whether every image equals the first image of its cluster, byte for byte (``chunk`` pairs at a time)."""
    first = np.unique(codes, return_index=True)[1]  # codes are 0..G-1, so first[code] is its first member
    rest = np.flatnonzero(np.arange(len(codes)) != first[codes])
    for start in range(0, len(rest), chunk):
        idx = rest[start : start + chunk]
        if not np.array_equal(np.asarray(images[idx]), np.asarray(images[first[codes[idx]]])):
            return False
    return True


def exact_duplicate_groups(images: np.ndarray, *, chunk: int = 4096, chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """Cluster pixel-identical images: same code <=> identical pixels.

    Rows are hashed with BLAKE2b in chunks, so a read-only memory map is streamed rather than loaded whole
    (60,000 images of 64x64 take well under a second; sorting raw rows is about 3 times slower). Hash
    matches are verified byte for byte, falling back to exact comparison should a collision ever occur.

    Args:
        images: Array shaped ``(N, ...)`` (any trailing shape and dtype).
        chunk: Rows read at a time, at most.
        chunk_bytes: Bytes read at a time, at most (at least one row): 4,096 images at 224 pixels RGB are 616 MB.

    Returns:
        ``int64`` cluster code per image, numbered in order of first appearance.
    """
    n = len(images)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    row_bytes = int(np.prod(images.shape[1:])) * images.dtype.itemsize
    chunk = min(chunk, rows_per_chunk(row_bytes, chunk_bytes))
    digests = np.empty(n, dtype="S16")
    for start in range(0, n, chunk):
        block = np.ascontiguousarray(images[start : start + chunk]).reshape(min(chunk, n - start), -1)
        for i, row in enumerate(block):
            digests[start + i] = hashlib.blake2b(row.data, digest_size=16).digest()
    codes = first_appearance(digests)
    if not _verified(images, codes, max(1, chunk // 2)):  # two blocks (an image and its cluster's first) at a time
        log.warning("BLAKE2b collision between different images; clustering by exact comparison instead")
        rows = np.ascontiguousarray(images).reshape(n, -1).view(np.uint8)
        codes = first_appearance(rows.view(np.dtype((np.void, rows.shape[1]))).ravel())
    return codes


def merge_groups(*codes: np.ndarray | None) -> np.ndarray | None:
    """Union of groupings: samples sharing a code in any input end up in one group.

    Args:
        *codes: Group code arrays of equal length; ``None`` entries are ignored.

    Returns:
        ``int64`` connected-component code per sample, or ``None`` when every input is ``None``.
    """
    given = [np.asarray(c) for c in codes if c is not None]
    if not given:
        return None
    n = len(given[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if any(c.ndim != 1 or len(c) != n for c in given):
        raise ValueError(f"group codes to merge must be 1-D with equal lengths, got {[c.shape for c in given]}")
    # Bipartite graph: sample nodes 0..n-1 linked to one node per (input, code); components are the groups.
    rows, cols, offset = [], [], n
    for c in given:
        local = np.unique(c, return_inverse=True)[1].ravel()
        rows.append(np.arange(n))
        cols.append(local + offset)
        offset += int(local.max()) + 1
    size = offset
    graph = coo_matrix(
        (np.ones(n * len(given), dtype=np.int8), (np.concatenate(rows), np.concatenate(cols))),
        shape=(size, size),
    )
    _, component = connected_components(graph, directed=False)
    return first_appearance(component[:n])


def describe_groups(codes: np.ndarray) -> dict[str, int]:
    """Summary of a grouping for logs.

    Returns:
        ``n_samples``, ``n_groups``, ``largest_group`` and ``n_in_shared_groups`` (samples whose group has
        more than one member).
    """
    sizes = np.unique(np.asarray(codes), return_counts=True)[1]
    return {
        "n_samples": len(codes),
        "n_groups": len(sizes),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
        "n_in_shared_groups": int(sizes[sizes > 1].sum()),
    }
