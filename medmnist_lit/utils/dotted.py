"""Dotted keys (``trainer.max_epochs``) in nested config mappings."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["get_dotted", "set_dotted"]


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested mappings, creating levels; a mapping value replaces the sub-config."""
    parts = key.split(".")
    if not all(parts):
        raise ValueError(f"bad config key {key!r}")
    node = config
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ValueError(f"cannot set {key!r}: {'.'.join(parts[: i + 1])} is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def get_dotted(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Value at ``a.b.c`` in nested mappings, or ``default``."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node
