"""Shared test settings: an isolated cache directory and a quiet, deterministic torch."""

from __future__ import annotations

import pytest
import torch

#: Fixtures of a local MedMNIST (``server``, ``root``) for the tests that download by name.
pytest_plugins = ["medmnist_server"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # never touch the user's real cache; one cache per test session keeps repeated loads fast
    monkeypatch.setenv("MEDMNIST_LIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
