"""A dataset served in this process: load_dataset returns it as it is, for its key only, while registered."""

from __future__ import annotations

from pathlib import Path

import pytest
from datagen import make_image_folder

from medmnist_lit.data.cache import load_dataset
from medmnist_lit.data.serving import dataset_key, serving


def test_load_dataset_returns_the_served_dataset_without_touching_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_image_folder(tmp_path / "images", {"a": 3, "b": 2})
    data = load_dataset(source, cache_dir=tmp_path / "built")
    empty = tmp_path / "empty"
    monkeypatch.chdir(tmp_path)
    assert dataset_key("images") == dataset_key(source)  # relative or absolute: the same source
    with serving({dataset_key(source): data}):
        assert load_dataset("images", cache_dir=empty) is data
        assert load_dataset(source, channels=3, cache_dir=empty) is not data  # other options: loaded as usual
        with serving({dataset_key(source): "inner"}):  # type: ignore[dict-item]
            assert load_dataset(source) == "inner"
        assert load_dataset(source) is data  # the outer registration is back
    assert load_dataset(source, cache_dir=empty) is not data
    assert dataset_key(None) == (None, 1, None, False)  # the demo is served too
