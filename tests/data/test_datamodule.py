"""The DataModule and its in-memory loaders: batch regimes, sampling, standardisation, folds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datagen import make_image_folder

from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.data.loaders import Block, EpochSampler


def _steps(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [step for block in loader for step in block]


def test_minibatch_full_batch_and_online_regimes() -> None:
    for batch_size, expected in ((64, 17), ("full", 1), (1, 1077)):
        dm = MedMNISTDataModule(batch_size=batch_size)
        loader = dm.train_dataloader()
        steps = _steps(loader)
        assert len(steps) == loader.num_batches == expected, batch_size
        assert sum(len(y) for _, y in steps) == 1077
        if batch_size == "full":
            assert len(steps[0][1]) == 1077


def test_shuffle_visits_every_training_sample_once_per_epoch_in_a_new_order() -> None:
    dm = MedMNISTDataModule(batch_size=100, steps_per_block=3)
    loader = dm.train_dataloader()
    first = torch.cat([y for _, y in _steps(loader)])
    loader.sampler.set_epoch(1)
    second = torch.cat([y for _, y in _steps(loader)])
    assert len(first) == len(second) == 1077
    assert not torch.equal(first, second)  # a new order ...
    assert torch.equal(first.sort().values, second.sort().values)  # ... of the same samples
    train = torch.as_tensor(dm.indices("train"))
    assert torch.equal(first.sort().values, dm.tensors()[1][train].sort().values)
    assert all(isinstance(block, Block) and len(block) <= 3 for block in loader)


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    index = torch.arange(50)
    a, b = EpochSampler(index, seed=3), EpochSampler(index, seed=3)
    b.set_epoch(4)
    b.order()
    a.set_epoch(4)
    assert torch.equal(a.order(), b.order())
    c = EpochSampler(index, seed=4)
    c.set_epoch(4)
    assert not torch.equal(a.order(), c.order())


def test_sampling_with_replacement_and_class_balanced() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    index = torch.arange(100)
    drawn = EpochSampler(index, labels, "replacement", seed=0).order()
    assert len(drawn) == 100 and len(torch.unique(drawn)) < 100  # with replacement: repeats
    counts = torch.zeros(2)
    for epoch in range(20):
        sampler = EpochSampler(index, labels, "balanced", seed=0)
        sampler.set_epoch(epoch)
        counts += torch.bincount(labels[sampler.order()], minlength=2)
    assert counts[1] / counts.sum() == pytest.approx(0.5, abs=0.05)  # the 10% class drawn half the time


def test_shards_split_an_epoch_between_processes() -> None:
    index = torch.arange(11)
    shards = [EpochSampler(index, seed=0, rank=r, world_size=2) for r in range(2)]
    orders = [s.order() for s in shards]
    assert len(orders[0]) == len(orders[1]) == 6  # padded to equal length
    assert set(torch.cat(orders).tolist()) == set(range(11))


def test_standardisation_uses_the_training_part_only() -> None:
    dm = MedMNISTDataModule(standardize=True)
    images, _ = dm.tensors()
    train = torch.as_tensor(dm.indices("train"))
    x = dm.transform(images[train])
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4) and x.std().item() == pytest.approx(1.0, abs=1e-3)
    test = torch.as_tensor(dm.indices("test"))
    pixels = images[test].float() / 255
    expected = (pixels - (images[train].float() / 255).mean()) / (images[train].float() / 255).std()
    torch.testing.assert_close(dm.transform(images[test]), expected, atol=1e-3, rtol=1e-3)


def test_folds_and_refit_parts() -> None:
    dm = MedMNISTDataModule(split="kfold", folds=4, fold=2)
    split = dm.split
    assert np.array_equal(dm.indices("val"), split.val[2])
    assert len(np.intersect1d(dm.indices("train"), dm.indices("val"))) == 0
    dm.refit = True
    assert np.array_equal(dm.indices("train"), split.dev) and len(dm.indices("val")) == 0
    with pytest.raises(ValueError, match="fold=7 is out of range"):
        _ = MedMNISTDataModule(split="kfold", folds=4, fold=7).split


def test_cross_validation_stream_masks_each_folds_validation_samples() -> None:
    dm = MedMNISTDataModule(split="kfold", folds=3, batch_size=32)
    dm.fold, dm.cv_stream = 1, True
    loader = dm.train_dataloader()
    kept = torch.cat([part[~block.exclude[0, part]] for block in loader for part in block.parts])
    assert sorted(kept.tolist()) == dm.indices("train").tolist()  # every training sample once, no validation one
    assert sum(len(y) for _, y in _steps(loader)) == len(kept)
    masked = dm.stream_loader([0, 1, 2], masked=True)
    _, y, keep = next(iter(next(iter(masked))))
    assert keep.shape == (3, len(y)) and bool((keep.sum(0) == 2).all())  # each sample validates exactly one fold


def test_class_balanced_weights_and_counts(tmp_path) -> None:
    make_image_folder(tmp_path / "d", {"A": 30, "B": 10})
    dm = MedMNISTDataModule(str(tmp_path / "d"), test_fraction=0.25, val_fraction=0.25)
    counts = dm.class_counts("train")
    assert counts.tolist() == [15, 5]
    assert dm.class_names == ["A", "B"] and dm.input_shape == (1, 8, 8) and dm.num_classes == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"batch_size": 0}, "batch_size"), ({"eval_batch_size": 0}, "eval_batch_size"), ({"subset": 1}, "subset")],
)
def test_bad_options_name_the_option(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MedMNISTDataModule(**kwargs)
