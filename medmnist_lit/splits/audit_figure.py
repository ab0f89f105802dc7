"""Example leaked pairs side by side (image A | image B, ids, classes, r): what the leakage audit found, to look at.

``medmnist-lit audit --figure PATH`` draws the split examples of the audit report (:func:`report_pairs`); any list
of ``(i, j, r)`` index pairs works (:func:`leak_pairs_figure`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medmnist_lit.splits.multilabel import label_text
from medmnist_lit.utils.figure_style import new_figure, save_figure, style, title

__all__ = ["MAX_PAIRS", "PER_ROW", "Pair", "leak_pairs_figure", "report_pairs", "save_leak_pairs"]

#: Pairs drawn at most (more would not fit a slide), in rows of :data:`PER_ROW`.
MAX_PAIRS = 6
PER_ROW = 3
#: ``(i, j, r)`` or ``(i, j, r, caption)``: sample indices, their Pearson correlation, what the pair is.
Pair = tuple[int, int, float] | tuple[int, int, float, str]
_SIDES = {
    "val_in_train": ("validation", "training"),
    "test_in_train": ("test", "training"),
    "test_in_val": ("test", "validation"),
}


def report_pairs(report: Mapping[str, Any], ids: Sequence[Any]) -> list[Pair]:
    """The split's example pairs of an audit report (``report["split"]["examples"]``) as index pairs.

    Near pairs come first (they are the ones a person should judge), the relations (validation or test in
    training, test in validation) taking turns; exact copies have ``r = 1``.
    """
    index = {str(x): i for i, x in enumerate(ids)}
    examples = (report.get("split") or {}).get("examples") or {}
    pairs: list[Pair] = []
    for kind in ("near", "exact"):
        per_relation: list[list[Pair]] = []
        for relation, (side, other) in _SIDES.items():
            mine: list[Pair] = []
            for example in (examples.get(relation) or {}).get(kind) or []:
                a, b = (index.get(str(x)) for x in example["ids"][:2])
                if a is not None and b is not None:
                    caption = f"{side} ↔ {other}, {'near copy' if kind == 'near' else 'exact copy'}"
                    mine.append((a, b, float(example.get("r", 1.0)), caption))
            per_relation.append(mine)
        # relations in turn, so that the first pairs drawn show each kind of leak
        pairs.extend(p for row in itertools.zip_longest(*per_relation) for p in row if p is not None)
    return pairs


def _gray(image: np.ndarray) -> bool:
    return image.ndim == 2 or image.shape[-1] == 1


def leak_pairs_figure(
    images: np.ndarray,
    pairs: Sequence[Pair],
    *,
    ids: Sequence[Any] | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "Leakage audit: example pairs",
    subtitle: str = "",
) -> Figure | None:
    """One row per pair: image A, image B, with their ids and classes, and the pair's correlation ``r``.

    Args:
        images: ``uint8`` images shaped ``N×H×W`` or ``N×H×W×C``.
        pairs: ``(i, j, r)`` or ``(i, j, r, caption)``; the first :data:`MAX_PAIRS` are drawn.
        ids: Sample ids (file names), shown under each image; indices when missing.
        labels: Class indices of the samples, or their ``N×L`` 0/1 multi-label targets.
        class_names: Names of the class indices (of the labels).
        name: The title.
        subtitle: A line under the title, e.g. how ``r`` was computed.

    Returns:
        The figure, or ``None`` with no pairs.
    """
    shown = list(pairs)[:MAX_PAIRS]
    if not shown:
        return None

    def caption(i: int) -> str:
        sample = str(ids[i]) if ids is not None else f"#{i}"
        if labels is None:
            return sample
        return f"{sample}\n{label_text(labels[i], class_names)}"

    texts = [caption(i) for pair in shown for i in pair[:2]]
    columns = min(len(shown), PER_ROW)
    rows = -(-len(shown) // columns)
    with style(texts):
        fig = new_figure(3.5 * columns, 0.75 + 2.05 * rows)
        cells = np.atleast_1d(fig.subfigures(rows, columns, squeeze=False, wspace=0.08).ravel())
        for cell, pair in zip(cells, shown, strict=False):
            i, j, r = int(pair[0]), int(pair[1]), float(pair[2])
            what = str(pair[3]) if len(pair) > 3 else ""
            # every cell's caption has two lines, so the images of a row line up
            cell.suptitle(f"r = {r:.3f}\n{what}", fontsize=10, fontweight="normal")
            for ax, k in zip(cell.subplots(1, 2), (i, j), strict=True):
                image = np.asarray(images[k])
                ax.imshow(image.squeeze() if _gray(image) else image, cmap="gray" if _gray(image) else None)
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(True)
                    spine.set_color("0.7")
                ax.set_xlabel(caption(k), fontsize=8)
        for cell in cells[len(shown) :]:
            cell.set_visible(False)
        title(fig, name, subtitle)
    return fig


def save_leak_pairs(path: str | os.PathLike[str], data: Any, report: Mapping[str, Any]) -> bool:
    """Draw an audit report's split example pairs of ``data`` (an ImageSet) into ``path``; ``False`` if none.

    Args:
        path: The PNG to write (atomically).
        data: What was audited: ``images``, ``ids``, ``labels``, ``class_names``.
        report: :func:`medmnist_lit.splits.audit.audit`'s report of ``data`` and its split.
    """
    pairs = report_pairs(report, data.ids)
    measure = report.get("measure") or {}
    grid, threshold = measure.get("grid"), measure.get("threshold")
    how = f"r: Pearson correlation of {grid}×{grid} thumbnails" if grid else "r: Pearson correlation"
    if threshold is not None:
        how += f"; near copies: r ≥ {threshold:g}, or linked to one through a cluster"
    figure = leak_pairs_figure(
        data.images, pairs, ids=data.ids, labels=data.labels, class_names=data.class_names, subtitle=how
    )
    if figure is None:
        return False
    save_figure(figure, path)
    return True
