"""The default ``data.group_by near_duplicates``: planted twins stay on one side, ``none`` opts out loudly, and the
official (predefined) split is never changed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from datagen import make_image_folder, make_npz, write_image
from PIL import Image

from medmnist_lit.cli import main
from medmnist_lit.data.datamodule import NO_GROUPING_WARNING, MedMNISTDataModule


def with_planted_twins(root: Path) -> Path:
    """Classes A and B of 24 PNG images each, plus a near copy (a few grey levels of noise) of 8 images per class."""
    source = make_image_folder(root, {"A": 24, "B": 24}, size=16, ext=".png")
    rng = np.random.default_rng(0)
    for name in ("A", "B"):
        for k in range(8):
            pixels = np.asarray(Image.open(source / name / f"{k:06d}.png"), dtype=np.int64)
            write_image(source / name / f"twin{k}.png", np.clip(pixels + rng.integers(-3, 4, pixels.shape), 0, 255)
                        .astype(np.uint8))  # fmt: skip
    return source


def sides(dm: MedMNISTDataModule, fold: int) -> np.ndarray:
    """Per sample: 0 train, 1 val, 2 test, 3 excluded, in ``fold``."""
    split = dm.split
    side = np.full(split.n_samples, 3)
    side[split.train(fold)], side[split.val[fold]], side[split.test] = 0, 1, 2
    return side


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_planted_twins(tmp_path_factory.mktemp("twins") / "imgs")


def test_default_keeps_planted_near_duplicates_on_one_side(twins: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="medmnist_lit")
    dm = MedMNISTDataModule(str(twins), split="kfold", folds=3, test_fraction=0.25)
    ids, near = dm.dataset.ids, dm.dataset.near_clusters
    planted = [(f"{c}/{k:06d}.png", f"{c}/twin{k}.png") for c in "AB" for k in range(8)]
    index = {str(i): n for n, i in enumerate(ids)}
    assert all(near[index[a]] == near[index[b]] for a, b in planted)  # the measure finds every planted twin
    for fold in range(3):
        side = sides(dm, fold)
        assert all(side[index[a]] == side[index[b]] for a, b in planted), f"fold {fold} split a twin pair"
    assert dm.split.params["grouped"] is True and dm.hparams["group_by"] == "near_duplicates"
    assert any("class balance of the grouped split" in r.getMessage() for r in caplog.records)
    assert not any(NO_GROUPING_WARNING in r.getMessage() for r in caplog.records)
    none = MedMNISTDataModule(str(twins), split="kfold", folds=3, test_fraction=0.25, group_by="none")
    crossed = [any(sides(none, f)[index[a]] != sides(none, f)[index[b]] for a, b in planted) for f in range(3)]
    assert any(crossed)  # a random split does cut them: the default is what keeps them together


@pytest.mark.parametrize("value", ["none", "null"])
def test_group_by_none_opts_out_with_one_warning_from_the_command_line_and_yaml(
    twins: Path, tmp_path: Path, capsys, value: str
) -> None:
    assert main(["audit", "--data.source", str(twins), "--data.group_by", value]) == 0
    err = capsys.readouterr().err
    assert err.count(NO_GROUPING_WARNING) == 1
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  group_by: {value}\n")
    assert main(["audit", "--config", str(config), "--data.source", str(twins)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count(NO_GROUPING_WARNING) == 1
    assert "val in train:  exact 0 total" in captured.out  # the planted twins are near copies, not exact ones
    assert "val in train:  exact 0 total, max 0/fold, 0 of 1 folds; near 0 total" not in captured.out
    assert main(["audit", "--data.source", str(twins)]) == 0  # the default: grouped, quiet, nothing leaks
    captured = capsys.readouterr()
    assert NO_GROUPING_WARNING not in captured.err and "class balance of the grouped split" in captured.err
    assert "val in train:  exact 0 total, max 0/fold, 0 of 1 folds; near 0 total" in captured.out


def test_predefined_split_is_used_as_it_is(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="medmnist_lit")
    source = make_npz(tmp_path / "p.npz", n_train=30, n_val=9, n_test=9)
    arrays = dict(np.load(source))
    arrays["val_images"][:3] = arrays["train_images"][:3]  # the official split leaks: copies across it
    arrays["val_labels"][:3] = arrays["train_labels"][:3]
    np.savez(source, **arrays)
    for group_by in ("near_duplicates", "duplicates"):
        dm = MedMNISTDataModule(str(source), split="predefined", group_by=group_by)  # type: ignore[arg-type]
        codes = dm.dataset.predefined
        assert np.array_equal(dm.split.test, np.flatnonzero(codes == 2))
        assert np.array_equal(dm.split.val[0], np.flatnonzero(codes == 1))
        assert dm.split.params["grouped"] is False
    messages = [r.getMessage() for r in caplog.records]
    assert sum("the official split is used as it is, without data.group_by" in m for m in messages) == 2
    assert not any(NO_GROUPING_WARNING in m for m in messages)
