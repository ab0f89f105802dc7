"""Running the ``medmnist-lit`` command in a folder of its own, as the module-scoped fixtures of several tests do."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmnist_lit.cli import main


def run_in(directory: Path, args: list[str]) -> None:
    """``medmnist-lit ARGS`` with ``directory`` as working directory and cache root; it must succeed."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(directory)
        mp.setenv("MEDMNIST_LIT_CACHE", str(directory / "cache"))
        assert main(args) == 0, args
