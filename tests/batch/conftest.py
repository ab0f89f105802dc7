"""The batch tests' shared reference: the shipped optimizers spec on tiny data, run once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from medmnist_lit.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = ["--data.subset", "100", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
#: the shipped optimizers spec on tiny data: 5 runs of about a second each (the test modules run the same)
OPTIMIZERS = [str(REPO / "experiments" / "optimizers.yaml"), "--seeds", "[0]", *TINY]


@pytest.fixture(scope="session")
def optimizers_reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The batch run uninterrupted by the local executor, in this process."""
    root = tmp_path_factory.mktemp("reference")
    saved = os.environ.get("MEDMNIST_LIT_CACHE")
    # the test cache (tests/conftest.py sets it per test, after session fixtures)
    os.environ["MEDMNIST_LIT_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    try:
        assert main(["batch", *OPTIMIZERS, "--root", str(root)]) == 0
    finally:
        if saved is None:
            os.environ.pop("MEDMNIST_LIT_CACHE", None)
        else:
            os.environ["MEDMNIST_LIT_CACHE"] = saved
    yield root / "optimizers"
