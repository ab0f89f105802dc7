"""Group codes of a dataset: the source's own, a user's CSV and duplicate clusters, merged into one code per image."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np

from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.splits.groups import exact_duplicate_groups, merge_groups, read_group_csv

__all__ = ["GroupBy", "with_groups"]

#: What else besides the source's and a CSV's groups keeps images together: near-duplicate clusters (the default),
#: exact copies only, or nothing (``none``; ``None`` means the same, so configs and checkpoints from before the
#: near-duplicate default keep splitting as they did).
GroupBy = Literal["near_duplicates", "duplicates", "none"]


def with_groups(data: ImageSet, groups: str | None, group_by: GroupBy | None) -> ImageSet:
    """``data`` with group codes that keep together images sharing any group: the source's, ``groups``, duplicates.

    The near-duplicate clusters are always found and attached as ``near_clusters`` (they say which validation and
    test samples have a twin in training, whatever the split groups).

    Args:
        data: The dataset (its ``groups``, if any, are kept).
        groups: CSV mapping sample id to a group (subject, patient).
        group_by: Also group near-duplicates (``near_duplicates``) or exact duplicates (``duplicates``);
            ``none`` or ``None``: neither.
    """
    from medmnist_lit.splits.groups import near_duplicate_groups  # pulls in the thumbnail machinery

    near = data.near_clusters if data.near_clusters is not None else near_duplicate_groups(data.images)
    sources: list[np.ndarray | None] = [data.groups]
    if groups is not None:
        sources.append(read_group_csv(groups, data.ids))
    if group_by == "duplicates":
        sources.append(exact_duplicate_groups(data.images))
    elif group_by == "near_duplicates":
        sources.append(near)
    return replace(data, groups=merge_groups(*sources), near_clusters=near)
