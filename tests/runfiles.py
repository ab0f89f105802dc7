"""Reading what runs write, for the tests: CSV tables and a batch's ``record.json`` files."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header (``folds.csv``, ``results.csv``, ``permutations.csv``...)."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def batch_records(directory: Path) -> dict[str, dict]:
    """Each run's ``record.json`` in a batch directory, by run name."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(directory.glob("*/record.json"))}
