"""Near-duplicate images: the measure, its calibration, and an exact all-pairs search that takes seconds.

Measure
    Each image becomes a grayscale thumbnail of ``grid × grid`` cell means (default 16×16: 4×4-pixel cells
    for 64×64 images; one cell per pixel for images smaller than the grid; channels are averaged). Two
    images are near-duplicates when the Pearson correlation ``r`` of their thumbnails is at least
    ``threshold`` (default :data:`NEAR_THRESHOLD` = 0.98). Pearson r ignores brightness and contrast (any
    positive affine change of grey levels) and cell means average out pixel noise and JPEG artefacts, while
    256 cells keep enough anatomy to tell patients apart. Exact copies have r = 1, so they are always
    near-duplicates. Flat images (thumbnail standard deviation below :data:`FLAT_STD` = 1 grey level, e.g.
    blank slices) have no pattern to correlate; they are all near-duplicates of one another. Clusters are
    the connected components of the relation: the two ends of a chain of neighbouring slices may correlate
    below the threshold yet share a cluster, which is what keeps a whole scan on one side of a split.

Calibration (3,000 real Medical MNIST images, 500 per class; pairs viewed side by side)
    r >= 0.98 gives 182 pairs among 293 images in 128 clusters (largest 5): 127 AbdomenCT, 132 BreastMRI,
    14 ChestCT and 20 HeadCT images (4 of them the one exact-copy cluster, identical blank slices), none in
    CXR or Hand (X-rays have no neighbouring slices). Every pair inspected in [0.98, 0.99) was the same scan
    (identical or nearby slice; file numbers within a cluster differ by a median of 51). In [0.96, 0.98)
    different patients begin to appear: hand and chest X-rays in the same pose, empty head-CT table slices.
    (0.97 gives 263 pairs among 395 images, 0.99 gives 96 among 175.) Coarser 8×8 thumbnails tolerate shifts
    better but paired different patients at every threshold where they did. On those images r >= 0.98
    catches JPEG re-encoding at quality 50 (99.9%), +20 grey levels or 0.8× contrast (99.9%) and Gaussian
    pixel noise of σ 5 (97%; σ 10: 83%, low-contrast chest CTs fail first). It is not meant to catch shifted,
    cropped, rotated or flipped copies: after a 1-pixel shift only 22% of the images stay above 0.98.

Search (exact, no all-pairs matrix)
    For centred unit thumbnails ``u, v``, ``r >= t`` ⇔ ``|u - v| <= eps = sqrt(2 (1 - t))``. Images with
    identical thumbnails (exact copies) are collapsed first. Projecting onto the 32 leading principal
    directions (estimated on a 4,096-image subset) can only shrink distances, so pairs within ``eps`` in the
    projection are a superset of the answer. They are found by cutting the projections into strips of width
    ``eps`` along the first component, sorting each strip by the second, and computing one distance block
    (a single matrix product) per chunk of 512 rows against the window of its own and the next strip that
    can hold partners. Candidates are then checked on the full thumbnails. 60,000 images of 64×64 take
    0.6-0.7 s (median) on 2 cores (``benchmarks/audit.py``). The module imports numpy and scipy only.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medmnist_lit.utils.chunks import CHUNK_BYTES, rows_per_chunk

log = logging.getLogger(__name__)

#: Default Pearson-r threshold of the thumbnails (calibrated on real Medical MNIST, see the module docstring).
NEAR_THRESHOLD = 0.98
#: Default thumbnail side in cells.
GRID = 16
#: Thumbnails whose cell means vary less than this (standard deviation, grey levels) count as flat.
FLAT_STD = 1.0

_PCA_DIMS = 32  # projection used to prune candidates; 32 leaves few enough candidates that checking is cheap
_PCA_SAMPLE = 4096
_ROWS = 512  # rows per distance block
_COLS = 16384  # columns per distance block: at most 32 MiB of float32 per product
_SLACK = 1e-3  # widens the pruning radius against float32 rounding; every candidate is re-checked
_SPREAD = 4  # a block with more edges than this many per node is reduced to a spanning forest
_CHECK = 65536  # candidate pairs checked on full thumbnails at a time


@dataclass(frozen=True)
class NearDuplicates:
    """Result of :func:`find_near_duplicates`.

    Attributes:
        codes: ``int64`` cluster per image (connected components), numbered in order of first appearance.
        n_pairs: Unordered image pairs with ``r >= threshold`` (exact copies and flat pairs included).
        threshold: Pearson-r threshold used.
        grid: Thumbnail side used.
        n_flat: Number of flat images (see :data:`FLAT_STD`).
    """

    codes: np.ndarray
    n_pairs: int
    threshold: float
    grid: int
    n_flat: int


def first_appearance(codes: np.ndarray) -> np.ndarray:
    """Renumber arbitrary codes to ``0..G-1`` in order of first appearance."""
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]


def _check(images: np.ndarray, grid: int, threshold: float | None = None) -> None:
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) not in (3, 4):
        raise ValueError(f"images must be shaped N×H×W or N×H×W×C, got shape {shape}")
    if not isinstance(grid, int | np.integer) or grid < 2:
        raise ValueError(f"grid={grid!r} must be an integer >= 2 (thumbnail side in cells; 16 is the default)")
    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold} is a Pearson r and must lie in (0, 1]; 0.98 is the default")


def thumbnails(images: np.ndarray, *, grid: int = GRID, chunk: int = 512, chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """Grayscale cell means of every image.

    Cells split rows and columns as evenly as possible; an image with fewer than ``grid`` rows (columns)
    gets one cell per row (column). Identical images give bitwise identical thumbnails, because the cell
    sums are exact integers in the arithmetic used. A memory map is read ``chunk`` images at a time, fewer when
    their float copy would exceed ``chunk_bytes`` (at 224 pixels RGB, 512 images are 308 MB as float32).

    Args:
        images: ``N×H×W`` or ``N×H×W×C`` array (any real dtype; channels are averaged).
        grid: Thumbnail side in cells.
        chunk: Images read at a time, at most.
        chunk_bytes: Bytes of the float copy of one block, at most (at least one image is read).

    Returns:
        ``float32`` array shaped ``(N, min(grid, H) * min(grid, W))``.
    """
    _check(images, grid)
    n, h, w = images.shape[:3]
    channels = images.shape[3] if images.ndim == 4 else 1
    gh, gw = min(grid, h), min(grid, w)
    rows, cols = (np.arange(h) * gh) // h, (np.arange(w) * gw) // w
    area = np.outer(np.bincount(rows, minlength=gh), np.bincount(cols, minlength=gw)) * channels
    # float32 sums of uint8 are exact below 2**24, so copies stay bitwise equal; otherwise use float64
    exact32 = images.dtype == np.uint8 and int(area.max()) * 255 < 2**24
    dtype = np.float32 if exact32 else np.float64
    pool_h = np.zeros((gh, h), dtype)
    pool_h[rows, np.arange(h)] = 1
    pool_w = np.zeros((w, gw), dtype)
    pool_w[np.arange(w), cols] = 1
    out = np.empty((n, gh, gw), np.float32)
    chunk = min(chunk, rows_per_chunk(h * w * channels * np.dtype(dtype).itemsize, chunk_bytes))
    for start in range(0, n, chunk):
        block = np.asarray(images[start : start + chunk], dtype=dtype)
        if block.ndim == 4:
            block = block.sum(axis=3)
        out[start : start + chunk] = (pool_h @ (block @ pool_w)) / area  # separable pooling: two small GEMMs
    return out.reshape(n, gh * gw)


def standardize(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale thumbnails to unit length, so that a dot product is Pearson's r.

    Returns:
        ``(unit, flat)``: ``float32`` unit rows (zero rows for flat thumbnails) and the flat mask.
    """
    centred = thumbs - thumbs.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    norm = np.linalg.norm(centred, axis=1)
    flat = norm < FLAT_STD * math.sqrt(thumbs.shape[1])  # norm / sqrt(cells) is the standard deviation
    unit = centred / np.where(flat, 1, norm)[:, None].astype(np.float32)
    unit[flat] = 0
    return unit.astype(np.float32, copy=False), flat


def pearson(a: np.ndarray, b: np.ndarray, *, grid: int = GRID) -> np.ndarray:
    """Pearson r of the thumbnails of paired images ``a[k]``, ``b[k]`` (1.0 for two flat images, 0.0 for one).

    Args:
        a: Images shaped ``K×H×W[×C]``.
        b: Images of the same shape.
        grid: Thumbnail side in cells.
    """
    ua, fa = standardize(thumbnails(a, grid=grid))
    ub, fb = standardize(thumbnails(b, grid=grid))
    r = np.einsum("ij,ij->i", ua, ub).astype(np.float64)
    r[fa & fb] = 1.0
    return np.clip(r, -1.0, 1.0)


def _unique_rows(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Representative index of each distinct thumbnail and the representative of every row."""
    words = np.ascontiguousarray(thumbs).view(np.uint32).astype(np.uint64)
    weights = np.random.default_rng(0).integers(1, 2**63, size=words.shape[1], dtype=np.uint64)
    digest = words @ weights  # wraps modulo 2**64; collisions are caught below
    _, first, inverse = np.unique(digest, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    if not np.array_equal(thumbs, thumbs[first[inverse]]):  # a hash collision: compare whole rows instead
        rows = np.ascontiguousarray(thumbs).view(np.dtype((np.void, thumbs.shape[1] * 4))).ravel()
        _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
    return first, inverse


def _spanning(i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges of a spanning forest with the same connected components as the edges ``(i, j)``."""
    nodes, local = np.unique(np.concatenate([i, j]), return_inverse=True)
    local = local.ravel()
    graph = coo_matrix((np.ones(len(i), np.int8), (local[: len(i)], local[len(i) :])), shape=(len(nodes),) * 2)
    _, component = connected_components(graph, directed=False)
    root = nodes[np.unique(component, return_index=True)[1][component]]
    keep = nodes != root
    return root[keep], nodes[keep]


def _close_pairs(unit: np.ndarray, weight: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Pairs of rows with ``unit[i] . unit[j] >= threshold`` (see the module docstring for the method).

    Args:
        unit: ``float32`` unit rows.
        weight: Images each row stands for (to count image pairs).
        threshold: Pearson-r threshold.

    Returns:
        ``(i, j, n_pairs)``: edges whose connected components are those of the relation (a spanning forest
        replaces very dense blocks), and the number of image pairs it holds, weighted by ``weight``.
    """
    m, dims = unit.shape
    empty = np.zeros(0, np.int64)
    if m < 2:
        return empty, empty, 0
    radius = math.sqrt(2 * (1 - threshold)) + _SLACK
    sample = unit if m <= _PCA_SAMPLE else unit[np.random.default_rng(0).choice(m, _PCA_SAMPLE, replace=False)]
    mean = sample.mean(axis=0, dtype=np.float64)
    centred = sample.astype(np.float64) - mean
    basis = np.linalg.eigh(centred.T @ centred)[1][:, ::-1][:, : min(_PCA_DIMS, dims)]
    proj = ((unit - mean.astype(np.float32)) @ basis.astype(np.float32)).astype(np.float32)
    key1 = proj[:, 0]
    key2 = proj[:, 1] if proj.shape[1] > 1 else np.zeros(m, np.float32)
    strip = np.floor((key1 - key1.min()) / radius).astype(np.int64)
    order = np.lexsort((key2, strip))
    proj, unit_s, key2, strip, weight_s = proj[order], unit[order], key2[order], strip[order], weight[order]
    sq = np.einsum("ij,ij->i", proj, proj)[:, None]
    ones = np.ones((m, 1), np.float32)
    # Augmented rows make one product yield squared distances: [-2p, |p|², 1] . [q, 1, |q|²]
    left = np.ascontiguousarray(np.hstack([-2 * proj, sq, ones]))
    right = np.ascontiguousarray(np.hstack([proj, ones, sq]))
    limit = np.float32(radius * radius)
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    n_pairs = 0

    # Reused buffers: allocating tens of MiB per block costs more in page faults than the arithmetic.
    products = np.empty(_ROWS * _COLS, np.float32)
    close = np.empty(_ROWS * _COLS, np.bool_)

    def block(r0: int, r1: int, c0: int, c1: int, forward: bool) -> None:
        nonlocal n_pairs
        for start in range(c0, c1, _COLS):
            stop = min(start + _COLS, c1)
            shape = (r1 - r0, stop - start)
            size = shape[0] * shape[1]
            product = np.matmul(left[r0:r1], right[start:stop].T, out=products[:size].reshape(shape))
            np.less_equal(product.ravel(), limit, out=close[:size])
            i, j = np.divmod(np.flatnonzero(close[:size]), shape[1])  # 1-D flatnonzero is ~15x faster than 2-D
            i, j = i + r0, j + start
            if forward:  # the own strip is scanned forwards from the chunk: keep each pair once
                i, j = i[j > i], j[j > i]
            hit = np.concatenate(
                [np.zeros(0, bool)]
                + [  # in pieces: a dense block can hold millions of candidates, each gathering 2 thumbnails
                    np.einsum("ij,ij->i", unit_s[i[k : k + _CHECK]], unit_s[j[k : k + _CHECK]]) >= threshold
                    for k in range(0, len(i), _CHECK)
                ]
            )
            i, j = i[hit], j[hit]
            n_pairs += int((weight_s[i] * weight_s[j]).sum())
            if len(i) > _SPREAD * (r1 - r0 + stop - start):
                i, j = _spanning(i, j)
            found_i.append(i)
            found_j.append(j)

    bounds = np.flatnonzero(np.diff(strip)) + 1
    starts, stops = np.r_[0, bounds], np.r_[bounds, m]
    for s, (a0, a1) in enumerate(zip(starts.tolist(), stops.tolist(), strict=True)):
        keys = key2[a0:a1]
        after = s + 1 < len(starts) and strip[starts[s + 1]] == strip[a0] + 1
        for r0 in range(a0, a1, _ROWS):
            r1 = min(r0 + _ROWS, a1)
            lo, hi = key2[r0], key2[r1 - 1]
            block(r0, r1, r0, a0 + int(np.searchsorted(keys, hi + radius, "right")), True)
            if after:  # the next strip (width eps) is the only other one that can hold partners
                b0, b1 = int(starts[s + 1]), int(stops[s + 1])
                nkeys = key2[b0:b1]
                c0 = b0 + int(np.searchsorted(nkeys, lo - radius, "left"))
                block(r0, r1, c0, b0 + int(np.searchsorted(nkeys, hi + radius, "right")), False)
    i, j = np.concatenate(found_i), np.concatenate(found_j)
    return order[i].astype(np.int64), order[j].astype(np.int64), n_pairs


def find_near_duplicates(
    images: np.ndarray, *, threshold: float = NEAR_THRESHOLD, grid: int = GRID, chunk: int = 512
) -> NearDuplicates:
    """Cluster near-duplicate images (see the module docstring for the measure and the search).

    Args:
        images: ``N×H×W`` or ``N×H×W×C`` array, e.g. a read-only memory map (read ``chunk`` images at a time).
        threshold: Pearson r of the thumbnails at or above which two images are near-duplicates.
        grid: Thumbnail side in cells.
        chunk: Images read at a time.

    Returns:
        Cluster codes, pair count and the settings used.
    """
    _check(images, grid, threshold)
    started = time.perf_counter()
    n = len(images)
    if n == 0:
        return NearDuplicates(np.zeros(0, np.int64), 0, float(threshold), int(grid), 0)
    with _one_blas_thread():
        return _find(images, threshold, grid, chunk, started)


def _one_blas_thread() -> AbstractContextManager[object]:
    """Limit BLAS to one thread while searching.

    The products here are thin (34 or 64 columns), so threads gain little, and on a busy machine OpenBLAS's
    spinning threads made the search 2-10 times slower (0.2 s became 1.5-2.8 s for 60,000 images).
    """
    try:
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency; imported here to stay light
    except ImportError:  # pragma: no cover - only without scikit-learn
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _find(images: np.ndarray, threshold: float, grid: int, chunk: int, started: float) -> NearDuplicates:
    n = len(images)
    thumbs = thumbnails(images, grid=grid, chunk=chunk)
    first, rep_of = _unique_rows(thumbs)  # exact copies share a thumbnail: search distinct ones only
    copies = np.bincount(rep_of, minlength=len(first))
    unit, flat = standardize(thumbs[first])
    n_flat = int(copies[flat].sum())
    active = np.flatnonzero(~flat)
    i, j, cross = _close_pairs(unit[active], copies[active], float(threshold))
    same = copies[active]
    n_pairs = cross + int((same * (same - 1) // 2).sum()) + n_flat * (n_flat - 1) // 2
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(len(active),) * 2)
    component = np.full(len(first), -1, np.int64)  # flat thumbnails form cluster -1
    component[active] = connected_components(graph, directed=False)[1]
    codes = first_appearance(component[rep_of])
    sizes = np.bincount(codes)
    log.debug(
        "near-duplicates (Pearson r >= %.3g of %dx%d thumbnails): %d pairs, %d of %d images in %d clusters "
        "(largest %d, %d flat) in %.2f s",
        threshold, min(grid, images.shape[1]), min(grid, images.shape[2]), n_pairs, int(sizes[sizes > 1].sum()),
        n, int((sizes > 1).sum()), int(sizes.max()), n_flat, time.perf_counter() - started,
    )  # fmt: skip
    return NearDuplicates(codes, n_pairs, float(threshold), int(grid), n_flat)


def near_duplicate_groups(
    images: np.ndarray, *, threshold: float = NEAR_THRESHOLD, grid: int = GRID, chunk: int = 512
) -> np.ndarray:
    """Cluster code per image: connected components of "Pearson r of thumbnails >= ``threshold``".

    Use as split groups (``group_by: near_duplicates``) to keep every near-duplicate cluster, exact copies
    included, on one side. See the module docstring for the measure, its calibration and its limits.

    Args:
        images: ``N×H×W`` or ``N×H×W×C`` array (a memory map is streamed).
        threshold: Pearson r at or above which two images are near-duplicates.
        grid: Thumbnail side in cells.
        chunk: Images read at a time.

    Returns:
        ``int64`` code per image, numbered ``0..G-1`` in order of first appearance.
    """
    return find_near_duplicates(images, threshold=threshold, grid=grid, chunk=chunk).codes
