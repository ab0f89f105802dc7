"""The DataModule's checkpoint record: classes, shape and pixel statistics without the data; the same data checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import make_image_folder

from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.data.layout import DataError
from medmnist_lit.data.provenance import restoring


def _folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data", {"A": 12, "B": 12, "C": 12}, size=8)


def test_a_restored_datamodule_needs_no_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path)
    dm = MedMNISTDataModule("data", standardize=True, split="kfold", folds=3)
    assert dm.hparams["source"] == dm.source == str(tmp_path / "data")  # absolute, as checkpoints store it
    fold = dm.with_fold(dm.make_fold(2))
    record = fold.state_dict()
    assert record["fold"] == 2 and record["mean"] != dm.state_dict()["mean"]  # the fold's own statistics
    (tmp_path / "data").rename(tmp_path / "elsewhere")
    with restoring(record):
        restored = MedMNISTDataModule("data", standardize=True, split="kfold", folds=3)
    assert restored.class_names == ["A", "B", "C"] and restored.num_classes == 3 and restored.input_shape == (1, 8, 8)
    assert restored.restored is not None
    pixels = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8)
    assert torch.equal(restored.restored.transform(pixels.clone()), fold.transform(pixels.clone()))  # bit for bit
    with pytest.raises(DataError, match=r"the checkpoint's data source .*data no longer exists; pass --data.source"):
        _ = restored.dataset
    assert restored.state_dict() == record  # passed on unchanged by a DataModule that never loaded its data


def test_a_refit_record_serves_all_development_data(tmp_path: Path) -> None:
    dm = MedMNISTDataModule(str(_folder(tmp_path)), standardize=True, split="kfold", folds=3)
    refit = dm.with_fold(dm.refit_fold())
    record = refit.state_dict()
    assert record["fold"] is None
    restored = MedMNISTDataModule(dm.source, standardize=True, split="kfold", folds=3)
    restored.load_state_dict(record)
    assert np.array_equal(restored.indices("train"), dm.split.dev) and len(restored.indices("val")) == 0


def test_other_data_is_refused_and_a_bad_record_is_one_line(tmp_path: Path) -> None:
    record = MedMNISTDataModule(str(_folder(tmp_path)), seed=1).state_dict()
    other = MedMNISTDataModule(str(make_image_folder(tmp_path / "other", {"A": 12, "B": 12, "D": 12}, size=8)), seed=1)
    with pytest.raises(DataError, match=r"has the classes \['A', 'B', 'D'\] but the checkpoint's model was trained on"):
        other.load_state_dict(record)
        _ = other.dataset
    resplit = MedMNISTDataModule(str(tmp_path / "data"), seed=2)
    resplit.load_state_dict(record)
    with pytest.raises(DataError, match="is not the one the checkpoint was trained on"):
        _ = resplit.split
    with pytest.raises(DataError, match=r"^the checkpoint's data record is damaged \(KeyError: 'split'\)"):
        MedMNISTDataModule().load_state_dict({k: v for k, v in record.items() if k != "split"})
    with pytest.raises(DataError, match="newer than this medmnist-lit reads"):
        MedMNISTDataModule().load_state_dict({**record, "format": 99})
